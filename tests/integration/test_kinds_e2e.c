/* Integration: kinds end to end -- plugins (the example `lookup` plugin, and the
 * ways a plugin can fail to load), the built-in `scan` kind (default rules, custom
 * rules, rule compile errors, input validation), and live reload (SIGHUP) under load.
 *
 * The plugin paths come from the environment (set by CMake):
 *   WP_IT_LOOKUP_SO, WP_IT_EMPTY_SO, WP_IT_FAILING_SO. */
#include "harness.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static const char *plugin_path(const char *var) {
    const char *p = getenv(var);
    if (!p || !*p) fail_msg("%s is not set: it must name the plugin built by examples/", var);
    struct stat sb;
    if (stat(p, &sb) != 0) fail_msg("%s=%s does not exist", var, p);
    return p;
}

/* Write `text` to `path` atomically (temp file + rename), so that a reload never
 * reads a half-written file. */
static void write_file(const char *path, const char *text) {
    char *tmp = wp_fmt("%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) fail_msg("fopen(%s) failed", tmp);
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n || fclose(f) != 0) fail_msg("writing %s failed", tmp);
    if (rename(tmp, path) != 0) fail_msg("rename(%s, %s) failed", tmp, path);
    free(tmp);
}

/* A file in a fresh temp dir that the current test's first server will not own:
 * the caller removes the dir. */
static char *temp_file(char *dir, size_t dirlen, const char *name, const char *text) {
    wp_make_temp_dir(dir, dirlen);
    char *p = wp_fmt("%s/%s", dir, name);
    if (text) write_file(p, text);
    return p;
}

/* The stats entry of kind `name` (borrowed from stats), or NULL. */
static json_t *kind_entry(const json_t *stats, const char *name) {
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(stats, "kinds"), i, k) {
        if (strcmp(wp_str(k, "name"), name) == 0) return k;
    }
    return NULL;
}

static json_t *expect_kind(const json_t *stats, const char *name) {
    json_t *k = kind_entry(stats, name);
    if (!k) {
        char *d = wp_dump(json_object_get(stats, "kinds"));
        fail_msg("/v1/stats kinds[] has no kind '%s': %s", name, d);
    }
    return k;
}

static long long kind_generation(const wp_server *s, const char *name) {
    json_t *st = wp_stats(s);
    long long g = wp_int(expect_kind(st, name), "generation");
    json_decref(st);
    return g;
}

static bool same_set(const pid_t *a, int na, const pid_t *b, int nb) {
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (!wp_pid_in_list(a[i], b, nb)) return false;
    return true;
}

static char *pids_str(const pid_t *p, int n) {
    char buf[512];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && off < sizeof buf - 16; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%d", i ? "," : "", (int)p[i]);
    return strdup(buf);
}

/* Wait (bounded) until every kind reports generation `gen` and stats shows exactly n
 * live workers, children of the supervisor, none of them in old[]. Returns the
 * monotonic time at which that was first seen; the new pids go to out[]. */
static long long wait_reloaded(const wp_server *s, long long gen, int n, const pid_t *old, int nold,
                               pid_t *out, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *st = wp_stats(s);
        bool ok = true;
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(st, "kinds"), i, k) {
            if (wp_int(k, "generation") != gen) ok = false;
        }
        json_t *ws = json_object_get(st, "workers");
        if ((int)json_array_size(ws) != n) ok = false;
        json_t *w;
        int m = 0;
        json_array_foreach(ws, i, w) {
            pid_t p = (pid_t)wp_int(w, "pid");
            if (m < n) out[m++] = p;
            if (wp_pid_in_list(p, old, nold) || !wp_pid_alive(p) || wp_ppid_of(p) != s->pid) ok = false;
        }
        if (ok) {
            json_decref(st);
            return wp_now_ms();
        }
        if (wp_now_ms() > deadline) {
            char *d = wp_dump(st);
            char *o = pids_str(old, nold);
            fail_msg("within %.0f s of SIGHUP, want every kind at generation %lld and %d live new "
                     "workers (old pids %s), stats: %.1500s",
                     timeout_s, gen, n, o, d);
        }
        json_decref(st);
        wp_sleep_ms(20);
    }
}

/* Wait (bounded) until the server log contains `needle`. */
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

extern char **environ;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Runs the binary to completion with stdout and stderr captured apart (the harness's
 * wp_run_binary mixes them). The environment is the test's without WARMPOOL_*, plus
 * env[]. Returns the raw wait status, or -1 when it did not exit within timeout_ms. */
static int run_split(const char *const *args, const char *const *env, int timeout_ms, char **out, char **err,
                     long *elapsed_ms) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *po = wp_fmt("%s/stdout", dir), *pe = wp_fmt("%s/stderr", dir);
    const char *argv[48];
    int k = 0;
    argv[k++] = wp_binary_path();
    for (int i = 0; args && args[i] && k < 47; i++) argv[k++] = args[i];
    argv[k] = NULL;
    const char *envp[512];
    int m = 0;
    for (int i = 0; environ[i] && m < 480; i++)
        if (strncmp(environ[i], "WARMPOOL_", 9) != 0) envp[m++] = environ[i];
    for (int i = 0; env && env[i] && m < 510; i++) envp[m++] = env[i];
    envp[m] = NULL;
    fflush(NULL);
    long long t0 = wp_now_ms();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0) _exit(126);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        execve(argv[0], (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    int st = -1;
    bool done = false;
    while (!done && wp_now_ms() - t0 < timeout_ms) {
        if (waitpid(pid, &st, WNOHANG) == pid) done = true;
        else wp_sleep_ms(5);
    }
    if (elapsed_ms) *elapsed_ms = (long)(wp_now_ms() - t0);
    if (!done) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    wp_reap_orphans();
    *out = slurp(po);
    *err = slurp(pe);
    wp_remove_tree(dir);
    free(po);
    free(pe);
    return st;
}

/* Runs the binary with a fresh --db and --listen plus args; it must exit with code 2
 * within a few seconds, and its stderr must contain each of needles[]. */
static void expect_exit2(const char *const *args, const char *const *env, const char *const *needles,
                         const char *what) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *db = wp_fmt("%s/sub/never.db", dir);
    char *listen = wp_fmt("127.0.0.1:%d", wp_free_port());
    const char *argv[40];
    int k = 0;
    argv[k++] = "--db";
    argv[k++] = db;
    argv[k++] = "--listen";
    argv[k++] = listen;
    argv[k++] = "--workers";
    argv[k++] = "1";
    for (int i = 0; args && args[i] && k < 38; i++) argv[k++] = args[i];
    argv[k] = NULL;
    char *out = NULL, *err = NULL;
    long el = 0;
    int st = run_split(argv, env, 20000, &out, &err, &el);
    wp_remove_tree(dir);
    if (st == -1) fail_msg("%s: still running after 20 s, want exit 2 at start-up; stderr:\n%s", what, err);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2))
        fail_msg("%s: want exit code 2, got %s %d; stderr:\n%s\nstdout:\n%s", what,
                 WIFEXITED(st) ? "exit code" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), err,
                 out);
    if (el > 10000) fail_msg("%s: exit 2 took %ld ms, want a few seconds; stderr:\n%s", what, el, err);
    for (int i = 0; needles && needles[i]; i++)
        if (!strstr(err, needles[i]))
            fail_msg("%s: exit 2 as expected, but stderr does not contain '%s'; stderr:\n%s\nstdout:\n%s", what,
                     needles[i], err, out);
    print_message("  %s: exit 2 in %ld ms\n", what, el);
    free(out);
    free(err);
    free(db);
    free(listen);
}

/* SIGTERM; the service must exit 0 (under ASan this also catches what the reloads
 * leaked or broke in the supervisor, whose exit runs LeakSanitizer). Frees s. */
static void expect_clean_stop(wp_server *s, const char *what) {
    int st = wp_server_stop(s, 20000, NULL);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        wp_server_dump_log(s, 8000);
        fail_msg("%s: on SIGTERM the service should exit 0, got %s %d", what, WIFEXITED(st) ? "exit code" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    wp_server_free(s);
}

/* A rules file that compiles in milliseconds (even under ASan), for tests that are
 * not about scan: it keeps their start-ups and reloads fast. */
static const char TINY_RULES[] = "# tiny rules for tests that are not about scan\n"
                                 "tiny.marker\tTINY-MARKER-[0-9]{3}\n";

/* ---------------------------------------------------------- the lookup plugin */

/* The reference: splitmix64, written here again from its definition, so that a sum
 * the service returns proves the table was built (in load()) and read (in run()). */
static uint64_t ref_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t *w;
    size_t n;
} ref_table;

static ref_table ref_table_make(uint64_t seed, size_t mb) {
    ref_table t = {.n = mb * 1024 * 1024 / 8};
    t.w = malloc(t.n * sizeof *t.w);
    assert_non_null(t.w);
    uint64_t st = seed;
    for (size_t i = 0; i < t.n; i++) t.w[i] = ref_splitmix64(&st);
    return t;
}

/* Expected result of {"slice": slice, "of": of}. New reference. */
static json_t *ref_slice(const ref_table *t, int slice, int of) {
    size_t per = (t->n + (size_t)of - 1) / (size_t)of;
    size_t from = (size_t)slice * per;
    size_t to = from + per < t->n ? from + per : t->n;
    uint64_t sum = 0;
    for (size_t i = from; i < to; i++) sum += t->w[i];
    char hex[32];
    snprintf(hex, sizeof hex, "0x%016" PRIx64, sum);
    return json_pack("{s:i, s:i, s:I, s:s}", "slice", slice, "of", of, "words",
                     (json_int_t)(to > from ? to - from : 0), "sum", hex);
}

/* Submits all `of` slices in one batch, waits for each, and checks every result
 * against the reference. */
static void expect_lookup_round(const wp_server *s, const ref_table *t, int of, const char *what) {
    json_t *tasks = json_array();
    for (int i = 0; i < of; i++)
        json_array_append_new(tasks, json_pack("{s:s, s:{s:i, s:i}}", "kind", "lookup", "input", "slice", i,
                                               "of", of));
    json_t *body = json_pack("{s:o}", "tasks", tasks);
    char *b = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks/batch", b, &r);
    if (r.status != 202) fail_msg("%s: batch of %d lookup tasks: want 202, got %ld: %.500s", what, of, r.status, r.body);
    json_t *got = json_object_get(r.json, "tasks");
    assert_int_equal(json_array_size(got), (size_t)of);
    for (int i = 0; i < of; i++) {
        const char *id = wp_str(json_array_get(got, (size_t)i), "id");
        json_t *d = wp_wait_terminal(s, id, 30);
        json_t *want = ref_slice(t, i, of);
        if (strcmp(wp_str(d, "state"), "succeeded") != 0 || !json_equal(json_object_get(d, "result"), want) ||
            wp_int(d, "attempts") != 1) {
            char *dd = wp_dump(d), *ww = wp_dump(want);
            fail_msg("%s: lookup slice %d of %d: want succeeded (attempts 1) with result %s, got %s", what, i, of,
                     ww, dd);
        }
        json_decref(want);
        json_decref(d);
    }
    wp_resp_free(&r);
    free(b);
}

WP_TEST(test_plugin_lookup) {
    const char *so = plugin_path("WP_IT_LOOKUP_SO");
    wp_server *s = wp_server_start_args("--workers", "2", "--plugin", so, "--kind-config", "lookup=mb=8,seed=7",
                                        NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);

    json_t *st = wp_stats(s);
    json_t *k = expect_kind(st, "lookup");
    if (wp_int(k, "context_bytes") != 8LL * 1024 * 1024 || wp_int(k, "generation") != 1) {
        char *d = wp_dump(k);
        fail_msg("lookup with mb=8: want context_bytes 8388608 and generation 1, got %s", d);
    }
    assert_true(wp_int(k, "load_ms") >= 0);
    /* the built-in kinds are there too, next to the plugin's */
    expect_kind(st, "echo");
    expect_kind(st, "sleep");
    expect_kind(st, "scan");
    json_decref(st);

    ref_table t = ref_table_make(7, 8);
    /* Every slice of 16, computed by the tasks against the preloaded table. Rounds are
     * repeated (each checked in full) until both workers have run some: tasks_done is
     * per worker process and no other task runs on this server. */
    bool both = false;
    int rounds = 0;
    pid_t pids[8];
    int np = 0;
    while (!both && rounds < 8) {
        char what[64];
        snprintf(what, sizeof what, "round %d", rounds + 1);
        expect_lookup_round(s, &t, 16, what);
        rounds++;
        long long deadline = wp_now_ms() + 2000;
        do {
            json_t *s2 = wp_stats(s);
            json_t *ws = json_object_get(s2, "workers");
            size_t i;
            json_t *w;
            int busy_ones = 0;
            np = 0;
            json_array_foreach(ws, i, w) {
                if (np < 8) pids[np++] = (pid_t)wp_int(w, "pid");
                if (wp_int(w, "tasks_done") > 0) busy_ones++;
            }
            both = json_array_size(ws) == 2 && busy_ones == 2;
            json_decref(s2);
            if (!both) wp_sleep_ms(20);
        } while (!both && wp_now_ms() < deadline);
    }
    if (!both) {
        json_t *s2 = wp_stats(s);
        char *d = wp_dump(json_object_get(s2, "workers"));
        fail_msg("after %d rounds of 16 lookup tasks, not both workers ran some (tasks_done): %s", rounds, d);
    }
    print_message("  both workers ran lookup tasks after %d round(s) of 16\n", rounds);
    assert_int_equal(np, 2);
    assert_true(pids[0] != pids[1]);
    free(t.w);

    /* a malformed input is refused at submission by the plugin's validate() */
    wp_snap before = wp_snapshot(s);
    static const char *const bad[] = {
        "{\"kind\":\"lookup\",\"input\":{\"slice\":16,\"of\":16}}",
        "{\"kind\":\"lookup\",\"input\":{\"slice\":0}}",
        "{\"kind\":\"lookup\",\"input\":\"slice 1\"}",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", bad[i], &r);
        wp_assert_error(&r, 422, "invalid_task", "input");
        wp_resp_free(&r);
    }
    wp_assert_unchanged(s, &before, "lookup inputs the plugin refuses");
    expect_clean_stop(s, "the lookup plugin");
}

WP_TEST(test_plugin_env_form) {
    const char *so = plugin_path("WP_IT_LOOKUP_SO");
    char dir[512];
    char *rules = temp_file(dir, sizeof dir, "tiny.rules", TINY_RULES);
    char *e_plugin = wp_fmt("WARMPOOL_PLUGIN=%s", so);
    /* ';' separates kind configurations; ',' belongs to lookup's own string */
    char *e_conf = wp_fmt("WARMPOOL_KIND_CONFIG=lookup=mb=2,seed=3;scan=%s", rules);
    const char *const env[] = {e_plugin, e_conf, NULL};
    const char *const args[] = {"--workers", "2", NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);

    json_t *st = wp_stats(s);
    json_t *k = expect_kind(st, "lookup");
    if (wp_int(k, "context_bytes") != 2LL * 1024 * 1024 || wp_int(k, "generation") != 1) {
        char *d = wp_dump(k);
        fail_msg("WARMPOOL_KIND_CONFIG lookup=mb=2: want context_bytes 2097152, generation 1: %s", d);
    }
    json_decref(st);
    ref_table t = ref_table_make(3, 2);
    expect_lookup_round(s, &t, 4, "env form, seed 3");
    free(t.w);

    /* the second configuration of the list reached scan: only the tiny rule matches */
    json_t *task = wp_submit(s, "{\"kind\":\"scan\",\"input\":{\"text\":"
                                "\"AKIAZ2WQ4TESTFAKE7XY TINY-MARKER-123\"}}");
    json_t *d = wp_wait_terminal(s, wp_str(task, "id"), 20);
    json_t *want = json_loads("{\"bytes\":36,\"matches\":[{\"rule\":\"tiny.marker\",\"start\":21,\"end\":36}]}",
                              0, NULL);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0 || !json_equal(json_object_get(d, "result"), want)) {
        char *dd = wp_dump(d);
        fail_msg("WARMPOOL_KIND_CONFIG scan=RULES: want only tiny.marker to match, got %s", dd);
    }
    json_decref(want);
    json_decref(d);
    json_decref(task);
    expect_clean_stop(s, "lookup and scan configured by environment");
    wp_remove_tree(dir);
    free(rules);
    free(e_plugin);
    free(e_conf);
}

WP_TEST(test_plugin_errors) {
    const char *lookup = plugin_path("WP_IT_LOOKUP_SO");
    const char *empty = plugin_path("WP_IT_EMPTY_SO");
    const char *failing = plugin_path("WP_IT_FAILING_SO");
    char dir[512];
    char *rules = temp_file(dir, sizeof dir, "tiny.rules", TINY_RULES);
    char *text_file = wp_fmt("%s/notaplugin.txt", dir);
    write_file(text_file, "this is a text file, not a shared library\n");
    char *fake_so = wp_fmt("%s/libfake.so", dir);
    write_file(fake_so, "neither is this one, whatever its name says\n");
    char *missing = wp_fmt("%s/libdoesnotexist.so", dir);

    {
        const char *const a[] = {"--scan-rules", rules, "--plugin", empty, NULL};
        const char *const n[] = {empty, "exports no kinds", NULL};
        expect_exit2(a, NULL, n, "--plugin libempty.so");
    }
    {
        const char *const a[] = {"--scan-rules", rules, "--plugin", failing, NULL};
        const char *const n[] = {failing, "this context can never be built (on purpose)", NULL};
        expect_exit2(a, NULL, n, "--plugin libfailing.so");
    }
    {
        const char *const a[] = {"--scan-rules", rules, "--plugin", missing, NULL};
        const char *const n[] = {missing, NULL};
        expect_exit2(a, NULL, n, "--plugin (nonexistent path)");
    }
    {
        const char *const a[] = {"--scan-rules", rules, "--plugin", text_file, NULL};
        const char *const n[] = {text_file, NULL};
        expect_exit2(a, NULL, n, "--plugin (a text file)");
    }
    {
        const char *const a[] = {"--scan-rules", rules, "--plugin", fake_so, NULL};
        const char *const n[] = {fake_so, NULL};
        expect_exit2(a, NULL, n, "--plugin (a text file named .so)");
    }
    {   /* a good plugin before a bad one: the bad one still stops the start */
        const char *const a[] = {"--scan-rules", rules, "--plugin", lookup, "--kind-config", "lookup=mb=1",
                                 "--plugin", empty, NULL};
        const char *const n[] = {empty, "exports no kinds", NULL};
        expect_exit2(a, NULL, n, "--plugin liblookup.so --plugin libempty.so");
    }
    {   /* the plugin loads, but its load() refuses the configuration */
        const char *const a[] = {"--scan-rules", rules, "--plugin", lookup, "--kind-config", "lookup=mb=0", NULL};
        const char *const n[] = {"lookup", "mb=0", NULL};
        expect_exit2(a, NULL, n, "--kind-config lookup=mb=0");
    }
    {
        const char *const a[] = {"--scan-rules", rules, "--kind-config", "nosuch=1", NULL};
        const char *const n[] = {"nosuch", NULL};
        expect_exit2(a, NULL, n, "--kind-config nosuch=1");
    }
    {   /* a configuration for the plugin's kind without the plugin */
        const char *const a[] = {"--scan-rules", rules, "--kind-config", "lookup=mb=1", NULL};
        const char *const n[] = {"lookup", NULL};
        expect_exit2(a, NULL, n, "--kind-config lookup=mb=1 without --plugin");
    }
    {   /* environment forms: a comma-separated list whose second entry is bad */
        char *e = wp_fmt("WARMPOOL_PLUGIN=%s,%s", lookup, empty);
        char *r = wp_fmt("WARMPOOL_SCAN_RULES=%s", rules);
        const char *const env[] = {e, r, "WARMPOOL_KIND_CONFIG=lookup=mb=1", NULL};
        const char *const n[] = {empty, "exports no kinds", NULL};
        expect_exit2(NULL, env, n, "WARMPOOL_PLUGIN=liblookup.so,libempty.so");
        free(e);
        free(r);
    }
    {
        char *r = wp_fmt("WARMPOOL_SCAN_RULES=%s", rules);
        const char *const env[] = {r, "WARMPOOL_KIND_CONFIG=nosuch=1", NULL};
        const char *const n[] = {"nosuch", NULL};
        expect_exit2(NULL, env, n, "WARMPOOL_KIND_CONFIG=nosuch=1");
        free(r);
    }
    wp_remove_tree(dir);
    free(rules);
    free(text_file);
    free(fake_so);
    free(missing);
}

/* --------------------------------------------------------------------- scan */

typedef struct {
    const char *rule;
    long long start; /* -1: null */
    long long end;
} want_match;

static void base64_encode(const unsigned char *in, size_t n, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[j++] = tbl[(v >> 18) & 63];
        out[j++] = tbl[(v >> 12) & 63];
        out[j++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[j++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[j] = '\0';
}

/* Submits a scan of `text` (as {"text"} or {"base64"}); returns the task id (malloc'ed). */
static char *submit_scan(const wp_server *s, const char *text, bool as_base64) {
    json_t *body;
    if (as_base64) {
        size_t n = strlen(text);
        char *b = malloc(n / 3 * 4 + 8);
        assert_non_null(b);
        base64_encode((const unsigned char *)text, n, b);
        body = json_pack("{s:s, s:{s:s}}", "kind", "scan", "input", "base64", b);
        free(b);
    } else {
        body = json_pack("{s:s, s:{s:s}}", "kind", "scan", "input", "text", text);
    }
    assert_non_null(body);
    char *b = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *t = wp_submit(s, b);
    char *id = strdup(wp_str(t, "id"));
    json_decref(t);
    free(b);
    return id;
}

/* Checks a scan result: bytes, and exactly the wanted matches (in any order), each
 * {"rule","start","end"} and nothing else. */
static void expect_scan_result(const json_t *res, size_t bytes, const want_match *want, size_t nwant,
                               const char *what) {
    char *d = wp_dump(res);
    json_t *m = json_object_get(res, "matches");
    if (!json_is_object(res) || json_object_size(res) != 2 || !json_is_integer(json_object_get(res, "bytes")) ||
        !json_is_array(m))
        fail_msg("%s: want {\"bytes\": n, \"matches\": [...]}, got %.1500s", what, d);
    if (json_integer_value(json_object_get(res, "bytes")) != (json_int_t)bytes)
        fail_msg("%s: want bytes %zu, got %.1500s", what, bytes, d);
    size_t i;
    json_t *x;
    json_array_foreach(m, i, x) {
        json_t *st = json_object_get(x, "start");
        if (!json_is_object(x) || json_object_size(x) != 3 || !json_is_string(json_object_get(x, "rule")) ||
            !(json_is_null(st) || json_is_integer(st)) || !json_is_integer(json_object_get(x, "end")))
            fail_msg("%s: match %zu is not {\"rule\": s, \"start\": n|null, \"end\": n}: %.1500s", what, i, d);
    }
    bool used[64] = {false};
    assert_true(json_array_size(m) <= 64);
    for (size_t w = 0; w < nwant; w++) {
        bool found = false;
        json_array_foreach(m, i, x) {
            if (used[i]) continue;
            json_t *st = json_object_get(x, "start");
            long long start = json_is_null(st) ? -1 : json_integer_value(st);
            if (strcmp(wp_str(x, "rule"), want[w].rule) == 0 && start == want[w].start &&
                json_integer_value(json_object_get(x, "end")) == want[w].end) {
                used[i] = found = true;
                break;
            }
        }
        if (!found)
            fail_msg("%s: want a match {rule %s, start %lld, end %lld}, not in %.1500s", what, want[w].rule,
                     want[w].start, want[w].end, d);
    }
    if (json_array_size(m) != nwant)
        fail_msg("%s: want exactly %zu match(es), got %zu: %.1500s", what, nwant, json_array_size(m), d);
    free(d);
}

static void expect_scan(const wp_server *s, const char *text, bool as_base64, const want_match *want,
                        size_t nwant, const char *what) {
    char *id = submit_scan(s, text, as_base64);
    json_t *d = wp_wait_terminal(s, id, 30);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0) {
        char *dd = wp_dump(d);
        fail_msg("%s: scan task %s: want succeeded, got %s", what, id, dd);
    }
    expect_scan_result(json_object_get(d, "result"), strlen(text), want, nwant, what);
    json_decref(d);
    free(id);
}

/* Offset of needle in hay (bytes), failing when absent. */
static long long off_of(const char *hay, const char *needle) {
    const char *p = strstr(hay, needle);
    if (!p) fail_msg("test bug: '%s' not in the text", needle);
    return (long long)(p - hay);
}

/* Fakes, format-valid for the default rules, and never real secrets. */
#define FAKE_AWS "AKIAZ2WQ4TESTFAKE7XY"
#define FAKE_RSA "-----BEGIN RSA PRIVATE KEY-----"
#define FAKE_GHP "ghp_FAKEfakeFAKEfake0123456789abcdefWXYZ"
#define FAKE_JWT "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWtlLXVzZXIifQ.ZmFrZS1zaWduYXR1cmUtb25seQ"

static const char SECRETS_TEXT[] =
    "Notes from the na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 deployment checklist\n"
    "region eu-west-1, uploader key id " FAKE_AWS " (rotated monthly)\n"
    FAKE_RSA "\n"
    "this body is not a key at all\n"
    "-----END RSA PRIVATE KEY-----\n"
    "clone it with " FAKE_GHP " then push\n"
    "session cookie " FAKE_JWT " expires soon\n"
    "end of notes\n";

static const char CLEAN_TEXT[] =
    "The quick brown fox jumps over the lazy dog.\n"
    "Nothing to see here: version 1.2.3 listens on port 8080, and the build is green.\n"
    "Contact the team on the usual channel.\n";

static size_t secrets_want(want_match *w) {
    assert_int_equal(strlen(FAKE_AWS), 20);
    assert_int_equal(strlen(FAKE_GHP), 4 + 36);
    size_t n = 0;
    const char *t = SECRETS_TEXT;
    w[n++] = (want_match){"aws.access_key_id", off_of(t, FAKE_AWS), off_of(t, FAKE_AWS) + 20};
    w[n++] = (want_match){"key.rsa_private", off_of(t, FAKE_RSA), off_of(t, FAKE_RSA) + (long long)strlen(FAKE_RSA)};
    w[n++] = (want_match){"github.pat_classic", off_of(t, FAKE_GHP), off_of(t, FAKE_GHP) + 40};
    w[n++] = (want_match){"jwt", off_of(t, FAKE_JWT), off_of(t, FAKE_JWT) + (long long)strlen(FAKE_JWT)};
    return n;
}

WP_TEST(test_scan_default_rules) {
    wp_server *s = wp_server_start_args("--workers", "2", NULL);
    json_t *st = wp_stats(s);
    json_t *k = expect_kind(st, "scan");
    if (wp_int(k, "context_bytes") <= 0 || wp_int(k, "generation") != 1) {
        char *d = wp_dump(k);
        fail_msg("scan with the default rules: want context_bytes > 0 and generation 1: %s", d);
    }
    json_decref(st);

    want_match w[8];
    size_t nw = secrets_want(w);
    /* the text has multi-byte UTF-8 before the secrets: offsets are in bytes */
    assert_true(strlen(SECRETS_TEXT) > 200);
    expect_scan(s, SECRETS_TEXT, false, w, nw, "default rules, four fake secrets as text");
    expect_scan(s, SECRETS_TEXT, true, w, nw, "default rules, the same text as base64");
    expect_scan(s, CLEAN_TEXT, false, NULL, 0, "default rules, clean text");
    expect_scan(s, CLEAN_TEXT, true, NULL, 0, "default rules, clean text as base64");
    expect_scan(s, "", false, NULL, 0, "empty text");
    expect_scan(s, "", true, NULL, 0, "empty base64");
    /* one secret alone: offsets from 0, end at the buffer's end */
    {
        want_match one = {"github.pat_classic", 0, 40};
        expect_scan(s, FAKE_GHP, false, &one, 1, "a token alone");
        expect_scan(s, FAKE_GHP, true, &one, 1, "a token alone, base64 (no padding)");
        want_match aws = {"aws.access_key_id", 1, 21};
        expect_scan(s, " " FAKE_AWS, true, &aws, 1, "an AWS key id, base64 with padding");
    }
    /* a token one character short is not a token */
    expect_scan(s, "ghp_FAKEfakeFAKEfake0123456789abcdefWXY and AKIAZ2WQ4TESTFAKE7X", false, NULL, 0,
                "tokens one character short");

    /* refusals at submission: 422, naming the input, and nothing stored */
    wp_snap before = wp_snapshot(s);
    static const char *const bad[] = {
        "{\"kind\":\"scan\",\"input\":{\"text\":\"a\",\"base64\":\"YQ==\"}}",
        "{\"kind\":\"scan\",\"input\":{}}",
        "{\"kind\":\"scan\"}",
        "{\"kind\":\"scan\",\"input\":null}",
        "{\"kind\":\"scan\",\"input\":\"just a string\"}",
        "{\"kind\":\"scan\",\"input\":[\"text\"]}",
        "{\"kind\":\"scan\",\"input\":{\"base64\":\"not base64!\"}}",
        "{\"kind\":\"scan\",\"input\":{\"base64\":\"YQ=\"}}",
        "{\"kind\":\"scan\",\"input\":{\"base64\":\"Y Q==\"}}",
        "{\"kind\":\"scan\",\"input\":{\"base64\":\"@@@@\"}}",
        "{\"kind\":\"scan\",\"input\":{\"base64\":42}}",
        "{\"kind\":\"scan\",\"input\":{\"text\":5}}",
        "{\"kind\":\"scan\",\"input\":{\"text\":null}}",
        "{\"kind\":\"scan\",\"input\":{\"text\":[\"a\"]}}",
        "{\"kind\":\"scan\",\"input\":{\"text\":{\"a\":1}}}",
        "{\"kind\":\"scan\",\"input\":{\"text\":\"a\",\"extra\":true}}",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", bad[i], &r);
        if (r.status != 422) fail_msg("POST %s: want 422 invalid_task, got %ld: %.400s", bad[i], r.status, r.body);
        wp_assert_error(&r, 422, "invalid_task", "input");
        wp_resp_free(&r);
    }
    {   /* in a batch: all or nothing, the bad one named by its index */
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks/batch",
                "{\"tasks\":[{\"kind\":\"scan\",\"input\":{\"text\":\"fine\"}},"
                "{\"kind\":\"scan\",\"input\":{\"base64\":\"!!!!\"}}]}",
                &r);
        wp_assert_error(&r, 422, "invalid_task", "tasks[1]");
        wp_resp_free(&r);
    }
    wp_assert_unchanged(s, &before, "scan inputs refused at submission");
    expect_clean_stop(s, "scan with the default rules");
}

WP_TEST(test_scan_custom_rules) {
    char dir[512];
    char *rules = temp_file(dir, sizeof dir, "two.rules",
                            "# two rules for the test, CRLF on the second\n"
                            "fake.order_id\tORD-[0-9]{6}\\b\n"
                            "\n"
                            "   # an indented comment\n"
                            "fake.keyword\t(?i)\\bhunter2\\b   \r\n");
    wp_server *s = wp_server_start_args("--workers", "1", "--scan-rules", rules, NULL);
    json_t *st = wp_stats(s);
    json_t *k = expect_kind(st, "scan");
    assert_true(wp_int(k, "context_bytes") > 0);
    assert_int_equal(wp_int(k, "generation"), 1);
    json_decref(st);

    const char *text = "order ORD-123456 shipped; the word is Hunter2 today.\n"
                       "Not matched: ORD-12345 (short), ORD-1234567 (long), hunter22.\n"
                       "Default rules would match these: " FAKE_AWS " " FAKE_GHP "\n" FAKE_RSA "\n";
    want_match w[] = {
        {"fake.order_id", off_of(text, "ORD-123456 "), off_of(text, "ORD-123456 ") + 10},
        {"fake.keyword", off_of(text, "Hunter2"), off_of(text, "Hunter2") + 7},
    };
    expect_scan(s, text, false, w, 2, "custom rules: only those 2 match");
    expect_scan(s, text, true, w, 2, "custom rules, base64");
    expect_scan(s, SECRETS_TEXT, false, NULL, 0, "custom rules: the default rules are not loaded");
    expect_clean_stop(s, "custom rules");
    wp_remove_tree(dir);
    free(rules);
}

WP_TEST(test_scan_rules_errors) {
    char dir[512];
    char *bad_regex = temp_file(dir, sizeof dir, "bad-regex.rules",
                                "# line 1: a comment\n"
                                "ok.one\tfoo[0-9]+\n"
                                "\n"
                                "bad.two\tfoo(bar\n"
                                "ok.three\tbaz\n");
    char *dup = wp_fmt("%s/dup.rules", dir);
    write_file(dup, "dup.a\tone\n"
                    "dup.b\ttwo\n"
                    "# comment\n"
                    "\n"
                    "dup.a\tthree\n");
    char *notab = wp_fmt("%s/notab.rules", dir);
    write_file(notab, "ok.one\tfoo\n"
                      "ok.two\tbar\n"
                      "this line has no tab\n");
    char *bad_repeat = wp_fmt("%s/bad-repeat.rules", dir);
    write_file(bad_repeat, "ok.one\tfoo\nok.two\tbar{3,1}\n");
    char *comments = wp_fmt("%s/comments.rules", dir);
    write_file(comments, "# nothing\n\n   # but comments\n");
    char *missing = wp_fmt("%s/does-not-exist.rules", dir);

    {
        const char *const a[] = {"--scan-rules", bad_regex, NULL};
        const char *const n[] = {"line 4", bad_regex, NULL};
        expect_exit2(a, NULL, n, "rules file with a bad regex on line 4");
    }
    {
        const char *const a[] = {"--scan-rules", bad_repeat, NULL};
        const char *const n[] = {"line 2", bad_repeat, NULL};
        expect_exit2(a, NULL, n, "rules file with a bad repeat on line 2");
    }
    {
        const char *const a[] = {"--scan-rules", dup, NULL};
        const char *const n[] = {"line 5", "dup.a", dup, NULL};
        expect_exit2(a, NULL, n, "rules file with a duplicate id on line 5");
    }
    {
        const char *const a[] = {"--scan-rules", notab, NULL};
        const char *const n[] = {"line 3", notab, NULL};
        expect_exit2(a, NULL, n, "rules file with a line without TAB (line 3)");
    }
    {
        const char *const a[] = {"--scan-rules", comments, NULL};
        const char *const n[] = {comments, NULL};
        expect_exit2(a, NULL, n, "rules file with comments only");
    }
    {
        const char *const a[] = {"--scan-rules", missing, NULL};
        const char *const n[] = {missing, NULL};
        expect_exit2(a, NULL, n, "nonexistent rules file");
    }
    {   /* the environment twin */
        char *e = wp_fmt("WARMPOOL_SCAN_RULES=%s", bad_regex);
        const char *const env[] = {e, NULL};
        const char *const n[] = {"line 4", NULL};
        expect_exit2(NULL, env, n, "WARMPOOL_SCAN_RULES with a bad regex on line 4");
        free(e);
    }
    wp_remove_tree(dir);
    free(bad_regex);
    free(dup);
    free(notab);
    free(bad_repeat);
    free(comments);
    free(missing);
}

/* ------------------------------------------------------------------- reload */

#define LOAD_BATCHES 30
#define LOAD_PER_BATCH 20
#define LOAD_TOTAL (LOAD_BATCHES * LOAD_PER_BATCH)
#define LOAD_TEXT "reload payload: ALPHA-1234 then BETA-5678 then GAMMA-9012, done"

typedef struct {
    const wp_server *s;
    long pace_ms;
    char ids[LOAD_TOTAL][24];
    long long sent_ms[LOAD_TOTAL];  /* monotonic, just before the batch was sent */
    atomic_int submitted;           /* tasks accepted so far */
    atomic_int batches_done;
    atomic_int errors;
    char err[1024];
} load_t;

static void *load_thread(void *arg) {
    load_t *L = arg;
    json_t *tasks = json_array();
    for (int i = 0; i < LOAD_PER_BATCH; i++)
        json_array_append_new(tasks, json_pack("{s:s, s:{s:s}}", "kind", "scan", "input", "text", LOAD_TEXT));
    json_t *body = json_pack("{s:o}", "tasks", tasks);
    char *b = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    CURL *h = curl_easy_init();
    for (int bi = 0; bi < LOAD_BATCHES; bi++) {
        long long t0 = wp_now_ms();
        wp_req q = {.method = "POST", .path = "/v1/tasks/batch", .body = b, .timeout_ms = 20000, .handle = h};
        wp_resp r;
        wp_http_nc(L->s, &q, &r);
        json_t *got = json_object_get(r.json, "tasks");
        if (r.status != 202 || json_array_size(got) != LOAD_PER_BATCH) {
            if (atomic_fetch_add(&L->errors, 1) == 0)
                snprintf(L->err, sizeof L->err, "batch %d: status %ld (curl %d %s): %.500s", bi, r.status,
                         r.curl_code, r.errbuf, r.body ? r.body : "");
        } else {
            int base = atomic_load(&L->submitted);
            for (int i = 0; i < LOAD_PER_BATCH; i++) {
                json_t *id = json_object_get(json_array_get(got, (size_t)i), "id");
                snprintf(L->ids[base + i], sizeof L->ids[0], "%s", json_is_string(id) ? json_string_value(id) : "");
                L->sent_ms[base + i] = t0;
            }
            atomic_store(&L->submitted, base + LOAD_PER_BATCH);
        }
        wp_resp_free(&r);
        atomic_fetch_add(&L->batches_done, 1);
        long long took = wp_now_ms() - t0;
        if (took < L->pace_ms) wp_sleep_ms((long)(L->pace_ms - took));
    }
    curl_easy_cleanup(h);
    free(b);
    return NULL;
}

static const char RULES_V1[] = "# version 1\n"
                               "fake.alpha\tALPHA-[0-9]{4}\n";
static const char RULES_V2[] = "# version 2: one rule more\n"
                               "fake.alpha\tALPHA-[0-9]{4}\n"
                               "fake.beta\tBETA-[0-9]{4}\n";
static const char RULES_BAD[] = "# version 3, broken on line 4\n"
                                "fake.alpha\tALPHA-[0-9]{4}\n"
                                "fake.beta\tBETA-[0-9]{4}\n"
                                "fake.broken\tGAMMA-([0-9]{4}\n";
static const char RULES_V3[] = "# version 3, fixed\n"
                               "fake.alpha\tALPHA-[0-9]{4}\n"
                               "fake.beta\tBETA-[0-9]{4}\n"
                               "fake.gamma\tGAMMA-[0-9]{4}\n";

/* Expected matches of LOAD_TEXT with `nrules` of alpha, beta, gamma. */
static size_t load_want(want_match *w, int nrules) {
    const char *t = LOAD_TEXT;
    static const char *const ids[] = {"fake.alpha", "fake.beta", "fake.gamma"};
    static const char *const tok[] = {"ALPHA-1234", "BETA-5678", "GAMMA-9012"};
    for (int i = 0; i < nrules; i++)
        w[i] = (want_match){ids[i], off_of(t, tok[i]), off_of(t, tok[i]) + (long long)strlen(tok[i])};
    return (size_t)nrules;
}

/* A few scan tasks of LOAD_TEXT, each of which must succeed with `nrules` rules. */
static void expect_load_text_rules(const wp_server *s, int n, int nrules, const char *what) {
    want_match w[3];
    size_t nw = load_want(w, nrules);
    for (int i = 0; i < n; i++) expect_scan(s, LOAD_TEXT, i % 2 == 1, w, nw, what);
}

WP_TEST(test_reload_scan_under_load) {
    char dir[512];
    char *rules = temp_file(dir, sizeof dir, "live.rules", RULES_V1);
    wp_server *s = wp_server_start_args("--workers", "2", "--scan-rules", rules, NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    pid_t gen1[2];
    assert_int_equal(wp_worker_pids(s, gen1, 2), 2);
    assert_int_equal(kind_generation(s, "scan"), 1);
    expect_load_text_rules(s, 2, 1, "before any reload: only fake.alpha");

    load_t *L = calloc(1, sizeof *L);
    assert_non_null(L);
    L->s = s;
    L->pace_ms = 130; /* 30 batches of 20: about 4 s */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, load_thread, L), 0);

    /* mid-load: a new rule, and SIGHUP */
    long long deadline = wp_now_ms() + 15000;
    while (atomic_load(&L->batches_done) < 8 && wp_now_ms() < deadline) wp_sleep_ms(5);
    write_file(rules, RULES_V2);
    long long t_hup = wp_now_ms();
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    int at_hup = atomic_load(&L->submitted);
    pid_t gen2[2];
    long long t_new = wait_reloaded(s, 2, 2, gen1, 2, gen2, 20);
    if (!wp_wait_pids_gone(gen1, 2, 5000)) fail_msg("the replaced workers are still alive 5 s after the reload");
    int at_new = atomic_load(&L->submitted);
    print_message("  SIGHUP after %d tasks; generation 2 with both workers new %lld ms later, after %d tasks\n",
                  at_hup, t_new - t_hup, at_new);

    pthread_join(th, NULL);
    if (atomic_load(&L->errors) != 0)
        fail_msg("%d of %d submissions during the reload were not accepted; first: %s", atomic_load(&L->errors),
                 LOAD_BATCHES, L->err);
    assert_int_equal(atomic_load(&L->submitted), LOAD_TOTAL);

    /* wait (bounded) for all of them */
    deadline = wp_now_ms() + 60000;
    for (;;) {
        json_t *st = wp_stats(s);
        long long open_ = wp_stats_count(st, "pending") + wp_stats_count(st, "running");
        json_decref(st);
        if (open_ == 0) break;
        if (wp_now_ms() > deadline) fail_msg("%lld tasks still pending or running 60 s after the load", open_);
        wp_sleep_ms(50);
    }
    json_t *st = wp_stats(s);
    if (wp_stats_count(st, "failed") != 0 || wp_stats_count(st, "canceled") != 0) {
        char *d = wp_dump(json_object_get(st, "tasks"));
        fail_msg("a reload under load must fail no task: %s", d);
    }
    json_decref(st);

    want_match w1[3], w2[3];
    size_t n1 = load_want(w1, 1), n2 = load_want(w2, 2);
    int after = 0, with_beta = 0;
    for (int i = 0; i < LOAD_TOTAL; i++) {
        json_t *d = wp_get_task(s, L->ids[i]);
        if (strcmp(wp_str(d, "state"), "succeeded") != 0 || wp_int(d, "attempts") != 1) {
            char *dd = wp_dump(d);
            fail_msg("task %d of the load (id %s): want succeeded at the first attempt, got %s", i, L->ids[i], dd);
        }
        json_t *res = json_object_get(d, "result");
        json_t *m = json_object_get(res, "matches");
        bool beta = json_array_size(m) == 2;
        char what[128];
        snprintf(what, sizeof what, "load task %d (id %s, %s the reload)", i, L->ids[i],
                 L->sent_ms[i] > t_new ? "submitted after" : "around");
        if (L->sent_ms[i] > t_new) {
            after++;
            expect_scan_result(res, strlen(LOAD_TEXT), w2, n2, what);
        } else if (beta) {
            expect_scan_result(res, strlen(LOAD_TEXT), w2, n2, what);
        } else {
            expect_scan_result(res, strlen(LOAD_TEXT), w1, n1, what);
        }
        with_beta += beta;
        json_decref(d);
    }
    print_message("  %d tasks, none failed; %d with the new rule; %d submitted after the reload completed\n",
                  LOAD_TOTAL, with_beta, after);
    if (after < 40)
        fail_msg("only %d tasks were submitted after the reload completed: the load ended too early for the test "
                 "to mean anything (reload took %lld ms)",
                 after, t_new - t_hup);
    if (at_hup < LOAD_PER_BATCH) fail_msg("SIGHUP came before the load started");
    free(L);

    /* A rules file that does not compile: reload fails, nothing changes. */
    int failed_before = count_in_log(s, "reload failed");
    write_file(rules, RULES_BAD);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    if (!wait_log(s, "reload failed", 15000) || count_in_log(s, "reload failed") != failed_before + 1)
        fail_msg("after SIGHUP with a broken rules file, the log has no new 'reload failed' line within 15 s");
    {
        char *log = wp_server_read_log(s);
        const char *p = strstr(log, "reload failed");
        const char *eol = p ? strchr(p, '\n') : NULL;
        if (!p || !strstr(p, "line 4") || (eol && strstr(p, "line 4") > eol))
            fail_msg("the 'reload failed' line should name the bad rule's line (line 4): %.400s", p ? p : "");
        free(log);
    }
    wp_sleep_ms(500); /* a wrong rolling replacement would have started by now */
    pid_t still[4];
    int ns = wp_worker_pids(s, still, 4);
    if (!same_set(still, ns, gen2, 2)) {
        char *a = pids_str(still, ns), *b = pids_str(gen2, 2);
        fail_msg("a failed reload must keep the workers: pids %s, want %s", a, b);
    }
    for (int i = 0; i < 2; i++) assert_true(wp_pid_alive(gen2[i]));
    st = wp_stats(s);
    {
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(st, "kinds"), i, k) {
            if (wp_int(k, "generation") != 2) {
                char *d = wp_dump(json_object_get(st, "kinds"));
                fail_msg("a failed reload must not change generation (want 2): %s", d);
            }
        }
    }
    json_decref(st);
    {
        wp_resp r;
        wp_call(s, "GET", "/readyz", NULL, &r);
        assert_int_equal(r.status, 200);
        wp_resp_free(&r);
    }
    expect_load_text_rules(s, 6, 2, "after a failed reload: the previous rules (alpha, beta)");
    {
        pid_t again[4];
        int na = wp_worker_pids(s, again, 4);
        if (!same_set(again, na, gen2, 2)) fail_msg("workers changed after a failed reload");
    }

    /* Fixed again: the next reload works, generation 3, fresh workers, new rule. */
    write_file(rules, RULES_V3);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    pid_t gen3[2];
    wait_reloaded(s, 3, 2, gen2, 2, gen3, 20);
    expect_load_text_rules(s, 4, 3, "after the reload that follows a failed one: alpha, beta, gamma");
    st = wp_stats(s);
    assert_true(wp_int(expect_kind(st, "scan"), "load_ms") >= 0);
    assert_true(wp_int(expect_kind(st, "scan"), "context_bytes") > 0);
    assert_int_equal(wp_stats_count(st, "failed"), 0);
    json_decref(st);

    expect_clean_stop(s, "after a reload, a failed reload and another reload");
    wp_remove_tree(dir);
    free(rules);
}

WP_TEST(test_reload_lookup) {
    const char *so = plugin_path("WP_IT_LOOKUP_SO");
    wp_server *s = wp_server_start_args("--workers", "2", "--plugin", so, "--kind-config", "lookup=mb=8,seed=7",
                                        NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    pid_t gen1[2];
    assert_int_equal(wp_worker_pids(s, gen1, 2), 2);
    ref_table t = ref_table_make(7, 8);
    expect_lookup_round(s, &t, 16, "before the reload");

    assert_int_equal(kill(s->pid, SIGHUP), 0);
    pid_t gen2[2];
    wait_reloaded(s, 2, 2, gen1, 2, gen2, 30);
    json_t *st = wp_stats(s);
    json_t *k = expect_kind(st, "lookup");
    if (wp_int(k, "context_bytes") != 8LL * 1024 * 1024 || wp_int(k, "generation") != 2 ||
        !json_is_integer(json_object_get(k, "load_ms")) || wp_int(k, "load_ms") < 0) {
        char *d = wp_dump(k);
        fail_msg("lookup after a reload: want context_bytes 8388608, generation 2, load_ms >= 0: %s", d);
    }
    json_decref(st);
    expect_lookup_round(s, &t, 16, "after the reload");
    expect_lookup_round(s, &t, 5, "after the reload, slices of 5");
    free(t.w);
    expect_clean_stop(s, "lookup after a reload");
}

WP_TEST(test_reload_does_not_interrupt_a_long_task) {
    char dir[512];
    char *rules = temp_file(dir, sizeof dir, "tiny.rules", TINY_RULES);
    wp_server *s = wp_server_start_args("--workers", "2", "--scan-rules", rules, NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    pid_t gen1[2];
    assert_int_equal(wp_worker_pids(s, gen1, 2), 2);

    json_t *t = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1500}}");
    char id[64];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_state(s, id, "running", 10));
    pid_t runner = wp_worker_pid_for_task(s, id, 5);
    if (!runner) fail_msg("no worker shows task %s", id);
    assert_true(wp_pid_in_list(runner, gen1, 2));

    assert_int_equal(kill(s->pid, SIGHUP), 0);
    long long t_hup = wp_now_ms();
    /* the new contexts are there at once; the busy worker is left alone until its task ends */
    long long deadline = t_hup + 10000;
    while (kind_generation(s, "sleep") != 2) {
        if (wp_now_ms() > deadline) fail_msg("generation not 2 within 10 s of SIGHUP");
        wp_sleep_ms(20);
    }
    wp_sleep_ms(300);
    json_t *mid = wp_get_task(s, id);
    if (wp_now_ms() - t_hup < 1000) {
        /* still well inside the 1.5 s: it must be running, on the same worker */
        if (strcmp(wp_str(mid, "state"), "running") != 0 || wp_int(mid, "attempts") != 1) {
            char *d = wp_dump(mid);
            fail_msg("300 ms after SIGHUP the long task should still run its first attempt: %s", d);
        }
        if (!wp_pid_alive(runner) || wp_worker_pid_for_task(s, id, 2) != runner)
            fail_msg("the worker running the long task (pid %d) was stopped or replaced by the reload", (int)runner);
    }
    json_decref(mid);
    /* the service keeps answering and running tasks meanwhile */
    json_t *e = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"during the reload\"}");
    json_t *ed = wp_wait_terminal(s, wp_str(e, "id"), 10);
    assert_string_equal(wp_str(ed, "state"), "succeeded");
    json_decref(ed);
    json_decref(e);

    json_t *d = wp_wait_terminal(s, id, 20);
    json_t *want = json_loads("{\"slept_ms\":1500}", 0, NULL);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0 || wp_int(d, "attempts") != 1 ||
        !json_equal(json_object_get(d, "result"), want) || !json_is_null(json_object_get(d, "error"))) {
        char *dd = wp_dump(d);
        fail_msg("a 1.5 s task running during SIGHUP must succeed at its first attempt, got %s", dd);
    }
    json_decref(want);
    json_decref(d);

    /* afterwards both workers are of the new generation, the long task's included */
    pid_t gen2[2];
    wait_reloaded(s, 2, 2, gen1, 2, gen2, 15);
    if (!wp_wait_pids_gone(&runner, 1, 5000)) fail_msg("the long task's worker was not retired after its task");
    expect_clean_stop(s, "after a reload during a long task");
    wp_remove_tree(dir);
    free(rules);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_plugin_lookup, wp_test_teardown),
        cmocka_unit_test_teardown(test_plugin_env_form, wp_test_teardown),
        cmocka_unit_test_teardown(test_plugin_errors, wp_test_teardown),
        cmocka_unit_test_teardown(test_scan_default_rules, wp_test_teardown),
        cmocka_unit_test_teardown(test_scan_custom_rules, wp_test_teardown),
        cmocka_unit_test_teardown(test_scan_rules_errors, wp_test_teardown),
        cmocka_unit_test_teardown(test_reload_scan_under_load, wp_test_teardown),
        cmocka_unit_test_teardown(test_reload_lookup, wp_test_teardown),
        cmocka_unit_test_teardown(test_reload_does_not_interrupt_a_long_task, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.kinds_e2e", tests, NULL, NULL);
}
