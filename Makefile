# Tests and the demo need the local AWS emulators (npm packages pinned in
# tools/emulators); `make deps` installs them, see internal/localaws.

GO  ?= go
NPM ?= npm

EMULATORS := tools/emulators
# Inside node_modules on purpose: npm ci deletes node_modules first, so the
# stamp exists only after an install that finished.
EMULATORS_STAMP := $(EMULATORS)/node_modules/.make-deps-stamp

.PHONY: deps test demo

deps: $(EMULATORS_STAMP)
	$(GO) mod download

$(EMULATORS_STAMP): $(EMULATORS)/package.json $(EMULATORS)/package-lock.json
	$(NPM) ci --prefix $(EMULATORS)
	touch $@

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...

demo: deps
	$(GO) run ./cmd/kinesis-demo roundtrip
