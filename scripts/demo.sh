#!/usr/bin/env bash
# make run: the whole pipeline on a real RabbitMQ.
#  - with a Docker engine that can pull images: docker compose;
#  - otherwise a throwaway local rabbitmq-server (installed with apt if
#    missing), torn down at the end.
# Prints the sha256 of the input and the output and verifies the output.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-1000000}

if [ "${SEGMQ_DEMO_DOCKER:-auto}" != 0 ] && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 \
   && docker compose pull -q rabbitmq >/dev/null 2>&1; then
  echo "== demo with docker compose"
  trap 'docker compose down -v >/dev/null 2>&1 || true' EXIT
  RECORDS=$RECORDS docker compose run --build --rm consumer
  exit $?
fi

echo "== demo with a local rabbitmq-server (no Docker engine that can pull images here)"
scripts/setup.sh
go build -o bin/ ./snapshot ./producer ./consumer ./internal/cmd/localbroker
work=$(mktemp -d /tmp/segmq-demo.XXXXXX)
cleanup() {
  bin/localbroker stop --dir "$work/broker" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
AMQP_URL=$(bin/localbroker start --dir "$work/broker")
export AMQP_URL
echo "broker: $AMQP_URL"

bin/snapshot gen --records "$RECORDS" --out "$work/db.bin"
bin/consumer --out "$work/restored.bin" --timeout 60s &
consumer=$!
bin/producer --in "$work/db.bin" --mss 65536
wait $consumer

echo "== proof"
sha256sum "$work/db.bin" "$work/restored.bin"
a=$(sha256sum < "$work/db.bin"); b=$(sha256sum < "$work/restored.bin")
[ "$a" = "$b" ] || { echo "demo: FAILED: the restored file differs" >&2; exit 1; }
bin/snapshot verify "$work/restored.bin"
echo "demo: ok, the restored snapshot is byte-identical"
