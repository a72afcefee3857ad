#!/usr/bin/env bash
# The compose demo's last word (service `proof`): the restored database
# equals the source, by PostgreSQL's own md5 of each table's rows in text
# form, independently of segmq's digest, and its sequences were restored.
# SOURCE_URL and RESTORED_URL are libpq URLs. Exit 0 only if all holds.
set -euo pipefail
fp() {
  psql -X -qAt -v ON_ERROR_STOP=1 "$1" \
    -c "SELECT 'users ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM users t" \
    -c "SELECT 'orders ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM orders t" \
    -c "SELECT 'events ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM events t"
}
src=$(fp "$SOURCE_URL")
dst=$(fp "$RESTORED_URL")
paste -d' ' <(echo "$src") <(echo "$dst") |
  awk '{ printf "%-7s %8s rows  source md5 %s  restored md5 %s\n", $1, $2, $3, $6 }'
[ "$src" = "$dst" ] || { echo "proof: FAILED: the restored database differs from the source" >&2; exit 1; }
no=$(psql -X -qAt -v ON_ERROR_STOP=1 "$SOURCE_URL" -c "SELECT count(*) FROM orders")
next=$(psql -X -qAt -v ON_ERROR_STOP=1 "$RESTORED_URL" -c "INSERT INTO orders (user_id, amount, status, placed, ref) VALUES (1, 1, 'new', now(), gen_random_uuid()) RETURNING id")
echo "INSERT without an id in the restored database got id $next (source had $no orders)"
[ "$next" = $((no + 1)) ] || { echo "proof: FAILED: the orders sequence was not restored" >&2; exit 1; }
echo "proof: ok, the restored database equals the source"
