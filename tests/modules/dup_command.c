/* A module whose command has the name of an e-commerce one: refused. */
#define FIXTURE_NAME "dup_command"
#include "fixture.h"

static const struct fn_command open = {
    .abi = FN_ABI_VERSION, .name = "cart.open", .method = "POST", .route = "/dup/carts",
    .category = "dupcart", .id_field = "cart_id", .evolve = fixture_evolve,
    .decide = fixture_decide,
};
static const struct fn_command *const commands[] = {&open, NULL};

FN_MODULE = {.abi = FN_ABI_VERSION, .name = FIXTURE_NAME, .version = "0.1", .commands = commands};
