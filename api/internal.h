/* internal.h -- what the files of api/ share with each other, and nothing else. */
#ifndef WP_API_INTERNAL_H
#define WP_API_INTERNAL_H

#include "api/api.h"
#include "storage/store.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>

#define API_MAX_BATCH 1000
#define API_MAX_IDEM_KEY 200
#define API_MAX_WAIT_S 60
#define API_MAX_SCHEDULE_MS (366LL * 86400 * 1000)   /* run_at, delay_ms: a year ahead at most (issue 13) */
#define API_MAX_LIMIT 1000
#define API_DEFAULT_LIMIT 100
#define API_MAX_REQUEST_ID 128     /* X-Request-Id taken from a request: 1..128 safe chars */

struct writer;
struct req;
struct waiters;

/* The HTTP process's state, shared by its threads. */
struct api_ctx {
    const struct api_config *cfg;
    struct MHD_Daemon *daemon;
    atomic_int draining;        /* set once on SIGTERM: refuse new work */
    uint64_t cursor_secret;
    struct writer *writer;
    struct waiters *waiters;
};

/* ---------------------------------------------------------------- writer.c */
/* A group of tasks to insert atomically, and what became of it. */
#define WRITER_QUEUE_FULL 1000     /* writer_job statuses beside the STORE_* codes */
#define WRITER_SHUTTING_DOWN 1001

struct writer_job {
    struct MHD_Connection *conn;    /* suspended until the job is done */
    size_t n;
    store_new_task *tasks;          /* n of them, borrowed from the request */
    store_task *out;                /* n of them, filled on STORE_OK / STORE_EXISTS */
    int status;                     /* STORE_OK, STORE_EXISTS (n == 1 only) or an error */
    char errmsg[256];
    struct writer_job *next;
};

struct writer *writer_start(struct api_ctx *ctx, char *err, size_t errlen);
/* Queues a job whose connection the caller has already suspended; the writer
 * resumes it once the job's transaction committed or failed. */
void writer_submit(struct writer *w, struct writer_job *job);
/* Commits everything queued, then stops the thread; later jobs are answered
 * WRITER_SHUTTING_DOWN. The struct stays valid until writer_free(). NULL-safe. */
void writer_stop(struct writer *w);
void writer_free(struct writer *w);     /* after MHD has stopped; NULL-safe */

/* ---------------------------------------------------------------- waiters.c */
struct waiter {
    struct MHD_Connection *conn;
    int64_t task_id;
    int64_t deadline_ms;            /* monotonic */
    int active;                     /* registered and suspended */
    struct waiter *next;
};

struct waiters *waiters_start(struct api_ctx *ctx, char *err, size_t errlen);
/* Suspends w->conn and registers it until its task is terminal or its deadline:
 * 0. After waiters_stop(): -1, and the connection is not suspended. */
int waiters_add(struct waiters *ws, struct waiter *w);
/* Resumes every waiter of task_id. */
void waiters_wake(struct waiters *ws, int64_t task_id);
void waiters_wake_all(struct waiters *ws);
/* Removes w if it is still registered (a connection that ends early). */
void waiters_remove(struct waiters *ws, struct waiter *w);
/* Stops the thread and resumes every waiter; the struct stays valid until
 * waiters_free() (after MHD has stopped). NULL-safe. */
void waiters_stop(struct waiters *ws);
void waiters_free(struct waiters *ws);

/* ---------------------------------------------------------------- request state */
enum req_phase { PHASE_NEW = 0, PHASE_COMMIT, PHASE_WAIT };

typedef enum MHD_Result (*api_handler)(struct api_ctx *ctx, struct MHD_Connection *conn,
                                       struct req *r);

struct req {
    api_handler handler;        /* NULL: no route; see status */
    const char *route;          /* the route's template ("/v1/tasks/{id}"), or NULL */
    char allow[64];             /* for 405: the methods the path takes */
    char *id;                   /* the {id} path segment, when the route has one */
    char *body;                 /* not NUL-terminated */
    size_t len;                 /* invariant: len <= max_body_bytes */
    unsigned int reject;        /* non-zero: the answer is decided (413, 404, 405; 204: a
                                 * CORS preflight) */
    enum req_phase phase;
    /* a submission being committed */
    struct writer_job job;
    store_new_task *tasks;
    char **inputs;              /* JSON texts of the inputs, owned */
    char *idem_key;
    json_t *doc;                /* the parsed body, kept for idempotency comparison */
    /* a GET ?wait= or POST ?wait= being held */
    struct waiter wait;
    int wait_s;                 /* POST /v1/tasks?wait=S */
    unsigned int hold_status;   /* POST ?wait: the status if the task is not done in time */
    /* for the answer's headers and the access log (access.c, cors.c, reply.c) */
    char method[16];            /* cut to 15 characters */
    char request_id[API_MAX_REQUEST_ID + 1];
    int64_t start_us;           /* monotonic, when the headers arrived */
    unsigned int status;        /* of the answer queued; 0 while there is none */
    size_t bytes;               /* body bytes of that answer */
    int cors;                   /* --cors-origin is set: answers vary by Origin */
    const char *cors_origin;    /* Access-Control-Allow-Origin for this request, or NULL */
};

/* ---------------------------------------------------------------- routes.c */
/* Finds the handler for method and path. 0 found (r->handler, r->id set); 404 no such
 * path; 405 path known, method not (r->allow set). */
int routes_match(const char *method, const char *path, struct req *r);
/* The table itself, for the test that holds it against api/openapi.json. */
size_t routes_count(void);
void routes_at(size_t i, const char **method, const char **pattern);

/* ---------------------------------------------------------------- reply.c */
/* The request whose handler runs on this thread: every answer queued from this thread
 * carries its request id and CORS headers, and its status and size are noted there for
 * the access log. server.c binds it around each call of a handler (NULL: none). */
void api_reply_bind(struct req *r);
/* Queues resp (adding the headers every answer has) and drops the caller's reference;
 * resp NULL is out of memory (MHD_NO). */
enum MHD_Result api_reply_queue(struct MHD_Connection *conn, unsigned int status,
                                struct MHD_Response *resp, size_t body_bytes);
/* Queues len bytes of static data (not copied, never freed) as the reply. */
enum MHD_Result api_reply_static(struct MHD_Connection *conn, unsigned int status,
                                 const char *content_type, const char *data, size_t len);
/* Queues body as the reply (steals body). extra_header/value may be NULL. */
enum MHD_Result api_reply_json(struct MHD_Connection *conn, unsigned int status, json_t *body,
                               const char *extra_header, const char *extra_value);
/* The same with the JSON text already made (steals text, malloc'd; NULL: out of memory). */
enum MHD_Result api_reply_json_text(struct MHD_Connection *conn, unsigned int status,
                                    char *text, size_t len, const char *extra_header,
                                    const char *extra_value);
enum MHD_Result api_reply_error(struct MHD_Connection *conn, unsigned int status,
                                const char *code, const char *message);
enum MHD_Result api_reply_errorf(struct MHD_Connection *conn, unsigned int status,
                                 const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* From now on every answer carries "Connection: close" (the drain). */
void api_reply_set_closing(void);
/* The one place a store failure becomes an HTTP status. */
enum MHD_Result api_reply_store_error(struct MHD_Connection *conn, int status,
                                      const char *what, const char *detail);

/* ---------------------------------------------------------------- taskjson.c */
/* The task object of the API (brief: without input and result). New reference. */
json_t *taskjson_from_store(const store_task *t, int brief);
/* The same object as JSON text, byte for byte what json_dumps(JSON_COMPACT) makes of
 * taskjson_from_store(), built without jansson: input and result are copied as stored.
 * malloc'd, its length in *len; NULL when out of memory or when a string of the task
 * (kind, error) holds anything but printable ASCII: then use taskjson_from_store(). */
char *taskjson_text(const store_task *t, int brief, size_t *len);
/* Checks one submission object against the API's rules and the kind's validate hook.
 * 0 and *nt filled (nt->input is a new malloc'd JSON text stored in *input_text);
 * else -1 with a message naming the field (prefixed by where, e.g. "tasks[3]."). */
int taskjson_parse_submission(const struct api_ctx *ctx, const json_t *obj,
                              const char *where, store_new_task *nt, char **input_text,
                              char *err, size_t errlen);
/* Does an existing task match a repeated submission (same body)? */
int taskjson_same_submission(const store_task *t, const store_new_task *nt);
/* Is url a callback_url the allow list lets through (http://HOST[:PORT]/..., HOST:PORT in
 * allow; an entry without a port allows port 80)? 0, or -1 with the reason in err. */
int taskjson_callback_allowed(const char *url, const char *const *allow, int nallow,
                              char *err, size_t errlen);
/* Parses a task id path segment: 1..19 digits, a positive int64. 0 ok, -1 not an id. */
int taskjson_parse_id(const char *text, int64_t *id);
/* List cursors: opaque, signed with the store's secret. */
void taskjson_cursor_encode(uint64_t secret, int64_t last_id, char out[64]);
int taskjson_cursor_decode(uint64_t secret, const char *text, int64_t *last_id);

/* ---------------------------------------------------------------- tasks.c */
enum MHD_Result api_tasks_create(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_tasks_batch(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_tasks_get(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_tasks_list(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_tasks_cancel(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_stats(struct api_ctx *, struct MHD_Connection *, struct req *);
/* issue 13 (api/queue.c): retry from the dead, pause and resume a kind */
enum MHD_Result api_tasks_retry(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_kinds_pause(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_kinds_resume(struct api_ctx *, struct MHD_Connection *, struct req *);
/* /v1/stats: marks each entry of kinds (borrowed) with "paused", and returns the paused
 * kinds' names as a new array (NULL with *rc set on a store error). */
json_t *api_queue_paused(store *st, json_t *kinds, int *rc);
enum MHD_Result api_healthz(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_readyz(struct api_ctx *, struct MHD_Connection *, struct req *);
enum MHD_Result api_admin_reload(struct api_ctx *, struct MHD_Connection *, struct req *);

/* ---------------------------------------------------------------- events.c */
/* GET /v1/events: task state changes as server-sent events. */
enum MHD_Result api_events(struct api_ctx *, struct MHD_Connection *, struct req *);
/* The notifier thread that resumes waiting streams. 0, or -1 with err. */
int api_events_start(char *err, size_t errlen);
/* The drain: every stream ends (now if it waits, else after what it is sending). */
void api_events_close_all(void);
/* Stops the notifier, after MHD has stopped. */
void api_events_stop(void);
/* Streams open now. */
int api_events_open(void);
/* The HTTP process's own state changes, published as events and counted for
 * /metrics: the tasks a group committed (writer thread), a cancel (a pool thread). */
void api_events_submitted(const struct writer_job *jobs);
void api_events_canceled(const store_task *t);

/* ---------------------------------------------------------------- metrics.c */
/* GET /metrics: Prometheus text format 0.0.4. */
enum MHD_Result api_metrics(struct api_ctx *, struct MHD_Connection *, struct req *);
/* Counts a finished request (route template, status, duration) for /metrics. */
void api_metrics_request_done(const struct req *r);

/* ---------------------------------------------------------------- dashboard.c */
/* GET /: the dashboard page, built in from api/dashboard.html. */
enum MHD_Result api_dashboard(struct api_ctx *, struct MHD_Connection *, struct req *);
extern const char API_DASHBOARD_HTML[];
extern const size_t API_DASHBOARD_HTML_LEN;

/* ---------------------------------------------------------------- openapi.c */
/* GET /openapi.json: the document built into the binary from api/openapi.json. */
enum MHD_Result api_openapi(struct api_ctx *, struct MHD_Connection *, struct req *);
extern const char API_OPENAPI_JSON[];
extern const size_t API_OPENAPI_JSON_LEN;

/* ---------------------------------------------------------------- access.c */
/* First call of a request: notes its method and start, and takes its X-Request-Id when
 * the client sent a sane one (access_request_id_ok), else makes one up. */
void access_begin(struct req *r, struct MHD_Connection *conn, const char *method);
/* 1..API_MAX_REQUEST_ID characters, each a letter, digit, '-', '_', '.' or ':'. */
int access_request_id_ok(const char *id);
/* The access log line of a finished (or aborted) request, at info. */
void access_log(const struct req *r, struct MHD_Connection *conn,
                enum MHD_RequestTerminationCode toe);

/* ---------------------------------------------------------------- cors.c */
/* The Access-Control-Allow-Origin value for a request from origin (NULL: no Origin
 * header): "*" or the origin itself when --cors-origin allows it, else NULL. */
const char *cors_allow_origin(const struct api_config *cfg, const char *origin);
/* Adds the CORS headers of an ordinary answer to r's request. */
void cors_add_headers(struct MHD_Response *resp, const struct req *r);
/* Answers an OPTIONS request on a known path (CORS on): 204 with the methods and,
 * for an allowed origin, the Access-Control-Allow-* headers of a preflight. */
enum MHD_Result cors_preflight(struct MHD_Connection *conn, struct req *r);

/* ---------------------------------------------------------------- server.c */
/* This thread's store connection (opened on first use); NULL on failure. */
store *api_thread_store(struct api_ctx *ctx);
/* Does the request carry `Authorization: Bearer <token>`? (Compared in constant time.) */
int api_bearer_ok(struct MHD_Connection *conn, const char *token);

#endif
