/* core/builtin.h — the built-in routes (core/builtin.c). */
#ifndef CQRSD_BUILTIN_H
#define CQRSD_BUILTIN_H

#include "core/disp.h"

/* Runs the built-in route job->builtin (README "Built-in routes"):
 *   GET /streams/{stream_id}?from&limit: 200 with the events, 400 for a bad
 *     parameter, 404 for a stream without events, 503 without PostgreSQL;
 *   GET /healthz: 200 {status ok|degraded, ...} or 503 {status unavailable};
 *   GET /admin/functions: 200 {functions: [{name, kind, module, route,
 *     limits, in_flight, invocations, errors, rejections, duration_us}]}. */
void builtin_run(struct disp_job *job, PGconn *pg, redisContext *rc);

/* 1 when route b reads only memory (GET /admin/functions): the HTTP thread
 * answers it at once, with no connections, even when every worker is busy. */
int builtin_inline(enum reg_builtin b);

#endif
