// Package segment is segmq's wire unit: the 8-byte segment header, the
// splitter that cuts a file into segments, and the assembler that puts
// segments received in any order back into a file.
//
// There is no RabbitMQ in this package. A segment is one message body:
//
//	offset 0        4        8
//	       +--------+--------+---------------------------+
//	       |  seq   | total  | payload (0..MSS bytes)    |
//	       +--------+--------+---------------------------+
//	         u32 LE   u32 LE
//
// total >= 1 and seq < total. Segment seq carries the file bytes
// [seq*MSS, seq*MSS+len(payload)). Every segment but the last carries
// exactly MSS bytes; the last carries 0..MSS bytes, so
//
//	size = (total-1)*MSS + len(last payload)
//
// An empty file is one empty segment. segmq's own splitter never emits an
// empty last segment for a non-empty file, but a producer that computes
// total as trunc(size/MSS)+1 does when size is an exact multiple of MSS;
// the formula above covers both, and the Assembler accepts both.
//
// Data flow:
//
//	Splitter(io.ReaderAt, size, mss) --Segment(seq)--> body --> broker
//	broker --> body --Decode--> (Header, payload) --Assembler.Add--> io.WriterAt
//
// The Assembler keeps a received-set bitmap (total/8 bytes), never the
// file: any arrival order costs O(1) memory per segment. It can save and
// reload that set (MarshalBinary/UnmarshalBinary) so that a transfer can
// resume after a crash.
package segment
