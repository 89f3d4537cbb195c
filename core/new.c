/* core/new.c — `cqrsd new NAME [DIR]` (see new.h): a module folder with one
 * command, one projection, one query, their cases and a Makefile that builds
 * it against the installed ABI (pkg-config cqrsd). NAME becomes the module's
 * name, the prefix of its functions and routes, and in @PASCAL@ form the
 * prefix of its event type. Nothing is written when DIR exists. */
#include "core/new.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/util.h"

/* s with every @NAME@, @PASCAL@, @UPPER@ replaced; caller frees. */
static char *fill(const char *s, const char *name, const char *pascal, const char *upper)
{
    size_t cap = strlen(s) * 2 + 64, n = 0;
    char *out = xmalloc(cap);
    while (*s) {
        const char *with = NULL;
        size_t skip = 0;
        if (!strncmp(s, "@NAME@", 6))
            with = name, skip = 6;
        else if (!strncmp(s, "@PASCAL@", 8))
            with = pascal, skip = 8;
        else if (!strncmp(s, "@UPPER@", 7))
            with = upper, skip = 7;
        size_t add = with ? strlen(with) : 1;
        if (n + add + 1 > cap) {
            cap = (n + add + 1) * 2;
            out = xrealloc(out, cap);
        }
        if (with) {
            memcpy(out + n, with, add);
            s += skip;
        } else {
            out[n] = *s++;
        }
        n += add;
    }
    out[n] = '\0';
    return out;
}

/* mkdir -p of the folder part of path. */
static int make_parents(const char *path)
{
    char *p = xstrdup(path);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(p, 0755) && errno != EEXIST) {
            free(p);
            return -1;
        }
        *c = '/';
    }
    free(p);
    return 0;
}

int new_main(int argc, char **argv)
{
    int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    if (argc < 2 || argc > 3 || help) {
        fputs("usage: cqrsd new NAME [DIR]\n"
              "  writes DIR (default ./NAME): a module with one command, one projection, one\n"
              "  query, their cases, and a Makefile building it with pkg-config cqrsd.\n"
              "  NAME: a lowercase letter, then up to 40 of a-z, 0-9 and '_'.\n",
              help ? stdout : stderr);
        return help ? 0 : 2;
    }
    const char *name = argv[1];
    size_t len = strlen(name);
    int ok = len >= 1 && len <= 41 && islower((unsigned char)name[0]);
    for (size_t i = 0; ok && i < len; i++)
        ok = islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) || name[i] == '_';
    if (!ok) {
        fprintf(stderr, "cqrsd new: \"%s\" is not a module name: a lowercase letter, then up to "
                        "40 of a-z, 0-9 and '_'\n", name);
        return 2;
    }
    const char *dir = argc == 3 ? argv[2] : name;
    if (!*dir) {
        fputs("cqrsd new: DIR is empty; nothing written\n", stderr);
        return 2;
    }
    struct stat st;
    if (stat(dir, &st) == 0) {
        fprintf(stderr, "cqrsd new: %s exists; nothing written\n", dir);
        return 2;
    }
    char *pascal = xmalloc(len + 1), *upper = xmalloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        upper[i] = (char)toupper((unsigned char)name[i]);
        if (name[i] == '_')
            continue;
        pascal[k++] = (i == 0 || name[i - 1] == '_') ? (char)toupper((unsigned char)name[i])
                                                     : name[i];
    }
    pascal[k] = '\0';
    upper[len] = '\0';
    int code = 0, files = 0, cases = 0;
    for (const struct new_file *f = new_template; f->path && !code; f++) {
        char *rel = fill(f->path, name, pascal, upper);
        char *path = xasprintf("%s/%s", dir, rel);
        char *text = fill(f->content, name, pascal, upper);
        FILE *out = NULL;
        if (make_parents(path) || !(out = fopen(path, "wx")) || fputs(text, out) < 0) {
            fprintf(stderr, "cqrsd new: cannot write %s: %s\n", path, strerror(errno));
            code = 1;
        }
        if (out && fclose(out) && !code) {
            fprintf(stderr, "cqrsd new: cannot write %s: %s\n", path, strerror(errno));
            code = 1;
        }
        files++;
        /* each case has exactly one expectation: then.jsonl, then.json or error.json */
        cases += !strncmp(rel, "cases/", 6) &&
                 (strstr(rel, "/then.json") != NULL || strstr(rel, "/error.json") != NULL);
        free(rel);
        free(path);
        free(text);
    }
    if (!code)
        printf("wrote %s/: module.c (command %s.record, projection %s_totals, query %s.get), "
               "Makefile, README.md and %d cases in %s/cases/\n"
               "next:\n"
               "  cd %s && make && make test\n"
               "  CQRSD_MODULES=$PWD/build/%s.so cqrsd serve\n",
               dir, name, name, name, cases, dir, dir, name);
    (void)files;
    free(pascal);
    free(upper);
    return code;
}
