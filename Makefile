# cqrsd — one Makefile, pkg-config for every library (see README.md).
#
#   make            build build/cqrsd, build/cqrsd-load and build/modules/ecommerce.so
#   make run        install missing packages, start PostgreSQL + Redis, migrate, serve :8080
#   make test       the same set-up on other ports, every test, services stopped after
#   make demo       make run's set-up, load the whole Online Retail file, print the summary
#   make install    PREFIX (/usr/local) and DESTDIR: binaries, the e-commerce module, the
#                   ABI headers (<cqrsd/fn.h>) and cqrsd.pc for building modules
#   make module NAME=x [DIR=path]   cqrsd new: a module folder to start from
#   make bench      -O2 build, own services and server: each figure beside its raw limit
#                   (pgbench, bare libmicrohttpd, redis-benchmark) -> bench/RESULTS.md;
#                   BENCH_QUICK=1 for a 2-minute run
#   make test-asan  every test under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-valgrind  every test, and the server, under valgrind memcheck
#   make test-faults    make test with 20 SIGKILL rounds in the crash test
#   make fuzz       each libFuzzer target (tests/fuzz/) for FUZZ_SECONDS (30) seconds
#
# What links what:
#   build/cqrsd          core/ (the platform): libpq, libmicrohttpd, jansson, hiredis, and
#                        libcurl + libcrypto for webhooks (HTTPS POSTs, HMAC-SHA256); it
#                        exports the ABI functions (core/abi.list) to the modules it loads
#   build/cqrsd-load     tools/load/ (a client of the HTTP API): libcurl, zlib, libcsv, jansson
#   build/modules/*.so   a module sees only <cqrsd/fn.h> (build/include/cqrsd/) and jansson

VERSION := 0.2.0
PKGS    := libpq libmicrohttpd jansson hiredis libcurl libcrypto
LOAD_PKGS := libcurl zlib jansson
BUILD   ?= build
CC      ?= cc
OPT     ?= -O2 -g
PREFIX  ?= /usr/local
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -MMD -MP
CFLAGS  += $(BASE_CFLAGS) -I. -I$(BUILD)/include $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lpthread -lm
LOAD_LDLIBS := $(shell pkg-config --libs $(LOAD_PKGS) 2>/dev/null) -lcsv -lpthread
TEST_LDLIBS := $(shell pkg-config --libs cmocka libcurl zlib 2>/dev/null)
# the binaries that load modules export the ABI (and only the ABI) to them
EXPORT  := -Wl,--dynamic-list=core/abi.list

# the ABI a module includes as <cqrsd/fn.h>
ABI_HDR := core/fn.h core/err.h core/err.def core/money.h core/rtime.h
ABI_INC := $(patsubst core/%,$(BUILD)/include/cqrsd/%,$(ABI_HDR))

CORE_SRC := $(filter-out core/main.c,$(wildcard core/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/migrations.o $(BUILD)/template.o \
            $(BUILD)/admin_page.o
TEMPLATE := $(sort $(shell find tools/template -type f))
LOAD_SRC := $(wildcard tools/load/*.c)
LOAD_OBJ := $(LOAD_SRC:%.c=$(BUILD)/%.o)
LOAD_LIB_OBJ := $(filter-out $(BUILD)/tools/load/main.o,$(LOAD_OBJ))

# the e-commerce module: commands/, projections/, queries/, reactors/, through <cqrsd/fn.h> only
ECOM_SRC := $(wildcard commands/*.c projections/*.c queries/*.c reactors/*.c)
ECOM_OBJ := $(ECOM_SRC:%.c=$(BUILD)/ecom/%.o)
MODULE_CFLAGS := $(BASE_CFLAGS) -fPIC -fvisibility=hidden -I$(BUILD)/include \
                 -iquote commands -iquote projections -iquote queries \
                 $(shell pkg-config --cflags jansson 2>/dev/null)
MODULE_LDLIBS := $(shell pkg-config --libs jansson 2>/dev/null)

TEST_SRC := $(wildcard tests/unit/*.c tests/integration/*.c tests/http/*.c)
TEST_LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/lib/*.c))
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/*.c))
# the fixture modules of tests/unit/test_modules.c
FIXTURE_SO := $(patsubst tests/modules/%.c,$(BUILD)/tests/modules/%.so,$(wildcard tests/modules/*.c)) \
              $(BUILD)/tests/modules/notes_v2.so

.PHONY: all run test demo bench clean test-asan test-valgrind test-faults fuzz fuzzers tests deps \
        format install headers modules examples module
all: $(BUILD)/cqrsd $(BUILD)/cqrsd-load modules $(BUILD)/pkgconfig/cqrsd-uninstalled.pc

# examples/loyalty is built the way any module is: its own Makefile, against the ABI that
# pkg-config finds (here the uninstalled one of this build)
EXAMPLES := $(BUILD)/examples/loyalty/loyalty.so
examples: $(EXAMPLES)
$(BUILD)/examples/loyalty/loyalty.so: examples/loyalty/module.c examples/loyalty/Makefile \
                                      $(BUILD)/pkgconfig/cqrsd-uninstalled.pc $(ABI_INC)
	PKG_CONFIG_PATH=$(abspath $(BUILD))/pkgconfig $(MAKE) --no-print-directory -C examples/loyalty \
	  OUT=$(abspath $(BUILD))/examples/loyalty CC="$(CC)" CFLAGS="$(OPT)" LDFLAGS="$(LDFLAGS)"

deps:
	@bash tools/deps.sh

headers: $(ABI_INC)

$(BUILD)/include/cqrsd/%: core/%
	@mkdir -p $(dir $@)
	cp $< $@

# every object of the platform and the tests sees <cqrsd/...> as the module does
$(BUILD)/%.o: %.c | $(ABI_INC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tools/load/%.o: tools/load/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -I. $(shell pkg-config --cflags $(LOAD_PKGS) 2>/dev/null) -c $< -o $@

$(BUILD)/ecom/%.o: %.c | $(ABI_INC)
	@mkdir -p $(dir $@)
	$(CC) $(MODULE_CFLAGS) -c $< -o $@

# migrations are compiled into the binary: the binary alone can migrate
$(BUILD)/migrations.c: $(MIGRATIONS) tools/embed_migrations.sh
	@mkdir -p $(BUILD)
	bash tools/embed_migrations.sh $(MIGRATIONS) > $@

$(BUILD)/migrations.o: $(BUILD)/migrations.c
	$(CC) $(CFLAGS) -c $< -o $@

# so is the module template of `cqrsd new`
$(BUILD)/template.c: $(TEMPLATE) tools/embed_files.sh
	@mkdir -p $(BUILD)
	bash tools/embed_files.sh tools/template $(TEMPLATE) > $@

$(BUILD)/template.o: $(BUILD)/template.c
	$(CC) $(CFLAGS) -c $< -o $@

# and the admin page, GET /admin
$(BUILD)/admin_page.c: core/admin.html tools/embed_text.sh
	@mkdir -p $(BUILD)
	bash tools/embed_text.sh builtin_admin_html core/admin.html > $@

$(BUILD)/admin_page.o: $(BUILD)/admin_page.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cqrsd: $(BUILD)/core/main.o $(CORE_OBJ) core/abi.list
	$(CC) $(CFLAGS) $(LDFLAGS) $(EXPORT) $(BUILD)/core/main.o $(CORE_OBJ) -o $@ $(LDLIBS)

$(BUILD)/cqrsd-load: $(LOAD_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) $(LOAD_OBJ) -o $@ $(LOAD_LDLIBS)

modules: $(BUILD)/modules/ecommerce.so

$(BUILD)/modules/ecommerce.so: $(ECOM_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(MODULE_CFLAGS) $(LDFLAGS) -shared $^ -o $@ $(MODULE_LDLIBS)

# the same objects, linked into the fuzzers
$(BUILD)/modules/ecommerce.a: $(ECOM_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# tools/cqrsd.pc.in with the include, module and binary folders $(1), $(2), $(3)
pc_subst = sed -e 's|@INCLUDEDIR@|$(1)|' -e 's|@MODULEDIR@|$(2)|' -e 's|@BINDIR@|$(3)|' \
	-e 's|@VERSION@|$(VERSION)|' tools/cqrsd.pc.in

$(BUILD)/pkgconfig/cqrsd-uninstalled.pc: tools/cqrsd.pc.in Makefile
	@mkdir -p $(dir $@)
	$(call pc_subst,$(abspath $(BUILD)/include),$(abspath $(BUILD)/modules),$(abspath $(BUILD))) > $@

$(BUILD)/tests/unit/test_load: tests/unit/test_load.c $(LOAD_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(LOAD_LIB_OBJ) -o $@ $(LOAD_LDLIBS) $(TEST_LDLIBS)

$(BUILD)/tests/%: tests/%.c $(CORE_OBJ) $(TEST_LIB_OBJ) core/abi.list | $(ABI_INC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $(EXPORT) $< $(TEST_LIB_OBJ) $(CORE_OBJ) -o $@ $(LDLIBS) $(TEST_LDLIBS)

$(BUILD)/tests/modules/%.so: tests/modules/%.c tests/modules/fixture.h | $(ABI_INC)
	@mkdir -p $(dir $@)
	$(CC) $(MODULE_CFLAGS) $(LDFLAGS) -shared $< -o $@ $(MODULE_LDLIBS)

# the same module at its next version (a new projection version), for test_reload
$(BUILD)/tests/modules/notes_v2.so: tests/modules/notes.c | $(ABI_INC)
	@mkdir -p $(dir $@)
	$(CC) $(MODULE_CFLAGS) -DNOTES_VERSION=2 $(LDFLAGS) -shared $< -o $@ $(MODULE_LDLIBS)

tests: all examples $(TEST_LIB_OBJ) $(TEST_BIN) $(FIXTURE_SO)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(CORE_OBJ) $(BUILD)/modules/ecommerce.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined $< $(CORE_OBJ) $(BUILD)/modules/ecommerce.a -o $@ $(LDLIBS)

fuzzers: $(FUZZ_BIN)

run:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory all
	@bash tools/run.sh

test:
	@bash tools/deps.sh --test
	@$(MAKE) --no-print-directory tests
	@bash tools/test.sh

demo:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory all
	@bash tools/run.sh --demo

# make bench: the -O2 build (OPT's default), the baseline programs, tools/bench/bench.sh
BENCH_BIN := $(BUILD)/bench/bare $(BUILD)/bench/vis
bench:
	@bash tools/deps.sh --bench
	@$(MAKE) --no-print-directory all $(BENCH_BIN) OPT="-O2 -g"
	@BUILD=$(BUILD) bash tools/bench/bench.sh

$(BUILD)/bench/bare: tools/bench/bare.c
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(shell pkg-config --cflags libmicrohttpd) $< -o $@ $(shell pkg-config --libs libmicrohttpd)
$(BUILD)/bench/vis: tools/bench/vis.c
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(shell pkg-config --cflags libcurl jansson) $< -o $@ $(shell pkg-config --libs libcurl jansson) -lpthread

test-asan:
	@bash tools/deps.sh --extra
	@$(MAKE) --no-print-directory tests BUILD=build-asan CC=clang \
	  OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined"
	@BUILD=build-asan bash tools/test.sh

test-valgrind:
	@bash tools/deps.sh --extra
	@$(MAKE) --no-print-directory tests
	@CQRSD_VALGRIND=1 bash tools/test.sh

test-faults:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory tests
	@CQRSD_CRASH_ROUNDS=20 bash tools/test.sh

fuzz:
	@bash tools/deps.sh --extra
	@$(MAKE) --no-print-directory fuzzers BUILD=build-fuzz CC=clang \
	  OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
	@bash tools/fuzz.sh build-fuzz

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/cqrsd/modules \
	  $(DESTDIR)$(PREFIX)/include/cqrsd $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/cqrsd $(BUILD)/cqrsd-load $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(BUILD)/modules/ecommerce.so $(DESTDIR)$(PREFIX)/lib/cqrsd/modules/
	install -m 644 $(ABI_INC) $(DESTDIR)$(PREFIX)/include/cqrsd/
	$(call pc_subst,$(PREFIX)/include,$(PREFIX)/lib/cqrsd/modules,$(PREFIX)/bin) \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cqrsd.pc

module: $(BUILD)/cqrsd
	@test -n "$(NAME)" || { echo "make module NAME=<name> [DIR=<folder>]" >&2; exit 2; }
	$(BUILD)/cqrsd new $(NAME) $(DIR)

clean:
	rm -rf $(BUILD) build-asan build-fuzz

format:
	clang-format -i $(CORE_SRC) core/main.c $(ECOM_SRC) $(TEST_SRC) core/*.h

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
