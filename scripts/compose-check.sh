#!/usr/bin/env bash
# make compose-check: runs the real docker-compose.yml end to end and fails
# unless the whole demo worked (PostgreSQL -> dump -> producer -> RabbitMQ ->
# consumer -> restore -> proof), saying which service failed and why.
#
#   scripts/compose-check.sh                      # the demo must pass
#   scripts/compose-check.sh --break dockerfile   # ...then each breakage must fail,
#                                                 # naming the service and the reason
# Breakages (applied to a copy of the tree, never to the files themselves):
#   creds       the compose file passes RABBITMQ_DEFAULT_USERNAME, not _USER
#   health      the RabbitMQ healthcheck runs `rabbitmq-diagnostic` (no s;
#               slow: the healthcheck's 30 retries)
#   dockerfile  the runtime stage copies from a path the build stage never
#               writes (cheap: the build stage comes from the cache)
#   cgo         the code needs cgo while the Dockerfile says CGO_ENABLED=0
#               (slow: a whole compile)
#
# The engine: an existing one when `docker info` answers (then nothing is
# built but the compose file's own images, and pulls must work). Otherwise,
# as root, its own dockerd with all state in a temp directory, torn down at
# the end; the host's links, routes, firewall rules, mounts and forwarding
# sysctls are recorded before and compared after, and a difference fails.
# With its own engine, images it cannot pull are built as stand-ins under
# the names the compose file and Dockerfile use (docker/standins: Debian
# roots cached in /var/cache/segmq/compose-roots, about 600 MB). See README
# "Running the compose check".
#
# Environment: COMPOSE_CHECK_ROWS (source rows, default 20000),
# COMPOSE_CHECK_TIMEOUT (seconds for one compose run, default 900),
# COMPOSE_CHECK_STANDINS=1 builds stand-ins without trying to pull,
# COMPOSE_CHECK_STORAGE (own engine's storage driver: default overlay2 when
# the kernel has overlay, else vfs).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
breaks=()
while [ $# -gt 0 ]; do
  case "$1" in
    --break) [ $# -ge 2 ] || { echo "compose-check: --break needs creds, health, dockerfile or cgo" >&2; exit 2; }
      case "$2" in creds|health|dockerfile|cgo) breaks+=("$2") ;;
        *) echo "compose-check: unknown breakage '$2' (creds, health, dockerfile, cgo)" >&2; exit 2 ;; esac
      shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compose-check: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

ROWS=${COMPOSE_CHECK_ROWS:-20000}
RUN_TIMEOUT=${COMPOSE_CHECK_TIMEOUT:-900}
CACHE=/var/cache/segmq/compose-roots
RABBIT_ROOT=${SEGMQ_RABBITMQ_ROOT:-/var/cache/segmq/trixie-rabbitmq}
start_all=$(date +%s)
say() { echo "compose-check: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

work=$(mktemp -d /tmp/segmq-compose.XXXXXX)
own_engine=0
projects=()

# ---------------------------------------------------------------- tools
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
    die "missing $*; install them (Debian: apt-get install -y $*)"
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need=()
command -v docker >/dev/null || need+=(docker.io)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then need+=(docker-compose); fi
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi

# ---------------------------------------------------------------- host state
# What our own engine may touch on the host, in a form that compares equal
# when nothing changed (no counters, no timestamps).
host_state() {
  echo "## links"; ip -o link show | sed -E 's/^[0-9]+: //; s/\\.*//'
  echo "## addresses"; ip -o addr show | sed -E 's/^[0-9]+: //; s/\\.*//'
  echo "## routes"; ip route show table all 2>/dev/null | grep -v ' proto kernel scope host' || true
  echo "## mounts"; awk '{ print $5, $9, $10 }' /proc/self/mountinfo
  echo "## sysctls"
  for k in net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding \
      net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
    sysctl -n "$k" 2>/dev/null | sed "s/^/$k = /" || true
  done
  echo "## firewall"
  if command -v nft >/dev/null; then nft list ruleset 2>&1 | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
  fi
  for t in iptables-save ip6tables-save; do
    command -v $t >/dev/null && $t 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//' || true
  done
  echo "## processes of this check"; pgrep -a -f "$work" | grep -v -e "^$$ " -e "^$BASHPID " || true
}

# ---------------------------------------------------------------- engine
start_engine() {
  if docker info >/dev/null 2>&1; then
    say "using the running Docker engine ($(docker info --format '{{.ServerVersion}}' 2>/dev/null))"
    return
  fi
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting one needs root"
  command -v dockerd >/dev/null || apt_install docker.io
  # iptables-nft leaves empty tables behind; nft removes them.
  command -v iptables >/dev/null && command -v nft >/dev/null || apt_install iptables nftables
  ip link show docker0 >/dev/null 2>&1 && die "a docker0 bridge exists but no engine answers; remove it or start that engine"
  host_state > "$work/host-before.txt"
  nft list ruleset > "$work/nft-before.nft" 2>/dev/null || true
  for k in net.ipv4.ip_forward net.ipv6.conf.all.forwarding; do
    echo "$k=$(sysctl -n $k 2>/dev/null || echo)" >> "$work/sysctl-before.txt"
  done
  local storage=${COMPOSE_CHECK_STORAGE:-}
  if [ -z "$storage" ]; then
    if grep -qw overlay /proc/filesystems; then storage=overlay2; else storage=vfs; fi
  fi
  # The default bridge carries the image builds' traffic to the Go module
  # proxy: give it the host's MTU (1400 here) so TLS does not stall.
  local mtu
  mtu=$(ip -o route get 1.1.1.1 2>/dev/null | sed -nE 's/.* dev ([^ ]+).*/\1/p' | head -1)
  mtu=$(cat "/sys/class/net/${mtu:-eth0}/mtu" 2>/dev/null || echo 1500)
  mkdir -p "$work/engine"
  say "starting a Docker engine in $work/engine (storage $storage, mtu $mtu)"
  own_engine=1
  dockerd --data-root "$work/engine/data" --exec-root "$work/engine/exec" \
    --pidfile "$work/engine/dockerd.pid" -H "unix://$work/engine/docker.sock" \
    --storage-driver "$storage" --mtu "$mtu" >"$work/engine/dockerd.log" 2>&1 &
  echo $! > "$work/engine/dockerd.launch.pid"
  export DOCKER_HOST="unix://$work/engine/docker.sock"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$(cat "$work/engine/dockerd.launch.pid")" 2>/dev/null || break
    sleep 1
  done
  tail -20 "$work/engine/dockerd.log" >&2
  if [ "$storage" = overlay2 ] && [ -z "${COMPOSE_CHECK_STORAGE:-}" ]; then
    die "dockerd did not start with overlay2 (log above); try COMPOSE_CHECK_STORAGE=vfs"
  fi
  die "dockerd did not start (log above)"
}

stop_engine() {
  [ "$own_engine" = 1 ] || return 0
  local pid
  pid=$(cat "$work/engine/dockerd.launch.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { say "dockerd ignored SIGTERM; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
  # Anything still running from our temp dir is ours (containerd, shims).
  local left
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    left=$(pgrep -f "$work/engine" || true)
    [ -n "$left" ] || break
    sleep 0.5
  done
  if [ -n "$left" ]; then
    say "ending what the engine left running: $(echo $left)"
    # shellcheck disable=SC2086 # one pid a word
    kill -KILL $left 2>/dev/null || true
  fi
  # Mounts under the temp dir (overlay2 layers, netns files), deepest first.
  awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link show docker0 >/dev/null 2>&1 && ip link delete docker0
  local l
  for l in $(ip -o link show type bridge 2>/dev/null | sed -nE 's/^[0-9]+: (br-[0-9a-f]{12}).*/\1/p'); do
    grep -q "^$l:" "$work/host-before.txt" 2>/dev/null || ip link delete "$l" 2>/dev/null || true
  done
  # The firewall as it was: dockerd added chains to ip nat and ip filter.
  if command -v nft >/dev/null && [ -f "$work/nft-before.nft" ]; then
    { echo "flush ruleset"; cat "$work/nft-before.nft"; } > "$work/nft-restore.nft"
    nft -f "$work/nft-restore.nft" || say "could not restore the firewall rules (nft -f $work/nft-restore.nft)"
  fi
  while IFS='=' read -r k v; do
    [ -n "$v" ] && [ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ] && sysctl -q -w "$k=$v" >/dev/null
  done < "$work/sysctl-before.txt"
  own_engine=0
  host_state > "$work/host-after.txt"
  if ! diff -u "$work/host-before.txt" "$work/host-after.txt" > "$work/host.diff"; then
    cat "$work/host.diff" >&2
    host_changed=1
  fi
}

host_changed=0
cleanup() {
  local rc=$?
  set +e
  for p in "${projects[@]}"; do compose_down "$p"; done
  if [ "$own_engine" = 1 ]; then stop_engine; fi
  if [ "$host_changed" = 1 ]; then
    say "FAILED: the host differs from before the check (diff above; state kept in $work)"
    exit 1
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- images
# The images the files under test name, each with the stand-in that
# replaces it where it cannot be pulled.
images_named() {
  { sed -nE 's/^[[:space:]]+image:[[:space:]]*"?([^" ]+)"?.*/\1/p' docker-compose.yml
    sed -nE 's/^FROM[[:space:]]+([^ ]+).*/\1/p' Dockerfile; } | sort -u
}
standin_for() {
  case "$1" in
    rabbitmq:4-management) echo rabbitmq ;;
    postgres:15-bookworm) echo postgres ;;
    golang:1.26-bookworm) echo golang ;;
    debian:bookworm-slim) echo debian ;;
    *) return 1 ;;
  esac
}

mirror() {
  local m
  m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# root NAME: a cached Debian root for stand-in NAME; prints its path.
# The key covers everything that goes into it, so a changed recipe or a
# new Go makes a new root.
root_for() {
  local name=$1 suite=bookworm include="" key dir
  case "$name" in
    rabbitmq)
      if [ ! -x "$RABBIT_ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ]; then
        SEGMQ_RABBITMQ_ROOT=$RABBIT_ROOT scripts/setup.sh >&2 || die "could not build the RabbitMQ root $RABBIT_ROOT"
      fi
      # make test runs nodes inside that root while we may read it: take a
      # copy of its files once (tar says 1 for a file that changed while
      # read; the volatile directories are left out).
      key=$(ls -d "$RABBIT_ROOT"/usr/lib/rabbitmq/lib/rabbitmq_server-* | sha256sum | cut -c1-12)
      dir=$CACHE/rabbitmq-trixie-$key
      if [ ! -e "$dir/.complete" ]; then
        mkdir -p "$CACHE"; rm -rf "$dir.tmp"; mkdir "$dir.tmp"
        say "copying the RabbitMQ root $RABBIT_ROOT to $dir (once; cached)"
        local st=0
        tar -C "$RABBIT_ROOT" --warning=no-file-changed --warning=no-file-removed \
            --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* --exclude=./tmp/* --exclude=./run/* \
            --exclude=./var/tmp/* --exclude=./var/log/rabbitmq/* --exclude='./var/lib/rabbitmq/mnesia/*' \
            -cf - . | tar -C "$dir.tmp" -xf - || st=$?
        [ "$st" = 0 ] || [ "$st" = 1 ] || die "could not copy $RABBIT_ROOT (tar $st)"
        chmod 1777 "$dir.tmp/tmp"
        touch "$dir.tmp/.complete"; rm -rf "$dir"; mv "$dir.tmp" "$dir"
      fi
      echo "$dir"; return ;;
    debian) include= ;;
    golang) include=ca-certificates,git,gcc,libc6-dev,make,pkg-config ;;
    postgres) include=postgresql-15,gosu,locales ;;
  esac
  key=$(printf '%s\n' "$suite" "$include" "v1" "$( [ "$name" = golang ] && go version)" | sha256sum | cut -c1-12)
  dir=$CACHE/$name-$suite-$key
  if [ ! -e "$dir/.complete" ]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    mkdir -p "$CACHE"
    say "building the $name root in $dir (once; cached)"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase ${include:+--include=$include} "$suite" "$dir.tmp" "$(mirror)" >"$dir.log" 2>&1 ||
      die "debootstrap of the $name root failed; see $dir.log"
    case "$name" in
      golang)
        cp -a "$(go env GOROOT)" "$dir.tmp/usr/local/go"
        mkdir -p "$dir.tmp/go/bin" "$dir.tmp/go/src" ;;
      postgres)
        chroot "$dir.tmp" localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8 ;;
    esac
    rm -rf "$dir.tmp/var/cache/apt/archives/"*.deb "$dir.tmp/var/lib/apt/lists/"*
    touch "$dir.tmp/.complete"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

build_standin() {
  local image=$1 name=$2 root base t0
  t0=$(date +%s)
  if [ "$name" = golang ]; then
    # The official image carries the newest 1.26.x; the stand-in carries
    # the host's Go, so it must be the tag's minor version.
    local want=${image#golang:}; want=${want%%-*}
    case "$(go env GOVERSION)" in
      "go$want"|"go$want".*) ;;
      *) die "the golang stand-in needs Go $want on the host (found $(go env GOVERSION)) to stand in for $image" ;;
    esac
  fi
  root=$(root_for "$name")
  base=segmq-standin/$name-root:latest
  # Only the root's files: /dev, /proc and /sys are the engine's.
  # The build image fetches modules over TLS, and where the host's network
  # re-signs TLS with a CA of its own, only the host's trust store knows
  # it: the golang stand-in trusts what the host trusts.
  local extra=()
  if [ "$name" = golang ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    extra=(--exclude=./etc/ssl/certs/ca-certificates.crt -C / etc/ssl/certs/ca-certificates.crt)
  fi
  tar --numeric-owner --warning=no-file-changed --exclude=./dev/* --exclude=./proc/* \
      --exclude=./sys/* --exclude=./.complete "${extra[@]:0:1}" -cf - -C "$root" . "${extra[@]:1}" | docker import - "$base" >/dev/null ||
    die "docker import of $root failed"
  docker build -q --build-arg BASE="$base" -t "$image" "docker/standins/$name" >"$work/standin-$name.log" 2>&1 ||
    { cat "$work/standin-$name.log" >&2; die "the stand-in for $image (docker/standins/$name) did not build"; }
  docker rmi "$base" >/dev/null 2>&1 || true
  say "stand-in $image built from $root in $(elapsed "$t0")"
}

ensure_images() {
  local image name missing=()
  for image in $(images_named); do
    docker image inspect "$image" >/dev/null 2>&1 && continue
    if [ "${COMPOSE_CHECK_STANDINS:-0}" != 1 ] && timeout 60 docker pull -q "$image" >/dev/null 2>"$work/pull.err"; then
      say "pulled $image"
      continue
    fi
    missing+=("$image")
  done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$own_engine" = 1 ] ||
    die "cannot pull ${missing[*]} ($(tail -1 "$work/pull.err" 2>/dev/null)); stand-ins are built only on this check's own engine, never over a real engine's images"
  say "cannot pull ${missing[*]}: building stand-ins (docker/standins)"
  for image in "${missing[@]}"; do
    name=$(standin_for "$image") ||
      die "docker-compose.yml or Dockerfile names $image, which cannot be pulled here and has no stand-in in docker/standins"
    build_standin "$image" "$name"
  done
}

# ---------------------------------------------------------------- one run
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
}

# Seconds since the run began before each line, to see where time goes.
stamp() {
  local t0=$SECONDS line
  while IFS= read -r line; do printf '%4ds %s\n' $((SECONDS - t0)) "$line"; done
}

compose_down() {
  local p=$1 dir
  dir=$(cat "$work/$p.dir" 2>/dev/null) || return 0
  # On someone else's engine remove what was built; on our own, keep the
  # build cache for the next run (the engine goes with the temp dir).
  local rmi=()
  [ "$own_engine" = 1 ] || rmi=(--rmi local)
  (cd "$dir" && "${compose[@]}" -p "$p" down -v "${rmi[@]}" --remove-orphans >"$work/$p.down.log" 2>&1) ||
    { say "compose down of $p failed:"; tail -5 "$work/$p.down.log" >&2; }
  rm -f "$work/$p.dir"
}

# explain PROJECT LOG: which service failed and why, one line each, the
# first one most likely the cause. Prints "SERVICE: WHY" lines.
explain() {
  local p=$1 log=$2 svc
  # A build failure stops compose before any container of that service.
  sed -E 's/\x1b\[[0-9;]*m//g; s/^ *[0-9]+s //' "$2" > "$work/$p.plain"
  log=$work/$p.plain
  svc=$(sed -nE "s/^(ERROR: )?Service '([^']+)' failed to build.*/\2/p" "$log" | head -1)
  if [ -n "$svc" ]; then
    echo "$svc: its image did not build: $(grep -E "error|undefined|cannot|not found|returned a non-zero code|failed" "$log" |
      grep -v "Service '$svc' failed to build" | tail -4 | tr '\n' ' ' | cut -c1-600)"
    return
  fi
  local id state code health hlog name
  while read -r id; do
    name=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
    state=$(docker inspect -f '{{.State.Status}}' "$id")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
    if [ "$health" = unhealthy ]; then
      hlog=$(docker inspect -f '{{with .State.Health}}{{range .Log}}{{.ExitCode}}: {{.Output}}{{"\n"}}{{end}}{{end}}' "$id" | grep -v '^\s*$' | tail -1 | tr '\n' ' ')
      echo "$name: unhealthy: its healthcheck $(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$id") failed every try; the last said: ${hlog:0:300}"
    elif [ "$state" = exited ] && [ "$code" != 0 ]; then
      echo "$name: exited with code $code: $(docker logs --tail 4 "$id" 2>&1 | tr '\n' ' ' | cut -c1-400)"
    fi
  done < <(docker ps -aq --filter "label=com.docker.compose.project=$p")
  # Services still running a one-shot job, or never started.
  while read -r id; do
    name=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
    state=$(docker inspect -f '{{.State.Status}}' "$id")
    case "$name:$state" in
      rabbitmq:*|source-db:*|restored-db:*) ;;
      *:running) echo "$name: still running when the stack failed; its last lines: $(docker logs --tail 3 "$id" 2>&1 | tr '\n' ' ' | cut -c1-400)" ;;
      *:created) echo "$name: never started" ;;
    esac
  done < <(docker ps -aq --filter "label=com.docker.compose.project=$p")
  # What compose itself said last (a dependency that was unhealthy, a
  # service that did not complete).
  grep -E '^ERROR:|is unhealthy|did(n.t| not) complete successfully' "$log" | tail -2 | sed 's/^/compose: /' || true
}

# run_stack BREAK: one `compose up`; returns its verdict in $verdict
# ("ok" or the explain lines).
run_stack() {
  local brk=$1 p dir t0 rc=0
  p="segmqcheck$$${brk}"
  dir=$repo
  if [ -n "$brk" ]; then
    dir=$work/src-$brk
    mkdir -p "$dir"
    git ls-files -z -co --exclude-standard | (cd "$repo" && xargs -0 cp -a --parents -t "$dir")
    case "$brk" in
      creds) sed -i 's/RABBITMQ_DEFAULT_USER:/RABBITMQ_DEFAULT_USERNAME:/' "$dir/docker-compose.yml" ;;
      health) sed -i 's/"rabbitmq-diagnostics", "-q"/"rabbitmq-diagnostic", "-q"/' "$dir/docker-compose.yml" ;;
      dockerfile) sed -i 's#^COPY --from=build /out/ #COPY --from=build /out/bin/ #' "$dir/Dockerfile" ;;
      cgo)
        # What happens when a dependency needs cgo: code that exists only
        # with cgo, used by code that is always built.
        printf 'package main\n\n// #include <stdlib.h>\nimport "C"\n\nfunc cgoOnly() { C.free(nil) }\n' > "$dir/snapshot/zz_cgo.go"
        printf 'package main\n\nfunc init() { cgoOnly() }\n' > "$dir/snapshot/zz_cgo_use.go" ;;
    esac
    if [ "$brk" != cgo ] && cmp -s "$repo/docker-compose.yml" "$dir/docker-compose.yml" && cmp -s "$repo/Dockerfile" "$dir/Dockerfile"; then
      die "--break $brk changed nothing: docker-compose.yml or Dockerfile moved on; update the breakage"
    fi
  fi
  echo "$dir" > "$work/$p.dir"
  projects+=("$p")
  t0=$(date +%s)
  say "compose up ($p${brk:+, broken: $brk}; $ROWS rows)"
  (
    cd "$dir"
    export DB_ROWS=$ROWS CONSUMER_TIMEOUT=${brk:+30s} RABBITMQ_PORT RABBITMQ_UI_PORT
    CONSUMER_TIMEOUT=${CONSUMER_TIMEOUT:-120s}
    RABBITMQ_PORT=$(free_port) RABBITMQ_UI_PORT=$(free_port)
    timeout "$RUN_TIMEOUT" "${compose[@]}" -p "$p" up --build --exit-code-from proof proof
  ) 2>&1 | stamp > "$work/$p.log" || rc=$?
  mkdir -p "$repo/bin/compose-check"
  cp "$work/$p.log" "$repo/bin/compose-check/${brk:-demo}.log"
  say "compose up exited $rc after $(elapsed "$t0")"
  verdict=ok
  if [ "$rc" = 124 ]; then
    verdict="the stack did not finish within ${RUN_TIMEOUT}s"$'\n'"$(explain "$p" "$work/$p.log")"
  elif [ "$rc" != 0 ]; then
    verdict=$(explain "$p" "$work/$p.log")
    [ -n "$verdict" ] || verdict="compose exited $rc: $(tail -3 "$work/$p.log" | tr '\n' ' ')"
  else
    # Exit 0 from the proof; check the story's own words too.
    local logs
    logs=$(cd "$dir" && "${compose[@]}" -p "$p" logs --no-color consumer proof 2>&1)
    for want in 'received transfer .* size and sha256 verified' '^.*\| ok /out/db.bin' 'equal: the database holds exactly' 'proof: ok, the restored database equals the source'; do
      grep -qE "$want" <<<"$logs" || verdict="exit 0, but the logs lack /$want/"
    done
    [ "$verdict" = ok ] && grep -E 'received transfer|equal:|restored md5|proof: ok' <<<"$logs" | sed 's/^[^|]*| //' | cut -c1-200 >&2
  fi
  compose_down "$p"
}

# ---------------------------------------------------------------- main
start_engine
t_images=$(date +%s)
ensure_images
say "images ready in $(elapsed "$t_images")"
failed=0 passed=0
run_stack ""
if [ "$verdict" = ok ]; then
  say "ok: the compose demo restored the database and proved it equal"
  passed=1
else
  say "the compose demo failed; which service and why:"
  sed 's/^/  /' <<<"$verdict" >&2
  say "full compose output: bin/compose-check/demo.log"
  die "the compose demo failed: $(head -1 <<<"$verdict")"
fi
declare -A expect=(
  [creds]='^(producer|consumer): .*(ACCESS_REFUSED|access refused|username or password)'
  [health]='^rabbitmq: unhealthy: .*rabbitmq-diagnostic"'
  [dockerfile]='^(dump|producer|consumer): its image did not build: .*(COPY failed|no such file|not exist)'
  [cgo]='^(dump|producer|consumer): its image did not build: .*undefined: cgoOnly'
)
for brk in "${breaks[@]}"; do
  run_stack "$brk"
  if [ "$verdict" = ok ]; then
    say "--break $brk: FAILED: the broken stack passed"; failed=$((failed + 1)); continue
  fi
  if grep -qE "${expect[$brk]}" <<<"$verdict"; then
    say "--break $brk: failed as it must, and said why:"
    passed=$((passed + 1))
  else
    say "--break $brk: FAILED: it failed, but not saying /${expect[$brk]}/ (full output: bin/compose-check/$brk.log):"; failed=$((failed + 1))
  fi
  sed 's/^/  /' <<<"$verdict" >&2
done
stop_engine
[ "$host_changed" = 0 ] || exit 1
say "all done in $(elapsed "$start_all")"
echo "compose-check: $passed passed, $failed failed"
[ "$failed" = 0 ] || die "a breakage was not reported as it must be"
