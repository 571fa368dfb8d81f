/* dashboard.c -- GET /: the dashboard, one HTML page with its CSS and JavaScript inside,
 * built into the binary from api/dashboard.html (cmake/embed.cmake): no file to
 * install, nothing fetched from elsewhere, so it works offline.
 *
 * The page holds no data and is served open, with or without --api-token; the data
 * it shows comes from the API (/v1/stats, /v1/tasks, /v1/events), which keeps its
 * token: the page asks for it once and keeps it for the browser session. Every URL
 * the page uses is relative to where it was loaded, so it works behind a reverse proxy
 * under a path prefix. */
#include "api/internal.h"

enum MHD_Result
api_dashboard(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)ctx;
    (void)r;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        API_DASHBOARD_HTML_LEN, (void *)API_DASHBOARD_HTML, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return api_reply_queue(conn, MHD_HTTP_OK, NULL, 0);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    /* the page's own script and style only, and calls to its own origin: it renders data
     * as text (never as markup), and loads nothing from elsewhere */
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
                            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    return api_reply_queue(conn, MHD_HTTP_OK, resp, API_DASHBOARD_HTML_LEN);
}
