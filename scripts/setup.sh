#!/usr/bin/env bash
# Installs what segmq's tests, demo and lint need and a fresh machine may
# lack: RabbitMQ (a real broker for the tests), protoc (the generated-code
# check) and docker-compose v1 (to validate docker-compose.yml without an
# engine). Idempotent; as root it uses apt, otherwise it says what to run.
#
# With SEGMQ_RABBITMQ_ROOT=DIR it also builds, once, a Debian trixie root in
# DIR holding rabbitmq-server 4.0.5 (Erlang 27 needs trixie's libc, so it
# runs chrooted; see internal/localbroker). About 100 s and 370 MB, cached.
set -euo pipefail
need=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# PostgreSQL: the database tests run a throwaway cluster (internal/pgtest).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ "${SEGMQ_SETUP_COMPOSE:-0}" = 1 ]; then
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
fi
root=${SEGMQ_RABBITMQ_ROOT:-}
if [ -n "$root" ] && [ ! -x "$root/usr/lib/rabbitmq/bin/rabbitmq-server" ]; then
  command -v debootstrap >/dev/null || need+=(debootstrap)
else
  root=
fi
build_root() {
  [ -n "$root" ] || return 0
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "setup: building a trixie root with rabbitmq-server 4.x in $root (once)" >&2
  rm -rf "$root.tmp"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include=rabbitmq-server trixie "$root.tmp" "$mirror" >"$root.log" 2>&1 \
    || { echo "setup: debootstrap failed; see $root.log" >&2; exit 1; }
  mv "$root.tmp" "$root"
}
if [ ${#need[@]} -eq 0 ]; then build_root; exit 0; fi
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
build_root
