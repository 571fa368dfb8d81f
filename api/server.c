/* server.c -- the HTTP process's main: libmicrohttpd on the supervisor's socket,
 * request bodies with a size cap, dispatch through routes.c, and the drain.
 *
 * Threads: MHD's pool (cfg->threads) runs the handlers, each with its own store
 * connection; the writer thread commits submissions (writer.c); the waiters thread
 * resumes held GETs (waiters.c); the notifier thread resumes event streams (events.c);
 * the main thread only waits for SIGTERM. */
#include "api/internal.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------- thread stores */

/* Every store opened by a pool thread, so the drain can close them all. */
static pthread_mutex_t g_stores_mu = PTHREAD_MUTEX_INITIALIZER;
static store **g_stores;
static size_t g_nstores;
static _Thread_local store *tl_store;

store *
api_thread_store(struct api_ctx *ctx)
{
    if (tl_store != NULL)
        return tl_store;
    char err[512];
    store *s = store_open(ctx->cfg->db_path, STORE_DURABLE, 2000, err, sizeof err);
    if (s == NULL) {
        log_error("opening the database: %s", err);
        return NULL;
    }
    pthread_mutex_lock(&g_stores_mu);
    store **grown = realloc(g_stores, (g_nstores + 1) * sizeof *grown);
    if (grown != NULL) {
        g_stores = grown;
        g_stores[g_nstores++] = s;
    }
    pthread_mutex_unlock(&g_stores_mu);
    if (grown == NULL) {
        store_close(s);
        return NULL;
    }
    tl_store = s;
    return s;
}

static void
close_thread_stores(void)
{
    pthread_mutex_lock(&g_stores_mu);
    for (size_t i = 0; i < g_nstores; i++)
        store_close(g_stores[i]);
    free(g_stores);
    g_stores = NULL;
    g_nstores = 0;
    pthread_mutex_unlock(&g_stores_mu);
}

/* ---------------------------------------------------------------- requests */

static void
req_free(struct req *r)
{
    free(r->id);
    free(r->body);
    for (size_t i = 0; r->inputs != NULL && i < r->job.n; i++)
        free(r->inputs[i]);
    free(r->inputs);
    free(r->tasks);
    for (size_t i = 0; r->job.out != NULL && i < r->job.n; i++)
        store_task_clear(&r->job.out[i]);
    free(r->job.out);
    free(r->idem_key);
    json_decref(r->doc);
    free(r);
}

/* Appends a body chunk. 0, or the HTTP status that rejects the body. */
static unsigned int
body_append(struct req *r, const char *data, size_t n, size_t max)
{
    if (n > max - r->len)               /* written this way round so it cannot overflow */
        return MHD_HTTP_CONTENT_TOO_LARGE;
    char *p = realloc(r->body, r->len + n);
    if (p == NULL)
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    memcpy(p + r->len, data, n);
    r->body = p;
    r->len += n;
    return 0;
}

static int
hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static enum MHD_Result
reply_too_large(struct api_ctx *ctx, struct MHD_Connection *conn)
{
    return api_reply_errorf(conn, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                            "body is larger than %zu bytes", ctx->cfg->max_body_bytes);
}

/* Compares in time independent of where the strings first differ. */
static int
token_equal(const char *given, const char *want)
{
    size_t n = strlen(want), m = strlen(given);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < m ? given[i] : 0));
    return diff == 0;
}

int
api_bearer_ok(struct MHD_Connection *conn, const char *token)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    return h != NULL && strncmp(h, "Bearer ", 7) == 0 && token_equal(h + 7, token);
}

/* Does this request carry the API token, when one is configured? */
static int
authorized(struct api_ctx *ctx, struct MHD_Connection *conn, const char *url)
{
    const char *token = ctx->cfg->api_token;
    if (token == NULL || token[0] == '\0' || strncmp(url, "/v1/", 4) != 0)
        return 1;                       /* /healthz, /readyz, /metrics (its own token), /
                                         * (a page without data) stay open */
    return api_bearer_ok(conn, token);
}

static enum MHD_Result
handle_request(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r,
               const char *url, const char *method, const char *data, size_t *data_size)
{
    if (r->start_us == 0) {             /* 1st call: headers only */
        access_begin(r, conn, method);
        int m = routes_match(method, url, r);
        if (m == 500)
            return MHD_NO;
        r->reject = (unsigned int)m;
        r->cors = ctx->cfg->ncors_origins > 0;
        r->cors_origin = cors_allow_origin(
            ctx->cfg, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin"));
        /* a browser's preflight carries no credentials: it passes the token check, and
         * is answered once the request is read (answering now would close the
         * connection) */
        if (r->cors && m == MHD_HTTP_METHOD_NOT_ALLOWED && strcmp(method, "OPTIONS") == 0) {
            r->reject = MHD_HTTP_NO_CONTENT;
            return MHD_YES;
        }
        if (!authorized(ctx, conn, url))
            return api_reply_json(conn, MHD_HTTP_UNAUTHORIZED,
                                  json_pack("{s:{s:s, s:s}}", "error", "code", "unauthorized",
                                            "message", "this request needs "
                                            "`Authorization: Bearer <token>`"),
                                  MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                  "Bearer realm=\"warmpool\"");
        /* a declared length over the cap is refused now, without reading the body */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL) {
            errno = 0;
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno != 0 || *end != '\0' || n > ctx->cfg->max_body_bytes)
                return reply_too_large(ctx, conn);
        }
        return MHD_YES;
    }
    if (*data_size != 0) {              /* a body chunk: MHD forbids replying now */
        if (r->reject == 0 || r->reject == MHD_HTTP_NOT_FOUND ||
            r->reject == MHD_HTTP_METHOD_NOT_ALLOWED || r->reject == MHD_HTTP_NO_CONTENT) {
            unsigned int st = body_append(r, data, *data_size, ctx->cfg->max_body_bytes);
            if (st != 0)
                r->reject = st;
        }
        *data_size = 0;                 /* consumed, or drained after a failure */
        return MHD_YES;
    }
    switch (r->reject) {                /* whole body seen: now we may answer */
    case 0:
        return r->handler(ctx, conn, r);
    case MHD_HTTP_NO_CONTENT:
        return cors_preflight(conn, r);
    case MHD_HTTP_CONTENT_TOO_LARGE:
        return reply_too_large(ctx, conn);
    case MHD_HTTP_NOT_FOUND:
        return api_reply_errorf(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such path: %.200s",
                                url);
    case MHD_HTTP_METHOD_NOT_ALLOWED: {
        char msg[128];
        snprintf(msg, sizeof msg, "method %.16s is not allowed here; allowed: %s", method,
                 r->allow);
        return api_reply_json(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                              json_pack("{s:{s:s, s:s}}", "error", "code", "method_not_allowed",
                                        "message", msg),
                              MHD_HTTP_HEADER_ALLOW, r->allow);
    }
    default:
        return MHD_NO;                  /* out of memory */
    }
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *data, size_t *data_size, void **con_cls)
{
    (void)version;
    struct req *r = *con_cls;
    if (r == NULL) {                    /* freed in on_completed() */
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        *con_cls = r;
    }
    api_reply_bind(r);                  /* the answers queued below are r's */
    enum MHD_Result ret = handle_request(cls, conn, r, url, method, data, data_size);
    api_reply_bind(NULL);
    return ret;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct api_ctx *ctx = cls;
    struct req *r = *con_cls;
    if (r == NULL)
        return;
    access_log(r, conn, toe);
    api_metrics_request_done(r);
    if (r->wait.active)                 /* cannot happen while suspended; defensive */
        waiters_remove(ctx->waiters, &r->wait);
    req_free(r);
    *con_cls = NULL;
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* libmicrohttpd's messages, at most MHD_LOG_PER_S a second: a flood of refused
 * connections (the connection caps) must not become a flood of log lines. The
 * count of those left out is logged with the next message that gets through. */
#define MHD_LOG_PER_S 10
static atomic_llong mhd_log_second;
static atomic_int mhd_log_count, mhd_log_dropped;

static void
on_mhd_error(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    long long now_s = (long long)(clock_mono_ms() / 1000);
    long long seen = atomic_load(&mhd_log_second);
    if (seen != now_s && atomic_compare_exchange_strong(&mhd_log_second, &seen, now_s))
        atomic_store(&mhd_log_count, 0);
    if (atomic_fetch_add(&mhd_log_count, 1) >= MHD_LOG_PER_S) {
        atomic_fetch_add(&mhd_log_dropped, 1);
        return;
    }
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    int dropped = atomic_exchange(&mhd_log_dropped, 0);
    if (dropped > 0)
        log_warn("libmicrohttpd: %s (%d earlier messages were not logged)", msg, dropped);
    else
        log_warn("libmicrohttpd: %s", msg);
}

/* Percent-decoding of the path and query, as MHD's own, except that "%00" stays as
 * written: decoded, it would cut "/v1/tasks/1%00" down to task 1. */
static size_t
unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *out = s;
    for (const char *in = s; *in != '\0'; in++) {
        int hi, lo;
        if (in[0] == '%' && (hi = hexval(in[1])) >= 0 && (lo = hexval(in[2])) >= 0 &&
            (hi | lo) != 0) {
            *out++ = (char)(hi * 16 + lo);
            in += 2;
        } else {
            *out++ = *in;
        }
    }
    *out = '\0';
    return (size_t)(out - s);
}

/* ---------------------------------------------------------------- run and drain */

int
api_server_run(const struct api_config *cfg)
{
    static struct api_ctx ctx;          /* outlives MHD's threads */
    ctx.cfg = cfg;
    atomic_store(&ctx.draining, 0);
    char err[512];

    store *st = store_open(cfg->db_path, STORE_DURABLE, 5000, err, sizeof err);
    if (st == NULL) {
        log_error("opening the database: %s", err);
        return 1;
    }
    ctx.cursor_secret = store_secret(st);
    store_close(st);

    ctx.writer = writer_start(&ctx, err, sizeof err);
    if (ctx.writer == NULL) {
        log_error("starting the writer: %s", err);
        return 1;
    }
    ctx.waiters = waiters_start(&ctx, err, sizeof err);
    if (ctx.waiters == NULL) {
        log_error("starting the waiters: %s", err);
        writer_free(ctx.writer);
        return 1;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (api_events_start(err, sizeof err) != 0) {
        log_error("starting the event streams: %s", err);
        waiters_free(ctx.waiters);
        writer_free(ctx.writer);
        return 1;
    }
    ctx.daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, &ctx,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, NULL,
        MHD_OPTION_LISTEN_SOCKET, cfg->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &ctx,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        /* headers and read buffer of a connection; libmicrohttpd zeroes all of it
         * after each request of a kept-alive connection: 64 KB cost a 64 KB memset
         * per request, 14 % of an HTTP thread's time (BENCHMARKS.md, Profiles). Bodies
         * of any size stream through it; the request line and headers must fit: up to
         * about 14 KB (measured: 12 KB of headers pass, 16 KB get 431) */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,     /* idle or slow clients */
        MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
        /* 0 is libmicrohttpd's "no cap" too */
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_connections_per_ip,
        MHD_OPTION_END);
    if (ctx.daemon == NULL) {
        log_error("libmicrohttpd did not start");
        api_events_stop();
        waiters_free(ctx.waiters);
        writer_free(ctx.writer);
        return 1;
    }
    log_info("serving HTTP with %d threads", cfg->threads);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    log_info("%s: draining", strsignal(sig));

    /* 1. refuse new work: stop accepting, answer 503 on kept-alive connections */
    atomic_store(&ctx.draining, 1);
    api_reply_set_closing();
    MHD_socket lfd = MHD_quiesce_daemon(ctx.daemon);   /* ours to close: at exit */
    /* Quiesced, MHD's threads no longer poll the socket, but the kernel still accepts
     * connections into its backlog (for this process's copy, the supervisor's...)
     * that nobody serves and that are reset at the last close. When the service is
     * draining, shut the socket down: it stops listening for every copy, and new
     * connections are refused at once (issue 8). Not when only this process stops:
     * the supervisor restarts it on the same socket. */
    const struct api_hooks *hk = &cfg->hooks;
    if (lfd != MHD_INVALID_SOCKET && hk->service_draining != NULL &&
        hk->service_draining(hk->arg) && shutdown(lfd, SHUT_RD) != 0)
        log_warn("shutting down the listening socket: %s", strerror(errno));
    /* 2. held GETs answer now with their task's current state; event streams end */
    waiters_wake_all(ctx.waiters);
    api_events_close_all();
    /* 3. everything queued is committed and answered (a submission that slipped past
     *    the drain check gets 503 from now on) */
    writer_stop(ctx.writer);
    /* 4. give the resumed requests a moment to be written out */
    int64_t until = clock_mono_ms() + 2000;
    while (clock_mono_ms() < until) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(ctx.daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info == NULL || info->num_connections == 0)
            break;
        clock_sleep_ms(10);
    }
    waiters_stop(ctx.waiters);
    MHD_stop_daemon(ctx.daemon);
    api_events_stop();
    /* only now can no handler be holding the writer or the waiters */
    waiters_free(ctx.waiters);
    writer_free(ctx.writer);
    ctx.waiters = NULL;
    ctx.writer = NULL;
    close_thread_stores();
    log_info("HTTP stopped");
    return 0;
}
