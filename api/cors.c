/* cors.c -- Cross-Origin Resource Sharing (--cors-origin), so that web pages served
 * from another origin can call the API (the Fetch standard's CORS protocol).
 *
 * Off unless --cors-origin is given; then OPTIONS on a known path answers 204 (a
 * preflight), and every answer to an allowed origin carries Access-Control-Allow-Origin.
 * Only the origin is checked here: a request from an allowed page still needs the API
 * token like any other. No credentials mode (cookies): the token travels in
 * Authorization, which the preflight allows. */
#include "api/internal.h"

#include <stdio.h>
#include <string.h>

/* What a page may send and read (the Fetch standard: anything else is hidden from it). */
#define ALLOW_HEADERS "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
#define EXPOSE_HEADERS "Location, Retry-After, X-Request-Id"
#define PREFLIGHT_MAX_AGE_S "600"   /* browsers cap it anyway (Chromium: 2 hours) */

const char *
cors_allow_origin(const struct api_config *cfg, const char *origin)
{
    if (origin == NULL)
        return NULL;                    /* not a cross-origin request from a browser */
    for (int i = 0; i < cfg->ncors_origins; i++) {
        if (strcmp(cfg->cors_origins[i], "*") == 0)
            return "*";
        if (strcmp(cfg->cors_origins[i], origin) == 0)
            return cfg->cors_origins[i];
    }
    return NULL;
}

void
cors_add_headers(struct MHD_Response *resp, const struct req *r)
{
    if (!r->cors)
        return;
    /* the answer depends on Origin (allowed or not, and which one is echoed), so a cache
     * between us and the browser must key on it: on every answer, allowed or not */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    if (r->cors_origin == NULL)
        return;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, r->cors_origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
}

enum MHD_Result
cors_preflight(struct MHD_Connection *conn, struct req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"",
                                                                MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
        char allow[sizeof r->allow + 16];
        snprintf(allow, sizeof allow, "%s, OPTIONS", r->allow);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        if (r->cors_origin != NULL) {
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", r->allow);
            MHD_add_response_header(resp, "Access-Control-Allow-Headers", ALLOW_HEADERS);
            MHD_add_response_header(resp, "Access-Control-Max-Age", PREFLIGHT_MAX_AGE_S);
        }
    }
    return api_reply_queue(conn, MHD_HTTP_NO_CONTENT, resp, 0);
}
