/* metrics.c -- GET /metrics: the Prometheus text format 0.0.4.
 *
 * Counters and histograms come from the shared block every process adds to
 * (common/metrics.h); gauges are read at the scrape: task counts from the store's kept
 * counts (store_count_states, store_count_kinds: the same cost at 10^7 stored tasks as
 * at 10^3), workers and kinds from the worker table (api_hooks), the database's size
 * from the store. The
 * process_* metrics are the whole instance's: summed over the supervisor and every
 * process below it (zygotes, the HTTP process, workers, whatever a kind started), read
 * from /proc; their cost grows with the number of processes, not of tasks.
 *
 * Route labels are the route table's templates ("/v1/tasks/{id}"), and "unmatched" for
 * a path no route has, so their number is bounded by the table. */
#include "api/internal.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/names.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PROC_MAX 65536          /* processes looked at in one scrape, at most */

/* ---------------------------------------------------------------- route numbers */

static const char *g_routes[METRICS_MAX_ROUTES] = {"unmatched"};
static int g_nroutes = 1;
static pthread_once_t g_routes_once = PTHREAD_ONCE_INIT;

/* One number per distinct template of the route table (methods share it). */
static void
number_routes(void)
{
    for (size_t i = 0; i < routes_count(); i++) {
        const char *method, *pattern;
        routes_at(i, &method, &pattern);
        int known = 0;
        for (int k = 1; k < g_nroutes && !known; k++)
            known = strcmp(g_routes[k], pattern) == 0;
        if (!known && g_nroutes < METRICS_MAX_ROUTES)
            g_routes[g_nroutes++] = pattern;
    }
}

static int
route_number(const char *pattern)
{
    pthread_once(&g_routes_once, number_routes);
    for (int k = 1; pattern != NULL && k < g_nroutes; k++)
        if (g_routes[k] == pattern || strcmp(g_routes[k], pattern) == 0)
            return k;
    return 0;
}

void
api_metrics_request_done(const struct req *r)
{
    if (r->status == 0)
        return;                         /* never answered (the client left first) */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    metrics_http_request(route_number(r->route), r->status, now_us - r->start_us);
}

/* ---------------------------------------------------------------- text */

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(struct buf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 4096;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void
head(struct buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: \, " and newline escaped, as the format wants. */
static const char *
label(const char *v, char *out, size_t cap)
{
    size_t n = 0;
    for (; *v != '\0' && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            out[n++] = '\\';
            out[n++] = *v;
        } else if (*v == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *v;
        }
    }
    out[n] = '\0';
    return out;
}

static void
histogram(struct buf *b, const char *name, const char *lname, const char *lvalue,
          const struct metrics_hist_view *h, const char *const *le, int nb)
{
    for (int i = 0; i < nb; i++)
        put(b, "%s_bucket{%s=\"%s\",le=\"%s\"} %" PRIu64 "\n", name, lname, lvalue, le[i],
            h->le[i]);
    put(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, lname, lvalue, h->le[nb]);
    put(b, "%s_sum{%s=\"%s\"} %.6f\n", name, lname, lvalue, h->sum_s);
    put(b, "%s_count{%s=\"%s\"} %" PRIu64 "\n", name, lname, lvalue, h->count);
}

/* ---------------------------------------------------------------- /proc */

struct proc_totals {
    uint64_t ticks;             /* utime + stime + cutime + cstime, summed */
    uint64_t vsize, pss;        /* bytes */
    uint64_t fds;
    int nprocs;
};

static int
read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (int)n;
}

/* One process into t; 0, or -1 when it is gone. */
static int
proc_add(long pid, struct proc_totals *t)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (read_small(path, buf, sizeof buf) <= 0)
        return -1;
    const char *p = strrchr(buf, ')');      /* the name may hold spaces and parentheses */
    if (p == NULL)
        return -1;
    /* fields from 3 (state) on, separated by spaces: utime, stime, cutime and cstime
     * are 14 to 17, vsize 23, rss 24 (proc(5)) */
    long long f[25] = {0};
    int field = 3;
    for (char *tok = (char *)p + 1; field <= 24; field++) {
        while (*tok == ' ')
            tok++;
        if (*tok == '\0')
            return -1;
        f[field] = field == 3 ? 0 : strtoll(tok, &tok, 10);
        if (field == 3)
            tok++;                          /* the state letter */
    }
    t->ticks += (uint64_t)(f[14] + f[15] + f[16] + f[17]);
    t->vsize += (uint64_t)f[23];
    uint64_t pss = 0;
    snprintf(path, sizeof path, "/proc/%ld/smaps_rollup", pid);
    char roll[2048];
    const char *at;
    if (read_small(path, roll, sizeof roll) > 0 && (at = strstr(roll, "\nPss:")) != NULL)
        pss = strtoull(at + 5, NULL, 10) * 1024;
    else                                    /* no rollup (old kernel): resident pages */
        pss = (uint64_t)f[24] * (uint64_t)sysconf(_SC_PAGESIZE);
    t->pss += pss;
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            t->fds += e->d_name[0] != '.';
        closedir(d);
    }
    t->nprocs++;
    return 0;
}

/* root and every process below it: children are listed per thread in /proc (the
 * supervisor is single-threaded; a kind's run() may start threads that fork). */
static void
proc_walk(long root, struct proc_totals *t)
{
    long *stack = malloc(PROC_MAX * sizeof *stack);
    if (stack == NULL)
        return;
    int n = 0, seen = 0;
    stack[n++] = root;
    while (n > 0 && seen < PROC_MAX) {
        long pid = stack[--n];
        seen++;
        if (proc_add(pid, t) != 0)
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/task", pid);
        DIR *d = opendir(path);
        if (d == NULL)
            continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char cpath[300], kids[4096];
            snprintf(cpath, sizeof cpath, "/proc/%ld/task/%.20s/children", pid, e->d_name);
            if (read_small(cpath, kids, sizeof kids) <= 0)
                continue;
            for (char *tok = strtok(kids, " \n"); tok != NULL && n < PROC_MAX;
                 tok = strtok(NULL, " \n"))
                stack[n++] = strtol(tok, NULL, 10);
        }
        closedir(d);
    }
    free(stack);
}

/* ---------------------------------------------------------------- GET /metrics */

static void
put_tasks(struct buf *b, const int64_t counts[TASK_STATE_COUNT], const store_kind_counts *kc,
          size_t nkc)
{
    head(b, "warmpool_tasks", "gauge", "Tasks stored, by state.");
    for (int i = 0; i < TASK_STATE_COUNT; i++)
        put(b, "warmpool_tasks{state=\"%s\"} %" PRId64 "\n",
            task_state_name((enum task_state)i), counts[i]);
    head(b, "warmpool_kind_tasks", "gauge", "Tasks stored, by kind and state.");
    char lv[2 * NAMES_MAX_LEN + 8];
    for (size_t k = 0; k < nkc; k++)
        for (int i = 0; i < TASK_STATE_COUNT; i++)
            put(b, "warmpool_kind_tasks{kind=\"%s\",state=\"%s\"} %" PRId64 "\n",
                label(kc[k].kind, lv, sizeof lv), task_state_name((enum task_state)i),
                kc[k].n[i]);
}

static void
put_task_counters(struct buf *b)
{
    static const char *const END[METRICS_N_ENDS] = {"succeeded", "failed", "canceled"};
    static const char *const OUT[METRICS_N_OUTCOMES] = {"succeeded", "failed", "retried",
                                                        "timeout", "worker_lost"};
    struct metrics_kind_view k;
    char lv[2 * NAMES_MAX_LEN + 8];
    head(b, "warmpool_tasks_submitted_total", "counter",
         "Tasks submitted (committed), by kind.");
    for (int i = 0; i <= METRICS_MAX_KINDS; i++)
        if (metrics_kind_read(i, &k))
            put(b, "warmpool_tasks_submitted_total{kind=\"%s\"} %" PRIu64 "\n",
                label(k.name, lv, sizeof lv), k.submitted);
    head(b, "warmpool_tasks_finished_total", "counter",
         "Tasks that reached a final state, by kind and state.");
    for (int i = 0; i <= METRICS_MAX_KINDS; i++)
        if (metrics_kind_read(i, &k))
            for (int e = 0; e < METRICS_N_ENDS; e++)
                put(b, "warmpool_tasks_finished_total{kind=\"%s\",state=\"%s\"} %" PRIu64 "\n",
                    label(k.name, lv, sizeof lv), END[e], k.finished[e]);
    head(b, "warmpool_task_attempts_total", "counter",
         "Attempts that ended, by kind and outcome: succeeded; failed or retried (the kind "
         "reported an error, and the task failed or goes back to pending); timeout and "
         "worker_lost (whether retried or not).");
    for (int i = 0; i <= METRICS_MAX_KINDS; i++)
        if (metrics_kind_read(i, &k))
            for (int o = 0; o < METRICS_N_OUTCOMES; o++)
                put(b, "warmpool_task_attempts_total{kind=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                    label(k.name, lv, sizeof lv), OUT[o], k.attempts[o]);
    head(b, "warmpool_task_run_seconds", "histogram",
         "How long attempts ran (timeouts and lost workers included), by kind.");
    for (int i = 0; i <= METRICS_MAX_KINDS; i++)
        if (metrics_kind_read(i, &k))
            histogram(b, "warmpool_task_run_seconds", "kind", label(k.name, lv, sizeof lv),
                      &k.run, METRICS_TASK_LE, METRICS_TASK_BUCKETS);
    head(b, "warmpool_task_queue_seconds", "histogram",
         "From submission to the start of the first attempt, by kind.");
    for (int i = 0; i <= METRICS_MAX_KINDS; i++)
        if (metrics_kind_read(i, &k))
            histogram(b, "warmpool_task_queue_seconds", "kind", label(k.name, lv, sizeof lv),
                      &k.queue, METRICS_TASK_LE, METRICS_TASK_BUCKETS);
}

static void
put_service(struct buf *b, struct api_ctx *ctx)
{
    const struct api_hooks *h = &ctx->cfg->hooks;
    json_t *workers = h->workers ? h->workers(h->arg) : NULL;
    long busy = 0, idle = 0;
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w) {
        const char *st = json_string_value(json_object_get(w, "state"));
        busy += st != NULL && strcmp(st, "busy") == 0;
        idle += st != NULL && strcmp(st, "idle") == 0;
    }
    json_decref(workers);
    long starting = metrics_workers() - busy - idle;
    head(b, "warmpool_workers", "gauge",
         "Worker processes, by state (starting: forked and not ready yet, or waiting to be "
         "forked again).");
    put(b, "warmpool_workers{state=\"busy\"} %ld\nwarmpool_workers{state=\"idle\"} %ld\n"
        "warmpool_workers{state=\"starting\"} %ld\n", busy, idle, starting < 0 ? 0 : starting);
    static const char *const WHY[METRICS_N_RESTARTS] = {"crashed", "timeout", "retired"};
    head(b, "warmpool_worker_restarts_total", "counter",
         "Workers forked again after one ended, by reason: crashed (died on its own or was "
         "killed), timeout (killed for a task past its timeout_ms), retired (a reload, "
         "--max-tasks-per-worker, --max-worker-rss, or to get an exec kind's child).");
    for (int r = 0; r < METRICS_N_RESTARTS; r++)
        put(b, "warmpool_worker_restarts_total{reason=\"%s\"} %" PRIu64 "\n", WHY[r],
            metrics_restarts((enum metrics_restart)r));

    json_t *kinds = h->kinds ? h->kinds(h->arg) : NULL;
    char lv[2 * NAMES_MAX_LEN + 8];
    static const struct { const char *key, *name, *help; } KF[] = {
        {"context_bytes", "warmpool_kind_context_bytes",
         "Bytes of each kind's context, as its load() reported."},
        {"generation", "warmpool_kind_generation",
         "The generation of each kind's context: 1 at start, +1 per successful reload."},
        {"load_ms", "warmpool_kind_load_seconds", "How long each kind's context took to load."},
    };
    for (size_t f = 0; f < sizeof KF / sizeof KF[0]; f++) {
        head(b, KF[f].name, "gauge", KF[f].help);
        json_t *k;
        json_array_foreach(kinds, i, k) {
            const char *name = json_string_value(json_object_get(k, "name"));
            json_int_t v = json_integer_value(json_object_get(k, KF[f].key));
            if (name == NULL)
                continue;
            if (strcmp(KF[f].key, "load_ms") == 0)
                put(b, "%s{kind=\"%s\"} %.3f\n", KF[f].name, label(name, lv, sizeof lv),
                    (double)v / 1000);
            else
                put(b, "%s{kind=\"%s\"} %lld\n", KF[f].name, label(name, lv, sizeof lv),
                    (long long)v);
        }
    }
    json_decref(kinds);
}

static void
put_http(struct buf *b)
{
    pthread_once(&g_routes_once, number_routes);
    head(b, "warmpool_http_requests_total", "counter",
         "HTTP requests answered, by route template and status code.");
    for (int r = 0; r < g_nroutes; r++)
        for (unsigned code = 100; code < 600; code++) {
            uint64_t n = metrics_http_count(r, code);
            if (n > 0)
                put(b, "warmpool_http_requests_total{route=\"%s\",code=\"%u\"} %" PRIu64 "\n",
                    g_routes[r], code, n);
        }
    head(b, "warmpool_http_request_seconds", "histogram",
         "Time from a request's headers to the end of its answer, by route template (an "
         "event stream counts for as long as it was open).");
    for (int r = 0; r < g_nroutes; r++) {
        struct metrics_hist_view h;
        metrics_http_hist(r, &h);
        if (h.count > 0)
            histogram(b, "warmpool_http_request_seconds", "route", g_routes[r], &h,
                      METRICS_HTTP_LE, METRICS_HTTP_BUCKETS);
    }
}

static void
put_process(struct buf *b, struct api_ctx *ctx)
{
    struct proc_totals t = {0};
    proc_walk((long)getppid(), &t);     /* the supervisor: the HTTP process's parent */
    long hz = sysconf(_SC_CLK_TCK);
    uint64_t ticks = metrics_monotonic_cpu(t.ticks);
    struct rlimit rl;
    head(b, "process_cpu_seconds_total", "counter",
         "User and system CPU time of the whole instance: the supervisor and every process "
         "below it, the ended ones included.");
    put(b, "process_cpu_seconds_total %.2f\n", (double)ticks / (double)(hz > 0 ? hz : 100));
    head(b, "process_resident_memory_bytes", "gauge",
         "Resident memory of the whole instance: the sum of its processes' proportional set "
         "sizes (PSS), so that contexts shared copy-on-write count once.");
    put(b, "process_resident_memory_bytes %" PRIu64 "\n", t.pss);
    head(b, "process_virtual_memory_bytes", "gauge",
         "Virtual memory of the whole instance: the sum over its processes.");
    put(b, "process_virtual_memory_bytes %" PRIu64 "\n", t.vsize);
    head(b, "process_open_fds", "gauge", "Open file descriptors, summed over the instance.");
    put(b, "process_open_fds %" PRIu64 "\n", t.fds);
    head(b, "process_max_fds", "gauge", "The open-file limit of each process.");
    put(b, "process_max_fds %llu\n", getrlimit(RLIMIT_NOFILE, &rl) == 0
                                         ? (unsigned long long)rl.rlim_cur : 0ULL);
    head(b, "process_start_time_seconds", "gauge",
         "When the instance started, in seconds since the Unix epoch.");
    put(b, "process_start_time_seconds %.3f\n", (double)ctx->cfg->started_at_ms / 1000);
    head(b, "warmpool_processes", "gauge",
         "Processes of the instance (supervisor, zygotes, HTTP process, workers, and what "
         "they started).");
    put(b, "warmpool_processes %d\n", t.nprocs);
}

enum MHD_Result
api_metrics(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)r;
    const char *token = ctx->cfg->metrics_token;
    if (token != NULL && token[0] != '\0' && !api_bearer_ok(conn, token))
        return api_reply_json(conn, MHD_HTTP_UNAUTHORIZED,
                              json_pack("{s:{s:s, s:s}}", "error", "code", "unauthorized",
                                        "message", "/metrics needs `Authorization: Bearer "
                                        "<metrics token>`"),
                              MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                              "Bearer realm=\"warmpool-metrics\"");
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                               "the database cannot be opened; retry shortly");
    /* the store keeps these counts: the same cost at 10^7 tasks as at 10^3 */
    int64_t counts[TASK_STATE_COUNT];
    store_kind_counts *kc = NULL;
    size_t nkc = 0;
    int rc = store_count_states(st, counts);
    if (rc == STORE_OK)
        rc = store_count_kinds(st, &kc, &nkc);
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "metrics", store_errmsg(st));
    int64_t db_bytes = store_size_bytes(st);

    struct buf b = {0};
    put_tasks(&b, counts, kc, nkc);
    store_kind_counts_free(kc, nkc);
    put_task_counters(&b);
    put_service(&b, ctx);
    put_http(&b);
    head(&b, "warmpool_db_bytes", "gauge", "Bytes the database takes on disk (with its WAL).");
    put(&b, "warmpool_db_bytes %lld\n", (long long)(db_bytes > 0 ? db_bytes : 0));
    head(&b, "warmpool_events_total", "counter",
         "Task state changes published to the event ring (GET /v1/events) since the start.");
    put(&b, "warmpool_events_total %" PRIu64 "\n", events_head() - events_base());
    head(&b, "warmpool_event_streams", "gauge", "GET /v1/events streams open now.");
    put(&b, "warmpool_event_streams %d\n", api_events_open());
    put_process(&b, ctx);
    head(&b, "warmpool_build_info", "gauge", "The running version; always 1.");
    put(&b, "warmpool_build_info{version=\"%s\"} 1\n", WARMPOOL_VERSION);
    if (b.oom) {
        free(b.p);
        return MHD_NO;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(b.p);
        return api_reply_queue(conn, MHD_HTTP_OK, NULL, 0);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return api_reply_queue(conn, MHD_HTTP_OK, resp, b.len);
}
