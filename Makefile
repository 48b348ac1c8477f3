# metad — build, check, test, run.
#   make build   static bin/metad and the bin/metac symlink
#   make test    unit tests (-race), bounded fuzzing, micro-benchmarks once, integration tests
#   make check   gofmt, go vet, staticcheck
#   make run     metad in the foreground on examples/metad.conf (Ctrl-C stops it),
#                on its default control socket: bin/metac in another terminal reaches it
#   make install PREFIX=/usr/local DESTDIR=   metad, the metac link, manual pages, completion
#   make uninstall                            removes what make install installed
#   make image   examples/Dockerfile built with podman (or docker) as metad-example

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
# On amd64 metad's first instruction records the signal dispositions and
# mask it was started with, before the Go runtime changes them, so that
# command mode hands them on exactly (see init/entry_linux_amd64.s).
LDFLAGS     += $(if $(filter amd64,$(shell $(GO) env GOARCH)),-E=metad/init.startEntry)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator
# can fail a target with "context deadline exceeded" as the time runs out
# (go.dev/issue/75804, fixed in Go 1.27). 60000 runs take a few seconds.
FUZZTIME    ?= 60000x

# make install: where things go. DESTDIR is prepended to each, for staging.
PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions

export CGO_ENABLED := 0

.PHONY: all build test unit fuzz integration check run clean test-boot man bench install uninstall image test-fleet

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/metad .
	ln -sfn metad bin/metac

test: unit fuzz integration

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -bench=. -benchtime=1x $(shell $(GO) list ./... | grep -v /tests$$)

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./conffmt
	$(GO) test -run='^$$' -fuzz=FuzzEnvFile -fuzztime=$(FUZZTIME) ./conffmt
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./netctl
	$(GO) test -run='^$$' -fuzz=FuzzResendBody -fuzztime=$(FUZZTIME) ./netctl
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./netctl/metac
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./supervise/notify
	$(GO) test -run='^$$' -fuzz=FuzzParseStatus -fuzztime=$(FUZZTIME) ./supervise/probe
	$(GO) test -run='^$$' -fuzz=FuzzDecodeState -fuzztime=$(FUZZTIME) ./supervise/daemon
	$(GO) test -run='^$$' -fuzz=FuzzParseAnswer -fuzztime=$(FUZZTIME) ./supervise/daemon

integration:
	$(GO) test -count=1 -timeout=15m ./tests

# The fleet test at the size of issue 16: 400 hosts in network namespaces,
# 100 services each, 10 rounds of list losing 5% of the replies (as root).
# go test ./tests runs it with 40 hosts of 20 services.
test-fleet:
	METAD_FLEET_HOSTS=400 METAD_FLEET_SERVICES=100 $(GO) test -count=1 -timeout=20m -run '^TestFleet$$' -v ./tests

check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# metad's default control socket, the one metac uses too: $METAD_SOCKET,
# else /run/metad.sock for root, else $XDG_RUNTIME_DIR/metad.sock, else
# /tmp/metad-$UID.sock. metad logs it ("control socket listening").
run: build
	@echo 'metad runs until Ctrl-C; in another terminal here: bin/metac list'
	bin/metad -f examples/metad.conf

# bin/metad is built when missing, so that "sudo make install" after
# "make build" needs no Go in root's PATH.
install: $(if $(wildcard bin/metad),,build)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 755 bin/metad $(DESTDIR)$(SBINDIR)/metad
	ln -sfn metad $(DESTDIR)$(SBINDIR)/metac
	install -m 644 docs/man/metad.8 docs/man/metac.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 docs/man/metad.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 644 completion/metad.bash $(DESTDIR)$(BASHCOMPDIR)/metad
	ln -sfn metad $(DESTDIR)$(BASHCOMPDIR)/metac
	install -m 644 completion/_metad $(DESTDIR)$(ZSHCOMPDIR)/_metad

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/metad $(DESTDIR)$(SBINDIR)/metac \
		$(DESTDIR)$(MANDIR)/man8/metad.8 $(DESTDIR)$(MANDIR)/man8/metac.8 \
		$(DESTDIR)$(MANDIR)/man5/metad.conf.5 \
		$(DESTDIR)$(BASHCOMPDIR)/metad $(DESTDIR)$(BASHCOMPDIR)/metac \
		$(DESTDIR)$(ZSHCOMPDIR)/_metad

# The example image, built offline: FROM scratch, with bin/metad and the
# host's static busybox (Debian's busybox-static) copied into the build
# context as bin/busybox. Run it as examples/Dockerfile says.
CONTAINER ?= $(shell command -v podman || command -v docker || echo podman)
BUSYBOX   ?= /bin/busybox

image: build
	@file -L $(BUSYBOX) | grep -q 'statically linked' || { echo "$(BUSYBOX) is not static: apt-get install busybox-static"; exit 1; }
	cp $(BUSYBOX) bin/busybox
	$(CONTAINER) build -f examples/Dockerfile -t metad-example .

clean:
	rm -rf bin

test-boot: build
	METAD_BOOT_TEST=1 METAD_BOOT_BIN=$(CURDIR)/bin/metad $(GO) test -count=1 -timeout=10m -v -run '^TestBoot' ./tests

# The man pages: roff from the markdown in docs/, each checked with man -l.
MANPAGES := docs/metad.8.md docs/metac.8.md docs/metad.conf.5.md
man:
	mkdir -p docs/man
	$(GO) run ./tests/mangen -o docs/man $(MANPAGES)
	@command -v man >/dev/null || { echo "man not found: apt-get install man-db"; exit 1; }
	@for f in $(patsubst docs/%.md,docs/man/%,$(MANPAGES)); do \
		warn=$$(MANWIDTH=80 man --warnings -l $$f 2>&1 >/dev/null); \
		if [ -n "$$warn" ]; then echo "$$f: $$warn"; exit 1; fi; \
	done

# make bench: metad side by side with the programs it replaces (issue 8);
# writes docs/BENCHMARKS.md and docs/bench-stream*.svg in about twenty
# minutes. Needs root (PID namespaces) on Debian: the peers are installed
# when missing, without starting their services (RUNLEVEL=1).
BENCH_PKGS := tini catatonit dumb-init xinetd ucspi-tcp s6 runit supervisor busybox-static
BENCH_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

bench: build
	@missing=; for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(BENCH_SUDO) apt-get update -q && \
		$(BENCH_SUDO) env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends $(BENCH_PKGS); \
	fi
	$(GO) run ./tests/bench
