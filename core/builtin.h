/* core/builtin.h — the built-in routes (core/builtin.c). */
#ifndef CQRSD_BUILTIN_H
#define CQRSD_BUILTIN_H

#include "core/disp.h"

/* Runs the built-in route job->builtin (README "Built-in routes"):
 *   GET /streams/{stream_id}?from&limit: 200 with the events, 400 for a bad
 *     parameter, 404 for a stream without events, 503 without PostgreSQL;
 *   GET /healthz: 200 {status ok|degraded, ...} or 503 {status unavailable};
 *   GET /admin/functions: 200 {functions: [{name, kind, module, route,
 *     limits, in_flight, invocations, errors, rejections, duration_us}]};
 *   GET /admin/parked, POST /admin/parked/{id}/retry (README "Built-in
 *     routes"); GET /admin/modules, POST /admin/modules/reload: the
 *     generation serving {generation, modules, rebuilding, notes};
 *   GET /admin/projections: {head, projections: [{name, version, build,
 *     checkpoint, lag_events, lag_seconds, state, last_error, rebuild}]};
 *   POST /admin/projections/{name}/rebuild: 202, core/rebuild.h's
 *     rebuild_start (409 when one runs, 404 for no such projection). */
void builtin_run(struct disp_job *job, PGconn *pg, redisContext *rc);

/* 1 when route b needs no connection (/admin/functions, /admin/modules and
 * their reload): the HTTP thread answers it at once, even when every worker
 * is busy. */
int builtin_inline(enum reg_builtin b);

/* 1 when the server requires API keys (CQRSD_AUTH): GET /openapi.json says so. */
extern int builtin_auth_on;

#endif
