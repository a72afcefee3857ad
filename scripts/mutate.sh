#!/bin/sh
# make mutate: mutation testing of segment, snapfile and transfer with
# go-gremlins/gremlins (pinned below). Each package gets its own run,
# judged by that package's tests; the summary prints killed, lived,
# timed out and not covered mutants and the efficacy per package.
#
# transfer's full suite takes minutes against a broker, far too slow to
# repeat per mutant, so there gremlins runs only the tests that need no
# broker (TRANSFER_TESTS: the classifier, the acker, the part file and
# the strict-filesystem crash tests, which drive the receive path's
# handle/flush), and mutates only the files those tests own
# (TRANSFER_FILES). The rest of transfer is broker code; the deliberate
# bugs of scripts/mutants/*.patch (make mutants) cover its mechanism.
#
#   MUTATE_PKGS="segment"  MUTATE_WORKERS=2  scripts/mutate.sh
set -eu
GREMLINS_VERSION=v0.6.0
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
pkgs=${MUTATE_PKGS:-segment snapfile transfer}
workers=${MUTATE_WORKERS:-2}
TRANSFER_TESTS=${TRANSFER_TESTS:-'^(TestClassify.*|TestAcker.*|TestPartFile.*|TestCrash.*|TestExactMaxMSSValidate)$'}
TRANSFER_FILES=${TRANSFER_FILES:-acker.go classify.go partfile.go}
out=${MUTATE_OUT:-$root/mutate}
mkdir -p "$out"
bin=$(mktemp -d)
GOBIN=$bin go install github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION

# transfer's TestMain wants a broker: one throwaway node for the whole
# run (the host's rabbitmq-server), so no test run starts its own.
node=
cleanup() {
	[ -n "$node" ] && go run ./internal/cmd/localbroker stop --dir "$node" >/dev/null 2>&1 || true
	[ -n "$node" ] && rm -rf "$node"
	rm -rf "$bin"
}
trap cleanup EXIT INT TERM
case " $pkgs " in *" transfer "*)
	if [ -z "${AMQP_URL:-}" ]; then
		node=$(mktemp -d)
		AMQP_URL=$(go run ./internal/cmd/localbroker start --dir "$node" --root "")
		export AMQP_URL
	fi
esac

start=$(date +%s)
for p in $pkgs; do
	t0=$(date +%s)
	run=
	excl=
	if [ "$p" = transfer ]; then
		run="-run=$TRANSFER_TESTS"
		# Only the files those tests own: every mutant recompiles and
		# relinks transfer's large test binary (about 20 s here).
		for f in transfer/*.go; do
			case " $TRANSFER_FILES " in *" $(basename "$f") "*) continue ;; esac
			case "$f" in *_test.go) continue ;; esac
			excl="$excl -E $(basename "$f" | sed 's/\./\\./g')\$"
		done
	fi
	# -count=1: gremlins times each mutant against its own coverage run,
	# which must not come from the test cache.
	GOFLAGS="-count=1 $run" "$bin/gremlins" unleash "./$p" $excl --workers "$workers" --timeout-coefficient 5 \
		--output "$out/$p.json" >"$out/$p.log" 2>&1 || { tail -20 "$out/$p.log"; exit 1; }
	line=$(grep -E '^Killed: ' "$out/$p.log" || true)
	eff=$(grep -E '^Test efficacy: ' "$out/$p.log" || true)
	cov=$(grep -E '^Mutator coverage: ' "$out/$p.log" || true)
	printf '%-9s %s; %s; %s (%d s)\n' "$p" "$line" "$eff" "$cov" $(($(date +%s) - t0))
	grep -E '^ +LIVED ' "$out/$p.log" | sed "s|^ *|    $p: |" || true
done
echo "mutation testing took $(($(date +%s) - start)) s; logs and JSON in $out"
