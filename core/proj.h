/* core/proj.h — the projection runner: feeds the global event stream to every
 * projection function and applies their Redis writes exactly once (DESIGN.md §4).
 */
#ifndef CQRSD_PROJ_H
#define CQRSD_PROJ_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "core/err.h"

struct reg;
struct park_book;

struct proj_config {
    const char *database_url;
    const char *redis_url;
    int batch_size;    /* events read per batch */
    int poll_ms;       /* wait for a notification at most this long, then poll */
    int lease_ms;      /* a projection lease lasts this long unless renewed (0: 5000) */
};

/* Starts the runner thread. */
int proj_start(const struct proj_config *cfg, struct err *e);

/* Stops it after the batch in flight (which is applied whole or not at all). */
void proj_stop(void);

/*
 * One step, on the caller's connections: reads up to batch_size events after
 * the smallest checkpoint (projections at the newest checkpoint and those
 * behind in batches of their own), applies them to every projection of r
 * behind them and
 * moves their checkpoints, atomically. *applied gets the number of events
 * read (0: caught up). Returns 0, ERR_CONFLICT (checkpoints moved under us:
 * call again), ERR_UNAVAILABLE. A handler's failure, or writes Redis refuses,
 * are the failing projection's alone: book counts its attempts and, after
 * limits.retries, the event is parked (core/park.h) and the projection
 * moves on; a projection in back-off sits the step out.
 */
int proj_step(PGconn *pg, redisContext *rc, const struct reg *r, struct park_book *book,
              int batch_size, int *applied, struct err *e);

/* proj_step on given builds: only[i] is the build of projection i to bring
 * forward (its checkpoint read from that build's key), or -1 to leave
 * projection i out; NULL: every projection's live build (proj_step). A
 * build whose checkpoint is "retired" gives ERR_CONFLICT. For the catch-up
 * of a rebuild (core/rebuild.h). */
int proj_step_builds(PGconn *pg, redisContext *rc, const struct reg *r, const long *only,
                     struct park_book *book, int batch_size, int *applied, struct err *e);

/* Tells the notifier that events were appended (cheap; callable from any
 * thread). It sends NOTIFY cqrsd_events soon after, waking all runners. */
void proj_poke(void);

/* 1 and a description when the runner is retrying an event of some
 * projection (it backs off, then parks it), else 0. */
int proj_retrying(char *buf, size_t len);

/* Runs proj_step until caught up, waiting out back-offs, parking what keeps
 * failing (for `cqrsd replay` and tests). */
int proj_catch_up(PGconn *pg, redisContext *rc, const struct reg *r, struct err *e);

/* proj_catch_up through proj_step_builds(only). */
int proj_catch_up_builds(PGconn *pg, redisContext *rc, const struct reg *r, const long *only,
                         struct err *e);

#endif
