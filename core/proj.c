/* core/proj.c — the projection runner (see proj.h).
 *
 * Each projection (name, version) has a checkpoint in Redis: the position of
 * the last event it has seen. A step reads the global stream after the
 * smallest checkpoint (es_read_all, commit-safe order), gives each projection
 * the events after its own checkpoint (filtered by its types), and applies all
 * writes plus every moved checkpoint in one rm_apply. Checkpoints are read
 * from Redis at every step, so a reset (cqrsd replay) or a second runner is
 * seen at once; rm_apply's check makes a stale or retried batch a no-op.
 * One instance at a time runs the projections: the runner holds a session
 * advisory lock (the lease) on its PostgreSQL connection; the runners of other
 * instances stand by and take over when that connection ends. The lease is an
 * economy, not the safety: two runners (or `cqrsd replay` beside a server)
 * are still exact, since rm_apply checks the checkpoint a batch started from.
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
#include "core/reg.h"
#include "core/rm.h"
#include "core/util.h"

/* pg_advisory_lock key of the projection lease (DESIGN.md §7) */
#define PROJ_LEASE_KEY "7203119411"

int proj_step(PGconn *pg, redisContext *rc, const struct reg *r, int batch_size, int *applied,
              struct err *e)
{
    size_t np = r->nprojs;
    *applied = 0;
    if (np == 0)
        return 0;
    char(*cp)[33] = xcalloc(np, sizeof *cp);
    int rcode = 0;
    const char *min = NULL;
    for (size_t i = 0; i < np; i++) {
        if ((rcode = rm_checkpoint_get(rc, r->projs[i].p->name, r->projs[i].p->version, cp[i], e)))
            goto out;
        if (!min || strcmp(cp[i], min) < 0)
            min = cp[i];
    }
    struct es_events evs = {0};
    if ((rcode = es_read_all(pg, min, (size_t)batch_size, &evs, e)))
        goto out;
    if (evs.n == 0)
        goto out;
    const char *last = evs.ev[evs.n - 1].position;
    struct fn_batch b;
    fn_batch_init(&b);
    struct rm_checkpoint *moves = xcalloc(np, sizeof *moves);
    size_t nm = 0;
    for (size_t i = 0; i < np && !rcode; i++) {
        const struct fn_projection *p = r->projs[i].p;
        if (strcmp(cp[i], last) >= 0)
            continue;
        fn_batch_set_prefix(&b, p->name, p->version);
        for (size_t k = 0; k < evs.n; k++) {
            const struct es_event *ev = &evs.ev[k];
            if (strcmp(ev->position, cp[i]) <= 0)
                continue;
            int (*apply)(struct fn_batch *, const struct fn_event *, struct err *) =
                reg_projection_handler(p, ev->type);
            if (!apply)
                continue;
            struct fn_event fe = {ev->stream_id, ev->version,  ev->type,    ev->data,
                                  ev->position,  ev->recorded_at, ev->event_id};
            struct err fe_err = {0};
            if (apply(&b, &fe, &fe_err)) {
                rcode = err_set(e, ERR_INTERNAL, "projection %s failed on event %s (%s/%" PRId64
                                                 "): %s",
                                p->name, ev->position, ev->stream_id, ev->version, fe_err.msg);
                break;
            }
        }
        moves[nm++] = (struct rm_checkpoint){p->name, p->version, cp[i], last};
    }
    if (!rcode)
        rcode = rm_apply(rc, &b, moves, nm, e);
    if (rcode == 0)
        *applied = (int)evs.n;
    free(moves);
    fn_batch_clear(&b);
    es_events_clear(&evs);
out:
    free(cp);
    return rcode;
}

int proj_catch_up(PGconn *pg, redisContext *rc, const struct reg *r, struct err *e)
{
    for (int conflicts = 0;;) {
        int n = 0;
        int rc2 = proj_step(pg, rc, r, 1000, &n, e);
        if (rc2 == ERR_CONFLICT && ++conflicts < 100)
            continue;
        if (rc2)
            return rc2;
        if (n == 0)
            return 0;
    }
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
    char failure[512];
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

int proj_failure(char *buf, size_t len)
{
    pthread_mutex_lock(&P.mu);
    int failed = P.failure[0] != '\0';
    snprintf(buf, len, "%s", P.failure);
    pthread_mutex_unlock(&P.mu);
    return failed;
}

static void wait_for_notify(PGconn *pg, int ms)
{
    struct pollfd pfd = {PQsocket(pg), POLLIN, 0};
    if (pfd.fd < 0)
        return;
    /* wake at least every 200 ms to notice a stop request */
    for (int waited = 0; waited < ms && !atomic_load(&P.stop); waited += 200) {
        int r = poll(&pfd, 1, 200);
        if (r > 0) {
            PQconsumeInput(pg);
            PGnotify *n;
            int got = 0;
            while ((n = PQnotifies(pg))) {
                PQfreemem(n);
                got = 1;
            }
            if (got)
                return;
        }
    }
}

static void *runner(void *arg)
{
    (void)arg;
    PGconn *pg = NULL;
    redisContext *rc = NULL;
    struct err e = {0};
    int warned = 0, leader = 0, standby = 0;
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
            leader = 0;
        }
        if (pg && !leader) {
            /* the lease: a session advisory lock, released by PostgreSQL when
             * this connection ends (the instance died or lost its network) */
            PGresult *r = PQexec(pg, "SELECT pg_try_advisory_lock(" PROJ_LEASE_KEY ")");
            leader = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
            PQclear(r);
            if (!leader) {
                if (!standby++)
                    log_info("projections: another instance holds the lease; standing by");
                for (int i = 0; i < 20 && !atomic_load(&P.stop); i++)
                    poll(NULL, 0, 100);
                continue;
            }
            if (standby)
                log_info("projections: took over the lease");
            standby = 0;
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
        int n = 0;
        struct reg *r = reg_current();
        int code = r ? proj_step(pg, rc, r, P.cfg.batch_size, &n, &e) : 0;
        reg_release(r);
        if (code == ERR_CONFLICT) {
            log_info("projections: %s; reading checkpoints again", e.msg);
            continue;
        }
        if (code == ERR_INTERNAL) {
            /* a write failed inside the script: writes before it may have
             * been applied, so retrying could double them. Halt, loudly. */
            log_error("projections halted: %s; fix the projection, then `cqrsd replay` it", e.msg);
            pthread_mutex_lock(&P.mu);
            snprintf(P.failure, sizeof P.failure, "%s", e.msg);
            pthread_mutex_unlock(&P.mu);
            while (!atomic_load(&P.stop))
                poll(NULL, 0, 100);
            break;
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
        if (n == 0)
            wait_for_notify(pg, P.cfg.poll_ms);
    }
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
