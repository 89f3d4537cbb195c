/* core/http.h — the HTTP server (libmicrohttpd 0.9.75): routes requests to
 * command and query functions by their descriptors, validates input, hands
 * work to the dispatcher and suspends the connection until a worker answers
 * (DESIGN.md §5, §6). Errors are RFC 9457 application/problem+json.
 */
#ifndef CQRSD_HTTP_H
#define CQRSD_HTTP_H

#include <stddef.h>

#include "core/err.h"
#include "core/reg.h"

struct http_config {
    const char *addr;       /* "127.0.0.1:8080" */
    size_t max_body;        /* bytes; larger bodies get 413 */
    unsigned timeout_s;     /* idle connection timeout, seconds */
    unsigned body_timeout_s; /* a request body must arrive whole within this, seconds */
    unsigned threads;       /* HTTP threads (parse only, never wait on a database) */
    int reuse_port;         /* 1: SO_REUSEPORT, several processes share the port (the
                             * kernel spreads connections); 0: a port in use is an error */
    int access_log;         /* 1: a record per request at info (method, path, route,
                             * status, duration_ms, request_id, stream) */
    int read_wait_ms;       /* the longest a query waits for Cqrsd-Min-Position */
    const char *tls_cert_pem; /* NULL: plain HTTP; else HTTPS with this PEM certificate */
    const char *tls_key_pem;  /* and this PEM private key (both borrowed) */
    int auth;               /* 1: API keys required (core/auth.h): commands need scope
                             * command, queries query, the built-in routes admin, but
                             * for /healthz, /readyz, /admin (the page) and /problems */
};

/* Every request has an id: its X-Request-Id header when that is 1 to 128
 * characters of A-Z a-z 0-9 . _ : - (a proxy's or the client's), else a new
 * UUID (RFC 9562 version 4). The reply echoes it in X-Request-Id; the access
 * record and every record of the worker serving it carry it. */
#define HTTP_REQUEST_ID_MAX 128

/* Read-your-writes (README "Read your writes"): a query may carry
 * `Cqrsd-Min-Position: <position token>` (a command reply's "position"); it
 * is answered once every projection it reads has passed it, waiting at most
 * read_wait_ms (a `Prefer: wait=<seconds>` header, RFC 7240 §4.3, may ask
 * for less), else 504. Every query reply carries `Cqrsd-Position`: the
 * position its read models had reached at least. */
#define HTTP_MIN_POSITION "Cqrsd-Min-Position"
#define HTTP_POSITION "Cqrsd-Position"

/* Starts listening. Returns 0, ERR_INVALID (bad addr) or ERR_UNAVAILABLE
 * (cannot bind) with a message. */
int http_start(const struct http_config *cfg, struct err *e);

/* Starts draining: stops accepting new connections (the listening socket is
 * closed), and answers each new request on a connection already open 503
 * with Retry-After and Connection: close. Requests already in flight go on. */
void http_drain(void);

/* Requests received and not answered yet (a job queued or running, a body
 * still arriving); *refused (may be NULL) gets how many got the drain's 503. */
int http_in_flight(int *refused);

/* Stops the server; call after disp_stop so no connection stays suspended. */
void http_stop(void);

/* Matches method and path (already percent-decoded) against the routes of
 * generation r (core/reg.h); the most literal segments win.
 * Exposed for tests and the fuzzer. Returns 0 and fills *m, ERR_NOT_FOUND,
 * or ERR_METHOD (allow gets the allowed methods, e.g. "GET"). */
struct http_match {
    const struct reg_route *route; /* in the generation routed in */
    size_t nparams;
    char *names[8];
    char *values[8]; /* owned; free with http_match_clear */
};
int http_route(const struct reg *r, const char *method, const char *path, struct http_match *m,
               char allow[64]);

/* Percent-decodes uri in place (RFC 3986 §2.1); libmicrohttpd calls it for the
 * path and each query argument. A decoded NUL byte or a malformed escape
 * ("%ZZ", "%4") becomes byte 0x01 instead: C strings would otherwise end at
 * the NUL and name another resource, and 0x01 is refused by every route and
 * parameter check, so such a request gets a 400 or a 404, never a wrong id.
 * Returns the new length. */
size_t http_unescape(char *uri);
void http_match_clear(struct http_match *m);

#endif
