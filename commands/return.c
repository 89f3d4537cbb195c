/* commands/return.c — the return.record command function: records goods a
 * customer sent back as one ReturnRecorded event opening "return-<return_id>"
 * (docs/events.md is the contract).
 *
 * Invariants:
 *   - a return is created once: a stream that already has events is a
 *     conflict (409), as for every creating command;
 *   - lines keep the order given, repeated skus included; quantities are
 *     positive (the goods that came back), units and total are their exact
 *     sums in int64 (money in thousandths; overflow is a 422);
 *   - decide is pure and validates every line's types (400) before any
 *     business rule (422); it allocates nothing that survives the call;
 *   - the state is a flag and owns no memory (no release).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <cqrsd/fn.h>

#include "ecom.h"
#include "events.h"

struct return_state {
    int recorded; /* a ReturnRecorded was folded */
};

/* Folds one return event into state (struct return_state). */
static void return_evolve(void *state, const struct fn_event *ev)
{
    struct return_state *s = state;
    if (ev->type && !strcmp(ev->type, EV_ReturnRecorded))
        s->recorded = 1;
}

/* Parses line i (0-based) of lines; prefix receives "line <i+1>: ". */
static int parse_line(const json_t *lines, size_t i, char prefix[32], struct ecom_line *l,
                      struct err *e)
{
    const json_t *o = json_array_get(lines, i);
    char d[64];
    snprintf(prefix, 32, "line %zu: ", i + 1);
    if (!json_is_object(o))
        return err_set(e, ERR_INVALID, "line %zu must be an object, got %s", i + 1,
                       ecom_describe(o, d));
    return ecom_line_parse(o, prefix, l, e);
}

/* cmd {return_id, customer_id?, country?, lines: [{sku, description?,
 * quantity, unit_price}], occurred_at} -> ReturnRecorded {return_id,
 * customer_id, country, lines: [{sku, description, quantity, unit_price,
 * amount}], units, total, occurred_at}; reply {return_id}. */
static int record_decide(const void *state, int64_t version, const json_t *cmd,
                         struct fn_decision *d, struct err *e)
{
    (void)state;
    const char *return_id;
    char at[RTIME_BUFSZ], prefix[32], desc[64];
    struct ecom_line l;
    int rc;
    if ((rc = ecom_id(cmd, "return_id", &return_id, e)) || (rc = ecom_occurred_at(cmd, at, e)))
        return rc;
    const json_t *lines = json_object_get(cmd, "lines");
    if (!lines)
        return err_set(e, ERR_INVALID, "lines is required");
    if (!json_is_array(lines))
        return err_set(e, ERR_INVALID, "lines must be an array, got %s",
                       ecom_describe(lines, desc));
    size_t n = json_array_size(lines);
    for (size_t i = 0; i < n; i++)
        if ((rc = parse_line(lines, i, prefix, &l, e)))
            return rc;
    json_t *customer = NULL, *country = NULL;
    if ((rc = ecom_opt_string(cmd, "customer_id", &customer, e)))
        return rc;
    if ((rc = ecom_opt_string(cmd, "country", &country, e))) {
        json_decref(customer);
        return rc;
    }

    /* business rules; from here every failure frees customer and country */
    json_t *out = json_array();
    int64_t units = 0, total = 0;
    if (n == 0) {
        rc = err_set(e, ERR_REJECTED, "return \"%s\" has no lines", return_id);
        goto fail;
    }
    if (n > ECOM_MAX_LINES) {
        rc = err_set(e, ERR_REJECTED, "return \"%s\" has %zu lines, more than %d", return_id, n,
                     ECOM_MAX_LINES);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        parse_line(lines, i, prefix, &l, NULL); /* passed above */
        if ((rc = ecom_line_check(&l, prefix, e)))
            goto fail;
        /* units <= 10,000 lines x 1,000,000: no overflow */
        units += l.quantity;
        if (money_add(total, l.amount, &total, NULL)) {
            rc = err_set(e, ERR_REJECTED, "return \"%s\": total is too large", return_id);
            goto fail;
        }
        json_array_append_new(out, ecom_line_json(l.sku, l.description, l.quantity, l.unit_price,
                                                  l.amount));
    }
    if (version > 0) {
        rc = err_set(e, ERR_CONFLICT, "return \"%s\" already exists", return_id);
        goto fail;
    }

    json_t *data = json_object();
    json_object_set_new(data, "return_id", json_string(return_id));
    json_object_set_new(data, "customer_id", customer);
    json_object_set_new(data, "country", country);
    json_object_set_new(data, "lines", out);
    json_object_set_new(data, "units", json_integer((json_int_t)units));
    json_object_set_new(data, "total", ecom_money_json(total));
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_ReturnRecorded, data);
    fn_reply_set(d, "return_id", json_string(return_id));
    return 0;

fail:
    json_decref(out);
    json_decref(customer);
    json_decref(country);
    return rc;
}

const struct fn_command return_record = {
    .abi = FN_ABI_VERSION,
    .name = "return.record",
    .method = "POST",
    .route = "/returns",
    .category = "return",
    .id_field = "return_id",
    .creates = 1,
    .state_size = sizeof(struct return_state),
    .evolve = return_evolve,
    .decide = record_decide,
    .release = NULL,
    .fields = (const char *const[]){"lines", "customer_id", "country", NULL},
};
