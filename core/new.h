/* core/new.h — `cqrsd new NAME [DIR]`: writes a module folder from the
 * template of tools/template/, embedded in the binary at build time. */
#ifndef CQRSD_NEW_H
#define CQRSD_NEW_H

struct new_file {
    const char *path;    /* relative, with @NAME@ */
    const char *content; /* with @NAME@, @PASCAL@, @UPPER@ */
};

/* The template, {0, 0}-terminated (build/template.c). */
extern const struct new_file new_template[];

/* Runs `cqrsd new` with its arguments (argv[0] is "new"); returns the exit
 * status: 0, 1 when a file cannot be written, 2 for bad arguments or a
 * folder that exists. */
int new_main(int argc, char **argv);

#endif
