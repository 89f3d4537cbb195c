/* commands/ecom.c — validation and JSON building shared by the e-commerce
 * commands (see commands/ecom.h for the contract of each function).
 *
 * Invariants: pure functions (no I/O, no clock, no globals); every message is
 * PostgreSQL style (lowercase, no final period, naming the field); money never
 * passes through floating point; a json_t returned is a new reference.
 */
#include "ecom.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies a core message into e, replacing its leading "<word> " (e.g.
 * "amount ", "time ") with "<prefix><field> " so it names the field. */
static int rename_msg(struct err *e, int code, const char *prefix, const char *field,
                      const char *word, const char *msg)
{
    size_t wl = strlen(word);
    if (!strncmp(msg, word, wl) && msg[wl] == ' ')
        return err_set(e, code, "%s%s%s", prefix, field, msg + wl);
    return err_set(e, code, "%s%s: %s", prefix, field, msg);
}

char *ecom_describe(const json_t *v, char buf[64])
{
    if (!v) {
        snprintf(buf, 64, "nothing");
    } else if (json_is_object(v)) {
        snprintf(buf, 64, "an object");
    } else if (json_is_array(v)) {
        snprintf(buf, 64, "an array");
    } else {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (!s)
            snprintf(buf, 64, "a value");
        else if (strlen(s) > 40)
            snprintf(buf, 64, "%.40s...", s);
        else
            snprintf(buf, 64, "%s", s);
        free(s);
    }
    return buf;
}

int ecom_occurred_at(const json_t *cmd, char buf[RTIME_BUFSZ], struct err *e)
{
    const json_t *v = json_object_get(cmd, "occurred_at");
    char d[64];
    if (!v)
        return err_set(e, ERR_INVALID, "occurred_at is required");
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID, "occurred_at must be a string, got %s", ecom_describe(v, d));
    struct err pe = {0};
    int rc = rtime_normalize(json_string_value(v), buf, &pe);
    if (rc)
        return rename_msg(e, ERR_INVALID, "", "occurred_at", "time", pe.msg);
    return 0;
}

int ecom_id(const json_t *cmd, const char *field, const char **out, struct err *e)
{
    const json_t *v = json_object_get(cmd, field);
    char d[64];
    if (!v)
        return err_set(e, ERR_INVALID, "%s is required", field);
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID, "%s must be a string, got %s", field, ecom_describe(v, d));
    if (json_string_length(v) == 0)
        return err_set(e, ERR_INVALID, "%s must not be empty", field);
    *out = json_string_value(v);
    return 0;
}

int ecom_opt_string(const json_t *cmd, const char *field, json_t **out, struct err *e)
{
    const json_t *v = json_object_get(cmd, field);
    char d[64];
    if (!v || json_is_null(v)) {
        *out = json_null();
        return 0;
    }
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID, "%s must be a string or null, got %s", field,
                       ecom_describe(v, d));
    *out = json_stringn(json_string_value(v), json_string_length(v));
    return 0;
}

int ecom_money_field(const json_t *obj, const char *field, const char *prefix, int64_t *out,
                     struct err *e)
{
    const json_t *v = json_object_get(obj, field);
    char d[64];
    if (!v)
        return err_set(e, ERR_INVALID, "%s%s is required", prefix, field);
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID, "%s%s must be a decimal string such as \"2.55\", got %s",
                       prefix, field, ecom_describe(v, d));
    struct err pe = {0};
    if (money_parse_wide(json_string_value(v), out, &pe))
        return rename_msg(e, ERR_INVALID, prefix, field, "amount", pe.msg);
    return 0;
}

int ecom_line_parse(const json_t *obj, const char *prefix, struct ecom_line *l, struct err *e)
{
    char d[64];
    memset(l, 0, sizeof *l);

    const json_t *v = json_object_get(obj, "sku");
    if (!v)
        return err_set(e, ERR_INVALID, "%ssku is required", prefix);
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID, "%ssku must be a string, got %s", prefix,
                       ecom_describe(v, d));
    if (json_string_length(v) == 0)
        return err_set(e, ERR_INVALID, "%ssku must not be empty", prefix);
    if (json_string_length(v) > ECOM_MAX_SKU)
        return err_set(e, ERR_INVALID, "%ssku is %zu bytes long, more than %d", prefix,
                       json_string_length(v), ECOM_MAX_SKU);
    for (const unsigned char *c = (const unsigned char *)json_string_value(v); *c; c++)
        if (*c < 0x20 || *c == 0x7f || *c == '/')
            return err_set(e, ERR_INVALID,
                           "%ssku must not hold control characters or '/' (it is a path segment "
                           "of /products/{sku})",
                           prefix);
    l->sku = json_string_value(v);

    v = json_object_get(obj, "description");
    if (!v || json_is_null(v)) {
        l->description = "";
    } else if (!json_is_string(v)) {
        return err_set(e, ERR_INVALID, "%sdescription must be a string or null, got %s", prefix,
                       ecom_describe(v, d));
    } else if (json_string_length(v) > ECOM_MAX_DESCRIPTION) {
        return err_set(e, ERR_INVALID, "%sdescription is %zu bytes long, more than %d", prefix,
                       json_string_length(v), ECOM_MAX_DESCRIPTION);
    } else {
        l->description = json_string_value(v);
    }

    v = json_object_get(obj, "quantity");
    if (!v)
        return err_set(e, ERR_INVALID, "%squantity is required", prefix);
    if (!json_is_integer(v))
        return err_set(e, ERR_INVALID, "%squantity must be an integer, got %s", prefix,
                       ecom_describe(v, d));
    l->quantity = (int64_t)json_integer_value(v);

    v = json_object_get(obj, "unit_price");
    if (!v)
        return err_set(e, ERR_INVALID, "%sunit_price is required", prefix);
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID,
                       "%sunit_price must be a decimal string such as \"2.55\", got %s", prefix,
                       ecom_describe(v, d));
    l->price_text = json_string_value(v);
    struct err pe = {0};
    if (money_parse(l->price_text, &l->unit_price, &pe))
        return rename_msg(e, ERR_INVALID, prefix, "unit_price", "amount", pe.msg);
    return 0;
}

int ecom_line_check(struct ecom_line *l, const char *prefix, struct err *e)
{
    if (l->quantity <= 0)
        return err_set(e, ERR_REJECTED, "%squantity must be a positive integer, got %" PRId64,
                       prefix, l->quantity);
    if (l->quantity > ECOM_MAX_QUANTITY)
        return err_set(e, ERR_REJECTED, "%squantity must be at most %d, got %" PRId64, prefix,
                       ECOM_MAX_QUANTITY, l->quantity);
    if (l->unit_price < 0)
        return err_set(e, ERR_REJECTED, "%sunit_price must not be negative, got \"%.40s\"", prefix,
                       l->price_text);
    if (money_mul(l->unit_price, l->quantity, &l->amount, NULL))
        return err_set(e, ERR_REJECTED,
                       "%samount of %" PRId64 " x \"%.40s\" for sku \"%.100s\" is too large",
                       prefix, l->quantity, l->price_text, l->sku);
    return 0;
}

json_t *ecom_money_json(int64_t thousandths)
{
    char buf[MONEY_BUFSZ];
    return json_string(money_format(thousandths, buf));
}

json_t *ecom_string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *ecom_line_json(const char *sku, const char *description, int64_t quantity,
                       int64_t unit_price, int64_t amount)
{
    json_t *o = json_object();
    json_object_set_new(o, "sku", json_string(sku));
    json_object_set_new(o, "description", json_string(description ? description : ""));
    json_object_set_new(o, "quantity", json_integer((json_int_t)quantity));
    json_object_set_new(o, "unit_price", ecom_money_json(unit_price));
    json_object_set_new(o, "amount", ecom_money_json(amount));
    return o;
}

void *ecom_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}
