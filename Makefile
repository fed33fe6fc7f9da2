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

.PHONY: deps test fuzz demo

deps: $(EMULATORS_STAMP)
	$(GO) mod download

$(EMULATORS_STAMP): $(EMULATORS)/package.json $(EMULATORS)/package-lock.json
	$(NPM) ci --prefix $(EMULATORS)
	touch $@

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...
	$(MAKE) --no-print-directory fuzz

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
