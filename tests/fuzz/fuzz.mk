# tests/fuzz/fuzz.mk - libFuzzer targets, included by the top Makefile.
#
# make fuzz-build          every target into build-fuzz/ (clang, libFuzzer, ASan, UBSan)
# make fuzz-ci             replays each corpus, then fuzzes each target FUZZ_SECONDS (30)
# make fuzz                the same, FUZZ_SECONDS (600) per target
# make fuzz-ci FUZZ_TARGETS="sse text_split" FUZZ_SECONDS=60     a subset
# make fuzz-clean          removes build-fuzz/ (with the corpus the fuzzer grew there)
#
# The project's own sources are compiled into each target with the
# sanitizers and coverage; Debian's libevent, OpenSSL and cJSON are linked
# as they are (not instrumented).  See tests/fuzz/README.md.

FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_OPT     ?= -O1 -g
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(FUZZ_OPT) -std=c11 -D_GNU_SOURCE $(WARN) -Wno-format-nonliteral -MMD -MP \
	-I. -Icommon -Iworker -Itests/fuzz $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_TARGETS ?= $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
# The harnesses themselves build with -Werror in CI (the project's sources
# are held to gcc's warnings, not to clang's).
FUZZ_HARNESS_CFLAGS := $(if $(CI)$(WERROR),-Werror)

# clang and its libFuzzer runtime, checked the first time a recipe needs
# them: one line naming the Debian packages when they are missing.
fuzz_need = $(if $(shell command -v $(FUZZ_CC) 2>/dev/null),,$(error $(FUZZ_CC) not found: install clang libclang-rt-dev (and llvm for symbolized stacks)))$(if $(shell printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d[0] + (int)n; }\n' | $(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null && echo y),,$(error $(FUZZ_CC) cannot link libFuzzer: install libclang-rt-dev))
FUZZ_TOOLCHAIN = $(eval FUZZ_TOOLCHAIN := $(fuzz_need))$(FUZZ_TOOLCHAIN)

FUZZ_PROJ_SRC := $(COMMON_SRC) $(WORKER_SRC) supervisor/inbox.c
FUZZ_HELP_SRC := $(wildcard tests/fuzz/fz_*.c)
fuzz_obj       = $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(1))
FUZZ_LIB      := $(FUZZ_BUILD)/libfuzzproj.a
FUZZ_BINS      = $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))

.PHONY: fuzz-build fuzz-ci fuzz fuzz-clean

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_TOOLCHAIN)$(FUZZ_CFLAGS) $(WORKER_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_TOOLCHAIN)$(FUZZ_CFLAGS) $(FUZZ_HARNESS_CFLAGS) $(WORKER_CFLAGS) -c $< -o $@

$(FUZZ_LIB): $(call fuzz_obj,$(FUZZ_PROJ_SRC))
	rm -f $@ && ar rcs $@ $^

# The helpers are objects, not an archive: fz_hub.o stands in for the hub,
# so the real hub.o is never pulled out of the library.
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(call fuzz_obj,$(FUZZ_HELP_SRC)) $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(WORKER_LIBS) -lm

fuzz-ci: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(or $(FUZZ_SECONDS),30) $(FUZZ_TARGETS)

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(or $(FUZZ_SECONDS),600) $(FUZZ_TARGETS)

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
