/* A module whose query takes GET /healthz, a built-in route: refused. */
#define FIXTURE_NAME "builtin_clash"
#include "fixture.h"

static const struct fn_query get = {
    .abi = FN_ABI_VERSION, .name = "health.mine", .route = "/healthz", .run = fixture_run,
};
static const struct fn_query *const queries[] = {&get, NULL};

FN_MODULE = {.abi = FN_ABI_VERSION, .name = FIXTURE_NAME, .version = "0.1", .queries = queries};
