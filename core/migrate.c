/* core/migrate.c — applies numbered migrations once, in order, with checksums
 * (see migrate.h). States of a migration: unknown to the database -> applied
 * (its SQL and its schema_migrations row commit together). */
#include "core/migrate.h"

#include <stdio.h>
#include <string.h>

#include "core/util.h"

#define MIGRATE_LOCK_KEY "7203119410"

static int fail(PGconn *pg, PGresult *r, const char *what, struct err *e)
{
    char m[300];
    snprintf(m, sizeof m, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    size_t l = strlen(m);
    while (l && m[l - 1] == '\n')
        m[--l] = '\0';
    if (r)
        PQclear(r);
    int code = PQstatus(pg) == CONNECTION_OK ? ERR_INTERNAL : ERR_UNAVAILABLE;
    return err_set(e, code, "could not %s: %s", what, m);
}

static int exec_ok(PGconn *pg, const char *sql, const char *what, struct err *e)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return fail(pg, r, what, e);
    PQclear(r);
    return 0;
}

static int run_locked(PGconn *pg, const struct migration *list, int *applied, struct err *e)
{
    int rc = exec_ok(pg,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " name text PRIMARY KEY, checksum text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     "create schema_migrations", e);
    if (rc)
        return rc;
    PGresult *r = PQexec(pg, "SELECT name, checksum FROM schema_migrations ORDER BY name");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return fail(pg, r, "read schema_migrations", e);
    int rows = PQntuples(r);
    /* 1. every applied migration must be known and unedited */
    for (int i = 0; i < rows; i++) {
        const char *name = PQgetvalue(r, i, 0), *sum = PQgetvalue(r, i, 1);
        const struct migration *m = list;
        while (m->name && strcmp(m->name, name))
            m++;
        if (!m->name) {
            err_set(e, ERR_CONFLICT,
                    "database has migration \"%s\" that this cqrsd does not know: it is newer "
                    "than this binary",
                    name);
            PQclear(r);
            return ERR_CONFLICT;
        }
        const char *p[1] = {m->sql};
        PGresult *h = PQexecParams(pg, "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", 1,
                                   NULL, p, NULL, NULL, 0);
        if (PQresultStatus(h) != PGRES_TUPLES_OK) {
            PQclear(r);
            return fail(pg, h, "checksum a migration", e);
        }
        int same = !strcmp(PQgetvalue(h, 0, 0), sum);
        if (!same) {
            err_set(e, ERR_CONFLICT,
                    "migration \"%s\" was edited after it was applied (checksum %.12s… applied, "
                    "%.12s… now): add a new migration instead",
                    name, sum, PQgetvalue(h, 0, 0));
            PQclear(h);
            PQclear(r);
            return ERR_CONFLICT;
        }
        PQclear(h);
    }
    /* 2. apply the rest in order */
    int n = 0;
    for (const struct migration *m = list; m->name; m++) {
        int done = 0;
        for (int i = 0; i < rows && !done; i++)
            done = !strcmp(PQgetvalue(r, i, 0), m->name);
        if (done)
            continue;
        if ((rc = exec_ok(pg, "BEGIN", "begin a migration", e)))
            break;
        PGresult *x = PQexec(pg, m->sql);
        if (PQresultStatus(x) != PGRES_COMMAND_OK && PQresultStatus(x) != PGRES_TUPLES_OK) {
            char what[300];
            snprintf(what, sizeof what, "apply migration \"%s\"", m->name);
            rc = fail(pg, x, what, e);
            PQclear(PQexec(pg, "ROLLBACK"));
            break;
        }
        PQclear(x);
        const char *p[2] = {m->name, m->sql};
        x = PQexecParams(pg,
                         "INSERT INTO schema_migrations (name, checksum) "
                         "VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'))",
                         2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(x) != PGRES_COMMAND_OK) {
            rc = fail(pg, x, "record a migration", e);
            PQclear(PQexec(pg, "ROLLBACK"));
            break;
        }
        PQclear(x);
        if ((rc = exec_ok(pg, "COMMIT", "commit a migration", e)))
            break;
        log_info("applied migration %s", m->name);
        n++;
    }
    PQclear(r);
    if (applied)
        *applied = n;
    return rc;
}

int migrate_run(PGconn *pg, const struct migration *list, int *applied, struct err *e)
{
    if (applied)
        *applied = 0;
    int rc = exec_ok(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", "lock migrations", e);
    if (rc)
        return rc;
    rc = run_locked(pg, list, applied, e);
    PQclear(PQexec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return rc;
}

int migrate_status(PGconn *pg, const struct migration *list, int *pending, int *unknown,
                   struct err *e)
{
    *pending = *unknown = 0;
    PGresult *r = PQexec(pg, "SELECT name FROM schema_migrations");
    int rows = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        rows = PQntuples(r);
    } else if (!strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE) ?: "", "42P01")) {
        PQclear(r); /* undefined_table: never migrated, everything is pending */
        r = NULL;
    } else {
        return fail(pg, r, "read schema_migrations", e);
    }
    for (const struct migration *m = list; m->name; m++) {
        int found = 0;
        for (int i = 0; i < rows && !found; i++)
            found = !strcmp(PQgetvalue(r, i, 0), m->name);
        *pending += !found;
    }
    for (int i = 0; i < rows; i++) {
        const struct migration *m = list;
        while (m->name && strcmp(m->name, PQgetvalue(r, i, 0)))
            m++;
        *unknown += !m->name;
    }
    PQclear(r);
    return 0;
}
