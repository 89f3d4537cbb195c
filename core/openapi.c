/* core/openapi.c — GET /openapi.json and GET /problems/{name} (see
 * openapi.h). The document is built from the routes of the generation
 * serving, so a module's commands and queries are in it as loaded: a
 * command's body from its id field and .fields, its replies; a query's
 * parameters; the built-in routes from the table below. Schemas are JSON
 * Schema 2020-12, as OpenAPI 3.1 (https://spec.openapis.org/oas/v3.1.0)
 * uses it. */
#include "core/openapi.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/auth.h"
#include "core/err.h"
#include "core/util.h"

/* ---------- the problem types ---------- */

static const struct {
    int code;
    const char *text;
} PROBLEMS[] = {
    {ERR_INVALID, "The request is malformed: a body that is not JSON or not an object, a field of "
                  "the wrong type or out of range, an unknown field, an amount that is not a "
                  "decimal string, a bad header. The detail names what. The same request fails "
                  "the same way: fix it."},
    {ERR_NOT_FOUND, "No such route, stream, aggregate or read-model item. A query sent right after "
                    "a command may not see it yet: send the command's position in "
                    "Cqrsd-Min-Position (read your writes)."},
    {ERR_METHOD, "The route exists, not with this method: the Allow header lists its methods."},
    {ERR_CONFLICT, "Expected-Version did not match the stream's version: another command changed "
                   "the stream first. Read it again, decide again, send again with the new "
                   "version."},
    {ERR_TOO_LARGE, "The request body is larger than the server's CQRSD_MAX_BODY."},
    {ERR_MEDIA_TYPE, "A body must be sent as application/json."},
    {ERR_REJECTED, "The command was understood and refused by a business rule, which the detail "
                   "names (checking out an empty cart, paying the wrong amount). Sending it "
                   "again changes nothing."},
    {ERR_IDEMPOTENCY, "The Idempotency-Key was used before with a different request. A new "
                      "request needs a new key."},
    {ERR_UNAVAILABLE, "PostgreSQL or Redis cannot be reached, the server is shutting down, or the "
                      "API keys cannot be read yet. Retry after Retry-After seconds; a command "
                      "sent again with its Idempotency-Key is stored at most once."},
    {ERR_BUSY, "The dispatcher's queue is full (CQRSD_QUEUE). Retry after Retry-After seconds."},
    {ERR_INTERNAL, "A fault of the server or of a module, or a damaged read model. The detail and "
                   "the server's log (find the request by its X-Request-Id) say more."},
    {ERR_THROTTLED, "The function is at its concurrency limit. Retry after Retry-After seconds."},
    {ERR_TIMEOUT, "The function did not finish within its timeout, or a query sent with "
                  "Cqrsd-Min-Position waited past its bound (the detail says how far behind the "
                  "projection is). A command may still complete: send it again with its "
                  "Idempotency-Key to learn its outcome."},
    {ERR_FAILED, "The retry of a parked event failed again; the error is recorded with it."},
    {ERR_MODULES, "The reload of the modules was refused (the detail says why); the generation "
                  "serving goes on."},
    {ERR_STATE_CONFLICT, "The item is not in a state that allows this: a parked event already "
                         "resolved, a rebuild already running, a webhook deleted."},
    {ERR_UNAUTHORIZED, "No API key, or one unknown or revoked: send Authorization: Bearer <key> "
                       "(an operator makes one with cqrsd keys create)."},
    {ERR_FORBIDDEN, "The API key lacks the scope this route needs: command for commands, query "
                    "for queries, admin for the built-in routes."},
};

/* "not-found" for ERR_NOT_FOUND, as disp_problem writes the type. */
static void slug(int code, char out[64])
{
    const char *n = err_name(code);
    size_t i = 0;
    for (; *n && i + 1 < 64; n++)
        out[i++] = *n == '_' ? '-' : (char)tolower((unsigned char)*n);
    out[i] = '\0';
}

int openapi_problem_page(const char *name, char **html)
{
    for (size_t i = 0; i < sizeof PROBLEMS / sizeof *PROBLEMS; i++) {
        char s[64];
        slug(PROBLEMS[i].code, s);
        if (strcmp(s, name))
            continue;
        *html = xasprintf("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                          "<title>%s: %s</title></head>\n<body>\n<h1>%s</h1>\n"
                          "<p>HTTP status <b>%d</b>, problem type <code>/problems/%s</code> "
                          "(RFC 9457).</p>\n<p>%s</p>\n</body></html>\n",
                          s, err_title(PROBLEMS[i].code), err_title(PROBLEMS[i].code),
                          err_http_status(PROBLEMS[i].code), s, PROBLEMS[i].text);
        return 0;
    }
    return ERR_NOT_FOUND;
}

/* ---------- the document ---------- */

static json_t *ref(const char *name)
{
    return json_pack("{s:s}", "$ref", name);
}

static json_t *problem_response(int code)
{
    return json_pack("{s:s, s:{s:{s:o}}}", "description", err_title(code), "content",
                     "application/problem+json", "schema", ref("#/components/schemas/Problem"));
}

/* Adds the problem replies of codes (terminated by 0) to responses. */
static void problems(json_t *responses, const int *codes)
{
    for (; *codes; codes++) {
        char st[8];
        snprintf(st, sizeof st, "%d", err_http_status(*codes));
        if (!json_object_get(responses, st))
            json_object_set_new(responses, st, problem_response(*codes));
    }
}

static json_t *json_response(const char *description, json_t *schema)
{
    return json_pack("{s:s, s:{s:{s:o}}}", "description", description, "content",
                     "application/json", "schema", schema);
}

/* A loose object schema: these properties required, any others allowed. */
static json_t *object_with(const char *const *required)
{
    json_t *o = json_pack("{s:s}", "type", "object");
    json_t *req = json_array(), *props = json_object();
    for (; required && *required; required++) {
        json_array_append_new(req, json_string(*required));
        json_object_set_new(props, *required, json_object());
    }
    json_object_set_new(o, "properties", props);
    json_object_set_new(o, "required", req);
    return o;
}

static json_t *path_params(const char *pattern)
{
    json_t *ps = json_array();
    for (const char *p = strchr(pattern, '{'); p; p = strchr(p + 1, '{')) {
        size_t n = strcspn(p + 1, "}");
        char *name = xasprintf("%.*s", (int)n, p + 1);
        json_array_append_new(ps, json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", name, "in",
                                            "path", "required", 1, "schema", "type", "string"));
        free(name);
    }
    return ps;
}

static json_t *header_param(const char *name, const char *description)
{
    return json_pack("{s:s, s:s, s:b, s:s, s:{s:s}}", "name", name, "in", "header", "required", 0,
                     "description", description, "schema", "type", "string");
}

static const int COMMAND_ERRORS[] = {ERR_INVALID,    ERR_NOT_FOUND,   ERR_CONFLICT,
                                     ERR_TOO_LARGE,  ERR_MEDIA_TYPE,  ERR_REJECTED,
                                     ERR_IDEMPOTENCY, ERR_THROTTLED,  ERR_UNAVAILABLE,
                                     ERR_TIMEOUT,    ERR_INTERNAL,    0};
static const int QUERY_ERRORS[] = {ERR_INVALID,     ERR_NOT_FOUND, ERR_THROTTLED,
                                   ERR_UNAVAILABLE, ERR_TIMEOUT,   ERR_INTERNAL, 0};
static const int AUTH_ERRORS[] = {ERR_UNAUTHORIZED, ERR_FORBIDDEN, 0};

static json_t *command_op(const struct reg_command *c)
{
    const struct fn_command *fc = c->c;
    json_t *props = json_object(), *req = json_array();
    json_object_set_new(props, fc->id_field, json_pack("{s:s}", "type", "string"));
    json_object_set_new(props, "occurred_at",
                        json_pack("{s:s, s:s}", "type", "string", "format", "date-time"));
    for (const char *const *f = fc->fields; f && *f; f++)
        json_object_set_new(props, *f, json_object());
    if (!fc->creates && !strstr(fc->route, fc->id_field))
        json_array_append_new(req, json_string(fc->id_field));
    json_t *body = json_pack("{s:s, s:o, s:o}", "type", "object", "properties", props, "required",
                             req);
    if (fc->fields)
        json_object_set_new(body, "additionalProperties", json_false());
    json_t *params = path_params(fc->route);
    json_array_append_new(params, header_param("Idempotency-Key",
                                               "1 to 255 printable ASCII characters: the same "
                                               "request sent again gets the first reply"));
    json_array_append_new(params, header_param("Expected-Version",
                                               "a version number, \"any\" or \"no-stream\": the "
                                               "command fails with 409 otherwise"));
    json_t *responses = json_object();
    json_object_set_new(responses, fc->creates ? "201" : "200",
                        json_response("the events were appended",
                                      ref("#/components/schemas/CommandReply")));
    problems(responses, COMMAND_ERRORS);
    return json_pack("{s:s, s:s, s:o, s:{s:b, s:{s:{s:o}}}, s:o}", "operationId", fc->name,
                     "summary", fc->name, "parameters", params, "requestBody", "required", 0,
                     "content", "application/json", "schema", body, "responses", responses);
}

static json_t *query_op(const struct reg_query *q)
{
    json_t *params = path_params(q->q->route);
    json_array_append_new(params, header_param("Cqrsd-Min-Position",
                                               "a command's position: answer once the read "
                                               "models have passed it (README \"Read your "
                                               "writes\")"));
    json_array_append_new(params, header_param("Prefer", "wait=<seconds> (RFC 7240): the "
                                                         "longest to wait for Cqrsd-Min-Position"));
    json_t *responses = json_object();
    json_t *ok = json_response("the read model", json_pack("{s:s}", "type", "object"));
    json_object_set_new(ok, "headers",
                        json_pack("{s:{s:s, s:{s:s}}}", "Cqrsd-Position", "description",
                                  "a position the read models had reached at least", "schema",
                                  "type", "string"));
    json_object_set_new(responses, "200", ok);
    problems(responses, QUERY_ERRORS);
    return json_pack("{s:s, s:s, s:o, s:o}", "operationId", q->q->name, "summary", q->q->name,
                     "parameters", params, "responses", responses);
}

/* The built-in routes: their 2xx reply (status, media type, the fields it
 * always has) and their problems. */
static const struct {
    enum reg_builtin b;
    const char *summary;
    int status;
    const char *media; /* NULL: application/json */
    const char *required[6];
} BUILTINS[] = {
    {REG_STREAM, "the events of a stream", 200, NULL, {"stream", "events"}},
    {REG_HEALTH, "liveness", 200, NULL, {"status"}},
    {REG_READY, "readiness (503 with the same shape when not ready)", 200, NULL,
     {"status", "postgres", "redis", "position", "projections"}},
    {REG_METRICS, "Prometheus metrics", 200, "text/plain", {0}},
    {REG_FUNCTIONS, "the functions loaded and their counters", 200, NULL,
     {"generation", "functions"}},
    {REG_PARKED, "parked events", 200, NULL, {"parked", "next_after"}},
    {REG_PARKED_RETRY, "run a parked event again", 200, NULL, {"id", "state"}},
    {REG_RELOAD, "reload the modules", 200, NULL, {"generation", "modules"}},
    {REG_MODULES, "the modules loaded", 200, NULL, {"generation", "modules"}},
    {REG_PROJECTIONS, "projections: checkpoint, lag, state", 200, NULL, {"head", "projections"}},
    {REG_REBUILD, "a blue/green rebuild of a projection", 202, NULL, {"projection", "state"}},
    {REG_PAUSE, "pause a projection", 200, NULL, {"projection", "state", "paused_at"}},
    {REG_RESUME, "resume a projection", 200, NULL, {"projection", "state", "paused_at"}},
    {REG_ADMIN_PAGE, "the admin page", 200, "text/html", {0}},
    {REG_ERRORS, "recent warnings and errors", 200, NULL, {"errors"}},
    {REG_HOOK_CREATE, "register a webhook", 201, NULL, {"id", "url", "secret"}},
    {REG_HOOK_LIST, "the webhooks", 200, NULL, {"webhooks"}},
    {REG_HOOK_DELETE, "delete a webhook", 200, NULL, {"id", "active"}},
    {REG_HOOK_DELIVERIES, "webhook deliveries", 200, NULL, {"deliveries", "next_after"}},
    {REG_HOOK_RETRY, "deliver a parked delivery again", 200, NULL, {"id", "state"}},
    {REG_PROBLEM, "what a problem type means", 200, "text/html", {0}},
    {REG_OPENAPI, "this document", 200, NULL, {"openapi", "paths"}},
};

static const int BUILTIN_ERRORS[] = {ERR_INVALID,     ERR_NOT_FOUND, ERR_STATE_CONFLICT,
                                     ERR_FAILED,      ERR_MODULES,   ERR_TOO_LARGE,
                                     ERR_MEDIA_TYPE,  ERR_UNAVAILABLE, ERR_TIMEOUT,
                                     ERR_INTERNAL,    0};

static json_t *builtin_op(const struct reg_route *r)
{
    for (size_t i = 0; i < sizeof BUILTINS / sizeof *BUILTINS; i++) {
        if (BUILTINS[i].b != r->builtin)
            continue;
        json_t *responses = json_object();
        char st[8];
        snprintf(st, sizeof st, "%d", BUILTINS[i].status);
        json_t *ok;
        if (BUILTINS[i].media)
            ok = json_pack("{s:s, s:{s:{s:{s:s}}}}", "description", BUILTINS[i].summary,
                           "content", BUILTINS[i].media, "schema", "type", "string");
        else
            ok = json_response(BUILTINS[i].summary, object_with(BUILTINS[i].required));
        json_object_set_new(responses, st, ok);
        if (r->builtin == REG_READY) /* not ready: the same shape */
            json_object_set_new(responses, "503",
                                json_response("not ready", object_with(BUILTINS[i].required)));
        if (r->builtin != REG_HEALTH)
            problems(responses, BUILTIN_ERRORS);
        json_t *op = json_pack("{s:s, s:o, s:o}", "summary", BUILTINS[i].summary, "parameters",
                               path_params(r->pattern), "responses", responses);
        if (r->builtin == REG_HOOK_CREATE)
            json_object_set_new(op, "requestBody",
                                json_pack("{s:b, s:{s:{s:o}}}", "required", 1, "content",
                                          "application/json", "schema",
                                          object_with((const char *const[]){"url", "event_types",
                                                                             NULL})));
        return op;
    }
    return json_pack("{s:s, s:{s:{s:s}}}", "summary", r->pattern, "responses", "default",
                     "description", "see README");
}

json_t *openapi_document(const struct reg *r, int auth)
{
    json_t *paths = json_object();
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct reg_route *rt = &r->routes[i];
        json_t *item = json_object_get(paths, rt->pattern);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, rt->pattern, item);
        }
        json_t *op = rt->kind == REG_COMMAND ? command_op(rt->target)
                     : rt->kind == REG_QUERY ? query_op(rt->target)
                                             : builtin_op(rt);
        if (auth && auth_route_scope(rt)) {
            json_object_set_new(op, "security", json_pack("[{s:[]}]", "bearer"));
            problems(json_object_get(op, "responses"), AUTH_ERRORS);
        }
        char m[16];
        snprintf(m, sizeof m, "%s", rt->method);
        for (char *c = m; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        json_object_set_new(item, m, op);
        if (!strcmp(m, "get")) /* HEAD is GET without a body (RFC 9110 §9.3.2) */
            json_object_set(item, "head", op);
    }
    json_t *codes = json_array();
    for (size_t i = 0; i < sizeof PROBLEMS / sizeof *PROBLEMS; i++) {
        char s[64];
        slug(PROBLEMS[i].code, s);
        json_array_append_new(codes, json_sprintf("/problems/%s", s));
    }
    json_t *mods = json_array();
    for (size_t i = 0; i < r->nmods; i++)
        json_array_append_new(mods, json_sprintf("%s %s", r->mods[i].desc->name,
                                                 r->mods[i].desc->version
                                                     ? r->mods[i].desc->version
                                                     : ""));
    json_t *problem = json_pack(
        "{s:s, s:[s, s, s, s], s:{s:{s:s, s:o}, s:{s:s}, s:{s:s}, s:{s:s}}}", "type", "object",
        "required", "type", "title", "status", "detail", "properties", "type", "type", "string",
        "enum", codes, "title", "type", "string", "status", "type", "integer", "detail", "type",
        "string");
    json_t *reply = json_pack("{s:s, s:[s, s, s], s:{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}}}",
                              "type", "object", "required", "stream", "version", "position",
                              "properties", "stream", "type", "string", "version", "type",
                              "integer", "position", "type", "string", "streams", "type",
                              "array");
    json_t *doc = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:o, s:{s:{s:o, s:o}}}", "openapi", "3.1.0", "info", "title",
        "cqrsd", "version", "generation", "description",
        "The HTTP API of cqrsd with the modules loaded (README \"HTTP API\"). Problems are "
        "RFC 9457 objects whose type resolves to a page on this server.",
        "paths", paths, "components", "schemas", "Problem", problem, "CommandReply", reply);
    json_object_set_new(json_object_get(doc, "info"), "x-modules", mods);
    json_object_set_new(json_object_get(doc, "info"), "version",
                        json_sprintf("generation %lu", r->generation));
    if (auth)
        json_object_set_new(json_object_get(doc, "components"), "securitySchemes",
                            json_pack("{s:{s:s, s:s}}", "bearer", "type", "http", "scheme",
                                      "bearer"));
    return doc;
}
