#!/usr/bin/env bash
# Installs what segmq's tests, demo and lint need and a fresh machine may
# lack: RabbitMQ (a real broker for the tests), protoc (the generated-code
# check) and docker-compose v1 (to validate docker-compose.yml without an
# engine). Idempotent; as root it uses apt, otherwise it says what to run.
set -euo pipefail
need=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# PostgreSQL: the database tests run a throwaway cluster (internal/pgtest).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ "${SEGMQ_SETUP_COMPOSE:-0}" = 1 ]; then
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup: missing ${need[*]}; install them (Debian: apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "setup: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package may start a system node; segmq runs its own nodes and does
# not need it.
command -v service >/dev/null && service rabbitmq-server stop >/dev/null 2>&1 || true
command -v service >/dev/null && service postgresql stop >/dev/null 2>&1 || true
