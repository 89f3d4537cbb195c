/* core/proj.c — the projection runner (see proj.h).
 *
 * Each projection (name, version) has a checkpoint in Redis: the position of
 * the last event it has seen. A step reads the global stream after the
 * smallest checkpoint (es_read_all, commit-safe order), gives each projection
 * the events after its own checkpoint (to its handler of each type), and
 * applies all writes plus every moved checkpoint in one rm_apply.
 * Projections at the newest checkpoint and those behind it (a new version
 * rebuilding, one that was failing) read in separate batches, so those at
 * the head never wait for the others. A handler that fails, or an event
 * whose writes Redis refuses, is retried with back-off and then parked
 * (core/park.h): the other projections go on meanwhile, and the failing one
 * moves past the parked event. Checkpoints are read
 * from Redis at every step, so a reset (cqrsd replay) or a second runner is
 * seen at once; rm_apply's check makes a stale or retried batch a no-op.
 * Every instance runs a runner, and each projection version is stepped by the
 * instance holding its lease (migrations/0006_projection_leases.sql): leases
 * are renewed every LEASE_RENEW_MS, spread so that each instance holds at most
 * its share, and taken over when their holder stops renewing them. The lease
 * is an economy, not the safety: two runners (or `cqrsd replay` beside a
 * server) are still exact, since rm_apply checks the checkpoint a batch
 * started from.
 * Wake-up: LISTEN cqrsd_events, and a poll every poll_ms, so a lost
 * notification only delays. Appends do not NOTIFY in their own transaction
 * (that serialises commits); they poke the notifier thread, which sends one
 * NOTIFY for any number of appends within 5 ms.
 */
#include "core/proj.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/es.h"
#include "core/fn_int.h"
#include "core/park.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/util.h"

#define LEASE_RENEW_MS 1000

/* One projection's part of a step. */
struct part {
    const struct reg_projection *rp;
    char cp[ES_POSITION_LEN + 1];  /* stored */
    char now[ES_POSITION_LEN + 1]; /* handled up to, in this batch */
    long build;                    /* the build of its keyspace written (core/rm.h) */
    int in_step, stopped;
};


/* A failure of part at ev: back off (the part stops before ev), or park ev
 * after limits.retries failures and move past it. Returns 1 when it stops. */
static int part_failed(PGconn *pg, struct park_book *book, struct part *pt,
                       const struct es_event *ev, const char *why)
{
    const struct reg_projection *rp = pt->rp;
    int stops = park_event_failed(pg, book, rp->p->name, "projection", rp->p->version,
                                  rp->limits.retries, rp->limits.backoff_ms, ev, why);
    pt->stopped |= stops;
    return stops;
}

/* pt's writes up to pt->now are stored: a failure it had at or before
 * pt->now is over. Called only after rm_apply succeeded, so that an event
 * whose writes Redis refuses keeps counting its attempts. */
static void part_stored(struct park_book *book, const struct part *pt)
{
    const struct fn_projection *p = pt->rp->p;
    struct park_retry *f = park_book_get(book, p->name, p->version);
    if (f && strcmp(f->position, pt->now) <= 0)
        park_book_clear(book, p->name, p->version);
}

/* Describes pt's writes for the events of evs after pt->now into b; on a
 * handler's failure drops that event's writes and calls part_failed. */
static void part_describe(PGconn *pg, struct park_book *book, struct part *pt,
                          const struct es_events *evs, struct fn_batch *b)
{
    const struct fn_projection *p = pt->rp->p;
    fn_batch_set_keyspace(b, p->name, p->version, pt->build);
    for (size_t k = 0; k < evs->n && !pt->stopped; k++) {
        const struct es_event *ev = &evs->ev[k];
        if (strcmp(ev->position, pt->now) <= 0)
            continue;
        int (*apply)(struct fn_batch *, const struct fn_event *, struct err *) =
            reg_projection_handler(p, ev->type);
        if (apply) {
            struct fn_event fe = fn_event_of(ev);
            struct err fe_err = {0};
            size_t argc = b->argc, ncmds = b->ncmds;
            int64_t t0 = util_now_us();
            int rc = apply(b, &fe, &fe_err);
            reg_fn_count(pt->rp->fn, t0, rc != 0);
            if (rc) {
                fn_batch_truncate(b, argc, ncmds);
                char why[600];
                snprintf(why, sizeof why, "%s", fe_err.msg[0] ? fe_err.msg : err_title(rc));
                if (part_failed(pg, book, pt, ev, why))
                    break;
            }
        }
        memcpy(pt->now, ev->position, sizeof pt->now);
    }
}

/* Redis refused a batch (a write would fail): finds the event, one event of
 * one projection at a time, and treats it as that projection's failure. */
static int apply_one_by_one(PGconn *pg, redisContext *rc, struct park_book *book,
                            struct part *parts, size_t n, const struct es_events *evs,
                            struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        struct part *pt = &parts[i];
        if (!pt->in_step)
            continue;
        const struct fn_projection *p = pt->rp->p;
        memcpy(pt->now, pt->cp, sizeof pt->now);
        pt->stopped = 0;
        for (size_t k = 0; k < evs->n && !pt->stopped; k++) {
            const struct es_event *ev = &evs->ev[k];
            if (strcmp(ev->position, pt->now) <= 0)
                continue;
            struct es_events one = {(struct es_event *)ev, 1};
            struct fn_batch b;
            fn_batch_init(&b);
            char from[ES_POSITION_LEN + 1];
            memcpy(from, pt->now, sizeof from);
            part_describe(pg, book, pt, &one, &b);
            if (pt->stopped) {
                fn_batch_clear(&b);
                break;
            }
            struct rm_checkpoint mv = {p->name, p->version, from, pt->now, NULL, pt->build};
            struct err ae = {0};
            int a = rm_apply(rc, &b, &mv, 1, &ae);
            fn_batch_clear(&b);
            if (a == ERR_INTERNAL) { /* this event's writes are refused */
                memcpy(pt->now, from, sizeof pt->now);
                if (!part_failed(pg, book, pt, ev, ae.msg)) {
                    /* parked: move past it with nothing written */
                    struct fn_batch none;
                    fn_batch_init(&none);
                    mv = (struct rm_checkpoint){p->name, p->version, from, ev->position, NULL,
                                                pt->build};
                    a = rm_apply(rc, &none, &mv, 1, &ae);
                    fn_batch_clear(&none);
                    if (!a)
                        memcpy(pt->now, ev->position, sizeof pt->now);
                }
            }
            if (a && a != ERR_INTERNAL)
                return err_set(e, a, "%s", ae.msg);
            if (!a)
                part_stored(book, pt);
        }
    }
    return 0;
}

/* One batch for the parts marked in_step. */
static int step_group(PGconn *pg, redisContext *rc, struct park_book *book, struct part *parts,
                      size_t n, int batch_size, int *applied, struct err *e)
{
    const char *min = NULL;
    for (size_t i = 0; i < n; i++)
        if (parts[i].in_step && (!min || strcmp(parts[i].cp, min) < 0))
            min = parts[i].cp;
    if (!min)
        return 0;
    struct es_events evs = {0};
    int rcode = es_read_all(pg, min, (size_t)batch_size, &evs, e);
    if (rcode || evs.n == 0) {
        es_events_clear(&evs);
        return rcode;
    }
    const char *last = evs.ev[evs.n - 1].position;
    struct fn_batch b;
    fn_batch_init(&b);
    struct rm_checkpoint *moves = xcalloc(n, sizeof *moves);
    size_t nm = 0;
    for (size_t i = 0; i < n; i++) {
        struct part *pt = &parts[i];
        if (!pt->in_step || strcmp(pt->cp, last) >= 0)
            continue;
        part_describe(pg, book, pt, &evs, &b);
        if (strcmp(pt->now, pt->cp))
            moves[nm++] = (struct rm_checkpoint){pt->rp->p->name, pt->rp->p->version, pt->cp,
                                                 pt->now, NULL, pt->build};
    }
    rcode = nm ? rm_apply(rc, &b, moves, nm, e) : 0;
    fn_batch_clear(&b);
    free(moves);
    if (rcode == 0)
        for (size_t i = 0; i < n; i++)
            if (parts[i].in_step) {
                part_stored(book, &parts[i]);
                /* what queries of this instance reflect (Cqrsd-Position) */
                struct rm_live *live = parts[i].rp->live;
                if (live && parts[i].build == atomic_load(&live->build))
                    rm_live_raise(live, parts[i].now, 0);
            }
    if (rcode == ERR_INTERNAL) {
        log_warn("projections: %s; finding the event, one at a time", e->msg);
        rcode = apply_one_by_one(pg, rc, book, parts, n, &evs, e);
    }
    if (rcode == 0)
        *applied += (int)evs.n;
    es_events_clear(&evs);
    return rcode;
}

/* proj_step_builds, the live builds (only NULL) restricted to the projections
 * i with mine[i] set (mine NULL: all). */
static int step_builds(PGconn *pg, redisContext *rc, const struct reg *r, const long *only,
                       const unsigned char *mine, struct park_book *book, int batch_size,
                       int *applied, struct err *e)
{
    size_t n = r->nprojs;
    *applied = 0;
    if (n == 0)
        return 0;
    char(*cp)[33] = xcalloc(n, sizeof *cp);
    long *builds = xcalloc(n, sizeof *builds);
    int rcode = 0;
    if (!only) {
        /* the live runner: a paused projection is left where it is */
        char(*paused)[40] = xcalloc(n, sizeof *paused);
        rcode = rm_checkpoints_get(rc, r, cp, builds, e);
        if (!rcode)
            rcode = rm_paused_get(rc, r, paused, e);
        for (size_t i = 0; i < n && !rcode; i++)
            if (paused[i][0] || (mine && !mine[i]))
                builds[i] = -1;
        free(paused);
    }
    for (size_t i = 0; only && i < n && !rcode; i++)
        if ((builds[i] = only[i]) >= 0) {
            const struct fn_projection *p = r->projs[i].p;
            rcode = rm_build_checkpoint_get(rc, p->name, p->version, only[i], cp[i], e);
            if (!rcode && *cp[i] && strlen(cp[i]) != ES_POSITION_LEN)
                rcode = err_set(e, ERR_CONFLICT, "build %ld of %s v%d is %s", only[i], p->name,
                                p->version, cp[i]);
        }
    struct part *parts = xcalloc(n, sizeof *parts);
    int64_t now = util_now_ms();
    const char *max = NULL;
    for (size_t i = 0; i < n && !rcode; i++) {
        parts[i].rp = &r->projs[i];
        parts[i].build = builds[i];
        memcpy(parts[i].cp, cp[i], sizeof parts[i].cp);
        memcpy(parts[i].now, cp[i], sizeof parts[i].now);
        if (builds[i] >= 0 &&
            !park_book_waiting(book, r->projs[i].p->name, r->projs[i].p->version, now) &&
            (!max || strcmp(cp[i], max) > 0))
            max = cp[i];
    }
    /* those at the newest checkpoint read apart from those behind (a new
     * version rebuilding, one that was failing), so they never wait for them */
    for (int lead = 1; lead >= 0 && !rcode && max; lead--) {
        for (size_t i = 0; i < n; i++) {
            const struct fn_projection *p = r->projs[i].p;
            parts[i].in_step = builds[i] >= 0 &&
                               !park_book_waiting(book, p->name, p->version, now) &&
                               (strcmp(parts[i].cp, max) == 0) == lead;
        }
        rcode = step_group(pg, rc, book, parts, n, batch_size, applied, e);
    }
    free(parts);
    free(builds);
    free(cp);
    return rcode;
}

int proj_step_builds(PGconn *pg, redisContext *rc, const struct reg *r, const long *only,
                     struct park_book *book, int batch_size, int *applied, struct err *e)
{
    return step_builds(pg, rc, r, only, NULL, book, batch_size, applied, e);
}

int proj_step(PGconn *pg, redisContext *rc, const struct reg *r, struct park_book *book,
              int batch_size, int *applied, struct err *e)
{
    return proj_step_builds(pg, rc, r, NULL, book, batch_size, applied, e);
}

int proj_catch_up_builds(PGconn *pg, redisContext *rc, const struct reg *r, const long *only,
                         struct err *e)
{
    struct park_book book = {0};
    int rcode = 0;
    for (int conflicts = 0;;) {
        int n = 0;
        rcode = proj_step_builds(pg, rc, r, only, &book, 1000, &n, e);
        if (rcode == ERR_CONFLICT && ++conflicts < 100)
            continue;
        if (rcode)
            break;
        if (n == 0) {
            /* caught up, unless some wait to try an event again */
            int64_t next = 0;
            for (struct park_retry *f = book.head; f; f = f->next)
                if (!next || f->next_ms < next)
                    next = f->next_ms;
            if (!next)
                break;
            int64_t wait = next - util_now_ms();
            if (wait > 0)
                poll(NULL, 0, (int)wait);
        }
    }
    park_book_free(&book);
    return rcode;
}

int proj_catch_up(PGconn *pg, redisContext *rc, const struct reg *r, struct err *e)
{
    return proj_catch_up_builds(pg, rc, r, NULL, e);
}

/* ---------- the runner thread ---------- */

static struct {
    struct proj_config cfg;
    pthread_t thread, notifier;
    pthread_cond_t poked_cv;
    int poked;
    atomic_int stop;
    int started;
    pthread_mutex_t mu;
    char retrying[1024]; /* the runner's failures being retried; "" when none */
} P = {.mu = PTHREAD_MUTEX_INITIALIZER, .poked_cv = PTHREAD_COND_INITIALIZER};

void proj_poke(void)
{
    pthread_mutex_lock(&P.mu);
    if (!P.poked) {
        P.poked = 1;
        pthread_cond_signal(&P.poked_cv);
    }
    pthread_mutex_unlock(&P.mu);
}

/* Sends NOTIFY cqrsd_events after appends, at most one per 5 ms: the hint
 * that wakes every runner (of this and other instances) at once. */
static void *notifier(void *arg)
{
    (void)arg;
    PGconn *pg = NULL;
    struct err e = {0};
    while (!atomic_load(&P.stop)) {
        pthread_mutex_lock(&P.mu);
        while (!P.poked && !atomic_load(&P.stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&P.poked_cv, &P.mu, &ts);
        }
        P.poked = 0;
        pthread_mutex_unlock(&P.mu);
        if (atomic_load(&P.stop))
            break;
        if (pg && PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = NULL;
        }
        if (!pg && !(pg = es_connect(P.cfg.database_url, &e))) {
            poll(NULL, 0, 100); /* the runner polls meanwhile */
            continue;
        }
        PQclear(PQexec(pg, "NOTIFY cqrsd_events"));
        poll(NULL, 0, 5);
    }
    if (pg)
        PQfinish(pg);
    return NULL;
}

/* ---------- leases ---------- */

/* The leases this instance holds, as "<name>:v<version>". */
struct leases {
    char me[37];
    char **held;
    size_t nheld;
    int64_t next_ms; /* when to renew */
    int instances;   /* seen at the last renewal */
};

static int leases_has(const struct leases *l, const char *name)
{
    for (size_t i = 0; i < l->nheld; i++)
        if (!strcmp(l->held[i], name))
            return 1;
    return 0;
}

static void leases_clear(struct leases *l)
{
    for (size_t i = 0; i < l->nheld; i++)
        free(l->held[i]);
    l->nheld = 0;
}

/* mine[i] = 1 for the projections of r this instance holds. */
static void leases_mask(const struct leases *l, const struct reg *r, unsigned char *mine)
{
    for (size_t i = 0; i < r->nprojs; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s:v%d", r->projs[i].p->name, r->projs[i].p->version);
        mine[i] = (unsigned char)leases_has(l, name);
    }
}

/* Renews, gives up and takes leases for the projection versions of r and
 * src (may be NULL), every LEASE_RENEW_MS. On a PostgreSQL failure the held
 * set is emptied (the leases may be lost by now): nothing is stepped until a
 * renewal succeeds. */
static void leases_refresh(PGconn *pg, struct leases *l, const struct reg *r,
                           const struct reg *src, int lease_ms)
{
    int64_t now = util_now_ms();
    if (now < l->next_ms)
        return;
    l->next_ms = now + LEASE_RENEW_MS;
    char ms[24];
    snprintf(ms, sizeof ms, "%d milliseconds", lease_ms);
    const char *p2[] = {l->me, ms};
    size_t before = l->nheld;
    char was[600] = "";
    for (size_t i = 0; i < l->nheld; i++)
        snprintf(was + strlen(was), sizeof was - strlen(was), "%s%s", i ? "," : "", l->held[i]);
    leases_clear(l);
    PGresult *res = es_exec(pg, "INSERT INTO cqrsd_instances (id, seen_at) VALUES ($1, now()) "
                                "ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                            1, p2);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (ok) /* instances gone long ago (each start is a new id) */
        PQclear(PQexec(pg, "DELETE FROM cqrsd_instances WHERE seen_at < now() - interval '1 hour'"));
    res = ok ? es_exec(pg, "SELECT count(*) FROM cqrsd_instances "
                           "WHERE seen_at > now() - $2::interval AND $1 = $1",
                       2, p2)
             : NULL;
    ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
    l->instances = ok ? atoi(PQgetvalue(res, 0, 0)) : 1;
    PQclear(res);
    res = ok ? es_exec(pg, "UPDATE projection_leases SET expires_at = now() + $2::interval "
                           "WHERE owner = $1 RETURNING projection",
                       2, p2)
             : NULL;
    ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
    /* the projection versions to run: those of r, and of src (its queries' source) */
    char **want = NULL;
    size_t nwant = 0;
    for (int g = 0; g < 2; g++) {
        const struct reg *x = g ? src : r;
        for (size_t i = 0; x && i < x->nprojs; i++) {
            char *name = xasprintf("%s:v%d", x->projs[i].p->name, x->projs[i].p->version);
            int dup = 0;
            for (size_t k = 0; k < nwant && !dup; k++)
                dup = !strcmp(want[k], name);
            if (dup) {
                free(name);
                continue;
            }
            want = xrealloc(want, (nwant + 1) * sizeof *want);
            want[nwant++] = name;
        }
    }
    for (int i = 0; ok && i < PQntuples(res); i++) {
        l->held = xrealloc(l->held, (l->nheld + 1) * sizeof *l->held);
        l->held[l->nheld++] = xstrdup(PQgetvalue(res, i, 0));
    }
    PQclear(res);
    size_t share = l->instances > 0 ? (nwant + (size_t)l->instances - 1) / (size_t)l->instances
                                    : nwant;
    /* over my share (another instance came): give up the last ones */
    while (ok && l->nheld > share) {
        const char *p3[] = {l->me, l->held[l->nheld - 1]};
        PQclear(es_exec(pg, "DELETE FROM projection_leases WHERE owner = $1 AND projection = $2",
                        2, p3));
        free(l->held[--l->nheld]);
    }
    /* under it: take those free or expired */
    for (size_t k = 0; ok && k < nwant && l->nheld < share; k++) {
        if (leases_has(l, want[k]))
            continue;
        const char *p3[] = {l->me, ms, want[k]};
        res = es_exec(pg, "INSERT INTO projection_leases (projection, owner, expires_at) "
                          "VALUES ($3, $1, now() + $2::interval) ON CONFLICT (projection) DO "
                          "UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                          "WHERE projection_leases.expires_at < now() RETURNING projection",
                      3, p3);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            l->held = xrealloc(l->held, (l->nheld + 1) * sizeof *l->held);
            l->held[l->nheld++] = xstrdup(want[k]);
        } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            ok = 0;
        }
        PQclear(res);
    }
    for (size_t k = 0; k < nwant; k++)
        free(want[k]);
    free(want);
    if (!ok) {
        leases_clear(l);
        log_warn("projections: could not renew the leases (%s); running none until then",
                 PQerrorMessage(pg));
        return;
    }
    char is[600] = "";
    for (size_t i = 0; i < l->nheld; i++)
        snprintf(is + strlen(is), sizeof is - strlen(is), "%s%s", i ? "," : "", l->held[i]);
    if (strcmp(is, was) || before != l->nheld)
        log_info("projections: this instance runs %s (%zu of %zu, %d instance%s)",
                 *is ? is : "none", l->nheld, nwant, l->instances, l->instances == 1 ? "" : "s");
}

/* Gives up every lease (a clean stop): others take them at once. */
static void leases_release(PGconn *pg, struct leases *l)
{
    if (pg && PQstatus(pg) == CONNECTION_OK) {
        const char *p1[] = {l->me};
        PQclear(es_exec(pg, "DELETE FROM projection_leases WHERE owner = $1", 1, p1));
        PQclear(es_exec(pg, "DELETE FROM cqrsd_instances WHERE id = $1", 1, p1));
    }
    leases_clear(l);
    free(l->held);
    l->held = NULL;
}

/* 1 when every projection r rebuilds has reached the head. */
static int rebuilt(PGconn *pg, redisContext *rc, const struct reg *r)
{
    char head[ES_POSITION_LEN + 1];
    struct err e = {0};
    char(*cp)[33] = xcalloc(r->nprojs + 1, sizeof *cp);
    int done = es_head(pg, head, &e) == 0 && rm_checkpoints_get(rc, r, cp, NULL, &e) == 0;
    for (size_t i = 0; i < r->nprojs && done; i++)
        done = !r->rebuilds || !r->rebuilds[i] || strcmp(cp[i], head) >= 0;
    free(cp);
    return done;
}

/* Publishes the runner's failures for proj_retrying. */
static void publish(const struct park_book *book)
{
    pthread_mutex_lock(&P.mu);
    P.retrying[0] = '\0';
    size_t len = 0;
    for (const struct park_retry *f = book->head; f && len + 1 < sizeof P.retrying; f = f->next)
        len += (size_t)snprintf(P.retrying + len, sizeof P.retrying - len, "%s%s v%d: attempt %d "
                                "at event %s failed: %s",
                                len ? "; " : "", f->function, f->version, f->attempts,
                                f->position, f->error);
    pthread_mutex_unlock(&P.mu);
}

int proj_retrying(char *buf, size_t len)
{
    pthread_mutex_lock(&P.mu);
    int any = P.retrying[0] != '\0';
    snprintf(buf, len, "%s", P.retrying);
    pthread_mutex_unlock(&P.mu);
    return any;
}


static void *runner(void *arg)
{
    (void)arg;
    PGconn *pg = NULL;
    redisContext *rc = NULL;
    struct park_book book = {0};
    struct err e = {0};
    int warned = 0;
    struct leases leases = {.next_ms = 0};
    util_uuid4(leases.me);
    while (!atomic_load(&P.stop)) {
        if (pg && PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = NULL;
        }
        if (rc && rc->err) {
            redisFree(rc);
            rc = NULL;
        }
        if (!pg && (pg = es_connect(P.cfg.database_url, &e))) {
            PGresult *r = PQexec(pg, "LISTEN cqrsd_events");
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                PQfinish(pg);
                pg = NULL;
            }
            PQclear(r);
            leases.next_ms = 0; /* a new connection: renew (or take) at once */
        }
        if (!rc)
            rc = rm_connect(P.cfg.redis_url, 30000, &e); /* a batch script may run long */
        if (!pg || !rc) {
            if (!warned++)
                log_warn("projections waiting: %s", e.msg);
            for (int i = 0; i < 10 && !atomic_load(&P.stop); i++)
                poll(NULL, 0, 100);
            continue;
        }
        if (warned) {
            log_info("projections running again");
            warned = 0;
        }
        int n = 0, m = 0;
        struct reg *r = reg_current();
        /* while r rebuilds new projection versions, the generation serving its
         * queries keeps its own read models current too */
        struct reg *src = r ? reg_query_source(r) : NULL;
        leases_refresh(pg, &leases, r, src, P.cfg.lease_ms);
        unsigned char *mine_src = src ? xcalloc(src->nprojs + 1, 1) : NULL;
        unsigned char *mine = r ? xcalloc(r->nprojs + 1, 1) : NULL;
        if (src)
            leases_mask(&leases, src, mine_src);
        if (r)
            leases_mask(&leases, r, mine);
        int code = src ? step_builds(pg, rc, src, NULL, mine_src, &book, P.cfg.batch_size, &m, &e)
                       : 0;
        if (!code && r)
            code = step_builds(pg, rc, r, NULL, mine, &book, P.cfg.batch_size, &n, &e);
        free(mine_src);
        free(mine);
        if (!code && src && rebuilt(pg, rc, r))
            reg_queries_switch(r);
        n += m;
        reg_release(src);
        reg_release(r);
        if (code == ERR_CONFLICT) {
            log_info("projections: %s; reading checkpoints again", e.msg);
            continue;
        }
        if (code) {
            log_error("projections: %s", e.msg);
            if (code == ERR_UNAVAILABLE) {
                if (rc->err || strstr(e.msg, "Redis")) {
                    redisFree(rc);
                    rc = NULL;
                }
            }
            for (int i = 0; i < 10 && !atomic_load(&P.stop); i++)
                poll(NULL, 0, 100);
            continue;
        }
        publish(&book);
        if (n == 0)
            es_wait_notify(pg, book.head ? 100 : P.cfg.poll_ms, &P.stop);
    }
    park_book_free(&book);
    leases_release(pg, &leases);
    if (pg)
        PQfinish(pg);
    if (rc)
        redisFree(rc);
    return NULL;
}

int proj_start(const struct proj_config *cfg, struct err *e)
{
    (void)e;
    P.cfg = *cfg;
    if (P.cfg.lease_ms <= 0)
        P.cfg.lease_ms = 5000;
    atomic_store(&P.stop, 0);
    pthread_create(&P.thread, NULL, runner, NULL);
    pthread_create(&P.notifier, NULL, notifier, NULL);
    P.started = 1;
    return 0;
}

void proj_stop(void)
{
    if (!P.started)
        return;
    atomic_store(&P.stop, 1);
    pthread_mutex_lock(&P.mu);
    pthread_cond_broadcast(&P.poked_cv);
    pthread_mutex_unlock(&P.mu);
    pthread_join(P.thread, NULL);
    pthread_join(P.notifier, NULL);
    P.started = 0;
}
