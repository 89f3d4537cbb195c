/* tests/fuzz/fuzz_command.c — libFuzzer target: every command function on
 * arbitrary JSON. The input is folded as an event of every type into a fresh
 * state (evolve must survive malformed stored data), then given to decide as
 * the command (decide must answer an error value, never crash). Decisions
 * are checked to carry JSON objects as event data. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/fn_int.h"
#include "core/reg.h"
#include "tests/fuzz/fuzz_module.h"
#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return 0;
    const struct reg *r = fuzz_module();
    const char *const *types = cqrsd_module.events;
    for (size_t c = 0; c < r->ncmds; c++) {
        const struct fn_command *fc = r->cmds[c].c;
        for (int folded = 0; folded <= 1; folded++) {
            void *state = xcalloc(1, fc->state_size ? fc->state_size : 1);
            int64_t version = 0;
            for (size_t t = 0; folded && types[t]; t++) {
                struct fn_event ev = {"fuzz-1", ++version, types[t], j, "", "", ""};
                fc->evolve(state, &ev);
            }
            struct fn_decision d;
            struct err e = {0};
            fn_decision_init(&d, cqrsd_module.events);
            if (fc->decide(state, version, j, &d, &e) == 0) {
                for (size_t i = 0; i < d.n; i++)
                    if (!json_is_object(d.ev[i].data))
                        abort();
            }
            fn_decision_free(&d);
            if (fc->release)
                fc->release(state);
            free(state);
        }
    }
    json_decref(j);
    return 0;
}
