package snapfile

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
// the digest was taken:
//
//	# segmq sidecar: size 1099801280 mtime 1763844698123456789
//	645e1432…d16636  db.bin
//
// snapshot gen and snapshot dump write it, hashing the bytes as they
// write them. The producer sends that digest instead of hashing the file
// again, but only while the snapshot still has that size and mtime; any
// other sidecar is ignored, with the reason. A digest that is wrong all
// the same (the file changed in place and its mtime was set back) makes
// the consumer refuse the transfer: it never verifies a file against a
// digest it did not compute itself.
const SidecarSuffix = ".sha256"

const sidecarTag = "# segmq sidecar: "

// WriteWithSidecar writes path atomically (fsutil.WriteAtomic) with the
// bytes fill writes to w, then its sidecar. An old sidecar is removed
// first, so a crash never leaves one that describes other bytes.
func WriteWithSidecar(path string, fill func(w io.Writer) error) error {
	if err := os.Remove(path + SidecarSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var sum string
	if err := fsutil.WriteAtomic(path, func(f *os.File) error {
		h := sha256.New()
		if err := fill(io.MultiWriter(f, h)); err != nil {
			return err
		}
		sum = hex.EncodeToString(h.Sum(nil))
		return nil
	}); err != nil {
		return err
	}
	return WriteSidecar(path, sum)
}

// WriteSidecar records sum as the SHA-256 of path as it is now.
func WriteSidecar(path, sum string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	body := fmt.Sprintf("%ssize %d mtime %d\n%s  %s\n", sidecarTag, fi.Size(), fi.ModTime().UnixNano(), sum, filepath.Base(path))
	return fsutil.WriteAtomic(path+SidecarSuffix, func(f *os.File) error {
		_, err := io.WriteString(f, body)
		return err
	})
}

// ReadSidecar returns the SHA-256 that path's sidecar records, if it
// describes path as fi says it is now (same name, size and mtime). An
// error says why not; os.ErrNotExist when there is no sidecar.
func ReadSidecar(path string, fi os.FileInfo) (string, error) {
	side := path + SidecarSuffix
	f, err := os.Open(side)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4096))
	var size, mtime int64 = -1, -1
	var sum string
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, sidecarTag); ok {
			fields := strings.Fields(rest)
			if len(fields) != 4 || fields[0] != "size" || fields[2] != "mtime" {
				return "", fmt.Errorf("%s: malformed line %q", side, line)
			}
			size, _ = strconv.ParseInt(fields[1], 10, 64)
			mtime, _ = strconv.ParseInt(fields[3], 10, 64)
			continue
		}
		hexsum, name, ok := strings.Cut(line, "  ")
		if !ok || len(hexsum) != 64 || name != filepath.Base(path) {
			return "", fmt.Errorf("%s: not a digest of %s: %q", side, filepath.Base(path), line)
		}
		if _, err := hex.DecodeString(hexsum); err != nil {
			return "", fmt.Errorf("%s: %q is not a hex digest", side, hexsum)
		}
		sum = strings.ToLower(hexsum)
	}
	switch {
	case sc.Err() != nil:
		return "", fmt.Errorf("%s: %w", side, sc.Err())
	case sum == "":
		return "", fmt.Errorf("%s holds no digest", side)
	case size < 0:
		return "", fmt.Errorf("%s does not record the size and mtime it was taken at (not written by segmq)", side)
	case size != fi.Size() || mtime != fi.ModTime().UnixNano():
		return "", fmt.Errorf("%s was taken when %s had size %d and mtime %d; it now has %d and %d: the file changed since", side, filepath.Base(path), size, mtime, fi.Size(), fi.ModTime().UnixNano())
	}
	return sum, nil
}
