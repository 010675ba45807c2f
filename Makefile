# helix — build, test, benchmark, lint.
GO       ?= go
# The pure packages (no IO, no goroutines of their own) run under the race detector,
# and so does the SDK (root package), whose driver is all goroutines and timers.
RACE     := ./engine/... ./sim/... ./scenarios/... .
PKGS_RACE = $(shell $(GO) list $(RACE) 2>/dev/null)
PKGS_REST = $(filter-out $(PKGS_RACE),$(shell $(GO) list ./...))

.PHONY: build test test-race test-rest bench lint mutants

build:
	$(GO) build -o bin/helix ./cmd/helix

test: test-race test-rest

test-race:
	$(GO) test -race -count=1 $(PKGS_RACE)

test-rest:
	$(GO) test -count=1 $(PKGS_REST)

bench:
	bash bench/run.sh

# The mutation harness: plants each bug of mutants/list.go in a temporary copy of the
# tree and reports whether the simulator alone and the whole suite catch it (about 10
# minutes on 2 cores; not part of CI). MUTANTS_FLAGS='-run Store -j 1' narrows it.
mutants:
	$(GO) run ./mutants $(MUTANTS_FLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: test-mysql test-tidb

# The MySQL-backed packages on Oracle MySQL 9.7 (provisioned in a chroot on 127.0.0.1:3308
# by scripts/mysql-server.sh; needs root; .ci/run does the same).
MYSQL_PKGS := ./mysqlstore/... ./cmd/helix/... ./e2e/...
test-mysql:
	dsn=$$(bash scripts/mysql-server.sh) && HELIX_TEST_MYSQL_DSN="$$dsn" $(GO) test -count=1 $(MYSQL_PKGS)

# The store conformance suite, the mysqlstore tests and cmd/helix on TiDB (unistore,
# 127.0.0.1:4001). e2e is left out: its fast profile's 270 ms request deadline is too short
# for TiDB on a small machine (see README, Compatibility).
# The first run builds tidb-server into /var/cache/helix (20 minutes on 2 idle cores, 44 busy).
test-tidb:
	dsn=$$(bash scripts/tidb-server.sh start) && HELIX_TEST_MYSQL_DSN="$$dsn" $(GO) test -count=1 ./mysqlstore/... ./cmd/helix/...
