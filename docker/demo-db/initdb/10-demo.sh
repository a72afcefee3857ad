#!/usr/bin/env bash
# An init script of the source PostgreSQL (docker-compose.yml mounts this
# directory as /docker-entrypoint-initdb.d): fills $POSTGRES_DB with DB_ROWS
# rows over the three tables of demo.sql.in, which scripts/demo-db.sh runs
# too (users 20%, orders 50%, events 30%; every kind of column the demo
# shows).
set -euo pipefail
rows=${DB_ROWS:-100000}
nu=$((rows * 2 / 10)); no=$((rows / 2)); ne=$((rows - nu - no))
echo "demo-db: generating users $nu, orders $no, events $ne rows"
psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v nu="$nu" -v no="$no" -v ne="$ne" -f "$(dirname "$0")/demo.sql.in"
