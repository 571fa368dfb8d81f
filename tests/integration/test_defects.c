/* Integration: the eight defects of issue 8, each forced with a fault point
 * (common/fault.h, armed through WARMPOOL_FAULTS in the server's environment) or a
 * real condition (a write lock held by the test, a database overwritten with
 * garbage), so that each test failed against the code before its fix.
 *
 * The fragile plugin's path comes from the environment (set by CMake):
 * WP_IT_FRAGILE_SO. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static const char *fragile_so(void) {
    const char *p = getenv("WP_IT_FRAGILE_SO");
    if (!p || !*p) fail_msg("WP_IT_FRAGILE_SO is not set: it must name libfragile.so (examples/)");
    return p;
}

/* Starts a server with extra args and WARMPOOL_FAULTS=faults (NULL: none). */
static wp_server *start_faulty(const char *faults, const char *const *args) {
    char *env0 = faults ? wp_fmt("WARMPOOL_FAULTS=%s", faults) : NULL;
    const char *const env[] = {env0, NULL};
    wp_opts o = {.args = args, .env = env0 ? env : NULL};
    wp_server *s = wp_server_start(&o);
    free(env0);
    return s;
}

static bool log_has(const wp_server *s, const char *needle) {
    char *log = wp_server_read_log(s);
    bool found = strstr(log, needle) != NULL;
    free(log);
    return found;
}

/* Submits body; its id into id (64 bytes). */
static void submit_id(const wp_server *s, const char *body, char id[64]) {
    json_t *t = wp_submit(s, body);
    snprintf(id, 64, "%s", wp_str(t, "id"));
    json_decref(t);
}

static void expect_state(const json_t *t, const char *state, long long attempts, const char *what) {
    if (strcmp(wp_str(t, "state"), state) != 0 || (attempts > 0 && wp_int(t, "attempts") != attempts)) {
        char *d = wp_dump(t);
        fail_msg("%s: want %s after %lld attempt(s), got %s", what, state, attempts, d);
    }
}

static void expect_clean_exit(int st, const char *what) {
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("%s: want exit 0, got %s %d", what, WIFEXITED(st) ? "exit code" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* A restart on the same directory, for reading what a drained service left. */
static wp_server *restart(const wp_server *s, const char *const *args) {
    wp_opts o = {.dir = s->dir, .args = args};
    return wp_server_start(&o);
}

/* ----------------------------------------------------- 1. release retried */

/* Issue 8, defect 1: the supervisor could not hand back a dead worker's task (its
 * database open failed: a full disk, busy, an I/O error) and never tried again, so
 * the task stayed `running` until the next restart. The first three releases fail
 * here (supervisor_release_fail=3); the task must still be retried. */
WP_TEST(test_release_retried_until_it_succeeds) {
    const char *const args[] = {"--workers", "2", "--grace-ms", "1000", NULL};
    wp_server *s = start_faulty("supervisor_release_fail=3", args);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    char id[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1500},\"max_attempts\":2}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    pid_t w = wp_worker_pid_for_task(s, id, 5);
    if (!w) fail_msg("no worker shows task %s", id);
    assert_int_equal(kill(w, SIGKILL), 0);
    json_t *t = wp_wait_terminal(s, id, 15);
    expect_state(t, "succeeded", 2, "a killed worker's task whose first 3 releases failed");
    json_decref(t);
    if (!log_has(s, "supervisor_release_fail"))
        fail_msg("the log does not say why the first releases failed");
}

/* ----------------------------------------------------------- 2. timeouts */

/* Issue 8, defect 2: after store_finish_claim committed the next claim, the worker
 * table still showed the previous task's deadline until run_task wrote the new one;
 * a supervisor tick in that gap failed the new task as `timeout` before it ran.
 * worker_claimed_pause_ms widens the gap to 1 s, past the first task's deadline. */
WP_TEST(test_no_timeout_before_the_task_runs) {
    const char *const args[] = {"--workers", "1", NULL};
    wp_server *s = start_faulty("worker_claimed_pause_ms=1000", args);
    assert_int_equal(wp_wait_workers(s, 1, 15), 1);
    char a[64], b[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":300},\"timeout_ms\":500}", a);
    json_decref(wp_wait_state(s, a, "running", 10));
    /* queued behind a: a's worker claims it in the transaction that records a */
    submit_id(s, "{\"kind\":\"echo\",\"input\":\"b\",\"max_attempts\":1,\"timeout_ms\":60000}", b);
    json_t *ta = wp_wait_terminal(s, a, 10), *tb = wp_wait_terminal(s, b, 10);
    expect_state(ta, "succeeded", 1, "a 300 ms task with timeout_ms 500");
    expect_state(tb, "succeeded", 1, "the task claimed while recording the previous one");
    json_decref(ta);
    json_decref(tb);
}

/* Issue 8, defect 2 (second half): time spent waiting for the database to record a
 * finished task counted against that task's deadline. The test holds the write lock
 * for 1.5 s from when the task starts; the task itself takes 300 ms of its 700. */
/* With PostgreSQL: the test locks the task's row (SELECT ... FOR UPDATE) for 1.5 s, so
 * the worker's record waits for it. */
static void recording_waits_for_a_row_lock(wp_server *s) {
    PGconn *c = PQconnectdb(s->db);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connecting: %s", PQerrorMessage(c));
    char id[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":300},\"timeout_ms\":700,\"max_attempts\":1}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    long long t0 = wp_now_ms();
    char *sql = wp_fmt("BEGIN; SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", id);
    PGresult *r = PQexec(c, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) fail_msg("locking the task: %s", PQresultErrorMessage(r));
    PQclear(r);
    long long held = wp_now_ms() - t0;
    if (held > 250) fail_msg("the row lock took %lld ms to get: the task may have ended first", held);
    wp_sleep_ms(1500);
    PQclear(PQexec(c, "ROLLBACK"));
    PQfinish(c);
    json_t *t = wp_wait_terminal(s, id, 10);
    expect_state(t, "succeeded", 1, "a 300 ms task (timeout_ms 700) recorded after a 1.5 s wait for a row lock");
    json_decref(t);
}

WP_TEST(test_recording_time_is_not_task_time) {
    const char *const args[] = {"--workers", "1", NULL};
    wp_server *s = start_faulty(NULL, args);
    assert_int_equal(wp_wait_workers(s, 1, 15), 1);
    if (wp_pg_mode()) {
        recording_waits_for_a_row_lock(s);
        return;
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char id[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":300},\"timeout_ms\":700,\"max_attempts\":1}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    long long t0 = wp_now_ms();
    char *msg = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("taking the write lock: %s", msg ? msg : "?");
    long long held = wp_now_ms() - t0;
    if (held > 250) fail_msg("the write lock took %lld ms to get: the task may have ended first", held);
    wp_sleep_ms(1500);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    json_t *t = wp_wait_terminal(s, id, 10);
    expect_state(t, "succeeded", 1, "a 300 ms task (timeout_ms 700) recorded after a 1.5 s wait for the lock");
    json_decref(t);
}

/* ------------------------------------------------- 3. SIGTERM during a POST */

struct post_result {
    const wp_server *s;
    long status;
    char body[512];
};

static void *post_thread(void *arg) {
    struct post_result *p = arg;
    wp_req q = {.method = "POST", .path = "/v1/tasks", .body = "{\"kind\":\"echo\",\"input\":\"late\"}",
                .timeout_ms = 15000};
    wp_resp r;
    wp_http_nc(p->s, &q, &r);
    p->status = r.status;
    snprintf(p->body, sizeof p->body, "%s", r.body ? r.body : "");
    wp_resp_free(&r);
    return NULL;
}

/* Issue 8, defect 3: the writer thread left its loop before `stopped` was set; a
 * submission queued in that window was never committed and its connection stayed
 * suspended, so MHD_stop_daemon panicked (SIGABRT in the HTTP process). The fault
 * points hold the submission until the writer has left its loop. */
WP_TEST(test_sigterm_during_a_submission) {
    const char *const args[] = {"--workers", "1", NULL};
    wp_server *s = start_faulty("writer_submit_pause_ms=800,writer_exit_pause_ms=1500", args);
    struct post_result p = {.s = s};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, post_thread, &p), 0);
    wp_sleep_ms(300);
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    pthread_join(th, NULL);
    int st = 0;
    if (!wp_server_wait_exit(s, 20000, &st)) fail_msg("the service did not exit within 20 s of SIGTERM");
    if (log_has(s, "HTTP process") && (log_has(s, "killed by signal") || log_has(s, "panic")))
        fail_msg("the HTTP process died during the drain (see its log)");
    if (p.status != 503)
        fail_msg("a submission caught by the drain: want 503 shutting_down, got %ld: %s", p.status, p.body);
    if (!strstr(p.body, "shutting_down")) fail_msg("want error code shutting_down: %s", p.body);
    expect_clean_exit(st, "SIGTERM during a submission");
}

/* --------------------------------------------------------- 4. signals */

/* Issue 8, defect 4: a reload's nudge (SIGUSR1) and a drain's SIGTERM reached a
 * worker in the middle of a kind's run(), whose blocking call then failed with
 * EINTR. The `interruptible` kind waits once in poll() and fails on EINTR. */
WP_TEST(test_signals_do_not_interrupt_run) {
    const char *const args[] = {"--workers", "1", "--plugin", fragile_so(), "--grace-ms", "10000", NULL};
    wp_server *s = start_faulty(NULL, args);
    char id[64];
    submit_id(s, "{\"kind\":\"interruptible\",\"input\":{\"ms\":1500}}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    wp_sleep_ms(100);
    assert_int_equal(kill(s->pid, SIGHUP), 0);      /* reload: the busy worker is asked to retire */
    json_t *t = wp_wait_terminal(s, id, 15);
    expect_state(t, "succeeded", 1, "a task running while its worker was asked to retire (SIGHUP reload)");
    json_decref(t);

    submit_id(s, "{\"kind\":\"interruptible\",\"input\":{\"ms\":1500}}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    wp_sleep_ms(100);
    int st = wp_server_stop(s, 20000, NULL);
    expect_clean_exit(st, "SIGTERM with an interruptible task running");
    wp_server *s2 = restart(s, args);
    t = wp_get_task(s2, id);
    expect_state(t, "succeeded", 1, "a task running when SIGTERM came (it must finish in the drain)");
    json_decref(t);
}

/* Issue 8, defect 4 (second half): a worker checked for a stop, then blocked in
 * poll(); a SIGTERM between the two was handled but did not end the poll, so the
 * stop waited for the one-second safety net. worker_idle_pause_ms=1500 holds the
 * worker in that window at its first idle wait. */
WP_TEST(test_stop_is_not_delayed_by_a_lost_wakeup) {
    const char *const args[] = {"--workers", "1", NULL};
    wp_server *s = start_faulty("worker_idle_pause_ms=1500", args);
    pid_t w[1];
    assert_int_equal(wp_worker_pids(s, w, 1), 1);
    long long t0 = wp_now_ms();
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    if (!wp_wait_pids_gone(w, 1, 10000)) fail_msg("the worker did not exit within 10 s of SIGTERM");
    long long el = wp_now_ms() - t0;
    print_message("  the worker exited %lld ms after SIGTERM (it was paused for 1500 ms)\n", el);
    if (el > 2100)
        fail_msg("the worker exited %lld ms after SIGTERM: the stop waited for the safety net "
                 "(want within the 1500 ms pause + 600 ms)", el);
    int st = 0;
    assert_true(wp_server_wait_exit(s, 10000, &st));
    expect_clean_exit(st, "SIGTERM");
}

/* ------------------------------------------------------------- 5. wake-ups */

/* The largest eventfd counter among pid's descriptors (from /proc/PID/fdinfo), -1
 * when it has none. */
static long long eventfd_count(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char lp[300], target[128];
        snprintf(lp, sizeof lp, "/proc/%d/fd/%s", (int)pid, e->d_name);
        ssize_t n = readlink(lp, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[eventfd]") != 0) continue;
        char ip[300];
        snprintf(ip, sizeof ip, "/proc/%d/fdinfo/%s", (int)pid, e->d_name);
        FILE *f = fopen(ip, "r");
        if (!f) continue;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned long long v;
            if (sscanf(line, "eventfd-count: %llx", &v) == 1 && (long long)v > best) best = (long long)v;
        }
        fclose(f);
    }
    closedir(d);
    return best;
}

/* Issue 8, defect 5: every group commit added wake-up tokens, without a cap, while
 * busy workers never read them; after a burst, idle workers spun through thousands
 * of stale tokens. The counter must stay at most one token per worker. */
WP_TEST(test_wakeup_tokens_are_capped) {
    const char *const args[] = {"--workers", "2", "--grace-ms", "500", NULL};
    wp_server *s = start_faulty(NULL, args);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    char a[64], b[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":4000}}", a);
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":4000}}", b);
    json_decref(wp_wait_state(s, a, "running", 10));
    json_decref(wp_wait_state(s, b, "running", 10));
    char last[64] = "";
    for (int i = 0; i < 150; i++) submit_id(s, "{\"kind\":\"echo\",\"input\":1}", last);
    long long n = eventfd_count(s->pid);
    print_message("  wake-up counter after 150 submissions with both workers busy: %lld\n", n);
    if (n < 0) fail_msg("the supervisor holds no eventfd (where is the wake-up counter?)");
    if (n > 2) fail_msg("the wake-up counter is %lld with 2 workers: stale tokens pile up", n);
    json_t *t = wp_wait_terminal(s, last, 30);
    expect_state(t, "succeeded", 1, "the last of the burst");
    json_decref(t);
}

/* Issue 8, defect 5 (second part): a task the supervisor hands back (its worker
 * died) woke no idle worker; it waited for the safety net or the dead worker's
 * replacement. Here the safety net is 30 s and every worker takes 4 s to start. */
WP_TEST(test_handed_back_task_wakes_an_idle_worker) {
    const char *const args[] = {"--workers", "2", "--grace-ms", "500", NULL};
    wp_server *s = start_faulty("worker_safety_net_ms=30000,worker_start_pause_ms=4000", args);
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    char id[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":2000},\"max_attempts\":2}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    pid_t w = wp_worker_pid_for_task(s, id, 5);
    if (!w) fail_msg("no worker shows task %s", id);
    wp_sleep_ms(200);                               /* the other worker is back asleep */
    long long t0 = wp_now_ms();
    assert_int_equal(kill(w, SIGKILL), 0);
    for (;;) {
        json_t *t = wp_get_task(s, id);
        bool again = wp_int(t, "attempts") == 2;
        json_decref(t);
        if (again) break;
        if (wp_now_ms() - t0 > 10000) fail_msg("the handed-back task did not start again within 10 s");
        wp_sleep_ms(10);
    }
    long long el = wp_now_ms() - t0;
    print_message("  handed back and started again %lld ms after the kill\n", el);
    if (el > 1500)
        fail_msg("the handed-back task started again %lld ms after its worker was killed: the idle "
                 "worker was not woken (the replacement takes 4 s to start)", el);
    json_t *t = wp_wait_terminal(s, id, 15);
    expect_state(t, "succeeded", 2, "the handed-back task");
    json_decref(t);
}

/* Issue 8, defect 5 (third part): a retry whose run_after comes due while the worker
 * that recorded it is gone (here it retires after each task) woke nobody. */
WP_TEST(test_due_retry_wakes_an_idle_worker) {
    const char *const args[] = {"--workers", "2", "--max-tasks-per-worker", "1", "--retry-base-ms", "200",
                                "--plugin", fragile_so(), "--grace-ms", "500", NULL};
    wp_server *s = start_faulty("worker_safety_net_ms=30000,worker_start_pause_ms=4000", args);
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    char id[64];
    submit_id(s, "{\"kind\":\"interruptible\",\"input\":{\"ms\":300,\"fail\":true},\"max_attempts\":2}", id);
    long long run_after = -1;
    long long deadline = wp_now_ms() + 10000;
    while (run_after < 0) {
        json_t *t = wp_get_task(s, id);
        if (strcmp(wp_str(t, "state"), "pending") == 0 && wp_int(t, "attempts") == 1)
            run_after = wp_parse_ts(wp_str(t, "run_after"));
        else if (wp_int(t, "attempts") >= 2 || wp_is_terminal(wp_str(t, "state"))) {
            char *d = wp_dump(t);
            fail_msg("missed the pending retry: %s", d);
        }
        json_decref(t);
        if (wp_now_ms() > deadline) fail_msg("the task was not back to pending within 10 s");
        wp_sleep_ms(10);
    }
    json_t *t = wp_wait_terminal(s, id, 20);
    expect_state(t, "failed", 2, "a task that fails twice");
    long long late = wp_parse_ts(wp_str(t, "started_at")) - run_after;
    print_message("  the retry started %lld ms after its run_after\n", late);
    if (late > 1000)
        fail_msg("the retry started %lld ms after its run_after: no idle worker was woken for it", late);
    json_decref(t);
}

/* ------------------------------------------------------------- 6. drain */

static int connect_port(int port, int timeout_ms, int *err) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *err = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    if (errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, timeout_ms) != 1) {
        *err = ETIMEDOUT;
        close(fd);
        return -1;
    }
    socklen_t len = sizeof *err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len);
    if (*err != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Issue 8, defect 6: during a drain the HTTP process still held the listening
 * socket, so the kernel accepted connections that nobody would serve and that were
 * reset later. New connections must be refused at once. An idle kept-alive
 * connection keeps the HTTP process in its drain for a while. */
WP_TEST(test_drain_refuses_new_connections) {
    const char *const args[] = {"--workers", "1", "--grace-ms", "10000", NULL};
    wp_server *s = start_faulty(NULL, args);
    char id[64];
    submit_id(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":3000}}", id);
    json_decref(wp_wait_state(s, id, "running", 10));
    int err = 0;
    int keep = connect_port(s->port, 2000, &err);
    if (keep < 0) fail_msg("connecting: %s", strerror(err));
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(write(keep, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    struct pollfd p = {.fd = keep, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    char buf[1024];
    assert_true(read(keep, buf, sizeof buf) > 0);

    assert_int_equal(kill(s->pid, SIGTERM), 0);
    wp_sleep_ms(300);
    for (int i = 0; i < 5; i++) {
        int fd = connect_port(s->port, 1000, &err);
        if (fd >= 0) {
            close(fd);
            fail_msg("attempt %d, %d ms into the drain: the connection was accepted (it can only be reset)", i,
                     300 + i * 150);
        }
        if (err != ECONNREFUSED)
            fail_msg("attempt %d during the drain: want connection refused, got %s", i, strerror(err));
        wp_sleep_ms(150);
    }
    close(keep);
    int st = 0;
    if (!wp_server_wait_exit(s, 20000, &st)) fail_msg("the service did not exit");
    expect_clean_exit(st, "SIGTERM with a kept-alive connection");
}

/* ------------------------------------------------------------- 7. readyz */

static void overwrite_with_garbage(const char *path) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return;
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    char junk[4096];
    memset(junk, 0xA5, sizeof junk);
    for (off_t off = 0; off < sb.st_size; off += (off_t)sizeof junk)
        assert_true(pwrite(fd, junk, sizeof junk, off) > 0);
    fsync(fd);
    close(fd);
}

/* Issue 8, defect 7: /readyz ran `SELECT 1`, which never reads the database file, so
 * it stayed green on a database that cannot be read. */
WP_TEST(test_readyz_reads_the_database) {
    const char *const args[] = {"--workers", "1", "--grace-ms", "500", NULL};
    wp_server *s = start_faulty(NULL, args);
    char id[64];
    submit_id(s, "{\"kind\":\"echo\",\"input\":\"x\"}", id);
    json_decref(wp_wait_terminal(s, id, 10));
    if (wp_pg_mode()) {
        /* PostgreSQL: the database is dropped from under it (its sessions ended) */
        const char *slash = strrchr(s->db, '/');
        char *sql = wp_fmt("DROP DATABASE %.*s WITH (FORCE)", (int)strcspn(slash + 1, "?"), slash + 1);
        wp_pg_sql(NULL, sql, NULL, 0);
        free(sql);
    } else {
        char *wal = wp_fmt("%s-wal", s->db);
        overwrite_with_garbage(s->db);
        overwrite_with_garbage(wal);
        free(wal);
    }
    long long deadline = wp_now_ms() + 8000;
    for (;;) {
        wp_req q = {.method = "GET", .path = "/readyz", .timeout_ms = 5000};
        wp_resp r;
        wp_http_nc(s, &q, &r);
        long status = r.status;
        if (status == 503) {
            wp_assert_error(&r, 503, "not_ready", "database");
            wp_resp_free(&r);
            break;
        }
        char body[300];
        snprintf(body, sizeof body, "%s", r.body ? r.body : "");
        wp_resp_free(&r);
        if (wp_now_ms() > deadline)
            fail_msg("/readyz answers %ld on a database overwritten with garbage (or dropped), want 503: %s",
                     status, body);
        wp_sleep_ms(100);
    }
    /* the service is in no state to drain cleanly: end it */
    kill(-s->pid, SIGKILL);
    kill(s->pid, SIGKILL);
}

/* ------------------------------------------------------------- 8. modes */

static void expect_mode(const char *path, mode_t want, const char *what) {
    struct stat sb;
    if (stat(path, &sb) != 0) fail_msg("%s %s: %s", what, path, strerror(errno));
    if ((sb.st_mode & 0777) != want)
        fail_msg("%s %s has mode %03o, want %03o", what, path, (unsigned)(sb.st_mode & 0777), (unsigned)want);
}

/* Issue 8, defect 8: the database, its WAL, SHM and lock files were created 0644 in
 * directories created 0755, so every local user could read every task. Files must
 * be 0600 and directories 0700, unless the umask is stricter. */
WP_TEST(test_files_are_private) {
    WP_SQLITE_ONLY("the modes of the SQLite file, its WAL, SHM and lock files");
    static const mode_t masks[] = {022, 077, 027};
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
        char dir[512];
        wp_make_temp_dir(dir, sizeof dir);
        char *db = wp_fmt("%s/a/b/warmpool.db", dir);
        mode_t old = umask(masks[i]);
        wp_opts o = {.dir = dir, .db = db, .args = (const char *const[]){"--workers", "1", NULL}};
        wp_server *s = wp_server_start(&o);
        umask(old);
        char id[64];
        submit_id(s, "{\"kind\":\"echo\",\"input\":\"secret\"}", id);
        json_decref(wp_wait_terminal(s, id, 10));
        char what[64];
        snprintf(what, sizeof what, "with umask %03o:", (unsigned)masks[i]);
        static const char *const sfx[] = {"", "-wal", "-shm", ".lock"};
        for (int k = 0; k < 4; k++) {
            char *p = wp_fmt("%s%s", db, sfx[k]);
            expect_mode(p, 0600, what);
            free(p);
        }
        char *a = wp_fmt("%s/a", dir), *ab = wp_fmt("%s/a/b", dir);
        expect_mode(a, 0700, what);
        expect_mode(ab, 0700, what);
        free(a);
        free(ab);
        wp_server_free(s);
        free(db);
        wp_remove_tree(dir);
    }
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_release_retried_until_it_succeeds, wp_test_teardown),
        cmocka_unit_test_teardown(test_no_timeout_before_the_task_runs, wp_test_teardown),
        cmocka_unit_test_teardown(test_recording_time_is_not_task_time, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigterm_during_a_submission, wp_test_teardown),
        cmocka_unit_test_teardown(test_signals_do_not_interrupt_run, wp_test_teardown),
        cmocka_unit_test_teardown(test_stop_is_not_delayed_by_a_lost_wakeup, wp_test_teardown),
        cmocka_unit_test_teardown(test_wakeup_tokens_are_capped, wp_test_teardown),
        cmocka_unit_test_teardown(test_handed_back_task_wakes_an_idle_worker, wp_test_teardown),
        cmocka_unit_test_teardown(test_due_retry_wakes_an_idle_worker, wp_test_teardown),
        cmocka_unit_test_teardown(test_drain_refuses_new_connections, wp_test_teardown),
        cmocka_unit_test_teardown(test_readyz_reads_the_database, wp_test_teardown),
        cmocka_unit_test_teardown(test_files_are_private, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.defects", tests, NULL, NULL);
}
