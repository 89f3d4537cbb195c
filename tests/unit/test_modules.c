/* tests/unit/test_modules.c — loading modules (core/reg.c): the e-commerce
 * module beside the fixture modules of tests/modules/, each built as a real
 * shared object and dlopen'd as `cqrsd serve` does.
 *
 * What it proves: a module of another ABI version, a duplicate function
 * name, a route that clashes with another module's or a built-in one, a
 * shared object that is no module, two modules of one name and a CQRSD_FN_*
 * setting naming no function are refused, with a message naming both
 * parties; `cqrsd serve` then exits 2 with that message; a route that only
 * shadows another is loaded and reported, and routing follows the rule; a
 * folder loads every module in it; released generations leave no copy.
 *
 * Needs CQRSD_ECOMMERCE_MODULE (the e-commerce module), CQRSD_TEST_MODULES
 * (the folder of fixture modules) and CQRSD_BIN (for serve), as make test
 * sets.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/http.h"
#include "core/reg.h"
#include "core/util.h"

static const char *ecom, *fixtures, *bin;

static char *fixture(const char *name)
{
    return xasprintf("%s/%s.so", fixtures, name);
}

/* reg_open(ecom + ":" + the fixtures named), which must fail with a message
 * containing every one of the NULL-terminated substrings. */
static void refused(const char *names, ...)
{
    char *spec = xstrdup(ecom);
    char *copy = xstrdup(names), *save = NULL;
    for (char *n = strtok_r(copy, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
        char *f = fixture(n), *s = xasprintf("%s:%s", spec, f);
        free(spec);
        free(f);
        spec = s;
    }
    free(copy);
    struct reg *r = NULL;
    struct err e = {0};
    int rc = reg_open(spec, &r, &e);
    if (rc == 0) {
        reg_release(r);
        fail_msg("%s loaded, expected a refusal", spec);
    }
    assert_int_equal(rc, ERR_INVALID);
    va_list ap;
    va_start(ap, names);
    const char *want;
    while ((want = va_arg(ap, const char *)))
        if (!strstr(e.msg, want))
            fail_msg("refusal of %s: message \"%s\" lacks \"%s\"", spec, e.msg, want);
    va_end(ap);
    print_message("refused: %s\n", e.msg);
    free(spec);
}

static void ecommerce_alone(void **state)
{
    (void)state;
    struct reg *r = NULL;
    struct err e = {0};
    assert_int_equal(reg_open(ecom, &r, &e), 0);
    assert_int_equal(r->nmods, 1);
    assert_string_equal(r->mods[0].desc->name, "ecommerce");
    assert_true(r->ncmds >= 7 && r->nqueries >= 9 && r->nprojs >= 5);
    assert_non_null(strstr(r->notes, "route GET /products/top of query product.top (module "
                                     "ecommerce) shadows GET /products/{sku} of query "
                                     "product.get (module ecommerce)"));
    /* the copy dlopen'd goes away with the generation */
    char *copy = xstrdup(r->mods[0].copy);
    struct stat st;
    assert_int_equal(stat(copy, &st), 0);
    reg_release(r);
    assert_int_not_equal(stat(copy, &st), 0);
    free(copy);
}

static void refusals(void **state)
{
    (void)state;
    refused("old_abi", "old_abi.so", "ABI version 1", "ABI version 3", NULL);
    refused("dup_command", "duplicate function name",
            "command cart.open (module ecommerce)", "command cart.open (module dup_command)",
            NULL);
    refused("route_clash", "route GET /carts/{id} of query clash.get (module route_clash)",
            "GET /carts/{cart_id} of query cart.get (module ecommerce)", NULL);
    refused("builtin_clash", "GET /healthz", "built-in", NULL);
    refused("not_a_module", "not_a_module.so", "is not a cqrsd module",
            "exports no symbol cqrsd_module", NULL);
    refused("shadow shadow", "two modules are named \"shadow\"", NULL);
    refused("nosuch", "nosuch.so", "No such file", NULL);
}

static void shadow_is_reported_and_routed(void **state)
{
    (void)state;
    char *f = fixture("shadow"), *spec = xasprintf("%s,%s", ecom, f);
    struct reg *r = NULL;
    struct err e = {0};
    assert_int_equal(reg_open(spec, &r, &e), 0);
    assert_int_equal(r->nmods, 2);
    assert_non_null(strstr(r->notes, "route GET /carts/featured of query shadow.featured (module "
                                     "shadow) shadows GET /carts/{cart_id} of query cart.get "
                                     "(module ecommerce)"));
    struct http_match m;
    char allow[64];
    assert_int_equal(http_route(r, "GET", "/carts/featured", &m, allow), 0);
    assert_ptr_equal(m.route->target, reg_query_find(r, "shadow.featured"));
    http_match_clear(&m);
    assert_int_equal(http_route(r, "GET", "/carts/feature", &m, allow), 0);
    assert_ptr_equal(m.route->target, reg_query_find(r, "cart.get"));
    http_match_clear(&m);
    reg_release(r);
    free(spec);
    free(f);
}

static void a_folder_loads_every_module(void **state)
{
    (void)state;
    char dir[] = "/tmp/cqrsd-test-modules.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *a = xasprintf("%s/ecommerce.so", dir), *b = xasprintf("%s/shadow.so", dir);
    char *f = fixture("shadow");
    char *cmd = xasprintf("cp '%s' '%s' && cp '%s' '%s'", ecom, a, f, b);
    assert_int_equal(system(cmd), 0);
    struct reg *r = NULL;
    struct err e = {0};
    assert_int_equal(reg_open(dir, &r, &e), 0);
    assert_int_equal(r->nmods, 2);
    assert_string_equal(r->mods[0].desc->name, "ecommerce");
    assert_string_equal(r->mods[1].desc->name, "shadow");
    reg_release(r);
    unlink(a);
    unlink(b);
    rmdir(dir);
    assert_int_equal(reg_open(dir, &r, &e), ERR_INVALID); /* gone */
    free(a);
    free(b);
    free(f);
    free(cmd);
}

static void limits_from_the_environment(void **state)
{
    (void)state;
    struct reg *r = NULL;
    struct err e = {0};
    setenv("CQRSD_FN_CART_ADD_ITEM_CONCURRENCY", "3", 1);
    setenv("CQRSD_FN_PRODUCT_GET_TIMEOUT_MS", "250", 1);
    assert_int_equal(reg_open(ecom, &r, &e), 0);
    assert_int_equal(reg_command_find(r, "cart.add_item")->limits.concurrency, 3);
    assert_int_equal(reg_command_find(r, "cart.add_item")->limits.retries,
                     REG_DEFAULT_COMMAND_RETRIES);
    assert_int_equal(reg_command_find(r, "cart.open")->limits.concurrency, 0);
    assert_int_equal(reg_query_find(r, "product.get")->limits.timeout_ms, 250);
    assert_int_equal(reg_query_find(r, "cart.get")->limits.timeout_ms, REG_DEFAULT_TIMEOUT_MS);
    assert_int_equal(reg_projection_find(r, "stats")->limits.retries, REG_DEFAULT_EVENT_RETRIES);
    reg_release(r);

    setenv("CQRSD_FN_CART_ADDITEM_CONCURRENCY", "3", 1);
    assert_int_equal(reg_open(ecom, &r, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "CQRSD_FN_CART_ADDITEM_CONCURRENCY names no function"));
    unsetenv("CQRSD_FN_CART_ADDITEM_CONCURRENCY");

    setenv("CQRSD_FN_CART_ADD_ITEM_CONCURRENCY", "many", 1);
    assert_int_equal(reg_open(ecom, &r, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "CQRSD_FN_CART_ADD_ITEM_CONCURRENCY must be an integer"));

    unsetenv("CQRSD_FN_CART_ADD_ITEM_CONCURRENCY");
    setenv("CQRSD_FN_CART_ADD_ITEM_SPEED", "3", 1);
    assert_int_equal(reg_open(ecom, &r, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "CQRSD_FN_CART_ADD_ITEM_SPEED"));
    unsetenv("CQRSD_FN_CART_ADD_ITEM_SPEED");
    unsetenv("CQRSD_FN_PRODUCT_GET_TIMEOUT_MS");

    /* digits only, and only the limits of the function's kind */
    static const char *const bad[][3] = {
        {"CQRSD_FN_CART_ADD_ITEM_CONCURRENCY", " 3", "must be an integer"},
        {"CQRSD_FN_CART_ADD_ITEM_CONCURRENCY", "+3", "must be an integer"},
        {"CQRSD_FN_CART_ADD_ITEM_CONCURRENCY", "99999999999", "must be an integer"},
        {"CQRSD_FN_CART_GET_RETRIES", "3", "a query has no RETRIES"},
        {"CQRSD_FN_CART_ADD_ITEM_BACKOFF_MS", "10", "a command has no BACKOFF_MS"},
        {"CQRSD_FN_STATS_CONCURRENCY", "2", "a projection has no CONCURRENCY"},
        {"CQRSD_FN_ORDER_PAYMENT_TIMEOUT_CONCURRENCY", "2", "a timer has no CONCURRENCY"},
        {"CQRSD_FN_ORDER_PAYMENT_TIMEOUT_DELAY_S", "0", "must be an integer from 1"},
        {"CQRSD_FN_CART_OPEN_DELAY_S", "5", "a command has no DELAY_S"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i][0], bad[i][1], 1);
        assert_int_equal(reg_open(ecom, &r, &e), ERR_INVALID);
        print_message("%s=%s: %s\n", bad[i][0], bad[i][1], e.msg);
        assert_non_null(strstr(e.msg, bad[i][2]));
        unsetenv(bad[i][0]);
    }
    setenv("CQRSD_FN_ORDER_PAYMENT_TIMEOUT_DELAY_S", "7", 1);
    setenv("CQRSD_FN_ORDER_PAYMENT_TIMEOUT_BACKOFF_MS", "70", 1);
    assert_int_equal(reg_open(ecom, &r, &e), 0);
    unsetenv("CQRSD_FN_ORDER_PAYMENT_TIMEOUT_DELAY_S");
    unsetenv("CQRSD_FN_ORDER_PAYMENT_TIMEOUT_BACKOFF_MS");
    assert_int_equal(r->ntimers, 2);
    int seen = 0;
    for (size_t i = 0; i < r->ntimers; i++)
        if (!strcmp(r->timers[i].t->name, "order.payment_timeout")) {
            assert_int_equal(r->timers[i].delay_s, 7);
            assert_int_equal(r->timers[i].limits.backoff_ms, 70);
            seen = 1;
        }
    assert_true(seen);
    reg_release(r);
}

static pid_t served_pid; /* of the last serve_status */

/* 1 when a folder of module copies of process pid is left in /tmp. */
static int copies_left(pid_t pid)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "cqrsd-modules.%ld.", (long)pid);
    DIR *d = opendir("/tmp");
    struct dirent *de;
    int left = 0;
    while (d && (de = readdir(d)))
        left |= !strncmp(de->d_name, pattern, strlen(pattern));
    if (d)
        closedir(d);
    return left;
}

/* Runs `cqrsd serve` with CQRSD_MODULES=spec and extra (NAME=VALUE or
 * NULL) and returns its exit status; *err gets its stderr (caller frees). */
static int serve_status(const char *spec, const char *extra, char **err)
{
    char path[] = "/tmp/cqrsd-test-serve.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        setenv("CQRSD_MODULES", spec, 1);
        setenv("CQRSD_HTTP_ADDR", "127.0.0.1:18097", 1); /* never reached: refused first */
        if (extra)
            putenv((char *)extra);
        execl(bin, bin, "serve", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    served_pid = pid;
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    *err = xstrdup(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void serve_exits_2_on_a_refusal(void **state)
{
    (void)state;
    char *f = fixture("route_clash"), *spec = xasprintf("%s:%s", ecom, f), *err = NULL;
    assert_int_equal(serve_status(spec, NULL, &err), 2);
    assert_non_null(strstr(err, "route GET /carts/{id} of query clash.get (module route_clash) "
                                "clashes with GET /carts/{cart_id} of query cart.get (module "
                                "ecommerce)"));
    free(err);
    assert_int_equal(serve_status(ecom, "CQRSD_FN_NOSUCH_RETRIES=2", &err), 2);
    assert_non_null(strstr(err, "CQRSD_FN_NOSUCH_RETRIES names no function"));
    free(err);
    assert_int_equal(serve_status(ecom, "CQRSD_HTTP_ADDR=localhost", &err), 2);
    assert_non_null(strstr(err, "CQRSD_HTTP_ADDR \"localhost\""));
    free(err);
    assert_false(copies_left(served_pid)); /* an exit takes its module copies along */
    /* dlopen's complaint names the module, not its private copy */
    char junk[] = "/tmp/cqrsd-test-junk.XXXXXX";
    int fd = mkstemp(junk);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a shared object\n", 20), 20);
    close(fd);
    assert_int_equal(serve_status(junk, NULL, &err), 2);
    print_message("%s", err);
    char *want = xasprintf("could not load module \"%s\": %s:", junk, junk);
    assert_non_null(strstr(err, want));
    assert_null(strstr(err, "cqrsd-modules."));
    free(want);
    free(err);
    unlink(junk);
    free(spec);
    free(f);
}

/* A port in use is an error (exit 1), not a port shared unnoticed. */
static void serve_exits_1_on_a_port_in_use(void **state)
{
    (void)state;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(18199)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s, 4), 0);
    char *err = NULL;
    assert_int_equal(serve_status(ecom, "CQRSD_HTTP_ADDR=127.0.0.1:18199", &err), 1);
    assert_non_null(strstr(err, "could not listen on 127.0.0.1:18199"));
    free(err);
    assert_false(copies_left(served_pid));
    close(s);
}


int main(void)
{
    ecom = getenv("CQRSD_ECOMMERCE_MODULE");
    fixtures = getenv("CQRSD_TEST_MODULES");
    bin = getenv("CQRSD_BIN");
    if (!ecom || !fixtures || !bin) {
        fprintf(stderr, "test_modules: needs CQRSD_ECOMMERCE_MODULE, CQRSD_TEST_MODULES and CQRSD_BIN "
                        "(run it with make test)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ecommerce_alone),
        cmocka_unit_test(refusals),
        cmocka_unit_test(shadow_is_reported_and_routed),
        cmocka_unit_test(a_folder_loads_every_module),
        cmocka_unit_test(limits_from_the_environment),
        cmocka_unit_test(serve_exits_2_on_a_refusal),
        cmocka_unit_test(serve_exits_1_on_a_port_in_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
