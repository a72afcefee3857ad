# segmq. `make test` is the test command CI runs (.ci/run); `make run` the demo.
GO      ?= go
BIN     := bin
RECORDS ?= 1000000

.PHONY: all build test lint bench bench-go faults mutate mutants run clean run-db test-db bench-db compose-check

all: build

build:
	$(GO) build -o $(BIN)/ ./snapshot ./producer ./consumer ./internal/cmd/localbroker

# The RabbitMQ that test and faults run: 4.0.5 from a Debian trixie root
# that scripts/setup.sh builds once (about 100 s, 370 MB). An empty value
# (SEGMQ_RABBITMQ_ROOT= make test) runs them on the host's rabbitmq-server
# (3.10.8 on bookworm) instead. make run and make bench use the host's
# unless it is set.
RABBITMQ4_ROOT ?= /var/cache/segmq/trixie-rabbitmq

# The whole suite, race detector on, against a real RabbitMQ (a throwaway
# local node unless $$AMQP_URL is set). Installs what is missing.
test: export SEGMQ_RABBITMQ_ROOT ?= $(RABBITMQ4_ROOT)
test:
	scripts/setup.sh
	$(GO) test -race -count=1 -timeout 20m ./...

# Formatting, vet, staticcheck, generated code up to date, mutant patches
# still apply, compose file valid.
lint:
	SEGMQ_SETUP_COMPOSE=1 scripts/setup.sh
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) generate ./proto/...
	@git diff --exit-code -- proto || { echo "lint: generated code is stale: run go generate ./proto/... and commit"; exit 1; }
	@for p in scripts/mutants/*.patch; do git apply --check "$$p" || { echo "lint: $$p no longer applies: cut it again against the code (make mutants needs it)"; exit 1; }; done
	@if command -v docker-compose >/dev/null; then docker-compose -f docker-compose.yml config -q; else docker compose -f docker-compose.yml config -q; fi
	@echo lint ok

# docker-compose.yml end to end, for real (scripts/compose-check.sh): its
# own throwaway Docker engine when none runs, stand-in images where none can
# be pulled, the database demo through the stack, then each breakage in
# COMPOSE_BREAKS (creds health dockerfile) must fail saying which service
# and why. Leaves the host as it found it, or fails.
COMPOSE_BREAKS ?= dockerfile creds
compose-check:
	scripts/compose-check.sh $(foreach b,$(COMPOSE_BREAKS),--break $(b))

# The fault matrix: every randomised fault scenario 5 times from a random
# seed, printed first (FAULT_SEED=N make faults reproduces a run; make test
# always runs seed 1); one MATRIX line per run in faults-matrix.txt.
# -tags faults adds the cases too slow for make test (more cluster
# failovers, each printing a PAUSE line).
FAULT_RUNS ?= 5
FAULT_SEED ?= random
faults: export SEGMQ_RABBITMQ_ROOT ?= $(RABBITMQ4_ROOT)
faults:
	scripts/setup.sh
	SEGMQ_FAULT_RUNS=$(FAULT_RUNS) SEGMQ_FAULT_SEED=$(FAULT_SEED) $(GO) test -tags faults -race -count=1 -timeout 40m -v ./internal/faults | tee faults.log | grep -E 'FAULT SEED|MATRIX|PAUSE|^(--- FAIL|FAIL|ok)'
	@grep -o 'MATRIX.*' faults.log > faults-matrix.txt; ! grep -q '^--- FAIL' faults.log

# Mutation testing (go-gremlins/gremlins, pinned in the script) of
# segment, snapfile and transfer, one package at a time, each judged by its
# own tests (transfer: its broker-free tests); prints killed/lived and the
# efficacy per package. About 40 minutes here (see README, Testing).
# MUTATE_PKGS=segment narrows it.
mutate:
	scripts/mutate.sh

# The issue-14 mutants (scripts/mutants/*.patch): each deliberate bug is
# applied to a copy of the tree and must fail the tests its patch names.
mutants: export SEGMQ_RABBITMQ_ROOT ?= $(RABBITMQ4_ROOT)
mutants:
	scripts/setup.sh
	scripts/mutants/run.sh

# End to end against a raw amqp091-go baseline on the same broker
# ($$AMQP_URL, else a throwaway local node): raw + write per ack/fsync
# cadence (the ceiling), throughput ratio, peak RSS at 256 MiB/1 GiB/4 GiB,
# gen rows/s, MSS sweep, each --compress mode. It was about 5 minutes
# before issue 13 added the cadences and compression runs (not yet timed whole);
# needs ~15 GB of free disk in bench/out. Writes bench/results.md and the
# README's table. BENCH_FLAGS passes flags to internal/cmd/bench. Last, the
# database section: bin/benchdb at BENCH_DB_ROWS rows (README's bench-db table).
bench: build
	scripts/setup.sh
	$(GO) build -o $(BIN)/ ./internal/cmd/bench
	$(BIN)/bench -bin $(BIN) -dir bench/out -results bench/results.md -readme README.md $(BENCH_FLAGS)
	$(GO) build -o $(BIN)/ ./internal/cmd/benchdb
	$(BIN)/benchdb -rows $(BENCH_DB_ROWS) -runs 3 -bin $(BIN) -dir bench/db -results bench/results-db.md -readme README.md

# Go benchmarks of the formats and the hot paths (no broker).
bench-go:
	$(GO) test -run '^$$' -bench . -count 1 ./segment ./recordio ./snapfile

# The demo: a real broker, a 1M-record snapshot, producer, consumer, proof.
# Then the database story (scripts/demo-db.sh, also `make run-db`).
run:
	RECORDS=$(RECORDS) scripts/demo.sh
	DB_ROWS=$(DB_ROWS) scripts/demo-db.sh

clean:
	rm -rf $(BIN)

# --- databases (snapshot dump/restore; see README "Databases") ---
DB_ROWS  ?= 1000000
DB_RUNS  ?= 3
# The database rows of make bench (its last section, about 2 minutes at
# 1M); the 10M-row figures in the README come from make bench-db.
BENCH_DB_ROWS ?= 1000000

# PostgreSQL -> snapshot -> RabbitMQ -> snapshot -> PostgreSQL, with proof.
run-db:
	DB_ROWS=$(DB_ROWS) scripts/demo-db.sh

# The database tests alone (a throwaway PostgreSQL cluster, or $$DATABASE_URL).
test-db:
	scripts/setup.sh
	$(GO) test -race -count=1 -timeout 10m ./dbsnap/... ./snapshot/... ./internal/pgtest/... ./internal/cmd/benchdb/...

# snapshot dump/restore against pg_dump/pg_restore on one throwaway
# cluster (bulk settings, fsync on) with DB_ROWS rows; median of DB_RUNS.
# Needs ~6x the database's size free in bench/db. Appends to bench/results-db.md.
bench-db: build
	scripts/setup.sh
	$(GO) build -o $(BIN)/ ./internal/cmd/benchdb
	$(BIN)/benchdb -rows $(DB_ROWS) -runs $(DB_RUNS) -bin $(BIN) -dir bench/db -results bench/results-db.md
