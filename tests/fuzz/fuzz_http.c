/* tests/fuzz/fuzz_http.c — libFuzzer target: URL decoding and routing.
 * Input: "METHOD\nPATH". The decoded path never holds a NUL before its end,
 * routing never crashes, and every match has only non-empty parameters. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/http.h"
#include "core/reg.h"
#include "tests/fuzz/fuzz_module.h"
#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = xmalloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';
    char *nl = memchr(in, '\n', size);
    const char *method = "GET";
    char *path = in;
    if (nl) {
        *nl = '\0';
        method = in;
        path = nl + 1;
    }
    size_t before = strlen(path);
    size_t n = http_unescape(path);
    if (n > before || strlen(path) != n)
        abort(); /* decoding only shrinks, and leaves no NUL inside */
    struct reg *r = fuzz_module();
    struct http_match m;
    char allow[64];
    if (http_route(r, method, path, &m, allow) == 0) {
        for (size_t i = 0; i < m.nparams; i++)
            if (!m.values[i][0])
                abort();
        http_match_clear(&m);
    }
    free(in);
    return 0;
}
