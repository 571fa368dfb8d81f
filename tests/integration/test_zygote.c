/* Integration: the process structure of issue 8 -- a zygote per generation loads the
 * contexts and forks the HTTP process and the workers, which are children of the
 * supervisor -- and reload isolation: a load() that crashes, hangs, fails or exits
 * during a reload leaves the running generation serving, and at start it exits 2.
 *
 * The fragile plugin (examples/fragile_plugin.c, path in WP_IT_FRAGILE_SO) loads as
 * its control file says: "crash", "hang", "fail", "exit", or normally. */
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

static const char *fragile_so(void) {
    const char *p = getenv("WP_IT_FRAGILE_SO");
    if (!p || !*p) fail_msg("WP_IT_FRAGILE_SO is not set: it must name libfragile.so (examples/)");
    return p;
}

static void write_text(const char *path, const char *text) {
    char *tmp = wp_fmt("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) fail_msg("fopen(%s): %s", tmp, strerror(errno));
    fputs(text, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) fail_msg("writing %s failed", path);
    free(tmp);
}

/* /proc/PID/comm without the newline ("" when gone). */
static void comm_of(pid_t pid, char out[32]) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(out, 32, f) == NULL) out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

/* The supervisor's children whose comm is `name`, into out (max); their count. */
static int children_named(const wp_server *s, const char *name, pid_t *out, int max) {
    pid_t kids[128];
    int n = wp_children_of(s->pid, kids, 128), k = 0;
    for (int i = 0; i < n; i++) {
        char c[32];
        comm_of(kids[i], c);
        if (strcmp(c, name) == 0 && wp_pid_alive(kids[i]) && k < max) out[k++] = kids[i];
    }
    return k;
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

static int count_in_log(const wp_server *s, const char *needle) {
    char *log = wp_server_read_log(s);
    int n = 0;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    free(log);
    return n;
}

/* The log's last line that contains needle (malloc'ed; "" if none). */
static char *last_line_with(const wp_server *s, const char *needle) {
    char *log = wp_server_read_log(s);
    const char *hit = NULL;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle)) hit = p;
    char *line = strdup("");
    if (hit) {
        const char *a = hit;
        while (a > log && a[-1] != '\n') a--;
        size_t len = strcspn(a, "\n");
        free(line);
        line = strndup(a, len);
    }
    free(log);
    return line;
}

/* Every kind's generation in /v1/stats must be `gen`. */
static void expect_generation(const wp_server *s, long long gen, const char *what) {
    json_t *st = wp_stats(s);
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(st, "kinds"), i, k) {
        if (wp_int(k, "generation") != gen) {
            char *d = wp_dump(json_object_get(st, "kinds"));
            fail_msg("%s: want every kind at generation %lld, got %s", what, gen, d);
        }
    }
    json_decref(st);
}

static void wait_generation(const wp_server *s, long long gen, double timeout_s, const char *what) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *st = wp_stats(s);
        json_t *k0 = json_array_get(json_object_get(st, "kinds"), 0);
        long long g = k0 ? wp_int(k0, "generation") : -1;
        json_decref(st);
        if (g == gen) return;
        if (wp_now_ms() > deadline) fail_msg("%s: generation %lld not reached within %.0f s (at %lld)", what, gen,
                                             timeout_s, g);
        wp_sleep_ms(25);
    }
}

/* One task of every kind the fragile service has; each must succeed. */
static void expect_every_kind_serves(const wp_server *s, const char *what) {
    static const char *const bodies[] = {
        "{\"kind\":\"echo\",\"input\":{\"x\":1}}",
        "{\"kind\":\"sleep\",\"input\":{\"ms\":10}}",
        "{\"kind\":\"scan\",\"input\":{\"text\":\"TINY-MARKER-123\"}}",
        "{\"kind\":\"fragile\",\"input\":null}",
        "{\"kind\":\"interruptible\",\"input\":{\"ms\":10}}",
    };
    char ids[5][64];
    for (int i = 0; i < 5; i++) {
        json_t *t = wp_submit(s, bodies[i]);
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    for (int i = 0; i < 5; i++) {
        json_t *d = wp_wait_terminal(s, ids[i], 20);
        if (strcmp(wp_str(d, "state"), "succeeded") != 0) {
            char *dd = wp_dump(d);
            fail_msg("%s: %s: want succeeded, got %s", what, bodies[i], dd);
        }
        json_decref(d);
    }
}

static bool same_pids(const pid_t *a, int na, const pid_t *b, int nb) {
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (!wp_pid_in_list(a[i], b, nb)) return false;
    return true;
}

/* A service with the fragile plugin whose control file is dir/ctl (created empty). */
typedef struct {
    wp_server *s;
    char dir[512];
    char *ctl, *rules;
} fragile_svc;

static fragile_svc start_fragile_env(const char *const *extra, const char *initial, const char *const *env);

static fragile_svc start_fragile(const char *const *extra, const char *initial) {
    return start_fragile_env(extra, initial, NULL);
}

static fragile_svc start_fragile_env(const char *const *extra, const char *initial, const char *const *env) {
    fragile_svc f;
    memset(&f, 0, sizeof f);
    wp_make_temp_dir(f.dir, sizeof f.dir);
    f.ctl = wp_fmt("%s/ctl", f.dir);
    f.rules = wp_fmt("%s/tiny.rules", f.dir);
    write_text(f.ctl, initial ? initial : "");
    write_text(f.rules, "tiny.marker\tTINY-MARKER-[0-9]{3}\n");
    char *kc = wp_fmt("fragile=%s", f.ctl);
    const char *args[32];
    int k = 0;
    args[k++] = "--plugin";
    args[k++] = fragile_so();
    args[k++] = "--kind-config";
    args[k++] = kc;
    args[k++] = "--scan-rules";
    args[k++] = f.rules;
    for (int i = 0; extra && extra[i] && k < 30; i++) args[k++] = extra[i];
    args[k] = NULL;
    wp_opts o = {.args = args, .env = env};
    f.s = wp_server_start(&o);
    free(kc);
    return f;
}

static void fragile_free(fragile_svc *f) {
    free(f->ctl);
    free(f->rules);
    wp_remove_tree(f->dir);
}

/* ---------------------------------------------------------- the structure */

/* The supervisor's children are one zygote, the HTTP process, the workers and the agent
 * (service/agent.h); the zygote has none (its double fork hands them to the supervisor). */
WP_TEST(test_process_tree) {
    wp_server *s = wp_server_start_args("--workers", "3", NULL);
    assert_int_equal(wp_wait_workers(s, 3, 15), 3);
    pid_t z[4], h[4], w[8], stats_w[8];
    int nz = children_named(s, "warmpool-zygote", z, 4);
    int nh = children_named(s, "warmpool-http", h, 4);
    int nw = children_named(s, "warmpool-worker", w, 8);
    pid_t a[4];
    int na = children_named(s, "warmpool-agent", a, 4);
    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    if (nz != 1 || nh != 1 || nw != 3 || na != 1 || nk != 6)
        fail_msg("the supervisor's children: want 1 zygote, 1 HTTP process, 3 workers, 1 agent (6 in all); got "
                 "%d, %d, %d, %d (%d in all)", nz, nh, nw, na, nk);
    pid_t zk[8];
    int nzk = wp_children_of(z[0], zk, 8);
    if (nzk != 0) fail_msg("the zygote has %d children: they must be the supervisor's", nzk);
    int ns = wp_worker_pids(s, stats_w, 8);
    if (!same_pids(w, nw, stats_w, ns)) fail_msg("the workers in /v1/stats are not the supervisor's worker children");
}

/* PR_SET_PDEATHSIG is set after the reparenting: when the supervisor is killed, the
 * zygote, the HTTP process, the workers and the agent die too (and only then). */
WP_TEST(test_children_die_with_the_supervisor) {
    wp_server *s = wp_server_start_args("--workers", "2", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    pid_t kids[64];
    int nk = wp_children_of(s->pid, kids, 64);
    assert_int_equal(nk, 5);
    wp_sleep_ms(300);
    for (int i = 0; i < nk; i++)
        if (!wp_pid_alive(kids[i])) fail_msg("child %d died although the supervisor lives", (int)kids[i]);
    assert_int_equal(kill(s->pid, SIGKILL), 0);
    int st;
    assert_true(wp_server_wait_exit(s, 5000, &st));
    if (!wp_wait_pids_gone(kids, nk, 5000)) fail_msg("children of a SIGKILLed supervisor still run 5 s later");
}

/* A child that dies as soon as it is forked (before the supervisor has read its
 * pid, or right after) is logged, and a new one takes its place. */
WP_TEST(test_children_dying_at_once_are_replaced) {
    wp_opts o = {.args = (const char *const[]){"--workers", "2", NULL},
                 .env = (const char *const[]){"WARMPOOL_FAULTS=zygote_child_dies_at_once=3", NULL}};
    wp_server *s = wp_server_start(&o);
    assert_int_equal(wp_wait_workers(s, 2, 20), 2);
    if (count_in_log(s, "exited with code 7") != 3) {
        char *l = last_line_with(s, "exited with code 7");
        fail_msg("want 3 children logged as 'exited with code 7', got %d (last: %s)",
                 count_in_log(s, "exited with code 7"), l);
    }
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"after early deaths\"}");
    json_t *d = wp_wait_terminal(s, wp_str(t, "id"), 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(t);
}

/* The zygote dies while the service runs: the workers and the HTTP process go on, a
 * new zygote loads the contexts again (the next generation) and the workers are
 * rolled over to it; a worker that dies afterwards is replaced. */
WP_TEST(test_zygote_death_is_survived) {
    wp_server *s = wp_server_start_args("--workers", "2", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    pid_t z[2], w0[2];
    assert_int_equal(children_named(s, "warmpool-zygote", z, 2), 1);
    assert_int_equal(wp_worker_pids(s, w0, 2), 2);
    assert_int_equal(kill(z[0], SIGKILL), 0);
    if (!wait_log(s, "the zygote of generation 1", 5000)) fail_msg("the zygote's death is not logged");
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"no zygote\"}");
    json_t *d = wp_wait_terminal(s, wp_str(t, "id"), 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(t);
    wait_generation(s, 2, 20, "after the zygote was killed");
    pid_t z2[2];
    long long deadline = wp_now_ms() + 15000;
    pid_t w1[2];
    for (;;) {
        int n = wp_worker_pids(s, w1, 2);
        bool rolled = n == 2 && !wp_pid_in_list(w1[0], w0, 2) && !wp_pid_in_list(w1[1], w0, 2);
        if (rolled && wp_wait_workers(s, 2, 1) == 2) break;
        if (wp_now_ms() > deadline) fail_msg("the workers were not rolled over to the new zygote within 15 s");
        wp_sleep_ms(50);
    }
    if (children_named(s, "warmpool-zygote", z2, 2) != 1 || z2[0] == z[0])
        fail_msg("want one new zygote after the first was killed");
    assert_int_equal(kill(w1[0], SIGKILL), 0);
    deadline = wp_now_ms() + 15000;
    for (;;) {
        pid_t w2[2];
        int n = wp_worker_pids(s, w2, 2);
        if (n == 2 && !wp_pid_in_list(w1[0], w2, 2) && wp_wait_workers(s, 2, 1) == 2) break;
        if (wp_now_ms() > deadline) fail_msg("a killed worker was not replaced by the new zygote within 15 s");
        wp_sleep_ms(50);
    }
}

/* ------------------------------------------------------- reload isolation */

/* A reload whose new load() crashes (SIGSEGV): logged, killed, and the running
 * generation keeps serving every kind, with the same workers; the next good reload
 * works. */
WP_TEST(test_reload_survives_a_crashing_load) {
    fragile_svc f = start_fragile((const char *const[]){"--workers", "2", NULL}, NULL);
    wp_server *s = f.s;
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    expect_every_kind_serves(s, "before any reload");
    pid_t before[2];
    assert_int_equal(wp_worker_pids(s, before, 2), 2);

    write_text(f.ctl, "crash\n");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    if (!wait_log(s, "reload failed", 15000)) fail_msg("no 'reload failed' in the log 15 s after SIGHUP");
    char *line = last_line_with(s, "reload failed");
    print_message("  %s\n", line);
    if (!strstr(line, "before it was ready") || !strstr(line, "generation 2") ||
        (!strstr(line, "signal 11") && !strstr(line, "exited with code")))
        fail_msg("the log should say the loader of generation 2 died before it was ready: %s", line);
    free(line);
    expect_generation(s, 1, "after a reload whose load() crashed");
    pid_t after[2];
    assert_int_equal(wp_worker_pids(s, after, 2), 2);
    if (!same_pids(before, 2, after, 2)) fail_msg("a failed reload replaced the workers");
    expect_every_kind_serves(s, "after a reload whose load() crashed");
    pid_t zz[4];
    if (children_named(s, "warmpool-zygote", zz, 4) != 1) fail_msg("want exactly one zygote after a failed reload");

    write_text(f.ctl, "");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    wait_generation(s, 2, 20, "a good reload after a crashed one");
    expect_every_kind_serves(s, "after the next, good, reload");
    int st = wp_server_stop(s, 20000, NULL);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail_msg("SIGTERM after the reloads: want exit 0");
    fragile_free(&f);
}

/* A reload whose load() hangs is killed after --load-timeout-ms; one that fails
 * (an error) or exits is logged; the running generation serves throughout. */
WP_TEST(test_reload_survives_a_hanging_failing_or_exiting_load) {
    fragile_svc f = start_fragile((const char *const[]){"--workers", "2", "--load-timeout-ms", "2000", NULL},
                                  NULL);
    wp_server *s = f.s;
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);

    write_text(f.ctl, "hang\n");
    long long t0 = wp_now_ms();
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    if (!wait_log(s, "fragile: hanging", 10000)) fail_msg("the new zygote never reached the hanging load()");
    pid_t hung[4];
    if (children_named(s, "warmpool-zygote", hung, 4) != 2) fail_msg("want 2 zygotes while one loads");
    /* it keeps serving while the new generation hangs */
    json_t *t = wp_submit(s, "{\"kind\":\"fragile\",\"input\":null}");
    json_t *d = wp_wait_terminal(s, wp_str(t, "id"), 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(t);
    if (!wait_log(s, "--load-timeout-ms", 10000)) fail_msg("the hung load was not given up within 10 s");
    long long el = wp_now_ms() - t0;
    char *line = last_line_with(s, "reload failed");
    print_message("  after %lld ms: %s\n", el, line);
    if (!strstr(line, "took longer than --load-timeout-ms (2000 ms)")) fail_msg("want the timeout named: %s", line);
    free(line);
    pid_t z[4];
    long long deadline = wp_now_ms() + 5000;
    while (children_named(s, "warmpool-zygote", z, 4) != 1) {
        if (wp_now_ms() > deadline) fail_msg("the hung zygote was not killed");
        wp_sleep_ms(25);
    }
    expect_generation(s, 1, "after a reload that hung");

    write_text(f.ctl, "fail\n");
    int before = count_in_log(s, "reload failed");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    deadline = wp_now_ms() + 15000;
    while (count_in_log(s, "reload failed") == before) {
        if (wp_now_ms() > deadline) fail_msg("a reload whose load() fails is not logged within 15 s");
        wp_sleep_ms(25);
    }
    line = last_line_with(s, "reload failed");
    if (!strstr(line, "the control file says fail (on purpose)")) fail_msg("want the load's error: %s", line);
    free(line);

    write_text(f.ctl, "exit\n");
    before = count_in_log(s, "reload failed");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    deadline = wp_now_ms() + 15000;
    while (count_in_log(s, "reload failed") == before) {
        if (wp_now_ms() > deadline) fail_msg("a reload whose load() exits is not logged within 15 s");
        wp_sleep_ms(25);
    }
    line = last_line_with(s, "reload failed");
    if (!strstr(line, "exited with code 3")) fail_msg("want the exit code named: %s", line);
    free(line);
    expect_generation(s, 1, "after reloads that failed and exited");
    expect_every_kind_serves(s, "after three failed reloads");
    fragile_free(&f);
}

/* The supervisor sees a failing loader's death before it reads the reason the loader
 * sent (fault point: a pause after the SIGHUP's reload, so the SIGCHLD comes in the same
 * round of signals): the log still gives the load's own error, not just "exited with
 * code 2". Without reading the socket first in zygote_died, CI saw the bare exit. */
WP_TEST(test_reload_failure_reason_when_the_death_is_seen_first) {
    const char *const env[] = {"WARMPOOL_FAULTS=reload_signals_pause_ms=500", NULL};
    fragile_svc f = start_fragile_env((const char *const[]){"--workers", "1", NULL}, NULL, env);
    wp_server *s = f.s;
    assert_int_equal(wp_wait_workers(s, 1, 15), 1);
    write_text(f.ctl, "fail\n");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    if (!wait_log(s, "reload failed", 15000)) fail_msg("no 'reload failed' in the log 15 s after SIGHUP");
    char *line = last_line_with(s, "reload failed");
    print_message("  %s\n", line);
    if (!strstr(line, "the control file says fail (on purpose)")) fail_msg("want the load's error: %s", line);
    free(line);
    expect_generation(s, 1, "after a reload that failed");
    expect_every_kind_serves(s, "after a reload that failed");
    fragile_free(&f);
}

/* SIGTERM while a reload hangs: the hung zygote goes too, and the drain is quick. */
WP_TEST(test_sigterm_during_a_hanging_reload) {
    fragile_svc f = start_fragile((const char *const[]){"--workers", "1", NULL}, NULL);
    wp_server *s = f.s;
    write_text(f.ctl, "hang\n");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    if (!wait_log(s, "fragile: hanging", 10000)) fail_msg("the new zygote never reached the hanging load()");
    pid_t kids[16];
    int nk = wp_children_of(s->pid, kids, 16);
    long el = 0;
    int st = wp_server_stop(s, 15000, &el);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail_msg("SIGTERM during a hanging reload: want exit 0");
    if (el > 5000) fail_msg("the drain took %ld ms with a zygote hung in load()", el);
    if (!wp_wait_pids_gone(kids, nk, 5000)) fail_msg("a zygote outlived the service");
    fragile_free(&f);
}

/* ------------------------------------------------------------- first start */

/* At start, a load() that crashes or hangs stops warmpool with exit 2 and says why
 * (as a load() that fails always did). */
WP_TEST(test_start_fails_when_the_load_crashes_or_hangs) {
    static const struct {
        const char *ctl;
        const char *want;
    } cases[] = {
        {"crash\n", "before it was ready"},
        {"hang\n", "took longer than --load-timeout-ms (1500 ms)"},
        {"fail\n", "the control file says fail (on purpose)"},
        {"exit\n", "exited with code 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[512];
        wp_make_temp_dir(dir, sizeof dir);
        char *ctl = wp_fmt("%s/ctl", dir), *db = wp_fmt("%s/w.db", dir), *kc = wp_fmt("fragile=%s", ctl);
        char *listen = wp_fmt("127.0.0.1:%d", wp_free_port()), *rules = wp_fmt("%s/tiny.rules", dir);
        write_text(ctl, cases[i].ctl);
        /* tiny rules: the scan kind loads in milliseconds, even under ASan */
        write_text(rules, "tiny.marker\tTINY-MARKER-[0-9]{3}\n");
        const char *const args[] = {"--db", db, "--listen", listen, "--workers", "1", "--plugin", fragile_so(),
                                    "--kind-config", kc, "--load-timeout-ms", "1500", "--scan-rules", rules,
                                    NULL};
        char *out = NULL;
        bool to = false;
        long el = 0;
        int st = wp_run_binary(args, NULL, 15000, &out, &to, &el);
        if (to) fail_msg("load '%s' at start: still running after 15 s", cases[i].ctl);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2))
            fail_msg("load '%s' at start: want exit 2, got status %d: %s", cases[i].ctl, st, out);
        if (!strstr(out, cases[i].want))
            fail_msg("load '%s' at start: the output does not say '%s': %s", cases[i].ctl, cases[i].want, out);
        print_message("  load '%.*s' at start: exit 2 in %ld ms\n", (int)strcspn(cases[i].ctl, "\n"),
                      cases[i].ctl, el);
        free(out);
        free(ctl);
        free(db);
        free(kc);
        free(listen);
        free(rules);
        wp_remove_tree(dir);
    }
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_process_tree, wp_test_teardown),
        cmocka_unit_test_teardown(test_children_die_with_the_supervisor, wp_test_teardown),
        cmocka_unit_test_teardown(test_children_dying_at_once_are_replaced, wp_test_teardown),
        cmocka_unit_test_teardown(test_zygote_death_is_survived, wp_test_teardown),
        cmocka_unit_test_teardown(test_reload_survives_a_crashing_load, wp_test_teardown),
        cmocka_unit_test_teardown(test_reload_survives_a_hanging_failing_or_exiting_load, wp_test_teardown),
        cmocka_unit_test_teardown(test_reload_failure_reason_when_the_death_is_seen_first, wp_test_teardown),
        cmocka_unit_test_teardown(test_sigterm_during_a_hanging_reload, wp_test_teardown),
        cmocka_unit_test_teardown(test_start_fails_when_the_load_crashes_or_hangs, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.zygote", tests, NULL, NULL);
}
