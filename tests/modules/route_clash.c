/* A module whose query answers GET /carts/{id}, the route of the e-commerce
 * cart.get under another parameter name: refused. */
#define FIXTURE_NAME "route_clash"
#include "fixture.h"

static const struct fn_query get = {
    .abi = FN_ABI_VERSION, .name = "clash.get", .route = "/carts/{id}", .run = fixture_run,
};
static const struct fn_query *const queries[] = {&get, NULL};

FN_MODULE = {.abi = FN_ABI_VERSION, .name = FIXTURE_NAME, .version = "0.1", .queries = queries};
