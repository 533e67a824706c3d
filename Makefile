# Developer and CI entry points. `make run` starts the service with its
# defaults; `make test` prepares what the tests need and runs them all.

GO            ?= go
GOBIN         := $(shell $(GO) env GOPATH)/bin
STRIPE_MOCK   := $(GOBIN)/stripe-mock
STRIPE_MOCK_VERSION := v0.203.0
# Long chaos and crash runs: make test TEST_LONG=1
TEST_LONG     ?=
FUZZTIME      ?= 20s

export STRIPE_MOCK_BIN := $(STRIPE_MOCK)
export TEST_LONG

.PHONY: run test deps postgres vet fuzz build

run:
	$(GO) run ./cmd/billingd serve

build:
	$(GO) build -o bin/billingd ./cmd/billingd

test: deps vet bench-short deploy-check
	$(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) fuzz

vet:
	$(GO) vet ./...

# Each fuzz target runs for FUZZTIME in CI; raise it for a long run.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBody$$' -fuzztime $(FUZZTIME) ./adapters/http/

# Benchmarks against raw SQL baselines; see docs/benchmarks.md. bench takes
# about 20 minutes and rewrites that page; bench-short runs every scenario
# at small sizes without judging timings.
.PHONY: bench bench-short
bench: postgres
	$(GO) run ./cmd/billbench

bench-short: postgres
	$(GO) run ./cmd/billbench -short

deps: postgres $(STRIPE_MOCK)

# Starts the local PostgreSQL cluster when it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	}
	@pg_isready -h 127.0.0.1 -p 5432

$(STRIPE_MOCK):
	$(GO) install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)

# Static checks of deploy/, which need no container engine: promtool checks
# and unit-tests the alerting rules, and the TestDeploy tests parse every
# manifest and the dashboard and look up each metric they name in a scrape
# of the real binary. See docs/operations.md.
.PHONY: deploy-check promtool
deploy-check: postgres promtool
	@if command -v promtool >/dev/null; then \
		set -e; \
		promtool check rules deploy/prometheus/alerts.yaml; \
		promtool test rules deploy/prometheus/alerts_test.yaml; \
	fi
	$(GO) test -count=1 -run '^TestDeploy' ./cmd/billingd/

# Installs promtool from Debian's prometheus package when it is missing. CI
# fails without it; elsewhere the rules are skipped with a warning.
promtool:
	@command -v promtool >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing promtool (Debian package prometheus)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null || true; \
		fi; \
	}
	@command -v promtool >/dev/null || { \
		if [ -n "$$CI" ]; then echo "deploy-check: promtool is missing and could not be installed" >&2; exit 1; fi; \
		echo "**********************************************************************"; \
		echo "*** WARNING: promtool not found, so the alerting rules are NOT checked."; \
		echo "*** Install it with: apt-get install prometheus"; \
		echo "**********************************************************************"; \
	}
