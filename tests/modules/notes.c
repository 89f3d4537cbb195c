/* tests/modules/notes.c — a fixture module for test_timers: a command that
 * takes notes, a reactor that copies each note (through an internal
 * command), a projection that counts them, a query that reads it.
 *
 * Deliberately impure, for the failure tests only: the reactor and the
 * projection fail on a note whose data has "poison": true while the file
 * named by CQRSD_TEST_POISON exists; removing the file is "the fix", after
 * which a parked note can be tried again (POST /admin/parked/{id}/retry).
 * Real functions never look at the world like this.
 *
 * Built twice: notes.so (NOTES_VERSION 1) and notes_v2.so (NOTES_VERSION 2:
 * the projection at version 2, retrying a poisoned note up to 100 times, and
 * the query saying "schema": 2), for test_reload's new projection version.
 */
#ifndef NOTES_VERSION
#define NOTES_VERSION 1
#endif
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cqrsd/fn.h>

static const char EV_NoteTaken[] = "NoteTaken";
static const char EV_NoteCopied[] = "NoteCopied";
static const char *const events[] = {EV_NoteTaken, EV_NoteCopied, NULL};

static int poisoned(const json_t *data)
{
    const char *f = getenv("CQRSD_TEST_POISON");
    return json_is_true(json_object_get(data, "poison")) && f && access(f, F_OK) == 0;
}

static void evolve(void *state, const struct fn_event *ev)
{
    *(int *)state += ev->version > 0;
}

/* note.take: POST /notes {note_id, text, poison?} -> NoteTaken */
static int take(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                struct err *e)
{
    (void)state;
    if (version > 0)
        return err_set(e, ERR_CONFLICT, "note exists");
    fn_emit(d, EV_NoteTaken,
            json_pack("{s:O, s:O, s:b}", "note_id", json_object_get(cmd, "note_id"), "text",
                      json_object_get(cmd, "text") ?: json_null(), "poison",
                      json_is_true(json_object_get(cmd, "poison"))));
    return 0;
}

/* note.copy (internal): {copy_id} -> NoteCopied in "copy-<id>" */
static int copy(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                struct err *e)
{
    (void)state;
    (void)e;
    fn_emit(d, EV_NoteCopied,
            json_pack("{s:O, s:I}", "copy_id", json_object_get(cmd, "copy_id"), "seen_version",
                      (json_int_t)version));
    return 0;
}

static const struct fn_command note_take = {
    .abi = FN_ABI_VERSION, .name = "note.take", .method = "POST", .route = "/notes",
    .category = "note", .id_field = "note_id", .creates = 1, .state_size = sizeof(int),
    .evolve = evolve, .decide = take,
};
static const struct fn_command note_copy = {
    .abi = FN_ABI_VERSION, .name = "note.copy", .category = "copy", .id_field = "copy_id",
    .state_size = sizeof(int), .evolve = evolve, .decide = copy,
};

static int echo(struct fn_react *r, const struct fn_event *ev, struct err *e)
{
    if (poisoned(ev->data))
        return err_set(e, ERR_INTERNAL, "poisoned note %s",
                       json_string_value(json_object_get(ev->data, "note_id")));
    fn_issue(r, "note.copy", json_pack("{s:O}", "copy_id", json_object_get(ev->data, "note_id")));
    return 0;
}

static const struct fn_on_react echo_on[] = {{EV_NoteTaken, echo}, {NULL, NULL}};
static const struct fn_reactor notes_echo = {
    .abi = FN_ABI_VERSION, .name = "notes.echo", .on = echo_on,
    .limits = {.retries = 3, .backoff_ms = 50},
};

static int count(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    const char *id = json_string_value(json_object_get(ev->data, "note_id"));
    if (poisoned(ev->data))
        return err_set(e, ERR_INTERNAL, "poisoned note %s", id ? id : "?");
    fn_hincrby(b, "count", "notes", 1);
    if (id) {
        char *k = fn_asprintf("note:%s", id);
        fn_hincrby(b, k, "seen", 1);
        free(k);
    }
    return 0;
}

static const struct fn_on_event notes_on[] = {{EV_NoteTaken, count}, {NULL, NULL}};
static const struct fn_projection notes_view = {
    .abi = FN_ABI_VERSION, .name = "notes", .version = NOTES_VERSION, .on = notes_on,
    .limits = {.retries = NOTES_VERSION == 1 ? 3 : 100, .backoff_ms = 50},
};

/* GET /notes/{note_id}: {note_id, seen, notes} */
static int get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    const char *id = fn_param(q, "note_id");
    struct fn_hash note, all;
    char *k = fn_asprintf("note:%s", id);
    int rc = fn_hgetall(q, "notes", k, &note, e);
    free(k);
    int64_t seen = 0, notes = 0;
    if (!rc)
        rc = fn_hgetall(q, "notes", "count", &all, e);
    if (!rc)
        rc = fn_hash_int(&note, "seen", &seen, e);
    if (!rc)
        rc = fn_hash_int(&all, "notes", &notes, e);
    if (!rc)
        *out = json_pack("{s:s, s:I, s:I, s:i}", "note_id", id, "seen", (json_int_t)seen,
                         "notes", (json_int_t)notes, "schema", NOTES_VERSION);
    return rc;
}

static const struct fn_query notes_get = {
    .abi = FN_ABI_VERSION, .name = "notes.get", .route = "/notes/{note_id}", .run = get,
};

static const struct fn_command *const commands[] = {&note_take, &note_copy, NULL};
static const struct fn_projection *const projections[] = {&notes_view, NULL};
static const struct fn_query *const queries[] = {&notes_get, NULL};
static const struct fn_reactor *const reactors[] = {&notes_echo, NULL};

FN_MODULE = {
    .abi = FN_ABI_VERSION, .name = "notes", .version = NOTES_VERSION == 1 ? "1" : "2",
    .events = events,
    .commands = commands, .projections = projections, .queries = queries,
    .reactors = reactors,
};
