/* tests/http/test_api.c — the HTTP API end to end, against a running server
 * ($CQRSD_URL, e.g. http://127.0.0.1:18089) backed by PostgreSQL and Redis.
 *
 *   readme_session        open / add / remove / checkout / pay, then every
 *                         read endpoint, figures derived from what was sent
 *   rules                 the business rules of docs/events.md (422/404/409/400)
 *   protocol_errors       404 405 415 400 413 ... and the same easy handle
 *                         (keep-alive) still serving a good request afterwards
 *   keepalive_*           the connection itself survives a bodiless 404/405
 *   expected_version_*    Expected-Version forms, and one beyond int64 (400)
 *   cart_unit_price_*     a sku's lines at different prices show no unit_price
 *   idempotency           Idempotency-Key replays, byte-identical, also 5 at once
 *   idempotent_retry_*    a retry with Idempotency-Key and Expected-Version
 *                         gets the stored reply, not 409
 *   concurrency           curl multi: 20 adds on one cart, 10 racing adds
 *                         with Expected-Version, racing open/checkout/pay on
 *                         one id, 20 carts at once
 *   occurred_at           client times kept (with their offset) and counted on
 *                         the business day they happened
 *
 * Projections are asynchronous: before reading a read model the test waits
 * until /readyz shows every projection's checkpoint at or past the position
 * of the last command it sent. Every id carries a random per-run token so the
 * program can run again against the same database; global figures (summary,
 * daily, countries, rankings) are compared as differences or conditionally.
 *
 * Everything a test allocates is registered in a per-test arena freed by the
 * teardown, so a failing assertion (a longjmp) leaks nothing.
 */
#include <ctype.h>
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
#include <curl/curl.h>
#include <jansson.h>

#define TIMEOUT_S 60L
#define PROJECTION_WAIT_S 30

static const char *base_url;
static char tok[13];       /* random per-run token */
static CURL *shared;       /* the keep-alive handle most requests use */

/* ---------- arena: everything a test allocates ---------- */

enum gc_kind { GC_MEM, GC_JSON };
static struct gc_item {
    enum gc_kind kind;
    void *p;
} *gc;
static size_t gc_n, gc_cap;

static void *gc_add(enum gc_kind kind, void *p)
{
    if (!p)
        return p;
    if (gc_n == gc_cap) {
        gc_cap = gc_cap ? gc_cap * 2 : 256;
        gc = realloc(gc, gc_cap * sizeof *gc);
        if (!gc)
            abort();
    }
    gc[gc_n++] = (struct gc_item){kind, p};
    return p;
}

static void gc_free_all(void)
{
    for (size_t i = gc_n; i-- > 0;) {
        if (gc[i].kind == GC_JSON)
            json_decref(gc[i].p);
        else
            free(gc[i].p);
    }
    gc_n = 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        abort();
    va_end(ap);
    return gc_add(GC_MEM, s);
}

static json_t *gcj(json_t *j)
{
    return gc_add(GC_JSON, j);
}

/* ---------- failures with the caller's location ---------- */

static void die(const char *file, int line, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void die(const char *file, int line, const char *f, ...)
{
    char m[8192];
    va_list ap;
    va_start(ap, f);
    vsnprintf(m, sizeof m, f, ap);
    va_end(ap);
    print_error("%s:%d: %s\n", file, line, m);
    _fail(file, line);
}

static char *dump(const json_t *j)
{
    if (!j)
        return fmt("(null)");
    return gc_add(GC_MEM, json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY));
}

/* ---------- HTTP ---------- */

struct rq {
    const char *method;
    const char *path;          /* path and query */
    const char *body;          /* NULL: no body */
    size_t body_len;           /* 0: strlen(body) */
    const char *content_type;  /* NULL: application/json when there is a body; "": none */
    const char *headers[8];    /* extra header lines, NULL-terminated */
    int chunked;               /* send the body with Transfer-Encoding: chunked */
};

struct resp {
    CURLcode rc;
    char curl_err[CURL_ERROR_SIZE];
    long status;
    char *body;
    size_t len;
    char ctype[256];
    char allow[256];
    long connects; /* new connections this transfer needed (CURLINFO_NUM_CONNECTS) */
    json_t *json;
    /* upload state for chunked bodies */
    const char *up;
    size_t up_len, up_off;
    struct curl_slist *hl;
};

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
    struct resp *r = u;
    size_t add = sz * n;
    char *b = realloc(r->body, r->len + add + 1);
    if (!b)
        abort();
    memcpy(b + r->len, p, add);
    r->body = b;
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static void header_value(const char *p, size_t n, size_t namelen, char out[256])
{
    p += namelen;
    n -= namelen;
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' '))
        n--;
    snprintf(out, 256, "%.*s", (int)n, p);
}

static size_t on_header(char *p, size_t sz, size_t n, void *u)
{
    struct resp *r = u;
    size_t len = sz * n;
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) { /* a new response (after 100 Continue) */
        r->ctype[0] = r->allow[0] = '\0';
    } else if (len >= 13 && !strncasecmp(p, "Content-Type:", 13)) {
        header_value(p, len, 13, r->ctype);
    } else if (len >= 6 && !strncasecmp(p, "Allow:", 6)) {
        header_value(p, len, 6, r->allow);
    }
    return len;
}

static size_t on_upload(char *buf, size_t sz, size_t n, void *u)
{
    struct resp *r = u;
    size_t room = sz * n, left = r->up_len - r->up_off;
    size_t k = left < room ? left : room;
    if (k > 65536)
        k = 65536;
    memcpy(buf, r->up + r->up_off, k);
    r->up_off += k;
    return k;
}

static struct resp *resp_new(void)
{
    struct resp *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    return gc_add(GC_MEM, r);
}

/* Configures h for q (curl_easy_reset keeps h's live connections). */
static void setup(CURL *h, const struct rq *q, struct resp *r)
{
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, fmt("%s%s", base_url, q->path));
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    struct curl_slist *hl = NULL;
    if (q->body) {
        size_t len = q->body_len ? q->body_len : strlen(q->body);
        if (q->chunked) {
            r->up = q->body;
            r->up_len = len;
            r->up_off = 0;
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
            curl_easy_setopt(h, CURLOPT_READDATA, r);
            hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
        } else {
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
        }
        if (!q->content_type)
            hl = curl_slist_append(hl, "Content-Type: application/json");
        else if (!*q->content_type)
            hl = curl_slist_append(hl, "Content-Type:"); /* remove curl's default */
        else
            hl = curl_slist_append(hl, fmt("Content-Type: %s", q->content_type));
    }
    for (size_t i = 0; i < 8 && q->headers[i]; i++)
        hl = curl_slist_append(hl, q->headers[i]);
    if (hl)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    r->hl = hl;
}

static void finish(CURL *h, CURLcode rc, struct resp *r)
{
    r->rc = rc;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
    curl_slist_free_all(r->hl);
    r->hl = NULL;
    if (r->body) {
        gc_add(GC_MEM, r->body);
        r->json = gcj(json_loadb(r->body, r->len, 0, NULL));
    }
}

/* With CQRSD_API_RECORD set, each exchange is appended to that file as a
 * JSON line {method, path, status, content_type, body}: test_openapi.sh
 * checks them against GET /openapi.json. */
static void record(const struct rq *q, const struct resp *r)
{
    const char *file = getenv("CQRSD_API_RECORD");
    if (!file || !*file || r->rc != CURLE_OK)
        return;
    FILE *f = fopen(file, "a");
    if (!f)
        return;
    json_t *body = r->body ? json_stringn(r->body, r->len) : json_string("");
    json_t *line = json_pack("{s:s, s:s, s:I, s:s, s:o}", "method", q->method, "path", q->path,
                             "status", (json_int_t)r->status, "content_type", r->ctype, "body",
                             body ? body : json_string("(not UTF-8)"));
    char *txt = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (txt)
        fprintf(f, "%s\n", txt);
    free(txt);
    json_decref(line);
    fclose(f);
}

static struct resp *send_at(const char *file, int line, CURL *h, const struct rq *q)
{
    struct resp *r = resp_new();
    setup(h, q, r);
    finish(h, curl_easy_perform(h), r);
    record(q, r);
    if (r->rc != CURLE_OK)
        die(file, line, "%s %s: curl failed: %s (%s)", q->method, q->path,
            curl_easy_strerror(r->rc), r->curl_err);
    return r;
}

#define SEND(h, ...) send_at(__FILE__, __LINE__, (h), &(struct rq){__VA_ARGS__})
#define GET(p) SEND(shared, .method = "GET", .path = (p))
#define POST(p, b) SEND(shared, .method = "POST", .path = (p), .body = (b))
#define DEL(p) SEND(shared, .method = "DELETE", .path = (p))

/* Runs the n requests at once on n fresh handles (curl multi: n connections). */
static void parallel(size_t n, const struct rq *qs, struct resp **rs)
{
    CURLM *m = curl_multi_init();
    CURL **h = calloc(n, sizeof *h);
    if (!h)
        abort();
    for (size_t i = 0; i < n; i++) {
        rs[i] = resp_new();
        h[i] = curl_easy_init();
        setup(h[i], &qs[i], rs[i]);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, (char *)rs[i]);
        curl_multi_add_handle(m, h[i]);
    }
    int running = 1;
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK)
            break;
        if (running)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        finish(msg->easy_handle, msg->data.result, (struct resp *)priv);
    }
    for (size_t i = 0; i < n; i++) {
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(rs[i]->hl); /* when a transfer never finished */
        rs[i]->hl = NULL;
    }
    curl_multi_cleanup(m);
    free(h);
}

/* ---------- assertions on replies ---------- */

static int ctype_is(const struct resp *r, const char *want)
{
    size_t n = strlen(want);
    return !strncasecmp(r->ctype, want, n) && (r->ctype[n] == '\0' || r->ctype[n] == ';');
}

/* A success reply: status, application/json, a JSON object. */
static json_t *ok_at(const char *file, int line, const struct resp *r, long status)
{
    if (r->status != status)
        die(file, line, "expected HTTP %ld, got %ld: %s", status, r->status,
            r->body ? r->body : "");
    if (!ctype_is(r, "application/json"))
        die(file, line, "expected Content-Type application/json, got \"%s\"", r->ctype);
    if (!json_is_object(r->json))
        die(file, line, "reply is not a JSON object: %s", r->body ? r->body : "");
    if (!r->len || r->body[r->len - 1] != '\n')
        die(file, line, "reply does not end with a newline");
    return r->json;
}
#define OK(r, status) ok_at(__FILE__, __LINE__, (r), (status))

/* A problem reply (RFC 9457): status, application/problem+json, exactly
 * {type, title, status, detail}, detail naming the reason (substring). */
static json_t *problem_at(const char *file, int line, const struct resp *r, long status,
                          const char *why)
{
    if (r->status != status)
        die(file, line, "expected HTTP %ld, got %ld: %s", status, r->status,
            r->body ? r->body : "");
    if (!ctype_is(r, "application/problem+json"))
        die(file, line, "expected Content-Type application/problem+json, got \"%s\"", r->ctype);
    const json_t *j = r->json;
    if (!json_is_object(j) || json_object_size(j) != 4 ||
        !json_is_string(json_object_get(j, "type")) ||
        !json_is_string(json_object_get(j, "title")) ||
        !json_is_integer(json_object_get(j, "status")) ||
        !json_is_string(json_object_get(j, "detail")))
        die(file, line, "not a problem {type, title, status, detail}: %s", r->body ? r->body : "");
    if (json_integer_value(json_object_get(j, "status")) != status)
        die(file, line, "problem status field is not %ld: %s", status, r->body);
    if (strncmp(json_string_value(json_object_get(j, "type")), "/problems/", 10))
        die(file, line, "problem type is not /problems/...: %s", r->body);
    const char *detail = json_string_value(json_object_get(j, "detail"));
    if (why && !strcasestr(detail, why))
        die(file, line, "problem detail \"%s\" does not mention \"%s\"", detail, why);
    return r->json;
}
#define PROBLEM(r, status, why) problem_at(__FILE__, __LINE__, (r), (status), (why))

static void equal_at(const char *file, int line, const json_t *got, const json_t *want)
{
    if (!json_equal((json_t *)got, (json_t *)want))
        die(file, line, "JSON differs\n  got:  %s\n  want: %s", dump(got), dump(want));
}
#define EQUAL(got, want) equal_at(__FILE__, __LINE__, (got), (want))

static json_t *pack_at(const char *file, int line, const char *f, ...)
{
    json_error_t je;
    va_list ap;
    va_start(ap, f);
    json_t *j = json_vpack_ex(&je, 0, f, ap);
    va_end(ap);
    if (!j)
        die(file, line, "json_pack(\"%s\"): %s", f, je.text);
    return gcj(j);
}
#define PACK(...) pack_at(__FILE__, __LINE__, __VA_ARGS__)

static const json_t *get_at(const char *file, int line, const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        die(file, line, "no field \"%s\" in %s", key, dump(o));
    return v;
}
#define JGET(o, k) get_at(__FILE__, __LINE__, (o), (k))

static const char *str_at(const char *file, int line, const json_t *o, const char *key)
{
    const json_t *v = get_at(file, line, o, key);
    if (!json_is_string(v))
        die(file, line, "field \"%s\" is not a string in %s", key, dump(o));
    return json_string_value(v);
}
#define JSTR(o, k) str_at(__FILE__, __LINE__, (o), (k))

static int64_t int_at(const char *file, int line, const json_t *o, const char *key)
{
    const json_t *v = get_at(file, line, o, key);
    if (!json_is_integer(v))
        die(file, line, "field \"%s\" is not an integer in %s", key, dump(o));
    return (int64_t)json_integer_value(v);
}
#define JINT(o, k) int_at(__FILE__, __LINE__, (o), (k))

/* A money string ("12.00", "0.001", "-3.50": 2 or 3 fractional digits) as
 * thousandths. */
static int64_t money_at(const char *file, int line, const char *s)
{
    const char *p = s;
    int neg = 0;
    int64_t v = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!isdigit((unsigned char)*p))
        goto bad;
    while (isdigit((unsigned char)*p))
        v = v * 10 + (*p++ - '0');
    if (*p++ != '.')
        goto bad;
    int fd = 0;
    while (isdigit((unsigned char)*p) && fd < 3) {
        v = v * 10 + (*p++ - '0');
        fd++;
    }
    if (*p || fd < 2)
        goto bad;
    if (fd == 2)
        v *= 10;
    return neg ? -v : v;
bad:
    die(file, line, "\"%s\" is not a money string with 2 or 3 fractional digits", s);
    return 0;
}
#define MONEY(o, k) money_at(__FILE__, __LINE__, JSTR((o), (k)))

static int is_hex32(const char *s)
{
    if (strlen(s) != 32)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static int is_uuid4(const char *s)
{
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

/* YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM, as the server normalises times. */
static int is_rfc3339(const char *s)
{
    const char *pat = "dddd-dd-ddTdd:dd:dd";
    size_t n = strlen(s);
    if (n < 25)
        return 0;
    for (size_t i = 0; i < 19; i++)
        if (pat[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != pat[i])
            return 0;
    const char *p = s + 19;
    if (*p == '.') {
        for (int i = 1; i <= 6; i++)
            if (!isdigit((unsigned char)p[i]))
                return 0;
        p += 7;
    }
    return strlen(p) == 6 && (p[0] == '+' || p[0] == '-') && isdigit((unsigned char)p[1]) &&
           isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
           isdigit((unsigned char)p[5]);
}

/* The reply of an appending command: {<extra>..., stream, version, streams,
 * position}; checks its shape and returns the position. `extra` is an object
 * of the fields the command adds (may be NULL). */
static const char *cmd_at(const char *file, int line, const struct resp *r, long status,
                          const char *stream, int64_t version, const json_t *extra)
{
    json_t *j = ok_at(file, line, r, status);
    const json_t *pos = json_object_get(j, "position");
    if (!json_is_string(pos) || !is_hex32(json_string_value(pos)))
        die(file, line, "position is not a 32-hex token: %s", r->body);
    json_t *want = gcj(json_pack("{s:s, s:I, s:[{s:s, s:I}], s:O}", "stream", stream, "version",
                                 (json_int_t)version, "streams", "stream", stream, "version",
                                 (json_int_t)version, "position", pos));
    if (extra) /* the command's own fields; a two-stream command also gives its streams */
        json_object_update(want, (json_t *)extra);
    equal_at(file, line, j, want);
    return json_string_value(pos);
}
#define CMD(r, status, stream, version, extra)                                                    \
    cmd_at(__FILE__, __LINE__, (r), (status), (stream), (version), (extra))

/* ---------- projections ---------- */

/* Waits until every projection's checkpoint is at or past position. */
static void wait_at(const char *file, int line, const char *position)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *last = "";
    for (;;) {
        struct resp *r = SEND(shared, .method = "GET", .path = "/readyz");
        last = r->body ? r->body : "";
        const json_t *ps = json_object_get(r->json, "projections");
        if (r->status == 200 && json_is_array(ps) && json_array_size(ps) > 0) {
            size_t i, n = json_array_size(ps);
            for (i = 0; i < n; i++) {
                const char *cp = json_string_value(json_object_get(json_array_get(ps, i), "checkpoint"));
                if (!cp || strcmp(cp, position) < 0)
                    break;
            }
            if (i == n)
                return;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > PROJECTION_WAIT_S)
            die(file, line, "projections did not reach %s within %d s: %s", position,
                PROJECTION_WAIT_S, last);
        usleep(50000);
    }
}
#define WAIT(pos) wait_at(__FILE__, __LINE__, (pos))

/* Waits until every projection has seen everything committed so far. */
static void wait_all_at(const char *file, int line)
{
    struct resp *r = SEND(shared, .method = "GET", .path = "/readyz");
    json_t *j = ok_at(file, line, r, 200);
    const char *head = json_string_value(json_object_get(j, "position"));
    if (!head)
        die(file, line, "readyz has no position: %s", r->body);
    wait_at(file, line, head);
}
#define WAIT_ALL() wait_all_at(__FILE__, __LINE__)

/* ---------- small helpers ---------- */

static const char *cart_stream(const char *id)
{
    return fmt("cart-%s", id);
}

static const char *order_stream(const char *id)
{
    return fmt("order-%s", id);
}

/* The events of a stream, checked dense 1..n, with the expected types (a
 * NULL-terminated list) when given. */
static json_t *events_at(const char *file, int line, const char *stream, const char *const *types)
{
    struct resp *r = SEND(shared, .method = "GET", .path = fmt("/streams/%s", stream));
    json_t *j = ok_at(file, line, r, 200);
    if (!json_is_string(json_object_get(j, "stream")) ||
        strcmp(json_string_value(json_object_get(j, "stream")), stream))
        die(file, line, "stream field is not \"%s\": %s", stream, r->body);
    json_t *evs = json_object_get(j, "events");
    if (!json_is_array(evs))
        die(file, line, "events is not an array: %s", r->body);
    size_t n = json_array_size(evs);
    for (size_t i = 0; i < n; i++) {
        const json_t *ev = json_array_get(evs, i);
        if (json_integer_value(json_object_get(ev, "version")) != (json_int_t)(i + 1))
            die(file, line, "event %zu of %s has version %s, want %zu", i, stream,
                dump(json_object_get(ev, "version")), i + 1);
        const char *pos = json_string_value(json_object_get(ev, "position"));
        const char *at = json_string_value(json_object_get(ev, "recorded_at"));
        if (json_object_size(ev) != 7 || !pos || !is_hex32(pos) || !at || !is_rfc3339(at) ||
            !json_is_string(json_object_get(ev, "type")) ||
            !json_is_string(json_object_get(ev, "event_id")) ||
            !json_is_object(json_object_get(ev, "data")) ||
            !json_is_object(json_object_get(ev, "metadata")))
            die(file, line, "event %zu of %s is not {version, type, event_id, data, metadata, "
                "position, recorded_at}: %s", i, stream, dump(ev));
    }
    if (types) {
        size_t k = 0;
        while (types[k])
            k++;
        if (k != n)
            die(file, line, "stream %s has %zu events, want %zu: %s", stream, n, k, r->body);
        for (size_t i = 0; i < n; i++)
            if (strcmp(json_string_value(json_object_get(json_array_get(evs, i), "type")), types[i]))
                die(file, line, "event %zu of %s is %s, want %s", i + 1, stream,
                    json_string_value(json_object_get(json_array_get(evs, i), "type")), types[i]);
    }
    return evs;
}
#define EVENTS(stream, ...) events_at(__FILE__, __LINE__, (stream), (const char *const[]){__VA_ARGS__, NULL})
#define EVENTS_ANY(stream) events_at(__FILE__, __LINE__, (stream), NULL)

static const json_t *ev_data(const json_t *evs, size_t version)
{
    return json_object_get(json_array_get(evs, version - 1), "data");
}

/* Expected JSON with one field copied from the actual (after validating it). */
static void copy_field(json_t *want, const json_t *got, const char *key)
{
    json_t *v = json_object_get(got, key);
    if (v)
        json_object_set(want, key, v);
}

static const char *date_str(int64_t days)
{
    time_t t = (time_t)(days * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    char *b = fmt("0000-00-00");
    strftime(b, 11, "%Y-%m-%d", &tm);
    return b;
}

static int64_t days_of(int y, int m, int d)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 12};
    return (int64_t)timegm(&tm) / 86400;
}

/* Sums the figures of every day of a /stats/daily reply. */
struct day_sum {
    int64_t orders, units, returns, revenue, returns_value;
};

static struct day_sum daily_at(const char *file, int line, int64_t from, int64_t to)
{
    const char *f = date_str(from), *t = date_str(to);
    struct resp *r = SEND(shared, .method = "GET", .path = fmt("/stats/daily?from=%s&to=%s", f, t));
    json_t *j = ok_at(file, line, r, 200);
    struct day_sum s = {0};
    const json_t *days = json_object_get(j, "days");
    if (json_object_size(j) != 3 || !json_is_string(json_object_get(j, "from")) ||
        strcmp(json_string_value(json_object_get(j, "from")), f) ||
        !json_is_string(json_object_get(j, "to")) ||
        strcmp(json_string_value(json_object_get(j, "to")), t) || !json_is_array(days) ||
        json_array_size(days) != (size_t)(to - from + 1))
        die(file, line, "daily reply is not {from, to, days[%lld]}: %s", (long long)(to - from + 1),
            r->body);
    for (size_t i = 0; i < json_array_size(days); i++) {
        const json_t *d = json_array_get(days, i);
        const char *date = json_string_value(json_object_get(d, "date"));
        if (json_object_size(d) != 6 || !date || strcmp(date, date_str(from + (int64_t)i)))
            die(file, line, "day %zu is not {date: %s, orders, revenue, units, returns, "
                "returns_value}: %s", i, date_str(from + (int64_t)i), dump(d));
        s.orders += int_at(file, line, d, "orders");
        s.units += int_at(file, line, d, "units");
        s.returns += int_at(file, line, d, "returns");
        s.revenue += money_at(file, line, str_at(file, line, d, "revenue"));
        s.returns_value += money_at(file, line, str_at(file, line, d, "returns_value"));
    }
    return s;
}
#define DAILY(from, to) daily_at(__FILE__, __LINE__, (from), (to))

static void day_diff_at(const char *file, int line, struct day_sum a, struct day_sum b,
                        struct day_sum want)
{
    struct day_sum d = {b.orders - a.orders, b.units - a.units, b.returns - a.returns,
                        b.revenue - a.revenue, b.returns_value - a.returns_value};
    if (memcmp(&d, &want, sizeof d))
        die(file, line,
            "daily figures moved by orders %lld units %lld returns %lld revenue %lld "
            "returns_value %lld (thousandths); want %lld %lld %lld %lld %lld",
            (long long)d.orders, (long long)d.units, (long long)d.returns, (long long)d.revenue,
            (long long)d.returns_value, (long long)want.orders, (long long)want.units,
            (long long)want.returns, (long long)want.revenue, (long long)want.returns_value);
}
#define DAY_DIFF(a, b, ...) day_diff_at(__FILE__, __LINE__, (a), (b), (struct day_sum){__VA_ARGS__})

/* Checks a /products/top page: shape, order (score descending, sku
 * ascending), size, and where `sku` (with the given score) must be. */
static void top_at(const char *file, int line, const char *by, int limit, const char *sku,
                   int64_t score)
{
    const char *path = limit ? fmt("/products/top?by=%s&limit=%d", by, limit)
                             : fmt("/products/top?by=%s", by);
    int lim = limit ? limit : 10;
    struct resp *r = SEND(shared, .method = "GET", .path = path);
    json_t *j = ok_at(file, line, r, 200);
    const json_t *ps = json_object_get(j, "products");
    if (json_object_size(j) != 2 || !json_is_string(json_object_get(j, "by")) ||
        strcmp(json_string_value(json_object_get(j, "by")), by) || !json_is_array(ps))
        die(file, line, "not {by: %s, products}: %s", by, r->body);
    size_t n = json_array_size(ps);
    if (n > (size_t)lim)
        die(file, line, "%zu products, more than limit %d", n, lim);
    int found = 0;
    int64_t prev = 0;
    const char *prev_sku = NULL;
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_array_get(ps, i);
        if (json_object_size(p) != 4 || !json_is_string(json_object_get(p, "description")))
            die(file, line, "product is not {sku, description, units, revenue}: %s", dump(p));
        const char *s = str_at(file, line, p, "sku");
        int64_t units = int_at(file, line, p, "units");
        int64_t rev = money_at(file, line, str_at(file, line, p, "revenue"));
        int64_t sc = !strcmp(by, "units") ? units : rev;
        if (prev_sku && (sc > prev || (sc == prev && strcmp(s, prev_sku) <= 0)))
            die(file, line, "products not ordered by %s descending then sku: %s", by, r->body);
        prev = sc;
        prev_sku = s;
        if (!strcmp(s, sku)) {
            found = 1;
            if (sc != score)
                die(file, line, "%s has %s %lld in the ranking, want %lld", sku, by,
                    (long long)sc, (long long)score);
        }
    }
    if (!found && (n < (size_t)lim || prev < score || (prev == score && strcmp(prev_sku, sku) > 0)))
        die(file, line, "%s (%s %lld) should be in the top %d: %s", sku, by, (long long)score, lim,
            r->body);
}
#define TOP(by, limit, sku, score) top_at(__FILE__, __LINE__, (by), (limit), (sku), (score))

/* The entry of a country in /stats/countries, NULL when absent. */
static const json_t *country_at(const char *file, int line, const char *country)
{
    struct resp *r = GET("/stats/countries");
    json_t *j = ok_at(file, line, r, 200);
    const json_t *cs = json_object_get(j, "countries");
    if (json_object_size(j) != 1 || !json_is_array(cs))
        die(file, line, "not {countries: [...]}: %s", r->body);
    for (size_t i = 0; i < json_array_size(cs); i++) {
        const json_t *c = json_array_get(cs, i);
        const char *name = json_string_value(json_object_get(c, "country"));
        if (name && !strcmp(name, country))
            return c;
    }
    return NULL;
}
#define COUNTRY(c) country_at(__FILE__, __LINE__, (c))

/* ---------- fixtures ---------- */

static int group_setup(void **state)
{
    (void)state;
    base_url = getenv("CQRSD_URL");
    if (!base_url || !*base_url) {
        fprintf(stderr, "test_api: CQRSD_URL is not set\n");
        return -1;
    }
    unsigned char b[6] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(b, 1, sizeof b, f) != sizeof b) {
        unsigned x = (unsigned)time(NULL) ^ (unsigned)getpid() << 16;
        memcpy(b, &x, sizeof x);
    }
    if (f)
        fclose(f);
    for (int i = 0; i < 6; i++)
        snprintf(tok + 2 * i, 3, "%02x", b[i]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    shared = curl_easy_init();
    return shared ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    curl_easy_cleanup(shared);
    curl_global_cleanup();
    gc_free_all();
    free(gc);
    gc = NULL;
    gc_cap = 0;
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    gc_free_all();
    return 0;
}

/* ---------- 1. the README session ---------- */

static void readme_session(void **state)
{
    (void)state;
    const char *cart = fmt("c1-%s", tok), *cust = fmt("cust1-%s", tok);
    const char *country = fmt("Land-%s", tok);
    const char *A = fmt("SKU-%s-A", tok), *B = fmt("SKU-%s-B", tok), *C = fmt("SKU-%s-C", tok);
    const char *T = fmt("SKU-%s-T", tok);
    const char *cs = cart_stream(cart), *os = order_stream(cart);
    int64_t today = (int64_t)time(NULL) / 86400;

    WAIT_ALL();
    json_t *sum0 = OK(GET("/stats/summary"), 200);
    struct day_sum day0 = DAILY(today - 1, today + 1);

    /* open: with a cart_id, without one, and without any body */
    const char *p = CMD(POST("/carts", fmt("{\"cart_id\":\"%s\",\"customer_id\":\"%s\","
                                           "\"country\":\"%s\"}", cart, cust, country)),
                        201, cs, 1, PACK("{s:s}", "cart_id", cart));
    const char *prev = p;
    struct resp *r = POST("/carts", "{}");
    json_t *j = OK(r, 201);
    const char *uuid = JSTR(j, "cart_id");
    if (!is_uuid4(uuid))
        fail_msg("generated cart_id \"%s\" is not a UUID v4", uuid);
    CMD(r, 201, cart_stream(uuid), 1, PACK("{s:s}", "cart_id", uuid));
    r = SEND(shared, .method = "POST", .path = "/carts");
    j = OK(r, 201);
    const char *uuid2 = JSTR(j, "cart_id");
    if (!is_uuid4(uuid2) || !strcmp(uuid, uuid2))
        fail_msg("second generated cart_id \"%s\" is not a new UUID v4", uuid2);
    CMD(r, 201, cart_stream(uuid2), 1, PACK("{s:s}", "cart_id", uuid2));

    /* add items (A twice at one price, T twice: a million beads each), remove C */
    const char *items = fmt("/carts/%s/items", cart);
    struct {
        const char *body;
    } adds[] = {
        {fmt("{\"sku\":\"%s\",\"description\":\"Red mug\",\"quantity\":2,\"unit_price\":\"3.50\"}", A)},
        {fmt("{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":\"500000\"}", B)},
        {fmt("{\"sku\":\"%s\",\"description\":\"Tiny bead\",\"quantity\":1000000,\"unit_price\":\"0.001\"}", T)},
        {fmt("{\"sku\":\"%s\",\"description\":\"Red mug\",\"quantity\":1,\"unit_price\":\"3.5\"}", A)},
        {fmt("{\"sku\":\"%s\",\"description\":\"Tiny bead\",\"quantity\":1000000,\"unit_price\":\"0.001\"}", T)},
        {fmt("{\"sku\":\"%s\",\"description\":\"Pin\",\"quantity\":4,\"unit_price\":\"0.125\"}", C)},
    };
    for (size_t i = 0; i < sizeof adds / sizeof *adds; i++) {
        p = CMD(POST(items, adds[i].body), 200, cs, (int64_t)i + 2, NULL);
        if (strcmp(p, prev) <= 0)
            fail_msg("position %s does not follow %s", p, prev);
        prev = p;
    }
    p = CMD(DEL(fmt("/carts/%s/items/%s", cart, C)), 200, cs, 8, NULL);

    /* check out: 10.50 + 500000.00 + 2000.00 */
    r = POST(fmt("/carts/%s/checkout", cart), "{}");
    p = CMD(r, 200, cs, 9,
            PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", cart, "total", "502010.50",
                 "streams", "stream", cs, "version", 9, "stream", os, "version", 1));

    /* pay the exact total */
    p = CMD(POST(fmt("/orders/%s/payments", cart), "{\"amount\":\"502010.50\"}"), 200, os, 2, NULL);

    /* the streams */
    json_t *cev = EVENTS(cs, "CartOpened", "ItemAdded", "ItemAdded", "ItemAdded", "ItemAdded",
                         "ItemAdded", "ItemAdded", "ItemRemoved", "CartCheckedOut");
    json_t *oev = EVENTS(os, "OrderPlaced", "OrderPaid");
    const char *opened_at = JSTR(ev_data(cev, 1), "occurred_at");
    const char *placed_at = JSTR(ev_data(cev, 9), "occurred_at");
    assert_true(is_rfc3339(opened_at));
    assert_true(is_rfc3339(placed_at));
    json_t *want = PACK("{s:s, s:s, s:s, s:s}", "cart_id", cart, "customer_id", cust, "country",
                        country, "occurred_at", opened_at);
    EQUAL(ev_data(cev, 1), want);
    want = PACK("{s:s, s:s, s:s, s:i, s:s, s:s}", "cart_id", cart, "sku", A, "description",
                "Red mug", "quantity", 2, "unit_price", "3.50", "amount", "7.00");
    copy_field(want, ev_data(cev, 2), "occurred_at");
    EQUAL(ev_data(cev, 2), want);
    want = PACK("{s:s, s:s, s:s, s:i, s:s, s:s}", "cart_id", cart, "sku", B, "description", "",
                "quantity", 1, "unit_price", "500000.00", "amount", "500000.00");
    copy_field(want, ev_data(cev, 3), "occurred_at");
    EQUAL(ev_data(cev, 3), want);
    want = PACK("{s:s, s:s, s:s, s:i, s:s, s:s}", "cart_id", cart, "sku", T, "description",
                "Tiny bead", "quantity", 1000000, "unit_price", "0.001", "amount", "1000.00");
    copy_field(want, ev_data(cev, 4), "occurred_at");
    EQUAL(ev_data(cev, 4), want);
    want = PACK("{s:s, s:s, s:i, s:s}", "cart_id", cart, "sku", C, "quantity", 4, "amount", "0.50");
    copy_field(want, ev_data(cev, 8), "occurred_at");
    EQUAL(ev_data(cev, 8), want);
    want = PACK("{s:s, s:s, s:s, s:s}", "cart_id", cart, "order_id", cart, "total", "502010.50",
                "occurred_at", placed_at);
    EQUAL(ev_data(cev, 9), want);
    json_t *lines = PACK("[{s:s, s:s, s:i, s:s, s:s}, {s:s, s:s, s:i, s:s, s:s},"
                         " {s:s, s:s, s:i, s:s, s:s}, {s:s, s:s, s:i, s:s, s:s},"
                         " {s:s, s:s, s:i, s:s, s:s}]",
                         "sku", A, "description", "Red mug", "quantity", 2, "unit_price", "3.50", "amount", "7.00",
                         "sku", B, "description", "", "quantity", 1, "unit_price", "500000.00", "amount", "500000.00",
                         "sku", T, "description", "Tiny bead", "quantity", 1000000, "unit_price", "0.001", "amount", "1000.00",
                         "sku", A, "description", "Red mug", "quantity", 1, "unit_price", "3.50", "amount", "3.50",
                         "sku", T, "description", "Tiny bead", "quantity", 1000000, "unit_price", "0.001", "amount", "1000.00");
    want = PACK("{s:s, s:s, s:s, s:s, s:O, s:i, s:s, s:s}", "order_id", cart, "cart_id", cart,
                "customer_id", cust, "country", country, "lines", lines, "units", 2000004, "total",
                "502010.50", "occurred_at", placed_at);
    EQUAL(ev_data(oev, 1), want);
    want = PACK("{s:s, s:s, s:s}", "order_id", cart, "customer_id", cust, "amount", "502010.50");
    copy_field(want, ev_data(oev, 2), "occurred_at");
    EQUAL(ev_data(oev, 2), want);
    const char *paid_at = JSTR(ev_data(oev, 2), "occurred_at");

    /* read models, once the projections have seen the payment */
    WAIT(p);
    j = OK(GET(fmt("/orders/%s", cart)), 200);
    want = PACK("{s:s, s:s, s:s, s:s, s:s, s:O, s:i, s:s, s:s, s:s, s:s, s:s, s:n}", "order_id",
                cart, "cart_id", cart, "customer_id", cust, "country", country, "status", "paid",
                "lines", lines, "units", 2000004, "total", "502010.50", "paid", "502010.50",
                "refund_due", "0.00", "placed_at", placed_at, "paid_at", paid_at, "cancelled_at");
    EQUAL(j, want);

    j = OK(GET(fmt("/carts/%s", cart)), 200);
    want = PACK("{s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:[{s:s, s:s, s:i, s:s, s:s}, {s:s, s:s, "
                "s:i, s:s, s:s}, {s:s, s:s, s:i, s:s, s:s}], s:i, s:s}",
                "cart_id", cart, "status", "checked_out", "customer_id", cust, "country", country,
                "opened_at", opened_at, "order_id", cart, "abandoned_at", "lines",
                "sku", A, "description", "Red mug", "quantity", 3, "unit_price", "3.50", "amount", "10.50",
                "sku", B, "description", "", "quantity", 1, "unit_price", "500000.00", "amount", "500000.00",
                "sku", T, "description", "Tiny bead", "quantity", 2000000, "unit_price", "0.001", "amount", "2000.00",
                "units", 2000004, "total", "502010.50");
    EQUAL(j, want);

    j = OK(GET(fmt("/carts/%s", uuid)), 200);
    want = PACK("{s:s, s:s, s:n, s:n, s:n, s:n, s:[], s:i, s:s}", "cart_id", uuid, "status",
                "open", "customer_id", "country", "order_id", "abandoned_at", "lines", "units", 0,
                "total", "0.00");
    copy_field(want, j, "opened_at");
    assert_true(is_rfc3339(JSTR(j, "opened_at")));
    EQUAL(j, want);

    j = OK(GET(fmt("/customers/%s", cust)), 200);
    want = PACK("{s:s, s:i, s:s, s:i, s:i, s:i, s:s, s:s, s:s}", "customer_id", cust, "orders", 1,
                "revenue", "502010.50", "units", 2000004, "cancelled", 0, "returns", 0,
                "returns_value", "0.00", "first_order_at", placed_at, "last_order_at", placed_at);
    EQUAL(j, want);
    j = OK(GET(fmt("/customers/%s/orders", cust)), 200);
    want = PACK("{s:s, s:i, s:[{s:s, s:s, s:s, s:s}]}", "customer_id", cust, "total", 1, "orders",
                "order_id", cart, "status", "paid", "total", "502010.50", "placed_at", placed_at);
    EQUAL(j, want);

    EQUAL(OK(GET(fmt("/products/%s", A)), 200),
          PACK("{s:s, s:s, s:i, s:i, s:s, s:i, s:s}", "sku", A, "description", "Red mug", "orders",
               1, "units", 3, "revenue", "10.50", "returned_units", 0, "returns_value", "0.00"));
    EQUAL(OK(GET(fmt("/products/%s", B)), 200),
          PACK("{s:s, s:s, s:i, s:i, s:s, s:i, s:s}", "sku", B, "description", "", "orders", 1,
               "units", 1, "revenue", "500000.00", "returned_units", 0, "returns_value", "0.00"));
    EQUAL(OK(GET(fmt("/products/%s", T)), 200),
          PACK("{s:s, s:s, s:i, s:i, s:s, s:i, s:s}", "sku", T, "description", "Tiny bead",
               "orders", 1, "units", 2000000, "revenue", "2000.00", "returned_units", 0,
               "returns_value", "0.00"));
    PROBLEM(GET(fmt("/products/%s", C)), 404, "no product"); /* removed before checkout */

    TOP("units", 5, T, 2000000);
    TOP("revenue", 0, B, 500000000);

    json_t *sum1 = OK(GET("/stats/summary"), 200);
    json_t *d = PACK("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "orders",
                     (json_int_t)(JINT(sum1, "orders") - JINT(sum0, "orders")), "units",
                     (json_int_t)(JINT(sum1, "units") - JINT(sum0, "units")), "cancelled",
                     (json_int_t)(JINT(sum1, "cancelled") - JINT(sum0, "cancelled")), "returns",
                     (json_int_t)(JINT(sum1, "returns") - JINT(sum0, "returns")), "customers",
                     (json_int_t)(JINT(sum1, "customers") - JINT(sum0, "customers")), "revenue",
                     (json_int_t)(MONEY(sum1, "revenue") - MONEY(sum0, "revenue")),
                     "returns_value",
                     (json_int_t)(MONEY(sum1, "returns_value") - MONEY(sum0, "returns_value")));
    EQUAL(d, PACK("{s:i, s:i, s:i, s:i, s:i, s:I, s:i}", "orders", 1, "units", 2000004,
                  "cancelled", 0, "returns", 0, "customers", 1, "revenue", (json_int_t)502010500,
                  "returns_value", 0));
    assert_int_equal(json_object_size(sum1), 7);

    struct day_sum day1 = DAILY(today - 1, today + 1);
    DAY_DIFF(day0, day1, .orders = 1, .units = 2000004, .revenue = 502010500);

    const json_t *c = COUNTRY(country);
    if (!c)
        fail_msg("country %s is not in /stats/countries", country);
    EQUAL(c, PACK("{s:s, s:i, s:s, s:i, s:s, s:i}", "country", country, "orders", 1, "revenue",
                  "502010.50", "returns", 0, "returns_value", "0.00", "customers", 1));
}

/* ---------- 2. business rules ---------- */

static void rules(void **state)
{
    (void)state;
    const char *c1 = fmt("r1-%s", tok), *c2 = fmt("r2-%s", tok), *cust = fmt("cust2-%s", tok);
    const char *country = fmt("Rules-%s", tok);
    const char *A = fmt("SKU-%s-RA", tok), *B = fmt("SKU-%s-RB", tok);
    const char *items1 = fmt("/carts/%s/items", c1);

    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\",\"customer_id\":\"%s\",\"country\":\"%s\"}", c1,
                           cust, country)),
        201, cart_stream(c1), 1, PACK("{s:s}", "cart_id", c1));
    PROBLEM(POST("/carts", fmt("{\"cart_id\":\"%s\"}", c1)), 409, "already exists");
    PROBLEM(POST(fmt("/carts/%s/checkout", c1), "{}"), 422, "empty");

    /* value rules (422) and types (400) */
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":0,\"unit_price\":\"1.00\"}", A)), 422,
            "quantity must be a positive integer");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":-1,\"unit_price\":\"1.00\"}", A)), 422,
            "quantity must be a positive integer");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":1.5,\"unit_price\":\"1.00\"}", A)), 400,
            "quantity must be an integer");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":\"3\",\"unit_price\":\"1.00\"}", A)), 400,
            "quantity must be an integer");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":\"1.2345\"}", A)), 400,
            "unit_price");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":2.5}", A)), 400,
            "unit_price must be a decimal string");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":\"-1\"}", A)), 422,
            "unit_price must not be negative");
    PROBLEM(POST(items1, "{\"quantity\":1,\"unit_price\":\"1.00\"}"), 400, "sku is required");
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":1000001,\"unit_price\":\"1.00\"}", A)),
            422, "quantity must be at most");
    EVENTS(cart_stream(c1), "CartOpened"); /* nothing was appended */

    /* unknown cart, unknown item */
    const char *nocart = fmt("nocart-%s", tok);
    PROBLEM(POST(fmt("/carts/%s/items", nocart),
                 fmt("{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":\"1.00\"}", A)),
            404, "does not exist");
    PROBLEM(POST(fmt("/carts/%s/checkout", nocart), "{}"), 404, "does not exist");
    PROBLEM(DEL(fmt("/carts/%s/items/%s", nocart, A)), 404, "does not exist");
    PROBLEM(DEL(fmt("/carts/%s/items/%s", c1, A)), 404, "has no item");
    PROBLEM(GET(fmt("/carts/%s", nocart)), 404, "no cart");
    PROBLEM(GET(fmt("/streams/cart-%s", nocart)), 404, "no stream");

    /* removing a sku removes all its lines; a cart emptied again cannot check out */
    const char *c3 = fmt("r3-%s", tok);
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", c3)), 201, cart_stream(c3), 1,
        PACK("{s:s}", "cart_id", c3));
    for (int i = 0; i < 2; i++)
        CMD(POST(fmt("/carts/%s/items", c3),
                 fmt("{\"sku\":\"%s\",\"quantity\":%d,\"unit_price\":\"2.00\"}", B, i + 1)),
            200, cart_stream(c3), i + 2, NULL);
    CMD(DEL(fmt("/carts/%s/items/%s", c3, B)), 200, cart_stream(c3), 4, NULL);
    json_t *c3ev = EVENTS(cart_stream(c3), "CartOpened", "ItemAdded", "ItemAdded", "ItemRemoved");
    assert_int_equal(JINT(ev_data(c3ev, 4), "quantity"), 3);
    assert_string_equal(JSTR(ev_data(c3ev, 4), "amount"), "6.00");
    PROBLEM(DEL(fmt("/carts/%s/items/%s", c3, B)), 404, "has no item");
    PROBLEM(POST(fmt("/carts/%s/checkout", c3), "{}"), 422, "empty");

    /* checked out: no more changes */
    CMD(POST(items1, fmt("{\"sku\":\"%s\",\"description\":\"Green pot\",\"quantity\":2,"
                         "\"unit_price\":\"4.00\"}", A)),
        200, cart_stream(c1), 2, NULL);
    CMD(POST(fmt("/carts/%s/checkout", c1), NULL), 200, cart_stream(c1), 3,
        PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", c1, "total", "8.00", "streams",
             "stream", cart_stream(c1), "version", 3, "stream", order_stream(c1), "version", 1));
    PROBLEM(POST(items1, fmt("{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":\"1.00\"}", B)), 422,
            "checked out");
    PROBLEM(DEL(fmt("/carts/%s/items/%s", c1, A)), 422, "checked out");
    PROBLEM(POST(fmt("/carts/%s/checkout", c1), "{}"), 422, "already checked out");

    /* payments */
    const char *pay1 = fmt("/orders/%s/payments", c1);
    PROBLEM(POST(pay1, "{\"amount\":\"7.99\"}"), 422, "does not equal its total 8.00");
    PROBLEM(POST(pay1, "{\"amount\":\"80.00\"}"), 422, "does not equal");
    PROBLEM(POST(pay1, "{\"amount\":8}"), 400, "amount must be a decimal string");
    PROBLEM(POST(pay1, "{}"), 400, "amount is required");
    CMD(POST(pay1, "{\"amount\":\"8.00\"}"), 200, order_stream(c1), 2, NULL);
    PROBLEM(POST(pay1, "{\"amount\":\"8.00\"}"), 422, "already paid");

    /* cancel a paid order: the refund is what was paid */
    const char *cancel1 = fmt("/orders/%s/cancel", c1);
    const char *p = CMD(POST(cancel1, "{\"reason\":\"changed mind\"}"), 200, order_stream(c1), 3,
                        PACK("{s:s}", "refund_due", "8.00"));
    PROBLEM(POST(cancel1, "{}"), 422, "already cancelled");
    PROBLEM(POST(pay1, "{\"amount\":\"8.00\"}"), 422, "cancelled");
    json_t *oev = EVENTS(order_stream(c1), "OrderPlaced", "OrderPaid", "OrderCancelled");
    const char *placed_at = JSTR(ev_data(oev, 1), "occurred_at");
    json_t *want = PACK("{s:s, s:s, s:s, s:[{s:s, s:s, s:i, s:s, s:s}], s:i, s:s, s:s, s:s, s:s}",
                        "order_id", c1, "customer_id", cust, "country", country, "lines", "sku", A,
                        "description", "Green pot", "quantity", 2, "unit_price", "4.00", "amount",
                        "8.00", "units", 2, "total", "8.00", "placed_at", placed_at, "refund_due",
                        "8.00", "reason", "changed mind");
    copy_field(want, ev_data(oev, 3), "occurred_at");
    EQUAL(ev_data(oev, 3), want);

    /* cancel an unpaid order: nothing to refund; then it cannot be paid */
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\",\"customer_id\":\"%s\",\"country\":\"%s\"}", c2,
                           cust, country)),
        201, cart_stream(c2), 1, PACK("{s:s}", "cart_id", c2));
    CMD(POST(fmt("/carts/%s/items", c2),
             fmt("{\"sku\":\"%s\",\"quantity\":5,\"unit_price\":\"1\"}", B)),
        200, cart_stream(c2), 2, NULL);
    CMD(POST(fmt("/carts/%s/checkout", c2), "{}"), 200, cart_stream(c2), 3,
        PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", c2, "total", "5.00", "streams",
             "stream", cart_stream(c2), "version", 3, "stream", order_stream(c2), "version", 1));
    CMD(POST(fmt("/orders/%s/cancel", c2), NULL), 200, order_stream(c2), 2,
        PACK("{s:s}", "refund_due", "0.00"));
    PROBLEM(POST(fmt("/orders/%s/payments", c2), "{\"amount\":\"5.00\"}"), 422, "cancelled");
    PROBLEM(POST(fmt("/orders/%s/cancel", c2), "{}"), 422, "already cancelled");

    /* unknown order */
    const char *noorder = fmt("noorder-%s", tok);
    PROBLEM(POST(fmt("/orders/%s/payments", noorder), "{\"amount\":\"1.00\"}"), 404, "does not exist");
    PROBLEM(POST(fmt("/orders/%s/cancel", noorder), "{}"), 404, "does not exist");
    PROBLEM(GET(fmt("/orders/%s", noorder)), 404, "no order");
    PROBLEM(GET(fmt("/customers/nocust-%s", tok)), 404, "no customer");
    PROBLEM(GET(fmt("/customers/nocust-%s/orders", tok)), 404, "no customer");

    /* returns */
    PROBLEM(POST("/returns", fmt("{\"return_id\":\"ret0-%s\",\"lines\":[]}", tok)), 422, "no lines");
    PROBLEM(POST("/returns", fmt("{\"return_id\":\"ret0-%s\"}", tok)), 400, "lines is required");
    PROBLEM(POST("/returns", fmt("{\"return_id\":\"ret0-%s\",\"lines\":[{\"sku\":\"%s\","
                                 "\"quantity\":0,\"unit_price\":\"1.00\"}]}", tok, A)),
            422, "line 1: quantity must be a positive integer");
    PROBLEM(POST("/returns", fmt("{\"return_id\":\"ret0-%s\",\"lines\":[{\"sku\":\"%s\","
                                 "\"quantity\":1,\"unit_price\":\"-1\"}]}", tok, A)),
            422, "unit_price must not be negative");
    PROBLEM(GET(fmt("/streams/return-ret0-%s", tok)), 404, "no stream");
    const char *ret = fmt("ret-%s", tok);
    const char *retbody = fmt("{\"return_id\":\"%s\",\"customer_id\":\"%s\",\"country\":\"%s\","
                              "\"lines\":[{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":\"4.00\"},"
                              "{\"sku\":\"%s\",\"description\":\"Blue pot\",\"quantity\":1,"
                              "\"unit_price\":\"4.00\"}]}",
                              ret, cust, country, A, A);
    p = CMD(POST("/returns", retbody), 201, fmt("return-%s", ret), 1,
            PACK("{s:s}", "return_id", ret));
    PROBLEM(POST("/returns", retbody), 409, "already exists");

    WAIT(p);
    json_t *j = OK(GET(fmt("/orders/%s", c1)), 200);
    assert_string_equal(JSTR(j, "status"), "cancelled");
    assert_string_equal(JSTR(j, "paid"), "8.00");
    assert_string_equal(JSTR(j, "refund_due"), "8.00");
    assert_string_equal(JSTR(j, "cancelled_at"), JSTR(ev_data(oev, 3), "occurred_at"));
    j = OK(GET(fmt("/orders/%s", c2)), 200);
    assert_string_equal(JSTR(j, "status"), "cancelled");
    assert_string_equal(JSTR(j, "paid"), "0.00");
    assert_string_equal(JSTR(j, "refund_due"), "0.00");
    assert_true(json_is_null(JGET(j, "paid_at")));

    /* two orders placed, both cancelled (net zero), one return of 8.00 */
    j = OK(GET(fmt("/customers/%s", cust)), 200);
    want = PACK("{s:s, s:i, s:s, s:i, s:i, s:i, s:s}", "customer_id", cust, "orders", 2, "revenue",
                "0.00", "units", 0, "cancelled", 2, "returns", 1, "returns_value", "8.00");
    copy_field(want, j, "first_order_at");
    copy_field(want, j, "last_order_at");
    EQUAL(j, want);
    j = OK(GET(fmt("/customers/%s/orders", cust)), 200);
    assert_int_equal(JINT(j, "total"), 2);
    EQUAL(OK(GET(fmt("/products/%s", A)), 200),
          PACK("{s:s, s:s, s:i, s:i, s:s, s:i, s:s}", "sku", A, "description", "Blue pot",
               "orders", 1, "units", 0, "revenue", "0.00", "returned_units", 2, "returns_value",
               "8.00"));
    EQUAL(OK(GET(fmt("/products/%s", B)), 200),
          PACK("{s:s, s:s, s:i, s:i, s:s, s:i, s:s}", "sku", B, "description", "", "orders", 1,
               "units", 0, "revenue", "0.00", "returned_units", 0, "returns_value", "0.00"));
    const json_t *c = COUNTRY(country);
    if (!c)
        fail_msg("country %s is not in /stats/countries", country);
    EQUAL(c, PACK("{s:s, s:i, s:s, s:i, s:s, s:i}", "country", country, "orders", 2, "revenue",
                  "0.00", "returns", 1, "returns_value", "8.00", "customers", 1));

    /* a customer known only from a return */
    const char *rcust = fmt("cust2r-%s", tok);
    p = CMD(POST("/returns", fmt("{\"return_id\":\"ret2-%s\",\"customer_id\":\"%s\",\"lines\":"
                                 "[{\"sku\":\"%s\",\"quantity\":3,\"unit_price\":\"0.333\"}]}",
                                 tok, rcust, B)),
            201, fmt("return-ret2-%s", tok), 1, PACK("{s:s}", "return_id", fmt("ret2-%s", tok)));
    WAIT(p);
    EQUAL(OK(GET(fmt("/customers/%s", rcust)), 200),
          PACK("{s:s, s:i, s:s, s:i, s:i, s:i, s:s, s:n, s:n}", "customer_id", rcust, "orders", 0,
               "revenue", "0.00", "units", 0, "cancelled", 0, "returns", 1, "returns_value",
               "0.999", "first_order_at", "last_order_at"));
    EQUAL(OK(GET(fmt("/customers/%s/orders", rcust)), 200),
          PACK("{s:s, s:i, s:[]}", "customer_id", rcust, "total", 0, "orders"));
}

/* ---------- 3. protocol errors on one keep-alive handle ---------- */

static void good_after_at(const char *file, int line, CURL *h, int must_reuse)
{
    struct resp *r = SEND(h, .method = "GET", .path = "/healthz");
    ok_at(file, line, r, 200);
    if (must_reuse && r->connects != 0)
        die(file, line, "the good request needed a new connection: the server closed the "
            "keep-alive connection after the error");
}
#define GOOD_AFTER(h, reuse) good_after_at(__FILE__, __LINE__, (h), (reuse))

static void protocol_errors(void **state)
{
    (void)state;
    CURL *h = curl_easy_init();
    const char *cart = fmt("p1-%s", tok);
    const char *items = fmt("/carts/%s/items", cart);
    const char *item = "{\"sku\":\"P\",\"quantity\":1,\"unit_price\":\"1.00\"}";
    struct resp *r;

    r = SEND(h, .method = "POST", .path = "/carts", .body = fmt("{\"cart_id\":\"%s\"}", cart));
    CMD(r, 201, cart_stream(cart), 1, PACK("{s:s}", "cart_id", cart));
    GOOD_AFTER(h, 1);

    /* routing: refused before any body is read */
    PROBLEM(SEND(h, .method = "GET", .path = fmt("/nope-%s", tok)), 404, "no route");
    GOOD_AFTER(h, 0);
    PROBLEM(SEND(h, .method = "GET", .path = fmt("/carts/%s/nope", cart)), 404, "no route");
    GOOD_AFTER(h, 0);
    r = SEND(h, .method = "PUT", .path = "/carts");
    PROBLEM(r, 405, "not allowed");
    assert_string_equal(r->allow, "POST");
    GOOD_AFTER(h, 0);
    r = SEND(h, .method = "DELETE", .path = fmt("/carts/%s", cart));
    PROBLEM(r, 405, "not allowed");
    assert_string_equal(r->allow, "GET, HEAD");
    GOOD_AFTER(h, 0);
    r = SEND(h, .method = "POST", .path = "/healthz", .body = "{}");
    PROBLEM(r, 405, "not allowed");
    assert_string_equal(r->allow, "GET, HEAD");
    GOOD_AFTER(h, 0);

    /* media type */
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = "{}", .content_type = ""), 415,
            "Content-Type");
    GOOD_AFTER(h, 0);
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = "{}", .content_type = "text/plain"),
            415, "Content-Type");
    GOOD_AFTER(h, 0);

    /* body too large: 2 MiB with Content-Length, then chunked */
    size_t big = 2u << 20;
    char *blob = gc_add(GC_MEM, malloc(big));
    if (!blob)
        abort();
    memset(blob, ' ', big);
    blob[0] = '{';
    blob[big - 1] = '}';
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = blob, .body_len = big), 413,
            "over the limit");
    GOOD_AFTER(h, 0);
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = blob, .body_len = big, .chunked = 1),
            413, "over the limit");
    GOOD_AFTER(h, 0);

    /* exactly the limit is accepted, one byte more is not (both framings) */
    size_t lim = 1u << 20;
    for (int chunked = 0; chunked < 2; chunked++) {
        const char *id = fmt("lim%d-%s", chunked, tok);
        char *head = fmt("{\"cart_id\":\"%s\"", id);
        char *exact = gc_add(GC_MEM, malloc(lim + 1));
        if (!exact)
            abort();
        memset(exact, ' ', lim + 1);
        memcpy(exact, head, strlen(head));
        exact[lim - 1] = '}';
        CMD(SEND(h, .method = "POST", .path = "/carts", .body = exact, .body_len = lim,
                 .chunked = chunked),
            201, cart_stream(id), 1, PACK("{s:s}", "cart_id", id));
        GOOD_AFTER(h, 0);
        exact[lim - 1] = ' ';
        exact[lim] = '}';
        PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = exact, .body_len = lim + 1,
                     .chunked = chunked),
                413, "over the limit");
        GOOD_AFTER(h, 0);
    }

    /* malformed bodies and headers: the body is read, keep-alive kept */
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = "{\"cart_id\":"), 400,
            "malformed JSON");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = "[]"), 400, "must be an object");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = "/carts", .body = "[{\"cart_id\":\"x\"}]"), 400,
            "must be an object");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = "{\"sku\":\"P\",\"sku\":\"Q\"}"), 400,
            "malformed JSON");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = item,
                 .headers = {"Expected-Version: abc"}),
            400, "Expected-Version");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = item,
                 .headers = {"Expected-Version: -1"}),
            400, "Expected-Version");
    GOOD_AFTER(h, 1);
    char key[301];
    memset(key, 'k', 300);
    key[300] = '\0';
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = item,
                 .headers = {fmt("Idempotency-Key: %s", key)}),
            400, "Idempotency-Key");
    GOOD_AFTER(h, 1);
    key[256] = '\0';
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = item,
                 .headers = {fmt("Idempotency-Key: %s", key)}),
            400, "Idempotency-Key");
    GOOD_AFTER(h, 1);
    /* the keys reactors and timers give their commands are theirs */
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = item,
                 .headers = {"Idempotency-Key: reactor:loyalty.earn_on_payment:x:0"}),
            400, "\"reactor:\"");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items, .body = item,
                 .headers = {"Idempotency-Key: timer:order.payment_timeout:1:0"}),
            400, "\"timer:\"");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items,
                 .body = "{\"sku\":\"P\",\"quantity\":1,\"unit_price\":\"1.00\","
                         "\"occurred_at\":\"yesterday\"}"),
            400, "RFC 3339");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items,
                 .body = "{\"sku\":\"P\",\"quantity\":1,\"unit_price\":\"1.00\","
                         "\"occurred_at\":\"2011-12-09T12:50:00\"}"),
            400, "RFC 3339");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "POST", .path = items,
                 .body = fmt("{\"cart_id\":\"other-%s\",\"sku\":\"P\",\"quantity\":1,"
                             "\"unit_price\":\"1.00\"}", tok)),
            400, "differs");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "GET", .path = "/stats/daily"), 400, "from");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "GET", .path = "/stats/daily?from=2011-12-09"), 400, "to");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "GET", .path = "/stats/daily?from=2011-12-10&to=2011-12-09"), 400,
            "after");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "GET", .path = "/stats/daily?from=2011-02-30&to=2011-03-01"), 400,
            "from");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "GET", .path = "/products/top?by=price"), 400, "by");
    GOOD_AFTER(h, 1);
    PROBLEM(SEND(h, .method = "GET", .path = "/products/top?limit=0"), 400, "limit");
    GOOD_AFTER(h, 1);

    /* none of the refused requests appended anything */
    EVENTS(cart_stream(cart), "CartOpened");

    /* a +json media type and a charset are JSON too; a 255-byte key is fine */
    CMD(SEND(h, .method = "POST", .path = items, .body = item,
             .content_type = "application/json; charset=utf-8"),
        200, cart_stream(cart), 2, NULL);
    GOOD_AFTER(h, 1);
    CMD(SEND(h, .method = "POST", .path = items,
             .body = "{\"sku\":\"Q\",\"quantity\":1,\"unit_price\":\"1.00\"}",
             .content_type = "application/vnd.cqrsd+json"),
        200, cart_stream(cart), 3, NULL);
    GOOD_AFTER(h, 1);
    memset(key, 'k', 255);
    memcpy(key, tok, strlen(tok));
    key[255] = '\0';
    CMD(SEND(h, .method = "POST", .path = items,
             .body = "{\"sku\":\"R\",\"quantity\":1,\"unit_price\":\"1.00\"}",
             .headers = {fmt("Idempotency-Key: %s", key)}),
        200, cart_stream(cart), 4, NULL);
    curl_easy_cleanup(h);
}

/* A 404 or 405 to a request without a body needs no connection close: the
 * next request on the same handle should reuse the connection. */
static void keepalive_after_bodiless_404_405(void **state)
{
    (void)state;
    CURL *h = curl_easy_init();
    GOOD_AFTER(h, 0);
    struct resp *r = SEND(h, .method = "GET", .path = fmt("/nope-%s", tok));
    PROBLEM(r, 404, "no route");
    int closed404 = 0, closed405 = 0;
    r = SEND(h, .method = "GET", .path = "/healthz");
    OK(r, 200);
    closed404 = r->connects != 0;
    r = SEND(h, .method = "PUT", .path = "/carts");
    PROBLEM(r, 405, "not allowed");
    r = SEND(h, .method = "GET", .path = "/healthz");
    OK(r, 200);
    closed405 = r->connects != 0;
    curl_easy_cleanup(h);
    if (closed404 || closed405)
        fail_msg("the server closed the keep-alive connection after a bodiless%s%s",
                 closed404 ? " 404 (GET /nope)" : "", closed405 ? " 405 (PUT /carts)" : "");
}

/* A NUL byte or a malformed escape in the URL never shortens an id into
 * another one: "cart%00x" must not act on cart "cart" (path or query). */
static void nul_and_bad_escapes_in_urls(void **state)
{
    (void)state;
    CURL *h = curl_easy_init();
    const char *cart = fmt("nul-%s", tok);
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", cart)), 201, cart_stream(cart), 1,
        PACK("{s:s}", "cart_id", cart));
    PROBLEM(SEND(h, .method = "GET", .path = fmt("/carts/%s%%00other", cart)), 400, "cart_id");
    PROBLEM(SEND(h, .method = "GET", .path = fmt("/carts/%s%%ZZ", cart)), 400, "cart_id");
    PROBLEM(SEND(h, .method = "GET", .path = fmt("/streams/cart-%s%%00x", cart)), 400, "stream_id");
    PROBLEM(SEND(h, .method = "POST", .path = "/carts%00/junk", .body = "{}"), 404, "no route");
    PROBLEM(SEND(h, .method = "GET", .path = "/products/top?by=units%00x"), 400, "by");
    /* the cart is untouched: still version 1 */
    struct resp *r = SEND(h, .method = "GET", .path = fmt("/streams/cart-%s", cart));
    OK(r, 200);
    curl_easy_cleanup(h);
}

/* An Expected-Version beyond int64 is not a version number: 400, not 409. */
static void expected_version_out_of_range(void **state)
{
    (void)state;
    const char *cart = fmt("ev-%s", tok);
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", cart)), 201, cart_stream(cart), 1,
        PACK("{s:s}", "cart_id", cart));
    const char *items = fmt("/carts/%s/items", cart);
    const char *item = "{\"sku\":\"E\",\"quantity\":1,\"unit_price\":\"1.00\"}";
    /* the forms that work */
    CMD(SEND(shared, .method = "POST", .path = items, .body = item,
             .headers = {"Expected-Version: 1"}),
        200, cart_stream(cart), 2, NULL);
    CMD(SEND(shared, .method = "POST", .path = items, .body = item,
             .headers = {"Expected-Version: any"}),
        200, cart_stream(cart), 3, NULL);
    PROBLEM(SEND(shared, .method = "POST", .path = items, .body = item,
                 .headers = {"Expected-Version: no-stream"}),
            409, "version conflict");
    PROBLEM(SEND(shared, .method = "POST", .path = items, .body = item,
                 .headers = {"Expected-Version: 2"}),
            409, "expected 2, found 3");
    PROBLEM(SEND(shared, .method = "POST", .path = "/carts", .body = fmt("{\"cart_id\":\"ev2-%s\"}", tok),
                 .headers = {"Expected-Version: 1"}),
            409, "version conflict");
    CMD(SEND(shared, .method = "POST", .path = "/carts", .body = fmt("{\"cart_id\":\"ev2-%s\"}", tok),
             .headers = {"Expected-Version: no-stream"}),
        201, fmt("cart-ev2-%s", tok), 1, PACK("{s:s}", "cart_id", fmt("ev2-%s", tok)));
    /* out of range */
    PROBLEM(SEND(shared, .method = "POST", .path = items, .body = item,
                 .headers = {"Expected-Version: 99999999999999999999"}),
            400, "Expected-Version");
}

/* GET /carts/{id} shows a line's unit_price only when every line of the sku
 * had that price (queries/cart.c). Lines at 1.00, 3.00 and 2.00 have no
 * single price, even though 3 x 2.00 happens to equal their amount 6.00. */
static void cart_unit_price_of_mixed_lines(void **state)
{
    (void)state;
    const char *cart = fmt("mp-%s", tok), *cs = cart_stream(cart);
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", cart)), 201, cs, 1, PACK("{s:s}", "cart_id", cart));
    const char *prices[] = {"1.00", "3.00", "2.00"};
    const char *p = NULL;
    for (int i = 0; i < 3; i++)
        p = CMD(POST(fmt("/carts/%s/items", cart),
                     fmt("{\"sku\":\"S\",\"quantity\":1,\"unit_price\":\"%s\"}", prices[i])),
                200, cs, i + 2, NULL);
    /* two lines of one sku at 1.00 and 2.00: no unit_price (3 x 2.00 != 3.00) */
    CMD(POST(fmt("/carts/%s/items", cart), "{\"sku\":\"T\",\"quantity\":1,\"unit_price\":\"1.00\"}"),
        200, cs, 5, NULL);
    p = CMD(POST(fmt("/carts/%s/items", cart),
                 "{\"sku\":\"T\",\"quantity\":2,\"unit_price\":\"2.00\"}"),
            200, cs, 6, NULL);
    WAIT(p);
    json_t *j = OK(GET(fmt("/carts/%s", cart)), 200);
    EQUAL(JGET(j, "lines"),
          PACK("[{s:s, s:s, s:i, s:s}, {s:s, s:s, s:i, s:s}]", "sku", "S", "description", "",
               "quantity", 3, "amount", "6.00", "sku", "T", "description", "", "quantity", 3,
               "amount", "5.00"));
}

/* ---------- 4. idempotency ---------- */

static void idempotency(void **state)
{
    (void)state;
    const char *cart = fmt("i1-%s", tok), *cs = cart_stream(cart);
    const char *items = fmt("/carts/%s/items", cart);
    const char *k1 = fmt("Idempotency-Key: k1-%s", tok);
    const char *body = "{\"sku\":\"I1\",\"quantity\":2,\"unit_price\":\"1.25\"}";

    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", cart)), 201, cs, 1, PACK("{s:s}", "cart_id", cart));

    struct resp *a = SEND(shared, .method = "POST", .path = items, .body = body, .headers = {k1});
    struct resp *b = SEND(shared, .method = "POST", .path = items, .body = body, .headers = {k1});
    CMD(a, 200, cs, 2, NULL);
    assert_int_equal(b->status, a->status);
    assert_int_equal(b->len, a->len);
    assert_memory_equal(b->body, a->body, a->len);
    assert_string_equal(b->ctype, a->ctype);
    /* the same JSON in another key order and spacing is the same request */
    struct resp *c = SEND(shared, .method = "POST", .path = items,
                          .body = "{ \"unit_price\": \"1.25\", \"quantity\": 2, \"sku\": \"I1\" }",
                          .headers = {k1});
    assert_int_equal(c->status, a->status);
    assert_memory_equal(c->body, a->body, a->len);
    EVENTS(cs, "CartOpened", "ItemAdded");

    /* the key with another request: refused, nothing appended */
    PROBLEM(SEND(shared, .method = "POST", .path = items,
                 .body = "{\"sku\":\"I1\",\"quantity\":3,\"unit_price\":\"1.25\"}", .headers = {k1}),
            422, "idempotency key");
    PROBLEM(SEND(shared, .method = "POST", .path = fmt("/carts/%s/checkout", cart), .headers = {k1}),
            422, "idempotency key");
    EVENTS(cs, "CartOpened", "ItemAdded");

    /* a generated id is generated once */
    const char *k2 = fmt("Idempotency-Key: k2-%s", tok);
    a = SEND(shared, .method = "POST", .path = "/carts", .body = "{\"customer_id\":\"idem\"}",
             .headers = {k2});
    b = SEND(shared, .method = "POST", .path = "/carts", .body = "{\"customer_id\":\"idem\"}",
             .headers = {k2});
    json_t *ja = OK(a, 201);
    assert_int_equal(b->status, 201);
    assert_int_equal(b->len, a->len);
    assert_memory_equal(b->body, a->body, a->len);
    EVENTS(cart_stream(JSTR(ja, "cart_id")), "CartOpened");

    /* a two-stream command (checkout) */
    const char *k3 = fmt("Idempotency-Key: k3-%s", tok);
    a = SEND(shared, .method = "POST", .path = fmt("/carts/%s/checkout", cart), .headers = {k3});
    b = SEND(shared, .method = "POST", .path = fmt("/carts/%s/checkout", cart), .headers = {k3});
    CMD(a, 200, cs, 3,
        PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", cart, "total", "2.50", "streams",
             "stream", cs, "version", 3, "stream", order_stream(cart), "version", 1));
    assert_int_equal(b->status, 200);
    assert_int_equal(b->len, a->len);
    assert_memory_equal(b->body, a->body, a->len);
    EVENTS(cs, "CartOpened", "ItemAdded", "CartCheckedOut");
    EVENTS(order_stream(cart), "OrderPlaced");
    /* without the key the same checkout is refused */
    PROBLEM(POST(fmt("/carts/%s/checkout", cart), "{}"), 422, "already checked out");

    /* five identical requests at once: one execution, five identical replies */
    const char *cart2 = fmt("i2-%s", tok);
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", cart2)), 201, cart_stream(cart2), 1,
        PACK("{s:s}", "cart_id", cart2));
    struct rq qs[5];
    struct resp *rs[5];
    for (int i = 0; i < 5; i++)
        qs[i] = (struct rq){.method = "POST", .path = fmt("/carts/%s/items", cart2),
                            .body = "{\"sku\":\"I2\",\"quantity\":1,\"unit_price\":\"9.99\"}",
                            .headers = {fmt("Idempotency-Key: k4-%s", tok)}};
    parallel(5, qs, rs);
    CMD(rs[0], 200, cart_stream(cart2), 2, NULL);
    for (int i = 1; i < 5; i++) {
        assert_int_equal(rs[i]->rc, CURLE_OK);
        if (rs[i]->status != 200 || rs[i]->len != rs[0]->len ||
            memcmp(rs[i]->body, rs[0]->body, rs[0]->len))
            fail_msg("concurrent replay %d differs: %ld %s vs %s", i, rs[i]->status,
                     rs[i]->body ? rs[i]->body : "", rs[0]->body);
    }
    EVENTS(cart_stream(cart2), "CartOpened", "ItemAdded");
}

/* A client that sends Expected-Version and an Idempotency-Key and retries
 * after a lost reply must get the stored reply, not a version conflict: the
 * key identifies the command, which already ran at that version. */
static void idempotent_retry_with_expected_version(void **state)
{
    (void)state;
    const char *cart = fmt("iv-%s", tok), *cs = cart_stream(cart);
    const char *open = fmt("{\"cart_id\":\"%s\"}", cart);
    const char *ko = fmt("Idempotency-Key: iv-open-%s", tok);
    struct resp *a = SEND(shared, .method = "POST", .path = "/carts", .body = open,
                          .headers = {ko, "Expected-Version: no-stream"});
    CMD(a, 201, cs, 1, PACK("{s:s}", "cart_id", cart));
    struct resp *b = SEND(shared, .method = "POST", .path = "/carts", .body = open,
                          .headers = {ko, "Expected-Version: no-stream"});
    if (b->status != 201 || b->len != a->len || memcmp(b->body, a->body, a->len))
        fail_msg("retry of POST /carts (Idempotency-Key, Expected-Version: no-stream) answered "
                 "%ld %s, want the stored 201 %s", b->status, b->body ? b->body : "", a->body);

    const char *item = "{\"sku\":\"V\",\"quantity\":1,\"unit_price\":\"1.00\"}";
    const char *ka = fmt("Idempotency-Key: iv-add-%s", tok);
    const char *items = fmt("/carts/%s/items", cart);
    a = SEND(shared, .method = "POST", .path = items, .body = item,
             .headers = {ka, "Expected-Version: 1"});
    CMD(a, 200, cs, 2, NULL);
    b = SEND(shared, .method = "POST", .path = items, .body = item,
             .headers = {ka, "Expected-Version: 1"});
    if (b->status != 200 || b->len != a->len || memcmp(b->body, a->body, a->len))
        fail_msg("retry of POST %s (Idempotency-Key, Expected-Version: 1) answered %ld %s, want "
                 "the stored 200 %s", items, b->status, b->body ? b->body : "", a->body);
    EVENTS(cs, "CartOpened", "ItemAdded");
}

/* ---------- 5. concurrency ---------- */

static void concurrency(void **state)
{
    (void)state;
    const char *cart = fmt("k1-%s", tok), *cs = cart_stream(cart);
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\"}", cart)), 201, cs, 1, PACK("{s:s}", "cart_id", cart));

    /* 20 adds at once, no Expected-Version: all succeed, re-run on conflicts */
    struct rq qs[20];
    struct resp *rs[20];
    for (int i = 0; i < 20; i++)
        qs[i] = (struct rq){.method = "POST", .path = fmt("/carts/%s/items", cart),
                            .body = fmt("{\"sku\":\"K%02d\",\"quantity\":%d,\"unit_price\":\"1.00\"}",
                                        i, i + 1)};
    parallel(20, qs, rs);
    int seen_version[32] = {0};
    for (int i = 0; i < 20; i++) {
        if (rs[i]->rc != CURLE_OK)
            fail_msg("request %d failed: %s", i, curl_easy_strerror(rs[i]->rc));
        json_t *j = OK(rs[i], 200);
        int64_t v = JINT(j, "version");
        if (v < 2 || v > 21 || seen_version[v]++)
            fail_msg("reply %d has version %lld (duplicate or out of 2..21)", i, (long long)v);
        CMD(rs[i], 200, cs, v, NULL);
    }
    json_t *evs = EVENTS_ANY(cs);
    assert_int_equal(json_array_size(evs), 21);
    int seen_sku[20] = {0};
    for (size_t v = 2; v <= 21; v++) {
        const json_t *ev = json_array_get(evs, v - 1);
        assert_string_equal(JSTR(ev, "type"), "ItemAdded");
        const char *sku = JSTR(JGET(ev, "data"), "sku");
        int k = atoi(sku + 1);
        if (sku[0] != 'K' || k < 0 || k >= 20 || seen_sku[k]++)
            fail_msg("sku %s at version %zu is unknown or repeated", sku, v);
        assert_int_equal(JINT(JGET(ev, "data"), "quantity"), k + 1);
    }

    /* 10 adds at once, all expecting version 21: exactly one wins */
    struct rq qe[10];
    struct resp *re[10];
    for (int i = 0; i < 10; i++)
        qe[i] = (struct rq){.method = "POST", .path = fmt("/carts/%s/items", cart),
                            .body = fmt("{\"sku\":\"E%02d\",\"quantity\":1,\"unit_price\":\"2.00\"}", i),
                            .headers = {"Expected-Version: 21"}};
    parallel(10, qe, re);
    int won = -1, lost = 0;
    for (int i = 0; i < 10; i++) {
        if (re[i]->rc != CURLE_OK)
            fail_msg("request %d failed: %s", i, curl_easy_strerror(re[i]->rc));
        if (re[i]->status == 200) {
            if (won >= 0)
                fail_msg("two requests with Expected-Version: 21 succeeded (%d and %d)", won, i);
            won = i;
            CMD(re[i], 200, cs, 22, NULL);
        } else {
            PROBLEM(re[i], 409, "version conflict");
            lost++;
        }
    }
    assert_int_equal(won >= 0, 1);
    assert_int_equal(lost, 9);
    evs = EVENTS_ANY(cs);
    assert_int_equal(json_array_size(evs), 22);
    assert_string_equal(JSTR(JGET(json_array_get(evs, 21), "data"), "sku"),
                        fmt("E%02d", won));

    /* the read model agrees: 21 lines, 210 + 1 units */
    const char *p = CMD(POST(fmt("/carts/%s/checkout", cart), "{}"), 200, cs, 23,
                        PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", cart, "total",
                             "212.00", "streams", "stream", cs, "version", 23, "stream",
                             order_stream(cart), "version", 1));
    WAIT(p);
    json_t *j = OK(GET(fmt("/carts/%s", cart)), 200);
    assert_int_equal(json_array_size(JGET(j, "lines")), 21);
    assert_int_equal(JINT(j, "units"), 211);
    assert_string_equal(JSTR(j, "total"), "212.00");

    /* races on one id: 10 opens -> one 201; 6 checkouts -> one 200; 6 payments -> one 200 */
    const char *rc_id = fmt("k3-%s", tok);
    struct rq qr[10];
    struct resp *rr[10];
    for (int i = 0; i < 10; i++)
        qr[i] = (struct rq){.method = "POST", .path = "/carts",
                            .body = fmt("{\"cart_id\":\"%s\"}", rc_id)};
    parallel(10, qr, rr);
    int wins = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rr[i]->rc, CURLE_OK);
        if (rr[i]->status == 201) {
            CMD(rr[i], 201, cart_stream(rc_id), 1, PACK("{s:s}", "cart_id", rc_id));
            wins++;
        } else {
            PROBLEM(rr[i], 409, "already exists");
        }
    }
    assert_int_equal(wins, 1);
    CMD(POST(fmt("/carts/%s/items", rc_id), "{\"sku\":\"R\",\"quantity\":3,\"unit_price\":\"1.10\"}"),
        200, cart_stream(rc_id), 2, NULL);
    for (int i = 0; i < 6; i++)
        qr[i] = (struct rq){.method = "POST", .path = fmt("/carts/%s/checkout", rc_id)};
    parallel(6, qr, rr);
    wins = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(rr[i]->rc, CURLE_OK);
        if (rr[i]->status == 200) {
            CMD(rr[i], 200, cart_stream(rc_id), 3,
                PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", rc_id, "total", "3.30",
                     "streams", "stream", cart_stream(rc_id), "version", 3, "stream",
                     order_stream(rc_id), "version", 1));
            wins++;
        } else {
            PROBLEM(rr[i], 422, "already checked out");
        }
    }
    assert_int_equal(wins, 1);
    for (int i = 0; i < 6; i++)
        qr[i] = (struct rq){.method = "POST", .path = fmt("/orders/%s/payments", rc_id),
                            .body = "{\"amount\":\"3.30\"}"};
    parallel(6, qr, rr);
    wins = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(rr[i]->rc, CURLE_OK);
        if (rr[i]->status == 200) {
            CMD(rr[i], 200, order_stream(rc_id), 2, NULL);
            wins++;
        } else {
            PROBLEM(rr[i], 422, "already paid");
        }
    }
    assert_int_equal(wins, 1);
    EVENTS(cart_stream(rc_id), "CartOpened", "ItemAdded", "CartCheckedOut");
    EVENTS(order_stream(rc_id), "OrderPlaced", "OrderPaid");

    /* 20 carts at once, then 20 adds at once on them */
    struct rq qo[20];
    struct resp *ro[20];
    for (int i = 0; i < 20; i++)
        qo[i] = (struct rq){.method = "POST", .path = "/carts",
                            .body = fmt("{\"cart_id\":\"k2-%s-%02d\"}", tok, i)};
    parallel(20, qo, ro);
    for (int i = 0; i < 20; i++) {
        if (ro[i]->rc != CURLE_OK)
            fail_msg("open %d failed: %s", i, curl_easy_strerror(ro[i]->rc));
        const char *id = fmt("k2-%s-%02d", tok, i);
        CMD(ro[i], 201, cart_stream(id), 1, PACK("{s:s}", "cart_id", id));
    }
    for (int i = 0; i < 20; i++)
        qo[i] = (struct rq){.method = "POST", .path = fmt("/carts/k2-%s-%02d/items", tok, i),
                            .body = "{\"sku\":\"M\",\"quantity\":1,\"unit_price\":\"1.00\"}"};
    parallel(20, qo, ro);
    for (int i = 0; i < 20; i++) {
        if (ro[i]->rc != CURLE_OK)
            fail_msg("add %d failed: %s", i, curl_easy_strerror(ro[i]->rc));
        const char *id = fmt("k2-%s-%02d", tok, i);
        CMD(ro[i], 200, cart_stream(id), 2, NULL);
        EVENTS(cart_stream(id), "CartOpened", "ItemAdded");
    }
}

/* ---------- 6. occurred_at ---------- */

/* Opens a cart for customer/country, adds one line, checks out at `at`;
 * returns the checkout position. */
static const char *order_at(const char *file, int line, const char *cart, const char *cust,
                            const char *country, const char *sku, int qty, const char *price,
                            const char *at, const char *total)
{
    cmd_at(file, line,
           POST("/carts", fmt("{\"cart_id\":\"%s\",\"customer_id\":\"%s\",\"country\":\"%s\"}",
                              cart, cust, country)),
           201, cart_stream(cart), 1, PACK("{s:s}", "cart_id", cart));
    cmd_at(file, line,
           POST(fmt("/carts/%s/items", cart),
                fmt("{\"sku\":\"%s\",\"quantity\":%d,\"unit_price\":\"%s\",\"occurred_at\":\"%s\"}",
                    sku, qty, price, at)),
           200, cart_stream(cart), 2, NULL);
    return cmd_at(file, line,
                  POST(fmt("/carts/%s/checkout", cart), fmt("{\"occurred_at\":\"%s\"}", at)), 200,
                  cart_stream(cart), 3,
                  PACK("{s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "order_id", cart, "total", total,
                       "streams", "stream", cart_stream(cart), "version", 3, "stream",
                       order_stream(cart), "version", 1));
}
#define ORDER_AT(...) order_at(__FILE__, __LINE__, __VA_ARGS__)

static void occurred_at(void **state)
{
    (void)state;
    const char *cart = fmt("o1-%s", tok), *cs = cart_stream(cart);
    const char *cust = fmt("cust6-%s", tok), *country = fmt("Time-%s", tok);

    /* times are kept with their offset, normalised */
    CMD(POST("/carts", fmt("{\"cart_id\":\"%s\",\"occurred_at\":\"2011-06-01T09:00:00+01:00\"}", cart)),
        201, cs, 1, PACK("{s:s}", "cart_id", cart));
    const char *items = fmt("/carts/%s/items", cart);
    struct {
        const char *given, *kept;
    } times[] = {
        {"2011-06-01T10:00:00+01:00", "2011-06-01T10:00:00+01:00"},
        {"2011-06-01T10:00:00.25Z", "2011-06-01T10:00:00.250000+00:00"},
        {"2011-06-01t10:00:00-05:30", "2011-06-01T10:00:00-05:30"},
        {"2011-06-01T10:00:00.123456789+00:00", "2011-06-01T10:00:00.123456+00:00"},
    };
    for (size_t i = 0; i < sizeof times / sizeof *times; i++)
        CMD(POST(items, fmt("{\"sku\":\"O%zu\",\"quantity\":1,\"unit_price\":\"1.00\","
                            "\"occurred_at\":\"%s\"}", i, times[i].given)),
            200, cs, (int64_t)i + 2, NULL);
    json_t *evs = EVENTS(cs, "CartOpened", "ItemAdded", "ItemAdded", "ItemAdded", "ItemAdded");
    assert_string_equal(JSTR(ev_data(evs, 1), "occurred_at"), "2011-06-01T09:00:00+01:00");
    for (size_t i = 0; i < sizeof times / sizeof *times; i++)
        assert_string_equal(JSTR(ev_data(evs, i + 2), "occurred_at"), times[i].kept);
    PROBLEM(POST(items, "{\"sku\":\"OX\",\"quantity\":1,\"unit_price\":\"1.00\","
                        "\"occurred_at\":\"2011-02-30T10:00:00Z\"}"),
            400, "RFC 3339");
    PROBLEM(POST(items, "{\"sku\":\"OX\",\"quantity\":1,\"unit_price\":\"1.00\","
                        "\"occurred_at\":1307000000}"),
            400, "occurred_at must be an RFC 3339 string");

    /* the business day of an order is its placement day: 2011-12-09 */
    int64_t d2011 = days_of(2011, 12, 9);
    /* a unique far-past day in the first half of 1990, and a July evening
     * that is already the next day in London (BST, UTC+1) */
    unsigned seed = (unsigned)strtoul(tok + 4, NULL, 16);
    int64_t dx = days_of(1990, 1, 1) + (int64_t)(seed % 180);
    int64_t dj = days_of(1990, 7, 1) + (int64_t)(seed % 29);
    const char *sx = date_str(dx), *sj = date_str(dj);

    WAIT_ALL();
    struct day_sum a2011 = DAILY(d2011, d2011), ax = DAILY(dx, dx), aj = DAILY(dj, dj + 1);
    struct day_sum aj0 = DAILY(dj, dj), aj1 = DAILY(dj + 1, dj + 1);

    const char *o2011 = fmt("o2011-%s", tok);
    ORDER_AT(o2011, cust, country, fmt("SKU-%s-O", tok), 3, "2.10",
             "2011-12-09T12:50:00+00:00", "6.30");
    CMD(POST(fmt("/orders/%s/payments", o2011), "{\"amount\":\"6.30\",\"occurred_at\":"
                                               "\"2011-12-10T08:00:00+00:00\"}"),
        200, order_stream(o2011), 2, NULL);

    /* day X: one paid order, one cancelled (reversed on its day), one return */
    const char *ox = fmt("ox-%s", tok), *oy = fmt("oy-%s", tok), *oj = fmt("oj-%s", tok);
    ORDER_AT(ox, cust, country, fmt("SKU-%s-O", tok), 2, "5.00", fmt("%sT12:00:00+00:00", sx), "10.00");
    CMD(POST(fmt("/orders/%s/payments", ox), "{\"amount\":\"10.00\"}"), 200, order_stream(ox), 2, NULL);
    ORDER_AT(oy, cust, country, fmt("SKU-%s-O", tok), 7, "1.00", fmt("%sT08:00:00+00:00", sx), "7.00");
    CMD(POST(fmt("/orders/%s/cancel", oy), "{}"), 200, order_stream(oy), 2,
        PACK("{s:s}", "refund_due", "0.00"));
    CMD(POST("/returns", fmt("{\"return_id\":\"rx-%s\",\"customer_id\":\"%s\",\"lines\":[{\"sku\":"
                             "\"SKU-%s-O\",\"quantity\":1,\"unit_price\":\"5.00\"}],"
                             "\"occurred_at\":\"%sT15:00:00+00:00\"}", tok, cust, tok, sx)),
        201, fmt("return-rx-%s", tok), 1, PACK("{s:s}", "return_id", fmt("rx-%s", tok)));
    /* July, 23:30 UTC = 00:30 BST the next day */
    const char *p = ORDER_AT(oj, cust, country, fmt("SKU-%s-O", tok), 1, "4.00",
                             fmt("%sT23:30:00+00:00", sj), "4.00");

    WAIT(p);
    /* the expected days assume the default business time zone */
    const char *tz = getenv("CQRSD_TIMEZONE");
    if (tz && *tz && strcmp(tz, "Europe/London")) {
        print_message("CQRSD_TIMEZONE is %s, not Europe/London: business days not checked\n", tz);
    } else {
        DAY_DIFF(a2011, DAILY(d2011, d2011), .orders = 1, .units = 3, .revenue = 6300);
        DAY_DIFF(ax, DAILY(dx, dx), .orders = 2, .units = 2, .revenue = 10000, .returns = 1,
                 .returns_value = 5000);
        DAY_DIFF(aj, DAILY(dj, dj + 1), .orders = 1, .units = 1, .revenue = 4000);
        DAY_DIFF(aj0, DAILY(dj, dj), .orders = 0);
        DAY_DIFF(aj1, DAILY(dj + 1, dj + 1), .orders = 1, .units = 1, .revenue = 4000);
    }

    json_t *j = OK(GET(fmt("/orders/%s", o2011)), 200);
    assert_string_equal(JSTR(j, "placed_at"), "2011-12-09T12:50:00+00:00");
    assert_string_equal(JSTR(j, "paid_at"), "2011-12-10T08:00:00+00:00");
    assert_string_equal(JSTR(j, "status"), "paid");

    /* the customer's orders, newest placement first */
    j = OK(GET(fmt("/customers/%s/orders", cust)), 200);
    EQUAL(j, PACK("{s:s, s:i, s:[{s:s, s:s, s:s, s:s}, {s:s, s:s, s:s, s:s}, {s:s, s:s, s:s, s:s},"
                  " {s:s, s:s, s:s, s:s}]}",
                  "customer_id", cust, "total", 4, "orders",
                  "order_id", o2011, "status", "paid", "total", "6.30", "placed_at", "2011-12-09T12:50:00+00:00",
                  "order_id", oj, "status", "placed", "total", "4.00", "placed_at", fmt("%sT23:30:00+00:00", sj),
                  "order_id", ox, "status", "paid", "total", "10.00", "placed_at", fmt("%sT12:00:00+00:00", sx),
                  "order_id", oy, "status", "cancelled", "total", "7.00", "placed_at", fmt("%sT08:00:00+00:00", sx)));
    j = OK(GET(fmt("/customers/%s/orders?limit=2&offset=1", cust)), 200);
    assert_int_equal(JINT(j, "total"), 4);
    assert_int_equal(json_array_size(JGET(j, "orders")), 2);
    assert_string_equal(JSTR(json_array_get(JGET(j, "orders"), 0), "order_id"), oj);
    assert_string_equal(JSTR(json_array_get(JGET(j, "orders"), 1), "order_id"), ox);
    EQUAL(OK(GET(fmt("/customers/%s", cust)), 200),
          PACK("{s:s, s:i, s:s, s:i, s:i, s:i, s:s, s:s, s:s}", "customer_id", cust, "orders", 4,
               "revenue", "20.30", "units", 6, "cancelled", 1, "returns", 1, "returns_value", "5.00",
               "first_order_at", fmt("%sT08:00:00+00:00", sx), "last_order_at",
               "2011-12-09T12:50:00+00:00"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(readme_session, test_teardown),
        cmocka_unit_test_teardown(rules, test_teardown),
        cmocka_unit_test_teardown(protocol_errors, test_teardown),
        cmocka_unit_test_teardown(keepalive_after_bodiless_404_405, test_teardown),
        cmocka_unit_test_teardown(expected_version_out_of_range, test_teardown),
        cmocka_unit_test_teardown(nul_and_bad_escapes_in_urls, test_teardown),
        cmocka_unit_test_teardown(cart_unit_price_of_mixed_lines, test_teardown),
        cmocka_unit_test_teardown(idempotency, test_teardown),
        cmocka_unit_test_teardown(idempotent_retry_with_expected_version, test_teardown),
        cmocka_unit_test_teardown(concurrency, test_teardown),
        cmocka_unit_test_teardown(occurred_at, test_teardown),
    };
    return cmocka_run_group_tests_name("http_api", tests, group_setup, group_teardown);
}
