/* tests/unit/test_cases.c — the given/when/then cases of the e-commerce
 * module (tests/cases/), run by the platform's case runner (core/cases.c,
 * the same as `cqrsd cases`): one line per case, every failure with what
 * differs. Every command, reactor and timer must have a case folder.
 *
 * The modules are those of $CQRSD_MODULES (default build/modules/ecommerce.so),
 * the cases root $CQRSD_CASES (default tests/cases); projection and query
 * cases run on the Redis of $REDIS_URL, under keys of their own. Exit status:
 * the number of failed cases (1 when there is none to run).
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/cases.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/rtime.h"

int main(void)
{
    const char *env = getenv("CQRSD_CASES"), *mods = getenv("CQRSD_MODULES");
    const char *url = getenv("REDIS_URL");
    rtime_init();
    struct reg *r = NULL;
    struct err e = {0};
    if (reg_open(mods && *mods ? mods : "build/modules/ecommerce.so", &r, &e)) {
        fprintf(stderr, "test_cases: %s\n", e.msg);
        return 1;
    }
    redisContext *rc = url ? rm_connect(url, 5000, &e) : NULL;
    if (url && !rc)
        fprintf(stderr, "test_cases: %s\n", e.msg);
    int failed = cases_run(r, env && *env ? env : "tests/cases", rc, 0, 1, stdout);
    if (rc)
        redisFree(rc);
    reg_release(r);
    return failed < 0 ? 1 : failed;
}
