/* @NAME@ — a cqrsd module (written by `cqrsd new @NAME@`): amounts recorded
 * against items, and their totals.
 *
 *   command     @NAME@.record   POST /@NAME@/{item_id}/records {amount, note?}
 *                               -> @PASCAL@Recorded in stream "@NAME@-<item_id>"
 *   projection  @NAME@_totals   item:<item_id> hash: records, total (thousandths)
 *   query       @NAME@.get      GET /@NAME@/{item_id} -> {item_id, records, total}
 *
 * Everything a function sees of the platform is <cqrsd/fn.h>. Money is a
 * decimal string in JSON and int64 thousandths inside (money_parse,
 * money_format); times are RFC 3339 (the platform sets cmd.occurred_at).
 * Change the names, the rules and the read model to your domain, and keep
 * the cases in cases/ telling what each function does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cqrsd/fn.h>

/* Every event type of the module, once: a typo in a handler table or an
 * fn_emit then fails the build. */
#define @UPPER@_EVENTS(X) X(@PASCAL@Recorded)
#define @UPPER@_DEFINE(name) static const char EV_##name[] = #name;
@UPPER@_EVENTS(@UPPER@_DEFINE)
#define @UPPER@_LIST(name) EV_##name,
static const char *const events[] = {@UPPER@_EVENTS(@UPPER@_LIST) NULL};

#define MAX_RECORDS 1000

/* ---------- command @NAME@.record ---------- */

struct item {
    int64_t records;
    int64_t total; /* thousandths */
};

static void evolve(void *state, const struct fn_event *ev)
{
    struct item *s = state;
    int64_t amount;
    if (!strcmp(ev->type, EV_@PASCAL@Recorded) &&
        !money_parse_wide(json_string_value(json_object_get(ev->data, "amount")), &amount, NULL)) {
        s->records++;
        s->total += amount;
    }
}

/* cmd {item_id, amount: decimal string > 0, note?: string, occurred_at}.
 * 400 for a malformed amount or note, 422 for an amount <= 0 or past
 * MAX_RECORDS records. Reply: {records, total}. */
static int record(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                  struct err *e)
{
    (void)version;
    const struct item *s = state;
    const char *id = json_string_value(json_object_get(cmd, "item_id"));
    const char *text = json_string_value(json_object_get(cmd, "amount"));
    const json_t *note = json_object_get(cmd, "note");
    int64_t amount;
    if (!text)
        return err_set(e, ERR_INVALID, "amount is required, as a decimal string");
    int rc = money_parse(text, &amount, e);
    if (rc)
        return rc;
    if (note && !json_is_string(note) && !json_is_null(note))
        return err_set(e, ERR_INVALID, "note must be a string");
    if (amount <= 0)
        return err_set(e, ERR_REJECTED, "cannot record %s against \"%s\": amounts are positive",
                       text, id);
    if (s->records >= MAX_RECORDS)
        return err_set(e, ERR_REJECTED, "cannot record against \"%s\": it has %d records already",
                       id, MAX_RECORDS);
    char buf[MONEY_BUFSZ];
    fn_emit(d, EV_@PASCAL@Recorded,
            json_pack("{s:s, s:s, s:O, s:O}", "item_id", id, "amount", money_format(amount, buf),
                      "note", note ? note : json_null(), "occurred_at",
                      json_object_get(cmd, "occurred_at")));
    fn_reply_set(d, "records", json_integer((json_int_t)(s->records + 1)));
    fn_reply_set(d, "total", json_string(money_format(s->total + amount, buf)));
    return 0;
}

static const struct fn_command @NAME@_record = {
    .abi = FN_ABI_VERSION,
    .name = "@NAME@.record",
    .method = "POST",
    .route = "/@NAME@/{item_id}/records",
    .category = "@NAME@",
    .id_field = "item_id",
    .state_size = sizeof(struct item),
    .evolve = evolve,
    .decide = record,
    /* what the body may carry besides item_id and occurred_at: anything else
     * is refused with 400 naming it */
    .fields = (const char *const[]){"amount", "note", NULL},
};

/* ---------- projection @NAME@_totals ---------- */

static int recorded(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    const char *id = json_string_value(json_object_get(ev->data, "item_id"));
    int64_t amount;
    if (!id || money_parse_wide(json_string_value(json_object_get(ev->data, "amount")), &amount,
                                NULL))
        return err_set(e, ERR_INVALID, "%s %s/%lld has no item_id or amount", ev->type,
                       ev->stream_id, (long long)ev->version);
    char *key = fn_asprintf("item:%s", id);
    fn_hincrby(b, key, "records", 1);
    fn_hincrby(b, key, "total", amount);
    free(key);
    return 0;
}

static const struct fn_on_event totals_on[] = {
    {EV_@PASCAL@Recorded, recorded},
    {NULL, NULL},
};

static const struct fn_projection @NAME@_totals = {
    .abi = FN_ABI_VERSION,
    .name = "@NAME@_totals",
    .version = 1,
    .on = totals_on,
};

/* ---------- query @NAME@.get ---------- */

/* {item_id, records, total}; 404 for an item with no record. */
static int get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    const char *id = fn_param(q, "item_id");
    struct fn_hash h;
    char *key = fn_asprintf("item:%s", id);
    int rc = fn_hgetall(q, "@NAME@_totals", key, &h, e);
    free(key);
    if (rc)
        return rc;
    if (h.n == 0)
        return err_set(e, ERR_NOT_FOUND, "no item \"%s\"", id);
    int64_t records, total;
    if ((rc = fn_hash_int(&h, "records", &records, e)) || (rc = fn_hash_int(&h, "total", &total, e)))
        return rc;
    char buf[MONEY_BUFSZ];
    *out = json_pack("{s:s, s:I, s:s}", "item_id", id, "records", (json_int_t)records, "total",
                     money_format(total, buf));
    return 0;
}

static const struct fn_query @NAME@_get = {
    .abi = FN_ABI_VERSION,
    .name = "@NAME@.get",
    .route = "/@NAME@/{item_id}",
    .run = get,
};

/* ---------- the module ---------- */

static const struct fn_command *const commands[] = {&@NAME@_record, NULL};
static const struct fn_projection *const projections[] = {&@NAME@_totals, NULL};
static const struct fn_query *const queries[] = {&@NAME@_get, NULL};

FN_MODULE = {
    .abi = FN_ABI_VERSION,
    .name = "@NAME@",
    .version = "0.1.0",
    .events = events,
    .commands = commands,
    .projections = projections,
    .queries = queries,
};
