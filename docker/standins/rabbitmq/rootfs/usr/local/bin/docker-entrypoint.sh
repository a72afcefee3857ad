#!/bin/bash
# Stand-in for the official image's entrypoint: as root, make the data
# directory the rabbitmq user's and drop to it; then run the command.
set -euo pipefail
if [ "${1:-}" = rabbitmq-server ] && [ "$(id -u)" = 0 ]; then
  find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq:rabbitmq '{}' +
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${BASH_SOURCE[0]}" "$@"
fi
exec "$@"
