# libFuzzer targets, included by the top Makefile.
#
#   make fuzz                 run every target for FUZZ_SECONDS (60) each
#   make fuzz-smoke           run every target for 10 seconds each (CI)
#   make fuzz FUZZ_ONLY=wire  run some targets only
#   make fuzz-clean
#
# Adding a target <name>: write tests/fuzz/fuzz_<name>.c (LLVMFuzzerTestOneInput),
# add one line below,
#
#   FUZZ_SRC_<name> := <the src/ files it needs>
#
# and optionally seed inputs in tests/fuzz/corpus/<name>/, a libFuzzer
# dictionary in tests/fuzz/<name>.dict, and extra link flags in
# FUZZ_LIBS_<name> (e.g. $(shell pkg-config --libs jansson)).
#
# Each target is linked from the sources it names rather than from
# libriffq.a: the library is built with cc and without sanitizers, and a
# target that only needs the codec should not depend on every layer building.

FUZZ_CC            ?= clang
FUZZ_BUILD         ?= build-fuzz
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_FLAGS         ?=
# -fno-sanitize-recover: undefined behaviour must stop the run like a crash,
# or libFuzzer prints it and carries on without saving the input.
FUZZ_CFLAGS        ?= -g -O1 -fno-omit-frame-pointer -std=gnu11 -D_GNU_SOURCE \
                      -Wall -Wextra -Werror -Wno-missing-field-initializers \
                      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                      -Iinclude -Isrc

FUZZ_CODEC_SRC     := src/wire/wire.c src/util/buf.c src/util/error.c

FUZZ_SRC_wire      := $(FUZZ_CODEC_SRC)
FUZZ_SRC_startup   := $(FUZZ_CODEC_SRC)
FUZZ_SRC_scram     := src/auth/auth.c src/util/buf.c src/util/error.c
FUZZ_LIBS_scram     = $(shell pkg-config --libs openssl)
FUZZ_SRC_config    := src/config/config.c src/util/buf.c src/util/error.c src/util/log.c
FUZZ_LIBS_config    = $(shell pkg-config --libs jansson)
FUZZ_SRC_copyout   := src/session/copyout.c src/route/classify.c src/session/result.c src/session/pgtypes.c \
                      src/wire/wire.c src/util/buf.c src/util/error.c src/util/log.c
FUZZ_LIBS_copyout   = $(shell pkg-config --libs jansson) -lpg_query -lm
FUZZ_CFLAGS_copyout = $(shell pkg-config --cflags libuv python3-embed)
FUZZ_SRC_pgtypes   := src/session/pgtypes.c src/util/buf.c src/util/error.c
FUZZ_LIBS_pgtypes   = -lm

# ---- nothing below needs editing to add a target ----

FUZZ_TARGETS = $(sort $(patsubst FUZZ_SRC_%,%,$(filter FUZZ_SRC_%,$(.VARIABLES))))
FUZZ_ONLY   ?= $(FUZZ_TARGETS)
FUZZ_HDRS   := $(shell find include src -name '*.h' 2>/dev/null)

define FUZZ_TARGET_RULE
$(FUZZ_BUILD)/fuzz_$(1): tests/fuzz/fuzz_$(1).c $$(FUZZ_SRC_$(1)) $$(FUZZ_HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $$(@D)
	$$(FUZZ_CC) $$(FUZZ_CFLAGS) $$(FUZZ_CFLAGS_$(1)) -o $$@ $$< $$(FUZZ_SRC_$(1)) $$(FUZZ_LIBS_$(1))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_TARGET_RULE,$(t))))

# New inputs go to $(FUZZ_BUILD)/corpus/<t> (first directory); the committed
# seeds are read-only.  Crash inputs land in $(FUZZ_BUILD)/artifacts/<t>/;
# reproduce one with $(FUZZ_BUILD)/fuzz_<t> <file>.
define FUZZ_RUN
set -e; for t in $(FUZZ_ONLY); do \
	mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts/$$t; \
	seeds=; [ -d tests/fuzz/corpus/$$t ] && seeds=tests/fuzz/corpus/$$t; \
	dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	echo "== fuzz_$$t for $(1)s"; \
	$(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(1) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t/ $$dict $(FUZZ_FLAGS) \
		$(FUZZ_BUILD)/corpus/$$t $$seeds; \
done
endef

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-clean

fuzz-build: $(FUZZ_ONLY:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: fuzz-build
	@$(call FUZZ_RUN,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build
	@$(call FUZZ_RUN,$(FUZZ_SMOKE_SECONDS))

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
