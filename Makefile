# hermes gateway: plain Makefile, dependencies through pkg-config.
# make                      build everything into build/
# make test                 unit tests (Check) + integration tests (pytest)
# make run                  build and run the gateway on its embedded default
# make SANITIZE=address,undefined test    the same under ASan/UBSan

CC       ?= cc
PKG_CONFIG ?= pkg-config
PREFIX   ?= /usr/local
BUILD    ?= build
PYTHON   ?= /usr/bin/python3

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP -I. -Icommon -Iworker
ifneq ($(CI),)
CFLAGS   += -Werror
endif
ifneq ($(WERROR),)
CFLAGS   += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

# The supervisor is linked statically against musl when musl-gcc is there
# (Debian's musl-tools): about 170 KiB resident instead of ~1.6 MiB with
# glibc's shared pages, and a binary that runs on any Linux, old ones too.
# Sanitizer builds, or SUP_CC=$(CC), use the ordinary dynamic build.
ifeq ($(SANITIZE),)
MUSL_GCC    := $(shell command -v musl-gcc 2>/dev/null)
endif
SUP_CC      ?= $(if $(MUSL_GCC),$(MUSL_GCC),$(CC))
SUP_LDFLAGS ?= $(if $(filter %musl-gcc,$(SUP_CC)),-static,$(LDFLAGS))

# Library flags are computed the first time a recipe needs them, not while
# the Makefile is parsed: `make deps all` installs the packages first, and a
# missing library stops the build with one line naming the Debian package.
# pkg-config module -> Debian package that provides it.
PKG_DEB_libevent         := libevent-dev
PKG_DEB_libevent_openssl := libevent-dev
PKG_DEB_openssl          := libssl-dev
PKG_DEB_libcjson         := libcjson-dev
PKG_DEB_check            := check
PKG_DEB_libqrencode      := libqrencode-dev
# libqrencode draws the QR code of `hermes-worker login weixin`.
WORKER_PKGS := libevent libevent_openssl openssl libcjson libqrencode

# $(call pkg_flags,--cflags|--libs,modules): the flags, or a one-line error.
pkg_need = $(if $(shell command -v $(PKG_CONFIG) 2>/dev/null),,$(error pkg-config not found: install pkg-config (or run `make deps`)))$(foreach m,$(2),$(if $(shell $(PKG_CONFIG) --exists $(m) && echo y),,$(error library $(m) not found: install $(PKG_DEB_$(m)) (or run `make deps`))))
pkg_flags = $(call pkg_need,,$(2))$(shell $(PKG_CONFIG) $(1) $(2))
# The header-only check for libraries without a pkg-config file.
hdr_need = $(if $(shell printf '\043include <$(1)>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo y),,$(error header <$(1)> not found: install $(2) (or run `make deps`)))

# Each is evaluated once, on first use (a recursive variable that replaces
# itself with its value).
WORKER_CFLAGS = $(eval WORKER_CFLAGS := $(call pkg_flags,--cflags,$(WORKER_PKGS)))$(WORKER_CFLAGS)
WORKER_LIBS   = $(eval WORKER_LIBS := $(call pkg_flags,--libs,$(WORKER_PKGS)) $(call hdr_need,wslay/wslay.h,libwslay-dev)-lwslay)$(WORKER_LIBS)
CHECK_CFLAGS  = $(eval CHECK_CFLAGS := $(call pkg_flags,--cflags,check))$(CHECK_CFLAGS)
CHECK_LIBS    = $(eval CHECK_LIBS := $(call pkg_flags,--libs,check))$(CHECK_LIBS)

COMMON_SRC  := $(wildcard common/*.c)
SUP_SRC     := $(filter-out supervisor/main.c,$(wildcard supervisor/*.c))
WORKER_SRC  := $(filter-out worker/main.c,$(wildcard worker/*.c worker/platforms/*.c worker/net/*.c))
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
FIXTURE_SRC := $(wildcard tests/fixtures/*.c)
BENCH_SRC   := $(wildcard tests/bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

COMMON_LIB := $(BUILD)/libcommon.a
SUP_LIB    := $(BUILD)/libsup.a
WORKER_LIB := $(BUILD)/libworker.a
SUPERVISOR := $(BUILD)/hermes-supervisor
WORKER     := $(BUILD)/hermes-worker
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
FIXTURES   := $(patsubst tests/fixtures/%.c,$(BUILD)/fixtures/%,$(FIXTURE_SRC))
BENCHES    := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test unit integration run deps install uninstall clean bench
# Keep the objects of test and benchmark programs between runs.
.SECONDARY:

all: $(SUPERVISOR) $(WORKER) $(FIXTURES)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WORKER_CFLAGS) -c $< -o $@

# Only the Check suites need Check's flags.
$(BUILD)/obj/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WORKER_CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

# The supervisor links libc only: it is compiled without any library flags.
$(BUILD)/obj/supervisor/%.o: supervisor/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(COMMON_LIB): $(call obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(SUP_LIB): $(call obj,$(SUP_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(WORKER_LIB): $(call obj,$(WORKER_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The supervisor binary's own objects (libc only, no library flags); the
# unit tests link the ordinary ones from libsup.a instead.
SUP_BIN_OBJS := $(patsubst %.c,$(BUILD)/supobj/%.o,supervisor/main.c $(SUP_SRC) $(COMMON_SRC))
$(BUILD)/supobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(SUP_CC) $(CFLAGS) -c $< -o $@
$(SUPERVISOR): $(SUP_BIN_OBJS)
	$(SUP_CC) $(SUP_LDFLAGS) -o $@ $^
$(WORKER): $(call obj,worker/main.c) $(WORKER_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(WORKER_LIBS) -lm

$(BUILD)/tests/%: $(call obj,tests/unit/%.c) $(WORKER_LIB) $(SUP_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(WORKER_LIBS) $(CHECK_LIBS) -lm
$(BUILD)/fixtures/%: $(call obj,tests/fixtures/%.c) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread
$(BUILD)/bench/%: $(call obj,tests/bench/%.c) $(WORKER_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(WORKER_LIBS) -lm

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; CK_FORK=yes $$t; done

integration: all
	HERMES_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

test: all unit integration

bench: all $(BENCHES)
	tests/bench/run-all.sh $(BUILD)

# Build, then run the gateway in the foreground on its embedded default
# (console on 127.0.0.1:8642, echo agent).
run: all
	$(SUPERVISOR) --foreground --runtime-dir $(abspath $(BUILD))/run

# Installs what a fresh Debian 12 machine lacks to build, run and test.
deps:
	contrib/install-deps.sh

# make install [PREFIX=/usr/local] [DESTDIR=...]: binaries, man pages, the
# systemd units (ExecStart rewritten for BINDIR) and the example config.
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DATADIR     ?= $(PREFIX)/share/hermes
UNITDIR     ?= $(PREFIX)/lib/systemd/system
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
INSTALLED   := $(BINDIR)/hermes-supervisor $(BINDIR)/hermes-worker \
	$(MANDIR)/man8/hermes-supervisor.8 $(MANDIR)/man8/hermes-worker.8 \
	$(MANDIR)/man5/hermes-gateway.json.5 $(UNITDIR)/hermes-gateway.service \
	$(UNITDIR)/hermes-gateway@.service \
	$(USERUNITDIR)/hermes-gateway.service $(DATADIR)/gateway.example.json

install: $(SUPERVISOR) $(WORKER)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(DATADIR)
	install -m 755 $(SUPERVISOR) $(WORKER) $(DESTDIR)$(BINDIR)/
	install -m 644 docs/hermes-supervisor.8 docs/hermes-worker.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 docs/hermes-gateway.json.5 $(DESTDIR)$(MANDIR)/man5/
	sed 's|/usr/local/bin/|$(BINDIR)/|g' contrib/systemd/hermes-gateway.service \
		> $(DESTDIR)$(UNITDIR)/hermes-gateway.service
	sed 's|/usr/local/bin/|$(BINDIR)/|g' contrib/systemd/hermes-gateway@.service \
		> $(DESTDIR)$(UNITDIR)/hermes-gateway@.service
	sed 's|/usr/local/bin/|$(BINDIR)/|g' contrib/systemd/user/hermes-gateway.service \
		> $(DESTDIR)$(USERUNITDIR)/hermes-gateway.service
	chmod 644 $(DESTDIR)$(UNITDIR)/hermes-gateway.service \
		$(DESTDIR)$(UNITDIR)/hermes-gateway@.service \
		$(DESTDIR)$(USERUNITDIR)/hermes-gateway.service
	install -m 644 contrib/gateway.example.json $(DESTDIR)$(DATADIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(DATADIR) 2>/dev/null

clean:
	rm -rf $(BUILD)

-include tests/fuzz/fuzz.mk
-include $(shell find $(BUILD)/obj $(BUILD)/supobj -name '*.d' 2>/dev/null)
