# Tests and the demo need the local AWS emulators (npm packages pinned in
# tools/emulators); `make deps` installs them, see internal/localaws.

GO  ?= go
NPM ?= npm

EMULATORS := tools/emulators
# Inside node_modules on purpose: npm ci deletes node_modules first, so the
# stamp exists only after an install that finished.
EMULATORS_STAMP := $(EMULATORS)/node_modules/.make-deps-stamp

# How long each fuzz target runs in `make fuzz` (and so in `make test`).
FUZZTIME ?= 10s

# golangci-lint is pinned in a module of its own, tools/lint/go.mod, so that this module's go.mod
# (which importers see) does not carry the linter's dependencies. `go tool` fetches and builds it on
# first use (about 2.5 minutes on two cores) and reuses the build from the Go cache after that.
GOLANGCI_LINT := $(GO) tool -modfile=tools/lint/go.mod golangci-lint

.PHONY: deps test lint fuzz demo

deps: $(EMULATORS_STAMP)
	$(GO) mod download
	$(GO) mod download -modfile=tools/lint/go.mod

$(EMULATORS_STAMP): $(EMULATORS)/package.json $(EMULATORS)/package-lock.json
	$(NPM) ci --prefix $(EMULATORS)
	touch $@

test: deps
	$(GO) vet ./...
	$(MAKE) --no-print-directory lint
	$(GO) test -race -count=1 -timeout 40m ./...
	$(MAKE) --no-print-directory fuzz

# lint runs golangci-lint with .golangci.yml (modelled on components-contrib's) over every package
# of this module; tools/lint is a module of its own and is not linted.
lint:
	$(GOLANGCI_LINT) run ./...

# fuzz runs every fuzz target for FUZZTIME, one at a time (go test -fuzz takes one target of one
# package). Targets are found with `go test -list`, so new ones run without editing this file; only
# packages whose tests declare a Fuzz function are listed, since listing compiles the tests. Seed
# corpora live in testdata/fuzz/<Target>/; a failing input is written there too.
fuzz:
	@set -e; \
	for dir in $$(grep -l '^func Fuzz' $$(find . -path ./tools -prune -o -name '*_test.go' -print) | xargs -n1 dirname | sort -u); do \
		for target in $$($(GO) test -list '^Fuzz' $$dir | grep '^Fuzz'); do \
			echo "fuzz: $$dir $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$dir; \
		done; \
	done

demo: deps
	$(GO) run ./cmd/kinesis-demo roundtrip
