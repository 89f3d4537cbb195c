/* core/hook.c — webhooks (see hook.h): the admin side (registrations and
 * deliveries in PostgreSQL) and the deliverer thread, which claims due
 * deliveries, POSTs them concurrently with libcurl, and records each outcome.
 *
 * Invariants: a delivery is claimed (claimed_until) before it is sent, and
 * its outcome is recorded after; between the two nothing holds a transaction
 * open. A claim outlasts the longest send (timeout plus 30 s), so a
 * deliverer that dies mid-send leaves the delivery to another after the
 * claim runs out: at least once, never lost.
 */
#include "core/hook.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/es.h"
#include "core/reg.h"
#include "core/util.h"

#define HOOK_WINDOW 32             /* deliveries in flight at once, per instance */
#define HOOK_PER_WEBHOOK 8         /* of them to one webhook */
#define HOOK_LOOK_MS 200           /* between two looks for due deliveries when idle */
#define HOOK_BACKOFF_MAX_S 3600    /* the longest wait between two attempts */
#define HOOK_CLAIM_SLACK_S 30

/* ---------- signing ---------- */

void hook_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
               size_t outlen)
{
    char ts[24];
    int tl = snprintf(ts, sizeof ts, "%" PRId64 ".", t);
    unsigned char *msg = xmalloc((size_t)tl + len);
    memcpy(msg, ts, (size_t)tl);
    memcpy(msg + tl, body, len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, (size_t)tl + len, mac, &maclen);
    free(msg);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned int i = 0; i < maclen; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(out, outlen, "t=%" PRId64 ",v1=%s", t, hex);
}

/* ---------- the admin side ---------- */

static char *ascii_lower(char *s)
{
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return s;
}

/* Checks a webhook's URL (RFC 3986, parsed by libcurl's URL API) and
 * returns it normalized (scheme and host in lower case) in a new string the
 * caller frees, or NULL with e set to what is wrong. */
static char *url_check(const char *url, struct err *e)
{
    if (!url)
        return err_set(e, ERR_INVALID, "url is required: an http:// or https:// URL"), NULL;
    size_t len = strlen(url);
    if (len == 0 || len > 2000)
        return err_set(e, ERR_INVALID, "url must be 1 to 2000 bytes"), NULL;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return err_set(e, ERR_INVALID,
                           "url has a space, a control or a non-ASCII byte at byte %zu: "
                           "percent-encode it (RFC 3986, section 2.1)",
                           i + 1),
                   NULL;
    /* scheme "://" authority, strictly: libcurl alone takes "http:///h" and
     * "http:/h" as host h */
    size_t sl = strspn(url, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-");
    if (sl == 0 || strncmp(url + sl, "://", 3))
        return err_set(e, ERR_INVALID, "url must start with http:// or https://"), NULL;
    if (strchr("/?#", url[sl + 3]))
        return err_set(e, ERR_INVALID, "url has no host"), NULL;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *frag = NULL, *norm = NULL;
    char *out = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        err_set(e, ERR_INVALID, "url is not an absolute URL (scheme://host/path)");
    else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             (strcmp(scheme, "http") && strcmp(scheme, "https")))
        err_set(e, ERR_INVALID, "url must be http:// or https://, not %.20s://",
                scheme ? scheme : "?");
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        err_set(e, ERR_INVALID, "url has no host");
    else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
        err_set(e, ERR_INVALID, "url must not carry a user or password (user@host): the "
                                "deliveries are signed instead");
    else if (curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK)
        err_set(e, ERR_INVALID, "url must not have a fragment (#...): it is never sent");
    else if (curl_url_set(u, CURLUPART_HOST, ascii_lower(host), 0) != CURLUE_OK ||
             curl_url_get(u, CURLUPART_URL, &norm, 0) != CURLUE_OK || strlen(norm) > 2000)
        err_set(e, ERR_INVALID, "url must be at most 2000 bytes");
    else
        out = xstrdup(norm);
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(frag);
    curl_free(norm);
    curl_url_cleanup(u);
    return out;
}

int hook_create(PGconn *pg, const struct reg *r, const json_t *body, json_t **out,
                struct err *e)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)body, key, v)
        if (strcmp(key, "url") && strcmp(key, "event_types"))
            return err_set(e, ERR_INVALID, "unknown field \"%.60s\": a webhook has url and "
                                           "event_types", key);
    const json_t *types = json_object_get(body, "event_types");
    if (!json_is_array(types) || json_array_size(types) == 0 || json_array_size(types) > 100)
        return err_set(e, ERR_INVALID, "event_types must be an array of 1 to 100 event types");
    size_t i;
    json_array_foreach(types, i, v) {
        const char *t = json_string_value(v);
        if (!t || !*t)
            return err_set(e, ERR_INVALID, "event_types[%zu] must be a non-empty string", i);
        if (!reg_event_declared(r, t))
            return err_set(e, ERR_INVALID,
                           "event_types[%zu]: no loaded module declares the event type \"%.100s\"",
                           i, t);
    }
    const json_t *uv = json_object_get(body, "url");
    if (uv && !json_is_string(uv))
        return err_set(e, ERR_INVALID, "url must be a string: an http:// or https:// URL");
    char *url = url_check(json_string_value(uv), e);
    if (!url)
        return e->code;
    unsigned char raw[32];
    for (size_t got = 0; got < sizeof raw;) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    char secret[6 + 2 * sizeof raw + 1] = "whsec_";
    for (size_t k = 0; k < sizeof raw; k++)
        snprintf(secret + 6 + 2 * k, 3, "%02x", raw[k]);
    char *tj = json_dumps(types, JSON_COMPACT);
    const char *params[3] = {url, tj, secret};
    PGresult *res = PQexecParams(
        pg,
        "INSERT INTO webhooks (url, event_types, secret) SELECT $1, array_agg(t), $3 FROM "
        "jsonb_array_elements_text($2::jsonb) AS t RETURNING id, to_char(created_at AT TIME ZONE "
        "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
        3, NULL, params, NULL, NULL, 0);
    free(tj);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        free(url);
        return es_fail(pg, res, "store a webhook", e);
    }
    *out = json_pack("{s:I, s:s, s:O, s:b, s:s, s:s}", "id",
                     (json_int_t)strtoll(PQgetvalue(res, 0, 0), NULL, 10), "url", url,
                     "event_types", types, "active", 1, "created_at", PQgetvalue(res, 0, 1),
                     "secret", secret);
    free(url);
    PQclear(res);
    return 0;
}

int hook_list(PGconn *pg, json_t **out, struct err *e)
{
    PGresult *res = PQexec(
        pg, "SELECT w.id, w.url, array_to_json(w.event_types)::text, w.active, "
            "to_char(w.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), "
            "count(*) FILTER (WHERE d.state = 'pending'), "
            "count(*) FILTER (WHERE d.state = 'delivered'), "
            "count(*) FILTER (WHERE d.state = 'parked') "
            "FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id "
            "GROUP BY w.id ORDER BY w.id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return es_fail(pg, res, "list webhooks", e);
    json_t *list = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(
            list, json_pack("{s:I, s:s, s:o, s:b, s:s, s:I, s:I, s:I}", "id",
                            (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "url",
                            PQgetvalue(res, i, 1), "event_types",
                            json_loads(PQgetvalue(res, i, 2), 0, NULL), "active",
                            PQgetvalue(res, i, 3)[0] == 't', "created_at", PQgetvalue(res, i, 4),
                            "pending", (json_int_t)strtoll(PQgetvalue(res, i, 5), NULL, 10),
                            "delivered", (json_int_t)strtoll(PQgetvalue(res, i, 6), NULL, 10),
                            "parked", (json_int_t)strtoll(PQgetvalue(res, i, 7), NULL, 10)));
    PQclear(res);
    *out = json_pack("{s:o}", "webhooks", list);
    return 0;
}

int hook_delete(PGconn *pg, int64_t id, json_t **out, struct err *e)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, id);
    const char *params[1] = {n};
    PGresult *res = PQexecParams(
        pg,
        "WITH w AS (UPDATE webhooks SET active = false WHERE id = $1::bigint RETURNING id), "
        "p AS (UPDATE webhook_deliveries SET state = 'parked', last_error = 'the webhook was "
        "deleted' WHERE webhook_id IN (SELECT id FROM w) AND state = 'pending' RETURNING 1) "
        "SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM p)",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return es_fail(pg, res, "delete a webhook", e);
    int found = atoi(PQgetvalue(res, 0, 0));
    long long parked = atoll(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (!found)
        return err_set(e, ERR_NOT_FOUND, "no webhook %" PRId64, id);
    *out = json_pack("{s:I, s:b, s:I}", "id", (json_int_t)id, "active", 0, "parked_deliveries",
                     (json_int_t)parked);
    return 0;
}

#define TIME_OF(col)                                                                           \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"

static const char DELIVERY_COLUMNS[] =
    "d.id, d.webhook_id, e.event_id::text, e.type, d.stream_id, d.version, d.state, d.attempts, "
    "d.last_status, d.last_error, " TIME_OF("d.next_attempt_at") ", " TIME_OF("d.delivered_at");

static json_t *delivery_json(PGresult *res, int i)
{
    json_t *o = json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:s, s:i}", "id",
                          (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "webhook_id",
                          (json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10), "event_id",
                          PQgetvalue(res, i, 2), "type", PQgetvalue(res, i, 3), "stream",
                          PQgetvalue(res, i, 4), "version",
                          (json_int_t)strtoll(PQgetvalue(res, i, 5), NULL, 10), "state",
                          PQgetvalue(res, i, 6), "attempts", atoi(PQgetvalue(res, i, 7)));
    json_object_set_new(o, "last_status", PQgetisnull(res, i, 8)
                                              ? json_null()
                                              : json_integer(atoi(PQgetvalue(res, i, 8))));
    json_object_set_new(o, "last_error", PQgetisnull(res, i, 9)
                                             ? json_null()
                                             : json_string(PQgetvalue(res, i, 9)));
    json_object_set_new(o, "next_attempt_at", json_string(PQgetvalue(res, i, 10)));
    json_object_set_new(o, "delivered_at", PQgetisnull(res, i, 11)
                                               ? json_null()
                                               : json_string(PQgetvalue(res, i, 11)));
    return o;
}

int hook_deliveries(PGconn *pg, int64_t webhook, const char *state, int64_t after, int limit,
                    json_t **out, struct err *e)
{
    char w[24], a[24], l[16];
    snprintf(w, sizeof w, "%" PRId64, webhook);
    snprintf(a, sizeof a, "%" PRId64, after);
    snprintf(l, sizeof l, "%d", limit);
    const char *params[4] = {w, state, a, l};
    char *q = xasprintf("SELECT %s FROM webhook_deliveries d JOIN events e ON e.stream_id = "
                        "d.stream_id AND e.version = d.version WHERE ($1::bigint = 0 OR "
                        "d.webhook_id = $1::bigint) AND ($2::text IS NULL OR d.state = $2) AND "
                        "d.id > $3::bigint ORDER BY d.id LIMIT $4::int",
                        DELIVERY_COLUMNS);
    PGresult *res = PQexecParams(pg, q, 4, NULL, params, NULL, NULL, 0);
    free(q);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return es_fail(pg, res, "list deliveries", e);
    json_t *list = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(list, delivery_json(res, i));
    int full = PQntuples(res) == limit;
    json_t *next = full ? json_integer((json_int_t)strtoll(PQgetvalue(res, PQntuples(res) - 1, 0),
                                                           NULL, 10))
                        : json_null();
    PQclear(res);
    *out = json_pack("{s:o, s:o}", "deliveries", list, "next_after", next);
    return 0;
}

int hook_retry(PGconn *pg, int64_t id, json_t **out, struct err *e)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, id);
    const char *params[1] = {n};
    PGresult *res = PQexecParams(pg,
                                 "SELECT d.state, w.active, w.id FROM webhook_deliveries d JOIN "
                                 "webhooks w ON w.id = d.webhook_id WHERE d.id = $1::bigint",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return es_fail(pg, res, "read a delivery", e);
    int rc = 0;
    if (PQntuples(res) == 0)
        rc = err_set(e, ERR_NOT_FOUND, "no delivery %" PRId64, id);
    else if (strcmp(PQgetvalue(res, 0, 0), "parked"))
        rc = err_set(e, ERR_STATE_CONFLICT, "delivery %" PRId64 " is %s, not parked", id,
                     PQgetvalue(res, 0, 0));
    else if (PQgetvalue(res, 0, 1)[0] != 't')
        rc = err_set(e, ERR_STATE_CONFLICT, "delivery %" PRId64 " is of webhook %s, which was deleted",
                     id, PQgetvalue(res, 0, 2));
    PQclear(res);
    if (rc)
        return rc;
    if ((rc = es_command(pg,
                         "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, "
                         "last_status = NULL, last_error = NULL, next_attempt_at = now(), "
                         "claimed_until = NULL WHERE id = $1::bigint AND state = 'parked'",
                         1, params, "retry a delivery", e)))
        return rc;
    char *q = xasprintf("SELECT %s FROM webhook_deliveries d JOIN events e ON e.stream_id = "
                        "d.stream_id AND e.version = d.version WHERE d.id = $1::bigint",
                        DELIVERY_COLUMNS);
    res = PQexecParams(pg, q, 1, NULL, params, NULL, NULL, 0);
    free(q);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return es_fail(pg, res, "read a delivery", e);
    if (PQntuples(res) == 1)
        *out = delivery_json(res, 0);
    else
        rc = err_set(e, ERR_NOT_FOUND, "no delivery %" PRId64, id);
    PQclear(res);
    return rc;
}

/* ---------- the deliverer ---------- */

static struct {
    struct hook_config cfg;
    pthread_t thread;
    atomic_int stop;
    int started;
} K;

struct send {
    int64_t id;
    int attempt;
    char *body;
    struct curl_slist *headers;
    CURL *h;
    char error[CURL_ERROR_SIZE];
    long status;
};

static size_t discard(char *d, size_t s, size_t n, void *u)
{
    (void)d;
    (void)u;
    return s * n;
}

/* Records a send's outcome, unless the delivery is no longer pending (its
 * webhook was deleted while it was in flight). */
static int record(PGconn *pg, const struct send *s, CURLcode cc, struct err *e)
{
    char id[24], st[16], wait_s[24];
    snprintf(id, sizeof id, "%" PRId64, s->id);
    snprintf(st, sizeof st, "%ld", s->status);
    int ok = cc == CURLE_OK && s->status >= 200 && s->status < 300;
    int64_t delay = util_backoff_ms(K.cfg.backoff_ms, s->attempt, HOOK_BACKOFF_MAX_S * 1000LL);
    snprintf(wait_s, sizeof wait_s, "%lld", (long long)delay);
    char msg[CURL_ERROR_SIZE + 64];
    if (cc != CURLE_OK)
        snprintf(msg, sizeof msg, "%s", s->error[0] ? s->error : curl_easy_strerror(cc));
    else
        snprintf(msg, sizeof msg, "the receiver answered %ld", s->status);
    const char *params[5] = {id, cc == CURLE_OK ? st : NULL, msg, wait_s,
                             s->attempt >= K.cfg.attempts ? "parked" : "pending"};
    int rc = ok ? es_command(pg,
                             "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = "
                             "now(), last_status = $2::int, last_error = NULL, claimed_until = "
                             "NULL WHERE id = $1::bigint AND state = 'pending'",
                             2, params, "record a delivery", e)
                : es_command(pg,
                             "UPDATE webhook_deliveries SET state = $5, last_status = $2::int, "
                             "last_error = $3, claimed_until = NULL, next_attempt_at = now() + "
                             "$4::bigint * interval '1 millisecond' WHERE id = $1::bigint AND "
                             "state = 'pending'",
                             5, params, "record a delivery", e);
    if (rc)
        return rc;
    if (!ok)
        log_warn("webhooks: delivery %" PRId64 " attempt %d of %d failed: %s%s", s->id, s->attempt,
                 K.cfg.attempts, msg,
                 s->attempt >= K.cfg.attempts ? "; parked" : "; it will be tried again");
    return 0;
}

/* The sends in flight: a rolling window of HOOK_WINDOW, at most
 * HOOK_PER_WEBHOOK of them to one webhook, so that a slow receiver neither
 * holds up the others nor gets all the connections. */
struct flight {
    struct send *s[HOOK_WINDOW];
    int64_t webhook[HOOK_WINDOW];
    int n;
};

static void send_free(struct send *s)
{
    curl_easy_cleanup(s->h);
    curl_slist_free_all(s->headers);
    free(s->body);
    free(s);
}

/* A send of row i of a claim (d.id, attempts, url, secret, event id, type,
 * body, webhook id). */
static struct send *send_new(PGresult *res, int i, int64_t now)
{
    struct send *s = xcalloc(1, sizeof *s);
    s->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
    s->attempt = atoi(PQgetvalue(res, i, 1));
    s->body = xstrdup(PQgetvalue(res, i, 6));
    char sig[200], *h;
    hook_sign(PQgetvalue(res, i, 3), now, s->body, strlen(s->body), sig, sizeof sig);
    s->headers = curl_slist_append(NULL, "Content-Type: application/json");
    s->headers = curl_slist_append(s->headers, "Expect:"); /* no 100-continue wait */
    h = xasprintf("Cqrsd-Signature: %s", sig);
    s->headers = curl_slist_append(s->headers, h);
    free(h);
    h = xasprintf("Cqrsd-Event-Id: %s", PQgetvalue(res, i, 4));
    s->headers = curl_slist_append(s->headers, h);
    free(h);
    h = xasprintf("Cqrsd-Event-Type: %s", PQgetvalue(res, i, 5));
    s->headers = curl_slist_append(s->headers, h);
    free(h);
    h = xasprintf("Cqrsd-Delivery: %" PRId64, s->id);
    s->headers = curl_slist_append(s->headers, h);
    free(h);
    h = xasprintf("Cqrsd-Attempt: %d", s->attempt);
    s->headers = curl_slist_append(s->headers, h);
    free(h);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, PQgetvalue(res, i, 2));
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)K.cfg.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)K.cfg.timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "cqrsd-webhooks/1");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->error);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_PRIVATE, s);
    s->h = c;
    return s;
}

/* Claims due deliveries of active webhooks into the free slots of f,
 * respecting the per-webhook cap, and starts them. Returns the number
 * claimed, or -1 with e set. */
static int claim(PGconn *pg, CURLM *multi, struct flight *f, struct err *e)
{
    /* the webhooks in flight and how many each: "{id,...}" and "{n,...}" */
    char ids[HOOK_WINDOW * 22 + 3] = "{", counts[HOOK_WINDOW * 4 + 3] = "{";
    size_t il = 1, cl = 1;
    for (int i = 0; i < f->n; i++) {
        int seen = 0, n = 0;
        for (int j = 0; j < f->n; j++) {
            seen |= j < i && f->webhook[j] == f->webhook[i];
            n += f->webhook[j] == f->webhook[i];
        }
        if (seen)
            continue;
        il += (size_t)snprintf(ids + il, sizeof ids - il, "%s%" PRId64, il > 1 ? "," : "",
                               f->webhook[i]);
        cl += (size_t)snprintf(counts + cl, sizeof counts - cl, "%s%d", cl > 1 ? "," : "", n);
    }
    memcpy(ids + il, "}", 2);
    memcpy(counts + cl, "}", 2);
    char claim_s[16], free_s[16], cap_s[16];
    snprintf(claim_s, sizeof claim_s, "%d", K.cfg.timeout_ms / 1000 + HOOK_CLAIM_SLACK_S);
    snprintf(free_s, sizeof free_s, "%d", HOOK_WINDOW - f->n);
    snprintf(cap_s, sizeof cap_s, "%d", HOOK_PER_WEBHOOK);
    const char *params[5] = {claim_s, ids, counts, cap_s, free_s};
    PGresult *res = PQexecParams(
        pg,
        "WITH cand AS (SELECT d.id, d.webhook_id FROM webhook_deliveries d JOIN webhooks w ON "
        "w.id = d.webhook_id AND w.active WHERE d.state = 'pending' AND d.next_attempt_at <= "
        "now() AND (d.claimed_until IS NULL OR d.claimed_until < now()) ORDER BY d.id LIMIT "
        "256 FOR UPDATE OF d SKIP LOCKED), "
        "busy AS (SELECT * FROM unnest($2::bigint[], $3::int[]) AS b (webhook_id, n)), "
        "pick AS (SELECT c.id FROM (SELECT id, webhook_id, row_number() OVER (PARTITION BY "
        "webhook_id ORDER BY id) AS rn FROM cand) AS c LEFT JOIN busy USING (webhook_id) WHERE "
        "c.rn + coalesce(busy.n, 0) <= $4::int ORDER BY c.id LIMIT $5::int) "
        "UPDATE webhook_deliveries AS d SET claimed_until = now() + make_interval(secs => "
        "$1::int), attempts = d.attempts + 1 "
        "FROM pick, webhooks AS w, events AS e "
        "WHERE d.id = pick.id AND w.id = d.webhook_id AND e.stream_id = d.stream_id AND "
        "e.version = d.version "
        "RETURNING d.id, d.attempts, w.url, w.secret, e.event_id::text, e.type, "
        "jsonb_build_object('id', e.event_id, 'type', e.type, 'stream', e.stream_id, 'version', "
        "e.version, 'position', cqrsd_position(e.txid, e.seq), 'recorded_at', "
        "to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), "
        "'data', e.data, 'metadata', e.metadata)::text, w.id",
        5, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        es_fail(pg, res, "claim deliveries", e);
        return -1;
    }
    int n = PQntuples(res);
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < n && f->n < HOOK_WINDOW; i++) {
        struct send *s = send_new(res, i, now);
        f->webhook[f->n] = strtoll(PQgetvalue(res, i, 7), NULL, 10);
        f->s[f->n++] = s;
        curl_multi_add_handle(multi, s->h);
    }
    PQclear(res);
    return n;
}

/* Records the finished sends and frees their slots. */
static void finish(PGconn *pg, CURLM *multi, struct flight *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct send *one = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&one);
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &one->status);
        struct err re = {0};
        /* not recorded (the store is down): its claim runs out, it is sent again */
        if (!pg || record(pg, one, m->data.result, &re))
            log_error("webhooks: delivery %" PRId64 " not recorded: %s", one->id,
                      pg ? re.msg : "the event store is unavailable");
        curl_multi_remove_handle(multi, one->h);
        for (int i = 0; i < f->n; i++)
            if (f->s[i] == one) {
                f->s[i] = f->s[f->n - 1];
                f->webhook[i] = f->webhook[f->n - 1];
                f->n--;
                break;
            }
        send_free(one);
    }
}

static void *deliverer(void *arg)
{
    (void)arg;
    PGconn *pg = NULL;
    CURLM *multi = curl_multi_init();
    struct flight f = {0};
    struct err e = {0};
    int warned = 0;
    int64_t next_claim = 0, next_connect = 0;
    /* on stop, claims no more and finishes the sends in flight */
    while (!atomic_load(&K.stop) || f.n > 0) {
        int stopping = atomic_load(&K.stop);
        int64_t now = util_now_ms();
        if (pg && PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = NULL;
        }
        if (!pg && !stopping && now >= next_connect) {
            if ((pg = es_connect(K.cfg.database_url, &e)))
                warned = 0;
            else if (!warned++)
                log_warn("webhooks waiting: %s", e.msg);
            next_connect = now + 1000;
        }
        if (pg && !stopping && f.n < HOOK_WINDOW && now >= next_claim) {
            int got = claim(pg, multi, &f, &e);
            if (got < 0)
                log_error("webhooks: %s", e.msg);
            /* looks again at once after a claim that found some, else in a while */
            next_claim = got > 0 ? now : now + HOOK_LOOK_MS;
        }
        int running = 0;
        curl_multi_perform(multi, &running);
        finish(pg, multi, &f);
        if (f.n > 0)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
        else if (!atomic_load(&K.stop) && util_now_ms() < next_claim)
            poll(NULL, 0, 100);
    }
    curl_multi_cleanup(multi);
    if (pg)
        PQfinish(pg);
    return NULL;
}

int hook_start(const struct hook_config *cfg, struct err *e)
{
    (void)e;
    K.cfg = *cfg;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    atomic_store(&K.stop, 0);
    pthread_create(&K.thread, NULL, deliverer, NULL);
    K.started = 1;
    return 0;
}

void hook_stop(void)
{
    if (!K.started)
        return;
    atomic_store(&K.stop, 1);
    pthread_join(K.thread, NULL);
    curl_global_cleanup();
    K.started = 0;
}
