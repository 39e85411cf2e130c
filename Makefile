# The two entry points of the README:
#   make gateway  runs the example gateway
#   make test     installs what the tests need, then vets and tests every module
SHELL := /bin/bash
GO ?= go
# The podman bindings (container/podman) build without C libraries only with
# these tags; they change nothing for the other modules.
export GOFLAGS := -tags=remote,containers_image_openpgp,exclude_graphdriver_btrfs
# Every Go module in the repository (the main module and nested ones).
MODULES := $(shell find . -name go.mod -not -path './.cache/*' -exec dirname {} \; | sort)

.PHONY: deps test vet lint gateway bench fuzz

deps:
	@scripts/install-deps.sh

vet: deps
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt: not formatted: $$unformatted"; exit 1; fi
	@set -e; for m in $(MODULES); do echo "== go vet $$m"; (cd $$m && $(GO) vet ./...); done

test: vet
	@set -e; for m in $(MODULES); do echo "== go test -race $$m"; (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...); done

# staticcheck, pinned; not part of make test so that CI needs no tool download.
lint:
	@set -e; for m in $(MODULES); do echo "== staticcheck $$m"; (cd $$m && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...); done

gateway: deps
	$(GO) build -o examples/function-go/bootstrap ./examples/function-go
	$(GO) run ./examples/gateway

# Benchmarks recorded in docs/PERFORMANCE.md.
bench: deps
	$(GO) test -run '^$$' -bench . -count 5 ./edge/... ./internal/... ./function/...

# A short run of every fuzz target (the seed corpora also run in make test).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg; done; done
