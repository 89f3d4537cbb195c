/* core/cmd.h — the command cycle (core/cmd.c). */
#ifndef CQRSD_CMD_H
#define CQRSD_CMD_H

#include <libpq-fe.h>

#include "core/disp.h"

/*
 * Runs job->command on pg (NULL: answers 503) and sets the job's result: the
 * append's reply (201 for a creating command, else 200), the stored reply of
 * its Idempotency-Key, or a problem: 400/404/409/422 as decide or the store
 * decided, 409 after limits.retries re-runs on a version conflict, 500 when
 * the command emitted an event type its module does not declare, 503 when the
 * store is unreachable (the outcome is then unknown: the client retries with
 * its key).
 */
void cmd_run(struct disp_job *job, PGconn *pg);

/*
 * Refuses a field of body that fc does not read (fn_command.fields): not
 * its id field, occurred_at, one of the route parameters params[0..nparams)
 * nor one of fields. Returns 0 (always, when fc->fields is NULL) or
 * ERR_INVALID naming the first such field and the ones fc takes.
 */
int cmd_check_fields(const struct fn_command *fc, const json_t *body,
                     const struct disp_param *params, size_t nparams, struct err *e);

/*
 * Checks and completes cmd (a command object: body plus route parameters)
 * for fc, in place: the id field must be an id (UTIL_ID_MAX bytes of text
 * without '/'), or absent for a creating command when generate_id (a UUID
 * is set then); occurred_at, when present, must be RFC 3339 and is
 * normalised, else it is set to default_at (NULL: now). Returns 0 or
 * ERR_INVALID with a message naming the field.
 */
int cmd_prepare(const struct fn_command *fc, json_t *cmd, int generate_id,
                const char *default_at, struct err *e);

/*
 * Runs the command `name` of generation r with cmd (stolen) on pg, as a
 * reactor or a timer issues it: key is its idempotency key, default_at its
 * occurred_at when cmd has none. *status gets the HTTP status of the outcome.
 * Returns 0 when the command reached an outcome: applied (2xx) or decided
 * against (404, 409, 422: the command's own answer); else the ERR_* code of
 * a failure with a message in e (ERR_INVALID: no such command or a malformed
 * one; ERR_IDEMPOTENCY: the key came with another request before;
 * ERR_UNAVAILABLE, ERR_INTERNAL), after which the caller retries or parks.
 */
int cmd_issue(struct reg *r, PGconn *pg, const char *name, json_t *cmd, const char *key,
              const char *default_at, int *status, struct err *e);

#endif
