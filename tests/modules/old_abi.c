/* A module built against ABI version 1: refused. */
#define FIXTURE_NAME "old_abi"
#include "fixture.h"

FN_MODULE = {.abi = 1, .name = FIXTURE_NAME, .version = "0.1"};
