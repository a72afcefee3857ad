package segment_test

import (
	"bytes"
	"fmt"
	"os"

	"github.com/segmq/segmq/segment"
)

func Example() {
	file := []byte("a snapshot of eleven segments, give or take")
	s, _ := segment.NewSplitter(bytes.NewReader(file), int64(len(file)), 4)

	out, _ := os.CreateTemp("", "example")
	defer os.Remove(out.Name())
	defer out.Close()
	a, _ := segment.NewAssembler(out, segment.Config{MSS: 4})

	for seq := int(s.Total()) - 1; seq >= 0; seq-- { // backwards, to show order does not matter
		body, _ := s.Segment(uint32(seq), nil)
		h, payload, _ := segment.Decode(body)
		a.Add(h, payload)
	}
	got, _ := os.ReadFile(out.Name())
	fmt.Println(a.Complete(), s.Total(), string(got))
	// Output: true 11 a snapshot of eleven segments, give or take
}

func ExampleHeader() {
	b := segment.Header{Seq: 1, Total: 3}.Bytes()
	fmt.Printf("% x\n", b)
	h, _, _ := segment.Decode(b[:])
	fmt.Println(h)
	// Output:
	// 01 00 00 00 03 00 00 00
	// 1/3
}
