package snapfile

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/segmq/segmq/internal/fsutil"
)

// A digest sidecar is FILE.sha256 beside a snapshot: its SHA-256 in the
// format of sha256sum (so `sha256sum -c FILE.sha256` checks it), after a
// comment line with the size and modification time the snapshot had when
// the digest was taken, and the CRC-32C (Castagnoli) of the whole file:
//
//	# segmq sidecar: size 1099801280 mtime 1763844698123456789 crc32c 5a1f09c3
//	645e1432…d16636  db.bin
//
// snapshot gen and snapshot dump write it, hashing the bytes as they
// write them. The producer sends that digest instead of hashing the file
// again, and, when the CRC-32C is there, skips its read of the file before
// the send, but only while the snapshot still has that size and mtime; any
// other sidecar is ignored, with the reason. It checks the CRC-32C against
// the bytes it sends and publishes the last segment, which carries the
// digest, only if they match: a file that changed in place with its mtime
// set back fails the send. A digest that is wrong all the same (the
// sidecar itself was edited) makes the consumer refuse the transfer: it
// never verifies a file against a digest it did not compute itself.
//
// Sidecars written before the CRC-32C was recorded (no crc32c field) are
// read as before: their digest is used, and the file is read once before
// the send.
const SidecarSuffix = ".sha256"

const sidecarTag = "# segmq sidecar: "

// WriteWithSidecar writes path atomically (fsutil.WriteAtomic) with the
// bytes fill writes to w, then its sidecar. An old sidecar is removed
// first, so a crash never leaves one that describes other bytes.
func WriteWithSidecar(path string, fill func(w io.Writer) error) error {
	if err := os.Remove(path + SidecarSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var d Digest
	if err := fsutil.WriteAtomic(path, func(f *os.File) error {
		h, c := sha256.New(), crc32.New(castagnoli)
		if err := fill(io.MultiWriter(f, h, c)); err != nil {
			return err
		}
		d = Digest{SHA256: hex.EncodeToString(h.Sum(nil)), CRC32C: c.Sum32(), HasCRC: true}
		return nil
	}); err != nil {
		return err
	}
	return WriteSidecar(path, d)
}

// Digest is what a sidecar records of a snapshot's bytes.
type Digest struct {
	SHA256 string // lower-case hex
	CRC32C uint32 // of the whole file, Castagnoli; only if HasCRC
	HasCRC bool   // false for sidecars older than the field
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteSidecar records d as the digest of path as it is now.
func WriteSidecar(path string, d Digest) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	crc := ""
	if d.HasCRC {
		crc = fmt.Sprintf(" crc32c %08x", d.CRC32C)
	}
	body := fmt.Sprintf("%ssize %d mtime %d%s\n%s  %s\n", sidecarTag, fi.Size(), fi.ModTime().UnixNano(), crc, d.SHA256, filepath.Base(path))
	return fsutil.WriteAtomic(path+SidecarSuffix, func(f *os.File) error {
		_, err := io.WriteString(f, body)
		return err
	})
}

// ReadSidecar returns the digest that path's sidecar records, if it
// describes path as fi says it is now (same name, size and mtime). An
// error says why not; os.ErrNotExist when there is no sidecar.
func ReadSidecar(path string, fi os.FileInfo) (Digest, error) {
	side := path + SidecarSuffix
	f, err := os.Open(side)
	if err != nil {
		return Digest{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4096))
	var size, mtime int64 = -1, -1
	var d Digest
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, sidecarTag); ok {
			fields := strings.Fields(rest)
			if (len(fields) != 4 && len(fields) != 6) || fields[0] != "size" || fields[2] != "mtime" {
				return Digest{}, fmt.Errorf("%s: malformed line %q", side, line)
			}
			size, _ = strconv.ParseInt(fields[1], 10, 64)
			mtime, _ = strconv.ParseInt(fields[3], 10, 64)
			if len(fields) == 6 {
				crc, err := strconv.ParseUint(fields[5], 16, 32)
				if fields[4] != "crc32c" || len(fields[5]) != 8 || err != nil {
					return Digest{}, fmt.Errorf("%s: malformed line %q", side, line)
				}
				d.CRC32C, d.HasCRC = uint32(crc), true
			}
			continue
		}
		hexsum, name, ok := strings.Cut(line, "  ")
		if !ok || len(hexsum) != 64 || name != filepath.Base(path) {
			return Digest{}, fmt.Errorf("%s: not a digest of %s: %q", side, filepath.Base(path), line)
		}
		if _, err := hex.DecodeString(hexsum); err != nil {
			return Digest{}, fmt.Errorf("%s: %q is not a hex digest", side, hexsum)
		}
		d.SHA256 = strings.ToLower(hexsum)
	}
	switch {
	case sc.Err() != nil:
		return Digest{}, fmt.Errorf("%s: %w", side, sc.Err())
	case d.SHA256 == "":
		return Digest{}, fmt.Errorf("%s holds no digest", side)
	case size < 0:
		return Digest{}, fmt.Errorf("%s does not record the size and mtime it was taken at (not written by segmq)", side)
	case size != fi.Size() || mtime != fi.ModTime().UnixNano():
		return Digest{}, fmt.Errorf("%s was taken when %s had size %d and mtime %d; it now has %d and %d: the file changed since", side, filepath.Base(path), size, mtime, fi.Size(), fi.ModTime().UnixNano())
	}
	return d, nil
}
