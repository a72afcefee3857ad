package journal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppendReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j")
	j, err := Create(p, 'C', Record{'H', []byte("head")})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append(Record{'P', []byte{1, 2, 3}}, Record{'D', nil}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j2, recs, err := Open(p, 'C')
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	want := []Record{{'H', []byte("head")}, {'P', []byte{1, 2, 3}}, {'D', []byte{}}}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for i := range want {
		if recs[i].Type != want[i].Type || !bytes.Equal(recs[i].Data, want[i].Data) {
			t.Fatalf("record %d = %q %x, want %q %x", i, recs[i].Type, recs[i].Data, want[i].Type, want[i].Data)
		}
	}
}

// TestTornTail: every cut of the last record, and a flipped bit in it,
// leaves exactly the records before it, and the file is truncated so the
// next append follows them.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "j")
	j, err := Create(p, 'P', Record{'H', []byte("h")})
	if err != nil {
		t.Fatal(err)
	}
	good := j.Size()
	if err := j.Append(Record{'W', []byte("0123456789")}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	full, _ := os.ReadFile(p)
	damaged := map[string][]byte{}
	for cut := good + 1; cut < int64(len(full)); cut++ {
		damaged["cut"+string(rune('a'+cut-good))] = full[:cut]
	}
	flip := append([]byte(nil), full...)
	flip[len(flip)-2] ^= 1
	damaged["flip"] = flip
	for name, b := range damaged {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		j, recs, err := Open(p, 'P')
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(recs) != 1 || recs[0].Type != 'H' {
			t.Fatalf("%s: records %v, want only the header record", name, recs)
		}
		if err := j.Append(Record{'W', []byte("x")}); err != nil {
			t.Fatal(err)
		}
		j.Close()
		recs, err = Read(p, 'P')
		if err != nil || len(recs) != 2 || string(recs[1].Data) != "x" {
			t.Fatalf("%s: after append: %v %v", name, recs, err)
		}
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	cases := []struct {
		name string
		path string
		want error
	}{
		{"old consumer state", write("old1", []byte("SGMQSTATE1\n{}\n")), ErrOldFormat},
		{"old producer state", write("old2", []byte(`{"transfer":"x"}`)), ErrOldFormat},
		{"garbage", write("garbage", []byte("hello world, not a journal")), ErrCorrupt},
		{"empty", write("empty", nil), ErrCorrupt},
	}
	h := fileHeader('C')
	h[12] ^= 1
	cases = append(cases, struct {
		name string
		path string
		want error
	}{"header crc", write("hcrc", h), ErrCorrupt})
	j, _ := Create(filepath.Join(dir, "producer"), 'P')
	j.Close()
	cases = append(cases, struct {
		name string
		path string
		want error
	}{"other kind", filepath.Join(dir, "producer"), ErrKind})
	for _, c := range cases {
		_, _, err := Open(c.path, 'C')
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if _, _, err := Open(filepath.Join(dir, "missing"), 'C'); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
}

func TestRewrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j")
	j, _ := Create(p, 'C', Record{'H', []byte("a")})
	for i := 0; i < 10; i++ {
		j.Append(Record{'P', bytes.Repeat([]byte{byte(i)}, 100)})
	}
	before := j.Size()
	if err := j.Rewrite(Record{'H', []byte("a")}, Record{'B', []byte("sum")}); err != nil {
		t.Fatal(err)
	}
	if j.Size() >= before {
		t.Fatalf("size %d after rewrite, %d before", j.Size(), before)
	}
	if err := j.Append(Record{'P', []byte("after")}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	recs, err := Read(p, 'C')
	if err != nil || len(recs) != 3 || string(recs[2].Data) != "after" {
		t.Fatalf("records %v, err %v", recs, err)
	}
	if left, _ := filepath.Glob(p + ".*"); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestMidCorruptionIsAnError: a bad record with good records after it is
// damage, not a torn tail: Open refuses instead of forgetting them.
func TestMidCorruptionIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j")
	j, _ := Create(p, 'C', Record{'H', []byte("h")})
	mid := j.Size()
	for i := 0; i < 3; i++ {
		j.Append(Record{'P', []byte{byte(i), 1, 2, 3}})
	}
	j.Close()
	b, _ := os.ReadFile(p)
	b[mid+9] ^= 0xff // the data of the first 'P' record
	os.WriteFile(p, b, 0o644)
	if _, _, err := Open(p, 'C'); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "records follow it") {
		t.Fatalf("err = %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(after, b) {
		t.Fatal("a refused journal was modified")
	}
}
