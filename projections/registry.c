/* projections/registry.c — fn_projections[], the NULL-terminated list of every
 * projection descriptor named in projections/registry.def. */
#include "core/fn.h"

#define FN_PROJECTION(sym) extern const struct fn_projection sym;
#include "projections/registry.def"
#undef FN_PROJECTION

const struct fn_projection *const fn_projections[] = {
#define FN_PROJECTION(sym) &sym,
#include "projections/registry.def"
#undef FN_PROJECTION
    NULL,
};
