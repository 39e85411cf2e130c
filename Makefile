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

.PHONY: deps test vet cross lint gateway bench fuzz

deps:
	@scripts/install-deps.sh

vet: deps
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt: not formatted: $$unformatted"; exit 1; fi
	@failed=(); for m in $(MODULES); do echo "== go vet $$m"; (cd $$m && $(GO) vet ./...) || failed+=("$$m"); done; \
	  if [ $${#failed[@]} -gt 0 ]; then echo "== FAILED: go vet in $${failed[*]}"; exit 1; fi

# Every module is tested even when one fails; the failures are listed at
# the end and then fail the target. What tests write for people to look
# at (the web console's screenshots) stays in $(ARTIFACTS).
ARTIFACTS ?= $(CURDIR)/test-artifacts
test: vet cross
	@failed=(); for m in $(MODULES); do echo "== go test -race $$m"; mkdir -p $(ARTIFACTS)/$$m; \
	  (cd $$m && $(GO) test -race -count=1 -timeout 20m -artifacts -outputdir $(ARTIFACTS)/$$m ./...) || failed+=("$$m"); done; \
	  if [ $${#failed[@]} -gt 0 ]; then echo "== FAILED: go test in $${failed[*]}"; exit 1; fi

# Gateways run arm64 and 32-bit arm: every package of the main module must
# build there without cgo.
cross:
	@set -e; for t in arm64: arm:7; do arch=$${t%%:*}; arm=$${t#*:}; \
	  echo "== go build linux/$$arch$${arm:+ GOARM=$$arm} CGO_ENABLED=0"; \
	  GOOS=linux GOARCH=$$arch GOARM=$$arm CGO_ENABLED=0 $(GO) build ./...; done

# staticcheck, pinned; not part of make test so that CI needs no tool download.
lint:
	@set -e; for m in $(MODULES); do echo "== staticcheck $$m"; (cd $$m && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...); done

# The example gateway is a module of its own (it links the podman backend):
# it runs from its directory, with its Go function and its container app's
# binary built first.
gateway: deps
	$(GO) build -o examples/function-go/bootstrap ./examples/function-go
	cd examples/gateway && CGO_ENABLED=0 $(GO) build -o webapp/web ./webapp && $(GO) run . $(ARGS)

# Benchmarks recorded in docs/PERFORMANCE.md. The invoke path's come
# first, each in both machine modes (idle, and beside a spinning process);
# one whose ratio to its floor is more than 20% worse than recorded fails,
# and so does the target.
bench: deps
	$(GO) test -run '^$$' -bench 'InvokeRatios' -benchtime 1x ./function
	$(GO) test -run '^$$' -bench 'Floors' ./function
	$(GO) test -run '^$$' -bench 'HTTPInvoke/(idle|busy)' -benchtime 1x ./edge/api
	$(GO) test -run '^$$' -bench . -count 5 ./edge/... ./internal/... ./function/...

# A short run of every fuzz target (the seed corpora also run in make test).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg; done; done
