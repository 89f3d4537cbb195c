/* core/money.h — exact money: int64 thousandths of the currency unit.
 *
 * JSON carries money as decimal strings ("2.55", "0.001"); inside cqrsd it is
 * an int64 count of thousandths (2.55 -> 2550). Never binary floating point.
 */
#ifndef CQRSD_MONEY_H
#define CQRSD_MONEY_H

#include <stdint.h>

#include "err.h"

/* Largest amount accepted from input or computed by a command:
 * 999,999,999,999.999 (1e15 - 1 thousandths). */
#define MONEY_MAX_INPUT 999999999999999LL

/* Buffer size that fits any formatted int64 amount. */
#define MONEY_BUFSZ 32

/* Parses a decimal string: optional '-', digits, optional '.' and 1 to 3
 * fractional digits ("12", "2.5", "0.001", "-3.10"). No exponent, no spaces,
 * no '+', at least one integer digit, no negative zero ("-0", "-0.00": zero
 * has one spelling). |value| must be <= MONEY_MAX_INPUT.
 * Returns 0 and sets *out, or ERR_INVALID with a message naming what is wrong. */
int money_parse(const char *s, int64_t *out, struct err *e);

/* The same grammar over the whole int64 range, for amounts cqrsd computed
 * itself (totals read back from events may exceed MONEY_MAX_INPUT). */
int money_parse_wide(const char *s, int64_t *out, struct err *e);

/* Formats thousandths as a decimal with 2 or 3 fractional digits: 2550 ->
 * "2.55", 1 -> "0.001", 12000 -> "12.00", -500 -> "-0.50". Returns buf. */
char *money_format(int64_t thousandths, char buf[MONEY_BUFSZ]);

/* *out = a + b or a * b; returns ERR_REJECTED (out untouched) when the result
 * is beyond ±MONEY_MAX_INPUT: no amount a command records (a line, a cart, an
 * order, a return) is larger, so read-model sums of them stay far from int64
 * overflow (9.2e15 currency units would take over 9,000 orders at the limit). */
int money_add(int64_t a, int64_t b, int64_t *out, struct err *e);
int money_mul(int64_t amount, int64_t quantity, int64_t *out, struct err *e);

#endif
