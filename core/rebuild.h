/* core/rebuild.h — blue/green rebuilds of projections (`cqrsd replay`,
 * POST /admin/projections/{name}/rebuild).
 *
 * A rebuild fills the next build of each chosen projection's keyspace
 * (core/rm.h: "<projection>:v<version>@<build>:") while the live build keeps
 * serving and its runner keeps it current:
 *
 *   1. fold: reads the global stream from the first event in commit-safe
 *      order (es_read_all, batches of 5,000, the next batch read ahead on a
 *      second connection when opts.database_url is given) and runs the projection's
 *      handlers into a model of the keyspace in this process's memory, with
 *      the checks the batch script makes (core/rm.c: key types, HINCRBY on
 *      integers below 2^62), event by event: an event whose writes would be
 *      refused, or whose handler fails, is parked (core/park.h) at its first
 *      failure, as handlers are functions of the event alone;
 *   2. write: one command per key (HSET, SADD, ZADD or SET with all its
 *      fields, 512 at most per command), pipelined, then the build's
 *      checkpoint: each key is written once, however many events touched it;
 *   3. catch up: the events appended meanwhile, through the live path
 *      (proj_catch_up_builds: batch scripts on the new build);
 *   4. switch: rm_switch, once the new build's checkpoint has reached the
 *      live one's; queries of every instance read the new build within
 *      RM_LIVE_REFRESH_MS;
 *   5. drop: after RM_SWITCH_GRACE_MS, every other build's keys, by SCAN and
 *      UNLINK in slices.
 *
 * Interrupting it (a signal, a crash, a lost connection) before the switch
 * leaves the live build untouched; the next rebuild drops what the
 * interrupted one wrote. One rebuild per projection version at a time: each
 * holds a session advisory lock (pg_try_advisory_lock(REBUILD_LOCK_CLASS,
 * hash of "<projection>:v<version>")) for its whole run.
 *
 * Memory: the model holds the whole read model of the chosen projections
 * while folding, about 150 bytes per hash field, set member or sorted-set
 * member with malloc's overhead (the Online Retail file: 3.1 million of
 * them, a peak RSS of 490 MB). Once the model passes opts.memory_bytes (its
 * own estimate, malloc's overhead included), the fold stops after that
 * event, writes what it has with its checkpoint, and step 3 brings the
 * build to the head through the batch script, as the live runner does.
 */
#ifndef CQRSD_REBUILD_H
#define CQRSD_REBUILD_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdatomic.h>

#include "core/err.h"

struct reg;

/* classid of the rebuild locks (pg_locks.classid): "cqrb" */
#define REBUILD_LOCK_CLASS 1668379234

/* objid of the rebuild lock of a projection version (pg_locks.objid; the
 * second key of pg_advisory_lock(int, int)): FNV-1a of
 * "<projection>:v<version>", 31 bits. */
int rebuild_lock_objid(const char *projection, int version);

enum rebuild_phase {
    REBUILD_FOLD,   /* done/total: events read of about total */
    REBUILD_WRITE,  /* done/total: keys written */
    REBUILD_CATCH,  /* catching up the events appended meanwhile */
    REBUILD_SWITCH, /* switched; waiting out the grace, then dropping the old build */
    REBUILD_DONE
};

/* What a rebuild did. */
struct rebuild_stats {
    long long events;  /* events folded (step 1) */
    long long keys;    /* keys written (step 2) */
    long long entries; /* fields and members written */
    long long parked;  /* events parked */
    long long dropped; /* keys of the old builds deleted */
    int bounded;       /* the fold stopped at opts.memory_bytes; the batch path did the rest */
    double fold_s, write_s, catch_s;
    double switch_s; /* from the start to the last switch: the new builds serve */
    double total_s;  /* to the end, the old builds deleted */
};

struct rebuild_opts {
    /* chosen[i] != 0: rebuild projection i of the registry */
    const unsigned char *chosen;
    /* called at most every 200 ms and at each phase's end; may be NULL */
    void (*progress)(void *arg, enum rebuild_phase phase, long long done, long long total,
                     double seconds);
    void *arg;
    /* set to stop before the switch (the live build stays); may be NULL */
    atomic_int *stop;
    /* when not NULL, a second connection to it reads the next batch of
     * events while the fold runs over the current one */
    const char *database_url;
    /* the size the model may grow to, in bytes (0: no bound): past it, the
     * model is written out and the rest of the events go through the batch
     * path (step 3) from there: slower, in bounded memory */
    size_t memory_bytes;
};

/* The phase's name: "folding", "writing", "catching up", "switched", "done". */
const char *rebuild_phase_name(enum rebuild_phase p);

/*
 * Rebuilds the chosen projections of r, steps 1 to 5 above, on the caller's
 * connections (pg must not be inside a transaction; rc is used for the
 * writes). st (may be NULL) gets the figures. Returns 0; ERR_CONFLICT when
 * a rebuild of one of them already runs (nothing done); ERR_UNAVAILABLE
 * when o->stop was set before the switch (the live builds untouched) or a
 * connection failed; ERR_INTERNAL with e set. Each chosen projection is switched or left
 * live as it was: never half of one.
 */
int rebuild_run(PGconn *pg, redisContext *rc, const struct reg *r, const struct rebuild_opts *o,
                struct rebuild_stats *st, struct err *e);

/* ---------- rebuilds the server runs ---------- */

/* The connections rebuild_start opens (copied) and the model's bound
 * (rebuild_opts.memory_bytes). Call once at start. */
void rebuild_configure(const char *database_url, const char *redis_url, size_t memory_bytes);

/*
 * Starts a rebuild of projection name of generation r (which it holds until
 * done) in a thread of its own, on connections of its own, with the lock
 * taken before it returns (POST /admin/projections/{name}/rebuild).
 * Returns 0; ERR_NOT_FOUND for a projection r lacks; ERR_STATE_CONFLICT when
 * a rebuild of it runs (here or on another instance); ERR_UNAVAILABLE.
 */
int rebuild_start(struct reg *r, const char *name, struct err *e);

/* The last rebuild of (name, version) started here: {state rebuilding|done|
 * failed, phase, started_at, done, total, seconds, events?, error?}, or
 * NULL when none. A new reference. */
#include <jansson.h>
json_t *rebuild_status(const char *name, int version);

/* Stops the rebuilds running here before their switch (their live builds
 * stay) and waits for them; for shutdown. */
void rebuild_stop_all(void);

#endif
