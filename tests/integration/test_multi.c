/* Integration: many warmpool instances on one PostgreSQL database (issue 9). Two or
 * three instances on loopback ports share one queue: a task submitted to one runs on
 * any, ?wait answers across instances within 50 ms, a whole instance killed (or stopped,
 * or drained) loses no task, instances started at once migrate the database once, and
 * a restart of the PostgreSQL server under load loses nothing. PostgreSQL only (under
 * SQLite every test says "skipped"). Every wait is bounded. */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

/* Another instance on the same database as `first` (its own directory and port). */
static wp_server *start_peer(const wp_server *first, const char *const *args) {
    wp_opts o = {.db = first->db, .args = args};
    return wp_server_start(&o);
}

static int instances_seen(const wp_server *s) {
    json_t *st = wp_stats(s);
    int n = (int)json_array_size(json_object_get(st, "instances"));
    json_decref(st);
    return n;
}

/* Polls until `s` lists n live instances (bounded). */
static void wait_instances(const wp_server *s, int n, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    int seen = 0;
    while ((seen = instances_seen(s)) != n && wp_now_ms() < deadline) wp_sleep_ms(50);
    if (seen != n) fail_msg("want %d live instances, /v1/stats lists %d", n, seen);
}

/* The log of s has a line with needle (bounded wait). */
static bool wait_log(const wp_server *s, const char *needle, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    for (;;) {
        char *log = wp_server_read_log(s);
        bool found = strstr(log, needle) != NULL;
        free(log);
        if (found) return true;
        if (wp_now_ms() > deadline) return false;
        wp_sleep_ms(25);
    }
}

/* Which instance's worker finished task id: 0 for a, 1 for b, -1 neither. A worker logs
 * the task after recording it, so the line may come a moment after a waiter's answer:
 * it is waited for (2 s at most). */
static int ran_on(const wp_server *a, const wp_server *b, const char *id) {
    char needle[96];
    snprintf(needle, sizeof needle, "task finished task_id=%.40s ", id);
    const wp_server *v[2] = {a, b};
    for (int tries = 0; tries < 80; tries++) {
        for (int i = 0; i < 2; i++) {
            char *log = wp_server_read_log(v[i]);
            bool found = strstr(log, needle) != NULL;
            free(log);
            if (found) return i;
        }
        wp_sleep_ms(25);
    }
    return -1;
}

static int cmp_ll_int(const void *x, const void *y) {
    long long a = *(const long long *)x, b = *(const long long *)y;
    return a < b ? -1 : a > b;
}

/* ---------------------------------------------------------------- ?wait across */

/* B has one worker, busy with a long task: what is submitted next runs on A. GET
 * ?wait on B answers within 50 ms of A's worker recording the result (the task's
 * finished_at; both instances on this host, one clock). */
WP_TEST(test_wait_across_instances) {
    WP_PG_ONLY();
    const char *const bargs[] = {"--workers", "1", "--log-level", "debug", "--grace-ms", "200", NULL};
    wp_opts ob = {.args = bargs};
    wp_server *b = wp_server_start(&ob);
    json_t *blocker = wp_submit(b, "{\"kind\":\"sleep\",\"input\":{\"ms\":60000}}");
    char bid[32];
    snprintf(bid, sizeof bid, "%s", wp_str(blocker, "id"));
    json_decref(blocker);
    json_decref(wp_wait_state(b, bid, "running", 10));
    const char *const aargs[] = {"--workers", "2", "--log-level", "debug", NULL};
    wp_server *a = start_peer(b, aargs);
    wait_instances(b, 2, 10);
    enum { TRIALS = 7 };
    long long lat[TRIALS];
    for (int i = 0; i < TRIALS; i++) {
        json_t *t = wp_submit(a, "{\"kind\":\"sleep\",\"input\":{\"ms\":300}}");
        char path[96], id[32];
        snprintf(id, sizeof id, "%s", wp_str(t, "id"));
        json_decref(t);
        snprintf(path, sizeof path, "/v1/tasks/%s?wait=20", id);
        wp_resp r;
        wp_call(b, "GET", path, NULL, &r);
        long long answered = wp_wall_ms();
        if (r.status != 200 || strcmp(wp_str(r.json, "state"), "succeeded") != 0)
            fail_msg("GET ?wait on B: %ld %.300s", r.status, r.body);
        long long finished = wp_parse_ts(wp_str(r.json, "finished_at"));
        wp_resp_free(&r);
        if (ran_on(a, b, id) != 0) fail_msg("task %s did not run on instance A", id);
        lat[i] = answered - finished;
    }
    qsort(lat, TRIALS, sizeof lat[0], cmp_ll_int);
    print_message("multi: ?wait on B after a task finished on A: median %lld ms, max %lld ms (%d trials)\n",
                  lat[TRIALS / 2], lat[TRIALS - 1], TRIALS);
    if (lat[TRIALS / 2] > 50) fail_msg("?wait across instances answered %lld ms (median) after the task finished",
                                       lat[TRIALS / 2]);
}

/* ---------------------------------------------------------------- one queue */

/* Tasks submitted to one instance run on the workers of all; GET, list, stats and
 * idempotency keys see the same tasks from either. */
WP_TEST(test_one_queue_shared) {
    WP_PG_ONLY();
    const char *const args[] = {"--workers", "2", "--log-level", "debug", NULL};
    wp_server *a = wp_server_start_args("--workers", "2", "--log-level", "debug", NULL);
    wp_server *b = start_peer(a, args);
    wait_instances(a, 2, 10);
    enum { N = 40 };
    char ids[N][32];
    for (int i = 0; i < N; i++) {
        json_t *t = wp_submitf(i % 2 ? a : b, "{\"kind\":\"sleep\",\"input\":{\"ms\":150}}");
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    int on[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        json_t *t = wp_wait_terminal(i % 2 ? b : a, ids[i], 60);
        if (strcmp(wp_str(t, "state"), "succeeded") != 0) fail_msg("task %s: %s", ids[i], wp_str(t, "state"));
        json_decref(t);
    }
    for (int i = 0; i < N; i++) {
        int k = ran_on(a, b, ids[i]);
        if (k < 0) fail_msg("no log says who ran task %s", ids[i]);
        on[k]++;
    }
    print_message("multi: %d tasks of 150 ms: %d ran on A, %d on B\n", N, on[0], on[1]);
    if (on[0] == 0 || on[1] == 0) fail_msg("every task ran on one instance (%d, %d)", on[0], on[1]);
    /* the same counts and lists from both */
    json_t *sa = wp_stats(a), *sb = wp_stats(b);
    if (wp_stats_count(sa, "succeeded") != N || wp_stats_count(sb, "succeeded") != N)
        fail_msg("succeeded: A says %lld, B says %lld, want %d", wp_stats_count(sa, "succeeded"),
                 wp_stats_count(sb, "succeeded"), N);
    json_decref(sa);
    json_decref(sb);
    json_t *la = wp_list_all(a, "state=succeeded", 7), *lb = wp_list_all(b, "state=succeeded", 13);
    if (json_array_size(la) != N || json_array_size(lb) != N) fail_msg("lists differ");
    json_decref(la);
    json_decref(lb);
    /* an idempotency key used on A is the same task on B */
    const char *h[] = {"Idempotency-Key: shared-key-1", NULL};
    wp_resp r1, r2;
    wp_call_h(a, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":7}", h, &r1);
    wp_call_h(b, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":7}", h, &r2);
    if (r1.status != 202 || r2.status != 200 || strcmp(wp_str(r1.json, "id"), wp_str(r2.json, "id")) != 0)
        fail_msg("idempotency key across instances: %ld %s, then %ld %s", r1.status, r1.body, r2.status, r2.body);
    /* canceled on B, seen on A */
    json_t *c = wp_submit(a, "{\"kind\":\"echo\",\"input\":8,\"priority\":-1000}");
    char cpath[64];
    snprintf(cpath, sizeof cpath, "/v1/tasks/%s", wp_str(c, "id"));
    wp_resp rc;
    wp_call(b, "DELETE", cpath, NULL, &rc);
    if (rc.status != 200 && rc.status != 409) fail_msg("cancel on B: %ld", rc.status);
    wp_resp_free(&rc);
    json_decref(c);
    wp_resp_free(&r1);
    wp_resp_free(&r2);
}

/* ---------------------------------------------------------------- instances start at once */

/* Three instances started at the same moment on an empty database: one migrates, the
 * others wait for it; all serve, each lists the three. */
WP_TEST(test_start_together_on_empty_database) {
    WP_PG_ONLY();
    char uri[600], name[64];
    wp_pg_create(uri, sizeof uri, name, sizeof name);
    enum { K = 3 };
    pid_t kids[K];
    int ports[K];
    char dirs[K][512];
    for (int k = 0; k < K; k++) {
        ports[k] = wp_free_port();
        wp_make_temp_dir(dirs[k], sizeof dirs[k]);
    }
    /* fork them together: each becomes a server the harness waits for below */
    wp_server *s[K];
    for (int k = 0; k < K; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            char listen[64];
            snprintf(listen, sizeof listen, "127.0.0.1:%d", ports[k]);
            char *log = wp_fmt("%s/server.log", dirs[k]);
            FILE *f = freopen(log, "w", stderr);
            (void)f;
            execl(wp_binary_path(), "warmpool", "--listen", listen, "--db", uri, "--workers", "1",
                  (char *)NULL);
            _exit(127);
        }
    }
    for (int k = 0; k < K; k++) {
        s[k] = calloc(1, sizeof *s[k]);
        s[k]->pid = kids[k];
        s[k]->port = ports[k];
        snprintf(s[k]->base_url, sizeof s[k]->base_url, "http://127.0.0.1:%d", ports[k]);
    }
    long long deadline = wp_now_ms() + 30000;
    int ready = 0;
    while (ready < K && wp_now_ms() < deadline) {
        ready = 0;
        for (int k = 0; k < K; k++) {
            wp_req q = {.method = "GET", .path = "/readyz", .timeout_ms = 1000};
            wp_resp r;
            ready += wp_http_nc(s[k], &q, &r) && r.status == 200;
            wp_resp_free(&r);
        }
        if (ready < K) wp_sleep_ms(50);
    }
    int listed = ready == K ? instances_seen(s[0]) : 0;
    char version[32] = "";
    wp_pg_sql(uri, "SELECT value FROM meta WHERE key = 'schema_version'", version, sizeof version);
    for (int k = 0; k < K; k++) {
        kill(kids[k], SIGTERM);
        int st;
        for (int i = 0; i < 200 && waitpid(kids[k], &st, WNOHANG) == 0; i++) wp_sleep_ms(50);
        kill(-kids[k], SIGKILL);
        kill(kids[k], SIGKILL);
        waitpid(kids[k], &st, WNOHANG);
        free(s[k]);
    }
    char left[32] = "";
    wp_pg_sql(uri, "SELECT count(*) FROM instances", left, sizeof left);
    for (int k = 0; k < K; k++) {
        if (ready < K) {
            char *log = wp_fmt("%s/server.log", dirs[k]);
            char *cmd = wp_fmt("tail -20 %s >&2", log);
            if (system(cmd) != 0) {}
            free(cmd);
            free(log);
        }
        wp_remove_tree(dirs[k]);
    }
    wp_pg_drop(name);
    if (ready != K) fail_msg("%d of %d instances started at once became ready", ready, K);
    if (listed != K) fail_msg("an instance lists %d instances, want %d", listed, K);
    if (strcmp(version, "5") != 0) fail_msg("schema version %s after the race", version);
    if (strcmp(left, "0") != 0) fail_msg("%s instances still registered after SIGTERM", left);
}

/* ---------------------------------------------------------------- submit load */

typedef struct {
    wp_server *s;
    const char *body;
    atomic_int *stop;
    char (*ids)[32];
    int max, n, refused;
    int pace_ms;            /* between submissions; 0: 5 ms */
} feeder;

static void *feed(void *p) {
    feeder *f = p;
    CURL *h = curl_easy_init();
    while (!atomic_load(f->stop) && f->n < f->max) {
        wp_req q = {.method = "POST", .path = "/v1/tasks", .body = f->body, .handle = h, .timeout_ms = 5000};
        wp_resp r;
        wp_http_nc(f->s, &q, &r);
        if (r.status == 202 && json_is_object(r.json))
            snprintf(f->ids[f->n++], 32, "%s", wp_str(r.json, "id"));
        else
            f->refused++;
        wp_resp_free(&r);
        wp_sleep_ms(f->pace_ms > 0 ? f->pace_ms : 5);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Every id in ids ends succeeded, read from s, within timeout_s; returns how many
 * needed more than one attempt. */
static int expect_all_succeed(const wp_server *s, char (*ids)[32], int n, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    int retried = 0;
    for (int i = 0; i < n; i++) {
        double left = (double)(deadline - wp_now_ms()) / 1000;
        json_t *t = wp_wait_terminal(s, ids[i], left > 1 ? left : 1);
        if (strcmp(wp_str(t, "state"), "succeeded") != 0) {
            char *d = wp_dump(t);
            fail_msg("task %s (acknowledged with 202) did not succeed: %s", ids[i], d);
        }
        retried += wp_int(t, "attempts") > 1;
        json_decref(t);
    }
    return retried;
}

/* kill -9 of one whole instance while a submit load runs and its workers run sleep
 * tasks: every task that got a 202 (from either) finishes on the survivor; those the
 * dead one was running, within its lease (2 s) and their own run time. */
WP_TEST(test_kill_instance_under_load) {
    WP_PG_ONLY();
    const char *const args[] = {"--workers", "2", "--lease-ms", "2000", "--log-level", "debug", NULL};
    wp_opts oa = {.args = args};
    wp_server *a = wp_server_start(&oa);
    wp_server *b = start_peer(a, args);
    wait_instances(a, 2, 10);
    atomic_int stop = 0;
    enum { MAX = 400 };
    static char ids_a[MAX][32], ids_b[MAX][32];
    /* about as much as the four workers run (8 tasks of 300 ms a second each way) */
    feeder fa = {.s = a, .body = "{\"kind\":\"sleep\",\"input\":{\"ms\":300},\"max_attempts\":3}",
                 .stop = &stop, .ids = ids_a, .max = MAX, .pace_ms = 150};
    feeder fb = {.s = b, .body = "{\"kind\":\"sleep\",\"input\":{\"ms\":300},\"max_attempts\":3}",
                 .stop = &stop, .ids = ids_b, .max = MAX, .pace_ms = 150};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, feed, &fa);
    pthread_create(&tb, NULL, feed, &fb);
    /* until both of A's workers run a task: those are the ones to rescue */
    char running[2][32] = {"", ""};
    long long deadline = wp_now_ms() + 15000;
    int busy = 0;
    while (busy < 2 && wp_now_ms() < deadline) {
        json_t *st = wp_stats(a);
        size_t i;
        json_t *w;
        busy = 0;
        json_array_foreach(json_object_get(st, "workers"), i, w) {
            if (strcmp(wp_str(w, "state"), "busy") == 0 && json_is_string(json_object_get(w, "task_id")) &&
                busy < 2)
                snprintf(running[busy++], 32, "%s", wp_str(w, "task_id"));
        }
        json_decref(st);
        if (busy < 2) wp_sleep_ms(20);
    }
    if (busy < 2) fail_msg("A's two workers were never busy at once");
    long long killed_at = wp_now_ms();
    kill(-a->pid, SIGKILL);
    kill(a->pid, SIGKILL);
    int status;
    if (!wp_server_wait_exit(a, 10000, &status)) fail_msg("instance A did not die");
    /* what A ran: on B within the lease and the task's 300 ms (and some slack) */
    long long rescued_ms[2];
    for (int k = 0; k < 2; k++) {
        json_t *t = wp_wait_terminal(b, running[k], 30);
        rescued_ms[k] = wp_now_ms() - killed_at;
        if (strcmp(wp_str(t, "state"), "succeeded") != 0 || wp_int(t, "attempts") != 2)
            fail_msg("task %s that A was running: %s", running[k], wp_dump(t));
        json_decref(t);
    }
    wp_sleep_ms(500);
    atomic_store(&stop, 1);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int acked = fa.n + fb.n;
    int retried = expect_all_succeed(b, ids_a, fa.n, 120) + expect_all_succeed(b, ids_b, fb.n, 120);
    print_message("multi: kill -9 of A with both workers busy, under a submit load: its 2 running tasks "
                  "succeeded on B %lld and %lld ms after the kill (lease 2000 ms); %d tasks acknowledged "
                  "(%d by A), all succeeded on B; %d needed another attempt; lost: 0\n",
                  rescued_ms[0], rescued_ms[1], acked, fa.n, retried);
    for (int k = 0; k < 2; k++)
        if (rescued_ms[k] > 2000 + 300 + 3000)
            fail_msg("a task of the killed instance finished %lld ms after the kill: longer than its lease "
                     "(2000 ms), its run (300 ms) and 3 s of slack", rescued_ms[k]);
    if (!wait_log(b, "found lost", 5000)) fail_msg("B's log does not say it found A lost");
    wait_instances(b, 1, 10);
}

/* kill -9 of a whole instance while its one worker holds a batch (the fault point
 * worker_batch_budget_ms keeps the batch held while the long task in it runs): when B
 * rescues A's tasks after A's lease, the task that was running has lost its only
 * attempt (failed, worker_lost), and the echoes of the batch -- those A ran without
 * recording them and those it had not begun -- run once on B, with attempts 1 (a rescue
 * that counted their attempt would show 2, or fail them). */
WP_TEST(test_kill_instance_holding_a_batch) {
    WP_PG_ONLY();
    enum { N = 11, MID = 4 };
    const char *const env[] = {"WARMPOOL_FAULTS=worker_batch_budget_ms=60000", NULL};
    const char *const args[] = {"--workers", "1", "--lease-ms", "1000", "--log-level", "debug", NULL};
    wp_opts oa = {.args = args, .env = env};
    wp_server *a = wp_server_start(&oa);
    assert_int_equal(wp_wait_workers(a, 1, 15), 1);
    /* a short task first: A's worker's next claims are batches */
    json_t *t0 = wp_submit(a, "{\"kind\":\"echo\",\"input\":0}");
    json_t *d0 = wp_wait_terminal(a, wp_str(t0, "id"), 10);
    assert_string_equal(wp_str(d0, "state"), "succeeded");
    json_decref(d0);
    json_decref(t0);
    char body[2048];
    int off = snprintf(body, sizeof body, "{\"tasks\":[");
    for (int i = 0; i < N; i++)
        off += snprintf(body + off, sizeof body - (size_t)off, "%s%s", i ? "," : "",
                        i == MID ? "{\"kind\":\"sleep\",\"input\":{\"ms\":30000},\"max_attempts\":1}"
                                 : "{\"kind\":\"echo\",\"input\":1,\"max_attempts\":1}");
    snprintf(body + off, sizeof body - (size_t)off, "]}");
    wp_resp r;
    wp_call(a, "POST", "/v1/tasks/batch", body, &r);
    assert_int_equal(r.status, 202);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    char ids[N][64];
    for (size_t i = 0; i < N; i++)
        snprintf(ids[i], 64, "%s", wp_str(json_array_get(json_object_get(j, "tasks"), i), "id"));
    json_decref(j);
    wp_resp_free(&r);
    assert_true(wp_worker_pid_for_task(a, ids[MID], 10) > 0);
    /* held: the tasks after the long one were claimed with it */
    for (int i = MID + 1; i < N; i++) {
        json_t *t = wp_get_task(a, ids[i]);
        if (strcmp(wp_str(t, "state"), "running") != 0 || !json_is_null(json_object_get(t, "started_at")))
            fail_msg("echo %d after the long task: want held (running, started_at null), got %s", i,
                     wp_dump(t));
        json_decref(t);
    }
    const char *const bargs[] = {"--workers", "2", "--lease-ms", "1000", "--log-level", "debug", NULL};
    wp_server *b = start_peer(a, bargs);
    wait_instances(b, 2, 10);
    kill(-a->pid, SIGKILL);
    kill(a->pid, SIGKILL);
    int status;
    if (!wp_server_wait_exit(a, 10000, &status)) fail_msg("instance A did not die");
    json_t *t = wp_wait_terminal(b, ids[MID], 30);
    if (strcmp(wp_str(t, "state"), "failed") != 0 ||
        strcmp(wp_str(json_object_get(t, "error"), "code"), "worker_lost") != 0 || wp_int(t, "attempts") != 1)
        fail_msg("the task A was running: want failed/worker_lost after 1 attempt, got %s", wp_dump(t));
    json_decref(t);
    for (int i = 0; i < N; i++) {
        if (i == MID)
            continue;
        t = wp_wait_terminal(b, ids[i], 30);
        if (strcmp(wp_str(t, "state"), "succeeded") != 0 || wp_int(t, "attempts") != 1)
            fail_msg("echo %d of A's batch: want succeeded after 1 attempt, got %s", i, wp_dump(t));
        json_decref(t);
    }
    if (!wait_log(b, "found lost", 5000)) fail_msg("B's log does not say it found A lost");
}

/* SIGTERM of one instance while the other goes on: the drained instance finishes what
 * it runs, leaves the store (the other lists one instance at once, without waiting for
 * a lease), and every task succeeds. */
WP_TEST(test_sigterm_one_instance) {
    WP_PG_ONLY();
    const char *const args[] = {"--workers", "2", "--grace-ms", "10000", NULL};
    wp_opts oa = {.args = args};
    wp_server *a = wp_server_start(&oa);
    wp_server *b = start_peer(a, args);
    wait_instances(b, 2, 10);
    atomic_int stop = 0;
    enum { MAX = 300 };
    static char ids[MAX][32];
    feeder fb = {.s = b, .body = "{\"kind\":\"sleep\",\"input\":{\"ms\":100}}", .stop = &stop, .ids = ids, .max = MAX};
    pthread_t tb;
    pthread_create(&tb, NULL, feed, &fb);
    wp_sleep_ms(1000);
    long el = 0;
    int st = wp_server_stop(a, 20000, &el);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("A did not drain cleanly: status %d", st);
    long long t0 = wp_now_ms();
    while (instances_seen(b) != 1 && wp_now_ms() - t0 < 1500) wp_sleep_ms(20);
    long long gone_ms = wp_now_ms() - t0;
    wp_sleep_ms(500);
    atomic_store(&stop, 1);
    pthread_join(tb, NULL);
    expect_all_succeed(b, ids, fb.n, 60);
    print_message("multi: A drained in %ld ms, B listed one instance %lld ms later; %d tasks, all succeeded\n", el,
                  gone_ms, fb.n);
    if (gone_ms >= 1500) fail_msg("B still lists the drained instance");
}

/* An instance stopped (SIGSTOP) past its lease loses its running task to the other;
 * resumed, it records nothing over it: the task ends as the other ran it. */
WP_TEST(test_stopped_instance_records_nothing_after_its_lease) {
    WP_PG_ONLY();
    const char *const bargs[] = {"--workers", "1", "--lease-ms", "1000", "--log-level", "debug", NULL};
    wp_opts ob = {.args = bargs};
    wp_server *b = wp_server_start(&ob);
    json_t *t = wp_submit(b, "{\"kind\":\"sleep\",\"input\":{\"ms\":3000},\"max_attempts\":2}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_state(b, id, "running", 10));
    const char *const aargs[] = {"--workers", "1", "--lease-ms", "1000", "--log-level", "debug", NULL};
    wp_server *a = start_peer(b, aargs);
    wait_instances(a, 2, 10);
    kill(-b->pid, SIGSTOP);
    long long stopped_at = wp_now_ms();
    /* A takes it back after B's lease and runs it again */
    json_t *d = wp_wait_terminal(a, id, 20);
    long long done_ms = wp_now_ms() - stopped_at;
    kill(-b->pid, SIGCONT);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0 || wp_int(d, "attempts") != 2)
        fail_msg("the stopped instance's task: %s", wp_dump(d));
    char finished[40];
    snprintf(finished, sizeof finished, "%s", wp_str(d, "finished_at"));
    json_decref(d);
    /* resumed, B's worker ends its sleep and is refused */
    if (!wait_log(b, "was taken from this worker", 10000)) fail_msg("B's late result was not refused");
    if (!wait_log(b, "found lost", 5000)) fail_msg("B's log does not say it was found lost");
    json_t *after = wp_get_task(a, id);
    if (strcmp(wp_str(after, "finished_at"), finished) != 0 || wp_int(after, "attempts") != 2)
        fail_msg("B recorded over the rescued task: %s", wp_dump(after));
    json_decref(after);
    print_message("multi: B stopped with a 3 s task: A ran it again and finished %lld ms after the stop; "
                  "B, resumed, recorded nothing over it\n", done_ms);
    /* B is alive again, and both list two instances */
    wait_instances(a, 2, 10);
}

/* The PostgreSQL server restarted under load: submissions get 503 while it is down,
 * nothing acknowledged is lost, and everything resumes by itself. */
WP_TEST(test_database_restart_under_load) {
    WP_PG_ONLY();
    const char *restart = getenv("WARMPOOL_IT_PG_RESTART");
    if (restart == NULL || restart[0] == '\0') {
        print_message("skipped: WARMPOOL_IT_PG_RESTART (the command that restarts the cluster) is not set\n");
        wp_test_end();
        skip();
    }
    const char *const args[] = {"--workers", "2", NULL};
    wp_opts oa = {.args = args};
    wp_server *a = wp_server_start(&oa);
    wp_server *b = start_peer(a, args);
    wait_instances(a, 2, 10);
    atomic_int stop = 0;
    enum { MAX = 2000 };
    static char ia[MAX][32], ib[MAX][32];
    feeder fa = {.s = a, .body = "{\"kind\":\"sleep\",\"input\":{\"ms\":20},\"max_attempts\":3}", .stop = &stop,
                 .ids = ia, .max = MAX};
    feeder fb = {.s = b, .body = "{\"kind\":\"echo\",\"input\":{\"x\":1},\"max_attempts\":3}", .stop = &stop,
                 .ids = ib, .max = MAX};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, feed, &fa);
    pthread_create(&tb, NULL, feed, &fb);
    wp_sleep_ms(1000);
    long long t0 = wp_now_ms();
    /* this process is a subreaper (harness.c): the restarted server, orphaned by pg_ctl,
     * must not become its child (the harness kills stray children after each test) */
    prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    int rc = system(restart);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    long long down_ms = wp_now_ms() - t0;
    if (rc != 0) fail_msg("%s: exit %d", restart, rc);
    wp_sleep_ms(1500);
    atomic_store(&stop, 1);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    expect_all_succeed(a, ia, fa.n, 120);
    expect_all_succeed(b, ib, fb.n, 120);
    /* it serves again: a new task runs, both instances are alive */
    json_t *t = wp_submit(b, "{\"kind\":\"echo\",\"input\":\"after\"}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_t *d = wp_wait_terminal(a, id, 20);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0) fail_msg("after the restart: %s", wp_dump(d));
    json_decref(d);
    wait_instances(a, 2, 15);
    print_message("multi: the database restarted (%lld ms) under load: %d + %d tasks acknowledged, all "
                  "succeeded; %d + %d submissions refused meanwhile (503 or no answer)\n",
                  down_ms, fa.n, fb.n, fa.refused, fb.refused);
}


/* ---------------------------------------------------------------- issue 13 */

struct running_sampler {
    const wp_server *s;
    atomic_int stop;
    int max_running;
    int samples;
};

static void *sample_sleeps(void *p) {
    struct running_sampler *a = p;
    while (!atomic_load(&a->stop)) {
        json_t *all = wp_list_all(a->s, "state=running&kind=sleep", 100);
        int n = (int)json_array_size(all);
        json_decref(all);
        if (n > a->max_running) a->max_running = n;
        a->samples++;
        wp_sleep_ms(15);
    }
    return NULL;
}

/* A pause made on one instance holds on the other (the tasks submitted there stay
 * pending), a resume on that other one starts them, and --kind-concurrency sleep=3 holds
 * across both instances' four workers together (each instance alone could run 2: the
 * third runs on the other one, the fourth nowhere). */
WP_TEST(test_pause_and_kind_concurrency_across_instances) {
    WP_PG_ONLY();
    const char *const args[] = {"--workers", "2", "--log-level", "debug", "--kind-concurrency", "sleep=3",
                                NULL};
    wp_opts oa = {.args = args};
    wp_server *a = wp_server_start(&oa);
    wp_server *b = start_peer(a, args);
    wait_instances(a, 2, 15);
    wp_resp r;
    wp_call(a, "POST", "/v1/kinds/sleep/pause", NULL, &r);
    if (r.status != 200) fail_msg("pause on A: %ld %.300s", r.status, r.body);
    wp_resp_free(&r);
    enum { N = 9 };
    char ids[N][32];
    for (int i = 0; i < N; i++) {
        json_t *t = wp_submit(b, "{\"kind\":\"sleep\",\"input\":{\"ms\":300}}");
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    json_t *st = wp_stats(b);
    bool listed = false;
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(st, "paused_kinds"), i, k) listed |= strcmp(json_string_value(k), "sleep") == 0;
    json_decref(st);
    if (!listed) fail_msg("B's /v1/stats does not list the kind paused on A");
    wp_sleep_ms(1200);
    st = wp_stats(a);
    assert_int_equal(wp_stats_count(st, "running"), 0);
    assert_int_equal(wp_stats_count(st, "pending"), N);
    json_decref(st);

    struct running_sampler smp = {.s = a};
    pthread_t th;
    pthread_create(&th, NULL, sample_sleeps, &smp);
    long long t0 = wp_now_ms();
    wp_call(b, "POST", "/v1/kinds/sleep/resume", NULL, &r);
    if (r.status != 200) fail_msg("resume on B: %ld %.300s", r.status, r.body);
    wp_resp_free(&r);
    json_decref(wp_wait_state(a, ids[0], "running", 5));
    long long started = wp_now_ms() - t0;
    int on[2] = {0, 0};
    for (int j = 0; j < N; j++) {
        json_t *d = wp_wait_terminal(a, ids[j], 30);
        assert_string_equal(wp_str(d, "state"), "succeeded");
        json_decref(d);
        int w = ran_on(a, b, ids[j]);
        if (w >= 0) on[w]++;
    }
    long long took = wp_now_ms() - t0;
    atomic_store(&smp.stop, 1);
    pthread_join(th, NULL);
    print_message("multi: after a resume on B, the first task ran within %lld ms; %d sleeps of 300 ms "
                  "with sleep=3 took %lld ms (A ran %d, B %d); at most %d running at once (%d samples)\n",
                  started, N, took, on[0], on[1], smp.max_running, smp.samples);
    if (smp.max_running > 3) fail_msg("%d sleep tasks ran at once across the instances (limit 3)", smp.max_running);
    if (smp.max_running < 3 || on[0] == 0 || on[1] == 0)
        fail_msg("the limit 3 was never reached, or one instance ran none: the test proves nothing");
    if (took < (N / 3) * 300) fail_msg("%d tasks of 300 ms with 3 at a time took only %lld ms", N, took);
    wp_server_free(b);
    wp_server_free(a);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wait_across_instances, wp_test_teardown),
        cmocka_unit_test_teardown(test_one_queue_shared, wp_test_teardown),
        cmocka_unit_test_teardown(test_start_together_on_empty_database, wp_test_teardown),
        cmocka_unit_test_teardown(test_kill_instance_under_load, wp_test_teardown),
        cmocka_unit_test_teardown(test_kill_instance_holding_a_batch, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigterm_one_instance, wp_test_teardown),
        cmocka_unit_test_teardown(test_stopped_instance_records_nothing_after_its_lease, wp_test_teardown),
        cmocka_unit_test_teardown(test_database_restart_under_load, wp_test_teardown),
        cmocka_unit_test_teardown(test_pause_and_kind_concurrency_across_instances, wp_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
