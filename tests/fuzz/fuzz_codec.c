/* tests/fuzz/fuzz_codec.c — libFuzzer target: the event codecs. Money and
 * RFC 3339 strings round-trip exactly (parse, format, parse gives the same
 * value), and every projection applies arbitrary event data without
 * crashing (stored events are JSON objects of any shape). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/fn_int.h"
#include "core/reg.h"
#include "tests/fuzz/fuzz_module.h"
#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t v, w;
    if (money_parse_wide(s, &v, NULL) == 0) {
        char buf[MONEY_BUFSZ];
        if (money_parse_wide(money_format(v, buf), &w, NULL) || v != w)
            abort();
    }
    int64_t us, us2;
    int off, off2;
    if (rtime_parse(s, &us, &off, NULL) == 0) {
        char buf[RTIME_BUFSZ], day[11];
        if (rtime_parse(rtime_format(us, off, buf), &us2, &off2, NULL) || us != us2 || off != off2)
            abort();
        rtime_local_date(us, day);
    }
    json_t *j = json_loadb(s, size, 0, NULL);
    if (json_is_object(j)) {
        const struct reg *r = fuzz_module();
        struct fn_batch b;
        fn_batch_init(&b);
        for (size_t p = 0; p < r->nprojs; p++) {
            const struct fn_projection *fp = r->projs[p].p;
            fn_batch_set_prefix(&b, fp->name, fp->version);
            for (const struct fn_on_event *h = fp->on; h->type; h++) {
                struct fn_event ev = {"fuzz-1", 1, h->type, j, "00000000000000010000000000000001",
                                      "2011-01-01T00:00:00+00:00", ""};
                struct err e;
                h->apply(&b, &ev, &e);
            }
        }
        fn_batch_clear(&b);
    }
    json_decref(j);
    free(s);
    return 0;
}
