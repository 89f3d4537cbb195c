/* core/query.h — running a query function (core/query.c; the typed reads
 * functions use are declared in core/fn.h). */
#ifndef CQRSD_QUERY_H
#define CQRSD_QUERY_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdint.h>

#include "core/fn.h"

struct reg;

/*
 * Runs fq of generation reg on the Redis connection rc (NULL: the store is
 * unavailable) with the n parameters names[i] = values[i] (borrowed); ns
 * (NULL or "" for the read models themselves) is put before every key read.
 * Returns 0 and *out (a new reference: the 200 body), or an ERR_* code with
 * a message in e: ERR_UNAVAILABLE whenever a read found Redis unreachable,
 * whatever the function returned. *read (may be NULL) gets which projections
 * of reg it read: bit i for reg->projs[i] (every bit when i > 63).
 */
int query_call(const struct reg *reg, const struct fn_query *fq, redisContext *rc, const char *ns,
               const char *const *names, const char *const *values, size_t n, json_t **out,
               uint64_t *read, struct err *e);

#endif
