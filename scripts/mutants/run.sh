#!/bin/sh
# Re-applies each deliberate bug of issue 14 (scripts/mutants/*.patch) to
# a temporary copy of the working tree and checks that the tests named in
# the patch's header fail. Prints KILLED or SURVIVED per mutant; exits 1
# if any survived.
#
#   scripts/mutants/run.sh                   every mutant, its named tests
#   scripts/mutants/run.sh ack-before-fsync  one mutant
#   MUTANTS_FULL=1 scripts/mutants/run.sh    each mutant's whole packages
#
# The tests run against a real RabbitMQ as in make test
# (SEGMQ_RABBITMQ_ROOT, default the 4.0.5 root).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/scripts/mutants
export SEGMQ_RABBITMQ_ROOT="${SEGMQ_RABBITMQ_ROOT-/var/cache/segmq/trixie-rabbitmq}"
if [ $# -eq 0 ]; then
	set -- $(cd "$dir" && ls *.patch | sed 's/\.patch$//')
fi
survived=0
for name in "$@"; do
	patch=$dir/$name.patch
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/segmq-mutant-$name.XXXXXX")
	(cd "$root" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$tmp"
	if ! (cd "$tmp" && git apply "$patch"); then
		echo "$name: patch does not apply to this tree: update it"
		rm -rf "$tmp"
		exit 2
	fi
	pkgs=$(sed -n 's/^Packages: //p' "$patch")
	run=$(sed -n 's/^Run: //p' "$patch")
	[ "${MUTANTS_FULL:-}" = 1 ] && run=.
	start=$(date +%s)
	if (cd "$tmp" && go test -count=1 -timeout 10m -run "$run" $pkgs) >"$tmp.log" 2>&1; then
		echo "SURVIVED $name ($(($(date +%s) - start)) s): $(sed -n 's/^Mutant: //p' "$patch")"
		survived=$((survived + 1))
	else
		first=$(grep -m1 -E '^[[:space:]]+[a-z_]+_test\.go:[0-9]+: ' "$tmp.log" || grep -m1 -E '^--- FAIL|^FAIL|cannot|undefined' "$tmp.log" || true)
		first=$(echo "$first" | sed 's/^[[:space:]]*//' | cut -c1-220)
		echo "KILLED   $name ($(($(date +%s) - start)) s): $first"
	fi
	rm -rf "$tmp" "$tmp.log"
done
[ "$survived" -eq 0 ]
