/* Integration: fault tests (issue 4, item 8). Each one is bounded in time and
 * asserts that nothing is lost: every id that got a 202 ends terminal with the
 * right result.
 *
 *  - kill -9 a busy worker 20 times during a load;
 *  - kill -9 the whole service at random (seeded) moments during a submit load
 *    of 4 clients, restart on the same database, 10 times; integrity_check; the same 4
 *    times with --durability normal (and the flag read back from the database);
 *  - a task past its timeout is killed and retried; a spinning worker does not
 *    stop the others;
 *  - SIGTERM under a submit load;
 *  - retries with backoff (`fail` kind, run_after);
 *  - worker recycling under load (--max-tasks-per-worker, --max-worker-rss);
 *  - an upgrade: a database written by the schema-1 release opens with this binary,
 *    is migrated once at start (the log says so), and every task is still there.
 *
 * The figures (kills survived, tasks checked, lost) are printed as lines
 * starting with "faults:". WP_FAULT_SEED=N replays a kill schedule. */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ local helpers */

static char g_dir[512]; /* a directory shared by restarts; removed by teardown */

static int faults_teardown(void **state) {
    wp_test_teardown(state);
    if (g_dir[0] && !getenv("WARMPOOL_IT_KEEP")) wp_remove_tree(g_dir);
    g_dir[0] = '\0';
    return 0;
}

static void expect_clean_exit(int st, const char *what) {
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        if (WIFSIGNALED(st)) fail_msg("%s: killed by signal %d, want exit 0", what, WTERMSIG(st));
        fail_msg("%s: exit code %d, want 0", what, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

/* One acknowledged submission and what its result must be. */
typedef struct {
    char id[24];
    char kind;   /* 'e' echo {"r","c","i"}, 's' sleep {"ms"} */
    int r, c, i; /* echo input; for sleep: i = ms */
} sub_t;

static char *sub_body(const sub_t *b, int max_attempts) {
    char *s = NULL;
    int n;
    if (b->kind == 's')
        n = asprintf(&s, "{\"kind\":\"sleep\",\"input\":{\"ms\":%d},\"max_attempts\":%d}", b->i, max_attempts);
    else
        n = asprintf(&s, "{\"kind\":\"echo\",\"input\":{\"r\":%d,\"c\":%d,\"i\":%d},\"max_attempts\":%d}", b->r,
                     b->c, b->i, max_attempts);
    return n < 0 ? NULL : s;
}

static json_t *sub_expected(const sub_t *b) {
    if (b->kind == 's') return json_pack("{s:i}", "slept_ms", b->i);
    return json_pack("{s:i, s:i, s:i}", "r", b->r, "c", b->c, "i", b->i);
}

/* A client thread: submits until told to stop (or `max`), records every 202. */
typedef struct {
    const wp_server *s;
    int client, round;
    int pace_ms;      /* pause between submissions */
    int sleep_every;  /* every Nth submission is a sleep task (0: never) */
    int sleep_ms;
    int max_attempts;
    int max;          /* stop after this many 202s */
    int min;          /* don't stop (on the flag) before this many 202s */
    atomic_int *stop;
    sub_t *subs;
    int n, cap;
    int no_answer, refused_503, unexpected;
    char first_unexpected[400];
} feeder_t;

static void *feeder_main(void *p) {
    feeder_t *f = p;
    CURL *h = curl_easy_init();
    for (int k = 0; f->n < f->max; k++) {
        if (atomic_load(f->stop) && f->n >= f->min) break;
        sub_t b = {.kind = 'e', .r = f->round, .c = f->client, .i = k};
        if (f->sleep_every && k % f->sleep_every == f->sleep_every - 1) {
            b.kind = 's';
            b.i = f->sleep_ms;
        }
        char *body = sub_body(&b, f->max_attempts);
        wp_req q = {.method = "POST", .path = "/v1/tasks", .body = body, .handle = h, .timeout_ms = 20000};
        wp_resp r;
        wp_http_nc(f->s, &q, &r);
        if (r.status == 202 && json_is_string(json_object_get(r.json, "id"))) {
            if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 256;
                f->subs = realloc(f->subs, (size_t)f->cap * sizeof *f->subs);
            }
            snprintf(b.id, sizeof b.id, "%s", json_string_value(json_object_get(r.json, "id")));
            f->subs[f->n++] = b;
        } else if (r.status == 0) {
            f->no_answer++;
            wp_sleep_ms(5);
        } else if (r.status == 503) {
            f->refused_503++; /* busy / shutting_down: a legal refusal, nothing stored */
            wp_sleep_ms(5);
        } else {
            if (!f->unexpected)
                snprintf(f->first_unexpected, sizeof f->first_unexpected, "client %d: POST answered %ld: %.300s",
                         f->client, r.status, r.body ? r.body : "");
            f->unexpected++;
        }
        wp_resp_free(&r);
        free(body);
        if (f->pace_ms) wp_sleep_ms(f->pace_ms);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Poll stats until nothing is pending or running. */
static json_t *wait_quiet(const wp_server *s, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *st = wp_stats(s);
        if (wp_stats_count(st, "pending") == 0 && wp_stats_count(st, "running") == 0) return st;
        if (wp_now_ms() > deadline) {
            char *d = wp_dump(json_object_get(st, "tasks"));
            fail_msg("tasks still pending/running %.0f s after the load: %s", timeout_s, d);
        }
        json_decref(st);
        wp_sleep_ms(50);
    }
}

typedef struct {
    int ok;          /* succeeded with the right result */
    int lost_ok;     /* failed worker_lost after max_attempts: legitimate */
    long long extra; /* sum of attempts - 1 */
} check_sum;

/* GET /v1/tasks/ID on the keep-alive handle h. */
static void get_task(const wp_server *s, CURL *h, const char *id, wp_resp *r) {
    char path[64];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    wp_req q = {.method = "GET", .path = path, .handle = h};
    wp_http(s, &q, r);
}

/* GET every sub: it must exist and be terminal; succeeded with the expected
 * result, or (allow_lost) failed/worker_lost with attempts == max_attempts. */
static check_sum check_subs(const wp_server *s, const sub_t *subs, int n, bool allow_lost, const char *what) {
    check_sum cs = {0};
    CURL *h = curl_easy_init();
    for (int k = 0; k < n; k++) {
        wp_resp r;
        get_task(s, h, subs[k].id, &r);
        if (r.status != 200)
            fail_msg("%s: task %s got a 202 but GET answers %ld: %.300s (LOST)", what, subs[k].id, r.status, r.body);
        wp_assert_task_shape(r.json, true);
        const char *state = wp_str(r.json, "state");
        long long at = wp_int(r.json, "attempts"), ma = wp_int(r.json, "max_attempts");
        if (at < 1) fail_msg("%s: task %s: attempts %lld < 1: %.400s", what, subs[k].id, at, r.body);
        cs.extra += at - 1;
        if (strcmp(state, "succeeded") == 0) {
            json_t *want = sub_expected(&subs[k]);
            if (!json_equal(json_object_get(r.json, "result"), want)) {
                char *w = wp_dump(want);
                fail_msg("%s: task %s: result != input: want %s, got %.400s", what, subs[k].id, w, r.body);
            }
            json_decref(want);
            cs.ok++;
        } else if (allow_lost && strcmp(state, "failed") == 0 &&
                   strcmp(wp_str(json_object_get(r.json, "error"), "code"), "worker_lost") == 0 && at == ma) {
            cs.lost_ok++;
        } else {
            fail_msg("%s: task %s: want succeeded%s, got %.500s", what, subs[k].id,
                     allow_lost ? " (or failed/worker_lost after max_attempts)" : "", r.body);
        }
        wp_resp_free(&r);
    }
    curl_easy_cleanup(h);
    return cs;
}

/* Check that each id exists (GET 200), no more. */
static void check_exist(const wp_server *s, const sub_t *subs, int n, const char *what) {
    CURL *h = curl_easy_init();
    for (int k = 0; k < n; k++) {
        wp_resp r;
        get_task(s, h, subs[k].id, &r);
        if (r.status != 200)
            fail_msg("%s: task %s got a 202 but after the restart GET answers %ld: %.300s (LOST)", what, subs[k].id,
                     r.status, r.body);
        wp_resp_free(&r);
    }
    curl_easy_cleanup(h);
}

static void append_subs(sub_t **all, int *n, int *cap, const sub_t *more, int m) {
    if (*n + m > *cap) {
        *cap = (*n + m) * 2 + 64;
        *all = realloc(*all, (size_t)*cap * sizeof **all);
        assert_non_null(*all);
    }
    memcpy(*all + *n, more, (size_t)m * sizeof *more);
    *n += m;
}

typedef struct {
    pid_t pid;
    char state[8];
    char task[24];
    long long done;
} wk_t;

static int workers_of(const wp_server *s, wk_t *out, int max) {
    json_t *st = wp_stats(s);
    int n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "workers"), i, w) {
        if (n >= max) break;
        out[n].pid = (pid_t)wp_int(w, "pid");
        snprintf(out[n].state, sizeof out[n].state, "%s", wp_str(w, "state"));
        snprintf(out[n].task, sizeof out[n].task, "%s", wp_str(w, "task_id"));
        out[n].done = wp_int(w, "tasks_done");
        n++;
    }
    json_decref(st);
    return n;
}

static bool pid_in(pid_t p, const pid_t *l, int n) {
    for (int i = 0; i < n; i++)
        if (l[i] == p) return true;
    return false;
}

/* Wait (bounded) until stats shows n live workers, children of the
 * supervisor, none of them in dead[]. */
static void expect_workers_back(const wp_server *s, int n, const pid_t *dead, int ndead, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        wk_t w[64];
        int k = workers_of(s, w, 64);
        bool ok = k == n;
        for (int i = 0; ok && i < k; i++)
            if (pid_in(w[i].pid, dead, ndead) || !wp_pid_alive(w[i].pid) || wp_ppid_of(w[i].pid) != s->pid)
                ok = false;
        if (ok) return;
        if (wp_now_ms() > deadline) {
            json_t *st = wp_stats(s);
            char *d = wp_dump(json_object_get(st, "workers"));
            fail_msg("workers not back to %d live new children within %.0f s: %s", n, timeout_s, d);
        }
        wp_sleep_ms(20);
    }
}

/* ------------------------------------------------- kill -9 a busy worker */

enum { KW_KILLS = 20, KW_TASKS = 600 };

WP_TEST(test_kill_busy_worker_20_times) {
    wp_server *s = wp_server_start_args("--workers", "2", "--retry-base-ms", "50", "--grace-ms", "2000", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);

    atomic_int stop = 0;
    feeder_t f = {.s = s, .client = 0, .round = 0, .pace_ms = 15, .sleep_every = 3, .sleep_ms = 120,
                  .max_attempts = 3, .max = 3 * KW_TASKS, .min = KW_TASKS, .stop = &stop};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, feeder_main, &f), 0);

    /* first time each pid was seen: a worker younger than 1 s would be restarted
     * with a back-off (crash-loop guard), which would only slow the test down */
    struct {
        pid_t pid;
        long long seen;
    } ages[256];
    int nages = 0;
    struct {
        char task[24];
        int n;
    } hit[KW_KILLS];
    int nhit = 0;
    pid_t dead[KW_KILLS];
    int kills = 0;
    long long t0 = wp_now_ms(), deadline = t0 + 60000;
    while (kills < KW_KILLS) {
        if (wp_now_ms() > deadline) {
            atomic_store(&stop, 1);
            pthread_join(th, NULL);
            fail_msg("only %d of %d worker kills done within 60 s (no busy worker old enough?)", kills, KW_KILLS);
        }
        wk_t w[8];
        int k = workers_of(s, w, 8);
        long long now = wp_now_ms();
        int pick = -1;
        for (int i = 0; i < k; i++) {
            int a;
            for (a = 0; a < nages && ages[a].pid != w[i].pid; a++) {
            }
            if (a == nages && nages < 256) {
                ages[nages].pid = w[i].pid;
                ages[nages++].seen = now;
            }
            if (strcmp(w[i].state, "busy") != 0 || !w[i].task[0]) continue;
            if (now - ages[a].seen < 1100) continue;
            int times = 0;
            for (int j = 0; j < nhit; j++)
                if (strcmp(hit[j].task, w[i].task) == 0) times = hit[j].n;
            if (times >= 2) continue; /* max_attempts 3: leave it its last attempt */
            if (!wp_pid_alive(w[i].pid) || wp_ppid_of(w[i].pid) != s->pid) continue;
            pick = i;
            break;
        }
        if (pick < 0) {
            wp_sleep_ms(10);
            continue;
        }
        assert_int_equal(kill(w[pick].pid, SIGKILL), 0);
        dead[kills++] = w[pick].pid;
        int j;
        for (j = 0; j < nhit && strcmp(hit[j].task, w[pick].task) != 0; j++) {
        }
        if (j == nhit) {
            snprintf(hit[nhit].task, sizeof hit[nhit].task, "%s", w[pick].task);
            hit[nhit++].n = 0;
        }
        hit[j].n++;
        expect_workers_back(s, 2, dead, kills, 15);
    }
    long long kill_ms = wp_now_ms() - t0;
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    if (f.unexpected) fail_msg("%d unexpected answers to submissions; first: %s", f.unexpected, f.first_unexpected);
    if (f.no_answer) fail_msg("%d submissions got no HTTP answer while only workers were killed", f.no_answer);

    json_t *st = wait_quiet(s, 60);
    check_sum cs = check_subs(s, f.subs, f.n, false, "kill -9 workers");
    if (wp_stats_total(st) != f.n || wp_stats_count(st, "succeeded") != f.n) {
        char *d = wp_dump(json_object_get(st, "tasks"));
        fail_msg("%d tasks got a 202; stats say %s (a task stored twice, or a stray one?)", f.n, d);
    }
    json_decref(st);
    if (cs.extra > kills)
        fail_msg("%lld extra attempts in all, but only %d workers were killed: tasks run again without a cause",
                 cs.extra, kills);
    if (cs.extra < 1) fail_msg("none of the %d kills hit a task mid-run (sum of attempts-1 is 0)", kills);
    expect_workers_back(s, 2, dead, kills, 15);
    print_message("faults: worker kill -9: %d kills survived in %lld ms, %d tasks checked (%d succeeded, "
                  "%lld retried attempts), workers back to 2 each time, lost: 0\n",
                  kills, kill_ms, f.n, cs.ok, cs.extra);
    free(f.subs);
}

/* ------------------------------------------- kill -9 the whole service */

enum { KS_ROUNDS = 10, KS_CLIENTS = 4 };

static void kill_whole_service(wp_server *s) {
    pid_t kids[256], all[512];
    int nk = wp_children_of(s->pid, kids, 256), na = 0;
    for (int i = 0; i < nk; i++) all[na++] = kids[i];
    /* the supervisor's process group (the harness puts it in its own), then each child */
    kill(-s->pid, SIGKILL);
    kill(s->pid, SIGKILL);
    for (int i = 0; i < nk; i++) kill(kids[i], SIGKILL);
    int st;
    if (!wp_server_wait_exit(s, 10000, &st)) fail_msg("supervisor %d still alive 10 s after SIGKILL", (int)s->pid);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
        fail_msg("supervisor was expected to die of SIGKILL, status %d", st);
    if (!wp_wait_pids_gone(all, na, 10000)) fail_msg("processes of the killed service still alive after 10 s");
}

static int integrity_check(const char *db, char *out, size_t outlen, long long *rows, long long *unfinished) {
    sqlite3 *c = NULL;
    int rc = sqlite3_open_v2(db, &c, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(out, outlen, "open: %s", c ? sqlite3_errmsg(c) : sqlite3_errstr(rc));
        sqlite3_close(c);
        return -1;
    }
    sqlite3_busy_timeout(c, 5000);
    sqlite3_stmt *q = NULL;
    out[0] = '\0';
    rc = sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &q, NULL);
    while (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%s", l ? "; " : "", (const char *)sqlite3_column_text(q, 0));
    }
    sqlite3_finalize(q);
    *rows = *unfinished = -1;
    if (sqlite3_prepare_v2(c, "SELECT count(*), sum(state NOT IN ('succeeded','failed','canceled')) FROM tasks", -1,
                           &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        *rows = sqlite3_column_int64(q, 0);
        *unfinished = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    sqlite3_close(c);
    return 0;
}

/* The HTTP process logs its writer's durability as read back from the database
 * (api/writer.c): the --durability flag reaches the store. */
static void expect_durability_logged(const wp_server *s, bool normal) {
    const char *want = wp_pg_mode() ? (normal ? "(synchronous_commit=off)" : "(synchronous_commit=on)")
                                    : (normal ? "(synchronous=NORMAL " : "(synchronous=FULL ");
    char line[128];
    snprintf(line, sizeof line, "submissions: --durability %s %s", normal ? "normal" : "full", want);
    for (int i = 0; i < 100; i++) {
        char *log = wp_server_read_log(s);
        bool found = log != NULL && strstr(log, line) != NULL;
        free(log);
        if (found) return;
        wp_sleep_ms(50);
    }
    wp_server_dump_log(s, 4000);
    fail_msg("the log has no line '%s'", line);
}

/* rounds kill -9s of the whole service under a submit load, with args; then every
 * acknowledged task must be there and finish. normal: --durability normal is in args. */
static void kill_whole_service_rounds(const char *const *args, int rounds, bool normal) {
    unsigned seed = (unsigned)(getenv("WP_FAULT_SEED") ? strtoul(getenv("WP_FAULT_SEED"), NULL, 10)
                                                       : (unsigned long)(wp_wall_ms() % 1000000));
    print_message("faults: service kill -9 seed %u (replay with WP_FAULT_SEED=%u)\n", seed, seed);
    srand(seed);
    wp_make_temp_dir(g_dir, sizeof g_dir);

    sub_t *all = NULL;
    int nall = 0, capall = 0, unexpected = 0;
    long long total_no_answer = 0;
    char first_unexpected[400] = "";
    for (int round = 0; round < rounds; round++) {
        wp_opts o = {.dir = g_dir, .args = args};
        wp_server *s = wp_server_start(&o);
        if (round == 0) expect_durability_logged(s, normal);
        /* everything acknowledged before the last kill is still there */
        check_exist(s, all, nall, "after a kill -9 of the whole service");
        atomic_int stop = 0;
        feeder_t f[KS_CLIENTS];
        pthread_t th[KS_CLIENTS];
        for (int c = 0; c < KS_CLIENTS; c++) {
            f[c] = (feeder_t){.s = s, .client = c, .round = round, .pace_ms = 8, .sleep_every = 10, .sleep_ms = 30,
                              .max_attempts = 3, .max = 100000, .min = 0, .stop = &stop};
            assert_int_equal(pthread_create(&th[c], NULL, feeder_main, &f[c]), 0);
        }
        int delay = 50 + rand() % 1200;
        wp_sleep_ms(delay);
        kill_whole_service(s);
        atomic_store(&stop, 1);
        int acked = 0;
        for (int c = 0; c < KS_CLIENTS; c++) {
            pthread_join(th[c], NULL);
            append_subs(&all, &nall, &capall, f[c].subs, f[c].n);
            acked += f[c].n;
            total_no_answer += f[c].no_answer;
            if (f[c].unexpected && !unexpected) snprintf(first_unexpected, sizeof first_unexpected, "%s",
                                                         f[c].first_unexpected);
            unexpected += f[c].unexpected;
            free(f[c].subs);
        }
        print_message("faults: round %d: killed after %d ms, %d submissions acknowledged\n", round + 1, delay, acked);
        wp_server_free(s);
    }
    if (unexpected) fail_msg("%d unexpected answers to submissions; first: %s", unexpected, first_unexpected);

    wp_opts o = {.dir = g_dir, .args = args};
    wp_server *s = wp_server_start(&o);
    check_exist(s, all, nall, "after the last kill -9");
    json_t *st = wait_quiet(s, 90);
    long long stored = wp_stats_total(st);
    json_decref(st);
    check_sum cs = check_subs(s, all, nall, true, "kill -9 the service");
    if (stored < nall) fail_msg("%d ids got a 202 but only %lld tasks are stored", nall, stored);
    char dbpath[1024];
    snprintf(dbpath, sizeof dbpath, "%s", s->db);
    int ex = wp_server_stop(s, 20000, NULL);
    expect_clean_exit(ex, "SIGTERM after the kill rounds");

    char ic[2048];
    long long rows = -1, unfinished = -1;
    if (wp_pg_mode()) {
        /* PostgreSQL: the rows, and the kept counts against COUNT(*) */
        char v[64];
        wp_pg_sql(dbpath, "SELECT count(*) FROM tasks", v, sizeof v);
        rows = atoll(v);
        wp_pg_sql(dbpath, "SELECT count(*) FROM tasks WHERE state NOT IN ('succeeded','failed','canceled')", v,
                  sizeof v);
        unfinished = atoll(v);
        wp_pg_sql(dbpath,
                  "SELECT count(*) FROM (SELECT state, kind, sum(n) AS n FROM task_counts GROUP BY state, kind"
                  " HAVING sum(n) <> 0) AS kept FULL JOIN (SELECT state, kind, count(*) AS n FROM tasks"
                  " WHERE state <> 'running' GROUP BY state, kind) AS real USING (state, kind)"
                  " WHERE kept.n IS DISTINCT FROM real.n",
                  v, sizeof v);
        if (strcmp(v, "0") != 0) fail_msg("%s (state, kind) counts differ from COUNT(*) after %d kills", v, rounds);
        snprintf(ic, sizeof ic, "ok");
    } else if (integrity_check(dbpath, ic, sizeof ic, &rows, &unfinished) != 0) {
        fail_msg("sqlite3: %s", ic);
    }
    if (strcmp(ic, "ok") != 0) fail_msg("PRAGMA integrity_check after %d kills: %s", rounds, ic);
    if (rows != stored) fail_msg("the database has %lld tasks, stats said %lld", rows, stored);
    if (unfinished != 0) fail_msg("%lld tasks not terminal in the database after the final stop", unfinished);
    print_message("faults: service kill -9: %d kills survived, %d acknowledged tasks checked (%d succeeded, %d "
                  "failed worker_lost after max_attempts, %lld stored in all, %lld submissions cut off unanswered), "
                  "%s ok, lost: 0\n",
                  rounds, nall, cs.ok, cs.lost_ok, stored, total_no_answer,
                  wp_pg_mode() ? "counts" : "integrity_check");
    free(all);
}

WP_TEST(test_kill_whole_service_10_times) {
    const char *const args[] = {"--workers", "2", "--retry-base-ms", "50", "--grace-ms", "3000", NULL};
    kill_whole_service_rounds(args, KS_ROUNDS, false);
}

/* --durability normal: a 202 no longer waits for an fsync, but it still waits for the
 * commit, so a kill -9 of warmpool (not of the machine) loses nothing acknowledged */
WP_TEST(test_kill_whole_service_durability_normal) {
    const char *const args[] = {"--workers", "2", "--retry-base-ms", "50", "--grace-ms", "3000",
                                "--durability", "normal", NULL};
    kill_whole_service_rounds(args, 4, true);
}

WP_TEST(test_timeout_kills_and_retries) {
    wp_server *s = wp_server_start_args("--workers", "2", "--enable-test-kinds", "--retry-base-ms", "50",
                                        "--grace-ms", "1000", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    long long t0 = wp_now_ms();
    json_t *t = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":5000},\"timeout_ms\":300,\"max_attempts\":2}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_state(s, id, "running", 10));
    pid_t first = wp_worker_pid_for_task(s, id, 5);

    /* the other worker is free: an echo finishes promptly */
    long long e0 = wp_now_ms();
    json_t *e = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"not blocked\"}");
    json_t *ed = wp_wait_terminal(s, wp_str(e, "id"), 10);
    long long e_ms = wp_now_ms() - e0;
    assert_string_equal(wp_str(ed, "state"), "succeeded");
    if (e_ms > 2000) fail_msg("an echo took %lld ms while the other worker ran a hung task", e_ms);
    json_decref(e);
    json_decref(ed);

    json_t *d = wp_wait_terminal(s, id, 20);
    long long took = wp_now_ms() - t0;
    char *dd = wp_dump(d);
    if (strcmp(wp_str(d, "state"), "failed") != 0 ||
        strcmp(wp_str(json_object_get(d, "error"), "code"), "timeout") != 0 || wp_int(d, "attempts") != 2)
        fail_msg("sleep 5000 ms with timeout_ms 300, max_attempts 2: want failed/timeout after 2 attempts, got %s",
                 dd);
    if (took > 4500)
        fail_msg("two 300 ms timeouts took %lld ms to end the task (the 5 s sleep ran on?): %s", took, dd);
    if (first && wp_pid_alive(first) && wp_ppid_of(first) == s->pid)
        fail_msg("worker %d that ran the timed-out task is still alive", (int)first);
    free(dd);
    json_decref(d);
    pid_t deadp[1] = {first};
    expect_workers_back(s, 2, deadp, first ? 1 : 0, 15);

    /* spin forever with timeout 500: the other worker keeps serving echo tasks */
    long long s0 = wp_now_ms();
    t = wp_submit(s, "{\"kind\":\"spin\",\"input\":{},\"timeout_ms\":500}");
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_state(s, id, "running", 10));
    pid_t spinner = wp_worker_pid_for_task(s, id, 5);
    int echoes = 0;
    for (int i = 0; i < 10; i++) {
        json_t *x = wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", i);
        json_t *xd = wp_wait_terminal(s, wp_str(x, "id"), 5);
        assert_string_equal(wp_str(xd, "state"), "succeeded");
        assert_int_equal(json_integer_value(json_object_get(xd, "result")), i);
        echoes++;
        json_decref(x);
        json_decref(xd);
    }
    d = wp_wait_terminal(s, id, 10);
    long long spin_ms = wp_now_ms() - s0;
    dd = wp_dump(d);
    if (strcmp(wp_str(d, "state"), "failed") != 0 ||
        strcmp(wp_str(json_object_get(d, "error"), "code"), "timeout") != 0 || wp_int(d, "attempts") != 1)
        fail_msg("spin forever with timeout_ms 500: want failed/timeout, got %s", dd);
    if (spin_ms > 4000) fail_msg("a spinning task with timeout_ms 500 took %lld ms to end", spin_ms);
    free(dd);
    json_decref(d);
    pid_t deadp2[2] = {first, spinner};
    expect_workers_back(s, 2, deadp2, 2, 15);
    print_message("faults: timeouts: hung sleep failed/timeout after 2 attempts in %lld ms; spin ended in %lld ms "
                  "while %d echo tasks completed on the other worker\n",
                  took, spin_ms, echoes);
}

/* ------------------------------------------------------ SIGTERM under load */

WP_TEST(test_sigterm_under_load) {
    wp_make_temp_dir(g_dir, sizeof g_dir);
    const char *const args[] = {"--workers", "2", "--grace-ms", "10000", NULL};
    wp_opts o = {.dir = g_dir, .args = args};
    wp_server *s = wp_server_start(&o);
    atomic_int stop = 0;
    feeder_t f[4];
    pthread_t th[4];
    for (int c = 0; c < 4; c++) {
        f[c] = (feeder_t){.s = s, .client = c, .round = 0, .pace_ms = 4, .sleep_every = 10, .sleep_ms = 40,
                          .max_attempts = 1, .max = 100000, .stop = &stop};
        assert_int_equal(pthread_create(&th[c], NULL, feeder_main, &f[c]), 0);
    }
    wp_sleep_ms(1000);
    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    int acked_before = 0;
    for (int c = 0; c < 4; c++) acked_before += f[c].n; /* racy read: only for the figures */
    long long term_at = wp_now_ms();
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    int st = 0;
    bool exited = wp_server_wait_exit(s, 20000, &st);
    long long exit_ms = wp_now_ms() - term_at;
    atomic_store(&stop, 1);
    sub_t *all = NULL;
    int nall = 0, capall = 0, refused = 0, unexpected = 0;
    char first_unexpected[400] = "";
    for (int c = 0; c < 4; c++) {
        pthread_join(th[c], NULL);
        append_subs(&all, &nall, &capall, f[c].subs, f[c].n);
        refused += f[c].refused_503 + f[c].no_answer;
        if (f[c].unexpected && !unexpected)
            snprintf(first_unexpected, sizeof first_unexpected, "%s", f[c].first_unexpected);
        unexpected += f[c].unexpected;
        free(f[c].subs);
    }
    if (!exited) fail_msg("the service did not exit within 20 s of SIGTERM under load");
    expect_clean_exit(st, "SIGTERM under a submit load");
    if (!wp_wait_pids_gone(kids, nk, 5000)) fail_msg("children of the service outlived it");
    if (unexpected) fail_msg("%d unexpected answers to submissions; first: %s", unexpected, first_unexpected);
    if (nall == 0) fail_msg("no submission was acknowledged in 1 s of load");

    wp_server *s2 = wp_server_start(&o);
    check_exist(s2, all, nall, "after SIGTERM");
    json_t *sts = wait_quiet(s2, 60);
    long long stored = wp_stats_total(sts);
    json_decref(sts);
    check_sum cs = check_subs(s2, all, nall, false, "SIGTERM under load");
    if (stored < nall) fail_msg("%d ids got a 202 but only %lld tasks are stored", nall, stored);
    print_message("faults: SIGTERM under load: exit 0 after %lld ms, %d acknowledged tasks checked (%d succeeded; "
                  "~%d acknowledged before the signal), %d submissions refused or unanswered from the drain on, "
                  "lost: 0\n",
                  exit_ms, nall, cs.ok, acked_before, refused);
    free(all);
}

/* ----------------------------------------------------------------- retries */

WP_TEST(test_retry_backoff) {
    wp_server *s =
        wp_server_start_args("--workers", "1", "--enable-test-kinds", "--retry-base-ms", "100", NULL);
    long long t0 = wp_now_ms();
    json_t *t = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"disk on fire\"},\"max_attempts\":3}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    int waits_seen = 0;
    long long last_attempts_waiting = 0;
    json_t *d = NULL;
    for (;;) {
        if (wp_now_ms() - t0 > 15000) fail_msg("fail task with 3 attempts not terminal within 15 s");
        json_t *x = wp_get_task(s, id);
        const char *tstate = wp_str(x, "state");
        if (wp_is_terminal(tstate)) {
            d = x;
            break;
        }
        long long at = wp_int(x, "attempts");
        if (strcmp(tstate, "pending") == 0 && at >= 1) {
            /* waiting between attempts */
            char *dx = wp_dump(x);
            json_t *ra = json_object_get(x, "run_after");
            if (!json_is_string(ra)) fail_msg("pending between attempts without run_after: %s", dx);
            long long rat = wp_parse_ts(json_string_value(ra));
            long long sat = wp_parse_ts(wp_str(x, "started_at"));
            if (sat < 0 || rat <= sat)
                fail_msg("run_after must be later than the previous attempt's started_at: %s", dx);
            /* backoff after attempt k: 100 ms * 2^(k-1), plus up to 25% jitter */
            long long want = 100LL << (at - 1);
            if (rat - sat < want - 2)
                fail_msg("run_after is only %lld ms after started_at of attempt %lld; the backoff is >= %lld ms: %s",
                         rat - sat, at, want, dx);
            json_t *err = json_object_get(x, "error");
            if (strcmp(wp_str(err, "code"), "task_failed") != 0 ||
                !strstr(wp_str(err, "message"), "disk on fire"))
                fail_msg("pending between attempts must keep the last error (task_failed, its message): %s", dx);
            if (at != last_attempts_waiting) waits_seen++;
            last_attempts_waiting = at;
            free(dx);
        }
        json_decref(x);
        wp_sleep_ms(5);
    }
    long long took = wp_now_ms() - t0;
    char *dd = wp_dump(d);
    json_t *err = json_object_get(d, "error");
    if (strcmp(wp_str(d, "state"), "failed") != 0 || wp_int(d, "attempts") != 3 ||
        strcmp(wp_str(err, "code"), "task_failed") != 0 || !strstr(wp_str(err, "message"), "disk on fire"))
        fail_msg("fail with max_attempts 3: want failed after 3 attempts with task_failed and its message, got %s",
                 dd);
    if (waits_seen < 1) fail_msg("never saw the task pending with run_after between attempts: %s", dd);
    long long span = wp_parse_ts(wp_str(d, "finished_at")) - wp_parse_ts(wp_str(d, "created_at"));
    if (span < 300)
        fail_msg("3 attempts with --retry-base-ms 100 finished %lld ms after creation: want >= 100 + 200 ms of backoff",
                 span);
    print_message("faults: retries: failed after 3 attempts in %lld ms (%lld ms server-side), saw %d waits with "
                  "run_after\n",
                  took, span, waits_seen);
    free(dd);
    json_decref(d);
}

/* A retry runs when its run_after comes (not at some later tick): each
 * attempt after the first starts within 400 ms of the run_after the task
 * showed while it waited, and never before it. */
WP_TEST(test_retry_runs_at_run_after) {
    wp_server *s =
        wp_server_start_args("--workers", "1", "--enable-test-kinds", "--retry-base-ms", "100", NULL);
    json_t *t = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"again\"},\"max_attempts\":4}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    long long run_after[8] = {0}; /* run_after seen while waiting after attempt k */
    long long started[8] = {0};   /* started_at of attempt k */
    long long t0 = wp_now_ms();
    for (;;) {
        if (wp_now_ms() - t0 > 20000) fail_msg("fail task with 4 attempts not terminal within 20 s");
        json_t *x = wp_get_task(s, id);
        long long at = wp_int(x, "attempts");
        if (at >= 1 && at < 8 && json_is_string(json_object_get(x, "started_at")))
            started[at] = wp_parse_ts(wp_str(x, "started_at"));
        if (strcmp(wp_str(x, "state"), "pending") == 0 && at >= 1 && at < 8 &&
            json_is_string(json_object_get(x, "run_after")))
            run_after[at] = wp_parse_ts(wp_str(x, "run_after"));
        bool done = wp_is_terminal(wp_str(x, "state"));
        json_decref(x);
        if (done) break;
        wp_sleep_ms(5);
    }
    char report[512] = "";
    int late = 0;
    for (int k = 1; k < 4; k++) {
        if (!run_after[k] || !started[k + 1]) continue;
        long long lag = started[k + 1] - run_after[k];
        size_t l = strlen(report);
        snprintf(report + l, sizeof report - l, "%sattempt %d started %lld ms after its run_after", l ? "; " : "",
                 k + 1, lag);
        if (lag > 400 || lag < -5) late++;
    }
    print_message("faults: retry timing (--retry-base-ms 100): %s\n", report);
    if (!report[0]) fail_msg("never saw a retry's run_after and its next start");
    if (late)
        fail_msg("retries do not run at their run_after (--retry-base-ms 100, an idle worker): %s", report);
}

/* --------------------------------------------------------------- recycling */

/* Submit n echo tasks in batches; returns subs (malloc'ed). */
static sub_t *submit_echo_batch(const wp_server *s, int n, int round) {
    sub_t *subs = calloc((size_t)n, sizeof *subs);
    assert_non_null(subs);
    for (int from = 0; from < n; from += 100) {
        int to = from + 100 < n ? from + 100 : n;
        json_t *tasks = json_array();
        for (int i = from; i < to; i++) {
            subs[i] = (sub_t){.kind = 'e', .r = round, .c = 0, .i = i};
            json_array_append_new(tasks, json_pack("{s:s, s:o}", "kind", "echo", "input", sub_expected(&subs[i])));
        }
        json_t *body = json_pack("{s:o}", "tasks", tasks);
        char *b = json_dumps(body, JSON_COMPACT);
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks/batch", b, &r);
        if (r.status != 202) fail_msg("batch: want 202, got %ld: %.300s", r.status, r.body);
        json_t *out = json_object_get(r.json, "tasks");
        assert_int_equal(json_array_size(out), (size_t)(to - from));
        for (int i = from; i < to; i++)
            snprintf(subs[i].id, sizeof subs[i].id, "%s", wp_str(json_array_get(out, (size_t)(i - from)), "id"));
        wp_resp_free(&r);
        free(b);
        json_decref(body);
    }
    return subs;
}

/* Sample stats until quiet; returns distinct worker pids seen, max tasks_done. */
static int watch_recycling(const wp_server *s, double timeout_s, long long *max_done) {
    pid_t seen[4096];
    int nseen = 0;
    *max_done = 0;
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *st = wp_stats(s);
        size_t i;
        json_t *w;
        json_array_foreach(json_object_get(st, "workers"), i, w) {
            pid_t p = (pid_t)wp_int(w, "pid");
            if (!pid_in(p, seen, nseen) && nseen < 4096) seen[nseen++] = p;
            if (wp_int(w, "tasks_done") > *max_done) *max_done = wp_int(w, "tasks_done");
        }
        bool quiet = wp_stats_count(st, "pending") == 0 && wp_stats_count(st, "running") == 0;
        if (!quiet && wp_now_ms() > deadline) {
            char *d = wp_dump(st);
            fail_msg("recycling workers: the backlog did not drain within %.0f s (hang?): %s", timeout_s, d);
        }
        json_decref(st);
        if (quiet) return nseen;
        wp_sleep_ms(10);
    }
}

WP_TEST(test_recycling_under_load) {
    wp_server *s = wp_server_start_args("--workers", "2", "--max-tasks-per-worker", "5", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    sub_t *subs = submit_echo_batch(s, 300, 1);
    long long max_done = 0;
    long long t0 = wp_now_ms();
    int pids = watch_recycling(s, 60, &max_done);
    long long ms = wp_now_ms() - t0;
    check_sum cs = check_subs(s, subs, 300, false, "--max-tasks-per-worker 5");
    json_t *st = wp_stats(s);
    if (wp_stats_count(st, "succeeded") != 300 || wp_stats_total(st) != 300) {
        char *d = wp_dump(json_object_get(st, "tasks"));
        fail_msg("300 tasks submitted, stats: %s", d);
    }
    json_decref(st);
    if (max_done > 5) fail_msg("--max-tasks-per-worker 5: a worker reported tasks_done %lld", max_done);
    if (pids < 6) fail_msg("--max-tasks-per-worker 5 with 300 tasks: only %d distinct worker pids seen", pids);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    free(subs);

    wp_server *s2 = wp_server_start_args("--workers", "2", "--max-worker-rss", "1", NULL);
    assert_int_equal(wp_wait_workers(s2, 2, 15), 2);
    subs = submit_echo_batch(s2, 50, 2);
    long long max_done2 = 0;
    long long t1 = wp_now_ms();
    int pids2 = watch_recycling(s2, 60, &max_done2);
    long long ms2 = wp_now_ms() - t1;
    check_sum cs2 = check_subs(s2, subs, 50, false, "--max-worker-rss 1");
    if (max_done2 > 1) fail_msg("--max-worker-rss 1: a worker did %lld tasks (each one should retire it)", max_done2);
    if (pids2 < 3) fail_msg("--max-worker-rss 1 with 50 tasks: only %d distinct worker pids seen", pids2);
    assert_int_equal(wp_wait_workers(s2, 2, 15), 2);
    free(subs);
    print_message("faults: recycling: 300 tasks with --max-tasks-per-worker 5 in %lld ms (%d succeeded, %d worker "
                  "pids seen); 50 tasks with --max-worker-rss 1 in %lld ms (%d succeeded, %d pids seen); lost: 0\n",
                  ms, cs.ok, pids, ms2, cs2.ok, pids2);
}

/* ------------------------------------------------------------ upgrade */

/* The schema of the first release (version 1), as it created databases. */
static const char SCHEMA_V1[] =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('pending','running','succeeded','failed','canceled')),"
    "  priority INTEGER NOT NULL, input TEXT NOT NULL, result TEXT, error_code TEXT,"
    "  error_message TEXT, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,"
    "  timeout_ms INTEGER NOT NULL, created_at INTEGER NOT NULL, started_at INTEGER,"
    "  finished_at INTEGER, run_after INTEGER NOT NULL DEFAULT 0, idem_key TEXT UNIQUE,"
    "  owner INTEGER);"
    "CREATE INDEX tasks_pending ON tasks (priority DESC, id, run_after) WHERE state = 'pending';"
    "CREATE INDEX tasks_state ON tasks (state, id);"
    "CREATE INDEX tasks_kind ON tasks (kind, id);"
    "INSERT INTO meta (key, value) VALUES ('cursor_secret', lower(hex(randomblob(8))));"
    "PRAGMA user_version = 1;"
    /* 3 succeeded, 1 failed, 2 pending (one with an idempotency key), 1 left running by
     * a killed release (attempt 1 of 2), 1 canceled */
    "INSERT INTO tasks (kind, state, priority, input, result, attempts, max_attempts, timeout_ms,"
    " created_at, started_at, finished_at) VALUES"
    " ('echo','succeeded',0,'{\"n\":1}','{\"n\":1}',1,1,60000,1700000000000,1700000000001,1700000000002),"
    " ('echo','succeeded',0,'{\"n\":2}','{\"n\":2}',1,1,60000,1700000000000,1700000000001,1700000000002),"
    " ('echo','succeeded',0,'{\"n\":3}','{\"n\":3}',1,1,60000,1700000000000,1700000000001,1700000000002);"
    "INSERT INTO tasks (kind, state, priority, input, error_code, error_message, attempts,"
    " max_attempts, timeout_ms, created_at, started_at, finished_at) VALUES"
    " ('echo','failed',0,'{\"n\":4}','boom','it failed',1,1,60000,1700000000000,1700000000001,"
    "  1700000000002);"
    "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at, idem_key)"
    " VALUES ('echo','pending',0,'{\"n\":5}',1,60000,1700000000000,'key-5'),"
    "        ('echo','pending',3,'{\"n\":6}',1,60000,1700000000000,NULL);"
    "INSERT INTO tasks (kind, state, priority, input, attempts, max_attempts, timeout_ms,"
    " created_at, started_at, owner) VALUES"
    " ('echo','running',0,'{\"n\":7}',1,2,60000,1700000000000,1700000000001,99999);"
    "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at,"
    " finished_at) VALUES ('echo','canceled',0,'{\"n\":8}',1,60000,1700000000000,1700000000003);";

static void test_upgrade_from_schema_1(void **state) {
    (void)state;
    if (wp_pg_mode()) {
        print_message("skipped under PostgreSQL: SQLite's schema 1 (PostgreSQL's schema starts at 1; "
                      "unit.store_backends covers its migrations)\n");
        skip();
    }
    wp_make_temp_dir(g_dir, sizeof g_dir);
    char db[1024];
    snprintf(db, sizeof db, "%s/warmpool.db", g_dir);
    sqlite3 *c = NULL;
    char *msg = NULL;
    if (sqlite3_open(db, &c) != SQLITE_OK || sqlite3_exec(c, SCHEMA_V1, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("making a schema-1 database: %s", msg ? msg : sqlite3_errmsg(c));
    sqlite3_close(c);

    const char *args[] = {"--workers", "2", NULL};
    wp_opts o = {.dir = g_dir, .args = args};
    wp_server *s = wp_server_start(&o);
    /* the running task is handed back (attempt 1 of 2) and, with the pending ones, runs */
    for (int i = 5; i <= 7; i++) {
        char id[8];
        snprintf(id, sizeof id, "%d", i);
        json_t *t = wp_wait_terminal(s, id, 20);
        if (strcmp(wp_str(t, "state"), "succeeded") != 0) {
            char *d = wp_dump(t);
            fail_msg("task %d after the upgrade: %s", i, d);
        }
        json_t *want = json_pack("{s:i}", "n", i);
        assert_true(json_equal(json_object_get(t, "result"), want));
        json_decref(want);
        if (i == 7) assert_int_equal(wp_int(t, "attempts"), 2);
        json_decref(t);
    }
    /* the old tasks read as they were; the kept counts agree with them */
    json_t *t1 = wp_get_task(s, "4");
    assert_string_equal(wp_str(t1, "state"), "failed");
    assert_string_equal(wp_str(json_object_get(t1, "error"), "code"), "boom");
    json_decref(t1);
    json_t *st = wp_stats(s);
    json_t *tasks = json_object_get(st, "tasks");
    assert_int_equal(wp_int(tasks, "succeeded"), 6);
    assert_int_equal(wp_int(tasks, "failed"), 1);
    assert_int_equal(wp_int(tasks, "canceled"), 1);
    assert_int_equal(wp_int(tasks, "pending"), 0);
    assert_int_equal(wp_int(tasks, "running"), 0);
    json_decref(st);
    /* an idempotency key from before the upgrade still holds; new ids follow the old ones */
    wp_resp r;
    const char *hdr[] = {"Idempotency-Key: key-5", NULL};
    wp_call_h(s, "POST", "/v1/tasks",
              "{\"kind\":\"echo\",\"input\":{\"n\":5},\"max_attempts\":1,\"timeout_ms\":60000}", hdr, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(r.json, "id"), "5");
    wp_resp_free(&r);
    json_t *fresh = wp_submit(s, "{\"kind\":\"echo\",\"input\":9}");
    char fresh_id[32];
    snprintf(fresh_id, sizeof fresh_id, "%s", wp_str(fresh, "id"));
    if (atoll(fresh_id) <= 8) fail_msg("a new task after the upgrade got id %s: ids are never reused", fresh_id);
    json_decref(fresh);
    char *log = wp_server_read_log(s);
    if (strstr(log, "database: ") == NULL || strstr(log, "upgraded from version 1") == NULL) {
        wp_server_dump_log(s, 4000);
        fail_msg("the log does not tell of the upgrade from version 1");
    }
    free(log);
    expect_clean_exit(wp_server_stop(s, 20000, NULL), "first start after the upgrade");
    wp_server_free(s);

    /* the next start finds the current schema: nothing to migrate */
    s = wp_server_start(&o);
    log = wp_server_read_log(s);
    if (strstr(log, "upgrading from version") != NULL || strstr(log, "(schema version") == NULL)
        fail_msg("the second start upgraded again, or did not log its schema version");
    free(log);
    json_t *t9 = wp_wait_terminal(s, fresh_id, 20);
    assert_string_equal(wp_str(t9, "state"), "succeeded");
    json_decref(t9);
    expect_clean_exit(wp_server_stop(s, 20000, NULL), "second start");
    wp_server_free(s);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_retry_backoff, faults_teardown),
        cmocka_unit_test_teardown(test_retry_runs_at_run_after, faults_teardown),
        cmocka_unit_test_teardown(test_timeout_kills_and_retries, faults_teardown),
        cmocka_unit_test_teardown(test_recycling_under_load, faults_teardown),
        cmocka_unit_test_teardown(test_kill_busy_worker_20_times, faults_teardown),
        cmocka_unit_test_teardown(test_sigterm_under_load, faults_teardown),
        cmocka_unit_test_teardown(test_kill_whole_service_10_times, faults_teardown),
        cmocka_unit_test_teardown(test_kill_whole_service_durability_normal, faults_teardown),
        cmocka_unit_test_teardown(test_upgrade_from_schema_1, faults_teardown),
    };
    return cmocka_run_group_tests_name("integration.faults", tests, NULL, NULL);
}
