/* core/openapi.h — the API's own description: GET /openapi.json, an
 * OpenAPI 3.1 document (https://spec.openapis.org/oas/v3.1.0) of every
 * route of a generation, and GET /problems/{name}, the page each RFC 9457
 * problem "type" of the replies resolves to. */
#ifndef CQRSD_OPENAPI_H
#define CQRSD_OPENAPI_H

#include <jansson.h>

#include "core/reg.h"

/* The document of generation r (a new reference); auth: API keys are
 * required (the routes that need one say so, with their 401 and 403). */
json_t *openapi_document(const struct reg *r, int auth);

/* The HTML page of problem type /problems/<name> into *html (owned by the
 * caller). Returns 0, or ERR_NOT_FOUND for a type cqrsd does not answer. */
int openapi_problem_page(const char *name, char **html);

#endif
