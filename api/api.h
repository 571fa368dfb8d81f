/* api.h -- the HTTP process: libmicrohttpd serving API v1 on a socket it is handed.
 *
 * The HTTP process knows nothing of kinds or workers beyond what `api_hooks` tells
 * it: service/ supplies them, so api/ depends on storage/ only. */
#ifndef WP_API_H
#define WP_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct wake;
struct store_task;

struct api_hooks {
    void *arg;
    /* -1: no such kind; 0: the input can run; 1: refused, with the reason in err */
    int (*validate)(void *arg, const char *kind, const json_t *input, char *err,
                    size_t errlen);
    json_t *(*workers)(void *arg);      /* new reference: the stats "workers" array */
    json_t *(*kinds)(void *arg);        /* new reference: the stats "kinds" array */
    int (*workers_alive)(void *arg);    /* number of live workers, for /readyz */
    /* non-zero when the whole service drains (not only this process): then the drain
     * also stops the kernel from accepting on the shared listening socket */
    int (*service_draining)(void *arg);
};

struct api_config {
    int listen_fd;              /* a bound, listening socket; not closed by api */
    const char *db_path;
    size_t max_body_bytes;      /* larger bodies get 413; exactly this size is accepted */
    int64_t default_timeout_ms; /* a task's timeout_ms when the submission has none */
    int threads;                /* libmicrohttpd thread-pool size */
    unsigned max_connections;   /* open connections at once (>= threads) */
    unsigned max_connections_per_ip;    /* 0: no cap */
    struct wake *wake;          /* common/wake.h: posted n when n tasks are committed */
    int notify_fd;              /* pipe, read end: int64 ids of tasks now terminal */
    int64_t started_at_ms;      /* when the service started, for uptime_s */
    const char *api_token;      /* NULL or "": no authentication */
    const char *metrics_token;  /* NULL or "": GET /metrics is open */
    unsigned max_event_streams; /* GET /v1/events streams open at once; more get 503 */
    int64_t max_pending;        /* 0: no cap */
    int64_t retention_ms;       /* 0: keep finished tasks */
    int submit_relaxed;         /* --durability normal: the writer commits submissions
                                 * STORE_RELAXED, else STORE_DURABLE (docs/reliability.md) */
    int (*request_reload)(void);    /* POST /v1/admin/reload; NULL: no such route */
    const char *const *cors_origins;    /* --cors-origin: "*" or origins; may be NULL */
    int ncors_origins;                  /* 0: no CORS headers at all */
    /* --callback-allow (issue 13): the HOST[:PORT] a task's callback_url may name
     * (HOST alone: port 80); none: callback_url is refused */
    const char *const *callback_allow;
    int ncallback_allow;
    struct api_hooks hooks;
};

/* The task object that GET /v1/tasks/{id} answers (a new reference, NULL when out of
 * memory): what a completion callback posts (service/callbacks.c). */
json_t *api_task_json(const struct store_task *t);

/* Serves until SIGTERM or SIGINT (which the caller must have blocked in this thread,
 * so that they are taken with sigwait), then drains: stops accepting, answers
 * held requests, commits queued submissions, and returns. 0, or 1 if it could not
 * start (logged). */
int api_server_run(const struct api_config *cfg);

#endif
