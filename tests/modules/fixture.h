/* tests/modules/fixture.h — what the fixture modules of test_modules share:
 * a query that answers {"fixture": <module name>}, and a command that emits
 * nothing. Each fixture is one file defining FN_MODULE. */
#ifndef FIXTURE_H
#define FIXTURE_H

#include <cqrsd/fn.h>

__attribute__((unused)) static int fixture_run(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    (void)q;
    (void)e;
    *out = json_pack("{s:s}", "fixture", FIXTURE_NAME);
    return 0;
}

__attribute__((unused)) static void fixture_evolve(void *state, const struct fn_event *ev)
{
    (void)state;
    (void)ev;
}

__attribute__((unused)) static int fixture_decide(const void *state, int64_t version, const json_t *cmd,
                          struct fn_decision *d, struct err *e)
{
    (void)state;
    (void)version;
    (void)cmd;
    (void)d;
    (void)e;
    return 0;
}

#endif
