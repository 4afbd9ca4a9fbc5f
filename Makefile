# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0

# clearance — live allow/deny prompts for a per-container egress firewall.
#
#   make demo     the main job on built-in defaults, step by step with timings
#   make test     the whole suite (installs the Debian packages it needs as root)
#   make test-attack  only the attacks of docs/threat-model.md (a subset of make test)
#   make bench    Go benchmarks and the end-to-end measurements
#   make build    binaries into ./bin
#   make install  PREFIX=/usr DESTDIR=… puts everything where a distro does
#   make lint     gofmt, go vet, staticcheck (pinned in go.mod), SPDX headers, reuse lint

GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
BINDIR   := bin
CMDS     := $(notdir $(patsubst %/,%,$(dir $(wildcard cmd/*/main.go))))
LDFLAGS  := -s -w -X github.com/terok-ai/clearance/internal/hubd.Version=$(VERSION)
GOFLAGS  ?= -trimpath

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build test test-go test-attack bench demo install lint generate deps fuzz clean package

all: build

build:
	@mkdir -p $(BINDIR)
	@for c in $(CMDS); do \
	  CGO_ENABLED=0 $(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $(BINDIR)/$$c ./cmd/$$c || exit 1; \
	done
	@echo "built: $(CMDS)"

deps:
	@./scripts/deps.sh

generate:
	$(GO) generate ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@./scripts/spdx --check
	@reuse lint -q || { reuse lint; exit 1; }

# The whole suite. As root it installs the Debian packages the tests need;
# with CI=true a test whose prerequisite is missing fails instead of skipping.
# GORACE=atexit_sleep_ms=0: a race-enabled test binary otherwise sleeps 1 s
# at exit, once per package and per helper process the tests start.
test: deps lint build
	@./scripts/check-generated.sh
	CLEARANCE_BIN=$(CURDIR)/$(BINDIR) GORACE=atexit_sleep_ms=0 $(GO) test -race -count=1 -timeout 30m ./...

# The attacks docs/threat-model.md lists, each reproduced against the
# real kernel, sockets and uids (test/attack, and the tests named
# TestAttack… elsewhere), plus the unit measurements that hold the
# sandbox: part of `make test`, runnable on their own. As root; with
# CI=true nothing may skip.
ATTACK_TESTS := Attack|VerdictServiceExposure|VerdictSocketUnit|VerdictUnitsUnderManager|UserUnitsExposure|UserUnitsSandbox
test-attack: deps build
	CLEARANCE_BIN=$(CURDIR)/$(BINDIR) GORACE=atexit_sleep_ms=0 $(GO) test -race -count=1 -timeout 20m -run '$(ATTACK_TESTS)' ./internal/... ./test/attack/ ./test/packaging/ ./test/podman/

# Short coverage-guided runs of every fuzz target; what they find goes into
# testdata/fuzz/ (commit it: `make test` replays every committed corpus).
fuzz:
	@./scripts/fuzz.sh 10s

bench: deps build
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 ./...
	@./scripts/bench.sh

demo: deps build
	@./scripts/demo.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/user $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/doc/clearance
	@for c in $(CMDS); do install -m 0755 $(BINDIR)/$$c $(DESTDIR)$(PREFIX)/bin/$$c; done
	@# Units name /usr/bin/…; point them at $(PREFIX)/bin.
	@for u in units/user/*; do [ -f "$$u" ] && sed 's|/usr/bin/|$(PREFIX)/bin/|g' "$$u" > $(DESTDIR)$(PREFIX)/lib/systemd/user/$$(basename "$$u") || true; done
	@for u in units/system/*; do [ -f "$$u" ] && sed 's|/usr/bin/|$(PREFIX)/bin/|g' "$$u" > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename "$$u") || true; done
	@for m in docs/man/*.1; do [ -f "$$m" ] && install -m 0644 "$$m" $(DESTDIR)$(PREFIX)/share/man/man1/ || true; done
	install -D -m 0644 packaging/sysusers.d/clearance.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/clearance.conf
	@if [ -f packaging/clearance.catalog ]; then install -D -m 0644 packaging/clearance.catalog $(DESTDIR)$(PREFIX)/lib/systemd/catalog/clearance.catalog; fi
	install -d $(DESTDIR)$(PREFIX)/share/clearance/policy.d
	install -m 0644 packaging/policy.d/*.yaml $(DESTDIR)$(PREFIX)/share/clearance/policy.d/
	@if [ -f packaging/oci/clearance.json ]; then install -D -m 0644 packaging/oci/clearance.json $(DESTDIR)$(PREFIX)/share/containers/oci/hooks.d/clearance.json; fi
	@if [ -f completions/clearancectl.bash ]; then install -D -m 0644 completions/clearancectl.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/clearancectl; fi
	@if [ -f completions/_clearancectl ]; then install -D -m 0644 completions/_clearancectl $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_clearancectl; fi
	@if [ -f completions/clearancectl.fish ]; then install -D -m 0644 completions/clearancectl.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/clearancectl.fish; fi
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/clearance/
	@echo "installed into $(DESTDIR)$(PREFIX)"

clean:
	rm -rf $(BINDIR)

# .deb and .rpm into dist/ (nfpm, a tool dependency pinned in go.mod, run
# as "go tool nfpm"; see docs/packaging.md). PACKAGE_FORMATS=deb builds only one.
PACKAGE_FORMATS ?= deb rpm
package:
	@./scripts/package.sh dist $(PACKAGE_FORMATS)
