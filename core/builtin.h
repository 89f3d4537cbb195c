/* core/builtin.h — the built-in routes (core/builtin.c). */
#ifndef CQRSD_BUILTIN_H
#define CQRSD_BUILTIN_H

#include "core/disp.h"

/* GET /streams/{stream_id}?from&limit: 200 with the events, 400 for a bad
 * parameter, 404 for a stream without events, 503 without PostgreSQL. */
void builtin_stream(struct disp_job *job, PGconn *pg);

/* GET /healthz: 200 {status ok|degraded, ...} or 503 {status unavailable}
 * (README "Built-in routes"). */
void builtin_health(struct disp_job *job, PGconn *pg, redisContext *rc);

#endif
