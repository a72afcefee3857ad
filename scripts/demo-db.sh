#!/usr/bin/env bash
# make run, the database story: a throwaway PostgreSQL with DB_ROWS rows
# (default 1M) over three tables of mixed types -> snapshot dump ->
# producer -> RabbitMQ -> consumer -> snapshot restore into a second
# database -> proof that the two databases are equal. Everything runs on
# 127.0.0.1 in a temp directory and is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${DB_ROWS:-1000000}

echo "== database demo: PostgreSQL -> snapshot -> RabbitMQ -> snapshot -> PostgreSQL ($ROWS rows)"
scripts/setup.sh
go build -o bin/ ./snapshot ./producer ./consumer ./internal/cmd/localbroker ./internal/cmd/localpg
work=$(mktemp -d /tmp/segmq-dbdemo.XXXXXX)
chmod 755 "$work"
cleanup() {
  bin/localbroker stop --dir "$work/broker" >/dev/null 2>&1 || true
  bin/localpg stop --dir "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
AMQP_URL=$(bin/localbroker start --dir "$work/broker")
export AMQP_URL
PG=$(bin/localpg start --dir "$work/pg")
SRC=$(echo "$PG" | sed 's#/postgres?#/src?#')
DST=$(echo "$PG" | sed 's#/postgres?#/dst?#')
echo "broker: $AMQP_URL"
echo "postgres: $PG"
psql -X -q "$PG" -c "CREATE DATABASE src" -c "CREATE DATABASE dst"

nu=$((ROWS * 2 / 10)); no=$((ROWS / 2)); ne=$((ROWS - nu - no))
echo "== source: users $nu, orders $no, events $ne rows"
# The same tables and values as the compose demo's source database.
psql -X -q -v ON_ERROR_STOP=1 -v nu="$nu" -v no="$no" -v ne="$ne" -f docker/demo-db/initdb/demo.sql.in "$SRC"

echo "== dump"
bin/snapshot dump --db "$SRC" --out "$work/db.bin" --workers 2
bin/snapshot verify "$work/db.bin"

echo "== through RabbitMQ"
bin/consumer --out "$work/restored.bin" --timeout 60s &
consumer=$!
bin/producer --in "$work/db.bin" --mss 65536
wait $consumer
a=$(sha256sum < "$work/db.bin"); b=$(sha256sum < "$work/restored.bin")
[ "$a" = "$b" ] || { echo "demo: FAILED: the received snapshot differs" >&2; exit 1; }

echo "== restore into a second database"
bin/snapshot restore "$work/restored.bin" --db "$DST"

echo "== proof"
bin/snapshot verify "$work/restored.bin" --db "$DST"
# Independent of segmq: each table's rows in PostgreSQL's text form, sorted, hashed.
fp() {
  psql -X -qAt "$1" -c "SELECT 'users ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM users t" \
    -c "SELECT 'orders ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM orders t" \
    -c "SELECT 'events ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM events t"
}
fp "$SRC" > "$work/src.txt"; fp "$DST" > "$work/dst.txt"
paste -d' ' "$work/src.txt" "$work/dst.txt" | awk '{ printf "%-7s %8s rows  source md5 %s  restored md5 %s\n", $1, $2, $3, $6 }'
cmp -s "$work/src.txt" "$work/dst.txt" || { echo "demo: FAILED: the restored database differs" >&2; exit 1; }
next=$(psql -X -qAt "$DST" -c "INSERT INTO orders (user_id, amount, status, placed, ref) VALUES (1, 1, 'new', now(), gen_random_uuid()) RETURNING id")
echo "INSERT without an id in the restored database got id $next (source had $no orders)"
[ "$next" = $((no + 1)) ] || { echo "demo: FAILED: sequence not restored" >&2; exit 1; }
echo "demo: ok, the restored database equals the source"
