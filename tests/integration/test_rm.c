/* tests/integration/test_rm.c — rm_apply against a real Redis (REDIS_URL; the
 * test uses database 11 and flushes it): a batch and its checkpoints apply
 * together; a stale checkpoint writes nothing; a batch with a write that
 * would fail (a key of another type, an integer passing 2^62, a field that
 * is no integer) is refused before its first write, so a refused batch never
 * leaves half its writes behind to be applied again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/rm.h"
#include "core/util.h"

static redisContext *rc;

static int setup(void **st)
{
    (void)st;
    struct err e = {0};
    rc = rm_connect(getenv("REDIS_URL"), 5000, &e);
    if (!rc) {
        fprintf(stderr, "test_rm: %s\n", e.msg);
        return -1;
    }
    freeReplyObject(redisCommand(rc, "SELECT 11"));
    freeReplyObject(redisCommand(rc, "FLUSHDB"));
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    freeReplyObject(redisCommand(rc, "FLUSHDB"));
    redisFree(rc);
    return 0;
}

static long long hget_int(const char *key, const char *field)
{
    redisReply *r = redisCommand(rc, "HGET %s %s", key, field);
    long long v = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

static void checkpoint_is(const char *want)
{
    char cp[33];
    struct err e = {0};
    assert_int_equal(rm_checkpoint_get(rc, "t", 1, cp, NULL, &e), 0);
    assert_string_equal(cp, want);
}

#define POS1 "00000000000000010000000000000001"
#define POS2 "00000000000000010000000000000002"
#define POS10 "00000000000000010000000000000010"
#define POS11 "00000000000000010000000000000011"

static void applies_with_checkpoint(void **st)
{
    (void)st;
    struct fn_batch b;
    fn_batch_init(&b);
    fn_batch_set_prefix(&b, "t", 1);
    fn_hincrby(&b, "h", "n", 5);
    fn_hincrby(&b, "h", "n", 2);
    fn_hset(&b, "h", "s", "text");
    struct rm_checkpoint cp = {"t", 1, "", POS1, NULL, 0};
    struct err e = {0};
    assert_int_equal(rm_apply(rc, &b, &cp, 1, &e), 0);
    assert_int_equal(hget_int("t:v1:h", "n"), 7);
    checkpoint_is(POS1);
    /* the same batch again (a retry after a lost reply) writes nothing */
    assert_int_equal(rm_apply(rc, &b, &cp, 1, &e), ERR_CONFLICT);
    assert_int_equal(hget_int("t:v1:h", "n"), 7);
    checkpoint_is(POS1);
    fn_batch_clear(&b);
}

/* The batch script runs by its SHA1; a Redis that lost its scripts (SCRIPT
 * FLUSH, a restart) gets the text again, and the batch is applied once. */
static void applies_after_scripts_are_flushed(void **st)
{
    (void)st;
    struct fn_batch b;
    fn_batch_init(&b);
    fn_batch_set_prefix(&b, "t", 1);
    fn_hincrby(&b, "f", "n", 3);
    char from[33];
    struct err e = {0};
    assert_int_equal(rm_checkpoint_get(rc, "t", 1, from, NULL, &e), 0);
    struct rm_checkpoint cp = {"t", 1, from, POS10, NULL, 0};
    freeReplyObject(redisCommand(rc, "SCRIPT FLUSH"));
    assert_int_equal(rm_apply(rc, &b, &cp, 1, &e), 0);
    assert_int_equal(hget_int("t:v1:f", "n"), 3);
    checkpoint_is(POS10);
    /* the text sent again loaded it: the next batch goes by SHA1 */
    struct rm_checkpoint cp2 = {"t", 1, POS10, POS11, NULL, 0};
    assert_int_equal(rm_apply(rc, &b, &cp2, 1, &e), 0);
    assert_int_equal(hget_int("t:v1:f", "n"), 6);
    checkpoint_is(POS11);
    fn_batch_clear(&b);
}

/* Each bad batch: a good write first, then the write that would fail. */
static void refused_batches_write_nothing(void **st)
{
    (void)st;
    struct err e = {0};
    freeReplyObject(redisCommand(rc, "SET t:v1:str x"));
    freeReplyObject(redisCommand(rc, "HSET t:v1:big n 4611686018427387000"));
    freeReplyObject(redisCommand(rc, "HSET t:v1:h2 word abc"));
    for (int k = 0; k < 5; k++) {
        struct fn_batch b;
        fn_batch_init(&b);
        fn_batch_set_prefix(&b, "t", 1);
        fn_hincrby(&b, "h", "n", 100); /* would succeed */
        switch (k) {
        case 0: fn_hincrby(&b, "str", "f", 1); break;                  /* WRONGTYPE */
        case 1: fn_hincrby(&b, "big", "n", 1000); break;              /* passes 2^62 */
        case 2: fn_hincrby(&b, "h2", "word", 1); break;               /* not an integer */
        case 3: fn_sadd(&b, "h", "m"); break;                         /* a hash made a set */
        case 4: fn_hset(&b, "h3", "v", "x"); fn_hincrby(&b, "h3", "v", 1); break; /* made in-batch */
        }
        struct rm_checkpoint cp = {"t", 1, POS1, POS2, NULL, 0};
        int rcode = rm_apply(rc, &b, &cp, 1, &e);
        if (rcode != ERR_INTERNAL)
            fail_msg("bad batch %d: rm_apply returned %d (%s)", k, rcode, e.msg);
        assert_non_null(strstr(e.msg, "refused"));
        assert_int_equal(hget_int("t:v1:h", "n"), 7); /* the good write did not happen */
        checkpoint_is(POS1);
        fn_batch_clear(&b);
    }
    /* a DEL in the batch makes the key new again: then other types are fine */
    struct fn_batch b;
    fn_batch_init(&b);
    fn_batch_set_prefix(&b, "t", 1);
    fn_del(&b, "str");
    fn_hincrby(&b, "str", "f", 1);
    struct rm_checkpoint cp = {"t", 1, POS1, POS2, NULL, 0};
    assert_int_equal(rm_apply(rc, &b, &cp, 1, &e), 0);
    assert_int_equal(hget_int("t:v1:str", "f"), 1);
    checkpoint_is(POS2);
    fn_batch_clear(&b);
}

/* rm_switch moves the live build only when the new build has caught up: a
 * build behind the live one is ERR_CONFLICT and nothing moves; a live build
 * moved by someone else is ERR_INVALID; after a switch the old checkpoint is
 * retired, so a batch aimed at the old build fails its check. */
static void switch_only_when_caught_up(void **st)
{
    (void)st;
    struct err e = {0};
    freeReplyObject(redisCommand(rc, "FLUSHDB"));
    freeReplyObject(redisCommand(rc, "SET cqrsd:checkpoint:s:v1 %s", POS10));
    freeReplyObject(redisCommand(rc, "SET cqrsd:checkpoint:s:v1@1 %s", POS2));
    assert_int_equal(rm_switch(rc, "s", 1, 0, 1, &e), ERR_CONFLICT);
    char cp[33];
    long build = -1;
    assert_int_equal(rm_checkpoint_get(rc, "s", 1, cp, &build, &e), 0);
    assert_int_equal(build, 0);
    assert_string_equal(cp, POS10);
    freeReplyObject(redisCommand(rc, "SET cqrsd:checkpoint:s:v1@1 %s", POS11));
    assert_int_equal(rm_switch(rc, "s", 1, 0, 1, &e), 0);
    assert_int_equal(rm_checkpoint_get(rc, "s", 1, cp, &build, &e), 0);
    assert_int_equal(build, 1);
    assert_string_equal(cp, POS11);
    assert_int_equal(rm_build_checkpoint_get(rc, "s", 1, 0, cp, &e), 0);
    assert_string_equal(cp, "retired");
    struct fn_batch b;
    fn_batch_init(&b);
    fn_batch_set_keyspace(&b, "s", 1, 0);
    fn_hset(&b, "k", "f", "v");
    struct rm_checkpoint mv = {"s", 1, POS10, POS11, NULL, 0};
    assert_int_equal(rm_apply(rc, &b, &mv, 1, &e), ERR_CONFLICT);
    fn_batch_clear(&b);
    /* from a build that no longer serves */
    assert_int_equal(rm_switch(rc, "s", 1, 0, 2, &e), ERR_INVALID);
    freeReplyObject(redisCommand(rc, "FLUSHDB"));
}

int main(void)
{
    if (!getenv("REDIS_URL")) {
        fprintf(stderr, "test_rm: REDIS_URL is not set\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(applies_with_checkpoint),
        cmocka_unit_test(refused_batches_write_nothing),
        cmocka_unit_test(applies_after_scripts_are_flushed),
        cmocka_unit_test(switch_only_when_caught_up),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
