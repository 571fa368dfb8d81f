/* Integration: periodic tasks (--schedule, issue 13 item 5) with the real binary, on
 * SQLite and PostgreSQL. The scheduler's clock runs 60 times as fast in these tests
 * (fault point schedule_clock_speed=60: a minute of cron time is a second of real time,
 * the same in every process), so `* * * * *` comes due every second. Every wait is
 * bounded. */
#include "harness.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAST "WARMPOOL_FAULTS=schedule_clock_speed=60"

/* ---------------------------------------------------------------- helpers */

static long long wall_s(void) { return wp_wall_ms() / 1000; }

/* Tasks of kind `kind` in the store. */
static size_t count_kind(const wp_server *s, const char *kind) {
    char *q = wp_fmt("kind=%s", kind);
    json_t *all = wp_list_all(s, q, 1000);
    size_t n = json_array_size(all);
    json_decref(all);
    free(q);
    return n;
}

/* Appends to due[] the `due=N` of every log line of s holding `what`; returns the new n. */
static int collect_dues(const wp_server *s, const char *what, long long *due, int n, int cap) {
    char *log = wp_server_read_log(s);
    for (char *p = strstr(log, what); p != NULL && n < cap; p = strstr(p + 1, what)) {
        char *eol = strchr(p, '\n');
        char *d = strstr(p, " due=");
        if (d == NULL || (eol != NULL && d > eol)) continue;
        due[n++] = atoll(d + 5);
    }
    free(log);
    return n;
}

static int cmp_ll(const void *x, const void *y) {
    long long a = *(const long long *)x, b = *(const long long *)y;
    return a < b ? -1 : a > b;
}

/* No due time twice in due[0..n). */
static void assert_distinct(long long *due, int n, const char *what) {
    qsort(due, (size_t)n, sizeof *due, cmp_ll);
    for (int i = 1; i < n; i++)
        if (due[i] == due[i - 1]) fail_msg("%s: due time %lld submitted twice", what, due[i]);
}

static bool wait_count(const wp_server *s, const char *kind, size_t n, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    while (count_kind(s, kind) < n) {
        if (wp_now_ms() > deadline) return false;
        wp_sleep_ms(100);
    }
    return true;
}

/* ---------------------------------------------------------------- tests */

/* `* * * * *` submits one task per due time, each with the schedule's input, and
 * they run. */
WP_TEST(test_schedule_submits_each_due_time_once) {
    const char *args[] = {"--schedule", "tick=* * * * * echo {\"from\": \"tick\"}",
                          "--log-level", "debug", NULL};
    const char *env[] = {FAST, NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    long long t0 = wp_now_ms();
    if (!wait_count(s, "echo", 4, 10000)) fail_msg("fewer than 4 scheduled tasks in 10 s");
    long long elapsed = wp_now_ms() - t0;
    json_t *all = wp_list_all(s, "kind=echo", 1000);
    size_t n = json_array_size(all);
    /* one at start (the latest due time, replayed), then one a second */
    if ((long long)n > elapsed / 1000 + 3)
        fail_msg("%zu tasks in %lld ms: more than one per due time", n, elapsed);
    long long due[256];
    int nd = collect_dues(s, "schedule submitted a task", due, 0, 256);
    if ((size_t)nd < n) fail_msg("%zu tasks, %d submissions logged", n, nd);
    assert_distinct(due, nd, "one instance");
    for (int i = 1; i < nd; i++)
        if (due[i] % 60 != 0) fail_msg("due time %lld is not a whole minute", due[i]);
    const char *id = wp_str(json_array_get(all, n - 1), "id");
    json_t *t = wp_wait_terminal(s, id, 10);
    assert_string_equal(wp_str(t, "state"), "succeeded");
    char *result = wp_dump(json_object_get(t, "result"));
    assert_string_equal(result, "{\"from\":\"tick\"}");
    assert_int_equal(wp_int(t, "max_attempts"), 1);
    free(result);
    json_decref(t);
    json_decref(all);
}

/* A restart within one due period submits nothing new: the latest due time, replayed
 * at start, was submitted by the previous run (its idempotency key says so). A due time
 * every 10 s (`*\/10 * * * *` at 60x); the test starts 1 s into a period. */
WP_TEST(test_schedule_restart_submits_no_due_time_twice) {
    while (wall_s() % 10 != 1) wp_sleep_ms(50);
    long long boundary_ms = (wall_s() / 10 + 1) * 10000;     /* the next due time */
    const char *args[] = {"--schedule", "ten=*/10 * * * * echo 10", "--log-level", "debug",
                          NULL};
    const char *env[] = {FAST, NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    if (!wait_count(s, "echo", 1, 5000)) fail_msg("the latest due time was not submitted at start");
    long long due[64];
    int nd = collect_dues(s, "schedule submitted a task", due, 0, 64);
    assert_int_equal(nd, 1);
    int st = wp_server_stop(s, 10000, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wp_opts o2 = {.args = args, .env = env, .dir = s->dir};
    wp_server *s2 = wp_server_start(&o2);
    char needle[96];
    snprintf(needle, sizeof needle, "due time already submitted schedule=ten due=%lld", due[0]);
    long long deadline = wp_now_ms() + 5000;
    char *log = NULL;
    for (;;) {
        free(log);
        log = wp_server_read_log(s2);
        if (strstr(log, needle) != NULL) break;
        if (wp_now_ms() > deadline) fail_msg("the restart did not find due time %lld submitted", due[0]);
        wp_sleep_ms(50);
    }
    free(log);
    if (wp_wall_ms() < boundary_ms - 200) assert_int_equal(count_kind(s2, "echo"), 1);
    /* the next due time comes after the restart: submitted once */
    if (!wait_count(s2, "echo", 2, 15000)) fail_msg("the next due time was not submitted");
    nd = collect_dues(s2, "schedule submitted a task", due, 1, 64);
    assert_distinct(due, nd, "across a restart");
    assert_int_equal((size_t)nd, count_kind(s2, "echo"));
    wp_server_free(s2);
}

/* PostgreSQL: two instances with the same schedule give one task per due time. */
WP_TEST(test_schedule_two_instances_one_task_per_due_time) {
    WP_PG_ONLY();
    const char *args[] = {"--schedule", "both=* * * * * echo 2", "--log-level", "debug", NULL};
    const char *env[] = {FAST, NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *a = wp_server_start(&o);
    wp_opts ob = {.args = args, .env = env, .db = a->db};
    wp_server *b = wp_server_start(&ob);
    wp_sleep_ms(5000);
    long long due[512];
    int nd = collect_dues(a, "schedule submitted a task", due, 0, 512);
    nd = collect_dues(b, "schedule submitted a task", due, nd, 512);
    int na = collect_dues(a, "due time already submitted", (long long[512]){0}, 0, 512);
    int nb = collect_dues(b, "due time already submitted", (long long[512]){0}, 0, 512);
    size_t n = count_kind(a, "echo");
    if (n < 4) fail_msg("%zu tasks in 5 s", n);
    if (na + nb == 0) fail_msg("neither instance found a due time the other had submitted");
    /* each task was submitted by exactly one of them */
    assert_distinct(due, nd, "two instances");
    if ((size_t)nd != n && (size_t)nd != n - 1)   /* the last one may not be logged yet */
        fail_msg("%d submissions logged for %zu tasks", nd, n);
    wp_server_free(b);
    wp_server_free(a);
}

/* Bad schedules stop warmpool before anything starts: exit 2 with the reason. */
static void expect_exit2(const char *const *extra, const char *needle) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *db = wp_fmt("%s/never.db", dir);
    char *listen = wp_fmt("127.0.0.1:%d", wp_free_port());
    const char *argv[16] = {"--db", db, "--listen", listen};
    int k = 4;
    for (int i = 0; extra[i] && k < 15; i++) argv[k++] = extra[i];
    argv[k] = NULL;
    char *out = NULL;
    bool to = false;
    int st = wp_run_binary(argv, NULL, 20000, &out, &to, NULL);
    if (to) fail_msg("%s: still running after 20 s", needle);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2))
        fail_msg("want exit 2 naming '%s', got status %d: %.800s", needle, st, out);
    if (strstr(out, needle) == NULL) fail_msg("exit 2 without '%s': %.800s", needle, out);
    free(out);
    free(db);
    free(listen);
    wp_remove_tree(dir);
}

WP_TEST(test_schedule_bad_config_exit_2) {
    expect_exit2((const char *[]){"--schedule", "a=61 * * * * echo {}", NULL}, "minute field");
    expect_exit2((const char *[]){"--schedule", "a=* * * * echo {}", NULL}, "day of week field 'echo'");
    expect_exit2((const char *[]){"--schedule", "a=0 0 30 2 * echo", NULL}, "never comes due");
    expect_exit2((const char *[]){"--schedule", "a=* * * * * nope {}", NULL}, "no kind is named 'nope'");
    expect_exit2((const char *[]){"--schedule", "a=* * * * * echo {oops", NULL}, "the input is not JSON");
    /* a plugin's kinds are only known once loaded: checked then, still exit 2 */
    const char *so = getenv("WP_IT_LOOKUP_SO");
    if (so != NULL && so[0] != '\0') {
        expect_exit2((const char *[]){"--plugin", so, "--schedule", "p=@daily not_in_plugin", NULL},
                     "--schedule p: no kind is named 'not_in_plugin'");
    } else {
        print_message("WP_IT_LOOKUP_SO not set: the plugin case is not run\n");
    }
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_schedule_submits_each_due_time_once, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_restart_submits_no_due_time_twice, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_two_instances_one_task_per_due_time, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_bad_config_exit_2, wp_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
