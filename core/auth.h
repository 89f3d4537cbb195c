/* core/auth.h — API keys (README "API keys"): who may send commands, run
 * queries and use the admin routes.
 *
 * A key is "cqrsd_" and 64 hex digits; PostgreSQL stores its SHA-256
 * (migrations/0005_api_keys.sql). A request carries it as
 * `Authorization: Bearer <key>` (RFC 6750 §2.1). The server keeps the keys
 * not revoked in memory, read again every AUTH_REFRESH_MS, so a check costs
 * one hash and one lookup and never waits on PostgreSQL, and a revocation
 * takes effect within a second on every instance.
 */
#ifndef CQRSD_AUTH_H
#define CQRSD_AUTH_H

#include <libpq-fe.h>
#include <stddef.h>

#include "core/err.h"

#define AUTH_REFRESH_MS 500

/* Scopes, as bits. */
enum { AUTH_COMMAND = 1, AUTH_QUERY = 2, AUTH_ADMIN = 4 };

struct reg_route;

/* The scope a route needs (one AUTH_* bit), 0 for the routes open to all:
 * /healthz, /readyz, /admin (the page), /problems/{name}, /openapi.json.
 * Commands need AUTH_COMMAND, queries AUTH_QUERY, other built-ins AUTH_ADMIN. */
int auth_route_scope(const struct reg_route *r);

/* Parses "command,query,admin" (any of them, comma-separated) into bits.
 * Returns 0, or ERR_INVALID naming the word. */
int auth_scopes_parse(const char *list, int *scopes, struct err *e);

/* Starts the reader of the keys on database_url (its own connection and
 * thread). Returns 0 (a first read that fails is retried; until one
 * succeeds every check answers ERR_UNAVAILABLE). */
int auth_start(const char *database_url, struct err *e);
void auth_stop(void);

/* Checks the value of a request's Authorization header (NULL: none) for
 * scope (one AUTH_* bit). Returns 0, ERR_UNAUTHORIZED (no key, not a
 * Bearer key, or no such key: 401), ERR_FORBIDDEN (a key without that
 * scope: 403), or ERR_UNAVAILABLE (the keys were never read: 503), with
 * e saying which. *key_id (may be NULL) gets the key's id, 0 when none. */
int auth_check(const char *authorization, int scope, long long *key_id, struct err *e);

/* `cqrsd keys create|list|revoke` on pg: create prints the new key (the
 * only time it is shown) and its id; list prints the keys without their
 * secret; revoke ID revokes one. Returns the exit status (0, 1 failed, 2
 * usage), messages on stdout/stderr. */
int auth_keys_main(PGconn *pg, int argc, char **argv);

#endif
