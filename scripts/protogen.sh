#!/usr/bin/env bash
# Regenerates proto/snapshotpb/snapshot.pb.go with pinned generators:
# protoc from Debian bookworm's protobuf-compiler (3.21.12) and
# protoc-gen-go at the google.golang.org/protobuf version in go.mod (a
# `tool` directive). `make lint` runs this and fails on any diff.
set -euo pipefail
want_protoc="libprotoc 3.21.12"
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protogen: protoc not found; install protobuf-compiler ($want_protoc)" >&2; exit 1
  fi
fi
got=$(protoc --version)
if [ "$got" != "$want_protoc" ]; then
  echo "protogen: protoc is '$got', want '$want_protoc' (generated code would differ)" >&2; exit 1
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go)
cd "$root/proto/snapshotpb"
protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" --go_out=. --go_opt=paths=source_relative snapshot.proto
