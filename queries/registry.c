/* queries/registry.c — fn_queries[], the NULL-terminated list of every query
 * descriptor named in queries/registry.def, in that order. */
#include "core/fn.h"

#define FN_QUERY(sym) extern const struct fn_query sym;
#include "queries/registry.def"
#undef FN_QUERY

const struct fn_query *const fn_queries[] = {
#define FN_QUERY(sym) &sym,
#include "queries/registry.def"
#undef FN_QUERY
    NULL,
};
