# Install fmcache as HPC software installs:
#   make install PREFIX=/opt/fmcache      (DESTDIR=... for staged installs)
#   module use /opt/fmcache/share/modulefiles; module load fmcache
#   make uninstall PREFIX=/opt/fmcache
# Builds release with cargo (CARGO_TARGET_DIR honoured: the artefacts are
# found through `cargo metadata`), then installs
#   bin/fmcache, lib/libfmcache.so,
#   bin/fmcache-bcast (`fmcache bcast`) when an MPI compiler wrapper is found
#   ($(MPICC), default mpicc: it names the MPI built against, as rsmpi's
#   build probes it; one build per MPI, e.g. for MPICH beside Open MPI:
#   make install PREFIX=/opt/fmcache-mpich MPICC=mpicc.mpich CARGO_TARGET_DIR=target/mpich),
#   share/man/man1/fmcache.1 and fmcache-<subcommand>.1 (clap_mangen),
#   share/bash-completion/completions/fmcache, share/zsh/site-functions/_fmcache,
#   share/fish/vendor_completions.d/fmcache.fish (clap_complete),
#   share/modulefiles/fmcache/<version>.lua (Lmod, from tools/fmcache.lua.in).

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
INSTALL ?= install
MPICC ?= mpicc
export MPICC
# fmcache-bcast is built (and installed) only where that MPI is installed:
# fmcache itself needs none.
WITH_MPI := $(shell command -v $(MPICC) >/dev/null 2>&1 && echo yes)

# The modulefile names the final location: an absolute PREFIX.
override PREFIX := $(abspath $(PREFIX))
ROOT := $(DESTDIR)$(PREFIX)

# `cargo metadata` says where cargo puts the artefacts (target/ by default,
# $CARGO_TARGET_DIR or a config's build.target-dir otherwise); `cargo pkgid`
# gives the version (path+file://...#fmcache-tools@0.1.0).
TARGET_DIR = $(eval TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'))$(TARGET_DIR)
VERSION = $(eval VERSION := $(shell $(CARGO) pkgid -p fmcache-tools | sed 's/.*[@\#]//'))$(VERSION)
BIN = $(TARGET_DIR)/release/fmcache
LIB = $(TARGET_DIR)/release/libfmcache.so
BCAST = $(TARGET_DIR)/release/fmcache-bcast

MANDIR = $(ROOT)/share/man/man1
MODDIR = $(ROOT)/share/modulefiles/fmcache
COMPLETIONS = share/bash-completion/completions/fmcache \
              share/zsh/site-functions/_fmcache \
              share/fish/vendor_completions.d/fmcache.fish

.PHONY: all build install uninstall paths

all: build

build:
	$(CARGO) build --release -p fmcache-preload -p fmcache-tools $(if $(WITH_MPI),-p fmcache-bcast)

# NOBUILD=1 installs the artefacts already built, without running cargo:
# the tests do (a `cargo build -p ...` after the workspace's `cargo test`,
# whose dev-dependencies unify other features, would put the other build
# back in place under tests that are running it).
install: $(if $(NOBUILD),,build)
	@target='$(TARGET_DIR)'; test -n "$$target" || { echo 'make: cargo metadata gave no target_directory' >&2; exit 1; }
	$(INSTALL) -d '$(ROOT)/bin' '$(ROOT)/lib' '$(MANDIR)' '$(MODDIR)'
	$(INSTALL) -m 755 '$(BIN)' '$(ROOT)/bin/fmcache'
	$(INSTALL) -m 755 '$(LIB)' '$(ROOT)/lib/libfmcache.so'
	if [ -f '$(BCAST)' ]; then $(INSTALL) -m 755 '$(BCAST)' '$(ROOT)/bin/fmcache-bcast'; fi
	'$(BIN)' install-docs --out '$(ROOT)/share'
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' tools/fmcache.lua.in >'$(MODDIR)/$(VERSION).lua.tmp'
	mv '$(MODDIR)/$(VERSION).lua.tmp' '$(MODDIR)/$(VERSION).lua'
	chmod 644 '$(MODDIR)/$(VERSION).lua'
	@echo "fmcache $(VERSION) installed in $(ROOT): module use $(PREFIX)/share/modulefiles; module load fmcache"

# Where the artefacts are taken from.
paths:
	@echo '$(BIN)'
	@echo '$(LIB)'

# Removes what `install` put there (man pages: fmcache.1 and fmcache-*.1),
# then those of its directories left empty (never PREFIX's parents).
DIRS = share/man/man1 share/man share/modulefiles/fmcache share/modulefiles \
       share/bash-completion/completions share/bash-completion \
       share/zsh/site-functions share/zsh share/fish/vendor_completions.d share/fish \
       share bin lib

uninstall:
	rm -f '$(ROOT)/bin/fmcache' '$(ROOT)/bin/fmcache-bcast' '$(ROOT)/lib/libfmcache.so' \
	      '$(MANDIR)/fmcache.1' '$(MANDIR)'/fmcache-*.1 \
	      '$(MODDIR)/$(VERSION).lua' $(addprefix '$(ROOT)'/,$(COMPLETIONS))
	for d in $(DIRS); do [ ! -d '$(ROOT)'/$$d ] || rmdir --ignore-fail-on-non-empty '$(ROOT)'/$$d; done
