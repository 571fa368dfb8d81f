/* metrics.c -- the shared block of counters of metrics.h. */
#include "common/metrics.h"
#include "common/names.h"

#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>

const int64_t METRICS_TASK_BOUNDS_US[METRICS_TASK_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 30000000, 60000000, 300000000, 900000000, 3600000000LL};
const char *const METRICS_TASK_LE[METRICS_TASK_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
    "5", "10", "30", "60", "300", "900", "3600"};
const int64_t METRICS_HTTP_BOUNDS_US[METRICS_HTTP_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 30000000, 60000000};
const char *const METRICS_HTTP_LE[METRICS_HTTP_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "30", "60"};

#define MAX_BUCKETS (METRICS_TASK_BUCKETS > METRICS_HTTP_BUCKETS ? METRICS_TASK_BUCKETS \
                                                                : METRICS_HTTP_BUCKETS)
#define STATUS_MIN 100
#define STATUS_N 500                /* 100..599 */

struct hist {
    atomic_ullong n[MAX_BUCKETS + 1];   /* per bucket, not cumulative; the last is +Inf */
    atomic_ullong sum_us;
};

struct kind {
    atomic_ullong submitted;
    atomic_ullong finished[METRICS_N_ENDS];
    atomic_ullong attempts[METRICS_N_OUTCOMES];
    struct hist run, queue;
};

struct route {
    atomic_ullong status[STATUS_N];
    struct hist duration;
};

struct metrics {
    int workers;
    struct names_entry names[METRICS_MAX_KINDS];
    struct kind kinds[METRICS_MAX_KINDS + 1];   /* [0] is "_other"; [i] is names[i - 1] */
    atomic_ullong restarts[METRICS_N_RESTARTS];
    struct route routes[METRICS_MAX_ROUTES];
    atomic_ullong cpu_high;             /* metrics_monotonic_cpu() */
};

static struct metrics *g_m;

int
metrics_create(int workers)
{
    struct metrics *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    m->workers = workers;           /* the rest is zero: every counter at 0 */
    g_m = m;
    return 0;
}

void
metrics_destroy(void)
{
    if (g_m != NULL)
        munmap(g_m, sizeof *g_m);
    g_m = NULL;
}

static struct kind *
kind_of(const char *name)
{
    return &g_m->kinds[names_intern(g_m->names, METRICS_MAX_KINDS, name)];
}

static void
observe(struct hist *h, const int64_t *bounds, int nb, int64_t us)
{
    int i = 0;
    while (i < nb && us > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->n[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (unsigned long long)(us > 0 ? us : 0),
                              memory_order_relaxed);
}

static void
add(atomic_ullong *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

void
metrics_task_submitted(const char *kind)
{
    if (g_m != NULL)
        add(&kind_of(kind)->submitted);
}

void
metrics_task_started(const char *kind, int attempt, int64_t queue_ms)
{
    if (g_m != NULL && attempt == 1 && queue_ms >= 0)
        observe(&kind_of(kind)->queue, METRICS_TASK_BOUNDS_US, METRICS_TASK_BUCKETS,
                queue_ms * 1000);
}

void
metrics_task_attempt(const char *kind, enum metrics_outcome outcome, int64_t run_ms)
{
    if (g_m == NULL || outcome < 0 || outcome >= METRICS_N_OUTCOMES)
        return;
    struct kind *k = kind_of(kind);
    add(&k->attempts[outcome]);
    if (run_ms >= 0)
        observe(&k->run, METRICS_TASK_BOUNDS_US, METRICS_TASK_BUCKETS, run_ms * 1000);
}

void
metrics_task_finished(const char *kind, enum metrics_end end)
{
    if (g_m != NULL && end >= 0 && end < METRICS_N_ENDS)
        add(&kind_of(kind)->finished[end]);
}

void
metrics_worker_restart(enum metrics_restart why)
{
    if (g_m != NULL && why >= 0 && why < METRICS_N_RESTARTS)
        add(&g_m->restarts[why]);
}

void
metrics_http_request(int route, unsigned status, int64_t duration_us)
{
    if (g_m == NULL || route < 0 || route >= METRICS_MAX_ROUTES || status < STATUS_MIN ||
        status >= STATUS_MIN + STATUS_N)
        return;
    struct route *r = &g_m->routes[route];
    add(&r->status[status - STATUS_MIN]);
    observe(&r->duration, METRICS_HTTP_BOUNDS_US, METRICS_HTTP_BUCKETS, duration_us);
}

/* ---------------------------------------------------------------- readers */

int metrics_present(void) { return g_m != NULL; }

int metrics_workers(void) { return g_m != NULL ? g_m->workers : 0; }

/* Cumulative counts, as Prometheus has them. The buckets are read one by one while
 * others add, so the count is taken as the sum that was read: +Inf == count always. */
static void
read_hist(struct hist *h, int nb, struct metrics_hist_view *out)
{
    uint64_t total = 0;
    for (int i = 0; i <= nb; i++) {
        total += atomic_load_explicit(&h->n[i], memory_order_relaxed);
        out->le[i] = total;
    }
    out->count = total;
    out->sum_s = (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6;
}

int
metrics_kind_read(int i, struct metrics_kind_view *out)
{
    if (g_m == NULL || i < 0 || i > METRICS_MAX_KINDS)
        return 0;
    out->name = i == 0 ? "_other" : names_get(g_m->names, METRICS_MAX_KINDS, i);
    if (out->name == NULL)
        return 0;
    struct kind *k = &g_m->kinds[i];
    out->submitted = atomic_load(&k->submitted);
    for (int e = 0; e < METRICS_N_ENDS; e++)
        out->finished[e] = atomic_load(&k->finished[e]);
    uint64_t any = out->submitted;
    for (int o = 0; o < METRICS_N_OUTCOMES; o++)
        any += out->attempts[o] = atomic_load(&k->attempts[o]);
    read_hist(&k->run, METRICS_TASK_BUCKETS, &out->run);
    read_hist(&k->queue, METRICS_TASK_BUCKETS, &out->queue);
    /* "_other" only shows once something was counted there */
    return i != 0 || any + out->finished[METRICS_END_CANCELED] + out->queue.count > 0;
}

uint64_t
metrics_restarts(enum metrics_restart why)
{
    return g_m != NULL && why >= 0 && why < METRICS_N_RESTARTS ? atomic_load(&g_m->restarts[why])
                                                               : 0;
}

uint64_t
metrics_http_count(int route, unsigned status)
{
    if (g_m == NULL || route < 0 || route >= METRICS_MAX_ROUTES || status < STATUS_MIN ||
        status >= STATUS_MIN + STATUS_N)
        return 0;
    return atomic_load_explicit(&g_m->routes[route].status[status - STATUS_MIN],
                                memory_order_relaxed);
}

void
metrics_http_hist(int route, struct metrics_hist_view *out)
{
    if (g_m == NULL || route < 0 || route >= METRICS_MAX_ROUTES) {
        *out = (struct metrics_hist_view){0};
        return;
    }
    read_hist(&g_m->routes[route].duration, METRICS_HTTP_BUCKETS, out);
}

uint64_t
metrics_monotonic_cpu(uint64_t v)
{
    if (g_m == NULL)
        return v;
    unsigned long long seen = atomic_load(&g_m->cpu_high);
    while (v > seen && !atomic_compare_exchange_weak(&g_m->cpu_high, &seen, v))
        ;
    return v > seen ? v : seen;
}
