# cqrsd — one Makefile, pkg-config for every library (see README.md).
#
#   make            build build/cqrsd
#   make run        install missing packages, start PostgreSQL + Redis, migrate, serve :8080
#   make test       the same set-up on other ports, every test, services stopped after
#   make demo       make run's set-up, load the whole Online Retail file, print the summary
#   make test-asan  every test under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-valgrind  every test, and the server, under valgrind memcheck
#   make test-faults    make test with 20 SIGKILL rounds in the crash test
#   make fuzz       each libFuzzer target (tests/fuzz/) for FUZZ_SECONDS (30) seconds

PKGS    := libpq libmicrohttpd jansson hiredis libcurl zlib
BUILD   ?= build
CC      ?= cc
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -MMD -MP -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcsv -lpthread -lm
TEST_LDLIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

SRC      := $(wildcard core/*.c commands/*.c projections/*.c queries/*.c tools/load/*.c)
LIB_SRC  := $(filter-out core/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/unit/*.c tests/integration/*.c tests/http/*.c)
TEST_LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/lib/*.c))
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/*.c))

.PHONY: all run test demo clean test-asan test-valgrind test-faults fuzz fuzzers tests deps format
all: $(BUILD)/cqrsd

deps:
	@bash tools/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# migrations are compiled into the binary: the binary alone can migrate
$(BUILD)/migrations.c: $(MIGRATIONS) tools/embed_migrations.sh
	@mkdir -p $(BUILD)
	bash tools/embed_migrations.sh $(MIGRATIONS) > $@

$(BUILD)/migrations.o: $(BUILD)/migrations.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libcqrsd.a: $(LIB_OBJ) $(BUILD)/migrations.o
	rm -f $@
	ar rcs $@ $^

$(BUILD)/cqrsd: $(BUILD)/core/main.o $(BUILD)/libcqrsd.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libcqrsd.a $(TEST_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(TEST_LIB_OBJ) $(BUILD)/libcqrsd.a -o $@ $(LDLIBS) $(TEST_LDLIBS)

tests: $(BUILD)/cqrsd $(TEST_LIB_OBJ) $(TEST_BIN)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/libcqrsd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined $< $(BUILD)/libcqrsd.a -o $@ $(LDLIBS)

fuzzers: $(FUZZ_BIN)

run:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory all
	@bash tools/run.sh

test:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory tests
	@bash tools/test.sh

demo:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory all
	@bash tools/run.sh --demo

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

clean:
	rm -rf $(BUILD) build-asan build-fuzz

format:
	clang-format -i $(SRC) $(TEST_SRC) core/*.h

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
