/* core/react.c — the runner of reactors and timers (see react.h, and
 * migrations/0002_functions.sql for the tables).
 *
 * Consumers. Each reactor ("reactor:<name>") and each timer's event handlers
 * ("timer:<name>") is a consumer of the global stream with a checkpoint in
 * consumer_checkpoints. A step reads the events after the checkpoints (the
 * commit-safe order of es_read_all), hands each consumer those after its own
 * checkpoint that its table handles, and moves the checkpoints with a
 * compare-and-set, so a second instance that moved one first makes this
 * step's move a no-op (its work is then done again by nobody: the first
 * instance did it).
 *   - A reactor's commands run while the step goes (cmd_issue), each with
 *     the idempotency key "reactor:<name>:<event id>:<rank>": a crash before
 *     the checkpoint moves runs the handler again and its commands answer
 *     from their keys. At least once, effect exactly once.
 *   - A timer's handlers only describe starts and stops; they are applied in
 *     one transaction with the checkpoint move: exactly once.
 * Consumers far behind (a new reactor replaying history) read in a group of
 * their own, so they never hold back those at the head.
 *
 * Timers. A due timer is claimed (claimed_until, in a short UPDATE ... FOR
 * UPDATE SKIP LOCKED: no transaction stays open while a function runs), its
 * fire runs, its commands run under "timer:<name>:<schedule id>:<rank>", and
 * the row of that schedule is deleted. Any number of instances fire, each
 * timer once: the claim keeps the others off, and a fire run again after a
 * crash issues nothing twice.
 *
 * Failures (a handler's error, a malformed or failing command) follow the
 * rule of core/park.h: back-off, then parked. Timers back off in the table
 * (claimed_until), so every instance sees it.
 *
 * One instance at a time runs the consumers: a session advisory lock, the
 * reactor lease, beside the projections' one (core/proj.c).
 */
#include "core/react.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cmd.h"
#include "core/fn_int.h"
#include "core/reg.h"
#include "core/util.h"

/* pg_advisory_lock key of the reactor lease */
#define REACT_LEASE_KEY "7203119412"
/* a fire's claim lasts its timeout plus this, in seconds */
#define REACT_CLAIM_SLACK_S 30
/* While none are found, due timers are looked for at most this often. */
#define REACT_FIRE_EVERY_MS 100
/* Under a steady load, a step starts at most this often (see the runner). */
#define REACT_STEP_MIN_MS 50

/* ---------- what a function asks for (the ABI) ---------- */

void react_ctx_init(struct fn_react *x, enum react_mode mode)
{
    memset(x, 0, sizeof *x);
    x->mode = mode;
}

void react_ctx_clear(struct fn_react *x)
{
    for (size_t i = 0; i < x->nissued; i++) {
        free(x->issued[i].command);
        json_decref(x->issued[i].cmd);
    }
    free(x->issued);
    for (size_t i = 0; i < x->nops; i++) {
        free(x->ops[i].key);
        json_decref(x->ops[i].payload);
    }
    free(x->ops);
    enum react_mode mode = x->mode;
    react_ctx_init(x, mode);
}

static void misuse(struct fn_react *x, const char *what)
{
    if (!x->misuse[0])
        snprintf(x->misuse, sizeof x->misuse, "%s", what);
}

void fn_issue(struct fn_react *x, const char *command, json_t *cmd)
{
    if (!command || !*command) {
        json_decref(cmd);
        return misuse(x, "fn_issue without a command name");
    }
    x->issued = xrealloc(x->issued, (x->nissued + 1) * sizeof *x->issued);
    x->issued[x->nissued++] = (struct react_issue){xstrdup(command), cmd ? cmd : json_object()};
}

static void timer_op(struct fn_react *x, int start, const char *key, json_t *payload)
{
    if (x->mode != REACT_TIMER_EVENT) {
        json_decref(payload);
        return misuse(x, start ? "fn_timer_start outside a timer's event handler"
                               : "fn_timer_stop outside a timer's event handler");
    }
    if (!key || !*key || strlen(key) > 512) {
        json_decref(payload);
        return misuse(x, "a timer key must be 1 to 512 bytes");
    }
    if (payload && !json_is_object(payload)) {
        json_decref(payload);
        return misuse(x, "a timer payload must be an object");
    }
    x->ops = xrealloc(x->ops, (x->nops + 1) * sizeof *x->ops);
    x->ops[x->nops++] = (struct react_timer_op){start, xstrdup(key),
                                                start ? (payload ? payload : json_object()) : NULL,
                                                NULL, NULL};
}

void fn_timer_start(struct fn_react *x, const char *key, json_t *payload)
{
    timer_op(x, 1, key, payload);
}

void fn_timer_stop(struct fn_react *x, const char *key)
{
    timer_op(x, 0, key, NULL);
}

/* ---------- one invocation ---------- */

const char *react_event_time(const struct fn_event *ev)
{
    const char *at = json_string_value(json_object_get(ev->data, "occurred_at"));
    return at && *at ? at : ev->recorded_at;
}

int react_run_issued(struct reg *r, PGconn *pg, struct fn_react *x, const char *prefix,
                     const char *default_at, struct err *e)
{
    for (size_t i = 0; i < x->nissued; i++) {
        char *key = xasprintf("%s:%zu", prefix, i + 1);
        int status;
        json_t *cmd = x->issued[i].cmd;
        x->issued[i].cmd = NULL; /* cmd_issue steals it */
        int rc = cmd_issue(r, pg, x->issued[i].command, cmd, key, default_at, &status, e);
        if (!rc && status >= 400)
            log_debug("%s: %s", key, e->msg); /* the command decided against it: an outcome */
        free(key);
        if (rc)
            return rc;
    }
    return 0;
}


int react_invoke(struct reg *r, PGconn *pg, const char *name, enum react_mode mode,
                 int (*react)(struct fn_react *, const struct fn_event *, struct err *),
                 const struct fn_event *ev, struct fn_react *x, struct err *e)
{
    react_ctx_init(x, mode);
    struct err fe = {0};
    int rc = react(x, ev, &fe);
    if (rc) {
        react_ctx_clear(x);
        return err_set(e, rc, "%s failed on %s %s/%" PRId64 ": %s", name, ev->type, ev->stream_id,
                       ev->version, fe.msg[0] ? fe.msg : err_title(rc));
    }
    if (x->misuse[0]) {
        char m[sizeof x->misuse];
        snprintf(m, sizeof m, "%s", x->misuse);
        react_ctx_clear(x);
        return err_set(e, ERR_INTERNAL, "%s on %s %s/%" PRId64 ": %s", name, ev->type,
                       ev->stream_id, ev->version, m);
    }
    for (size_t i = 0; i < x->nops; i++) { /* a start is due after the event that asked */
        x->ops[i].recorded_at = ev->recorded_at;
        x->ops[i].set_by = ev->position;
    }
    if (mode == REACT_REACTOR && x->nissued) {
        char *prefix = xasprintf("reactor:%s:%s", name, ev->event_id);
        rc = react_run_issued(r, pg, x, prefix, react_event_time(ev), e);
        free(prefix);
        if (rc) {
            react_ctx_clear(x);
            return rc;
        }
    }
    return 0;
}

int react_fire(struct reg *r, PGconn *pg, const struct fn_timer *t, const char *key,
               const json_t *payload, const char *due_at, const char *schedule_id,
               struct err *e)
{
    struct fn_react x;
    react_ctx_init(&x, REACT_TIMER_FIRE);
    struct fn_timer_due due = {key, payload, due_at};
    struct err fe = {0};
    int rc = t->fire(&x, &due, &fe);
    if (!rc && x.misuse[0])
        rc = err_set(&fe, ERR_INTERNAL, "%s", x.misuse);
    if (rc) {
        react_ctx_clear(&x);
        return err_set(e, rc, "timer %s failed to fire for \"%.200s\": %s", t->name, key,
                       fe.msg[0] ? fe.msg : err_title(rc));
    }
    char *prefix = xasprintf("timer:%s:%s", t->name, schedule_id);
    rc = react_run_issued(r, pg, &x, prefix, due_at, e);
    free(prefix);
    react_ctx_clear(&x);
    return rc;
}

int react_apply_timer_ops(PGconn *pg, const struct fn_timer *t, int delay_s,
                          const struct react_timer_op *ops, size_t n, struct err *e)
{
    json_t *starts = json_array(), *stops = json_array();
    for (size_t i = 0; i < n; i++) {
        int last = 1; /* only the last op of a key counts */
        for (size_t k = i + 1; k < n && last; k++)
            last = strcmp(ops[k].key, ops[i].key) != 0;
        if (!last)
            continue;
        if (ops[i].start)
            json_array_append_new(starts,
                                  json_pack("{s:s, s:O, s:s, s:s}", "key", ops[i].key, "payload",
                                            ops[i].payload, "recorded_at", ops[i].recorded_at,
                                            "set_by", ops[i].set_by));
        else
            json_array_append_new(stops, json_string(ops[i].key));
    }
    char delay[16];
    snprintf(delay, sizeof delay, "%d", delay_s);
    char *st = json_dumps(starts, JSON_COMPACT), *sp = json_dumps(stops, JSON_COMPACT);
    int rc = 0;
    if (json_array_size(starts)) {
        const char *params[3] = {t->name, delay, st};
        rc = es_command(
            pg,
            "INSERT INTO timers AS t (timer, timer_key, due_at, payload, schedule_id, set_by) "
            "SELECT $1, x.key, x.recorded_at + make_interval(secs => $2::int), x.payload, "
            "gen_random_uuid(), x.set_by "
            "FROM jsonb_to_recordset($3::jsonb) AS x(key text, payload jsonb, recorded_at "
            "timestamptz, set_by text) "
            "ON CONFLICT (timer, timer_key) DO UPDATE SET due_at = EXCLUDED.due_at, "
            "payload = EXCLUDED.payload, schedule_id = EXCLUDED.schedule_id, "
            "set_by = EXCLUDED.set_by, claimed_until = NULL, attempts = 0, last_error = NULL",
            3, params, "start timers", e);
    }
    if (!rc && json_array_size(stops)) {
        const char *params[2] = {t->name, sp};
        rc = es_command(pg,
                        "DELETE FROM timers WHERE timer = $1 AND timer_key IN "
                        "(SELECT jsonb_array_elements_text($2::jsonb))",
                        2, params, "stop timers", e);
    }
    free(st);
    free(sp);
    json_decref(starts);
    json_decref(stops);
    return rc;
}

/* ---------- consumers ---------- */

struct consumer {
    char id[128];      /* "reactor:<name>" or "timer:<name>" */
    const char *name;  /* the function's */
    const struct reg_reactor *rx;
    const struct reg_timer *rt;
    struct reg_fn *fn;
    const struct fn_limits *limits;
    const struct fn_on_react *on;
    char cp[ES_POSITION_LEN + 1];  /* stored */
    char now[ES_POSITION_LEN + 1]; /* handled up to, this step */
    int stopped;                   /* failing: waits for its next attempt */
    int in_step;                   /* takes part in this step */
    struct react_timer_op *ops;    /* timers: the starts and stops of this step */
    size_t nops;
};

static void consumers_free(struct consumer *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < c[i].nops; k++) {
            free(c[i].ops[k].key);
            json_decref(c[i].ops[k].payload);
        }
        free(c[i].ops);
    }
    free(c);
}

/* Reads the checkpoints of c[0..n) (a consumer without a row starts at ""). */
static int read_checkpoints(PGconn *pg, struct consumer *c, size_t n, struct err *e)
{
    json_t *ids = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ids, json_string(c[i].id));
    char *txt = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    const char *params[1] = {txt};
    PGresult *r = es_exec(pg,
                          "SELECT consumer, position FROM consumer_checkpoints WHERE "
                          "consumer IN (SELECT jsonb_array_elements_text($1::jsonb))",
                          1, params);
    free(txt);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "read consumer checkpoints", e);
    for (size_t i = 0; i < n; i++) {
        c[i].cp[0] = '\0';
        for (int k = 0; k < PQntuples(r); k++)
            if (!strcmp(PQgetvalue(r, k, 0), c[i].id))
                snprintf(c[i].cp, sizeof c[i].cp, "%s", PQgetvalue(r, k, 1));
        memcpy(c[i].now, c[i].cp, sizeof c[i].now);
    }
    PQclear(r);
    return 0;
}

/* Moves c's checkpoint from c->cp to c->now (an upsert when it has no row
 * yet), with its timer ops, in one transaction. Returns 0, or ERR_CONFLICT
 * when another instance moved it first (nothing is written). */
static int save(PGconn *pg, struct consumer *c, struct err *e)
{
    if (!strcmp(c->cp, c->now) && !c->nops)
        return 0;
    PGresult *r = PQexec(pg, "BEGIN");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return es_fail(pg, r, "begin a checkpoint move", e);
    PQclear(r);
    int rc = 0;
    if (c->rt && c->nops)
        rc = react_apply_timer_ops(pg, c->rt->t, c->rt->delay_s, c->ops, c->nops, e);
    if (!rc) {
        /* a compare-and-set: an insert for a consumer without a row, else an
         * update only from the position this step started at */
        const char *params[3] = {c->id, c->cp, c->now};
        r = es_exec(pg,
                         "INSERT INTO consumer_checkpoints AS k (consumer, position) "
                         "VALUES ($1, $3) ON CONFLICT (consumer) DO UPDATE SET "
                         "position = EXCLUDED.position, updated_at = now() WHERE k.position = $2 "
                         "RETURNING 1",
                         3, params);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = es_fail(pg, r, "move a consumer checkpoint", e);
        } else {
            int moved = PQntuples(r) == 1;
            PQclear(r);
            if (!moved)
                rc = err_set(e, ERR_CONFLICT, "the checkpoint of %s moved under this instance",
                             c->id);
        }
    }
    r = PQexec(pg, rc ? "ROLLBACK" : "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK && !rc)
        rc = es_fail(pg, r, "commit a checkpoint move", e);
    else
        PQclear(r);
    return rc;
}

/* A failure of c at ev: back off, or park ev after limits->retries failures
 * and move on. Returns 1 when c stops for now, 0 when it moves on. */
static int failed(PGconn *pg, struct park_book *book, struct consumer *c,
                  const struct es_event *ev, const struct err *why)
{
    return park_event_failed(pg, book, c->name, c->rx ? "reactor" : "timer", 0,
                             c->limits->retries, c->limits->backoff_ms, ev, why->msg);
}

/* Hands c the events of evs after its checkpoint. */
static void consume(struct reg *r, PGconn *pg, struct park_book *book, struct consumer *c,
                    const struct es_events *evs)
{
    for (size_t k = 0; k < evs->n && !c->stopped; k++) {
        const struct es_event *ev = &evs->ev[k];
        if (strcmp(ev->position, c->now) <= 0)
            continue;
        int (*h)(struct fn_react *, const struct fn_event *, struct err *) =
            reg_react_handler(c->on, ev->type);
        if (h) {
            struct fn_event fe = fn_event_of(ev);
            struct fn_react x;
            struct err e = {0};
            int64_t t0 = util_now_us();
            int rc = react_invoke(r, pg, c->name, c->rx ? REACT_REACTOR : REACT_TIMER_EVENT, h,
                                  &fe, &x, &e);
            reg_fn_count(c->fn, t0, rc != 0);
            if (rc) {
                if (failed(pg, book, c, ev, &e)) {
                    c->stopped = 1;
                    break;
                }
            } else {
                park_book_clear(book, c->name, 0);
                if (x.nops) {
                    c->ops = xrealloc(c->ops, (c->nops + x.nops) * sizeof *c->ops);
                    memcpy(c->ops + c->nops, x.ops, x.nops * sizeof *x.ops);
                    c->nops += x.nops;
                }
                free(x.ops); /* the ops are c's now */
                x.ops = NULL;
                x.nops = 0;
                react_ctx_clear(&x);
            }
        }
        memcpy(c->now, ev->position, sizeof c->now);
    }
}

/* One batch for the consumers marked in_step: read after the smallest of
 * their checkpoints, hand out, save. Adds the events read to *done. */
static int step_group(PGconn *pg, struct reg *r, struct park_book *book, struct consumer *c,
                      size_t n, int batch_size, int *done, struct err *e)
{
    const char *min = NULL;
    for (size_t i = 0; i < n; i++)
        if (c[i].in_step && (!min || strcmp(c[i].cp, min) < 0))
            min = c[i].cp;
    if (!min)
        return 0;
    struct es_events evs = {0};
    int rc = es_read_all(pg, min, (size_t)batch_size, &evs, e);
    if (rc || evs.n == 0) {
        es_events_clear(&evs);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        if (c[i].in_step)
            consume(r, pg, book, &c[i], &evs);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!c[i].in_step)
            continue;
        struct err se = {0};
        int s = save(pg, &c[i], &se);
        if (s == ERR_CONFLICT)
            log_info("reactors: %s; reading the checkpoints again", se.msg);
        else if (s)
            rc = err_set(e, s, "%s", se.msg);
    }
    *done += (int)evs.n;
    es_events_clear(&evs);
    return rc;
}

static int consume_step(PGconn *pg, struct reg *r, struct park_book *book, int batch_size,
                        int *done, struct err *e)
{
    size_t n = r->nreactors + r->ntimers;
    if (n == 0)
        return 0;
    struct consumer *c = xcalloc(n, sizeof *c);
    for (size_t i = 0; i < r->nreactors; i++) {
        const struct reg_reactor *x = &r->reactors[i];
        c[i] = (struct consumer){.name = x->x->name, .rx = x, .fn = x->fn, .limits = &x->limits,
                                 .on = x->x->on};
        snprintf(c[i].id, sizeof c[i].id, "reactor:%s", x->x->name);
    }
    for (size_t i = 0; i < r->ntimers; i++) {
        const struct reg_timer *t = &r->timers[i];
        struct consumer *k = &c[r->nreactors + i];
        *k = (struct consumer){.name = t->t->name, .rt = t, .fn = t->fn, .limits = &t->limits,
                               .on = t->t->on};
        snprintf(k->id, sizeof k->id, "timer:%s", t->t->name);
    }
    int rc = read_checkpoints(pg, c, n, e);
    if (rc) {
        consumers_free(c, n);
        return rc;
    }
    /* leaders (at the newest checkpoint) and laggards read apart */
    const char *max = NULL;
    int64_t now = util_now_ms();
    for (size_t i = 0; i < n; i++)
        if (!park_book_waiting(book, c[i].name, 0, now) && (!max || strcmp(c[i].cp, max) > 0))
            max = c[i].cp;
    char top[ES_POSITION_LEN + 1] = "";
    if (max)
        snprintf(top, sizeof top, "%s", max);
    for (int lead = 1; lead >= 0 && !rc && max; lead--) {
        for (size_t i = 0; i < n; i++)
            c[i].in_step = !park_book_waiting(book, c[i].name, 0, now) &&
                           (strcmp(c[i].cp, top) == 0) == lead;
        rc = step_group(pg, r, book, c, n, batch_size, done, e);
    }
    consumers_free(c, n);
    return rc;
}

/* ---------- firing ---------- */

/* Deletes the row of one schedule of a timer: ($1 timer, $2 key, $3 schedule
 * id); a timer started again meanwhile is another schedule, and stays. */
static const char DELETE_SCHEDULE[] =
    "DELETE FROM timers WHERE timer = $1 AND timer_key = $2 AND schedule_id = $3::uuid";

static int fire_step(PGconn *pg, struct reg *r, int *done, struct err *e)
{
    if (r->ntimers == 0)
        return 0;
    json_t *names = json_array();
    int claim_s = REACT_CLAIM_SLACK_S;
    for (size_t i = 0; i < r->ntimers; i++) {
        json_array_append_new(names, json_string(r->timers[i].t->name));
        if (r->timers[i].limits.timeout_ms / 1000 + REACT_CLAIM_SLACK_S > claim_s)
            claim_s = r->timers[i].limits.timeout_ms / 1000 + REACT_CLAIM_SLACK_S;
    }
    char *txt = json_dumps(names, JSON_COMPACT);
    json_decref(names);
    char secs[16];
    snprintf(secs, sizeof secs, "%d", claim_s);
    const char *params[2] = {txt, secs};
    PGresult *res = es_exec(
        pg,
        "UPDATE timers AS t SET claimed_until = now() + make_interval(secs => $2::int), "
        "attempts = t.attempts + 1 "
        "FROM (SELECT timer, timer_key FROM timers WHERE timer IN "
        "(SELECT jsonb_array_elements_text($1::jsonb)) AND due_at <= now() AND "
        "(claimed_until IS NULL OR claimed_until < now()) ORDER BY due_at LIMIT 100 "
        "FOR UPDATE SKIP LOCKED) AS d "
        "WHERE t.timer = d.timer AND t.timer_key = d.timer_key "
        "RETURNING t.timer, t.timer_key, t.payload::text, "
        "to_char(t.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), "
        "t.schedule_id::text, t.attempts",
        2, params);
    free(txt);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return es_fail(pg, res, "claim due timers", e);
    int rc = 0;
    for (int i = 0; i < PQntuples(res) && !rc; i++) {
        const char *name = PQgetvalue(res, i, 0), *key = PQgetvalue(res, i, 1);
        const char *due = PQgetvalue(res, i, 3), *sched = PQgetvalue(res, i, 4);
        int attempts = atoi(PQgetvalue(res, i, 5));
        const struct reg_timer *t = reg_timer_find(r, name);
        json_t *payload = json_loads(PQgetvalue(res, i, 2), 0, NULL);
        struct err fe = {0};
        int64_t t0 = util_now_us();
        int f = t && payload ? react_fire(r, pg, t->t, key, payload, due, sched, &fe)
                             : err_set(&fe, ERR_INTERNAL, "timer %s has a malformed payload", name);
        if (t)
            reg_fn_count(t->fn, t0, f != 0);
        const char *del_params[3] = {name, key, sched};
        if (f == 0) {
            rc = es_command(pg, DELETE_SCHEDULE, 3, del_params, "delete a fired timer", e);
            (*done)++;
        } else if (t && attempts >= t->limits.retries) {
            json_t *subject = json_pack("{s:s, s:s, s:O, s:s, s:s}", "timer", name, "key", key,
                                        "payload", payload ? payload : json_null(), "due_at", due,
                                        "schedule_id", sched);
            int64_t id = 0;
            rc = park_put(pg, name, "timer", 0, "", subject, fe.msg, attempts, &id, e);
            json_decref(subject);
            if (!rc) {
                log_error("timer %s: parked \"%s\" as #%lld after %d attempts: %s", name, key,
                          (long long)id, attempts, fe.msg);
                rc = es_command(pg, DELETE_SCHEDULE, 3, del_params, "delete a parked timer", e);
            }
        } else {
            /* back off in the table, so every instance waits */
            int64_t delay =
                park_backoff_ms(t ? t->limits.backoff_ms : REG_DEFAULT_BACKOFF_MS, attempts);
            char ms[24];
            snprintf(ms, sizeof ms, "%lld", (long long)delay);
            const char *bp[5] = {name, key, sched, ms, fe.msg};
            log_warn("timer %s: attempt %d failed: %s; trying again in %s ms", name, attempts,
                     fe.msg, ms);
            rc = es_command(pg,
                            "UPDATE timers SET claimed_until = now() + $4::int * interval "
                            "'1 millisecond', last_error = $5 WHERE timer = $1 AND timer_key = "
                            "$2 AND schedule_id = $3::uuid",
                            5, bp, "back off a timer", e);
        }
        json_decref(payload);
    }
    PQclear(res);
    return rc;
}

int react_step(PGconn *pg, struct reg *r, struct park_book *book, int batch_size, int *done,
               struct err *e)
{
    *done = 0;
    int rc = consume_step(pg, r, book, batch_size, done, e);
    if (!rc)
        rc = fire_step(pg, r, done, e);
    return rc;
}

/* ---------- the runner thread ---------- */

static struct {
    struct react_config cfg;
    pthread_t thread;
    atomic_int stop;
    int started;
} X;


static void *runner(void *arg)
{
    (void)arg;
    PGconn *pg = NULL;
    struct park_book book = {0};
    struct err e = {0};
    int leader = 0, warned = 0, standby = 0;
    int64_t last_fire = 0;
    while (!atomic_load(&X.stop)) {
        if (pg && PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = NULL;
        }
        if (!pg && (pg = es_connect(X.cfg.database_url, &e))) {
            PGresult *r = PQexec(pg, "LISTEN cqrsd_events");
            PQclear(r);
            leader = 0;
        }
        if (!pg) {
            if (!warned++)
                log_warn("reactors waiting: %s", e.msg);
            for (int i = 0; i < 10 && !atomic_load(&X.stop); i++)
                poll(NULL, 0, 100);
            continue;
        }
        if (warned) {
            log_info("reactors running again");
            warned = 0;
        }
        if (!leader) {
            PGresult *r = PQexec(pg, "SELECT pg_try_advisory_lock(" REACT_LEASE_KEY ")");
            leader = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
            PQclear(r);
            if (!leader && !standby++)
                log_info("reactors: another instance holds the lease; standing by (timers "
                         "still fire here)");
            if (leader && standby)
                log_info("reactors: took over the lease");
            if (leader)
                standby = 0;
        }
        struct reg *r = reg_current();
        int done = 0, rc = 0;
        int64_t step_start = util_now_ms();
        if (r && leader)
            rc = consume_step(pg, r, &book, X.cfg.batch_size, &done, &e);
        /* a step that found events but no full batch waits out
         * REACT_STEP_MIN_MS: under a steady load the next step takes more
         * events at once (one read, one commit per consumer) instead of a few
         * every few milliseconds; reactors and timers act on minutes */
        if (!rc && done > 0 && done < X.cfg.batch_size)
            while (!atomic_load(&X.stop) && util_now_ms() - step_start < REACT_STEP_MIN_MS)
                poll(NULL, 0, 5);
        /* due timers are looked for at most every REACT_FIRE_EVERY_MS while
         * none are found (timers are due to the second; events wake this loop
         * far more often) */
        int64_t now = util_now_ms();
        if (r && !rc && now - last_fire >= REACT_FIRE_EVERY_MS) {
            int before = done;
            rc = fire_step(pg, r, &done, &e);
            last_fire = done == before ? now : 0;
        }
        reg_release(r);
        if (rc) {
            log_error("reactors: %s", e.msg);
            for (int i = 0; i < 10 && !atomic_load(&X.stop); i++)
                poll(NULL, 0, 100);
            continue;
        }
        if (done == 0)
            es_wait_notify(pg, X.cfg.poll_ms, &X.stop);
    }
    park_book_free(&book);
    if (pg)
        PQfinish(pg);
    return NULL;
}

int react_start(const struct react_config *cfg, struct err *e)
{
    (void)e;
    X.cfg = *cfg;
    atomic_store(&X.stop, 0);
    pthread_create(&X.thread, NULL, runner, NULL);
    X.started = 1;
    return 0;
}

void react_stop(void)
{
    if (!X.started)
        return;
    atomic_store(&X.stop, 1);
    pthread_join(X.thread, NULL);
    X.started = 0;
}
