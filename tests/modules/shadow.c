/* A module whose query GET /carts/featured shadows the e-commerce
 * GET /carts/{cart_id} for one path: loaded, and reported. */
#define FIXTURE_NAME "shadow"
#include "fixture.h"

static const struct fn_query featured = {
    .abi = FN_ABI_VERSION, .name = "shadow.featured", .route = "/carts/featured",
    .run = fixture_run,
};
static const struct fn_query *const queries[] = {&featured, NULL};

FN_MODULE = {.abi = FN_ABI_VERSION, .name = FIXTURE_NAME, .version = "0.1", .queries = queries};
