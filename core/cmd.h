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

#endif
