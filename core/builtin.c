/* core/builtin.c — the platform's own routes: GET /streams/{stream_id} (the
 * events of a stream, straight from PostgreSQL), GET /healthz (the stores
 * and the projections' checkpoints) and GET /admin/functions (every function
 * loaded, its limits and counters). They run on the workers like any job. */
#include "core/builtin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/es.h"
#include "core/park.h"
#include "core/proj.h"
#include "core/rm.h"
#include "core/util.h"

static void fail(struct disp_job *job, const struct err *e)
{
    disp_problem(job, e->code, e->msg);
}

static int parse_count(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void builtin_stream(struct disp_job *job, PGconn *pg)
{
    struct err e = {0};
    const char *sid = disp_param(job, "stream_id");
    long long from = 0, limit = 1000;
    if (disp_param(job, "from") && parse_count(disp_param(job, "from"), 0, INT64_MAX, &from)) {
        err_set(&e, ERR_INVALID, "from must be a version number >= 0");
        return fail(job, &e);
    }
    if (disp_param(job, "limit") && parse_count(disp_param(job, "limit"), 1, 10000, &limit)) {
        err_set(&e, ERR_INVALID, "limit must be an integer from 1 to 10000");
        return fail(job, &e);
    }
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return fail(job, &e);
    }
    struct es_events evs = {0};
    if (es_read_stream(pg, sid, from, (size_t)limit, &evs, &e))
        return fail(job, &e);
    if (evs.n == 0 && from > 0 && es_read_stream(pg, sid, 0, 1, &evs, &e))
        return fail(job, &e);
    if (evs.n == 0) {
        err_set(&e, ERR_NOT_FOUND, "no stream \"%.300s\"", sid);
        return fail(job, &e);
    }
    if (from > 0 && evs.ev[0].version <= from) /* the stream exists, nothing after from */
        es_events_clear(&evs);
    json_t *arr = json_array();
    for (size_t i = 0; i < evs.n; i++) {
        struct es_event *ev = &evs.ev[i];
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:O, s:O, s:s, s:s}", "version",
                                             (json_int_t)ev->version, "type", ev->type, "event_id",
                                             ev->event_id, "data", ev->data, "metadata",
                                             ev->metadata, "position", ev->position,
                                             "recorded_at", ev->recorded_at));
    }
    es_events_clear(&evs);
    disp_reply(job, 200, json_pack("{s:s, s:o}", "stream", sid, "events", arr));
}

static void builtin_health(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    struct err e = {0};
    char head[ES_POSITION_LEN + 1] = "";
    int pg_up = pg && es_head(pg, head, &e) == 0;
    int64_t parked = 0;
    if (pg_up && park_count(pg, &parked, &e))
        pg_up = 0;
    int redis_up = 0;
    json_t *projs = json_array();
    const struct reg *r = job->reg;
    if (rc) {
        redisReply *pong = redisCommand(rc, "PING");
        redis_up = pong && pong->type == REDIS_REPLY_STATUS;
        if (pong)
            freeReplyObject(pong);
        char(*cp)[33] = xcalloc(r->nprojs + 1, sizeof *cp);
        if (redis_up && rm_checkpoints_get(rc, r, cp, &e))
            redis_up = 0;
        for (size_t i = 0; redis_up && i < r->nprojs; i++) {
            const struct fn_projection *p = r->projs[i].p;
            json_array_append_new(projs, json_pack("{s:s, s:i, s:s, s:b}", "name", p->name,
                                                   "version", p->version, "checkpoint", cp[i],
                                                   "caught_up", pg_up && strcmp(cp[i], head) >= 0));
        }
        free(cp);
    }
    int ok = pg_up && redis_up;
    char retrying[1024];
    int failing = proj_retrying(retrying, sizeof retrying);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I}", "status",
                             !ok                    ? "unavailable"
                             : failing || parked    ? "degraded"
                                                    : "ok",
                             "postgres", pg_up ? "up" : "down", "redis", redis_up ? "up" : "down",
                             "position", head, "projections", projs, "parked", (json_int_t)parked);
    if (failing) /* queries still answer; that projection lags until it gets past the event */
        json_object_set_new(body, "projections_retrying", json_string(retrying));
    disp_reply(job, ok ? 200 : 503, body);
    if (!ok)
        job->retry_after = 1;
}

static json_t *limit_or_null(int v)
{
    return v > 0 ? json_integer(v) : json_null();
}

/* One function of the generation: what it is and its counters. */
static json_t *function_json(const char *name, const char *kind, const struct reg_module *m,
                             const char *method, const char *route, const struct fn_limits *l,
                             struct reg_fn *fn)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "name", name, "kind", kind, "module",
                          m->desc->name);
    if (route)
        json_object_set_new(o, "route", json_sprintf("%s %s", method, route));
    json_object_set_new(o, "limits",
                        json_pack("{s:o, s:i, s:i, s:i}", "concurrency",
                                  limit_or_null(l->concurrency), "timeout_ms", l->timeout_ms,
                                  "retries", l->retries, "backoff_ms", l->backoff_ms));
    json_object_set_new(o, "in_flight", json_integer(atomic_load(&fn->in_flight)));
    json_object_set_new(o, "invocations", json_integer(atomic_load(&fn->invocations)));
    json_object_set_new(o, "errors", json_integer(atomic_load(&fn->errors)));
    json_object_set_new(o, "rejections", json_integer(atomic_load(&fn->rejections)));
    json_object_set_new(o, "duration_us",
                        json_pack("{s:I, s:I}", "total",
                                  (json_int_t)atomic_load(&fn->duration_us), "max",
                                  (json_int_t)atomic_load(&fn->duration_max_us)));
    return o;
}

static void builtin_functions(struct disp_job *job)
{
    const struct reg *r = job->reg;
    json_t *list = json_array();
    for (size_t i = 0; i < r->ncmds; i++) {
        const struct reg_command *c = &r->cmds[i];
        json_array_append_new(list, function_json(c->c->name, "command", c->mod, c->c->method,
                                                  c->c->route, &c->limits, c->fn));
    }
    for (size_t i = 0; i < r->nqueries; i++) {
        const struct reg_query *q = &r->queries[i];
        json_array_append_new(list, function_json(q->q->name, "query", q->mod, "GET",
                                                  q->q->route, &q->limits, q->fn));
    }
    for (size_t i = 0; i < r->nprojs; i++) {
        const struct reg_projection *p = &r->projs[i];
        json_t *o = function_json(p->p->name, "projection", p->mod, NULL, NULL, &p->limits, p->fn);
        json_object_set_new(o, "version", json_integer(p->p->version));
        json_array_append_new(list, o);
    }
    disp_reply(job, 200, json_pack("{s:I, s:o}", "generation", (json_int_t)r->generation,
                                   "functions", list));
}

void builtin_run(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    switch (job->builtin) {
    case REG_STREAM: builtin_stream(job, pg); break;
    case REG_HEALTH: builtin_health(job, pg, rc); break;
    case REG_FUNCTIONS: builtin_functions(job); break;
    }
}

int builtin_inline(enum reg_builtin b)
{
    return b == REG_FUNCTIONS;
}
