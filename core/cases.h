/* core/cases.h — the given/when/then runner of functions (core/cases.c):
 * `cqrsd cases DIR`, and tests/unit/test_cases.c on tests/cases/. */
#ifndef CQRSD_CASES_H
#define CQRSD_CASES_H

#include <hiredis/hiredis.h>
#include <stdio.h>

struct reg;

/*
 * Runs every case folder root/<function>/<case>/ against generation r,
 * printing "ok   <function>/<case>", "FAIL ..." with what differs, or
 * "skip ..." to out, then a count. Projection and query cases run on rc
 * (a Redis connection, may be NULL) under a key prefix of their own, removed
 * after each; without it they fail, or are skipped when skip_redis.
 * require_all: a command, reactor or timer without a case folder fails the
 * run, in every module that root has a case of. Returns the number of failures, or -1 when root holds no case.
 */
int cases_run(const struct reg *r, const char *root, redisContext *rc, int skip_redis,
              int require_all, FILE *out);

#endif
