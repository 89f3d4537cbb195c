/* tests/http/test_loyalty.c — the example module examples/loyalty loaded
 * beside the e-commerce one, in a server of its own on a database of its own
 * (cqrsd_loyalty, Redis db 5): a customer's paid orders earn points (its
 * reactor reacts to the e-commerce OrderPaid), a guest's earn none, points
 * are redeemed within the balance, and /admin/functions lists the module's
 * functions with their own counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/util.h"
#include "tests/lib/th.h"

#define ADDR "127.0.0.1:18097"
#define BASE "http://" ADDR

static char run[16], dburl[512], redisurl[512];
static char env_db[600], env_redis[600], env_mods[1200];
static pid_t server;

static long call(const char *method, const char *path, const char *body, json_t **out)
{
    return th_call_json(BASE, method, path, body, out);
}

/* An order of the given lines' total for customer (NULL: a guest), paid. */
static void paid_order(const char *id, const char *customer, int quantity, const char *price)
{
    char body[300], path[200];
    if (customer)
        snprintf(body, sizeof body, "{\"cart_id\":\"%s-%s\",\"customer_id\":\"%s-%s\"}", run, id,
                 run, customer);
    else
        snprintf(body, sizeof body, "{\"cart_id\":\"%s-%s\"}", run, id);
    assert_int_equal(call("POST", "/carts", body, NULL), 201);
    snprintf(path, sizeof path, "/carts/%s-%s/items", run, id);
    snprintf(body, sizeof body, "{\"sku\":\"L1\",\"quantity\":%d,\"unit_price\":\"%s\"}", quantity,
             price);
    assert_int_equal(call("POST", path, body, NULL), 200);
    snprintf(path, sizeof path, "/carts/%s-%s/checkout", run, id);
    json_t *co = NULL;
    assert_int_equal(call("POST", path, NULL, &co), 200);
    snprintf(path, sizeof path, "/orders/%s-%s/payments", run, id);
    snprintf(body, sizeof body, "{\"amount\":\"%s\"}",
             json_string_value(json_object_get(co, "total")));
    json_decref(co);
    assert_int_equal(call("POST", path, body, NULL), 200);
}

/* GET /loyalty/<run>-<customer> until its "orders" is n (at most 15 s). */
static json_t *balance_after(const char *customer, long long orders)
{
    char path[200];
    snprintf(path, sizeof path, "/loyalty/%s-%s", run, customer);
    for (int i = 0; i < 150; i++) {
        json_t *b = NULL;
        long st = call("GET", path, NULL, &b);
        if (st == 200 && json_integer_value(json_object_get(b, "orders")) == orders)
            return b;
        json_decref(b);
        usleep(100000);
    }
    fail_msg("%s never showed %lld rewarded orders", path, orders);
    return NULL;
}

static void paid_orders_earn_points(void **state)
{
    (void)state;
    paid_order("o1", "anna", 6, "23.19"); /* 139.14: 139 points */
    json_t *b = balance_after("anna", 1);
    assert_int_equal(json_integer_value(json_object_get(b, "balance")), 139);
    json_decref(b);
    paid_order("o2", "anna", 3, "0.999"); /* 2.997: 2 points */
    b = balance_after("anna", 2);
    assert_int_equal(json_integer_value(json_object_get(b, "balance")), 141);
    assert_int_equal(json_integer_value(json_object_get(b, "earned")), 141);
    json_decref(b);
    paid_order("g1", NULL, 1, "50"); /* a guest: no points anywhere */
    paid_order("o3", "bob", 1, "10");
    b = balance_after("bob", 1); /* handled after the guest's payment, in order */
    assert_int_equal(json_integer_value(json_object_get(b, "balance")), 10);
    json_decref(b);
    b = balance_after("anna", 2); /* the guest's payment credited nobody */
    assert_int_equal(json_integer_value(json_object_get(b, "balance")), 141);
    json_decref(b);
}

static void points_are_redeemed_within_the_balance(void **state)
{
    (void)state;
    char path[200];
    snprintf(path, sizeof path, "/loyalty/%s-anna/redemptions", run);
    json_t *r = NULL;
    assert_int_equal(call("POST", path, "{\"points\":100,\"reason\":\"voucher\"}", &r), 200);
    assert_int_equal(json_integer_value(json_object_get(r, "balance")), 41);
    json_decref(r);
    assert_int_equal(call("POST", path, "{\"points\":42}", &r), 422);
    assert_non_null(strstr(json_string_value(json_object_get(r, "detail")), "the balance is 41"));
    json_decref(r);
    assert_int_equal(call("POST", path, "{\"points\":\"7\"}", NULL), 400);
    snprintf(path, sizeof path, "/loyalty/%s-nobody/redemptions", run);
    assert_int_equal(call("POST", path, "{\"points\":1}", NULL), 404);
    th_wait_caught_up(BASE, 15);
    json_t *b = balance_after("anna", 2);
    assert_int_equal(json_integer_value(json_object_get(b, "balance")), 41);
    assert_int_equal(json_integer_value(json_object_get(b, "redeemed")), 100);
    json_decref(b);
}

static void the_module_is_listed(void **state)
{
    (void)state;
    json_t *all = th_get_json(BASE, "/admin/functions"), *f;
    size_t i;
    int seen = 0;
    json_array_foreach(json_object_get(all, "functions"), i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (strncmp(name, "loyalty", 7))
            continue;
        assert_string_equal(json_string_value(json_object_get(f, "module")), "loyalty");
        if (!strcmp(name, "loyalty.earn_on_payment")) {
            assert_string_equal(json_string_value(json_object_get(f, "kind")), "reactor");
            assert_true(json_integer_value(json_object_get(f, "invocations")) >= 4);
            assert_int_equal(json_integer_value(json_object_get(f, "errors")), 0);
        }
        if (!strcmp(name, "loyalty.earn"))
            assert_int_equal(json_integer_value(json_object_get(f, "invocations")), 3);
        seen++;
    }
    json_decref(all);
    assert_int_equal(seen, 5); /* reactor, 2 commands, projection, query */
}

static int setup(void **state)
{
    (void)state;
    th_isolated("cqrsd_loyalty", 5, dburl, redisurl);
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    snprintf(env_mods, sizeof env_mods, "CQRSD_MODULES=%s:%s", getenv("CQRSD_ECOMMERCE_MODULE"),
             getenv("CQRSD_LOYALTY_MODULE"));
    static const char *env[4];
    env[0] = env_db;
    env[1] = env_redis;
    env[2] = env_mods;
    server = th_start_server(ADDR, env);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_stop_server(server);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN") ||
        !getenv("CQRSD_ECOMMERCE_MODULE") || !getenv("CQRSD_LOYALTY_MODULE")) {
        fprintf(stderr, "test_loyalty: needs DATABASE_URL, REDIS_URL, CQRSD_BIN, "
                        "CQRSD_ECOMMERCE_MODULE and CQRSD_LOYALTY_MODULE (run it with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "y%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(paid_orders_earn_points),
        cmocka_unit_test(points_are_redeemed_within_the_balance),
        cmocka_unit_test(the_module_is_listed),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
