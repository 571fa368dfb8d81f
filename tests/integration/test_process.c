/* Integration: the process model (worker loss, SIGTERM drain, restarts, a
 * SIGKILLed service) and configuration (flags, environment, locking). */
#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void expect_json_eq(const json_t *got, const json_t *want, const char *what) {
    if (!json_equal((json_t *)got, (json_t *)want)) {
        char *g = wp_dump(got), *w = wp_dump(want);
        fail_msg("%s: got %.700s, want %.700s", what, g, w);
    }
}

static void expect_clean_exit(int st, const char *what) {
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        if (WIFSIGNALED(st)) fail_msg("%s: killed by signal %d, want exit 0", what, WTERMSIG(st));
        fail_msg("%s: exit code %d, want 0", what, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

/* Kill the worker that runs task `id` (checked to be our server's child). */
static pid_t kill_worker_of(const wp_server *s, const char *id) {
    pid_t pid = wp_worker_pid_for_task(s, id, 10);
    if (!pid) fail_msg("no worker shows task %s in /v1/stats workers[].task_id", id);
    if (wp_ppid_of(pid) != s->pid) fail_msg("stats pid %d is not a child of supervisor %d", (int)pid, (int)s->pid);
    assert_int_equal(kill(pid, SIGKILL), 0);
    return pid;
}

/* Wait (bounded) until stats shows n workers, none in `dead`, all children of the supervisor. */
static void expect_workers_replaced(const wp_server *s, int n, const pid_t *dead, int ndead) {
    long long deadline = wp_now_ms() + 15000;
    for (;;) {
        pid_t p[64];
        int k = wp_worker_pids(s, p, 64);
        bool ok = k == n;
        for (int i = 0; ok && i < k; i++)
            if (wp_pid_in_list(p[i], dead, ndead) || !wp_pid_alive(p[i]) || wp_ppid_of(p[i]) != s->pid) ok = false;
        if (ok) return;
        if (wp_now_ms() > deadline) {
            json_t *st = wp_stats(s);
            char *d = wp_dump(json_object_get(st, "workers"));
            fail_msg("workers not replaced within 15 s (want %d live new children): %s", n, d);
        }
        wp_sleep_ms(50);
    }
}

/* --------------------------------------------------------- worker loss */

WP_TEST(test_kill_worker) {
    wp_server *s = wp_server_start_args("--workers", "2", "--enable-test-kinds", "--grace-ms", "1000", NULL);
    pid_t dead[2];
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);

    /* max_attempts 2: retried, succeeds on the second attempt */
    json_t *t1 = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1500},\"max_attempts\":2}");
    json_decref(wp_wait_state(s, wp_str(t1, "id"), "running", 10));
    dead[0] = kill_worker_of(s, wp_str(t1, "id"));
    json_t *d1 = wp_wait_terminal(s, wp_str(t1, "id"), 40);
    if (strcmp(wp_str(d1, "state"), "succeeded") != 0 || wp_int(d1, "attempts") != 2) {
        char *d = wp_dump(d1);
        fail_msg("killed worker, max_attempts 2: want succeeded with attempts 2, got %s", d);
    }
    json_t *want = json_loads("{\"slept_ms\":1500}", 0, NULL);
    expect_json_eq(json_object_get(d1, "result"), want, "retried sleep result");
    assert_true(json_is_null(json_object_get(d1, "error")));
    json_decref(want);

    /* max_attempts 1: failed / worker_lost */
    json_t *t2 = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":5000}}");
    json_decref(wp_wait_state(s, wp_str(t2, "id"), "running", 10));
    dead[1] = kill_worker_of(s, wp_str(t2, "id"));
    json_t *d2 = wp_wait_terminal(s, wp_str(t2, "id"), 20);
    if (strcmp(wp_str(d2, "state"), "failed") != 0 ||
        strcmp(wp_str(json_object_get(d2, "error"), "code"), "worker_lost") != 0) {
        char *d = wp_dump(d2);
        fail_msg("killed worker, max_attempts 1: want failed/worker_lost, got %s", d);
    }
    assert_int_equal(wp_int(d2, "attempts"), 1);
    assert_true(json_is_null(json_object_get(d2, "result")));
    assert_true(json_is_string(json_object_get(d2, "finished_at")));

    /* The pool is back to 2 live workers, new pids, and it runs tasks. */
    expect_workers_replaced(s, 2, dead, 2);
    wp_resp r;
    wp_call(s, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 200);
    wp_resp_free(&r);
    for (int i = 0; i < 4; i++) {
        json_t *e = wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", i);
        json_t *ed = wp_wait_terminal(s, wp_str(e, "id"), 20);
        assert_string_equal(wp_str(ed, "state"), "succeeded");
        json_decref(ed);
        json_decref(e);
    }
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "running"), 0);
    assert_int_equal(wp_stats_count(st, "pending"), 0);
    json_decref(st);
    json_decref(d1);
    json_decref(d2);
    json_decref(t1);
    json_decref(t2);
}

/* Submits body, copies the task's id into id (64 bytes), and waits until it runs. */
static void submit_running(wp_server *s, const char *body, char id[64]) {
    json_t *t = wp_submit(s, body);
    snprintf(id, 64, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_state(s, id, "running", 10));
}

/* ---------------------------------------------------------------- SIGTERM */

WP_TEST(test_sigterm_lets_running_task_finish) {
    wp_server *s = wp_server_start_args("--workers", "1", NULL);
    wp_wait_workers(s, 1, 15);
    char id[64];
    submit_running(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1000}}", id);
    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    long el = 0;
    int st = wp_server_stop(s, 20000, &el);
    expect_clean_exit(st, "SIGTERM with a 1 s task running");
    if (!wp_wait_pids_gone(kids, nk, 5000)) fail_msg("children of the service outlived it");
    print_message("drain took %ld ms\n", el);

    wp_opts o = {.dir = s->dir, .args = (const char *const[]){"--workers", "1", NULL}};
    wp_server *s2 = wp_server_start(&o);
    json_t *d = wp_get_task(s2, id);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0 || wp_int(d, "attempts") != 1) {
        char *dd = wp_dump(d);
        fail_msg("task running at SIGTERM must have finished during the drain: %s", dd);
    }
    json_t *want = json_loads("{\"slept_ms\":1000}", 0, NULL);
    expect_json_eq(json_object_get(d, "result"), want, "result after drain");
    json_decref(want);
    json_decref(d);
}

WP_TEST(test_sigterm_drains) {
    wp_server *s = wp_server_start_args("--workers", "1", "--grace-ms", "15000", NULL);
    json_t *b = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":2500}}");
    char bid[64], pid_[64];
    snprintf(bid, sizeof bid, "%s", wp_str(b, "id"));
    json_decref(b);
    json_decref(wp_wait_state(s, bid, "running", 10));
    json_t *p = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"waits for the next start\"}");
    snprintf(pid_, sizeof pid_, "%s", wp_str(p, "id"));
    json_decref(p);

    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    wp_sleep_ms(400);
    int tries = 0, refused = 0;
    int st = 0;
    bool exited = false;
    /* While it drains, new submissions are refused: connection closed/refused or 503. */
    while (!(exited = wp_server_wait_exit(s, 0, &st)) && tries < 5) {
        wp_req q = {.method = "POST", .path = "/v1/tasks", .body = "{\"kind\":\"echo\",\"input\":\"late\"}",
                    .timeout_ms = 3000};
        wp_resp r;
        wp_http_nc(s, &q, &r);
        tries++;
        if (r.status == 0) {
            refused++;
        } else if (r.status == 503) {
            wp_assert_error(&r, 503, NULL, NULL);
            refused++;
        } else {
            fail_msg("submission during the SIGTERM drain answered %ld: %.300s", r.status, r.body);
        }
        wp_resp_free(&r);
        wp_sleep_ms(150);
    }
    if (!exited) exited = wp_server_wait_exit(s, 20000, &st);
    if (!exited) fail_msg("service did not exit within 20 s of SIGTERM (grace 15 s, task 2.5 s)");
    long long exit_wall = wp_wall_ms();
    expect_clean_exit(st, "SIGTERM drain");
    if (!wp_wait_pids_gone(kids, nk, 5000)) fail_msg("children of the service outlived it");
    if (tries == 0) print_message("note: the service exited before a late submission could be tried\n");
    else print_message("%d late submissions during the drain, %d refused\n", tries, refused);

    wp_opts o = {.dir = s->dir, .args = (const char *const[]){"--workers", "1", NULL}};
    wp_server *s2 = wp_server_start(&o);
    json_t *bd = wp_get_task(s2, bid);
    if (strcmp(wp_str(bd, "state"), "succeeded") != 0 || wp_int(bd, "attempts") != 1) {
        char *d = wp_dump(bd);
        fail_msg("the running task must finish during the drain: %s", d);
    }
    json_decref(bd);
    json_t *pd = wp_wait_terminal(s2, pid_, 20);
    assert_string_equal(wp_str(pd, "state"), "succeeded");
    assert_int_equal(wp_int(pd, "attempts"), 1);
    long long started = wp_parse_ts(wp_str(pd, "started_at"));
    if (started < exit_wall - 250)
        fail_msg("pending task started at %s, before the drained service exited: a draining worker claimed it",
                 wp_str(pd, "started_at"));
    json_decref(pd);
    json_t *sts = wp_stats(s2);
    if (wp_stats_total(sts) != 2) fail_msg("%lld tasks stored, want 2: a refused submission was stored",
                                           wp_stats_total(sts));
    json_decref(sts);
}

WP_TEST(test_grace_cutoff) {
    wp_server *s = wp_server_start_args("--workers", "2", "--grace-ms", "500", NULL);
    char id1[64], id2[64];
    submit_running(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":4000},\"max_attempts\":1}", id1);
    submit_running(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":2000},\"max_attempts\":2}", id2);
    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    long el = 0;
    int st = wp_server_stop(s, 15000, &el);
    expect_clean_exit(st, "SIGTERM past --grace-ms");
    if (el > 3000) fail_msg("--grace-ms 500: the service took %ld ms to exit (its tasks ran 2-4 s)", el);
    if (!wp_wait_pids_gone(kids, nk, 5000)) fail_msg("workers outlived the service after the grace limit");

    wp_opts o = {.dir = s->dir, .args = (const char *const[]){"--workers", "2", NULL}};
    wp_server *s2 = wp_server_start(&o);
    json_t *d1 = wp_wait_terminal(s2, id1, 10);
    if (strcmp(wp_str(d1, "state"), "failed") != 0 ||
        strcmp(wp_str(json_object_get(d1, "error"), "code"), "worker_lost") != 0) {
        char *d = wp_dump(d1);
        fail_msg("task cut off by the grace limit (max_attempts 1): want failed/worker_lost, got %s", d);
    }
    json_t *d2 = wp_wait_terminal(s2, id2, 20);
    if (strcmp(wp_str(d2, "state"), "succeeded") != 0 || wp_int(d2, "attempts") != 2) {
        char *d = wp_dump(d2);
        fail_msg("task cut off by the grace limit (max_attempts 2): want succeeded on attempt 2, got %s", d);
    }
    json_decref(d1);
    json_decref(d2);
}

/* ----------------------------------------------------------------- restart */

WP_TEST(test_restart_keeps_every_task) {
    const char *const args[] = {"--workers", "2", "--enable-test-kinds", NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    char ids[16][64];
    int n = 0;
    json_t *t;
    for (int i = 0; i < 5; i++) {
        t = wp_submitf(s, "{\"kind\":\"echo\",\"input\":{\"i\":%d,\"s\":\"\\u00fc\"},\"priority\":%d}", i, i * 3 - 5);
        snprintf(ids[n++], 64, "%s", wp_str(t, "id"));
        json_decref(t);
    }
    for (int i = 0; i < 2; i++) {
        t = wp_submitf(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"bad %d\"},\"max_attempts\":3}", i);
        snprintf(ids[n++], 64, "%s", wp_str(t, "id"));
        json_decref(t);
    }
    for (int i = 0; i < 2; i++) {
        t = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1200},\"timeout_ms\":60000}");
        snprintf(ids[n++], 64, "%s", wp_str(t, "id"));
        json_decref(wp_wait_state(s, ids[n - 1], "running", 10));
        json_decref(t);
    }
    t = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"canceled\"}");
    snprintf(ids[n++], 64, "%s", wp_str(t, "id"));
    json_decref(t);
    char *path = wp_fmt("/v1/tasks/%s", ids[n - 1]);
    wp_resp r;
    wp_call(s, "DELETE", path, NULL, &r);
    assert_int_equal(r.status, 200);
    wp_resp_free(&r);
    free(path);
    json_t *before[16];
    for (int i = 0; i < n; i++) before[i] = wp_wait_terminal(s, ids[i], 30);
    json_t *list_before = wp_list_all(s, "", 3);
    json_t *st_before = wp_stats(s);

    int st = wp_server_stop(s, 20000, NULL);
    expect_clean_exit(st, "SIGTERM of an idle service");

    wp_opts o2 = {.dir = s->dir, .args = args};
    wp_server *s2 = wp_server_start(&o2);
    for (int i = 0; i < n; i++) {
        json_t *a = wp_get_task(s2, ids[i]);
        expect_json_eq(a, before[i], "task after restart");
        json_decref(a);
        json_decref(before[i]);
    }
    json_t *list_after = wp_list_all(s2, "", 3);
    expect_json_eq(list_after, list_before, "list after restart");
    json_t *st_after = wp_stats(s2);
    expect_json_eq(json_object_get(st_after, "tasks"), json_object_get(st_before, "tasks"), "stats.tasks after restart");
    /* ids keep increasing across restarts */
    t = wp_submit(s2, "{\"kind\":\"echo\"}");
    if (wp_id_cmp(wp_str(t, "id"), ids[n - 1]) <= 0)
        fail_msg("id %s after restart is not greater than %s from before", wp_str(t, "id"), ids[n - 1]);
    json_decref(t);
    json_decref(list_before);
    json_decref(list_after);
    json_decref(st_before);
    json_decref(st_after);
}

WP_TEST(test_sigkill_service_then_restart) {
    const char *const args[] = {"--workers", "2", NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    char ida[64], idb[64];
    submit_running(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":3000},\"max_attempts\":2}", ida);
    submit_running(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":3000},\"max_attempts\":1}", idb);

    /* Everything: the supervisor first (so nobody requeues), then its children. */
    pid_t pids[128];
    int np = wp_worker_pids(s, pids, 64);
    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    for (int i = 0; i < nk; i++)
        if (!wp_pid_in_list(kids[i], pids, np)) pids[np++] = kids[i];
    assert_int_equal(kill(s->pid, SIGKILL), 0);
    for (int i = 0; i < np; i++) kill(pids[i], SIGKILL);
    int st = 0;
    assert_true(wp_server_wait_exit(s, 5000, &st));
    if (!wp_wait_pids_gone(pids, np, 10000)) fail_msg("processes of the killed service still alive");

    wp_opts o2 = {.dir = s->dir, .args = args};
    wp_server *s2 = wp_server_start(&o2);
    json_t *db = wp_wait_terminal(s2, idb, 10);
    if (strcmp(wp_str(db, "state"), "failed") != 0 ||
        strcmp(wp_str(json_object_get(db, "error"), "code"), "worker_lost") != 0 || wp_int(db, "attempts") != 1) {
        char *d = wp_dump(db);
        fail_msg("task left running by a SIGKILLed service (max_attempts 1): want failed/worker_lost, got %s", d);
    }
    json_t *da = wp_wait_terminal(s2, ida, 30);
    if (strcmp(wp_str(da, "state"), "succeeded") != 0 || wp_int(da, "attempts") != 2) {
        char *d = wp_dump(da);
        fail_msg("task left running by a SIGKILLed service (max_attempts 2): want requeued and succeeded "
                 "with attempts 2, got %s",
                 d);
    }
    json_decref(da);
    json_decref(db);
}

/* Only the supervisor is SIGKILLed and a new instance is started at once, as a
 * process manager restarting it would: the old children still hold the
 * database lock for the moment they take to die, and the new instance waits for
 * them instead of refusing to start. */
WP_TEST(test_sigkill_supervisor_restart_at_once) {
    const char *const args[] = {"--workers", "2", NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    char id[64];
    submit_running(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":2000},\"max_attempts\":2}", id);
    assert_int_equal(kill(s->pid, SIGKILL), 0);
    int st = 0;
    assert_true(wp_server_wait_exit(s, 5000, &st));

    wp_opts o2 = {.dir = s->dir, .args = args};
    wp_server *s2 = wp_server_start(&o2);
    json_t *d = wp_wait_terminal(s2, id, 30);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0 || wp_int(d, "attempts") != 2) {
        char *dump = wp_dump(d);
        fail_msg("task of a SIGKILLed supervisor: want requeued and succeeded with attempts 2, got %s", dump);
    }
    json_decref(d);
}

/* ------------------------------------------------------------- idle CPU */

/* utime+stime (clock ticks) of pid from /proc, or -1. */
static long long cpu_ticks(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* fields after ')': 3 state ... 14 utime 15 stime */
    unsigned long long ut = 0, stt = 0;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2) return -1;
    return (long long)(ut + stt);
}

static long long service_ticks(const wp_server *s) {
    pid_t kids[64];
    int n = wp_children_of(s->pid, kids, 64);
    long long t = cpu_ticks(s->pid);
    for (int i = 0; i < n; i++) {
        long long k = cpu_ticks(kids[i]);
        if (k > 0) t += k;
    }
    return t;
}

/* Context switches (voluntary + involuntary) of every thread of pid. */
static long long ctx_switches(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char sp[384];
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/status", (int)pid, e->d_name);
        FILE *f = fopen(sp, "r");
        if (!f) continue;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            long long v;
            if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1)
                total += v;
        }
        fclose(f);
    }
    closedir(d);
    return total;
}

WP_TEST(test_idle_service_uses_no_cpu) {
    wp_server *s = wp_server_start_args("--workers", "2", NULL);
    json_t *t = wp_submit(s, "{\"kind\":\"echo\"}");
    json_decref(wp_wait_terminal(s, wp_str(t, "id"), 20));
    json_decref(t);
    wp_sleep_ms(500);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    pid_t w[2];
    assert_int_equal(wp_worker_pids(s, w, 2), 2);
    long long a = service_ticks(s);
    long long wa[2] = {ctx_switches(w[0]), ctx_switches(w[1])};
    wp_sleep_ms(3000);
    long long b = service_ticks(s);
    long long wb[2] = {ctx_switches(w[0]), ctx_switches(w[1])};
    long hz = sysconf(_SC_CLK_TCK);
    long long ms = (b - a) * 1000 / (hz > 0 ? hz : 100);
    print_message("idle service used %lld ms of CPU in 3 s; idle workers woke %lld and %lld times\n", ms,
                  wb[0] - wa[0], wb[1] - wa[1]);
    if (ms > 150) fail_msg("an idle service used %lld ms of CPU in 3 s (busy polling?)", ms);
    for (int i = 0; i < 2; i++)
        if (wb[i] - wa[i] > 20)
            fail_msg("idle worker %d woke up %lld times in 3 s: it polls instead of blocking on the wake-up channel",
                     (int)w[i], wb[i] - wa[i]);
}

/* ------------------------------------------------------------ configuration */

static bool contains_ci(const char *hay, const char *needle) { return strcasestr(hay, needle) != NULL; }

WP_TEST(test_help) {
    char *out = NULL;
    bool to = false;
    int st = wp_run_binary((const char *const[]){"--help", NULL}, NULL, 10000, &out, &to, NULL);
    if (to) fail_msg("--help did not exit within 10 s");
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail_msg("--help: want exit 0, got status %d: %s", st, out);
    static const char *const flags[] = {"--listen", "--db", "--workers", "--max-body", "--task-timeout-ms",
                                        "--grace-ms", "--enable-test-kinds", "--log-level", "--help", NULL};
    for (int i = 0; flags[i]; i++)
        if (!strstr(out, flags[i])) fail_msg("--help does not list %s:\n%s", flags[i], out);
    free(out);
}

static void expect_exit2(const char *const *args, const char *const *env, const char *what) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *db = wp_fmt("%s/sub/never.db", dir);
    char *listen = wp_fmt("127.0.0.1:%d", wp_free_port());
    const char *argv[32];
    int k = 0;
    bool has_listen = false, has_db = false;
    for (int i = 0; args && args[i]; i++) {
        if (strcmp(args[i], "--listen") == 0) has_listen = true;
        if (strcmp(args[i], "--db") == 0) has_db = true;
    }
    if (!has_db) {
        argv[k++] = "--db";
        argv[k++] = db;
    }
    if (!has_listen) {
        argv[k++] = "--listen";
        argv[k++] = listen;
    }
    for (int i = 0; args && args[i] && k < 30; i++) argv[k++] = args[i];
    argv[k] = NULL;
    char *out = NULL;
    bool to = false;
    int st = wp_run_binary(argv, env, 10000, &out, &to, NULL);
    if (to) fail_msg("%s: still running after 10 s, want exit 2 before anything starts", what);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2))
        fail_msg("%s: want exit code 2, got %s %d; output: %.500s", what, WIFEXITED(st) ? "exit" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), out);
    if (strlen(out) == 0) fail_msg("%s: exit 2 without a message", what);
    char *sub = wp_fmt("%s/sub", dir);
    struct stat sb;
    if (stat(sub, &sb) == 0) fail_msg("%s: the database directory was created although the config is invalid", what);
    free(sub);
    free(out);
    free(db);
    free(listen);
    wp_remove_tree(dir);
}

WP_TEST(test_bad_flags_exit_2) {
    static const char *const cases[][4] = {
        {"--bogus-flag", NULL},
        {"--workers", "0", NULL},
        {"--workers", "1025", NULL},
        {"--workers", "abc", NULL},
        {"--workers", "-1", NULL},
        {"--workers", "", NULL},
        {"--workers", "2x", NULL},
        {"--workers", NULL},
        {"--log-level", "loud", NULL},
        {"--log-level", "", NULL},
        {"--max-body", "abc", NULL},
        {"--max-body", "-5", NULL},
        {"--task-timeout-ms", "abc", NULL},
        {"--grace-ms", "abc", NULL},
        {"--listen", "nonsense", NULL},
        {"--listen", "127.0.0.1:99999", NULL},
        {"--listen", "127.0.0.1:abc", NULL},
        {"--enable-test-kinds=maybe", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char what[128];
        snprintf(what, sizeof what, "%s %s", cases[i][0], cases[i][1] ? cases[i][1] : "");
        expect_exit2(cases[i], NULL, what);
    }
}

WP_TEST(test_bad_env_exit_2) {
    static const char *const envs[] = {"WARMPOOL_WORKERS=abc", "WARMPOOL_WORKERS=0", "WARMPOOL_WORKERS=1025",
                                       "WARMPOOL_LOG_LEVEL=loud", "WARMPOOL_ENABLE_TEST_KINDS=maybe",
                                       "WARMPOOL_MAX_BODY=abc", "WARMPOOL_GRACE_MS=soon", NULL};
    for (int i = 0; envs[i]; i++) {
        const char *const env[] = {envs[i], NULL};
        expect_exit2(NULL, env, envs[i]);
    }
}

/* Worker count once start-up settled: wait for `expect`, then make sure no more appear. */
static int stats_workers(const wp_server *s, int expect) {
    int n = wp_wait_workers(s, expect, 15);
    wp_sleep_ms(300);
    pid_t p[64];
    int m = wp_worker_pids(s, p, 64);
    return m > n ? m : n;
}

static bool has_kind(const wp_server *s, const char *name) {
    json_t *st = wp_stats(s);
    bool found = false;
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(st, "kinds"), i, k) {
        if (strcmp(wp_str(k, "name"), name) == 0) found = true;
    }
    json_decref(st);
    return found;
}

static long post_status(const wp_server *s, const char *body) {
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks", body, &r);
    long st = r.status;
    wp_resp_free(&r);
    return st;
}

WP_TEST(test_flag_beats_env) {
    wp_opts o = {.args = (const char *const[]){"--workers", "2", NULL},
                 .env = (const char *const[]){"WARMPOOL_WORKERS=3", NULL}};
    wp_server *s = wp_server_start(&o);
    assert_int_equal(stats_workers(s, 2), 2);
    wp_server_free(s);

    wp_opts o2 = {.env = (const char *const[]){"WARMPOOL_WORKERS=3", NULL}};
    s = wp_server_start(&o2);
    assert_int_equal(stats_workers(s, 3), 3);
    wp_server_free(s);

    /* boolean: env says no, the flag says yes */
    wp_opts o3 = {.args = (const char *const[]){"--enable-test-kinds", "--workers", "1", NULL},
                  .env = (const char *const[]){"WARMPOOL_ENABLE_TEST_KINDS=false", NULL}};
    s = wp_server_start(&o3);
    if (!has_kind(s, "fail")) fail_msg("--enable-test-kinds with WARMPOOL_ENABLE_TEST_KINDS=false: the flag must win");
    wp_server_free(s);
}

WP_TEST(test_boolean_env) {
    static const struct {
        const char *env;
        bool on;
    } cases[] = {{"WARMPOOL_ENABLE_TEST_KINDS=true", true},
                 {"WARMPOOL_ENABLE_TEST_KINDS=1", true},
                 {"WARMPOOL_ENABLE_TEST_KINDS=0", false},
                 {"WARMPOOL_ENABLE_TEST_KINDS=false", false}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        wp_opts o = {.args = (const char *const[]){"--workers", "1", NULL},
                     .env = (const char *const[]){cases[i].env, NULL}};
        wp_server *s = wp_server_start(&o);
        long st = post_status(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"m\"}}");
        if (cases[i].on && st != 202) fail_msg("%s: kind fail refused (%ld)", cases[i].env, st);
        if (!cases[i].on && st != 422) fail_msg("%s: kind fail answered %ld, want 422", cases[i].env, st);
        if (has_kind(s, "fail") != cases[i].on) fail_msg("%s: stats.kinds disagrees", cases[i].env);
        wp_server_free(s);
    }
}

WP_TEST(test_env_twins) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    int port = wp_free_port();
    char *e_listen = wp_fmt("WARMPOOL_LISTEN=127.0.0.1:%d", port);
    char *db = wp_fmt("%s/envdb/w.db", dir);
    char *e_db = wp_fmt("WARMPOOL_DB=%s", db);
    const char *const env[] = {e_listen, e_db, "WARMPOOL_WORKERS=1", "WARMPOOL_MAX_BODY=1024",
                               "WARMPOOL_TASK_TIMEOUT_MS=4321", "WARMPOOL_GRACE_MS=1000",
                               "WARMPOOL_LOG_LEVEL=debug", "WARMPOOL_ENABLE_TEST_KINDS=true", NULL};
    wp_opts o = {.dir = dir, .db = db, .port = port, .no_listen_flag = true, .no_db_flag = true, .env = env};
    wp_server *s = wp_server_start(&o);
    assert_int_equal(stats_workers(s, 1), 1);
    json_t *t = wp_submit(s, "{\"kind\":\"echo\"}");
    assert_int_equal(wp_int(t, "timeout_ms"), 4321);
    json_decref(t);
    assert_int_equal(post_status(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"m\"}}"), 202);
    char big[1100];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"kind\":\"echo\"}", 15);
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks", big, &r);
    wp_assert_error(&r, 413, "payload_too_large", NULL);
    wp_resp_free(&r);
    struct stat sb;
    if (stat(db, &sb) != 0) fail_msg("WARMPOOL_DB=%s: no database file there", db);
    wp_server_free(s);
    free(e_listen);
    free(e_db);
    free(db);
    wp_remove_tree(dir);
}

WP_TEST(test_flags_applied) {
    wp_server *s = wp_server_start_args("--workers", "3", "--task-timeout-ms", "4321", "--log-level", "debug",
                                        "--max-body", "2048", NULL);
    assert_int_equal(stats_workers(s, 3), 3);
    json_t *t = wp_submit(s, "{\"kind\":\"echo\"}");
    assert_int_equal(wp_int(t, "timeout_ms"), 4321);
    json_decref(t);
    t = wp_submit(s, "{\"kind\":\"echo\",\"timeout_ms\":null}");
    assert_int_equal(wp_int(t, "timeout_ms"), 4321);
    json_decref(t);
    char big[2100];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"kind\":\"echo\"}", 15);
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks", big, &r);
    wp_assert_error(&r, 413, "payload_too_large", NULL);
    wp_resp_free(&r);
    big[2048] = '\0';
    wp_call(s, "POST", "/v1/tasks", big, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
}

WP_TEST(test_db_dir_created) {
    WP_SQLITE_ONLY("the SQLite file's directories");
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *db = wp_fmt("%s/a/b/c/warmpool.db", dir);
    wp_opts o = {.dir = dir, .db = db, .args = (const char *const[]){"--workers", "1", NULL}};
    wp_server *s = wp_server_start(&o);
    struct stat sb;
    if (stat(db, &sb) != 0) fail_msg("database %s not created", db);
    json_decref(wp_submit(s, "{\"kind\":\"echo\"}"));
    wp_server_free(s);
    free(db);
    wp_remove_tree(dir);
}

WP_TEST(test_second_instance_refused) {
    WP_SQLITE_ONLY("one instance per SQLite file; many on one PostgreSQL database: test_multi");
    wp_server *a = wp_server_start_args("--workers", "1", NULL);
    char *listen = wp_fmt("127.0.0.1:%d", wp_free_port());
    const char *const args[] = {"--db", a->db, "--listen", listen, "--workers", "1", NULL};
    char *out = NULL;
    bool to = false;
    long el = 0;
    int st = wp_run_binary(args, NULL, 10000, &out, &to, &el);
    if (to) fail_msg("a second instance on the same database was still running after 10 s");
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) fail_msg("a second instance on the same database exited 0");
    if (el > 5500) fail_msg("the second instance took %ld ms to give up, want within 5 s", el);
    if (!contains_ci(out, "lock")) fail_msg("the second instance's message does not name the lock: %s", out);
    /* The first is unharmed. */
    json_t *t = wp_submit(a, "{\"kind\":\"echo\",\"input\":\"still here\"}");
    json_t *d = wp_wait_terminal(a, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(t);
    wp_resp r;
    wp_call(a, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 200);
    wp_resp_free(&r);
    free(out);
    free(listen);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kill_worker, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigterm_lets_running_task_finish, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigterm_drains, wp_test_teardown),
        cmocka_unit_test_teardown(test_grace_cutoff, wp_test_teardown),
        cmocka_unit_test_teardown(test_restart_keeps_every_task, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigkill_service_then_restart, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigkill_supervisor_restart_at_once, wp_test_teardown),
        cmocka_unit_test_teardown(test_idle_service_uses_no_cpu, wp_test_teardown),
        cmocka_unit_test_teardown(test_help, wp_test_teardown),
        cmocka_unit_test_teardown(test_bad_flags_exit_2, wp_test_teardown),
        cmocka_unit_test_teardown(test_bad_env_exit_2, wp_test_teardown),
        cmocka_unit_test_teardown(test_flag_beats_env, wp_test_teardown),
        cmocka_unit_test_teardown(test_boolean_env, wp_test_teardown),
        cmocka_unit_test_teardown(test_env_twins, wp_test_teardown),
        cmocka_unit_test_teardown(test_flags_applied, wp_test_teardown),
        cmocka_unit_test_teardown(test_db_dir_created, wp_test_teardown),
        cmocka_unit_test_teardown(test_second_instance_refused, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.process", tests, NULL, NULL);
}
