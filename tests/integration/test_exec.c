/* Integration: exec kinds (issue 11, docs/exec-kinds.md) through the real warmpool, with
 * real zygotes: tests/exec/it_kind.py (the Python helper; kind `py`), wp-test-zygote (a C
 * zygote that misbehaves on demand; kind `z`) and examples/node/zygote.js. Paths come
 * from the environment: WP_IT_SOURCE_DIR, WP_IT_TEST_ZYGOTE, WP_IT_PYTHON.
 *
 * What a timeout does (the design these tests hold it to): the supervisor kills the
 * task's child, not the worker; the worker records `timeout` and exits 0 of its own
 * accord once the supervisor replaces it to give it a new child (it is never killed). */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static const char *env_or_fail(const char *name) {
    const char *p = getenv(name);
    if (!p || !*p) fail_msg("%s is not set (the ctest entry sets it)", name);
    return p;
}

/* "py=PYTHON SRC/tests/exec/it_kind.py" */
static char *py_kind(void) {
    return wp_fmt("py=%s %s/tests/exec/it_kind.py", env_or_fail("WP_IT_PYTHON"), env_or_fail("WP_IT_SOURCE_DIR"));
}

/* "z=TEST_ZYGOTE MODE" */
static char *z_kind(const char *mode) {
    return wp_fmt("z=%s %s", env_or_fail("WP_IT_TEST_ZYGOTE"), mode ? mode : "ok");
}

/* A tiny rules file for the scan kind, so that it loads in milliseconds even under ASan
 * (the load timeout covers every kind); its path is static. */
static char g_rules_dir[400];

static void remove_rules_dir(void) {
    if (g_rules_dir[0]) wp_remove_tree(g_rules_dir);
}

static const char *tiny_rules(void) {
    static char path[512];
    if (!path[0]) {
        char *dir = g_rules_dir;
        wp_make_temp_dir(g_rules_dir, sizeof g_rules_dir);
        atexit(remove_rules_dir);
        snprintf(path, sizeof path, "%s/tiny.rules", dir);
        FILE *f = fopen(path, "w");
        if (!f) fail_msg("fopen(%s): %s", path, strerror(errno));
        fputs("tiny.marker\tTINY-MARKER-[0-9]{3}\n", f);
        fclose(f);
    }
    return path;
}

/* A service with the py and z kinds, plus extra flags (NULL-terminated) and env. */
static wp_server *start_exec(const char *const *extra, const char *const *env) {
    char *py = py_kind(), *z = z_kind(NULL);
    const char *args[48];
    int k = 0;
    args[k++] = "--scan-rules";
    args[k++] = tiny_rules();
    args[k++] = "--exec-kind";
    args[k++] = py;
    args[k++] = "--exec-kind";
    args[k++] = z;
    args[k++] = "--retry-base-ms";
    args[k++] = "50";
    for (int i = 0; extra && extra[i] && k < 46; i++) args[k++] = extra[i];
    args[k] = NULL;
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    free(py);
    free(z);
    return s;
}

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

static bool log_has(const wp_server *s, const char *needle) {
    char *log = wp_server_read_log(s);
    bool found = strstr(log, needle) != NULL;
    free(log);
    return found;
}

/* Submits body and waits for the task to end; returns it (new reference). */
static json_t *run_task(const wp_server *s, const char *body, double timeout_s) {
    json_t *t = wp_submit(s, body);
    json_t *d = wp_wait_terminal(s, wp_str(t, "id"), timeout_s);
    json_decref(t);
    return d;
}

static void expect_state(const json_t *t, const char *state, const char *what) {
    if (strcmp(wp_str(t, "state"), state) != 0) {
        char *d = wp_dump(t);
        fail_msg("%s: want %s, got %s", what, state, d);
    }
}

static void expect_error_code(const json_t *t, const char *code, const char *what) {
    const json_t *e = json_object_get(t, "error");
    const char *got = e ? json_string_value(json_object_get(e, "code")) : NULL;
    if (!got || strcmp(got, code) != 0) {
        char *d = wp_dump(t);
        fail_msg("%s: want error code %s, got %s", what, code, d);
    }
}

static const char *error_message(const json_t *t) {
    const json_t *e = json_object_get(t, "error");
    const char *m = e ? json_string_value(json_object_get(e, "message")) : NULL;
    return m ? m : "";
}

static long long result_int(const json_t *t, const char *key) {
    const json_t *r = json_object_get(t, "result");
    const json_t *v = r ? json_object_get(r, key) : NULL;
    if (!json_is_integer(v)) {
        char *d = wp_dump(t);
        fail_msg("want an integer result.%s: %s", key, d);
    }
    return json_integer_value(v);
}

/* The kind `name` of /v1/stats (new reference). */
static json_t *kind_stats(const wp_server *s, const char *name) {
    json_t *st = wp_stats(s);
    size_t i;
    json_t *k, *found = NULL;
    json_array_foreach(json_object_get(st, "kinds"), i, k)
        if (strcmp(wp_str(k, "name"), name) == 0) found = json_incref(k);
    json_decref(st);
    if (!found) fail_msg("kind %s is not in /v1/stats", name);
    return found;
}

static bool kind_available(const wp_server *s, const char *name) {
    json_t *k = kind_stats(s, name);
    bool up = json_is_true(json_object_get(k, "available"));
    json_decref(k);
    return up;
}

static void wait_available(const wp_server *s, const char *name, bool want, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    while (kind_available(s, name) != want) {
        if (wp_now_ms() > deadline)
            fail_msg("kind %s: 'available' did not become %s within %d ms", name, want ? "true" : "false",
                     timeout_ms);
        wp_sleep_ms(20);
    }
}

/* POST body until it is refused with 422 naming reason (the HTTP process may get its
 * validating child a moment after a zygote is ready); bounded. Nothing is stored. */
static void expect_refused(const wp_server *s, const char *body, const char *reason, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    for (;;) {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", body, &r);
        long status = r.status;
        if (status == 422) {
            wp_assert_error(&r, 422, "invalid_task", reason);
            wp_resp_free(&r);
            return;
        }
        if (status == 202 && r.json) {     /* accepted unvalidated: take it back */
            char *path = wp_fmt("/v1/tasks/%s", wp_str(r.json, "id"));
            wp_resp c;
            wp_call(s, "DELETE", path, NULL, &c);
            wp_resp_free(&c);
            free(path);
        }
        wp_resp_free(&r);
        if (wp_now_ms() > deadline) fail_msg("%s: not refused (422) within %d ms; last status %ld", body, timeout_ms, status);
        wp_sleep_ms(50);
    }
}

/* /proc/PID/cmdline contains needle? */
static bool cmdline_has(pid_t pid, const char *needle) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0') buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* The loader's child whose command line has needle: an exec kind's zygote (0: none). */
static pid_t exec_zygote_pid(const wp_server *s, const char *needle) {
    pid_t kids[64];
    int n = wp_children_of(s->pid, kids, 64);
    for (int i = 0; i < n; i++) {
        pid_t zk[16];
        int nz = wp_children_of(kids[i], zk, 16);
        for (int j = 0; j < nz; j++)
            if (cmdline_has(zk[j], needle) && wp_pid_alive(zk[j])) return zk[j];
    }
    return 0;
}

/* Waits for PATH to hold a pid (written by it_kind.py's sleep task). */
static pid_t read_pidfile(const char *path, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    for (;;) {
        FILE *f = fopen(path, "r");
        int pid = 0;
        if (f) {
            if (fscanf(f, "%d", &pid) != 1) pid = 0;
            fclose(f);
        }
        if (pid > 0) return pid;
        if (wp_now_ms() > deadline) fail_msg("%s: no pid within %d ms", path, timeout_ms);
        wp_sleep_ms(10);
    }
}

/* ---------------------------------------------------------------- results */

/* Results, the child's errors (retryable or not), an exception, retries with back-off,
 * validation at submission, and the kinds' figures in /v1/stats. */
WP_TEST(test_exec_results_errors_and_retries) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", "--kind-config", "py=mb=2", NULL}, NULL);

    json_t *d = run_task(s, "{\"kind\":\"py\",\"input\":{\"echo\":{\"a\":[1,2,\"x\"]}}}", 20);
    expect_state(d, "succeeded", "py echo");
    char *r = wp_dump(json_object_get(json_object_get(d, "result"), "echo"));
    assert_string_equal(r, "{\"a\":[1,2,\"x\"]}");
    free(r);
    json_decref(d);

    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"digest\":true}}", 20);
    expect_state(d, "succeeded", "py digest");
    assert_int_equal(result_int(d, "bytes"), 2 << 20);
    json_decref(d);

    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"fail\":\"no such key\"},\"max_attempts\":3}", 20);
    expect_state(d, "failed", "a TaskError");
    expect_error_code(d, "bad_input", "a TaskError");
    assert_string_equal(error_message(d), "no such key");
    assert_int_equal(wp_int(d, "attempts"), 1);   /* not retryable: one attempt */
    json_decref(d);

    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"raise\":\"boom\"},\"max_attempts\":3}", 20);
    expect_state(d, "failed", "an exception");
    expect_error_code(d, "value_error", "an exception");
    assert_non_null(strstr(error_message(d), "ValueError: boom"));
    assert_int_equal(wp_int(d, "attempts"), 1);
    json_decref(d);

    /* retryable: retried after a back-off (--retry-base-ms 50) until attempt 3 */
    long long t0 = wp_now_ms();
    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"retry_until\":3},\"max_attempts\":3}", 20);
    expect_state(d, "succeeded", "retried until attempt 3");
    assert_int_equal(wp_int(d, "attempts"), 3);
    assert_int_equal(result_int(d, "attempt"), 3);
    long long el = wp_now_ms() - t0;
    print_message("  retried twice, succeeded at attempt 3 after %lld ms\n", el);
    if (el < 50 + 100) fail_msg("the retries did not wait for their back-off (%lld ms)", el);
    json_decref(d);
    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"retry_until\":5},\"max_attempts\":2}", 20);
    expect_state(d, "failed", "out of attempts");
    expect_error_code(d, "retry", "out of attempts");
    assert_int_equal(wp_int(d, "attempts"), 2);
    json_decref(d);

    /* the C zygote's children too; and an error it reports */
    d = run_task(s, "{\"kind\":\"z\",\"input\":{\"x\":1}}", 20);
    expect_state(d, "succeeded", "z echo");
    json_decref(d);
    d = run_task(s, "{\"kind\":\"z\",\"input\":{\"error\":\"nope\",\"message\":\"said no\"}}", 20);
    expect_state(d, "failed", "z error");
    expect_error_code(d, "nope", "z error");
    assert_string_equal(error_message(d), "said no");
    json_decref(d);

    /* validation at submission, by a child of the zygote: 422 with its reason, nothing
     * stored */
    wp_snap before = wp_snapshot(s);
    wp_resp resp;
    wp_call(s, "POST", "/v1/tasks", "{\"kind\":\"py\",\"input\":{\"bad\":\"no bad inputs here\"}}", &resp);
    wp_assert_error(&resp, 422, "invalid_task", "no bad inputs here");
    wp_resp_free(&resp);
    wp_call(s, "POST", "/v1/tasks", "{\"kind\":\"py\",\"input\":[1]}", &resp);
    wp_assert_error(&resp, 422, "invalid_task", "must be an object");
    wp_resp_free(&resp);
    wp_call(s, "POST", "/v1/tasks", "{\"kind\":\"z\",\"input\":{\"bad\":1}}", &resp);
    wp_assert_error(&resp, 422, "invalid_task", "the input has 'bad'");
    wp_resp_free(&resp);
    wp_assert_unchanged(s, &before, "refused exec inputs");

    /* the kinds' figures, as for C kinds */
    json_t *k = kind_stats(s, "py");
    assert_string_equal(wp_str(k, "runtime"), "exec");
    assert_int_equal(wp_int(k, "context_bytes"), 2 << 20);
    assert_int_equal(wp_int(k, "generation"), 1);
    assert_true(json_is_true(json_object_get(k, "available")));
    json_decref(k);
    k = kind_stats(s, "z");
    assert_int_equal(wp_int(k, "context_bytes"), 12345);
    assert_int_equal(wp_int(k, "load_ms"), 1);
    json_decref(k);
    k = kind_stats(s, "echo");
    assert_string_equal(wp_str(k, "runtime"), "c");
    json_decref(k);
}

/* One zygote per exec kind under the loader, and one child per worker (and one more
 * for the HTTP process's validation). */
WP_TEST(test_exec_process_tree) {
    wp_server *s = start_exec((const char *const[]){"--workers", "3", NULL}, NULL);
    assert_int_equal(wp_wait_workers(s, 3, 20), 3);
    pid_t py = exec_zygote_pid(s, "it_kind.py"), z = exec_zygote_pid(s, "wp-test-zygote");
    if (!py || !z) fail_msg("want a zygote per exec kind under the loader (py %d, z %d)", (int)py, (int)z);
    pid_t kids[16];
    int npy = wp_children_of(py, kids, 16), nz = wp_children_of(z, kids, 16);
    if (npy != 4 || nz != 4) fail_msg("want 3 workers' children + 1 validating child per kind; got %d and %d", npy, nz);
}

/* ---------------------------------------------------------------- failures */

/* A task past its timeout_ms: the supervisor kills the child, not the worker; the task
 * is retried, then fails as `timeout`; the worker is replaced by a clean exit (to get a
 * new child), never killed; the kind keeps serving. */
WP_TEST(test_exec_timeout_kills_the_child_only) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL}, NULL);
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    long long t0 = wp_now_ms();
    json_t *d = run_task(s, "{\"kind\":\"z\",\"input\":{\"sleep_ms\":20000},\"timeout_ms\":300,\"max_attempts\":2}",
                         20);
    long long el = wp_now_ms() - t0;
    expect_state(d, "failed", "a task past its timeout");
    expect_error_code(d, "timeout", "a task past its timeout");
    assert_int_equal(wp_int(d, "attempts"), 2);
    assert_non_null(strstr(error_message(d), "exec child was killed"));
    json_decref(d);
    print_message("  2 attempts timed out after %lld ms in all\n", el);
    if (el > 8000) fail_msg("two 300 ms timeouts took %lld ms", el);
    if (!log_has(s, "killing its exec child")) fail_msg("the log does not say the child was killed");
    char *log = wp_server_read_log(s);
    if (strstr(log, "killing worker") || strstr(log, "killed by signal")) {
        wp_server_dump_log(s, 0);
        fail_msg("a worker was killed for an exec task's timeout");
    }
    free(log);
    if (!wait_log(s, "retired (for a child of an exec kind it lacked)", 10000))
        fail_msg("the worker whose child was killed was not replaced");
    d = run_task(s, "{\"kind\":\"z\",\"input\":{\"after\":\"timeout\"}}", 20);
    expect_state(d, "succeeded", "z after a timeout");
    json_decref(d);
    assert_int_equal(wp_wait_workers(s, 2, 10), 2);
}

/* kill -9 of the child running a task: `worker_lost`, attempt 2 (in another child)
 * succeeds; with one attempt it fails as worker_lost. */
WP_TEST(test_exec_child_killed_mid_task) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL}, NULL);
    char *pidfile = wp_fmt("%s/child.pid", s->dir);
    json_t *t = wp_submitf(s, "{\"kind\":\"py\",\"input\":{\"sleep_ms\":1500,\"pidfile\":\"%s\"},\"max_attempts\":2}",
                           pidfile);
    pid_t child = read_pidfile(pidfile, 15000);
    unlink(pidfile);
    assert_int_equal(kill(child, SIGKILL), 0);
    json_t *d = wp_wait_terminal(s, wp_str(t, "id"), 20);
    expect_state(d, "succeeded", "a task whose child was killed, attempt 2");
    assert_int_equal(wp_int(d, "attempts"), 2);
    assert_int_equal(result_int(d, "attempt"), 2);
    if (result_int(d, "pid") == child) fail_msg("attempt 2 ran in the killed child");
    json_decref(d);
    json_decref(t);

    /* attempt 2 above wrote the file too: a file of its own for this task */
    char *pidfile2 = wp_fmt("%s/child2.pid", s->dir);
    t = wp_submitf(s, "{\"kind\":\"py\",\"input\":{\"sleep_ms\":1500,\"pidfile\":\"%s\"},\"max_attempts\":1}",
                   pidfile2);
    child = read_pidfile(pidfile2, 15000);
    free(pidfile2);
    assert_int_equal(kill(child, SIGKILL), 0);
    d = wp_wait_terminal(s, wp_str(t, "id"), 20);
    expect_state(d, "failed", "one attempt, child killed");
    expect_error_code(d, "worker_lost", "one attempt, child killed");
    json_decref(d);
    json_decref(t);
    free(pidfile);
    /* and the kind serves on */
    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"echo\":1}}", 20);
    expect_state(d, "succeeded", "py after the kills");
    json_decref(d);
}

/* kill -9 of a zygote: logged; the kind shows unavailable; its tasks wait, pending,
 * while the other kinds keep running; a new zygote is ready after the back-off (1.5 s
 * here, by fault point) and the waiting tasks run. */
WP_TEST(test_exec_zygote_killed) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL},
                              (const char *const[]){"WARMPOOL_FAULTS=exec_loader_restart_ms=1500", NULL});
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    json_t *d = run_task(s, "{\"kind\":\"py\",\"input\":{\"echo\":\"before\"}}", 20);
    expect_state(d, "succeeded", "py before");
    long long pid_before = result_int(d, "pid");
    json_decref(d);
    pid_t z = exec_zygote_pid(s, "it_kind.py");
    assert_true(z > 0);
    assert_int_equal(kill(z, SIGKILL), 0);
    if (!wait_log(s, "exec kind py: its zygote", 5000)) fail_msg("the zygote's death is not logged");
    wait_available(s, "py", false, 5000);
    /* its children went with it */
    if (!wp_wait_pids_gone((pid_t[]){(pid_t)pid_before}, 1, 5000)) fail_msg("a child outlived its zygote");

    json_t *waiting = wp_submit(s, "{\"kind\":\"py\",\"input\":{\"echo\":\"waited\"}}");
    for (int i = 0; i < 5; i++) {
        d = run_task(s, "{\"kind\":\"echo\",\"input\":\"meanwhile\"}", 10);
        expect_state(d, "succeeded", "echo while py's zygote is down");
        json_decref(d);
        d = run_task(s, "{\"kind\":\"z\",\"input\":{\"meanwhile\":1}}", 10);
        expect_state(d, "succeeded", "z while py's zygote is down");
        json_decref(d);
    }
    json_t *g = wp_get_task(s, wp_str(waiting, "id"));
    if (kind_available(s, "py")) print_message("  (py was back before the check)\n");
    else expect_state(g, "pending", "a py task while its zygote is down");
    json_decref(g);
    long long t0 = wp_now_ms();
    d = wp_wait_terminal(s, wp_str(waiting, "id"), 20);
    expect_state(d, "succeeded", "the py task that waited");
    assert_int_equal(wp_int(d, "attempts"), 1);
    print_message("  the waiting task ran %lld ms after the check\n", wp_now_ms() - t0);
    json_decref(d);
    json_decref(waiting);
    assert_true(kind_available(s, "py"));
    pid_t z2 = exec_zygote_pid(s, "it_kind.py");
    if (z2 == 0 || z2 == z) fail_msg("want a new py zygote");
    /* the HTTP process validates with a child of the new zygote */
    expect_refused(s, "{\"kind\":\"py\",\"input\":{\"bad\":\"after the restart\"}}", "after the restart", 5000);
}

/* A zygote that fails to start stops warmpool with exit 2 and a message naming the
 * kind and the reason, within the load timeout. */
WP_TEST(test_exec_start_failures) {
    static const struct {
        const char *kind;       /* NULL: the py kind with --kind-config py=fail=... */
        const char *want;
    } cases[] = {
        {"never_ready", "not ready within --load-timeout-ms (1500 ms)"},
        {"load_failed", "no context for config"},
        {"exit", "exited with code 3 before it was ready"},
        {"garbage", "broke the protocol"},
        {"oversized", "broke the protocol"},
        {"version2", "speaks protocol 2"},
        {"/nonexistent/zygote", "cannot execute '/nonexistent/zygote'"},
        {NULL, "told to fail: on purpose"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[512];
        wp_make_temp_dir(dir, sizeof dir);
        char *db = wp_fmt("%s/w.db", dir), *listen = wp_fmt("127.0.0.1:%d", wp_free_port());
        char *kind = !cases[i].kind ? py_kind()
                     : cases[i].kind[0] == '/' ? wp_fmt("z=%s", cases[i].kind) : z_kind(cases[i].kind);
        /* the load timeout covers every kind: tiny scan rules keep the rest quick */
        const char *const args[] = {"--db", db, "--listen", listen, "--workers", "1", "--exec-kind", kind,
                                    "--kind-config", "py=fail=on purpose", "--load-timeout-ms", "1500",
                                    "--scan-rules", tiny_rules(), NULL};
        const char *const *a = args;
        const char *const args_z[] = {"--db", db, "--listen", listen, "--workers", "1", "--exec-kind", kind,
                                      "--load-timeout-ms", "1500", "--scan-rules", tiny_rules(), NULL};
        if (cases[i].kind) a = args_z;
        char *out = NULL;
        bool to = false;
        long el = 0;
        int st = wp_run_binary(a, NULL, 15000, &out, &to, &el);
        if (to) fail_msg("%s: still running after 15 s", kind);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2)) fail_msg("%s: want exit 2, got status %d: %s", kind, st, out);
        if (!strstr(out, cases[i].want) || !strstr(out, "exec kind "))
            fail_msg("%s: the output does not name the kind and say '%s': %s", kind, cases[i].want, out);
        print_message("  %s: exit 2 in %ld ms\n", cases[i].kind ? cases[i].kind : "py load() fails", el);
        if (el > 6000) fail_msg("%s: took %ld ms to fail", kind, el);
        free(out);
        free(db);
        free(listen);
        free(kind);
        wp_remove_tree(dir);
    }
    /* a bad command or a name clash is refused before anything starts */
    char *out = NULL;
    bool to = false;
    int st = wp_run_binary((const char *const[]){"--exec-kind", "k=python3 'x.py", NULL}, NULL, 5000, &out, &to, NULL);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2) || !strstr(out, "unterminated"))
        fail_msg("a bad command: want exit 2 saying why, got %d: %s", st, out);
    free(out);
    st = wp_run_binary((const char *const[]){"--exec-kind", "echo=python3 x.py", NULL}, NULL, 5000, &out, &to, NULL);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2) || !strstr(out, "built-in"))
        fail_msg("a C kind's name: want exit 2 saying why, got %d: %s", st, out);
    free(out);
}

/* A child that answers with garbage, an oversized frame or another task's id: the task
 * fails with exec_protocol (not retried), the child is killed and the kind serves on. */
WP_TEST(test_exec_garbage_and_oversized_answers) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL}, NULL);
    static const struct {
        const char *input;
        const char *want;
    } cases[] = {
        {"{\"garbage\":true}", "not JSON"},
        {"{\"oversized\":true}", "over the limit"},
        {"{\"wrong_id\":true}", "while task"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = wp_fmt("{\"kind\":\"z\",\"input\":%s,\"max_attempts\":3}", cases[i].input);
        json_t *d = run_task(s, body, 20);
        expect_state(d, "failed", cases[i].input);
        expect_error_code(d, "exec_protocol", cases[i].input);
        assert_int_equal(wp_int(d, "attempts"), 1);
        if (!strstr(error_message(d), cases[i].want))
            fail_msg("%s: want the reason '%s', got '%s'", cases[i].input, cases[i].want, error_message(d));
        print_message("  %s: %s\n", cases[i].input, error_message(d));
        json_decref(d);
        free(body);
        d = run_task(s, "{\"kind\":\"z\",\"input\":{\"fine\":true}}", 20);
        expect_state(d, "succeeded", "z after a broken answer");
        json_decref(d);
    }
}

/* --max-tasks-per-worker applies to the child: no child runs more than N tasks. */
WP_TEST(test_exec_max_tasks_per_worker) {
    wp_server *s = start_exec((const char *const[]){"--workers", "1", "--max-tasks-per-worker", "2", NULL}, NULL);
    long long pids[6];
    for (int i = 0; i < 6; i++) {
        json_t *d = run_task(s, "{\"kind\":\"py\",\"input\":{\"echo\":0}}", 20);
        expect_state(d, "succeeded", "py under --max-tasks-per-worker");
        pids[i] = result_int(d, "pid");
        json_decref(d);
    }
    for (int i = 0; i < 6; i++) {
        int same = 0;
        for (int j = 0; j < 6; j++) same += pids[j] == pids[i];
        if (same > 2) fail_msg("child %lld ran %d tasks with --max-tasks-per-worker 2", pids[i], same);
    }
}

/* A zygote that refuses every spawn: the workers go without its children, its tasks wait
 * (they are not failed), and the other kinds run. */
WP_TEST(test_exec_spawn_refused) {
    char *z = z_kind("spawn_failed");
    wp_opts o = {.args = (const char *const[]){"--workers", "2", "--exec-kind", z, "--scan-rules", tiny_rules(),
                                               NULL}};
    wp_server *s = wp_server_start(&o);
    free(z);
    json_t *t = wp_submit(s, "{\"kind\":\"z\",\"input\":{\"x\":1}}");
    json_t *d = run_task(s, "{\"kind\":\"echo\",\"input\":1}", 10);
    expect_state(d, "succeeded", "echo beside a kind without children");
    json_decref(d);
    wp_sleep_ms(1000);
    d = wp_get_task(s, wp_str(t, "id"));
    expect_state(d, "pending", "a task of a kind whose zygote refuses spawns");
    assert_int_equal(wp_int(d, "attempts"), 0);
    json_decref(d);
    json_decref(t);
    if (!log_has(s, "could not spawn")) fail_msg("the refused spawns are not logged");
}

/* ----------------------------------------------------------- reload, drain */

/* A reload while exec tasks run: every task finishes in its first attempt (none lost),
 * the new generation is in /v1/stats, and the old loader and zygotes go once their
 * workers have. */
WP_TEST(test_exec_reload_while_tasks_run) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL}, NULL);
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    pid_t old_py = exec_zygote_pid(s, "it_kind.py");
    char ids[6][32];
    for (int i = 0; i < 6; i++) {
        json_t *t = wp_submit(s, "{\"kind\":\"py\",\"input\":{\"sleep_ms\":400},\"max_attempts\":1}");
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    wp_sleep_ms(200);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    for (int i = 0; i < 6; i++) {
        json_t *d = wp_wait_terminal(s, ids[i], 30);
        expect_state(d, "succeeded", "an exec task across a reload");
        assert_int_equal(wp_int(d, "attempts"), 1);
        json_decref(d);
    }
    long long deadline = wp_now_ms() + 20000;
    for (;;) {
        json_t *k = kind_stats(s, "py");
        long long g = wp_int(k, "generation");
        json_decref(k);
        if (g == 2) break;
        if (wp_now_ms() > deadline) fail_msg("generation 2 not in /v1/stats 20 s after SIGHUP");
        wp_sleep_ms(50);
    }
    if (!wp_wait_pids_gone(&old_py, 1, 15000)) fail_msg("the old generation's py zygote outlived its workers");
    json_t *d = run_task(s, "{\"kind\":\"py\",\"input\":{\"echo\":\"after\"}}", 20);
    expect_state(d, "succeeded", "py after the reload");
    json_decref(d);
    /* the old generation's validating child went with its zygote: a new one validates */
    expect_refused(s, "{\"kind\":\"py\",\"input\":{\"bad\":\"after the reload\"}}", "after the reload", 5000);
}

/* A reload whose new zygote fails (load_failed, then never ready) is a failed reload:
 * logged with the kind and the reason, and the running generation (its zygote, its
 * children) keeps serving; a good reload afterwards works. The zygote's mode comes from a
 * control file read at each start. */
WP_TEST(test_exec_reload_failures) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *ctl = wp_fmt("%s/mode", dir);
    FILE *f = fopen(ctl, "w");
    assert_non_null(f);
    fputs("ok\n", f);
    fclose(f);
    char *k = wp_fmt("z=/bin/sh -c 'exec %s \"$(cat %s)\"'", env_or_fail("WP_IT_TEST_ZYGOTE"), ctl);
    wp_opts o = {.args = (const char *const[]){"--workers", "2", "--exec-kind", k, "--load-timeout-ms", "3000",
                                               "--scan-rules", tiny_rules(), NULL}};
    wp_server *s = wp_server_start(&o);
    json_t *d = run_task(s, "{\"kind\":\"z\",\"input\":{\"before\":1}}", 20);
    expect_state(d, "succeeded", "z before the reloads");
    json_decref(d);
    static const struct {
        const char *mode, *says;
    } bad[] = {{"load_failed", "no context for config"}, {"never_ready", "not ready within --load-timeout-ms"}};
    for (int i = 0; i < 2; i++) {
        f = fopen(ctl, "w");
        assert_non_null(f);
        fprintf(f, "%s\n", bad[i].mode);
        fclose(f);
        char *want = wp_fmt("reload failed");
        int before = 0;
        char *log = wp_server_read_log(s);
        for (const char *p = log; (p = strstr(p, want)) != NULL; p++) before++;
        free(log);
        assert_int_equal(kill(s->pid, SIGHUP), 0);
        long long deadline = wp_now_ms() + 15000;
        for (;;) {
            log = wp_server_read_log(s);
            int n = 0;
            const char *last = NULL;
            for (const char *p = log; (p = strstr(p, want)) != NULL; p++) n++, last = p;
            bool said = n > before && strstr(last, bad[i].says) != NULL && strstr(last, "exec kind z") != NULL;
            if (n > before && !said) {
                wp_server_dump_log(s, 0);
                fail_msg("%s: the failed reload does not name the kind and say '%s'", bad[i].mode, bad[i].says);
            }
            free(log);
            if (said) break;
            if (wp_now_ms() > deadline) fail_msg("%s: no failed reload logged within 15 s", bad[i].mode);
            wp_sleep_ms(25);
        }
        free(want);
        json_t *kst = kind_stats(s, "z");
        assert_int_equal(wp_int(kst, "generation"), 1);
        assert_true(json_is_true(json_object_get(kst, "available")));
        json_decref(kst);
        d = run_task(s, "{\"kind\":\"z\",\"input\":{\"after_a_failed_reload\":1}}", 20);
        expect_state(d, "succeeded", "z after a failed reload");
        json_decref(d);
    }
    f = fopen(ctl, "w");
    assert_non_null(f);
    fputs("ok\n", f);
    fclose(f);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    long long deadline = wp_now_ms() + 20000;
    for (;;) {
        json_t *kst = kind_stats(s, "z");
        long long g = wp_int(kst, "generation");
        json_decref(kst);
        if (g == 2) break;
        if (wp_now_ms() > deadline) fail_msg("the good reload did not reach generation 2");
        wp_sleep_ms(50);
    }
    d = run_task(s, "{\"kind\":\"z\",\"input\":{\"after\":1}}", 20);
    expect_state(d, "succeeded", "z after the good reload");
    json_decref(d);
    free(k);
    free(ctl);
    wp_remove_tree(dir);
}

/* The loader (warmpool-zygote) is killed: its exec zygotes die with it, and their
 * children; C kinds keep running on the same workers; a new loader (generation 2) starts
 * new exec zygotes, the workers are rolled over, and the exec kind runs again. */
WP_TEST(test_exec_loader_killed) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL}, NULL);
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    pid_t py = exec_zygote_pid(s, "it_kind.py");
    pid_t loader = py ? wp_ppid_of(py) : 0;
    assert_true(loader > 0);
    assert_int_equal(kill(loader, SIGKILL), 0);
    if (!wp_wait_pids_gone(&py, 1, 5000)) fail_msg("an exec zygote outlived its loader");
    json_t *d = run_task(s, "{\"kind\":\"echo\",\"input\":\"no loader\"}", 10);
    expect_state(d, "succeeded", "echo while the loader is gone");
    json_decref(d);
    d = run_task(s, "{\"kind\":\"py\",\"input\":{\"echo\":\"after the loader died\"}}", 30);
    expect_state(d, "succeeded", "py after the loader died");
    assert_int_equal(wp_int(d, "attempts"), 1);
    json_decref(d);
    json_t *kst = kind_stats(s, "py");
    assert_int_equal(wp_int(kst, "generation"), 2);
    json_decref(kst);
    expect_refused(s, "{\"kind\":\"py\",\"input\":{\"bad\":\"generation 2\"}}", "generation 2", 5000);
}

/* SIGTERM while an exec task runs: it finishes, warmpool exits 0, and no zygote or child
 * is left. */
WP_TEST(test_exec_sigterm_drain) {
    wp_server *s = start_exec((const char *const[]){"--workers", "2", NULL}, NULL);
    char *pidfile = wp_fmt("%s/child.pid", s->dir);
    json_t *t = wp_submitf(s, "{\"kind\":\"py\",\"input\":{\"sleep_ms\":1000,\"pidfile\":\"%s\"}}", pidfile);
    pid_t child = read_pidfile(pidfile, 15000);
    pid_t zy[2] = {exec_zygote_pid(s, "it_kind.py"), exec_zygote_pid(s, "wp-test-zygote")};
    long el = 0;
    int st = wp_server_stop(s, 20000, &el);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail_msg("SIGTERM with an exec task running: want exit 0");
    print_message("  drained in %ld ms\n", el);
    if (!wp_wait_pids_gone(zy, 2, 5000) || !wp_wait_pids_gone(&child, 1, 5000))
        fail_msg("a zygote or a child outlived the drain");
    /* restart on the same database: the task finished in its first attempt */
    wp_opts o = {.dir = s->dir};
    wp_server *s2 = wp_server_start(&o);
    json_t *d = wp_get_task(s2, wp_str(t, "id"));
    expect_state(d, "succeeded", "the exec task running at SIGTERM");
    assert_int_equal(wp_int(d, "attempts"), 1);
    json_decref(d);
    json_decref(t);
    free(pidfile);
}

/* ------------------------------------------------------------------- node */

/* The Node example (the protocol written by hand, children started anew) through
 * warmpool: results, errors, retries, validation. */
WP_TEST(test_exec_node_example) {
    char *k = wp_fmt("squares=node %s/examples/node/zygote.js", env_or_fail("WP_IT_SOURCE_DIR"));
    wp_opts o = {.args = (const char *const[]){"--workers", "2", "--exec-kind", k, "--kind-config", "squares=n=1000",
                                               "--retry-base-ms", "20", "--scan-rules", tiny_rules(), NULL}};
    wp_server *s = wp_server_start(&o);
    free(k);
    json_t *d = run_task(s, "{\"kind\":\"squares\",\"input\":{\"index\":7}}", 30);
    expect_state(d, "succeeded", "squares index 7");
    assert_int_equal(result_int(d, "square"), 49);
    json_decref(d);
    d = run_task(s, "{\"kind\":\"squares\",\"input\":{\"fail\":\"why not\"}}", 30);
    expect_state(d, "failed", "squares fail");
    expect_error_code(d, "bad_input", "squares fail");
    json_decref(d);
    d = run_task(s, "{\"kind\":\"squares\",\"input\":{\"retry\":\"again\"},\"max_attempts\":2}", 30);
    expect_state(d, "failed", "squares retry");
    expect_error_code(d, "retry", "squares retry");
    assert_int_equal(wp_int(d, "attempts"), 2);
    json_decref(d);
    wp_resp resp;
    wp_call(s, "POST", "/v1/tasks", "{\"kind\":\"squares\",\"input\":[7]}", &resp);
    wp_assert_error(&resp, 422, "invalid_task", "must be an object");
    wp_resp_free(&resp);
    json_t *kst = kind_stats(s, "squares");
    assert_string_equal(wp_str(kst, "runtime"), "exec");
    json_decref(kst);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_exec_results_errors_and_retries, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_process_tree, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_timeout_kills_the_child_only, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_child_killed_mid_task, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_zygote_killed, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_start_failures, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_garbage_and_oversized_answers, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_max_tasks_per_worker, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_spawn_refused, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_reload_while_tasks_run, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_reload_failures, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_loader_killed, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_sigterm_drain, wp_test_teardown),
        cmocka_unit_test_teardown(test_exec_node_example, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.exec", tests, NULL, NULL);
}
