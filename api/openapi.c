/* openapi.c -- GET /openapi.json: the OpenAPI 3.1 description of this API.
 *
 * The document is api/openapi.json, built into the binary by cmake/embed.cmake, so the
 * description served is always the one of this build. tests/unit/test_routes.c holds it
 * against the route table (every route documented, every documented route in the table)
 * and tests/contract/check_openapi.py against live answers. */
#include "api/internal.h"

enum MHD_Result
api_openapi(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)ctx;
    (void)r;
    return api_reply_static(conn, MHD_HTTP_OK, "application/json", API_OPENAPI_JSON,
                            API_OPENAPI_JSON_LEN);
}
