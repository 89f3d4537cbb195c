/* commands/ecom.h — validation and JSON building shared by the e-commerce
 * command functions (commands/cart.c, commands/order.c, commands/return.c).
 *
 * Everything here is pure: no I/O, no clock, no global state. Validation
 * helpers return 0 or an ERR_* code with a PostgreSQL-style message in e;
 * they never emit. The contract they enforce is docs/events.md:
 *   - ids, sku, description, customer_id, country are JSON strings;
 *   - quantities are JSON integers, 1 ..= ECOM_MAX_QUANTITY;
 *   - money is a decimal string (core/money.h grammar) held as int64
 *     thousandths and written back with money_format.
 * Error classes: a wrong JSON type, a missing required field or a malformed
 * value is ERR_INVALID (400); a well-formed value a business rule refuses
 * (quantity <= 0, negative price, a limit, int64 overflow) is ERR_REJECTED (422).
 */
#ifndef CQRSD_COMMANDS_ECOM_H
#define CQRSD_COMMANDS_ECOM_H

#include <jansson.h>
#include <stdint.h>

#include <cqrsd/fn.h>

/* Limits from docs/events.md. */
#define ECOM_MAX_QUANTITY 1000000
#define ECOM_MAX_SKU 100           /* bytes */
#define ECOM_MAX_DESCRIPTION 1000  /* bytes */
#define ECOM_MAX_LINES 10000       /* lines of a cart or a return */

/* One item line of a command (cart.add_item's body, a return's line).
 * Strings are borrowed from the cmd JSON they were parsed from. */
struct ecom_line {
    const char *sku;         /* non-empty, <= ECOM_MAX_SKU bytes */
    const char *description; /* "" when absent or null; <= ECOM_MAX_DESCRIPTION bytes */
    int64_t quantity;        /* as given; 1 ..= ECOM_MAX_QUANTITY after ecom_line_check */
    const char *price_text;  /* unit_price exactly as given, for messages */
    int64_t unit_price;      /* thousandths; >= 0 after ecom_line_check */
    int64_t amount;          /* quantity * unit_price; set by ecom_line_check */
};

/* Reads cmd.occurred_at (required string) and writes its normalised RFC 3339
 * form into buf. ERR_INVALID when missing, not a string or not RFC 3339. */
int ecom_occurred_at(const json_t *cmd, char buf[RTIME_BUFSZ], struct err *e);

/* Reads the required id field (cart_id, order_id, return_id, ...): a
 * non-empty string. *out is borrowed from cmd. ERR_INVALID otherwise. */
int ecom_id(const json_t *cmd, const char *field, const char **out, struct err *e);

/* Reads an optional string field (customer_id, country, reason): absent or
 * null gives a new JSON null, a string gives a new JSON string with the same
 * text; anything else is ERR_INVALID. On success *out is a new reference the
 * caller owns (typically stolen into event data). */
int ecom_opt_string(const json_t *cmd, const char *field, json_t **out, struct err *e);

/* Reads a money field that must be a decimal string (e.g. order.pay's
 * amount) in the money_parse grammar but over the whole int64 range, since
 * totals may exceed MONEY_MAX_INPUT. *out is thousandths. ERR_INVALID when
 * missing, not a string or malformed. prefix ("" or "line 2: ") starts messages. */
int ecom_money_field(const json_t *obj, const char *field, const char *prefix, int64_t *out,
                     struct err *e);


/* Phase 1 of a line: JSON types and formats only (ERR_INVALID): sku required
 * non-empty string <= 100 bytes, description optional string <= 1000 bytes,
 * quantity required JSON integer, unit_price required decimal string parsed
 * by money_parse (<= 3 fractional digits, |value| <= MONEY_MAX_INPUT).
 * obj must be an object. prefix ("" or "line 2: ") starts every message. */
int ecom_line_parse(const json_t *obj, const char *prefix, struct ecom_line *l, struct err *e);

/* Phase 2 of a line: business rules (ERR_REJECTED): 1 <= quantity <=
 * ECOM_MAX_QUANTITY, unit_price >= 0, amount fits int64. Sets l->amount. */
int ecom_line_check(struct ecom_line *l, const char *prefix, struct err *e);

/* realloc that aborts when memory is exhausted, as the platform does. */
void *ecom_realloc(void *p, size_t n);

/* A new JSON string of money_format(thousandths), e.g. 2550 -> "2.55". */
json_t *ecom_money_json(int64_t thousandths);

/* A new JSON string of s, or JSON null when s is NULL. */
json_t *ecom_string_or_null(const char *s);

/* A new line object {sku, description, quantity, unit_price, amount} as the
 * lines of OrderPlaced / ReturnRecorded carry it. Strings are copied. */
json_t *ecom_line_json(const char *sku, const char *description, int64_t quantity,
                       int64_t unit_price, int64_t amount);

/* Writes a short description of a JSON value for messages into buf: the
 * compact JSON text for scalars (truncated to fit), "an object"/"an array"
 * otherwise. Returns buf. */
char *ecom_describe(const json_t *v, char buf[64]);

#endif
