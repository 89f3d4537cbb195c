/* tests/http/test_webhooks.c — webhooks against a real server of its own (a
 * database of its own, cqrsd_hooks, Redis db 7) and a real receiver in this
 * process (libmicrohttpd on 127.0.0.1:18100) that fails (500), hangs (past
 * the server's 500 ms timeout) or accepts, as the test says. The server runs
 * with CQRSD_WEBHOOK_TIMEOUT_MS=500, CQRSD_WEBHOOK_ATTEMPTS=6,
 * CQRSD_WEBHOOK_BACKOFF_MS=100.
 *
 *   registration     201 with a secret shown once; 400 for an unknown event
 *                    type, a URL that is not http(s), has no host, a user,
 *                    a fragment or a non-ASCII byte, an unknown field; a
 *                    URL is stored normalized (scheme and host lower case)
 *   fails_hangs_recovers  every subscribed event reaches the receiver after
 *                    it failed and hung, signed (HMAC-SHA256 over "t.body"),
 *                    with its event id; nothing of another type is sent
 *   parked_then_retried  a receiver failing every attempt: the deliveries
 *                    are parked after 6; POST .../retry delivers them
 *   outbox_is_atomic an append rolled back leaves no delivery; committed,
 *                    its delivery is written in the same transaction
 *   deleted_webhook  a webhook deleted while a delivery is in flight: the
 *                    delivery stays parked ("the webhook was deleted"), is
 *                    not sent again, and cannot be retried (409); nothing
 *                    more is delivered to it; a path id that is not a
 *                    number names no webhook (404)
 *   slow_receiver_capped  a receiver that hangs on every delivery holds at
 *                    most 8 of them in flight, and another webhook's
 *                    deliveries go through meanwhile
 */
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "tests/lib/th.h"

#define ADDR "127.0.0.1:18099"
#define BASE "http://" ADDR
#define RECEIVER_PORT 18100

static char run[16], dburl[512], redisurl[512], secret[128];
static char env_db[600], env_redis[600];
static PGconn *pg;
static pid_t server;
static long long hook_id;

/* ---------- the receiver ---------- */

enum mode { ACCEPT, FAIL, HANG };
static atomic_int mode;

struct received {
    char event_id[40], type[64], signature[200], path[32];
    int attempt, answered; /* answered: the status it got, 0 when it hung */
    char *body;
};

static struct {
    pthread_mutex_t mu;
    struct received r[4096];
    size_t n;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};

struct upload {
    char *body;
    size_t len;
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    (void)cls, (void)method, (void)version;
    struct upload *u = *con_cls;
    if (!u) {
        *con_cls = xcalloc(1, sizeof *u);
        return MHD_YES;
    }
    if (*size) {
        u->body = xrealloc(u->body, u->len + *size + 1);
        memcpy(u->body + u->len, data, *size);
        u->len += *size;
        u->body[u->len] = '\0';
        *size = 0;
        return MHD_YES;
    }
    int m = strncmp(url, "/slow", 5) ? atomic_load(&mode) : HANG;
    struct received rec = {0};
    const char *h;
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cqrsd-Event-Id")))
        snprintf(rec.event_id, sizeof rec.event_id, "%s", h);
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cqrsd-Event-Type")))
        snprintf(rec.type, sizeof rec.type, "%s", h);
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cqrsd-Signature")))
        snprintf(rec.signature, sizeof rec.signature, "%s", h);
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cqrsd-Attempt")))
        rec.attempt = atoi(h);
    snprintf(rec.path, sizeof rec.path, "%s", url);
    rec.body = u->body ? u->body : xstrdup("");
    u->body = NULL;
    rec.answered = m == ACCEPT ? 200 : m == FAIL ? 500 : 0;
    pthread_mutex_lock(&R.mu);
    if (R.n < sizeof R.r / sizeof R.r[0])
        R.r[R.n++] = rec;
    else
        free(rec.body);
    pthread_mutex_unlock(&R.mu);
    if (m == HANG)
        sleep(2); /* past the server's 500 ms: it gives up on this attempt */
    struct MHD_Response *resp = MHD_create_response_from_buffer(2, "ok", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, m == FAIL ? 500 : 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    struct upload *u = *con_cls;
    if (u) {
        free(u->body);
        free(u);
    }
    *con_cls = NULL;
}

/* Requests the receiver got for event type and at path (NULL: any), answered
 * with status (-1: any). */
static int received_of(const char *type, const char *path, int status)
{
    int n = 0;
    pthread_mutex_lock(&R.mu);
    for (size_t i = 0; i < R.n; i++)
        n += (!type || !strcmp(R.r[i].type, type)) && (!path || !strcmp(R.r[i].path, path)) &&
             (status < 0 || R.r[i].answered == status);
    pthread_mutex_unlock(&R.mu);
    return n;
}

static int received(const char *type, int status)
{
    return received_of(type, NULL, status);
}

static void wait_received(const char *type, int status, int n, int seconds)
{
    for (int i = 0; i < seconds * 20 && received(type, status) < n; i++)
        usleep(50000);
    if (received(type, status) < n)
        fail_msg("the receiver got %d %s answered %d, not %d, in %d s", received(type, status),
                 type, status, n, seconds);
}

/* ---------- helpers ---------- */

static long call(const char *method, const char *path, const char *body, json_t **out)
{
    return th_call_json(BASE, method, path, body, out);
}

static void paid_order(const char *id)
{
    char body[200], path[200];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s-%s\",\"customer_id\":\"c1\"}", run, id);
    assert_int_equal(call("POST", "/carts", body, NULL), 201);
    snprintf(path, sizeof path, "/carts/%s-%s/items", run, id);
    assert_int_equal(call("POST", path, "{\"sku\":\"W\",\"quantity\":1,\"unit_price\":\"4\"}",
                          NULL),
                     200);
    snprintf(path, sizeof path, "/carts/%s-%s/checkout", run, id);
    assert_int_equal(call("POST", path, NULL, NULL), 200);
    snprintf(path, sizeof path, "/orders/%s-%s/payments", run, id);
    assert_int_equal(call("POST", path, "{\"amount\":\"4.00\"}", NULL), 200);
}


/* Checks a request's signature: v1 = hex HMAC-SHA256(secret, "<t>.<body>"). */
static void check_signature(const struct received *r)
{
    long long t;
    char v1[130];
    assert_int_equal(sscanf(r->signature, "t=%lld,v1=%129s", &t, v1), 2);
    assert_true(llabs((long long)time(NULL) - t) < 60);
    char *msg = xasprintf("%lld.%s", t, r->body);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, strlen(msg), mac, &len);
    free(msg);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned int i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    assert_string_equal(v1, hex);
    json_t *b = json_loads(r->body, 0, NULL);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "id")), r->event_id);
    assert_string_equal(json_string_value(json_object_get(b, "type")), r->type);
    assert_true(json_is_object(json_object_get(b, "data")));
    json_decref(b);
}

/* ---------- the tests ---------- */

static void registration(void **state)
{
    (void)state;
    char body[300];
    json_t *o = NULL;
    snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/hook\",\"event_types\":[\"OrderPaid\",\"CartCheckedOut\"]}",
             RECEIVER_PORT);
    assert_int_equal(call("POST", "/admin/webhooks", body, &o), 201);
    const char *s = json_string_value(json_object_get(o, "secret"));
    assert_non_null(s);
    assert_int_equal(strncmp(s, "whsec_", 6), 0);
    snprintf(secret, sizeof secret, "%s", s);
    hook_id = json_integer_value(json_object_get(o, "id"));
    json_decref(o);
    assert_int_equal(call("POST", "/admin/webhooks",
                          "{\"url\":\"http://x.example/h\",\"event_types\":[\"OrderPayed\"]}", &o),
                     400);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "\"OrderPayed\""));
    json_decref(o);
    assert_int_equal(call("POST", "/admin/webhooks",
                          "{\"url\":\"ftp://x.example/h\",\"event_types\":[\"OrderPaid\"]}", NULL),
                     400);
    assert_int_equal(call("POST", "/admin/webhooks",
                          "{\"url\":\"http://x.example/h\",\"event_types\":[\"OrderPaid\"],"
                          "\"events\":1}",
                          &o),
                     400);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "\"events\""));
    json_decref(o);
    static const char *const bad[][2] = {
        {"http://user:pw@x.example/h", "user"},
        {"http://x.example/h#top", "fragment"},
        {"http:///h", "host"},
        {"http://x.exa mple/h", "space"},
        {"http://x\u00e9.example/h", "non-ASCII"},
        {"x.example/h", "http"},
        {"", "1 to 2000"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "{\"url\":\"%s\",\"event_types\":[\"OrderPaid\"]}",
                 bad[i][0]);
        assert_int_equal(call("POST", "/admin/webhooks", body, &o), 400);
        const char *detail = json_string_value(json_object_get(o, "detail"));
        print_message("%s: %s\n", bad[i][0], detail);
        assert_non_null(strstr(detail, bad[i][1]));
        json_decref(o);
    }
    json_t *list = NULL;
    assert_int_equal(call("GET", "/admin/webhooks", NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "webhooks")), 1);
    assert_null(json_object_get(json_array_get(json_object_get(list, "webhooks"), 0), "secret"));
    json_decref(list);
    /* stored normalized; CartAbandoned comes from no step of these tests */
    assert_int_equal(call("POST", "/admin/webhooks",
                          "{\"url\":\"HTTPS://Shop.EXAMPLE/Hooks?a=1\",\"event_types\":"
                          "[\"CartAbandoned\"]}",
                          &o),
                     201);
    assert_string_equal(json_string_value(json_object_get(o, "url")),
                        "https://shop.example/Hooks?a=1");
    char path[64];
    snprintf(path, sizeof path, "/admin/webhooks/%lld",
             (long long)json_integer_value(json_object_get(o, "id")));
    json_decref(o);
    assert_int_equal(call("DELETE", path, NULL, NULL), 200);
}

static void fails_hangs_recovers(void **state)
{
    (void)state;
    atomic_store(&mode, FAIL);
    paid_order("a");
    wait_received("CartCheckedOut", 500, 2, 15);
    wait_received("OrderPaid", 500, 2, 15);
    atomic_store(&mode, HANG);
    wait_received("OrderPaid", 0, 1, 15);
    atomic_store(&mode, ACCEPT);
    wait_received("CartCheckedOut", 200, 1, 20);
    wait_received("OrderPaid", 200, 1, 20);
    th_wait_sql_int(pg, 2, 5, "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'");
    /* every request signed, with its event's id; later attempts say so. The
     * entries received are never changed: checked without the lock, so that
     * a failing check cannot leave the receiver's threads locked out */
    pthread_mutex_lock(&R.mu);
    size_t got = R.n;
    pthread_mutex_unlock(&R.mu);
    int later = 0;
    for (size_t i = 0; i < got; i++) {
        check_signature(&R.r[i]);
        later |= R.r[i].attempt >= 3;
        assert_true(!strcmp(R.r[i].type, "OrderPaid") || !strcmp(R.r[i].type, "CartCheckedOut"));
    }
    assert_true(later);
    /* the same event id in every attempt of one event */
    assert_int_equal(th_sql_int(pg, "SELECT count(DISTINCT e.event_id) FROM webhook_deliveries d JOIN "
                           "events e USING (stream_id, version)"),
                     2);
}

static void parked_then_retried(void **state)
{
    (void)state;
    atomic_store(&mode, FAIL);
    paid_order("b");
    th_wait_sql_int(pg, 2, 10, "SELECT count(*) FROM webhook_deliveries WHERE state = 'parked'");
    json_t *o = NULL;
    assert_int_equal(call("GET", "/admin/webhooks/deliveries?state=parked", NULL, &o), 200);
    json_t *list = json_object_get(o, "deliveries");
    assert_int_equal(json_array_size(list), 2);
    long long ids[2];
    for (size_t i = 0; i < 2; i++) {
        json_t *d = json_array_get(list, i);
        assert_int_equal(json_integer_value(json_object_get(d, "attempts")), 6);
        assert_int_equal(json_integer_value(json_object_get(d, "last_status")), 500);
        ids[i] = json_integer_value(json_object_get(d, "id"));
    }
    json_decref(o);
    atomic_store(&mode, ACCEPT);
    int before = received("OrderPaid", 200) + received("CartCheckedOut", 200);
    for (int i = 0; i < 2; i++) {
        char path[100];
        snprintf(path, sizeof path, "/admin/webhooks/deliveries/%lld/retry", ids[i]);
        assert_int_equal(call("POST", path, NULL, &o), 200);
        assert_string_equal(json_string_value(json_object_get(o, "state")), "pending");
        json_decref(o);
    }
    for (int i = 0; i < 100 && received("OrderPaid", 200) + received("CartCheckedOut", 200) <
                                   before + 2;
         i++)
        usleep(50000);
    assert_int_equal(received("OrderPaid", 200) + received("CartCheckedOut", 200), before + 2);
    th_wait_sql_int(pg, 4, 5, "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'");
    char path[100];
    snprintf(path, sizeof path, "/admin/webhooks/deliveries/%lld/retry", ids[0]);
    assert_int_equal(call("POST", path, NULL, NULL), 409);
    assert_int_equal(call("POST", "/admin/webhooks/deliveries/999999/retry", NULL, NULL), 404);
}

static void outbox_is_atomic(void **state)
{
    (void)state;
    char sid[64];
    snprintf(sid, sizeof sid, "order-%s-atomic", run);
    char *q = xasprintf("SELECT cqrsd_append(NULL, '', 200, '{}', '[{\"stream\": \"%s\", "
                        "\"category\": \"order\", \"expected\": 0, \"events\": [{\"type\": "
                        "\"OrderPaid\", \"data\": {}}]}]')",
                        sid);
    PQclear(PQexec(pg, "BEGIN"));
    PGresult *r = PQexec(pg, q);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM webhook_deliveries WHERE stream_id = '%s'", sid),
                     1);
    PQclear(PQexec(pg, "ROLLBACK"));
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM webhook_deliveries WHERE stream_id = '%s'", sid),
                     0);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM events WHERE stream_id = '%s'", sid), 0);
    free(q);
}

static void deleted_webhook(void **state)
{
    (void)state;
    /* a delivery in flight (the receiver hangs) when the webhook is deleted */
    atomic_store(&mode, HANG);
    int hung = received("OrderPaid", 0);
    paid_order("c0");
    wait_received("OrderPaid", 0, hung + 1, 15);
    char path[100];
    snprintf(path, sizeof path, "/admin/webhooks/%lld", hook_id);
    json_t *o = NULL;
    assert_int_equal(call("DELETE", path, NULL, &o), 200);
    assert_true(json_is_false(json_object_get(o, "active")));
    json_decref(o);
    int sent = received("OrderPaid", -1) + received("CartCheckedOut", -1);
    sleep(2); /* past the send's 500 ms timeout and several backoffs */
    atomic_store(&mode, ACCEPT);
    sleep(1);
    assert_int_equal(received("OrderPaid", -1) + received("CartCheckedOut", -1), sent);
    char sid[64];
    snprintf(sid, sizeof sid, "order-%s-c0", run);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM webhook_deliveries WHERE stream_id = '%s' "
                                    "AND state = 'parked' AND last_error = 'the webhook was "
                                    "deleted'",
                                sid),
                     1);
    long long id = th_sql_int(pg, "SELECT id FROM webhook_deliveries WHERE stream_id = '%s'", sid);
    snprintf(path, sizeof path, "/admin/webhooks/deliveries/%lld/retry", id);
    assert_int_equal(call("POST", path, NULL, &o), 409);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "deleted"));
    json_decref(o);

    long long before = th_sql_int(pg, "SELECT count(*) FROM webhook_deliveries");
    paid_order("c");
    sleep(1);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM webhook_deliveries"), before);
    assert_int_equal(call("DELETE", "/admin/webhooks/999999", NULL, NULL), 404);
    assert_int_equal(call("DELETE", "/admin/webhooks/abc", NULL, &o), 404);
    assert_string_equal(json_string_value(json_object_get(o, "detail")), "no webhook \"abc\"");
    json_decref(o);
    assert_int_equal(call("POST", "/admin/webhooks/deliveries/x1/retry", NULL, NULL), 404);
    assert_int_equal(call("GET", "/admin/webhooks/deliveries?limit=0", NULL, &o), 400);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "limit"));
    json_decref(o);
    assert_int_equal(call("GET", "/admin/webhooks/deliveries?state=&limit=", NULL, NULL), 200);
}

/* Registers a webhook for OrderPaid at path of the receiver; its id. */
static long long hook_at(const char *path)
{
    char body[200];
    snprintf(body, sizeof body,
             "{\"url\":\"http://127.0.0.1:%d%s\",\"event_types\":[\"OrderPaid\"]}",
             RECEIVER_PORT, path);
    json_t *o = NULL;
    assert_int_equal(call("POST", "/admin/webhooks", body, &o), 201);
    long long id = json_integer_value(json_object_get(o, "id"));
    json_decref(o);
    return id;
}

static void slow_receiver_capped(void **state)
{
    (void)state;
    atomic_store(&mode, ACCEPT);
    long long slow = hook_at("/slow"), fast = hook_at("/fast");
    for (int i = 0; i < 12; i++) {
        char id[16];
        snprintf(id, sizeof id, "s%d", i);
        paid_order(id);
    }
    /* the fast one gets all 12 while the slow one hangs; in flight to the
     * slow one (claimed, not recorded) never more than 8 */
    long long most = 0;
    /* sampled every 20 ms until the fast one has all, and for 1 s more */
    for (int i = 0, after = 0; i < 300 && after < 50; i++) {
        after += received_of(NULL, "/fast", 200) >= 12;
        long long n = th_sql_int(pg, "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = "
                                     "%lld AND claimed_until > now()",
                                 slow);
        if (n > most)
            most = n;
        usleep(20000);
    }
    print_message("fast receiver: %d delivered; slow one: at most %lld in flight, %d requests\n",
                  received_of(NULL, "/fast", 200), most, received_of(NULL, "/slow", -1));
    assert_int_equal(received_of(NULL, "/fast", 200), 12);
    assert_true(most >= 1);
    assert_true(most <= 8);
    assert_true(received_of(NULL, "/slow", -1) >= 1);
    char path[64];
    snprintf(path, sizeof path, "/admin/webhooks/%lld", slow);
    assert_int_equal(call("DELETE", path, NULL, NULL), 200);
    snprintf(path, sizeof path, "/admin/webhooks/%lld", fast);
    assert_int_equal(call("DELETE", path, NULL, NULL), 200);
}

static struct MHD_Daemon *receiver;

static int setup(void **state)
{
    (void)state;
    receiver = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD,
                                RECEIVER_PORT, NULL, NULL, on_request, NULL,
                                MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    if (!receiver)
        fail_msg("the receiver could not listen on port %d", RECEIVER_PORT);
    th_isolated("cqrsd_hooks", 7, dburl, redisurl);
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    static const char *env[6];
    env[0] = env_db;
    env[1] = env_redis;
    env[2] = "CQRSD_WEBHOOK_TIMEOUT_MS=500";
    env[3] = "CQRSD_WEBHOOK_ATTEMPTS=6";
    env[4] = "CQRSD_WEBHOOK_BACKOFF_MS=100";
    server = th_start_server(ADDR, env);
    pg = PQconnectdb(dburl);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(pg));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_stop_server(server);
    PQfinish(pg);
    MHD_stop_daemon(receiver);
    for (size_t i = 0; i < R.n; i++)
        free(R.r[i].body);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN")) {
        fprintf(stderr, "test_webhooks: needs DATABASE_URL, REDIS_URL and CQRSD_BIN (run it "
                        "with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "w%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registration),
        cmocka_unit_test(fails_hangs_recovers),
        cmocka_unit_test(parked_then_retried),
        cmocka_unit_test(outbox_is_atomic),
        cmocka_unit_test(deleted_webhook),
        cmocka_unit_test(slow_receiver_capped),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
