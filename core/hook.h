/* core/hook.h — webhooks: their registrations, and the deliverer that sends
 * the outbox (migrations/0003_webhooks.sql) to them (core/hook.c).
 *
 * A delivery is a POST of the event as JSON, {id, type, stream, version,
 * position, recorded_at, data, metadata}, with the headers
 *   Content-Type: application/json
 *   Cqrsd-Event-Id: <the event's id: receivers drop duplicates by it>
 *   Cqrsd-Event-Type, Cqrsd-Delivery (the delivery's id), Cqrsd-Attempt (from 1)
 *   Cqrsd-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 * the scheme of Stripe's webhooks (HMAC: RFC 2104, SHA-256: FIPS 180-4): a
 * receiver recomputes v1 over the timestamp and the exact body it received,
 * compares in constant time, and refuses old timestamps to stop replays. A
 * 2xx answer delivers it; anything else, or no answer within
 * CQRSD_WEBHOOK_TIMEOUT_MS, is retried after CQRSD_WEBHOOK_BACKOFF_MS, doubling
 * up to an hour, until CQRSD_WEBHOOK_ATTEMPTS attempts: then it is parked.
 */
#ifndef CQRSD_HOOK_H
#define CQRSD_HOOK_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct reg;

struct hook_config {
    const char *database_url;
    int timeout_ms;  /* one delivery's answer */
    int attempts;    /* before a delivery is parked */
    int backoff_ms;  /* before the second attempt; doubles, up to an hour */
};

/* Starts the deliverer thread (every instance runs one: deliveries are
 * claimed one by one). It keeps up to 32 sends in flight, at most 8 to one
 * webhook. */
int hook_start(const struct hook_config *cfg, struct err *e);
/* Stops it after the deliveries in flight. */
void hook_stop(void);

/* The signature header's value for body sent at Unix time t, with secret,
 * into out (at least 128 bytes). */
void hook_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
               size_t outlen);

/* ---------- the admin routes (core/builtin.c) ---------- */

/* POST /admin/webhooks {url, event_types}: checks the body (every type must
 * be declared by a module of r; the URL is http(s)://host..., ASCII, with no
 * user or fragment, stored normalized), stores the webhook with a new secret, and
 * sets *out to {id, url, event_types, active, created_at, secret} (the only
 * time the secret is shown). ERR_INVALID naming what is wrong. */
int hook_create(PGconn *pg, const struct reg *r, const json_t *body, json_t **out,
                struct err *e);

/* GET /admin/webhooks: {webhooks: [{id, url, event_types, active,
 * created_at, pending, delivered, parked}]}. */
int hook_list(PGconn *pg, json_t **out, struct err *e);

/* DELETE /admin/webhooks/{id}: deactivates it; its pending deliveries are
 * parked ("the webhook was deleted"). ERR_NOT_FOUND. */
int hook_delete(PGconn *pg, int64_t id, json_t **out, struct err *e);

/* GET /admin/webhooks/deliveries: the deliveries of webhook (0: all) in
 * state (NULL: all) with an id after `after`, oldest first, at most limit:
 * {deliveries: [{id, webhook_id, event_id, type, stream, version, state,
 * attempts, last_status, last_error, next_attempt_at, delivered_at}],
 * next_after}. */
int hook_deliveries(PGconn *pg, int64_t webhook, const char *state, int64_t after, int limit,
                    json_t **out, struct err *e);

/* POST /admin/webhooks/deliveries/{id}/retry: a parked delivery is pending
 * again, from attempt 1, now (its last status and error cleared).
 * ERR_NOT_FOUND, ERR_STATE_CONFLICT when it is not parked or its webhook was
 * deleted. */
int hook_retry(PGconn *pg, int64_t id, json_t **out, struct err *e);

#endif
