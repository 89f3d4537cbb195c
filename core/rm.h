/* core/rm.h — the read-model store: Redis through hiredis (DESIGN.md §4).
 *
 * A projection runner applies a batch of Redis writes together with the new
 * checkpoints of the projections it advances, as one Lua script (EVAL) that
 * first checks each stored checkpoint still equals the one the batch started
 * from. Redis runs a script atomically, so a crash leaves all or nothing, and
 * a batch retried after a lost reply fails the check instead of applying twice.
 * Checkpoint keys: "cqrsd:checkpoint:<projection>:v<version>", holding a
 * position token (core/es.h); absent = from the start.
 *
 * Builds (blue/green rebuilds, core/rebuild.h). A projection version's read
 * model lives in one build of its keyspace at a time: build 0 under
 * "<projection>:v<version>:", build b >= 1 under
 * "<projection>:v<version>@<b>:", each with its own checkpoint key (the one
 * above, with "@<b>" after it for b >= 1). The key
 * "cqrsd:live:<projection>:v<version>" names the build that serves (absent:
 * 0). A rebuild fills the next build beside the live one and switches the
 * pointer in one script once the new build has caught up; the old build's
 * checkpoint becomes "retired", so a batch still aimed at it fails its
 * checkpoint check instead of writing there.
 */
#ifndef CQRSD_RM_H
#define CQRSD_RM_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/err.h"
#include "core/fn_int.h"

/* A Redis URL, "redis://[[user]:password@]host[:port][/db]" (the redis URI
 * scheme, IANA provisional registration; userinfo percent-decoded as RFC
 * 3986 §2.1 says): port 6379 and database 0 when absent; db 0 to 15 (Redis's
 * default `databases 16`); user "" means the default user. */
#define RM_SENTINELS_MAX 8

/*
 * REDIS_URL, one of:
 *   redis://[[user]:password@]host[:port][/db]              one Redis (port 6379)
 *   redis-sentinel://[[user]:password@]host[:port][,host[:port]...][/db]#master
 *       a Sentinel set (port 26379, at most RM_SENTINELS_MAX) that names the
 *       current master of the set called master (the form of Lettuce's
 *       Redis URIs); the credentials are the master's, the Sentinels are
 *       asked without any (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/)
 * db is 0 to 15; user and password are percent-decoded.
 */
struct rm_url {
    char host[256]; /* redis://: the host; redis-sentinel://: the first Sentinel's */
    int port, db;
    char user[128], password[256];
    int has_password;
    int sentinel;      /* 1: hosts are Sentinels, master names the set */
    char master[128];
    int nhosts;
    struct {
        char host[256];
        int port;
    } hosts[RM_SENTINELS_MAX];
};

/* Parses url into *u. Returns 0, or ERR_INVALID with e naming REDIS_URL and
 * what is wrong. */
int rm_url_parse(const char *url, struct rm_url *u, struct err *e);

/* Connects to url (rm_url_parse) with a connect/command timeout of
 * timeout_ms, authenticates (AUTH [user] password) when it has a password,
 * and selects its database. With a Sentinel set: asks each Sentinel in turn
 * for the set's master (SENTINEL GET-MASTER-ADDR-BY-NAME) and takes the first
 * answer whose node calls itself master (ROLE; one refusing ROLE counts as
 * one), so a connection made after a failover goes to the promoted replica;
 * each Sentinel and node tried may take timeout_ms. Returns NULL and sets e
 * (ERR_INVALID for a bad URL, ERR_UNAVAILABLE otherwise, with Redis's reply
 * when AUTH is refused). Caller frees with redisFree. */
redisContext *rm_connect(const char *url, int timeout_ms, struct err *e);

/* 1 when a Redis error reply msg says the node cannot serve now but will
 * (LOADING, BUSY, READONLY: a replica, MASTERDOWN, NOREPLICAS, TRYAGAIN, OOM):
 * the writer waits and reconnects (through the Sentinels, after a failover)
 * instead of taking the write for a bad one. The code counts only where Redis
 * puts one: at the start of msg, or after "ERR Error running script ...: -"
 * (Redis 6's wrapping of a command failed in a script); a code inside a
 * REFUSED reply's text is not one. msg may be NULL (0). */
int rm_error_transient(const char *msg);

/* The key prefix of a build of a projection version (above), e.g.
 * "cart_view:v1:" or "cart_view:v1@2:". Caller frees. */
char *rm_keyspace(const char *projection, int version, long build);

/* The checkpoint key of a build: "cqrsd:checkpoint:<projection>:v<version>"
 * and "@<build>" after it for build >= 1. Caller frees. */
char *rm_checkpoint_key(const char *projection, int version, long build);

/* One projection's checkpoint move within a batch. Strings borrowed. */
struct rm_checkpoint {
    const char *projection;
    int version;
    const char *from; /* "" = no checkpoint yet */
    const char *to;
    const char *key;  /* NULL: rm_checkpoint_key(projection, version, build); else this
                       * key (the marker of a parked event applied once) */
    long build;       /* the build whose checkpoint moves (0 unless rebuilding) */
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

/* Reads the live build of a projection version and that build's checkpoint
 * into buf ("" when none), in one script. build may be NULL. Returns 0,
 * ERR_UNAVAILABLE, or ERR_INTERNAL for a checkpoint that is no position
 * token. */
int rm_checkpoint_get(redisContext *rc, const char *projection, int version, char buf[33],
                      long *build, struct err *e);

/* Reads, in one script (one round trip, one atomic view), the live build of
 * each projection of r (core/reg.h) into builds[i] (may be NULL) and that
 * build's checkpoint into cps[i] ("" when none); refreshes each projection's
 * rm_live cache. Returns 0, ERR_UNAVAILABLE, or ERR_INTERNAL for a
 * checkpoint that is no position token. */
struct reg;
int rm_checkpoints_get(redisContext *rc, const struct reg *r, char (*cps)[33], long *builds,
                       struct err *e);

/* Paused projections: hash cqrsd:paused, field "<name>:v<version>", value
 * the RFC 3339 time it was paused. The live runner of every instance skips
 * them (their checkpoint stays, queries answer from what they hold) until
 * they are resumed; a rebuild is not held back. */
#define RM_PAUSED_KEY "cqrsd:paused"

/* For each projection of r: paused_at[i] gets the time it was paused, ""
 * when it is not (paused_at has r->nprojs entries). Returns 0 or
 * ERR_UNAVAILABLE. */
int rm_paused_get(redisContext *rc, const struct reg *r, char (*paused_at)[40], struct err *e);

/* Pauses (pause 1: the time is now, kept when already paused) or resumes
 * (pause 0) a projection version. at (may be NULL) gets the time it is
 * paused since, "" when resumed. Returns 0 or ERR_UNAVAILABLE. */
int rm_pause_set(redisContext *rc, const char *projection, int version, int pause,
                 char at[40], struct err *e);

/* Reads the checkpoint of one given build (rebuilds) into buf ("" when none,
 * "retired" for a build switched out). Returns 0 or ERR_UNAVAILABLE. */
int rm_build_checkpoint_get(redisContext *rc, const char *projection, int version, long build,
                            char buf[33], struct err *e);

/* Deletes every build of the projection version (all its keys), every
 * checkpoint, the live pointer and the markers of its re-applied parked
 * events ("cqrsd:parked:<projection>:v<version>:*") in one script, so it
 * starts again in build 0 from the first event: the hard reset (tests that
 * compare with the live path). It blocks Redis for as long
 * as the deletion takes; `cqrsd replay` rebuilds beside the live build
 * instead (core/rebuild.h). *deleted (may be NULL) gets the number of read
 * model keys deleted. Returns 0 or ERR_UNAVAILABLE. */
int rm_reset(redisContext *rc, const char *projection, int version, long long *deleted,
             struct err *e);

/* Records that build `build` of the projection version is being written
 * (the set "cqrsd:builds:<projection>:v<version>"), so that rm_builds_drop
 * finds it if the rebuild writing it is interrupted. Returns 0 or
 * ERR_UNAVAILABLE. */
int rm_build_register(redisContext *rc, const char *projection, int version, long build,
                      struct err *e);

/* Deletes the keys and checkpoints of every build of the projection version
 * but `keep`: build 0 and the registered ones, each by SCAN MATCH of its
 * own keyspace and one UNLINK per slice (Redis keeps serving meanwhile); a
 * checkpoint marked "retired" is left to expire. *deleted (may be NULL)
 * gets the number of read model keys deleted. Returns 0 or
 * ERR_UNAVAILABLE. */
int rm_builds_drop(redisContext *rc, const char *projection, int version, long keep,
                   long long *deleted, struct err *e);

/* Switches the live build of the projection version from `from` to `to` when
 * build to's checkpoint has reached build from's (one script): returns 0
 * when switched, ERR_CONFLICT when build to is still behind (catch it up and
 * call again), ERR_INVALID when the live build is no longer `from` (another
 * rebuild switched it), ERR_UNAVAILABLE. Marks build from's checkpoint
 * "retired" for a day (see above). */
int rm_switch(redisContext *rc, const char *projection, int version, long from, long to,
              struct err *e);

/* How long a query may use the live build it last read: at most this long
 * after a switch, queries of another instance still read the old build, so
 * a rebuild waits twice this long (RM_SWITCH_GRACE_MS) before deleting it. */
#define RM_LIVE_REFRESH_MS 500
#define RM_SWITCH_GRACE_MS 2000

/* A generation's cache of one projection's live build, for queries. */
struct rm_live {
    atomic_long build;
    atomic_llong checked_ms; /* util_now_ms() of the last read; 0: never */
    atomic_int refreshing;
    /* a lower bound of the live build's checkpoint: raised by the local
     * runner after each batch it stores and by every read of the
     * checkpoints (rm_checkpoints_get); under mu */
    pthread_mutex_t mu;
    char checkpoint[33];
    atomic_llong checkpoint_ms; /* when a read of Redis last raised it; 0: never */
};

/* A new cache (build 0, no checkpoint); free with rm_live_free. */
struct rm_live *rm_live_new(void);
void rm_live_free(struct rm_live *live);

/* Raises live's checkpoint to cp when cp is newer ("" or NULL: no-op);
 * from_redis: cp was just read from Redis (stamps checkpoint_ms). */
void rm_live_raise(struct rm_live *live, const char *cp, int from_redis);

/* live's checkpoint into buf ("" when none known); returns checkpoint_ms. */
long long rm_live_checkpoint(struct rm_live *live, char buf[33]);

/* The build queries of the projection version read: live's, read again
 * through rc (may be NULL: the cached one) when older than
 * RM_LIVE_REFRESH_MS. A failed read keeps the cached build. live may be NULL
 * (build 0). */
long rm_live_build(redisContext *rc, const char *projection, int version, struct rm_live *live);

#endif
