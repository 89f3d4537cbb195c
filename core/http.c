/* core/http.c — the HTTP front (see http.h).
 *
 * One request's life: first call of the access handler (headers read): route
 * it; refuse 404/405/413/415 at once, before any body is read. Following
 * calls: collect the body up to max_body. Last call: decode and validate
 * into a disp_job, suspend the connection, submit the job. A worker answers
 * through job_done(), which resumes the connection; the access handler is
 * then called again and queues the response. The connection is suspended
 * before the job is submitted, so a fast worker cannot resume it too early.
 */
#include "core/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/auth.h"
#include "core/builtin.h"
#include "core/cmd.h"
#include "core/disp.h"
#include "core/es.h"
#include "core/fn.h"
#include "core/metrics.h"
#include "core/util.h"


static struct {
    struct http_config cfg;
    struct MHD_Daemon *d;
    atomic_int in_flight; /* struct req alive: received, not completed */
    atomic_int draining, refused;
} H;

/* ---------- routing ---------- */

/* Matches one pattern; on success fills m (values owned). Returns the number
 * of literal segments (the more, the more specific), or -1. */
static int match(const char *pattern, const char *path, struct http_match *m)
{
    const char *p = pattern, *u = path;
    int literals = 0;
    m->nparams = 0;
    while (*p && *u) {
        if (*p != '/' || *u != '/')
            goto no;
        p++;
        u++;
        size_t pl = strcspn(p, "/"), ul = strcspn(u, "/");
        if (*p == '{') {
            if (ul == 0 || m->nparams == 8)
                goto no;
            m->names[m->nparams] = xasprintf("%.*s", (int)(pl - 2), p + 1);
            m->values[m->nparams] = xasprintf("%.*s", (int)ul, u);
            m->nparams++;
        } else {
            if (pl != ul || strncmp(p, u, pl))
                goto no;
            literals++;
        }
        p += pl;
        u += ul;
    }
    if (*p || *u)
        goto no;
    return literals;
no:
    http_match_clear(m);
    return -1;
}

void http_match_clear(struct http_match *m)
{
    for (size_t i = 0; i < m->nparams; i++) {
        free(m->names[i]);
        free(m->values[i]);
    }
    m->nparams = 0;
}

int http_route(const struct reg *r, const char *method, const char *path, struct http_match *m,
               char allow[64])
{
    const struct reg_route *routes = r->routes;
    size_t n = r->nroutes;
    int best = -1;
    allow[0] = '\0';
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < n; i++) {
        struct http_match t = {0};
        int lit = match(routes[i].pattern, path, &t);
        if (lit < 0)
            continue;
        if (strcmp(routes[i].method, method)) {
            if (!strstr(allow, routes[i].method) && strlen(allow) + 8 < 64) {
                if (*allow)
                    strcat(allow, ", ");
                strcat(allow, routes[i].method);
            }
            http_match_clear(&t);
            continue;
        }
        if (lit > best) {
            http_match_clear(m);
            *m = t;
            m->route = &routes[i];
            best = lit;
        } else {
            http_match_clear(&t);
        }
    }
    if (best >= 0)
        return 0;
    if (strstr(allow, "GET") && strlen(allow) + 7 < 64)
        strcat(allow, ", HEAD");
    return *allow ? ERR_METHOD : ERR_NOT_FOUND;
}

/* ---------- requests ---------- */

struct req {
    struct MHD_Connection *conn;
    struct reg *reg;      /* the generation routed in, until handed to the job */
    int64_t started_ms;   /* first call: the headers were read */
    int64_t started_us;
    struct http_match m;
    char *body;
    size_t len, cap;
    int too_large;
    struct disp_job *job; /* answered job, once resumed */
    int early_code;       /* an error found on the first call */
    char early_msg[400];
    int late_code;        /* the dispatcher answered for the function (job_expired) */
    char late_msg[400];
    char allow[64];
    char method[8];   /* for the metrics: a known method, or "OTHER" */
    char route[128];  /* the pattern routed to, "" for none */
    int status;       /* the reply queued; 0 until then */
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    char path[256];   /* the URL as received, cut, for the access record */
    int close;        /* answer with Connection: close */
    int challenge;    /* a 401: answer with WWW-Authenticate */
};

/* 1 when h may serve as a request id (http.h). */
static int request_id_ok(const char *h)
{
    size_t n = 0;
    for (; h[n]; n++)
        if (n == HTTP_REQUEST_ID_MAX ||
            !(isalnum((unsigned char)h[n]) || strchr("._:-", h[n])))
            return 0;
    return n > 0;
}

/* Queues the reply: text of media type ctype when text is given, else body
 * as JSON (a problem when problem is set). */
static enum MHD_Result send_reply(struct req *rq, int status, json_t *body, const char *text,
                                  const char *ctype, int problem, int retry_after,
                                  const char *allow, const char *position)
{
    char *txt;
    size_t len;
    if (text) {
        txt = xstrdup(text);
        len = strlen(txt);
    } else {
        txt = json_dumps(body, JSON_COMPACT);
        len = strlen(txt);
        txt = xrealloc(txt, len + 2);
        txt[len++] = '\n';
        txt[len] = '\0';
        ctype = problem ? "application/problem+json" : "application/json";
    }
    rq->status = status;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (allow && *allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    MHD_add_response_header(r, "X-Request-Id", rq->request_id);
    if (rq->close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (position && *position)
        MHD_add_response_header(r, HTTP_POSITION, position);
    if (rq->challenge) /* RFC 6750 §3 */
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"cqrsd\"");
    enum MHD_Result ret = MHD_queue_response(rq->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_job(struct req *rq, const struct disp_job *job)
{
    return send_reply(rq, job->status, job->body, job->text, job->content_type, job->problem,
                      job->retry_after, NULL, job->kind == DISP_QUERY ? job->position : NULL);
}

static enum MHD_Result send_problem(struct req *rq, int code, const char *msg, const char *allow)
{
    struct disp_job j = {0};
    disp_problem(&j, code, msg);
    enum MHD_Result ret =
        send_reply(rq, j.status, j.body, NULL, NULL, 1, j.retry_after, allow, NULL);
    json_decref(j.body);
    return ret;
}

static void job_done(struct disp_job *job)
{
    struct req *rq = job->user;
    rq->job = job;
    MHD_resume_connection(rq->conn);
}

/* The dispatcher answers for the function (its timeout passed); the job is
 * no longer ours. */
static void job_expired(struct disp_job *job, int code, const char *msg)
{
    struct req *rq = job->user;
    rq->late_code = code;
    snprintf(rq->late_msg, sizeof rq->late_msg, "%s", msg);
    MHD_resume_connection(rq->conn);
}

struct args_ctx {
    struct disp_job *job;
    int bad;
    char badname[64];
};

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    (void)kind;
    struct args_ctx *a = cls;
    if (!util_text_ok(key, 100, 1) || (value && *value && !util_text_ok(value, 1000, 1))) {
        a->bad = 1;
        snprintf(a->badname, sizeof a->badname, "%.60s", util_text_ok(key, 60, 1) ? key : "?");
        return MHD_NO;
    }
    for (size_t i = 0; i < a->job->nparams; i++)
        if (!strcmp(a->job->params[i].name, key))
            return MHD_YES; /* route parameters and the first occurrence win */
    a->job->params = xrealloc(a->job->params, (a->job->nparams + 1) * sizeof *a->job->params);
    a->job->params[a->job->nparams].name = xstrdup(key);
    a->job->params[a->job->nparams].value = xstrdup(value ? value : "");
    a->job->nparams++;
    return MHD_YES;
}

/* Validates route parameters and copies them into the job. */
static int take_params(struct req *rq, struct disp_job *job, struct err *e)
{
    for (size_t i = 0; i < rq->m.nparams; i++) {
        /* a stream id is "<category>-<id>": longer than the ids it is made of */
        int max = strcmp(rq->m.names[i], "stream_id") ? UTIL_ID_MAX : ES_STREAM_ID_MAX;
        if (!util_text_ok(rq->m.values[i], (size_t)max, 0))
            return err_set(e, ERR_INVALID,
                           "%s must be 1 to %d bytes of UTF-8 text without control characters "
                           "or '/'",
                           rq->m.names[i], max);
        job->params = xrealloc(job->params, (job->nparams + 1) * sizeof *job->params);
        job->params[job->nparams].name = xstrdup(rq->m.names[i]);
        job->params[job->nparams].value = xstrdup(rq->m.values[i]);
        job->nparams++;
    }
    return 0;
}

static int parse_expected(const char *h, int64_t *out, struct err *e)
{
    if (!h) {
        *out = DISP_NO_EXPECTED;
        return 0;
    }
    if (!strcmp(h, "any")) {
        *out = ES_ANY;
        return 0;
    }
    if (!strcmp(h, "no-stream")) {
        *out = ES_NO_STREAM;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(h, &end, 10);
    if (!*h || *end || v < 0 || h[0] == '-' || h[0] == '+' || errno == ERANGE ||
        v > ((long long)1 << 62))
        return err_set(e, ERR_INVALID,
                       "Expected-Version must be a version number, \"any\" or \"no-stream\", got "
                       "\"%.40s\"",
                       h);
    *out = v;
    return 0;
}

/* The request's body as a JSON object (an empty body is {}). */
static int parse_body(const struct req *rq, json_t **out, struct err *e)
{
    *out = NULL;
    if (rq->len == 0) {
        *out = json_object();
        return 0;
    }
    json_error_t je;
    json_t *body = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &je);
    if (!body && strstr(je.text, "JSON_ALLOW_NUL"))
        return err_set(e, ERR_INVALID,
                       "malformed JSON body at line %d, column %d: strings must not hold "
                       "\\u0000",
                       je.line, je.column);
    if (!body)
        return err_set(e, ERR_INVALID, "malformed JSON body at line %d, column %d: %s", je.line,
                       je.column, je.text);
    if (!json_is_object(body)) {
        json_decref(body);
        return err_set(e, ERR_INVALID, "JSON body must be an object");
    }
    *out = body;
    return 0;
}

/* 1 when the route reads a JSON body: commands, and the built-ins that take one. */
static int takes_body(const struct reg_route *r)
{
    return r->kind == REG_COMMAND || (r->kind == REG_BUILTIN && r->builtin == REG_HOOK_CREATE);
}

static int build_command(struct req *rq, const char *method, const char *url,
                         struct disp_job *job, struct err *e)
{
    const struct fn_command *fc = ((const struct reg_command *)rq->m.route->target)->c;
    json_t *body;
    int rc = parse_body(rq, &body, e);
    if (rc)
        return rc;
    char *canon_body = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    job->request = xasprintf("%s %s\n%s", method, url, canon_body);
    free(canon_body);
    job->cmd = body;
    rc = take_params(rq, job, e);
    if (rc)
        return rc;
    if ((rc = cmd_check_fields(fc, body, job->params, job->nparams, e)))
        return rc;
    for (size_t i = 0; i < job->nparams; i++) {
        json_t *given = json_object_get(body, job->params[i].name);
        if (given && !(json_is_string(given) && !strcmp(json_string_value(given), job->params[i].value)))
            return err_set(e, ERR_INVALID, "%s in the body differs from the one in the path",
                           job->params[i].name);
        json_object_set_new(body, job->params[i].name, json_string(job->params[i].value));
    }
    if ((rc = cmd_prepare(fc, body, 1, NULL, e)))
        return rc;
    const char *key = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (key) {
        size_t kl = strlen(key);
        for (size_t i = 0; i < kl; i++)
            if (key[i] < 0x21 || key[i] > 0x7e)
                kl = 0;
        if (kl == 0 || kl > 255)
            return err_set(e, ERR_INVALID,
                           "Idempotency-Key must be 1 to 255 printable ASCII characters");
        /* the keys of the commands reactors and timers issue (core/react.c) */
        if (!strncmp(key, "reactor:", 8) || !strncmp(key, "timer:", 6))
            return err_set(e, ERR_INVALID,
                           "Idempotency-Key must not start with \"reactor:\" or \"timer:\": those "
                           "are the keys of the commands reactors and timers issue");
        job->idempotency_key = xstrdup(key);
    }
    return parse_expected(MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Expected-Version"),
                          &job->expected, e);
}

/* A query's Cqrsd-Min-Position and Prefer: wait=N (http.h). */
static int read_after(struct req *rq, struct disp_job *job, struct err *e)
{
    const char *mp = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, HTTP_MIN_POSITION);
    job->wait_ms = H.cfg.read_wait_ms;
    if (!mp)
        return 0;
    if (!*mp || !es_position_valid(mp))
        return err_set(e, ERR_INVALID,
                       HTTP_MIN_POSITION " must be a position token (the \"position\" of a "
                                         "command's reply: 32 hex digits), got \"%.40s\"",
                       mp);
    snprintf(job->min_position, sizeof job->min_position, "%s", mp);
    const char *prefer = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Prefer");
    const char *w = prefer ? strcasestr(prefer, "wait=") : NULL;
    if (w) { /* RFC 7240 §4.3: seconds; a shorter wait than the server's bound */
        char *end;
        long sec = strtol(w + 5, &end, 10);
        if (end == w + 5 || sec < 0)
            return err_set(e, ERR_INVALID, "Prefer: wait= must be a number of seconds, got "
                                           "\"%.40s\"", prefer);
        if (sec * 1000 < job->wait_ms)
            job->wait_ms = (int)sec * 1000;
    }
    return 0;
}

static int json_content_type(const char *ct)
{
    if (!ct)
        return 0;
    size_t n = strcspn(ct, ";");
    while (n && ct[n - 1] == ' ')
        n--;
    return (n == 16 && !strncasecmp(ct, "application/json", 16)) ||
           (n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct req *rq = *con_cls;
    if (!rq) {
        rq = xcalloc(1, sizeof *rq);
        atomic_fetch_add(&H.in_flight, 1);
        rq->conn = c;
        rq->started_ms = util_now_ms();
        rq->started_us = util_now_us();
        *con_cls = rq;
        static const char *known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
        snprintf(rq->method, sizeof rq->method, "OTHER");
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            if (!strcmp(method, known[i]))
                snprintf(rq->method, sizeof rq->method, "%s", known[i]);
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && request_id_ok(rid))
            snprintf(rq->request_id, sizeof rq->request_id, "%s", rid);
        else
            util_uuid4(rq->request_id);
        snprintf(rq->path, sizeof rq->path, "%s", url);
        /* HEAD is GET without a body (RFC 9110 §9.3.2); libmicrohttpd drops the body */
        struct reg *src = NULL;
        rq->reg = reg_current();
        int rc = rq->reg ? http_route(rq->reg, strcmp(method, "HEAD") ? method : "GET", url,
                                      &rq->m, rq->allow)
                         : ERR_UNAVAILABLE;
        if (atomic_load(&H.draining)) {
            rq->early_code = ERR_UNAVAILABLE;
            rq->close = 1;
            atomic_fetch_add(&H.refused, 1);
            snprintf(rq->early_msg, sizeof rq->early_msg,
                     "the server is shutting down: send the request again (another instance "
                     "answers it)");
        } else if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding") &&
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length")) {
            /* which one frames the body is ambiguous (a way to smuggle a
             * request past a proxy): refused, and the connection closed
             * after the answer, as RFC 9112 §6.1 requires */
            rq->early_code = ERR_INVALID;
            rq->close = 1;
            snprintf(rq->early_msg, sizeof rq->early_msg,
                     "a request must not carry both Transfer-Encoding and Content-Length "
                     "(RFC 9112 section 6.1); the connection is closed");
        } else if (rc == ERR_UNAVAILABLE) {
            rq->early_code = rc;
            snprintf(rq->early_msg, sizeof rq->early_msg, "no modules are loaded yet");
        } else if (rc == ERR_NOT_FOUND) {
            rq->early_code = rc;
            snprintf(rq->early_msg, sizeof rq->early_msg, "no route for %.10s %.200s", method, url);
        } else if (rc == ERR_METHOD) {
            rq->early_code = rc;
            snprintf(rq->early_msg, sizeof rq->early_msg, "%.10s is not allowed on %.200s (allowed: %s)",
                     method, url, rq->allow);
        } else if (rq->m.route->kind == REG_QUERY && (src = reg_query_source(rq->reg))) {
            /* the generation routed in still rebuilds: a query the serving
             * generation also has answers there, from its read models */
            struct http_match m2;
            char allow2[64];
            if (http_route(src, strcmp(method, "HEAD") ? method : "GET", url, &m2, allow2) == 0 &&
                m2.route->kind == REG_QUERY && !strcmp(m2.route->pattern, rq->m.route->pattern)) {
                http_match_clear(&rq->m);
                rq->m = m2;
                reg_release(rq->reg);
                rq->reg = src;
            } else {
                http_match_clear(&m2);
                reg_release(src);
            }
        } else if (takes_body(rq->m.route)) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
            const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
            int has_body = (cl && strtoull(cl, NULL, 10) > 0) || te;
            if (cl && strtoull(cl, NULL, 10) > H.cfg.max_body) {
                rq->early_code = ERR_TOO_LARGE;
                snprintf(rq->early_msg, sizeof rq->early_msg,
                         "request body of %.20s bytes is over the limit of %zu bytes", cl,
                         H.cfg.max_body);
            } else if (has_body && !json_content_type(ct)) {
                rq->early_code = ERR_MEDIA_TYPE;
                snprintf(rq->early_msg, sizeof rq->early_msg,
                         "Content-Type must be application/json, got \"%.60s\"", ct ? ct : "");
            }
        }
        if (rq->m.route) /* copied: the generation may be gone when the metrics count it */
            snprintf(rq->route, sizeof rq->route, "%s", rq->m.route->pattern);
        int scope = rq->m.route && !rq->early_code && H.cfg.auth ? auth_route_scope(rq->m.route) : 0;
        if (scope) {
            struct err ae = {0};
            int arc = auth_check(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
                                 scope, NULL, &ae);
            if (arc) {
                rq->early_code = arc;
                rq->challenge = arc == ERR_UNAUTHORIZED;
                snprintf(rq->early_msg, sizeof rq->early_msg, "%.390s", ae.msg);
            }
        }
        /* A response queued before the body is read makes libmicrohttpd close
         * the connection: right for a body we refuse, not for a bodiless
         * request, which gets its error on the next call, keeping alive. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        int bodiless = !MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding") &&
                       (!cl || !strcmp(cl, "0"));
        if (rq->early_code && !bodiless)
            return send_problem(rq, rq->early_code, rq->early_msg, rq->allow);
        return MHD_YES;
    }
    if (rq->early_code) { /* a bodiless request refused on the first call */
        if (*upload_size) { /* a body after all (no length announced): drop it */
            *upload_size = 0;
            return MHD_YES;
        }
        return send_problem(rq, rq->early_code, rq->early_msg, rq->allow);
    }
    if (rq->late_code) /* resumed: the function's timeout passed */
        return send_problem(rq, rq->late_code, rq->late_msg, NULL);
    if (rq->job) { /* resumed: the worker answered */
        return send_job(rq, rq->job);
    }
    if (*upload_size) {
        if (util_now_ms() - rq->started_ms > (int64_t)H.cfg.body_timeout_s * 1000) {
            /* a body trickling in (a byte now and then never trips the idle
             * timeout): drop the connection. libmicrohttpd 0.9.75 cannot send
             * a response before the body is read whole, so no 408 is sent. */
            log_warn("http: %s %s: body not received within %u s, connection dropped", method,
                     url, H.cfg.body_timeout_s);
            return MHD_NO;
        }
        if (!rq->too_large && rq->len + *upload_size > H.cfg.max_body) {
            rq->too_large = 1;
            free(rq->body);
            rq->body = NULL;
            rq->len = rq->cap = 0;
        }
        if (!rq->too_large) {
            if (rq->len + *upload_size + 1 > rq->cap) {
                rq->cap = (rq->len + *upload_size + 1) * 2;
                if (rq->cap > H.cfg.max_body + 1)
                    rq->cap = H.cfg.max_body + 1;
                rq->body = xrealloc(rq->body, rq->cap);
            }
            memcpy(rq->body + rq->len, upload_data, *upload_size);
            rq->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->too_large) {
        char m[128];
        snprintf(m, sizeof m, "request body is over the limit of %zu bytes", H.cfg.max_body);
        return send_problem(rq, ERR_TOO_LARGE, m, NULL);
    }
    /* the whole request is here: build the job */
    struct disp_job *job = xcalloc(1, sizeof *job);
    const struct reg_route *route = rq->m.route;
    job->kind = route->kind == REG_COMMAND ? DISP_COMMAND
                : route->kind == REG_QUERY ? DISP_QUERY
                                           : DISP_BUILTIN;
    job->builtin = route->builtin;
    job->reg = rq->reg; /* the request runs on the generation it was routed in */
    rq->reg = NULL;
    job->expected = DISP_NO_EXPECTED;
    job->request_id = xstrdup(rq->request_id);
    job->done = job_done;
    job->expired = job_expired;
    job->user = rq;
    struct err e = {0};
    int rc = 0;
    if (job->kind == DISP_COMMAND) {
        job->command = route->target;
        rc = build_command(rq, method, url, job, &e);
    } else {
        job->query = route->kind == REG_QUERY ? route->target : NULL;
        if (job->query)
            rc = read_after(rq, job, &e);
        if (!rc && takes_body(route))
            rc = parse_body(rq, &job->cmd, &e);
        if (!rc)
            rc = take_params(rq, job, &e);
        if (!rc) {
            struct args_ctx a = {job, 0, ""};
            MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_arg, &a);
            if (a.bad)
                rc = err_set(&e, ERR_INVALID, "query parameter \"%s\" is not valid UTF-8 text",
                             a.badname);
        }
    }
    if (rc) {
        disp_job_free(job);
        return send_problem(rq, rc, e.msg, NULL);
    }
    if (job->kind == DISP_BUILTIN && builtin_inline(job->builtin)) {
        /* answered here: it reads only memory, so it answers even when every
         * worker is busy */
        builtin_run(job, NULL, NULL);
        rq->job = job;
        return send_job(rq, job);
    }
    MHD_suspend_connection(c);
    if ((rc = disp_submit(job, &e))) {
        disp_problem(job, rc, e.msg);
        job_done(job);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    struct req *rq = *con_cls;
    if (!rq)
        return;
    int64_t us = util_now_us() - rq->started_us;
    if (rq->status)
        metrics_http_observe(rq->method, rq->route, rq->status, us);
    if (H.cfg.access_log && log_enabled(LOG_INFO)) {
        /* a command's reply names its stream */
        const char *stream = rq->job && rq->job->kind == DISP_COMMAND && !rq->job->problem
                                 ? json_string_value(json_object_get(rq->job->body, "stream"))
                                 : NULL;
        struct log_field f[] = {
            {"method", rq->method, 0},
            {"path", rq->path, 0},
            {"route", rq->route, 0},
            {"status", NULL, rq->status},
            {"duration_ms", NULL, (double)(us / 10) / 100},
            {"request_id", rq->request_id, 0},
            {"stream", stream, 0},
        };
        size_t nf = sizeof f / sizeof *f - (stream == NULL);
        if (rq->status)
            log_with(LOG_INFO, f, nf, "%s %s %d", rq->method, rq->path, rq->status);
        else /* the client went away before a reply */
            log_with(LOG_INFO, f, nf, "%s %s: no reply (%s)", rq->method, rq->path,
                     toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "timed out"
                                                                   : "connection closed");
    }
    disp_job_free(rq->job);
    reg_release(rq->reg);
    http_match_clear(&rq->m);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
    atomic_fetch_sub(&H.in_flight, 1);
}

/* libmicrohttpd's unescape callback: http_unescape (see http.h). */
size_t http_unescape(char *uri)
{
    char *r = uri, *w = uri;
    while (*r) {
        if (*r != '%') {
            *w++ = *r++;
            continue;
        }
        int hi = r[1] ? (r[1] >= '0' && r[1] <= '9' ? r[1] - '0'
                         : (r[1] | 0x20) >= 'a' && (r[1] | 0x20) <= 'f' ? (r[1] | 0x20) - 'a' + 10
                                                                           : -1)
                      : -1;
        int lo = hi >= 0 && r[2] ? (r[2] >= '0' && r[2] <= '9' ? r[2] - '0'
                                    : (r[2] | 0x20) >= 'a' && (r[2] | 0x20) <= 'f'
                                        ? (r[2] | 0x20) - 'a' + 10
                                        : -1)
                                 : -1;
        if (hi < 0 || lo < 0) {
            *w++ = 0x01;
            r++;
            continue;
        }
        char ch = (char)(hi * 16 + lo);
        *w++ = ch ? ch : 0x01;
        r += 3;
    }
    *w = '\0';
    return (size_t)(w - uri);
}

static size_t on_unescape(void *cls, struct MHD_Connection *c, char *uri)
{
    (void)cls;
    (void)c;
    return http_unescape(uri);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char m[512];
    vsnprintf(m, sizeof m, fmt, ap);
    size_t l = strlen(m);
    while (l && m[l - 1] == '\n')
        m[--l] = '\0';
    log_debug("http: %s", m);
}

int http_start(const struct http_config *cfg, struct err *e)
{
    H.cfg = *cfg;
    char host[64];
    const char *colon = strrchr(cfg->addr, ':');
    if (!colon || (size_t)(colon - cfg->addr) >= sizeof host)
        return err_set(e, ERR_INVALID, "CQRSD_HTTP_ADDR \"%s\" is not host:port", cfg->addr);
    memcpy(host, cfg->addr, (size_t)(colon - cfg->addr));
    host[colon - cfg->addr] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (*end || port < 1 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return err_set(e, ERR_INVALID, "CQRSD_HTTP_ADDR \"%s\" is not IPv4-address:port", cfg->addr);
    /* the options that depend on the configuration, as one array */
    struct MHD_OptionItem extra[4];
    size_t nx = 0;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_EPOLL | MHD_USE_ITC;
    if (cfg->tls_cert_pem) { /* libmicrohttpd's GnuTLS support: PEM in memory */
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return err_set(e, ERR_INVALID, "CQRSD_TLS_CERT is set but this libmicrohttpd was "
                                           "built without TLS");
        flags |= MHD_USE_TLS;
        extra[nx++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                              (void *)cfg->tls_cert_pem};
        extra[nx++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0,
                                              (void *)cfg->tls_key_pem};
    }
    /* without it (the default) SO_REUSEADDR only, so a second server on a
     * port in use fails instead of sharing it unnoticed */
    if (cfg->reuse_port)
        extra[nx++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
    extra[nx] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    H.d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_THREAD_POOL_SIZE, cfg->threads ? cfg->threads : 1,
        MHD_OPTION_CONNECTION_TIMEOUT, cfg->timeout_s, MHD_OPTION_CONNECTION_LIMIT, 4000,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, NULL,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, 1000, MHD_OPTION_ARRAY, extra, MHD_OPTION_END);
    if (!H.d && cfg->tls_cert_pem)
        return err_set(e, ERR_INVALID,
                       "could not serve TLS on %s: is CQRSD_TLS_CERT a PEM certificate and "
                       "CQRSD_TLS_KEY its PEM private key? (or the port is in use)",
                       cfg->addr);
    if (!H.d)
        return err_set(e, ERR_UNAVAILABLE, "could not listen on %s (is the port in use?)", cfg->addr);
    return 0;
}

void http_drain(void)
{
    atomic_store(&H.draining, 1);
    /* the socket is ours after quiescing (libmicrohttpd manual, "Quiescing
     * the daemon"): closed, new connections are refused at once instead of
     * waiting in the backlog */
    MHD_socket fd = H.d ? MHD_quiesce_daemon(H.d) : MHD_INVALID_SOCKET;
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int http_in_flight(int *refused)
{
    if (refused)
        *refused = atomic_load(&H.refused);
    return atomic_load(&H.in_flight);
}

void http_stop(void)
{
    if (H.d)
        MHD_stop_daemon(H.d);
    H.d = NULL;
}
