/* tests/http/test_hostile.c — hostile HTTP input under the running server:
 *  - malformed, truncated and deeply nested JSON, numbers too large for any
 *    field, strings with \u0000, lone surrogates and invalid UTF-8, bodies
 *    over the limit (with Content-Length, and chunked), wrong Content-Types:
 *    each answered by a 4xx application/problem+json whose detail says what
 *    was wrong, with nothing stored, and the server still serving the next
 *    request on the same connection (except after 413/415, where it may
 *    close it);
 *  - a valid chunked body is accepted;
 *  - odd ids (spaces, UTF-8, SQL and Redis look-alikes) round-trip exactly;
 *    ids with '/', empty or over 200 bytes are refused;
 *  - SQL and Redis look-alike text is stored verbatim;
 *  - a legal but large return (1,114 lines) and a 200-line order;
 *  - a client that sends its body too slowly blocks nobody;
 *  - strict bodies: a price of "-0", an unknown field (a typo such as
 *    "customerid") are 400s naming them; a request with both
 *    Transfer-Encoding and Content-Length is answered 400 and its connection
 *    closed (RFC 9112 §6.1), nothing stored.
 * Runs under tools/test.sh: CQRSD_URL. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/util.h"

static const char *url;
static char run_id[9];
static CURL *conn; /* the one connection the hostile requests share */

struct reply {
    long status;
    long connects; /* CURLINFO_NUM_CONNECTS: 0 when the connection was reused */
    int curl_rc;
    char ctype[80];
    char *body;
    size_t len;
};

struct upload {
    const char *data;
    size_t len, off;
};

static size_t on_body(char *d, size_t s, size_t n, void *u)
{
    struct reply *r = u;
    r->body = xrealloc(r->body, r->len + s * n + 1);
    memcpy(r->body + r->len, d, s * n);
    r->len += s * n;
    r->body[r->len] = '\0';
    return s * n;
}

static size_t on_read(char *d, size_t s, size_t n, void *u)
{
    struct upload *up = u;
    size_t k = s * n;
    if (k > 4096)
        k = 4096; /* many chunks */
    if (k > up->len - up->off)
        k = up->len - up->off;
    memcpy(d, up->data + up->off, k);
    up->off += k;
    return k;
}

/* One request on handle c (reset first, so the connection is kept).
 * ctype NULL: application/json. chunked: the body goes with
 * Transfer-Encoding: chunked. len (SIZE_MAX: strlen). Caller frees body. */
static struct reply req_on(CURL *c, const char *method, const char *path, const char *ctype,
                           const char *body, size_t len, int chunked)
{
    struct reply r = {0};
    curl_easy_reset(c);
    char *u = xasprintf("%s%s", url, path);
    char *cth = xasprintf("Content-Type: %s", ctype ? ctype : "application/json");
    struct curl_slist *h = curl_slist_append(NULL, cth);
    struct upload up = {body, body && len == SIZE_MAX ? strlen(body) : len, 0};
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    if (body && chunked) {
        h = curl_slist_append(h, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)up.len);
    }
    if (strcmp(method, body ? "POST" : "GET"))
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    r.curl_rc = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &r.connects);
    char *ct = NULL;
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        snprintf(r.ctype, sizeof r.ctype, "%s", ct);
    curl_slist_free_all(h);
    free(cth);
    free(u);
    return r;
}

static struct reply req(const char *method, const char *path, const char *body)
{
    return req_on(conn, method, path, NULL, body, SIZE_MAX, 0);
}

/* A request on a fresh connection of its own. */
static struct reply req_fresh(const char *method, const char *path, const char *body)
{
    CURL *c = curl_easy_init();
    struct reply r = req_on(c, method, path, NULL, body, SIZE_MAX, 0);
    curl_easy_cleanup(c);
    return r;
}

/* Checks r is a problem of that status whose detail holds want (if any). */
static void expect_problem(struct reply *r, long status, const char *want, const char *what)
{
    if (r->status != status)
        fail_msg("%s: expected %ld, got %ld (curl %d) %.400s", what, status, r->status, r->curl_rc,
                 r->body ? r->body : "");
    if (strncmp(r->ctype, "application/problem+json", 24))
        fail_msg("%s: Content-Type \"%s\", expected application/problem+json", what, r->ctype);
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *detail = json_string_value(json_object_get(j, "detail"));
    if (!j || json_integer_value(json_object_get(j, "status")) != status || !detail || !*detail)
        fail_msg("%s: not a problem object with status %ld and a detail: %.400s", what, status,
                 r->body ? r->body : "");
    if (want && !strstr(detail, want))
        fail_msg("%s: detail \"%s\" does not mention \"%s\"", what, detail, want);
    json_decref(j);
}

/* Number of events in stream sid (0 when 404), read on the shared connection;
 * keep: the connection must have been reused. */
static size_t stream_events(const char *sid_escaped, int keep, const char *what)
{
    char *p = xasprintf("/streams/%s", sid_escaped);
    struct reply r = req("GET", p, NULL);
    free(p);
    if (r.status != 200 && r.status != 404)
        fail_msg("%s: the follow-up GET /streams/%s answered %ld (curl %d)", what, sid_escaped,
                 r.status, r.curl_rc);
    if (keep && r.connects != 0)
        fail_msg("%s: the follow-up request needed a new connection (NUM_CONNECTS %ld)", what,
                 r.connects);
    size_t n = 0;
    if (r.status == 200) {
        json_t *j = json_loads(r.body, 0, NULL);
        assert_non_null(j);
        n = json_array_size(json_object_get(j, "events"));
        json_decref(j);
    }
    free(r.body);
    return n;
}

static json_t *get_json(const char *path)
{
    struct reply r = req("GET", path, NULL);
    if (r.status != 200)
        fail_msg("GET %s: %ld %.400s", path, r.status, r.body ? r.body : "");
    json_t *j = json_loads(r.body, 0, NULL);
    free(r.body);
    assert_non_null(j);
    return j;
}

/* Polls GET path until 200 (projections lag), up to 30 s. */
static json_t *until_200(const char *path)
{
    for (int i = 0; i < 300; i++) {
        struct reply r = req("GET", path, NULL);
        if (r.status == 200) {
            json_t *j = json_loads(r.body, 0, NULL);
            free(r.body);
            assert_non_null(j);
            return j;
        }
        free(r.body);
        usleep(100000);
    }
    fail_msg("GET %s did not answer 200 within 30 s", path);
    return NULL;
}

static void wait_caught_up(void)
{
    for (int i = 0; i < 600; i++) {
        struct reply r = req("GET", "/readyz", NULL);
        json_t *h = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        free(r.body);
        int all = h != NULL && json_array_size(json_object_get(h, "projections")) > 0;
        json_t *p;
        size_t k;
        json_array_foreach(json_object_get(h, "projections"), k, p)
            all &= json_is_true(json_object_get(p, "caught_up"));
        json_decref(h);
        if (all)
            return;
        usleep(100000);
    }
    fail_msg("projections did not catch up within 60 s");
}

/* The newest readable event: unchanged when nothing was stored. */
static char *position(void)
{
    json_t *h = get_json("/readyz");
    char *p = xstrdup(json_string_value(json_object_get(h, "position")) ?: "");
    json_decref(h);
    return p;
}

/* Opens cart id (201) on the shared connection. */
static void open_cart(const char *id)
{
    json_t *b = json_pack("{s:s}", "cart_id", id);
    char *txt = json_dumps(b, JSON_COMPACT);
    struct reply r = req("POST", "/carts", txt);
    if (r.status != 201)
        fail_msg("POST /carts %s: %ld %.400s", txt, r.status, r.body ? r.body : "");
    free(r.body);
    free(txt);
    json_decref(b);
}

/* A hostile body for POST /carts/<cart>/items on the shared connection: a
 * problem of one of the statuses, nothing stored, connection kept. Returns
 * the status. */
static long hostile_item(const char *cart, const char *body, size_t len, long s1, long s2,
                         const char *want, const char *what)
{
    char *p = xasprintf("/carts/%s/items", cart), *sid = xasprintf("cart-%s", cart);
    size_t before = stream_events(sid, 0, what);
    struct reply r = req_on(conn, "POST", p, NULL, body, len, 0);
    long got = r.status;
    expect_problem(&r, got == s2 ? s2 : s1, want, what);
    free(r.body);
    size_t after = stream_events(sid, 1, what);
    if (after != before)
        fail_msg("%s: stream %s went from %zu to %zu events", what, sid, before, after);
    free(p);
    free(sid);
    return got;
}

static char *nested(char open, const char *inner, int depth)
{
    /* "[[[...[]...]]]" or {"a":{"a":...{}...}} */
    size_t il = strlen(inner);
    char *s = xcalloc(1, (size_t)depth * (il + 2) + 16), *w = s;
    for (int i = 0; i < depth; i++) {
        memcpy(w, inner, il);
        w += il;
    }
    *w++ = open;
    *w++ = open == '[' ? ']' : '}';
    for (int i = 0; i < depth; i++)
        *w++ = open == '[' ? ']' : '}';
    return s;
}

/* ---------- the cases ---------- */

static void bad_json(void **st)
{
    (void)st;
    char cart[32];
    snprintf(cart, sizeof cart, "json%s", run_id);
    open_cart(cart);
    hostile_item(cart, "{\"sku\" \"a\", quantity: 1}", SIZE_MAX, 400, 400, "malformed JSON",
                 "malformed JSON");
    hostile_item(cart, "{\"sku\":\"a\"", SIZE_MAX, 400, 400, "malformed JSON", "truncated JSON");
    char *a = nested('[', "[", 5000), *o = nested('{', "{\"a\":", 5000);
    hostile_item(cart, a, SIZE_MAX, 400, 400, "malformed JSON", "5,000 nested arrays");
    hostile_item(cart, o, SIZE_MAX, 400, 400, "malformed JSON", "5,000 nested objects");
    free(a);
    free(o);
    hostile_item(cart, "[]", SIZE_MAX, 400, 400, "object", "an array body");
    hostile_item(cart, "{\"sku\":\"a\",\"sku\":\"b\",\"quantity\":1,\"unit_price\":\"1\"}", SIZE_MAX,
                 400, 400, "malformed JSON", "duplicate keys");
}

static void huge_numbers(void **st)
{
    (void)st;
    char cart[32];
    snprintf(cart, sizeof cart, "num%s", run_id);
    open_cart(cart);
    long s;
    s = hostile_item(cart, "{\"sku\":\"n\",\"quantity\":99999999999999999999,\"unit_price\":\"1\"}",
                     SIZE_MAX, 400, 422, NULL, "quantity 99999999999999999999");
    print_message("quantity 99999999999999999999 -> %ld\n", s);
    s = hostile_item(cart, "{\"sku\":\"n\",\"quantity\":1e400,\"unit_price\":\"1\"}", SIZE_MAX, 400,
                     422, NULL, "quantity 1e400");
    print_message("quantity 1e400 -> %ld\n", s);
    s = hostile_item(cart,
                     "{\"sku\":\"n\",\"quantity\":1,\"unit_price\":\"99999999999999999999.99\"}",
                     SIZE_MAX, 400, 422, "unit_price", "unit_price 99999999999999999999.99");
    print_message("unit_price \"99999999999999999999.99\" -> %ld\n", s);
    s = hostile_item(cart, "{\"sku\":\"n\",\"quantity\":1000001,\"unit_price\":\"1\"}", SIZE_MAX,
                     422, 422, "quantity", "quantity 1000001");
}

static void bad_strings(void **st)
{
    (void)st;
    char cart[32];
    snprintf(cart, sizeof cart, "str%s", run_id);
    open_cart(cart);
    hostile_item(cart,
                 "{\"sku\":\"s\",\"description\":\"a\\u0000b\",\"quantity\":1,\"unit_price\":\"1\"}",
                 SIZE_MAX, 400, 400, "\\u0000", "\\u0000 in a string");
    hostile_item(cart,
                 "{\"sku\":\"s\",\"description\":\"a\\ud800\",\"quantity\":1,\"unit_price\":\"1\"}",
                 SIZE_MAX, 400, 400, "malformed JSON", "a lone surrogate");
    hostile_item(cart,
                 "{\"sku\":\"s\",\"description\":\"a\\udc00b\",\"quantity\":1,\"unit_price\":\"1\"}",
                 SIZE_MAX, 400, 400, "malformed JSON", "a lone low surrogate");
    hostile_item(cart,
                 "{\"sku\":\"s\",\"description\":\"a\xff\xfe\",\"quantity\":1,\"unit_price\":\"1\"}",
                 SIZE_MAX, 400, 400, "malformed JSON", "bytes 0xff 0xfe");
    hostile_item(cart,
                 "{\"sku\":\"s\",\"description\":\"a\xc0\xaf\",\"quantity\":1,\"unit_price\":\"1\"}",
                 SIZE_MAX, 400, 400, "malformed JSON", "overlong 0xc0 0xaf");
    hostile_item(cart,
                 "{\"sku\":\"s\xed\xa0\x80\",\"quantity\":1,\"unit_price\":\"1\"}",
                 SIZE_MAX, 400, 400, "malformed JSON", "an encoded surrogate 0xed 0xa0 0x80");
}

/* A raw TCP connection to the server of url (for what curl will not send):
 * the socket, with a receive timeout of timeout_s (0: none); host gets the
 * host part of url, for the Host header. */
static int open_raw(char host[64], int timeout_s)
{
    const char *hp = strstr(url, "://") ? strstr(url, "://") + 3 : url;
    snprintf(host, 64, "%.*s", (int)strcspn(hp, ":/"), hp);
    int port = hp[strcspn(hp, ":/")] == ':' ? atoi(hp + strcspn(hp, ":/") + 1) : 80;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, host, &sa.sin_addr), 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    if (timeout_s > 0) {
        struct timeval tv = {timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return fd;
}

static char *big_body(size_t size)
{
    char *b = xcalloc(1, size + 1);
    const char *head = "{\"sku\":\"big\",\"quantity\":1,\"unit_price\":\"1\",\"description\":\"";
    size_t hl = strlen(head);
    memcpy(b, head, hl);
    memset(b + hl, 'x', size - hl - 2);
    memcpy(b + size - 2, "\"}", 2);
    return b;
}

static void too_large(void **st)
{
    (void)st;
    char cart[32], p[64], sid[64];
    snprintf(cart, sizeof cart, "big%s", run_id);
    snprintf(p, sizeof p, "/carts/%s/items", cart);
    snprintf(sid, sizeof sid, "cart-%s", cart);
    open_cart(cart);
    size_t before = stream_events(sid, 0, "413 setup");
    size_t size = 1048576 + 4096;
    char *b = big_body(size);
    struct reply r = req_on(conn, "POST", p, NULL, b, size, 0);
    print_message("413 with Content-Length: curl rc %d\n", r.curl_rc);
    expect_problem(&r, 413, "over the limit", "a body over the limit with Content-Length");
    free(r.body);
    assert_int_equal(stream_events(sid, 0, "after 413 with Content-Length"), before);
    r = req_on(conn, "POST", p, NULL, b, size, 1);
    expect_problem(&r, 413, "over the limit", "a chunked body over the limit");
    free(r.body);
    assert_int_equal(stream_events(sid, 0, "after 413 chunked"), before);
    free(b);

    /* refused before it is read: only the headers are sent, the 413 comes */
    char host[64];
    int fd = open_raw(host, 5);
    char *hd = xasprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: 2000000\r\n\r\n",
                         p, host);
    assert_int_equal(send(fd, hd, strlen(hd), 0), (ssize_t)strlen(hd));
    free(hd);
    char in[2048];
    ssize_t n = recv(fd, in, sizeof in - 1, 0);
    close(fd);
    if (n <= 0)
        fail_msg("Content-Length: 2000000 with no body sent: no answer within 5 s");
    in[n] = '\0';
    if (strncmp(in, "HTTP/1.1 413", 12) || !strstr(in, "application/problem+json"))
        fail_msg("Content-Length: 2000000 with no body sent: expected a 413 problem at once, "
                 "got %.300s",
                 in);
    assert_int_equal(stream_events(sid, 0, "after 413 unread"), before);
}

static void chunked_ok(void **st)
{
    (void)st;
    char id[32], body[96], sid[64];
    snprintf(id, sizeof id, "chunk%s", run_id);
    snprintf(body, sizeof body, "{\"cart_id\":\"%s\",\"country\":\"United Kingdom\"}", id);
    snprintf(sid, sizeof sid, "cart-%s", id);
    struct reply r = req_on(conn, "POST", "/carts", NULL, body, SIZE_MAX, 1);
    if (r.status != 201)
        fail_msg("chunked POST /carts: %ld %.300s", r.status, r.body ? r.body : "");
    free(r.body);
    assert_int_equal(stream_events(sid, 1, "after a chunked 201"), 1);
    char p[64];
    snprintf(p, sizeof p, "/carts/%s/items", id);
    r = req_on(conn, "POST", p, NULL, "{\"sku\":\"c\",\"quantity\":2,\"unit_price\":\"0.5\"}",
               SIZE_MAX, 1);
    assert_int_equal(r.status, 200);
    free(r.body);
    assert_int_equal(stream_events(sid, 1, "after a chunked 200"), 2);
}

static void wrong_media_type(void **st)
{
    (void)st;
    char cart[32], p[64], sid[64];
    snprintf(cart, sizeof cart, "mt%s", run_id);
    snprintf(p, sizeof p, "/carts/%s/items", cart);
    snprintf(sid, sizeof sid, "cart-%s", cart);
    open_cart(cart);
    const char *types[] = {"text/plain", "application/x-www-form-urlencoded",
                           "application/jsonx", "text/json"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        struct reply r = req_on(conn, "POST", p, types[i],
                                "{\"sku\":\"m\",\"quantity\":1,\"unit_price\":\"1\"}", SIZE_MAX, 0);
        expect_problem(&r, 415, "Content-Type", types[i]);
        free(r.body);
        assert_int_equal(stream_events(sid, 0, types[i]), 1);
    }
}

/* POST /carts {"cart_id": id} is refused with 400 and stores nothing. */
static void id_refused(const char *id, const char *what)
{
    char *before = position();
    json_t *b = json_pack("{s:s}", "cart_id", id);
    char *txt = json_dumps(b, JSON_COMPACT);
    struct reply r = req("POST", "/carts", txt);
    expect_problem(&r, 400, "cart_id", what);
    free(r.body);
    char *after = position();
    if (strcmp(before, after))
        fail_msg("%s: the store moved from %s to %s", what, before, after);
    free(before);
    free(after);
    free(txt);
    json_decref(b);
}

static void id_round_trips(const char *id)
{
    open_cart(id);
    char *e = curl_easy_escape(conn, id, (int)strlen(id));
    char *p = xasprintf("/carts/%s", e);
    json_t *cart = until_200(p);
    const char *got = json_string_value(json_object_get(cart, "cart_id"));
    if (!got || strcmp(got, id))
        fail_msg("GET %s: cart_id \"%s\", expected \"%s\"", p, got ? got : "(none)", id);
    json_decref(cart);
    free(p);
    p = xasprintf("/streams/cart-%s", e);
    json_t *s = get_json(p);
    json_t *evs = json_object_get(s, "events");
    if (json_array_size(evs) != 1)
        fail_msg("GET %s: %zu events, expected 1", p, json_array_size(evs));
    json_t *data = json_object_get(json_array_get(evs, 0), "data");
    got = json_string_value(json_object_get(data, "cart_id"));
    if (!got || strcmp(got, id))
        fail_msg("GET %s: data.cart_id \"%s\", expected \"%s\"", p, got ? got : "(none)", id);
    char *sid = xasprintf("cart-%s", id);
    assert_string_equal(json_string_value(json_object_get(s, "stream")), sid);
    free(sid);
    json_decref(s);
    free(p);
    curl_free(e);
}

static void odd_ids(void **st)
{
    (void)st;
    char ids[7][80];
    snprintf(ids[0], sizeof ids[0], "a b %s", run_id);
    snprintf(ids[1], sizeof ids[1], "\xc3\xa9%s", run_id);                   /* é */
    snprintf(ids[2], sizeof ids[2], "\xe6\x97\xa5\xe6\x9c\xac%s", run_id);   /* 日本 */
    snprintf(ids[3], sizeof ids[3], "x'; DROP TABLE events; --%s", run_id);
    snprintf(ids[4], sizeof ids[4], "FLUSHALL%s", run_id);
    snprintf(ids[5], sizeof ids[5], "*%s", run_id);
    snprintf(ids[6], sizeof ids[6], "%%41+?#&=%s", run_id); /* URL syntax in the id */
    for (int i = 0; i < 7; i++)
        id_round_trips(ids[i]);
    char id300[301], slash[40];
    memset(id300, 'j', 300);
    memcpy(id300, run_id, 8);
    id300[300] = '\0';
    id_refused(id300, "a 300-byte cart_id");
    id_refused("", "an empty cart_id");
    snprintf(slash, sizeof slash, "a/%s", run_id);
    id_refused(slash, "a cart_id with '/'");
    snprintf(slash, sizeof slash, "tab\t%s", run_id);
    id_refused(slash, "a cart_id with a tab");
    /* %2F decodes to '/' and matches no route */
    char p[96];
    snprintf(p, sizeof p, "/carts/a%%2F%s", run_id);
    struct reply r = req("GET", p, NULL);
    expect_problem(&r, 404, "no route", "GET /carts/a%2F<id>");
    free(r.body);
    snprintf(p, sizeof p, "/carts/a%%2F%s/items", run_id);
    char *before = position();
    r = req("POST", p, "{\"sku\":\"s\",\"quantity\":1,\"unit_price\":\"1\"}");
    expect_problem(&r, 404, "no route", "POST /carts/a%2F<id>/items");
    free(r.body);
    char *after = position();
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* the connection survived all of it */
    r = req("GET", "/healthz", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.connects, 0);
    free(r.body);
}

/* A 200-byte id is legal, so its stream (cart-<id>, 205 bytes) must be
 * readable through /streams. */
static void id_200_bytes(void **st)
{
    (void)st;
    char id200[201];
    memset(id200, 'i', 200);
    memcpy(id200, run_id, 8);
    id200[200] = '\0';
    id_round_trips(id200);
}

static void verbatim_text(void **st)
{
    (void)st;
    char cart[32], p[64];
    snprintf(cart, sizeof cart, "txt%s", run_id);
    open_cart(cart);
    snprintf(p, sizeof p, "/carts/%s/items", cart);
    const char *texts[] = {"'); DELETE FROM events; --", "*3\r\n$3\r\nDEL\r\n",
                           "\"quoted\" \\ back\\slash $1 %s %n {}", "KEYS *\nFLUSHALL\n"};
    enum { N = sizeof texts / sizeof *texts };
    for (int i = 0; i < N; i++) {
        char sku[16];
        snprintf(sku, sizeof sku, "v%d", i);
        json_t *b = json_pack("{s:s, s:s, s:i, s:s}", "sku", sku, "description", texts[i],
                              "quantity", 1, "unit_price", "1");
        char *txt = json_dumps(b, JSON_COMPACT);
        struct reply r = req("POST", p, txt);
        if (r.status != 200)
            fail_msg("POST %s %s: %ld %.300s", p, txt, r.status, r.body ? r.body : "");
        free(r.body);
        free(txt);
        json_decref(b);
    }
    snprintf(p, sizeof p, "/streams/cart-%s", cart);
    json_t *s = get_json(p);
    json_t *evs = json_object_get(s, "events");
    assert_int_equal(json_array_size(evs), 1 + N);
    for (int i = 0; i < N; i++) {
        json_t *data = json_object_get(json_array_get(evs, (size_t)i + 1), "data");
        const char *d = json_string_value(json_object_get(data, "description"));
        if (!d || strcmp(d, texts[i]))
            fail_msg("description %d read back as \"%s\", sent \"%s\"", i, d ? d : "(none)",
                     texts[i]);
    }
    json_decref(s);
    /* and through the read model */
    snprintf(p, sizeof p, "/carts/%s", cart);
    wait_caught_up();
    json_t *c = get_json(p);
    json_t *lines = json_object_get(c, "lines");
    assert_int_equal(json_array_size(lines), N);
    for (int i = 0; i < N; i++) {
        const char *d = json_string_value(json_object_get(json_array_get(lines, (size_t)i), "description"));
        if (!d || strcmp(d, texts[i]))
            fail_msg("GET %s line %d: description \"%s\", sent \"%s\"", p, i, d ? d : "(none)",
                     texts[i]);
    }
    json_decref(c);
}

static void large_but_legal(void **st)
{
    (void)st;
    enum { RL = 1114, CL = 200 };
    char rid[32], sku[48];
    snprintf(rid, sizeof rid, "ret%s", run_id);
    json_t *lines = json_array();
    for (int i = 0; i < RL; i++) {
        snprintf(sku, sizeof sku, "r%s-%04d", run_id, i);
        json_array_append_new(lines, json_pack("{s:s, s:i, s:s}", "sku", sku, "quantity", 1,
                                               "unit_price", "0.001"));
    }
    json_t *b = json_pack("{s:s, s:o}", "return_id", rid, "lines", lines);
    char *txt = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    struct reply r = req("POST", "/returns", txt);
    free(txt);
    if (r.status != 201)
        fail_msg("POST /returns with %d lines: %ld %.400s", RL, r.status, r.body ? r.body : "");
    free(r.body);
    wait_caught_up();
    char p[96];
    snprintf(p, sizeof p, "/products/r%s-%04d", run_id, 777);
    json_t *prod = get_json(p);
    assert_int_equal(json_integer_value(json_object_get(prod, "returned_units")), 1);
    json_decref(prod);

    char cart[32];
    snprintf(cart, sizeof cart, "c200%s", run_id);
    open_cart(cart);
    snprintf(p, sizeof p, "/carts/%s/items", cart);
    for (int i = 0; i < CL; i++) {
        char body[128];
        snprintf(body, sizeof body,
                 "{\"sku\":\"k%s-%03d\",\"quantity\":1,\"unit_price\":\"0.001\"}", run_id, i);
        r = req("POST", p, body);
        if (r.status != 200)
            fail_msg("line %d: %ld %.300s", i, r.status, r.body ? r.body : "");
        free(r.body);
    }
    snprintf(p, sizeof p, "/carts/%s/checkout", cart);
    r = req("POST", p, "{}");
    if (r.status != 200)
        fail_msg("checkout of %d lines: %ld %.300s", CL, r.status, r.body ? r.body : "");
    json_t *co = json_loads(r.body, 0, NULL);
    free(r.body);
    assert_string_equal(json_string_value(json_object_get(co, "total")), "0.20");
    json_decref(co);
    snprintf(p, sizeof p, "/orders/%s", cart);
    json_t *o = until_200(p);
    assert_int_equal(json_array_size(json_object_get(o, "lines")), CL);
    assert_string_equal(json_string_value(json_object_get(o, "total")), "0.20");
    assert_int_equal(json_integer_value(json_object_get(o, "units")), CL);
    json_decref(o);
}

static void slow_body(void **st)
{
    (void)st;
    char host[64];
    int fds[8];
    fds[0] = open_raw(host, 0);
    char *hd = xasprintf("POST /carts HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: 20\r\n\r\n{\"car",
                         host);
    for (int i = 0; i < 8; i++) { /* more slow clients than the server has threads */
        if (i)
            fds[i] = open_raw(host, 0);
        assert_int_equal(send(fds[i], hd, strlen(hd), 0), (ssize_t)strlen(hd));
    }
    free(hd);
    usleep(200000);
    for (int i = 0; i < 3; i++) {
        struct reply r = req_fresh("GET", "/healthz", NULL);
        if (r.status != 200)
            fail_msg("GET /healthz beside slow clients: %ld (curl %d)", r.status, r.curl_rc);
        free(r.body);
        char body[64], sid[64];
        snprintf(body, sizeof body, "{\"cart_id\":\"slow%d%s\"}", i, run_id);
        r = req_fresh("POST", "/carts", body);
        if (r.status != 201)
            fail_msg("POST /carts beside slow clients: %ld (curl %d)", r.status, r.curl_rc);
        free(r.body);
        snprintf(sid, sizeof sid, "cart-slow%d%s", i, run_id);
        assert_int_equal(stream_events(sid, 0, "beside slow clients"), 1);
    }
    for (int i = 0; i < 8; i++)
        close(fds[i]);
}

/* Sends text on a new connection to the server and reads until the server
 * closes it or 3 s pass: the bytes read (owned), *eof 1 when it closed. */
static char *raw_exchange(const char *text, int *eof)
{
    char host[64];
    int fd = open_raw(host, 3);
    assert_int_equal(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
    size_t len = 0, cap = 65536;
    char *out = xmalloc(cap);
    *eof = 0;
    for (;;) {
        ssize_t n = recv(fd, out + len, cap - len - 1, 0);
        if (n == 0)
            *eof = 1;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len + 1 >= cap)
            break;
    }
    out[len] = '\0';
    close(fd);
    return out;
}

static void strict_bodies(void **st)
{
    (void)st;
    char cart[64];
    snprintf(cart, sizeof cart, "strict-%s", run_id);
    open_cart(cart);
    const char *zeros[] = {"-0", "-0.00", "-000.0"};
    for (size_t i = 0; i < sizeof zeros / sizeof *zeros; i++) {
        char *b = xasprintf("{\"sku\":\"Z\",\"quantity\":1,\"unit_price\":\"%s\"}", zeros[i]);
        hostile_item(cart, b, strlen(b), 400, 400, "is a negative zero", zeros[i]);
        free(b);
    }
    const char *typo = "{\"sku\":\"Z\",\"quantity\":1,\"unit_price\":\"1.00\",\"colour\":\"red\"}";
    hostile_item(cart, typo, strlen(typo), 400, 400, "unknown field \"colour\"", "unknown field");

    /* a typo in POST /carts: refused, and no guest cart made */
    char *sid = xasprintf("cart-%s-typo", cart);
    char *body = xasprintf("{\"cart_id\":\"%s-typo\",\"customerid\":\"17850\"}", cart);
    struct reply r = req("POST", "/carts", body);
    expect_problem(&r, 400, "unknown field \"customerid\" in the body of cart.open", "customerid");
    if (!strstr(r.body, "customer_id"))
        fail_msg("the problem does not name the fields cart.open takes: %s", r.body);
    free(r.body);
    assert_int_equal(stream_events(sid, 0, "customerid"), 0);

    /* both Transfer-Encoding and Content-Length: 400, then the connection closes */
    char *text = xasprintf("POST /carts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "%zx\r\n{\"cart_id\":\"%s-te\"}\r\n0\r\n\r\n"
                           "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                           strlen(cart) + 17, cart);
    int eof = 0;
    char *got = raw_exchange(text, &eof);
    if (strncmp(got, "HTTP/1.1 400 ", 13) || !strstr(got, "Transfer-Encoding and Content-Length"))
        fail_msg("TE and CL: %.600s", got);
    if (!strcasestr(got, "\r\nConnection: close\r\n") || !eof)
        fail_msg("TE and CL: the connection stayed open (eof %d): %.600s", eof, got);
    if (strstr(got, "\"alive\""))
        fail_msg("TE and CL: the request after it was served: %.600s", got);
    free(got);
    free(text);
    free(sid);
    sid = xasprintf("cart-%s-te", cart);
    assert_int_equal(stream_events(sid, 0, "TE and CL"), 0);
    free(sid);
    free(body);
}

/* A body trickling in, a byte every 0.5 s, never trips the idle timeout;
 * the server drops it once CQRSD_BODY_TIMEOUT has passed (tools/test.sh
 * sets 3 s), and goes on serving others. */
static void trickled_body_is_cut_off(void **st)
{
    (void)st;
    const char *bt = getenv("CQRSD_BODY_TIMEOUT");
    int limit = bt ? atoi(bt) : 30;
    if (limit < 1 || limit > 10) {
        print_message("CQRSD_BODY_TIMEOUT is %d s: too long to wait for here\n", limit);
        skip();
    }
    char host[64];
    int fd = open_raw(host, 0);
    char *hd = xasprintf("POST /carts HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: 200\r\n\r\n",
                         host);
    assert_int_equal(send(fd, hd, strlen(hd), MSG_NOSIGNAL), (ssize_t)strlen(hd));
    free(hd);
    int closed = 0, ticks;
    for (ticks = 0; ticks < (limit + 6) * 2 && !closed; ticks++) {
        if (send(fd, " ", 1, MSG_NOSIGNAL) != 1) {
            closed = 1;
            break;
        }
        usleep(500000);
        char b[256];
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            closed = 1;
    }
    close(fd);
    if (!closed)
        fail_msg("a body trickling for %d s was not cut off (CQRSD_BODY_TIMEOUT %d s)", ticks / 2,
                 limit);
    struct reply r = req_fresh("GET", "/healthz", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
}

int main(void)
{
    url = getenv("CQRSD_URL");
    if (!url) {
        fprintf(stderr, "test_hostile: run it with make test (needs CQRSD_URL)\n");
        return 1;
    }
    char u[37];
    util_uuid4(u);
    snprintf(run_id, sizeof run_id, "%.8s", u);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    conn = curl_easy_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_json),        cmocka_unit_test(huge_numbers),
        cmocka_unit_test(bad_strings),     cmocka_unit_test(too_large),
        cmocka_unit_test(chunked_ok),      cmocka_unit_test(wrong_media_type),
        cmocka_unit_test(odd_ids),         cmocka_unit_test(id_200_bytes),
        cmocka_unit_test(verbatim_text),
        cmocka_unit_test(large_but_legal), cmocka_unit_test(slow_body),
        cmocka_unit_test(trickled_body_is_cut_off),
        cmocka_unit_test(strict_bodies),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_easy_cleanup(conn);
    curl_global_cleanup();
    return rc;
}
