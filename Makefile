# clerksync — run `make` for the list of targets.
SHELL := /usr/bin/env bash

SQLC_VERSION          := v1.31.1
GOLANGCI_LINT_VERSION := v2.6.2
GOVULNCHECK_VERSION   := v1.9.0
GOTESTSUM_VERSION     := v1.13.0
# The Go vulnerability database as a Go module: golang.org/x/vulndb holds every OSV entry under
# data/osv and cmd/indexdb, which turns them into the database govulncheck reads. Pinning it makes
# make vuln reproducible and needs nothing but the module proxy (not vuln.go.dev).
VULNDB_VERSION        := v0.0.0-20261105234957-e22db6528018
VULNDB_DIR            := .cache/vulndb/$(VULNDB_VERSION)
VULNDB_LOCAL          := file://$(CURDIR)/$(VULNDB_DIR)
VULNDB                ?= $(VULNDB_LOCAL)
# The toolchain whose standard library govulncheck checks. auto: the go.mod toolchain line, or the
# local go when that is newer, even when GOTOOLCHAIN=local is set in the environment (builds that
# force an older local go do not get the fixes that line stands for). VULN_GOTOOLCHAIN=local checks
# the machine's own go instead.
VULN_GOTOOLCHAIN      ?= auto
GO_TEST_FLAGS         ?=
FUZZTIME              ?= 60s
SOAK_FLAGS            ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@if [ -t 1 ]; then on=$$'\033[36m' off=$$'\033[0m'; else on= off=; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  %s%-16s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

.PHONY: generate
generate: ## Regenerate the sqlc code in internal/postgres/dbsqlc from queries/ and schema/.
	go run github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION) generate

.PHONY: generate-check
generate-check: generate ## Fail when the committed generated code differs from what queries/ and schema/ produce.
	@git diff --exit-code --stat -- internal/postgres/dbsqlc || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- internal/postgres/dbsqlc)" || { echo "untracked generated files: run make generate and commit"; exit 1; }

.PHONY: check
check: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt would change:"; echo "$$out"; exit 1; }
	go vet ./...

.PHONY: lint
lint: check ## golangci-lint (pinned) on top of gofmt and go vet.
	go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run ./...

# gotestsum runs go test -json and prints one line per package (a failing one with its shuffle
# seed), then the skipped and failed tests in full and a closing "DONE N tests[, S skipped][, F
# failures] in T" line; it exits non-zero when go test does.
.PHONY: test
test: ## Run every test with the race detector (needs Postgres; NATS is embedded), then a summary.
	go run gotest.tools/gotestsum@$(GOTESTSUM_VERSION) --format pkgname --format-hide-empty-pkg -- -race -shuffle=on -count=1 $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: ## Run the Go benchmarks.
	go test -run='^$$' -bench=. -benchmem -count=1 ./...

.PHONY: loadtest
loadtest: ## Measure ingest, worker and api against the machine's raw limits (in-process stack; see docs/benchmarks.md). LOADTEST_FLAGS adds flags.
	go run ./cmd/loadgen all $(LOADTEST_FLAGS)

.PHONY: soak
soak: ## Crash soak (~10 min): the built services, NATS and Postgres killed while 20,000 webhooks flow; prints one summary line. SOAK_FLAGS adds flags (go run ./cmd/soak -h).
	go run ./cmd/soak $(SOAK_FLAGS)

.PHONY: fuzz
fuzz: ## Run every fuzz target (func FuzzXxx in a _test.go) for FUZZTIME (default 60s) each; stops at the first crash.
	@set -euo pipefail; \
	targets=$$(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . \
		| sed -E 's#^\./(.*)/[^/]+:[0-9]+:func (Fuzz[A-Za-z0-9_]*)\(.*#\1:\2#' | sort -u); \
	for t in $$targets; do \
		dir=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name (./$$dir, $(FUZZTIME))"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) "./$$dir"; \
	done

.PHONY: vuln
vuln: $(if $(filter $(VULNDB_LOCAL),$(VULNDB)),$(VULNDB_DIR)/index/db.json) ## govulncheck (pinned) against the pinned vulndb (module proxy only); VULNDB=https://vuln.go.dev for the live one.
	@echo "govulncheck $(GOVULNCHECK_VERSION), $$(GOTOOLCHAIN=$(VULN_GOTOOLCHAIN) go env GOVERSION), db $(VULNDB)"
	GOTOOLCHAIN=$(VULN_GOTOOLCHAIN) go run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) -db $(VULNDB) ./...

.PHONY: vulndb
vulndb: $(VULNDB_DIR)/index/db.json ## Build the vulnerability database from golang.org/x/vulndb@VULNDB_VERSION into .cache/vulndb (once).

# Built in a temporary directory and renamed into place, so an interrupted build is never taken
# for a finished one. Run outside the module so that nothing touches go.mod or go.sum.
$(VULNDB_DIR)/index/db.json:
	@set -euo pipefail; \
	echo "building the vulnerability database from golang.org/x/vulndb@$(VULNDB_VERSION) into $(VULNDB_DIR)"; \
	info=$$(cd / && go mod download -json golang.org/x/vulndb@$(VULNDB_VERSION)) || { echo "$$info"; exit 1; }; \
	src=$$(echo "$$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$$/\1/p'); \
	test -d "$$src/data/osv" || { echo "no data/osv in golang.org/x/vulndb@$(VULNDB_VERSION) ($$src)"; exit 1; }; \
	mkdir -p "$(dir $(VULNDB_DIR))"; \
	tmp=$$(mktemp -d "$(CURDIR)/$(VULNDB_DIR).tmp.XXXXXX"); trap 'rm -rf "$$tmp"' EXIT; \
	(cd / && go run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$src/data/osv" -out "$$tmp/db"); \
	test -f "$(VULNDB_DIR)/index/db.json" || { rm -rf "$(VULNDB_DIR)"; mv "$$tmp/db" "$(VULNDB_DIR)"; }; \
	echo "$$(ls "$(VULNDB_DIR)/ID" | grep -c '\.json$$') entries in $(VULNDB_DIR)"
