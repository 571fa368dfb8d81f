/* Integration-test harness for warmpool.
 *
 * Starts the real `warmpool` binary (path from $WARMPOOL_BIN) on a free
 * loopback port with a fresh temporary database, drives it over HTTP with
 * libcurl, and stops it. Every wait is bounded.
 *
 * Functions whose names end in `_nc` never call cmocka assertions and are
 * safe to call from helper threads; everything else may fail the current test.
 */
#ifndef WARMPOOL_IT_HARNESS_H
#define WARMPOOL_IT_HARNESS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

/* ------------------------------------------------------------- backends */

/* The integration suite runs against SQLite (a file in each server's directory) and,
 * with WARMPOOL_IT_BACKEND=postgres (ctest's integration.pg.* entries), against the
 * PostgreSQL cluster whose admin URI is WARMPOOL_IT_PG (scripts/test.sh starts one):
 * each server's directory gets a fresh database (CREATE DATABASE, dropped with the
 * directory), and a server restarted on the same directory finds the same database.
 * Without WARMPOOL_IT_PG the program skips itself (exit 77), unless
 * WARMPOOL_IT_PG_REQUIRED=1. */
bool wp_pg_mode(void);
/* The admin URI (WARMPOOL_IT_PG), or NULL. */
const char *wp_pg_admin(void);
/* A fresh database of the cluster, dropped by wp_pg_drop(); its URI into uri. */
void wp_pg_create(char *uri, size_t cap, char *name, size_t name_cap);
void wp_pg_drop(const char *name);
/* Runs sql on database uri (NULL: the admin database); the first value of the first row
 * into out (may be NULL). Fails the test on error. */
void wp_pg_sql(const char *uri, const char *sql, char *out, size_t cap);
/* Tests of SQLite's own behaviour (its file, lock, WAL, modes) skip themselves under
 * PostgreSQL, saying why. */
#define WP_SQLITE_ONLY(why)                                                     \
    do {                                                                        \
        if (wp_pg_mode()) {                                                     \
            print_message("skipped under PostgreSQL: %s\n", why);               \
            wp_test_end();                                                      \
            skip();                                                             \
        }                                                                       \
    } while (0)
/* And tests that need PostgreSQL skip themselves under SQLite. */
#define WP_PG_ONLY()                                                            \
    do {                                                                        \
        if (!wp_pg_mode()) {                                                    \
            print_message("skipped: needs PostgreSQL (WARMPOOL_IT_BACKEND=postgres)\n"); \
            wp_test_end();                                                      \
            skip();                                                             \
        }                                                                       \
    } while (0)

/* ---------------------------------------------------------------- servers */

typedef struct wp_opts {
    const char *const *args; /* extra argv entries, NULL-terminated (may be NULL) */
    const char *const *env;  /* extra "NAME=value" entries, NULL-terminated */
    const char *dir;         /* reuse this directory (restart); NULL: fresh temp dir */
    const char *db;          /* database path or URI; NULL: DIR/warmpool.db, or under
                              * PostgreSQL the directory's database */
    bool no_listen_flag;     /* don't pass --listen (give it by env instead) */
    bool no_db_flag;         /* don't pass --db (give it by env instead) */
    int port;                /* 0: pick a free port */
    double ready_timeout_s;  /* 0: default (20 s) */
    long nofile;             /* > 0: start it with RLIMIT_NOFILE soft = hard = nofile */
} wp_opts;

typedef struct wp_server {
    pid_t pid;               /* supervisor pid; 0 once reaped */
    int port;
    char dir[512];
    char db[1024];           /* the path, or the postgres:// URI */
    char pg_name[64];        /* the database this server's directory made ("": none) */
    char log_path[1024];
    char base_url[64];
    bool owns_dir;
    bool test_scoped;        /* stopped/freed by wp_test_teardown */
    int exit_status;         /* raw waitpid status once reaped */
    bool reaped;
} wp_server;

/* Start a server and wait until /healthz and /readyz answer 200. Fails the
 * test (printing the server's log) when it does not come up. */
wp_server *wp_server_start(const wp_opts *o);
/* Shorthand: fresh dir, extra args (NULL-terminated list). */
wp_server *wp_server_start_args(const char *first, ...);

/* SIGTERM, wait up to timeout_ms, then SIGKILL. Returns the raw wait status.
 * *elapsed_ms (optional) gets how long the exit took. */
int wp_server_stop(wp_server *s, int timeout_ms, long *elapsed_ms);
/* Wait (bounded) for an already-signalled server to exit. Returns true when it
 * exited, with the raw status in *status. */
bool wp_server_wait_exit(wp_server *s, int timeout_ms, int *status);
/* Stop (if running) and free; removes the temp dir it owns. */
void wp_server_free(wp_server *s);
/* Print the server's log to stderr (last `max_bytes`, 0 = all). */
void wp_server_dump_log(const wp_server *s, size_t max_bytes);
/* Read the whole log file (malloc'ed, NUL-terminated). */
char *wp_server_read_log(const wp_server *s);

/* Direct children of `parent` found through /proc. Returns the count. */
int wp_children_of(pid_t parent, pid_t *out, int max);
/* Direct children of the server's supervisor whose /proc comm is `comm` ("warmpool-http",
 * "warmpool-worker", "warmpool-zygote", "warmpool-agent") and alive. Returns the count. */
int wp_children_named(const wp_server *s, const char *comm, pid_t *out, int max);
/* The parent pid of `pid` from /proc, or -1. */
pid_t wp_ppid_of(pid_t pid);
/* True while `pid` exists and is not a zombie. */
bool wp_pid_alive(pid_t pid);
/* Wait (bounded) until none of pids[] is alive. */
bool wp_wait_pids_gone(const pid_t *pids, int n, int timeout_ms);
/* Reap any exited children of this test process (servers' orphans). */
void wp_reap_orphans(void);

/* Run the binary to completion (config tests): stdout+stderr captured into
 * *output (malloc'ed, may be NULL). Returns the raw wait status, or -1 when it
 * did not exit within timeout_ms (it is then killed and *timed_out is set). */
int wp_run_binary(const char *const *args, const char *const *env, int timeout_ms,
                  char **output, bool *timed_out, long *elapsed_ms);

const char *wp_binary_path(void);
/* Make a fresh temp dir (path into buf). */
void wp_make_temp_dir(char *buf, size_t len);
void wp_remove_tree(const char *path);
int wp_free_port(void);

/* ------------------------------------------------------------- test scope */

/* Wrap a test: marks begin/end so that wp_test_teardown knows whether the
 * test failed (then every server log is printed). */
#define WP_TEST(name)                                                     \
    static void name##_impl(void **state __attribute__((unused)));       \
    static void name(void **state) {                                      \
        wp_test_begin(#name);                                             \
        name##_impl(state);                                               \
        wp_test_end();                                                    \
    }                                                                     \
    static void name##_impl(void **state __attribute__((unused)))

void wp_test_begin(const char *name);
void wp_test_end(void);
/* Per-test teardown: prints logs if the test failed, frees test-scoped servers. */
int wp_test_teardown(void **state);
/* Process-wide init (curl, SIGPIPE, subreaper). Call once from main(). */
void wp_harness_init(void);

/* ------------------------------------------------------------------- HTTP */

typedef struct wp_resp {
    long status;           /* 0 when no HTTP answer */
    int curl_code;         /* CURLcode */
    char errbuf[CURL_ERROR_SIZE];
    char location[1024];
    char allow[256];
    char retry_after[64];
    char content_type[256];
    bool has_allow, has_location, has_retry_after, has_content_type;
    char *headers;         /* every header line of the final answer, "Name: value\r\n" */
    char *body;
    size_t body_len;
    json_t *json;          /* parsed body, or NULL */
    long elapsed_ms;
} wp_resp;

typedef struct wp_req {
    const char *method;    /* "GET" ... or anything */
    const char *path;      /* "/v1/tasks?..." (sent as is) */
    const char *body;      /* NULL: no body */
    size_t body_len;       /* 0 with body != NULL: strlen(body) */
    const char *const *headers;  /* extra headers, NULL-terminated */
    bool no_default_content_type; /* don't add Content-Type: application/json */
    bool keep_expect;      /* don't strip "Expect:" */
    bool chunked;          /* send the body with chunked transfer encoding */
    long timeout_ms;       /* 0: 30000 */
    CURL *handle;          /* reuse this easy handle (keep-alive); NULL: fresh */
} wp_req;

/* No assertions; returns true when an HTTP status was received.
 * With WARMPOOL_IT_RECORD=FILE in the environment, each answer is also appended to FILE
 * as a JSON line (method, path, status, headers, body; at most 40 per method, status and
 * path shape per process), for tests/contract/check_openapi.py to hold against
 * api/openapi.json. */
bool wp_http_nc(const wp_server *s, const wp_req *q, wp_resp *r);
/* The value of header `name` (any case) of the answer, copied into out; false if absent. */
bool wp_resp_header(const wp_resp *r, const char *name, char *out, size_t cap);
void wp_resp_free(wp_resp *r);

/* Asserting request: the answer must be HTTP, Content-Type application/json
 * and a JSON body. */
void wp_http(const wp_server *s, const wp_req *q, wp_resp *r);
void wp_call(const wp_server *s, const char *method, const char *path,
             const char *body, wp_resp *r);
void wp_call_h(const wp_server *s, const char *method, const char *path,
               const char *body, const char *const *headers, wp_resp *r);
/* Assert the answer is JSON with the right content type. */
void wp_assert_json_resp(const wp_resp *r, const char *what);

/* Assert status, the exact error body shape, error.code, and (when not NULL)
 * that error.message contains `msg_has`. */
void wp_assert_error(const wp_resp *r, long status, const char *code, const char *msg_has);

/* Raw socket exchange: send `request` bytes, read the answer (headers and
 * Content-Length body) within timeout_ms. Returns status or 0/-1. The body is
 * returned malloc'ed in *body (may be NULL). */
int wp_raw_http(const wp_server *s, const char *request, size_t len, int timeout_ms,
                char **headers_out, char **body_out, long *elapsed_ms);

/* ----------------------------------------------------------- task helpers */

/* POST /v1/tasks; asserts 202, Location, task shape. Returns a new ref. */
json_t *wp_submit(const wp_server *s, const char *body);
json_t *wp_submitf(const wp_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* GET /v1/tasks/ID; asserts 200 + shape. New ref. */
json_t *wp_get_task(const wp_server *s, const char *id);
/* Loop GET ?wait= until a terminal state; bounded by timeout_s. New ref. */
json_t *wp_wait_terminal(const wp_server *s, const char *id, double timeout_s);
/* Poll until the task is in `state` (bounded). New ref. */
json_t *wp_wait_state(const wp_server *s, const char *id, const char *state, double timeout_s);
/* GET /v1/stats; asserts 200 + shape. New ref. */
json_t *wp_stats(const wp_server *s);
/* Poll /v1/stats until workers[] has n entries, each a live child of the
 * supervisor (readyz needs only one). Returns the last count seen. */
int wp_wait_workers(const wp_server *s, int n, double timeout_s);
/* Sum of stats.tasks counts. */
long long wp_stats_total(const json_t *stats);
long long wp_stats_count(const json_t *stats, const char *state);
/* Worker pid running task `id` according to /v1/stats (bounded poll); 0 if none. */
pid_t wp_worker_pid_for_task(const wp_server *s, const char *id, double timeout_s);
/* The worker pids /v1/stats lists (at most max of them into out); returns the count. */
int wp_worker_pids(const wp_server *s, pid_t *out, int max);
/* Is p one of the n pids in l? */
bool wp_pid_in_list(pid_t p, const pid_t *l, int n);
/* Page through GET /v1/tasks?QUERY&limit=LIMIT; checks paging invariants;
 * returns a new array of all items. `query` may be "" or "state=x&kind=y". */
json_t *wp_list_all(const wp_server *s, const char *query, int limit);

/* "Nothing stored" checks: total count from /v1/stats plus the newest id. */
typedef struct wp_snap {
    long long total;
    char newest[128];
} wp_snap;
wp_snap wp_snapshot(const wp_server *s);
void wp_assert_unchanged(const wp_server *s, const wp_snap *before, const char *what);

/* Task JSON checks. full: includes input+result (GET/POST); else list item. */
void wp_assert_task_shape(const json_t *t, bool full);
/* Also: no field beyond the spec's task object. */
void wp_assert_task_keys_exact(const json_t *t, bool full, const char *what);
bool wp_is_terminal(const char *state);
const char *wp_str(const json_t *obj, const char *key); /* "" when absent */
long long wp_int(const json_t *obj, const char *key);   /* asserts integer */
/* Compare two decimal-digit ids numerically: <0, 0, >0. */
int wp_id_cmp(const char *a, const char *b);
/* Parse "YYYY-MM-DDTHH:MM:SS.mmmZ" into ms since the epoch; -1 when malformed. */
long long wp_parse_ts(const char *s);
bool wp_valid_ts(const char *s);

/* ------------------------------------------------------------------ misc */
long long wp_now_ms(void);       /* CLOCK_MONOTONIC */
long long wp_wall_ms(void);      /* CLOCK_REALTIME */
void wp_sleep_ms(long ms);
/* asprintf that asserts. */
char *wp_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* json_dumps(JSON_COMPACT|JSON_SORT_KEYS) into a static-ish malloc'ed string. */
char *wp_dump(const json_t *j);

#endif
