/* metrics.h -- the counters and histograms behind GET /metrics, in shared memory.
 *
 * The supervisor creates the block once, before its first fork (metrics_create), so
 * every process of the instance adds to the same counters: the HTTP process
 * (submissions, cancels, requests), the workers (attempts, run and queue times) and
 * the supervisor (hand-backs, worker restarts). Adds are atomic; counters only grow,
 * so they survive the restart of any process but the supervisor (they start at 0 with
 * each start of warmpool, which Prometheus reads as a counter reset).
 *
 * The block is process-global, like the log's settings: the functions below act on
 * the block this process created or inherited, and do nothing where there is none
 * (tools, and tests that do not create one). None of them blocks or allocates. */
#ifndef WP_METRICS_H
#define WP_METRICS_H

#include <stdint.h>

/* How one attempt of a task ended. */
enum metrics_outcome {
    METRICS_OUT_SUCCEEDED = 0,
    METRICS_OUT_FAILED,         /* the kind reported an error; the task failed */
    METRICS_OUT_RETRIED,        /* the kind reported an error; the task goes back to pending */
    METRICS_OUT_TIMEOUT,        /* it ran past timeout_ms (retried or not) */
    METRICS_OUT_WORKER_LOST,    /* its worker died, or the service stopped (retried or not) */
    METRICS_N_OUTCOMES
};

/* How a task ended. */
enum metrics_end { METRICS_END_SUCCEEDED = 0, METRICS_END_FAILED, METRICS_END_CANCELED,
                   METRICS_N_ENDS };

/* Why the supervisor forked a new worker in place of one that ended. */
enum metrics_restart {
    METRICS_RESTART_CRASHED = 0,    /* it died: a crash, a signal, an exit of its own */
    METRICS_RESTART_TIMEOUT,        /* killed because its task ran past timeout_ms */
    METRICS_RESTART_RETIRED,        /* a reload, --max-tasks-per-worker, --max-worker-rss,
                                     * or to get a child of an exec kind it lacked */
    METRICS_N_RESTARTS
};

#define METRICS_MAX_KINDS 128       /* kinds past these are counted as kind "_other" */
#define METRICS_MAX_ROUTES 32       /* route numbers the HTTP process may use, 0..31 */
#define METRICS_TASK_BUCKETS 18     /* upper bounds of the task histograms (+Inf apart) */
#define METRICS_HTTP_BUCKETS 16     /* ... of the request histogram */

/* The histograms' upper bounds: in microseconds, and as Prometheus writes them. */
extern const int64_t METRICS_TASK_BOUNDS_US[METRICS_TASK_BUCKETS];
extern const char *const METRICS_TASK_LE[METRICS_TASK_BUCKETS];
extern const int64_t METRICS_HTTP_BOUNDS_US[METRICS_HTTP_BUCKETS];
extern const char *const METRICS_HTTP_LE[METRICS_HTTP_BUCKETS];

/* Maps a zeroed block (MAP_SHARED | MAP_ANONYMOUS) and makes it this process's (and
 * its future children's). workers: the configured number, for the workers gauge.
 * 0, or -1 with errno. */
int metrics_create(int workers);
/* Unmaps this process's block. */
void metrics_destroy(void);

/* ---------------------------------------------------------------- writers */
void metrics_task_submitted(const char *kind);
/* A worker claimed attempt `attempt`; queue_ms: since the task was submitted (only
 * the first attempt is observed). */
void metrics_task_started(const char *kind, int attempt, int64_t queue_ms);
/* An attempt ended; run_ms: how long it ran (< 0: unknown, not observed). */
void metrics_task_attempt(const char *kind, enum metrics_outcome outcome, int64_t run_ms);
void metrics_task_finished(const char *kind, enum metrics_end end);
void metrics_worker_restart(enum metrics_restart why);
/* A request of route number `route` (0..METRICS_MAX_ROUTES-1; the HTTP process decides
 * what they name) was answered `status` (100..599) after duration_us. */
void metrics_http_request(int route, unsigned status, int64_t duration_us);

/* ---------------------------------------------------------------- readers */
struct metrics_hist_view {
    uint64_t le[METRICS_TASK_BUCKETS + 1];  /* cumulative counts; the last is +Inf */
    uint64_t count;                         /* == the +Inf bucket */
    double sum_s;
};

struct metrics_kind_view {
    const char *name;                       /* lives as long as the block */
    uint64_t submitted;
    uint64_t finished[METRICS_N_ENDS];
    uint64_t attempts[METRICS_N_OUTCOMES];
    struct metrics_hist_view run, queue;    /* METRICS_TASK_BUCKETS + 1 buckets */
};

/* Is there a block? (0 in a process that has none.) */
int metrics_present(void);
int metrics_workers(void);
/* Kind entries 0..METRICS_MAX_KINDS (entry 0 is "_other"): 1 and *out filled for an
 * entry in use, else 0. */
int metrics_kind_read(int i, struct metrics_kind_view *out);
uint64_t metrics_restarts(enum metrics_restart why);
/* Requests of `route` answered `status`. */
uint64_t metrics_http_count(int route, unsigned status);
/* The request-duration histogram of `route` (METRICS_HTTP_BUCKETS + 1 buckets). */
void metrics_http_hist(int route, struct metrics_hist_view *out);
/* Returns max(v, every value returned before): a counter computed from samples that
 * can dip (CPU time summed over processes that come and go) never goes down. */
uint64_t metrics_monotonic_cpu(uint64_t v);

#endif
