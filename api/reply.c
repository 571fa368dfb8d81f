/* reply.c -- every HTTP answer is queued here, and every error body is built here. */
#include "api/internal.h"
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Set during a drain: every answer asks the client to close its connection, so
 * kept-alive clients let go and the HTTP process can stop sooner. */
static atomic_int g_closing;

void api_reply_set_closing(void) { atomic_store(&g_closing, 1); }

/* Handlers answer on the thread that MHD called them on, so the request being
 * answered is a thread-local: no handler has to pass it down. */
static _Thread_local struct req *tl_req;

void api_reply_bind(struct req *r) { tl_req = r; }

enum MHD_Result
api_reply_queue(struct MHD_Connection *conn, unsigned int status, struct MHD_Response *resp,
                size_t body_bytes)
{
    if (resp == NULL) {
        log_error("out of memory building a %u reply", status);
        return MHD_NO;              /* MHD drops the connection */
    }
    struct req *r = tl_req;
    if (r != NULL) {
        MHD_add_response_header(resp, "X-Request-Id", r->request_id);
        cors_add_headers(resp, r);
    }
    if (atomic_load(&g_closing))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);     /* our reference; the queue keeps its own */
    if (r != NULL && ret == MHD_YES) {
        r->status = status;
        r->bytes = body_bytes;
    }
    return ret;
}

enum MHD_Result
api_reply_static(struct MHD_Connection *conn, unsigned int status, const char *content_type,
                 const char *data, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return api_reply_queue(conn, status, resp, len);
}

enum MHD_Result
api_reply_json(struct MHD_Connection *conn, unsigned int status, json_t *body,
               const char *extra_header, const char *extra_value)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    return api_reply_json_text(conn, status, text, text != NULL ? strlen(text) : 0,
                               extra_header, extra_value);
}

enum MHD_Result
api_reply_json_text(struct MHD_Connection *conn, unsigned int status, char *text, size_t len,
                    const char *extra_header, const char *extra_value)
{
    struct MHD_Response *resp = text == NULL ? NULL
        : MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);                 /* MHD adopts text only on success */
        return api_reply_queue(conn, status, NULL, 0);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (extra_header != NULL)
        MHD_add_response_header(resp, extra_header, extra_value);
    return api_reply_queue(conn, status, resp, len);
}

enum MHD_Result
api_reply_error(struct MHD_Connection *conn, unsigned int status, const char *code,
                const char *message)
{
    const char *hdr = NULL, *val = NULL;
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) {
        hdr = MHD_HTTP_HEADER_RETRY_AFTER;
        val = "1";
    }
    return api_reply_json(conn, status,
                          json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message),
                          hdr, val);
}

enum MHD_Result
api_reply_errorf(struct MHD_Connection *conn, unsigned int status, const char *code,
                 const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return api_reply_error(conn, status, code, msg);
}

enum MHD_Result
api_reply_store_error(struct MHD_Connection *conn, int status, const char *what,
                      const char *detail)
{
    switch (status) {
    case STORE_NOTFOUND:
        return api_reply_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such task");
    case STORE_CONFLICT:
        return api_reply_errorf(conn, MHD_HTTP_CONFLICT, "conflict", "%s", what);
    case STORE_BUSY:
        log_warn("%s: database busy: %s", what, detail);
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                               "the database is busy; retry shortly");
    case STORE_FULL:
        log_error("%s: disk full: %s", what, detail);
        return api_reply_error(conn, MHD_HTTP_INSUFFICIENT_STORAGE, "insufficient_storage",
                               "the database's disk is full; nothing was stored");
    case STORE_IOERR:
        log_error("%s: I/O error: %s", what, detail);
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "io_error",
                               "the database could not be read or written; retry shortly");
    case STORE_UNAVAILABLE:
        log_warn("%s: database unavailable: %s", what, detail);
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                               "the database cannot be reached; retry shortly");
    default:
        log_error("%s: %s", what, detail);     /* a server error is logged as it is sent */
        return api_reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                               "internal error; see the service log");
    }
}
