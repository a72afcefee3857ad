// Package snapshotpb holds the generated Go code for snapshot.proto, the
// schema of a snapshot file's records. Do not edit snapshot.pb.go; edit
// snapshot.proto and run `go generate ./proto/...` (scripts/protogen.sh
// pins protoc and protoc-gen-go, so CI can fail on any difference).
package snapshotpb

//go:generate ../../scripts/protogen.sh
