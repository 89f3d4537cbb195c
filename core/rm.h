/* core/rm.h — the read-model store: Redis through hiredis (DESIGN.md §4).
 *
 * A projection runner applies a batch of Redis writes together with the new
 * checkpoints of the projections it advances, as one Lua script (EVAL) that
 * first checks each stored checkpoint still equals the one the batch started
 * from. Redis runs a script atomically, so a crash leaves all or nothing, and
 * a batch retried after a lost reply fails the check instead of applying twice.
 * Checkpoint keys: "cqrsd:checkpoint:<projection>:v<version>", holding a
 * position token (core/es.h); absent = from the start.
 */
#ifndef CQRSD_RM_H
#define CQRSD_RM_H

#include <hiredis/hiredis.h>

#include "core/err.h"
#include "core/fn_int.h"

/* Connects to url "redis://host:port[/db]" with a connect/command timeout of
 * timeout_ms. Returns NULL and sets e (ERR_INVALID for a bad URL,
 * ERR_UNAVAILABLE otherwise). Caller frees with redisFree. */
redisContext *rm_connect(const char *url, int timeout_ms, struct err *e);

/* One projection's checkpoint move within a batch. Strings borrowed. */
struct rm_checkpoint {
    const char *projection;
    int version;
    const char *from; /* "" = no checkpoint yet */
    const char *to;
    const char *key;  /* NULL: "cqrsd:checkpoint:<projection>:v<version>"; else this key
                       * (the marker of a parked event applied once) */
};

/*
 * Applies b's writes and moves the checkpoints, atomically. Returns 0;
 * ERR_CONFLICT when a stored checkpoint differs from its `from` (nothing was
 * written: reload checkpoints and rebuild the batch); ERR_UNAVAILABLE when
 * Redis is unreachable or the reply was lost (the caller reconnects and
 * retries the same batch: the checkpoint check makes that safe); ERR_INTERNAL
 * when the script refused the batch because a write would fail (a key of
 * another type, a hash field that is no integer or would pass 2^62 in
 * magnitude): the script checks every write before the first, so nothing
 * was written.
 */
int rm_apply(redisContext *rc, const struct fn_batch *b, const struct rm_checkpoint *cps,
             size_t ncps, struct err *e);

/* Reads a projection's checkpoint into buf ("" when none). Returns 0 or
 * ERR_UNAVAILABLE. */
int rm_checkpoint_get(redisContext *rc, const char *projection, int version, char buf[33],
                      struct err *e);

/* Reads the checkpoints of the n projections of r (core/reg.h) with one MGET
 * into cps[i] ("" when none). Returns 0, ERR_UNAVAILABLE, or ERR_INTERNAL
 * for a checkpoint that is no position token. */
struct reg;
int rm_checkpoints_get(redisContext *rc, const struct reg *r, char (*cps)[33], struct err *e);

/* Deletes every key of "<projection>:v<version>:", its checkpoint and the
 * markers of its re-applied parked events ("cqrsd:parked:<projection>:
 * v<version>:*") in one script, so its runner starts again from the first
 * event. *deleted gets the
 * number of keys deleted. Returns 0 or ERR_UNAVAILABLE. */
int rm_reset(redisContext *rc, const char *projection, int version, long long *deleted,
             struct err *e);

#endif
