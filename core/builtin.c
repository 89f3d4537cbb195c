/* core/builtin.c — the platform's own routes: GET /streams/{stream_id} (the
 * events of a stream, straight from PostgreSQL), GET /healthz (the stores
 * and the projections' checkpoints) and GET /admin/functions (every function
 * loaded, its limits and counters). They run on the workers like any job. */
#include "core/builtin.h"

#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/es.h"
#include "core/gc.h"
#include "core/metrics.h"
#include "core/migrate.h"
#include "core/openapi.h"
#include "core/hook.h"
#include "core/fn_int.h"
#include "core/park.h"
#include "core/react.h"
#include "core/proj.h"
#include "core/rebuild.h"
#include "core/rm.h"
#include "core/util.h"

int builtin_auth_on;

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

/* Query parameter name of job as an integer in [lo, hi] into *out, which
 * keeps its default when the parameter is absent or empty. Returns 0, or
 * ERR_INVALID with e naming the parameter. */
static int param_count(struct disp_job *job, const char *name, long long lo, long long hi,
                       long long *out, struct err *e)
{
    const char *v = disp_param(job, name);
    if (!v || !*v || !parse_count(v, lo, hi, out))
        return 0;
    if (hi == INT64_MAX)
        return err_set(e, ERR_INVALID, "%s must be an integer >= %lld, not \"%.40s\"", name, lo,
                       v);
    return err_set(e, ERR_INVALID, "%s must be an integer from %lld to %lld, not \"%.40s\"", name,
                   lo, hi, v);
}

/* The {id} of a route to an item as *out; a path segment that is not an id
 * names no item: ERR_NOT_FOUND "no <what> \"<segment>\"". */
static int path_id(struct disp_job *job, const char *what, long long *out, struct err *e)
{
    const char *v = disp_param(job, "id");
    if (parse_count(v, 1, INT64_MAX, out))
        return err_set(e, ERR_NOT_FOUND, "no %s \"%.40s\"", what, v ? v : "");
    return 0;
}

static void builtin_stream(struct disp_job *job, PGconn *pg)
{
    struct err e = {0};
    const char *sid = disp_param(job, "stream_id");
    long long from = 0, limit = 1000;
    if (disp_param(job, "from") && parse_count(disp_param(job, "from"), 0, INT64_MAX, &from)) {
        err_set(&e, ERR_INVALID, "from must be a version number >= 0");
        return disp_fail(job, &e);
    }
    if (disp_param(job, "limit") && parse_count(disp_param(job, "limit"), 1, 10000, &limit)) {
        err_set(&e, ERR_INVALID, "limit must be an integer from 1 to 10000");
        return disp_fail(job, &e);
    }
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return disp_fail(job, &e);
    }
    struct es_events evs = {0};
    if (es_read_stream(pg, sid, from, (size_t)limit, &evs, &e))
        return disp_fail(job, &e);
    if (evs.n == 0 && from > 0 && es_read_stream(pg, sid, 0, 1, &evs, &e))
        return disp_fail(job, &e);
    if (evs.n == 0) {
        err_set(&e, ERR_NOT_FOUND, "no stream \"%.300s\"", sid);
        return disp_fail(job, &e);
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

/* GET /healthz: the process answers. Answered by the HTTP thread, from
 * memory: a liveness probe must not fail because a database is down (that is
 * /readyz's), or the orchestrator restarts a server that would recover. */
static void builtin_alive(struct disp_job *job)
{
    disp_reply(job, 200, json_pack("{s:s, s:I}", "status", "alive", "generation",
                                   (json_int_t)job->reg->generation));
}

/* GET /readyz: whether this instance should get traffic. Not ready (503):
 * PostgreSQL or Redis cannot be reached, the database's migrations differ
 * from this binary's, or a projection is halted on an event. Ready but
 * "degraded": events are parked. The reasons are listed in "not_ready". */
static void builtin_ready(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    struct err e = {0};
    char head[ES_POSITION_LEN + 1] = "";
    int pg_up = pg && es_head(pg, head, &e) == 0;
    int64_t parked = 0;
    if (pg_up && park_count(pg, &parked, &e))
        pg_up = 0;
    json_t *why = json_array();
    int pending = 0, unknown = 0;
    if (pg_up && migrate_status(pg, migrations_embedded, &pending, &unknown, &e))
        pg_up = 0;
    if (pending)
        json_array_append_new(why, json_sprintf("%d migration%s of this binary not applied: run "
                                                "cqrsd migrate",
                                                pending, pending == 1 ? "" : "s"));
    if (unknown)
        json_array_append_new(why, json_sprintf("the database has %d migration%s this binary "
                                                "does not know: it is older than the schema",
                                                unknown, unknown == 1 ? "" : "s"));
    int redis_up = 0;
    json_t *projs = json_array();
    const struct reg *r = job->reg;
    if (rc) {
        redisReply *pong = redisCommand(rc, "PING");
        redis_up = pong && pong->type == REDIS_REPLY_STATUS;
        if (pong)
            freeReplyObject(pong);
        char(*cp)[33] = xcalloc(r->nprojs + 1, sizeof *cp);
        if (redis_up && rm_checkpoints_get(rc, r, cp, NULL, &e))
            redis_up = 0;
        for (size_t i = 0; redis_up && i < r->nprojs; i++) {
            const struct fn_projection *p = r->projs[i].p;
            json_array_append_new(projs, json_pack("{s:s, s:i, s:s, s:b}", "name", p->name,
                                                   "version", p->version, "checkpoint", cp[i],
                                                   "caught_up", pg_up && strcmp(cp[i], head) >= 0));
        }
        free(cp);
    }
    if (!pg_up)
        json_array_insert_new(why, 0, json_string("PostgreSQL cannot be reached"));
    if (!redis_up)
        json_array_insert_new(why, 0, json_string("Redis cannot be reached"));
    char retrying[1024];
    int halted = proj_retrying(retrying, sizeof retrying);
    if (halted) /* queries still answer; that projection stops at the event until it passes */
        json_array_append_new(why, json_sprintf("a projection is halted: %s", retrying));
    int ok = json_array_size(why) == 0;
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:{s:i, s:i}}", "status",
                             !ok      ? "unavailable"
                             : parked ? "degraded"
                                      : "ok",
                             "postgres", pg_up ? "up" : "down", "redis", redis_up ? "up" : "down",
                             "position", head, "projections", projs, "parked", (json_int_t)parked,
                             "migrations", "pending", pending, "unknown", unknown);
    if (halted)
        json_object_set_new(body, "projections_retrying", json_string(retrying));
    if (ok)
        json_decref(why);
    else
        json_object_set_new(body, "not_ready", why);
    disp_reply(job, ok ? 200 : 503, body);
    if (!ok)
        job->retry_after = 1;
}

static json_t *limit_or_null(int v)
{
    return v > 0 ? json_integer(v) : json_null();
}

/* One function of the generation: what it is and its counters. */
static json_t *function_json(const struct reg_module *m, const char *method, const char *route,
                             const struct fn_limits *l, struct reg_fn *fn)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "name", fn->name, "kind", reg_kind_name(fn->kind),
                          "module", m->desc->name);
    if (route)
        json_object_set_new(o, "route", json_sprintf("%s %s", method, route));
    int has = reg_limits_of_kind(fn->kind); /* only the limits that apply to it */
    json_t *lj = json_object();
    if (has & REG_LIMIT_CONCURRENCY)
        json_object_set_new(lj, "concurrency", limit_or_null(l->concurrency));
    if (has & REG_LIMIT_TIMEOUT)
        json_object_set_new(lj, "timeout_ms", json_integer(l->timeout_ms));
    if (has & REG_LIMIT_RETRIES)
        json_object_set_new(lj, "retries", json_integer(l->retries));
    if (has & REG_LIMIT_BACKOFF)
        json_object_set_new(lj, "backoff_ms", json_integer(l->backoff_ms));
    json_object_set_new(o, "limits", lj);
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
        json_array_append_new(list, function_json(c->mod, c->c->method, c->c->route, &c->limits,
                                                  c->fn));
    }
    for (size_t i = 0; i < r->nqueries; i++) {
        const struct reg_query *q = &r->queries[i];
        json_array_append_new(list, function_json(q->mod, "GET", q->q->route, &q->limits, q->fn));
    }
    for (size_t i = 0; i < r->nprojs; i++) {
        const struct reg_projection *p = &r->projs[i];
        json_t *o = function_json(p->mod, NULL, NULL, &p->limits, p->fn);
        json_object_set_new(o, "version", json_integer(p->p->version));
        json_array_append_new(list, o);
    }
    for (size_t i = 0; i < r->nreactors; i++) {
        const struct reg_reactor *x = &r->reactors[i];
        json_array_append_new(list, function_json(x->mod, NULL, NULL, &x->limits, x->fn));
    }
    for (size_t i = 0; i < r->ntimers; i++) {
        const struct reg_timer *t = &r->timers[i];
        json_t *o = function_json(t->mod, NULL, NULL, &t->limits, t->fn);
        json_object_set_new(json_object_get(o, "limits"), "delay_s", json_integer(t->delay_s));
        json_array_append_new(list, o);
    }
    unsigned long groups, commands;
    gc_stats(&groups, &commands);
    disp_reply(job, 200, json_pack("{s:I, s:o, s:{s:I, s:I}}", "generation",
                                   (json_int_t)r->generation, "functions", list, "group_commit",
                                   "groups", (json_int_t)groups, "commands",
                                   (json_int_t)commands));
}

/* ---------- parked events ---------- */

static void builtin_parked(struct disp_job *job, PGconn *pg)
{
    struct err e = {0};
    const char *state = disp_param(job, "state"), *function = disp_param(job, "function");
    long long after = 0, limit = 100;
    if (!state || !*state)
        state = "parked";
    if (function && !*function)
        function = NULL;
    if (strcmp(state, "parked") && strcmp(state, "resolved") && strcmp(state, "all")) {
        err_set(&e, ERR_INVALID, "state must be parked, resolved or all, not \"%.40s\"", state);
        return disp_fail(job, &e);
    }
    if (param_count(job, "after", 0, INT64_MAX, &after, &e) ||
        param_count(job, "limit", 1, 1000, &limit, &e))
        return disp_fail(job, &e);
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return disp_fail(job, &e);
    }
    json_t *list = NULL;
    if (park_list(pg, strcmp(state, "all") ? state : NULL, function, after, (int)limit, &list, &e))
        return disp_fail(job, &e);
    json_t *last = json_array_size(list) ? json_array_get(list, json_array_size(list) - 1) : NULL;
    disp_reply(job, 200, json_pack("{s:o, s:o}", "parked", list, "next_after",
                                   last && json_array_size(list) == (size_t)limit
                                       ? json_incref(json_object_get(last, "id"))
                                       : json_null()));
}

/* The event a parked item's subject holds (borrowed from it). */
static int subject_event(const json_t *s, struct fn_event *ev)
{
    *ev = (struct fn_event){json_string_value(json_object_get(s, "stream_id")),
                            json_integer_value(json_object_get(s, "version")),
                            json_string_value(json_object_get(s, "type")),
                            json_object_get(s, "data"),
                            json_string_value(json_object_get(s, "position")),
                            json_string_value(json_object_get(s, "recorded_at")),
                            json_string_value(json_object_get(s, "event_id"))};
    return ev->stream_id && ev->type && json_is_object(ev->data) && ev->position &&
                   ev->recorded_at && ev->event_id
               ? 0
               : -1;
}

/* Applies a parked event to its projection again, once: the batch carries
 * the item's marker as a checkpoint moved from "" to "applied". */
static int retry_projection(struct disp_job *job, redisContext *rc, const struct park_item *it,
                            const struct fn_event *ev, int *already, struct err *e)
{
    const struct reg_projection *rp = reg_projection_find(job->reg, it->function);
    if (!rp)
        return err_set(e, ERR_STATE_CONFLICT, "projection %s is not loaded", it->function);
    if (rp->p->version != it->version)
        return err_set(e, ERR_STATE_CONFLICT,
                       "the event was parked by version %d of projection %s; version %d is "
                       "loaded, whose rebuild meets it on its own",
                       it->version, it->function, rp->p->version);
    if (!rc)
        return err_set(e, ERR_UNAVAILABLE, "the read-model store is unavailable");
    int (*apply)(struct fn_batch *, const struct fn_event *, struct err *) =
        reg_projection_handler(rp->p, ev->type);
    struct fn_batch b;
    fn_batch_init(&b);
    /* into the build that serves now; a rebuild running beside it meets the
     * event on its own */
    fn_batch_set_keyspace(&b, rp->p->name, rp->p->version,
                          rm_live_build(rc, rp->p->name, rp->p->version, rp->live));
    struct err fe = {0};
    int code = apply ? apply(&b, ev, &fe) : 0;
    if (code) {
        fn_batch_clear(&b);
        return err_set(e, ERR_FAILED, "projection %s still fails on event %s: %s", it->function,
                       it->position, fe.msg);
    }
    char *marker = xasprintf("cqrsd:parked:%s:v%d:%s", rp->p->name, rp->p->version, it->token);
    struct rm_checkpoint mv = {rp->p->name, rp->p->version, "", "applied", marker, 0};
    code = rm_apply(rc, &b, &mv, 1, e);
    free(marker);
    fn_batch_clear(&b);
    if (code == ERR_CONFLICT) { /* the marker is there: applied before */
        *already = 1;
        return 0;
    }
    if (code == ERR_INTERNAL)
        return err_wrap(e, ERR_FAILED, "projection %s still fails on event %s", it->function,
                        it->position);
    return code;
}

static void builtin_parked_retry(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    struct err e = {0};
    long long id;
    if (path_id(job, "parked item", &id, &e))
        return disp_fail(job, &e);
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return disp_fail(job, &e);
    }
    struct park_item it;
    int found = park_get(pg, id, &it, &e);
    if (found < 0)
        return disp_fail(job, &e);
    if (!found) {
        err_set(&e, ERR_NOT_FOUND, "no parked item #%lld", id);
        return disp_fail(job, &e);
    }
    int code = 0, already = 0;
    struct fn_event ev;
    if (!strcmp(it.state, "resolved")) {
        code = err_set(&e, ERR_STATE_CONFLICT, "parked item #%lld is already resolved", id);
    } else if (!strcmp(it.kind, "projection") || !strcmp(it.kind, "reactor") ||
               (!strcmp(it.kind, "timer") && *it.position)) {
        if (subject_event(it.subject, &ev))
            code = err_set(&e, ERR_INTERNAL, "parked item #%lld holds no event", id);
        else if (!strcmp(it.kind, "projection"))
            code = retry_projection(job, rc, &it, &ev, &already, &e);
        else {
            /* a reactor, or a timer's event handler */
            const struct reg_reactor *x = reg_reactor_find(job->reg, it.function);
            const struct reg_timer *t = reg_timer_find(job->reg, it.function);
            int (*h)(struct fn_react *, const struct fn_event *, struct err *) =
                x ? reg_react_handler(x->x->on, ev.type)
                  : t ? reg_react_handler(t->t->on, ev.type) : NULL;
            struct fn_react ctx;
            if (!x && !t)
                code = err_set(&e, ERR_STATE_CONFLICT, "%s %s is not loaded", it.kind, it.function);
            else if (h) {
                code = react_invoke(job->reg, pg, it.function,
                                    x ? REACT_REACTOR : REACT_TIMER_EVENT, h, &ev, &ctx, &e);
                if (!code && t && ctx.nops)
                    code = react_apply_timer_ops(pg, t->t, t->delay_s, ctx.ops, ctx.nops, &e);
                if (!code)
                    react_ctx_clear(&ctx);
                else if (code != ERR_UNAVAILABLE)
                    code = e.code = ERR_FAILED;
            }
        }
    } else { /* a due timer */
        const struct reg_timer *t = reg_timer_find(job->reg, it.function);
        const json_t *s = it.subject;
        if (!t)
            code = err_set(&e, ERR_STATE_CONFLICT, "timer %s is not loaded", it.function);
        else if ((code = react_fire(job->reg, pg, t->t,
                                    json_string_value(json_object_get(s, "key")),
                                    json_object_get(s, "payload"),
                                    json_string_value(json_object_get(s, "due_at")),
                                    json_string_value(json_object_get(s, "schedule_id")), &e)) &&
                 code != ERR_UNAVAILABLE)
            code = e.code = ERR_FAILED;
    }
    if (code == ERR_FAILED)
        park_settle(pg, id, e.msg, NULL);
    if (!code)
        code = park_settle(pg, id, NULL, &e);
    park_item_clear(&it);
    if (code)
        return disp_fail(job, &e);
    found = park_get(pg, id, &it, &e);
    if (found != 1) {
        err_set(&e, ERR_INTERNAL, "parked item #%lld went away", id);
        return disp_fail(job, &e);
    }
    json_t *o = park_item_json(&it);
    if (already)
        json_object_set_new(o, "note", json_string("it had been applied before; nothing was "
                                                   "applied twice"));
    park_item_clear(&it);
    disp_reply(job, 200, o);
}

/* The modules of generation r, and what it rebuilds, as JSON. */
static json_t *generation_json(struct reg *r)
{
    json_t *mods = json_array(), *rebuilding = json_array();
    for (size_t i = 0; i < r->nmods; i++)
        json_array_append_new(mods, json_pack("{s:s, s:s, s:s}", "name", r->mods[i].desc->name,
                                              "version",
                                              r->mods[i].desc->version ? r->mods[i].desc->version
                                                                       : "",
                                              "path", r->mods[i].path));
    struct reg *src = reg_query_source(r);
    for (size_t i = 0; src && i < r->nprojs; i++)
        if (r->rebuilds && r->rebuilds[i])
            json_array_append_new(rebuilding, json_sprintf("%s v%d", r->projs[i].p->name,
                                                           r->projs[i].p->version));
    json_t *o = json_pack("{s:I, s:o, s:o, s:s}", "generation", (json_int_t)r->generation,
                          "modules", mods, "rebuilding", rebuilding, "notes", r->notes);
    if (src)
        json_object_set_new(o, "queries_from_generation", json_integer((json_int_t)src->generation));
    reg_release(src);
    return o;
}

/* POST /admin/modules/reload: reg_reload, as SIGHUP does. */
static void builtin_reload(struct disp_job *job)
{
    struct err e = {0};
    unsigned long gen = 0;
    if (reg_reload(NULL, &gen, &e)) {
        err_wrap(&e, ERR_MODULES, "the modules were not reloaded, generation %lu serves on",
                 job->reg->generation);
        return disp_fail(job, &e);
    }
    struct reg *r = reg_current();
    disp_reply(job, 200, generation_json(r));
    reg_release(r);
}

/* ---------- webhooks ---------- */

static void builtin_hooks(struct disp_job *job, PGconn *pg)
{
    struct err e = {0};
    json_t *out = NULL;
    long long id = 0, after = 0, limit = 100, webhook = 0;
    int status = 200, code = 0;
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return disp_fail(job, &e);
    }
    switch (job->builtin) {
    case REG_HOOK_CREATE:
        code = hook_create(pg, job->reg, job->cmd, &out, &e);
        status = 201;
        break;
    case REG_HOOK_LIST:
        code = hook_list(pg, &out, &e);
        break;
    case REG_HOOK_DELETE:
    case REG_HOOK_RETRY:
        if (path_id(job, job->builtin == REG_HOOK_DELETE ? "webhook" : "delivery", &id, &e))
            code = e.code;
        else if (job->builtin == REG_HOOK_DELETE)
            code = hook_delete(pg, id, &out, &e);
        else
            code = hook_retry(pg, id, &out, &e);
        break;
    default: {
        const char *state = disp_param(job, "state");
        if (state && !*state)
            state = NULL;
        if (state && strcmp(state, "pending") && strcmp(state, "delivered") &&
            strcmp(state, "parked"))
            code = err_set(&e, ERR_INVALID,
                           "state must be pending, delivered or parked, not \"%.40s\"", state);
        else if (param_count(job, "webhook", 1, INT64_MAX, &webhook, &e) ||
                 param_count(job, "after", 0, INT64_MAX, &after, &e) ||
                 param_count(job, "limit", 1, 1000, &limit, &e))
            code = e.code;
        else
            code = hook_deliveries(pg, webhook, state, after, (int)limit, &out, &e);
    }
    }
    if (code)
        return disp_fail(job, &e);
    disp_reply(job, status, out);
}

/* The projections of generation r as GET /admin/projections shows them:
 * *out gets the array (owned by the caller), head the newest readable
 * position. Returns 0, or ERR_UNAVAILABLE with e saying which store failed. */
static int projection_rows(const struct reg *r, PGconn *pg, redisContext *rc,
                           char head[ES_POSITION_LEN + 1], json_t **out, struct err *e)
{
    *out = NULL;
    head[0] = '\0';
    if (!pg || es_head(pg, head, e))
        return err_set(e, ERR_UNAVAILABLE, "the event store is unavailable");
    if (!rc)
        return err_set(e, ERR_UNAVAILABLE, "the read-model store is unavailable");
    char(*cp)[33] = xcalloc(r->nprojs + 1, sizeof *cp);
    long *builds = xcalloc(r->nprojs + 1, sizeof *builds);
    int rc_get = rm_checkpoints_get(rc, r, cp, builds, e);
    if (rc_get) {
        free(cp);
        free(builds);
        return rc_get;
    }
    /* this instance's rebuilds first: one reported done released its lock
     * before, so the locks read next cannot show it still held */
    json_t **rbs = xcalloc(r->nprojs + 1, sizeof *rbs);
    for (size_t i = 0; i < r->nprojs; i++)
        rbs[i] = rebuild_status(r->projs[i].p->name, r->projs[i].p->version);
    /* the rebuild locks held, by any instance (core/rebuild.h) */
    char cls[16];
    snprintf(cls, sizeof cls, "%d", REBUILD_LOCK_CLASS);
    const char *lp[] = {cls};
    PGresult *locks = es_exec(pg, "SELECT objid::text FROM pg_locks WHERE locktype = 'advisory' "
                                  "AND classid = $1::bigint::oid AND granted",
                              1, lp);
    char retrying[1024];
    proj_retrying(retrying, sizeof retrying);
    char(*paused)[40] = xcalloc(r->nprojs + 1, sizeof *paused);
    json_t *arr = json_array();
    int code = PQresultStatus(locks) == PGRES_TUPLES_OK ? 0 : ERR_UNAVAILABLE;
    if (!code)
        code = rm_paused_get(rc, r, paused, e);
    for (size_t i = 0; i < r->nprojs && !code; i++) {
        const struct fn_projection *p = r->projs[i].p;
        long long lag = 0;
        double secs = 0;
        if ((code = es_lag(pg, cp[i], &lag, &secs, e)))
            break;
        char objid[16];
        snprintf(objid, sizeof objid, "%d", rebuild_lock_objid(p->name, p->version));
        int rebuilding = 0;
        for (int k = 0; k < PQntuples(locks); k++)
            rebuilding |= !strcmp(PQgetvalue(locks, k, 0), objid);
        char *mine = xasprintf("%s v%d: ", p->name, p->version);
        const char *fail = strstr(retrying, mine);
        json_t *o = json_pack("{s:s, s:i, s:I, s:s, s:I, s:f}", "name", p->name, "version",
                              p->version, "build", (json_int_t)builds[i], "checkpoint", cp[i],
                              "lag_events", (json_int_t)lag, "lag_seconds", secs);
        json_object_set_new(o, "state", json_string(rebuilding   ? "rebuilding"
                                                    : paused[i][0] ? "paused"
                                                    : fail         ? "halted"
                                                    : lag          ? "catching up"
                                                                   : "running"));
        json_object_set_new(o, "paused_at", paused[i][0] ? json_string(paused[i]) : json_null());
        if (fail) {
            const char *end = strstr(fail, "; ");
            json_object_set_new(o, "last_error",
                                json_stringn(fail, end ? (size_t)(end - fail) : strlen(fail)));
        } else {
            const char *pp[] = {p->name};
            PGresult *pr = es_exec(pg, "SELECT error || ' (parked ' || to_char(parked_at AT TIME "
                                       "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"') || ')' "
                                       "FROM parked WHERE kind = 'projection' AND function = $1 "
                                       "ORDER BY id DESC LIMIT 1",
                                   1, pp);
            json_object_set_new(o, "last_error",
                                PQresultStatus(pr) == PGRES_TUPLES_OK && PQntuples(pr) == 1
                                    ? json_string(PQgetvalue(pr, 0, 0))
                                    : json_null());
            PQclear(pr);
        }
        json_object_set_new(o, "rebuild", rbs[i] ? rbs[i] : json_null());
        rbs[i] = NULL;
        json_array_append_new(arr, o);
        free(mine);
    }
    PQclear(locks);
    free(paused);
    for (size_t i = 0; i < r->nprojs; i++)
        json_decref(rbs[i]);
    free(rbs);
    free(cp);
    free(builds);
    if (code) {
        json_decref(arr);
        if (!e->msg[0])
            err_set(e, ERR_UNAVAILABLE, "the event store is unavailable");
        return code;
    }
    *out = arr;
    return 0;
}

/* GET /admin/projections: each projection of the generation with its build,
 * checkpoint, lag and state. */
static void builtin_projections(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    struct err e = {0};
    char head[ES_POSITION_LEN + 1];
    json_t *arr;
    if (projection_rows(job->reg, pg, rc, head, &arr, &e))
        return disp_fail(job, &e);
    disp_reply(job, 200, json_pack("{s:s, s:o}", "head", head, "projections", arr));
}

/* POST /admin/projections/{name}/rebuild: 202, the rebuild runs beside the
 * live build (core/rebuild.h); GET /admin/projections shows its progress. */
static void builtin_rebuild(struct disp_job *job)
{
    struct err e = {0};
    const char *name = disp_param(job, "name");
    if (rebuild_start(job->reg, name ? name : "", &e))
        return disp_fail(job, &e);
    const struct reg_projection *rp = reg_projection_find(job->reg, name);
    disp_reply(job, 202, json_pack("{s:s, s:i, s:s, s:s}", "projection", name, "version",
                                   rp->p->version, "state", "rebuilding", "status",
                                   "/admin/projections"));
}

/* POST /admin/projections/{name}/pause and /resume: 200 with the
 * projection's state; both are idempotent. 404 for no such projection. */
static void builtin_pause(struct disp_job *job, redisContext *rc, int pause)
{
    struct err e = {0};
    const char *name = disp_param(job, "name");
    const struct reg_projection *rp = reg_projection_find(job->reg, name ? name : "");
    if (!rp) {
        err_set(&e, ERR_NOT_FOUND, "no projection \"%.100s\" is loaded", name ? name : "");
        return disp_fail(job, &e);
    }
    if (!rc) {
        err_set(&e, ERR_UNAVAILABLE, "the read-model store is unavailable");
        return disp_fail(job, &e);
    }
    char at[40];
    if (rm_pause_set(rc, rp->p->name, rp->p->version, pause, at, &e))
        return disp_fail(job, &e);
    if (!pause)
        proj_poke(); /* the runner picks it up now, not at its next poll */
    log_info("projection %s v%d %s", rp->p->name, rp->p->version, pause ? "paused" : "resumed");
    disp_reply(job, 200, json_pack("{s:s, s:i, s:s, s:o, s:s}", "projection", rp->p->name,
                                   "version", rp->p->version, "state",
                                   pause ? "paused" : "resumed", "paused_at",
                                   pause ? json_string(at) : json_null(), "status",
                                   "/admin/projections"));
}

static void recent_one(void *arg, const char *time, const char *level, const char *msg)
{
    json_t *m = json_string(msg); /* NULL for text that is not UTF-8 */
    json_array_append_new(arg, json_pack("{s:s, s:s, s:o}", "time", time, "level", level, "msg",
                                         m ? m : json_string("(a message that is not UTF-8)")));
}

/* GET /admin/errors: the last warn and error records of this instance. */
static void builtin_errors(struct disp_job *job)
{
    json_t *arr = json_array();
    log_recent(recent_one, arr);
    disp_reply(job, 200, json_pack("{s:o}", "errors", arr));
}

/* GET /problems/{name}: what a problem type means. */
static void builtin_problem(struct disp_job *job)
{
    char *html;
    const char *name = disp_param(job, "name");
    if (openapi_problem_page(name ? name : "", &html)) {
        struct err e = {0};
        err_set(&e, ERR_NOT_FOUND, "no problem type \"%.60s\"", name ? name : "");
        return disp_fail(job, &e);
    }
    disp_reply_text(job, 200, html, "text/html; charset=utf-8");
}

/* GET /openapi.json: the generation's routes (core/openapi.h). */
static void builtin_openapi(struct disp_job *job)
{
    disp_reply(job, 200, openapi_document(job->reg, builtin_auth_on));
}

/* GET /admin: core/admin.html, embedded by the Makefile. */
extern const char builtin_admin_html[];

static void builtin_admin_page(struct disp_job *job)
{
    disp_reply_text(job, 200, xstrdup(builtin_admin_html), "text/html; charset=utf-8");
}

/* ---------- GET /metrics ---------- */

/* The age in seconds of the oldest transaction appending events now: the
 * global order's watermark (migrations/0004_appenders.sql) waits for it, so
 * it bounds how late a projection can be. 0 when none is open; -1 when it
 * cannot be read. */
static double oldest_append_s(PGconn *pg)
{
    PGresult *r = es_exec(pg, "SELECT coalesce(extract(epoch FROM clock_timestamp() - "
                              "min(a.xact_start)), 0)::float8 FROM pg_locks l "
                              "JOIN pg_stat_activity a ON a.pid = l.pid "
                              "WHERE l.locktype = 'advisory' AND l.classid = 1668379251 "
                              "AND l.objid = 1 AND l.objsubid = 2 AND l.granted "
                              "AND l.database = (SELECT oid FROM pg_database "
                              "WHERE datname = current_database())",
                          0, NULL);
    double v = PQresultStatus(r) == PGRES_TUPLES_OK ? strtod(PQgetvalue(r, 0, 0), NULL) : -1;
    PQclear(r);
    return v;
}

static void write_projections(struct mtext *t, const struct reg *r, PGconn *pg,
                              redisContext *rc)
{
    static const char *states[] = {"running", "catching up", "rebuilding", "paused", "halted"};
    struct err e = {0};
    char head[ES_POSITION_LEN + 1], n[200];
    json_t *rows = NULL;
    if (projection_rows(r, pg, rc, head, &rows, &e))
        return; /* the stores are down: cqrsd_postgres_up / cqrsd_redis_up say so */
    mtext_family(t, "cqrsd_projection_lag_events", "gauge",
                 "Events after the projection's checkpoint (counted up to 1000000).");
    size_t i;
    json_t *o;
    json_array_foreach(rows, i, o)
        mtext_printf(t, "cqrsd_projection_lag_events{projection=\"%s\",version=\"%d\"} %lld\n",
                     metrics_escape(n, sizeof n, json_string_value(json_object_get(o, "name"))),
                     (int)json_integer_value(json_object_get(o, "version")),
                     (long long)json_integer_value(json_object_get(o, "lag_events")));
    mtext_family(t, "cqrsd_projection_lag_seconds", "gauge",
                 "Age of the oldest event after the projection's checkpoint, in seconds.");
    json_array_foreach(rows, i, o)
        mtext_printf(t, "cqrsd_projection_lag_seconds{projection=\"%s\",version=\"%d\"} %.3f\n",
                     metrics_escape(n, sizeof n, json_string_value(json_object_get(o, "name"))),
                     (int)json_integer_value(json_object_get(o, "version")),
                     json_real_value(json_object_get(o, "lag_seconds")));
    mtext_family(t, "cqrsd_projection_state", "gauge",
                 "1 for the projection's state (GET /admin/projections), 0 for the others.");
    json_array_foreach(rows, i, o) {
        const char *st = json_string_value(json_object_get(o, "state"));
        for (size_t k = 0; k < sizeof states / sizeof *states; k++)
            mtext_printf(t,
                         "cqrsd_projection_state{projection=\"%s\",version=\"%d\",state=\"%s\"} "
                         "%d\n",
                         metrics_escape(n, sizeof n,
                                        json_string_value(json_object_get(o, "name"))),
                         (int)json_integer_value(json_object_get(o, "version")), states[k],
                         !strcmp(st, states[k]));
    }
    json_decref(rows);
}

static void write_functions(struct mtext *t)
{
    size_t nf;
    struct reg_fn *const *fns = reg_functions(&nf);
    char n[200], labels[260];
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"cqrsd_function_invocations_total", "Invocations of the function since start.",
         offsetof(struct reg_fn, invocations)},
        {"cqrsd_function_errors_total",
         "Invocations that answered 500 or more (timeouts included), and event handlers that "
         "failed.",
         offsetof(struct reg_fn, errors)},
        {"cqrsd_function_rejections_total",
         "Requests refused with 429: the function was at its concurrency limit.",
         offsetof(struct reg_fn, rejections)},
    };
    for (size_t c = 0; c < sizeof counters / sizeof *counters; c++) {
        mtext_family(t, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < nf; i++)
            mtext_printf(t, "%s{function=\"%s\",kind=\"%s\"} %lld\n", counters[c].name,
                         metrics_escape(n, sizeof n, fns[i]->name),
                         reg_kind_name(fns[i]->kind),
                         (long long)atomic_load(
                             (atomic_llong *)((char *)fns[i] + counters[c].off)));
    }
    mtext_family(t, "cqrsd_function_in_flight", "gauge",
                 "Invocations of the function queued or running now.");
    for (size_t i = 0; i < nf; i++)
        mtext_printf(t, "cqrsd_function_in_flight{function=\"%s\",kind=\"%s\"} %d\n",
                     metrics_escape(n, sizeof n, fns[i]->name), reg_kind_name(fns[i]->kind),
                     atomic_load(&fns[i]->in_flight));
    mtext_family(t, "cqrsd_function_duration_seconds", "histogram",
                 "Time an invocation ran on its worker, in seconds.");
    for (size_t i = 0; i < nf; i++) {
        snprintf(labels, sizeof labels, "function=\"%s\",kind=\"%s\"",
                 metrics_escape(n, sizeof n, fns[i]->name), reg_kind_name(fns[i]->kind));
        mtext_hist(t, "cqrsd_function_duration_seconds", labels, &fns[i]->duration);
    }
}

static void builtin_metrics(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    struct mtext t = {0};
    struct err e = {0};
    char head[ES_POSITION_LEN + 1];
    int pg_up = pg && es_head(pg, head, &e) == 0;
    int redis_up = 0;
    if (rc) {
        redisReply *pong = redisCommand(rc, "PING");
        redis_up = pong && pong->type == REDIS_REPLY_STATUS;
        if (pong)
            freeReplyObject(pong);
    }
    mtext_family(&t, "cqrsd_postgres_up", "gauge", "1 when the event store answered this scrape.");
    mtext_printf(&t, "cqrsd_postgres_up %d\n", pg_up);
    mtext_family(&t, "cqrsd_redis_up", "gauge",
                 "1 when the read-model store answered this scrape.");
    mtext_printf(&t, "cqrsd_redis_up %d\n", redis_up);
    mtext_family(&t, "cqrsd_generation", "gauge", "The module generation serving.");
    mtext_printf(&t, "cqrsd_generation %lld\n", (long long)job->reg->generation);
    write_functions(&t);
    if (pg_up && redis_up)
        write_projections(&t, job->reg, pg, rc);
    if (pg_up) {
        PGresult *r = es_exec(pg, "SELECT kind, function, count(*) FROM parked WHERE state = "
                                  "'parked' GROUP BY 1, 2 ORDER BY 1, 2",
                              0, NULL);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            char n[200];
            mtext_family(&t, "cqrsd_parked_events", "gauge",
                         "Events (or timer fires) parked after their retries, by function "
                         "(GET /admin/parked); every projection is listed, 0 when none.");
            const struct reg *g = job->reg;
            for (size_t k = 0; k < g->nprojs; k++) {
                const char *count = "0";
                for (int i = 0; i < PQntuples(r); i++)
                    if (!strcmp(PQgetvalue(r, i, 0), "projection") &&
                        !strcmp(PQgetvalue(r, i, 1), g->projs[k].p->name))
                        count = PQgetvalue(r, i, 2);
                mtext_printf(&t, "cqrsd_parked_events{kind=\"projection\",function=\"%s\"} %s\n",
                             metrics_escape(n, sizeof n, g->projs[k].p->name), count);
            }
            for (int i = 0; i < PQntuples(r); i++) {
                int listed = 0;
                for (size_t k = 0; k < g->nprojs && !listed; k++)
                    listed = !strcmp(PQgetvalue(r, i, 0), "projection") &&
                             !strcmp(PQgetvalue(r, i, 1), g->projs[k].p->name);
                if (!listed)
                    mtext_printf(&t, "cqrsd_parked_events{kind=\"%s\",function=\"%s\"} %s\n",
                                 PQgetvalue(r, i, 0),
                                 metrics_escape(n, sizeof n, PQgetvalue(r, i, 1)),
                                 PQgetvalue(r, i, 2));
            }
        }
        PQclear(r);
        double age = oldest_append_s(pg);
        if (age >= 0) {
            mtext_family(&t, "cqrsd_oldest_append_seconds", "gauge",
                         "Age of the oldest transaction appending events now, in seconds (0: "
                         "none). Projections cannot pass it: alarm above 5 (README "
                         "\"Operations\").");
            mtext_printf(&t, "cqrsd_oldest_append_seconds %.3f\n", age);
        }
    }
    metrics_http_write(&t);
    struct disp_stats ds;
    disp_stats(&ds);
    mtext_family(&t, "cqrsd_workers", "gauge",
                 "Worker threads, by state (busy: running a job, this scrape included).");
    mtext_printf(&t, "cqrsd_workers{state=\"busy\"} %d\ncqrsd_workers{state=\"idle\"} %d\n",
                 ds.busy, ds.workers - ds.busy);
    mtext_family(&t, "cqrsd_connections", "gauge",
                 "The workers' connections open, by store, and those of busy workers (in use).");
    mtext_printf(&t,
                 "cqrsd_connections{store=\"postgres\",state=\"open\"} %d\n"
                 "cqrsd_connections{store=\"redis\",state=\"open\"} %d\n"
                 "cqrsd_connections{store=\"postgres\",state=\"in_use\"} %d\n"
                 "cqrsd_connections{store=\"redis\",state=\"in_use\"} %d\n",
                 ds.pg_open, ds.redis_open, ds.busy < ds.pg_open ? ds.busy : ds.pg_open,
                 ds.busy < ds.redis_open ? ds.busy : ds.redis_open);
    mtext_family(&t, "cqrsd_queue_depth", "gauge",
                 "Jobs waiting for a worker, by queue (commands; reads: queries and built-in "
                 "routes).");
    mtext_printf(&t, "cqrsd_queue_depth{queue=\"commands\"} %zu\ncqrsd_queue_depth{queue=\"reads\"} %zu\n",
                 ds.queued_commands, ds.queued_reads);
    mtext_family(&t, "cqrsd_queue_capacity", "gauge",
                 "The bound of the queues together (CQRSD_QUEUE): past it, 503.");
    mtext_printf(&t, "cqrsd_queue_capacity %zu\n", ds.capacity);
    unsigned long groups, commands;
    gc_stats(&groups, &commands);
    mtext_family(&t, "cqrsd_group_commit_groups_total", "counter",
                 "Groups of appends committed in one transaction.");
    mtext_printf(&t, "cqrsd_group_commit_groups_total %lu\n", groups);
    mtext_family(&t, "cqrsd_group_commit_commands_total", "counter",
                 "Commands in those groups.");
    mtext_printf(&t, "cqrsd_group_commit_commands_total %lu\n", commands);
    disp_reply_text(job, 200, t.p, "text/plain; version=0.0.4; charset=utf-8");
}

void builtin_run(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    switch (job->builtin) {
    case REG_STREAM: builtin_stream(job, pg); break;
    case REG_HEALTH: builtin_alive(job); break;
    case REG_READY: builtin_ready(job, pg, rc); break;
    case REG_METRICS: builtin_metrics(job, pg, rc); break;
    case REG_PAUSE: builtin_pause(job, rc, 1); break;
    case REG_RESUME: builtin_pause(job, rc, 0); break;
    case REG_ADMIN_PAGE: builtin_admin_page(job); break;
    case REG_ERRORS: builtin_errors(job); break;
    case REG_PROBLEM: builtin_problem(job); break;
    case REG_OPENAPI: builtin_openapi(job); break;
    case REG_FUNCTIONS: builtin_functions(job); break;
    case REG_PARKED: builtin_parked(job, pg); break;
    case REG_PARKED_RETRY: builtin_parked_retry(job, pg, rc); break;
    case REG_RELOAD: builtin_reload(job); break;
    case REG_MODULES: disp_reply(job, 200, generation_json(job->reg)); break;
    case REG_PROJECTIONS: builtin_projections(job, pg, rc); break;
    case REG_REBUILD: builtin_rebuild(job); break;
    case REG_HOOK_CREATE:
    case REG_HOOK_LIST:
    case REG_HOOK_DELETE:
    case REG_HOOK_DELIVERIES:
    case REG_HOOK_RETRY: builtin_hooks(job, pg); break;
    }
}

int builtin_inline(enum reg_builtin b)
{
    return b == REG_FUNCTIONS || b == REG_RELOAD || b == REG_MODULES || b == REG_HEALTH ||
           b == REG_ADMIN_PAGE || b == REG_ERRORS || b == REG_PROBLEM || b == REG_OPENAPI;
}
