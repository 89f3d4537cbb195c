/* core/migrate.h — forward-only, numbered SQL migrations (migrations/NNNN_name.sql),
 * compiled into the binary by tools/embed_migrations.sh.
 *
 * Each is applied once, in name order, in its own transaction, and recorded in
 * schema_migrations with the SHA-256 of its text (computed by PostgreSQL's
 * sha256(), PostgreSQL docs §9.5 "Binary String Functions"). An applied
 * migration whose text has changed since is refused: nothing is applied and
 * the error names the file. Concurrent migrators serialise on an advisory lock.
 */
#ifndef CQRSD_MIGRATE_H
#define CQRSD_MIGRATE_H

#include <libpq-fe.h>

#include "core/err.h"

struct migration {
    const char *name; /* "0001_event_store.sql" */
    const char *sql;
};

/* The migrations built into this binary; terminated by {NULL, NULL}. */
extern const struct migration migrations_embedded[];

/* Applies the migrations of list not yet applied. *applied (may be NULL) gets
 * how many were applied now. Returns 0, ERR_CONFLICT (an applied migration
 * was edited, or the database holds a migration this list lacks), or
 * ERR_UNAVAILABLE / ERR_INTERNAL with the server's message. */
int migrate_run(PGconn *pg, const struct migration *list, int *applied, struct err *e);

/* How far the database is from list, without changing it: *pending gets the
 * migrations of list not applied yet, *unknown those applied that list lacks
 * (a newer binary migrated it). Checksums are not compared (migrate_run
 * does). Returns 0, or ERR_UNAVAILABLE with the server's message. */
int migrate_status(PGconn *pg, const struct migration *list, int *pending, int *unknown,
                   struct err *e);

#endif
