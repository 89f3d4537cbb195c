/* core/react.h — the runner of reactors and timers (core/react.c). */
#ifndef CQRSD_REACT_H
#define CQRSD_REACT_H

#include <libpq-fe.h>

#include "core/err.h"
#include "core/es.h"
#include "core/fn.h"
#include "core/park.h"

struct reg;

struct react_config {
    const char *database_url;
    int batch_size; /* events read per step */
    int poll_ms;    /* longest wait between two looks for events and due timers */
};

/* Starts the runner thread: one instance at a time (a PostgreSQL advisory
 * lock, the reactor lease) hands the global stream to the reactors and the
 * timers' handlers; every instance fires due timers (each once: a claim in
 * the timers table). */
int react_start(const struct react_config *cfg, struct err *e);

/* Stops it after the invocation in flight. */
void react_stop(void);

/* One pass on the caller's connection (for tests and `cqrsd`): hands the
 * events after each consumer's checkpoint (up to batch_size) to the
 * reactors and timer handlers of r, then fires the timers due. *done gets
 * the number of events read plus timers fired (0: nothing to do). */
int react_step(PGconn *pg, struct reg *r, struct park_book *book, int batch_size, int *done,
               struct err *e);

/* ---------- running one invocation (also for the case runner and parked retries) ---------- */

/* What an invocation asked for. */
struct react_issue {
    char *command;
    json_t *cmd; /* owned */
};
struct react_timer_op {
    int start; /* 1: start, 0: stop */
    char *key;
    json_t *payload;         /* owned; NULL for a stop */
    const char *recorded_at; /* of the event that asked (borrowed; set by react_invoke) */
    const char *set_by;      /* its position (borrowed; set by react_invoke) */
};

enum react_mode { REACT_REACTOR, REACT_TIMER_EVENT, REACT_TIMER_FIRE };

struct fn_react {
    enum react_mode mode;
    struct react_issue *issued;
    size_t nissued;
    struct react_timer_op *ops;
    size_t nops;
    char misuse[160]; /* the first call not allowed in this mode; "" if none */
};

void react_ctx_init(struct fn_react *x, enum react_mode mode);
void react_ctx_clear(struct fn_react *x);

/* Runs the commands x issued, in order, on pg, with idempotency keys
 * "<prefix>:<rank>" (rank from 1) and default_at as their occurred_at.
 * Returns 0 when every one reached an outcome, else the first failure's code
 * with a message. */
int react_run_issued(struct reg *r, PGconn *pg, struct fn_react *x, const char *prefix,
                     const char *default_at, struct err *e);

/* The occurred_at a reactor's commands get by default: the event's data
 * occurred_at, else its recorded_at. */
const char *react_event_time(const struct fn_event *ev);

/* Runs reactor or timer handler `react` on ev in mode, then (reactors) its
 * commands under keys "reactor:<name>:<event id>". On success x holds what
 * it asked for (timer ops for REACT_TIMER_EVENT, each with ev's recorded_at
 * and position, borrowed from ev). Returns 0 or a failure. */
int react_invoke(struct reg *r, PGconn *pg, const char *name, enum react_mode mode,
                 int (*react)(struct fn_react *, const struct fn_event *, struct err *),
                 const struct fn_event *ev, struct fn_react *x, struct err *e);

/* Fires timer t for (key, payload, due_at, schedule_id): runs fire, then its
 * commands under keys "timer:<name>:<schedule_id>". Returns 0 or a failure. */
int react_fire(struct reg *r, PGconn *pg, const struct fn_timer *t, const char *key,
               const json_t *payload, const char *due_at, const char *schedule_id,
               struct err *e);

/* Applies timer ops of timer t (from REACT_TIMER_EVENT invocations, in
 * event order; a start is due delay_s after its recorded_at) in the caller's
 * transaction: for each key only its last op counts. */
int react_apply_timer_ops(PGconn *pg, const struct fn_timer *t, int delay_s,
                          const struct react_timer_op *ops, size_t n, struct err *e);

#endif
