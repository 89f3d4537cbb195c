/* core/gc.h — group commit: the appends of concurrent commands gathered into
 * one transaction (issue 7). Group commit: DeWitt et al., "Implementation
 * techniques for main memory database systems", SIGMOD 1984; PostgreSQL does
 * the same inside one server for concurrent commits (docs §30.4, commit_delay).
 *
 * A command's worker calls gc_append instead of es_append. The first caller
 * that finds no batch in flight becomes the leader: it takes every append
 * waiting (at most ES_GROUP_MAX), commits them with es_append_group on its own
 * connection (es_append when it is alone: no subtransaction), hands each
 * waiter its own outcome, and leaves; a waiter not yet taken becomes the next
 * leader. Normally one batch is in flight at a time, so the next one gathers
 * every append that arrived meanwhile. A batch waiting on a lock (a stream row
 * held by a transaction outside this process) must not hold up the rest: when
 * the newest batch has been in flight for 10 ms the next may start beside it,
 * up to 16 at once. Each batch is sorted by its commands' first stream, so
 * batches side by side lock stream rows in the same order and do not deadlock
 * on each other. A command waits at most for its own batch and, while it
 * queues, for the 10 ms patience of the one before.
 */
#ifndef CQRSD_GC_H
#define CQRSD_GC_H

#include <libpq-fe.h>

#include "core/es.h"

/* Appends c (see struct es_command_append) in the next group, on pg when this
 * caller leads it. Returns c->rc: 0 with c->reply set (a new reference), or
 * the command's error in c->err (ERR_CONFLICT, ERR_IDEMPOTENCY, ERR_INVALID),
 * or the group's (ERR_UNAVAILABLE, ERR_INTERNAL) in c->err.
 * Thread-safe; blocks until the group holding c has committed or failed. */
int gc_append(PGconn *pg, struct es_command_append *c);

/* Counters since start: groups committed (or failed whole) and the commands
 * in them; commands / groups is the mean group size (GET /admin/functions). */
void gc_stats(unsigned long *groups, unsigned long *commands);

#endif
