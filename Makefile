# riffq — build, run, test.  Every library comes from pkg-config (libpg_query
# ships no .pc file, so it is linked by name).
PY        ?= /usr/bin/python3
CC        ?= cc
PKGS      := libuv openssl libpq jansson python3-embed sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpg_query
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null)

OPT      ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wno-missing-field-initializers
CFLAGS   += $(OPT) $(WARN) -std=gnu11 -fno-strict-aliasing -D_GNU_SOURCE \
            -Iinclude -Isrc $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lpthread -lm

BUILD    ?= build
VERSION  := 0.1.0
CFLAGS   += -DRIFFQ_VERSION='"$(VERSION)"'

LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
# Python sources of the riffq module, compiled in as byte arrays
PY_SRC   := $(shell find src -name '*.py' | sort)
PY_GEN   := $(PY_SRC:%.py=$(BUILD)/gen/%_py.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(PY_GEN:%.c=%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
ITEST_C  := $(sort $(wildcard tests/integration/*.c))
ITEST_BIN := $(ITEST_C:tests/integration/%.c=$(BUILD)/tests/%)

.PHONY: all deps run run-built test test-built test-asan clean fuzz bench bench-built

all: $(BUILD)/riffq

deps:
	@./deploy/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# src/x/name.py -> const char riffq_py_name[] (NUL-terminated); od is in
# coreutils, so this needs nothing beyond the base system
$(BUILD)/gen/%_py.c: %.py
	@mkdir -p $(dir $@)
	@{ echo '/* generated from $< */'; \
	   echo 'const char riffq_py_$(notdir $*)[] = {'; \
	   od -An -v -tx1 $< | sed -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	   echo '0};'; } > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/%_py.o: $(BUILD)/gen/%_py.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libriffq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/riffq: $(BUILD)/obj/src/main.o $(BUILD)/libriffq.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libriffq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(BUILD)/libriffq.a $(LDFLAGS) $(LDLIBS) $(CHECK_LIBS)

$(BUILD)/tests/%: tests/integration/%.c $(BUILD)/libriffq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(BUILD)/libriffq.a $(LDFLAGS) $(LDLIBS) $(CHECK_LIBS)

# The importable module: the same sources, position independent, linked
# without libpython (the interpreter that imports it provides the symbols;
# Debian's python3 has libpython built in, so linking it would load a second
# copy).
PY_EXT_SUFFIX := $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
PY_MODULE := $(BUILD)/python/riffq$(PY_EXT_SUFFIX)
PIC_OBJ   := $(LIB_SRC:%.c=$(BUILD)/pic/%.o) $(PY_GEN:$(BUILD)/gen/%.c=$(BUILD)/pic/gen/%.o)
EXT_LIBS  := $(shell pkg-config --libs libuv openssl libpq jansson sqlite3 2>/dev/null) -lpg_query -lpthread -lm

.PHONY: python
python: $(PY_MODULE)

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -MMD -MP -c $< -o $@

$(BUILD)/pic/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

$(PY_MODULE): $(PIC_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $^ $(LDFLAGS) $(EXT_LIBS)

RIFFQ_PORT     ?= 5433
RIFFQ_USER     ?= riffq
RIFFQ_PASSWORD ?= riffq

# deps first, then a fresh make: pkg-config is evaluated when a Makefile is
# read, so on a new machine it must run again after the packages arrive
run: deps
	@$(MAKE) --no-print-directory run-built

run-built: $(BUILD)/riffq
	@echo
	@echo "riffq is starting on 127.0.0.1:$(RIFFQ_PORT).  Connect from another terminal with:"
	@echo
	@echo "    PGPASSWORD=$(RIFFQ_PASSWORD) psql \"host=127.0.0.1 port=$(RIFFQ_PORT) user=$(RIFFQ_USER) dbname=riffq\""
	@echo
	@echo "Ctrl-C stops it."
	@echo
	RIFFQ_PORT=$(RIFFQ_PORT) RIFFQ_USER=$(RIFFQ_USER) RIFFQ_PASSWORD=$(RIFFQ_PASSWORD) \
	    $(BUILD)/riffq --config routes/default.json

test: deps
	@$(MAKE) --no-print-directory test-built

test-built: $(BUILD)/riffq $(UNIT_BIN) $(ITEST_BIN) $(PY_MODULE)
	@BUILD=$(BUILD) PY=$(PY) ./tests/run.sh

# The sanitizer build runs the whole suite; UBSan findings abort, and leaks
# fail the run except CPython's (see tests/lsan.supp).
test-asan:
	RIFFQ_PY_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=abort_on_error=0:detect_leaks=1:fast_unwind_on_malloc=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
	        LDFLAGS="-fsanitize=address,undefined" test

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(BUILD)/obj/src/main.d $(PIC_OBJ:.o=.d)

# fuzz targets and their rules live beside them
-include tests/fuzz/fuzz.mk

bench: deps
	@$(MAKE) --no-print-directory bench-built

bench-built: $(BUILD)/riffq
	$(PY) tests/bench/bench.py

# generated C files stay (they are cheap, and make deletes intermediates noisily)
.SECONDARY: $(PY_GEN)
