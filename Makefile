# Accord — make help lists the targets.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        ?= ./...
BIN         ?= bin/accord

.PHONY: help build run test-bins test chaos test-short crash-report lint fuzz bench clean
.PHONY: licenses alerts-check release release-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/accord (static, pure Go)
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/accord

run: ## run the server on the embedded store (./accord-data)
	$(GO) run ./cmd/accord server

TESTSUM     ?= bin/testsum
# The accord binary the CLI, end-to-end and chaos tests run, built once
# before them rather than inside each test binary (and its -timeout).
TESTBIN     ?= bin/accord-test

test-bins:
	$(GO) build -o $(TESTSUM) ./internal/tools/testsum
	$(GO) build -o $(TESTBIN) ./cmd/accord

test: test-bins ## run every test with the race detector (PostgreSQL tests need ACCORD_TEST_DATABASE_URL or a local server); the chaos scenarios run short; ends with the counts
	ACCORD_CHAOS_FULL= ACCORD_TEST_BINARY=$(abspath $(TESTBIN)) $(TESTSUM) -race -count=1 -timeout 20m $(PKGS)

chaos: test-bins ## the fault-injection scenarios in full (docs/reliability.md); tens of minutes
	ACCORD_CHAOS_FULL=1 ACCORD_TEST_BINARY=$(abspath $(TESTBIN)) $(TESTSUM) -count=1 -timeout 60m -v ./internal/chaos

crash-report: ## run the two kill -9 tests verbosely and print their one-line summaries
	@$(GO) test -race -count=1 -v -run 'TestCrash' ./internal/storage/crashtest ./internal/engine \
		| tee /tmp/accord-crash-report.log | grep -E '^(crashtest|recovery):' ; \
	grep -qE '^--- FAIL|^FAIL' /tmp/accord-crash-report.log && exit 1 || true

test-short: ## quick tests without the race detector
	$(GO) test -short -count=1 $(PKGS)

lint: ## go vet and staticcheck
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

fuzz: ## run every fuzz target of every package, FUZZTIME each (default 30s); plain go test runs their seed corpora
	@for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		ts=$$($(GO) test -list '^Fuzz' $$d) || { echo "$$ts"; exit 1; }; \
		for t in $$(echo "$$ts" | grep '^Fuzz'); do \
			echo "fuzz $$d $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} $$d || exit 1; \
		done; \
	done

bench: build ## storage, saga and bus benchmarks (see BENCHMARKS.md)
	$(BIN) bench storage
	$(BIN) bench --sagas 4000
	$(BIN) bench bus

clean: ## remove build output
	rm -rf bin dist

licenses: ## list the licence of every module compiled into Accord; fails on a copyleft or unknown one
	$(GO) test -count=1 -v -run 'TestDependencyLicences|TestNoticeCreditsDependencies' ./internal/release

alerts-check: ## check the Prometheus alert rules and run their unit tests (needs promtool)
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

release: ## static binaries for linux, darwin, windows × amd64, arm64 in dist/, with SHA256SUMS
	build/release.sh

release-check: ## build linux/amd64 twice (the second from another path with an empty cache) and compare the bytes
	build/release-check.sh linux/amd64
