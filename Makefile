# clerksync — run `make` for the list of targets.
SHELL := /usr/bin/env bash

SQLC_VERSION          := v1.31.1
GOLANGCI_LINT_VERSION := v2.6.2
GOVULNCHECK_VERSION   := v1.1.4
GO_TEST_FLAGS         ?=
FUZZTIME              ?= 60s
SOAK_FLAGS            ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

.PHONY: test
test: ## Run every test with the race detector (needs Postgres; NATS is embedded).
	go test -race -shuffle=on -count=1 $(GO_TEST_FLAGS) ./...

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
vuln: ## govulncheck (pinned): known vulnerabilities reachable from our code (needs vuln.go.dev).
	go run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) ./...
