/* test_metrics.c -- the shared counters of common/metrics.c: what each writer adds, the
 * histograms' buckets (an observation on a bound falls in that bound's bucket), the
 * kinds past the table counted as "_other", counts added by several processes at once,
 * the monotonic CPU counter, and a process without a block. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/metrics.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int
teardown(void **state)
{
    (void)state;
    metrics_destroy();
    return 0;
}

/* The entry of kind `name`, or fails. */
static struct metrics_kind_view
kind(const char *name)
{
    struct metrics_kind_view k;
    for (int i = 0; i <= METRICS_MAX_KINDS; i++)
        if (metrics_kind_read(i, &k) && strcmp(k.name, name) == 0)
            return k;
    fail_msg("no metrics for kind %s", name);
    return k;
}

static void
test_task_counters(void **state)
{
    (void)state;
    assert_int_equal(metrics_create(3), 0);
    assert_int_equal(metrics_workers(), 3);
    for (int i = 0; i < 5; i++)
        metrics_task_submitted("echo");
    metrics_task_submitted("fail");
    metrics_task_started("echo", 1, 3);         /* 3 ms in the queue */
    metrics_task_started("echo", 2, 9999);      /* not the first attempt: not observed */
    metrics_task_attempt("echo", METRICS_OUT_SUCCEEDED, 1);
    metrics_task_attempt("echo", METRICS_OUT_TIMEOUT, 2000);
    metrics_task_attempt("echo", METRICS_OUT_WORKER_LOST, -1);  /* run time unknown */
    metrics_task_attempt("fail", METRICS_OUT_RETRIED, 0);
    metrics_task_attempt("fail", METRICS_OUT_FAILED, 0);
    metrics_task_finished("echo", METRICS_END_SUCCEEDED);
    metrics_task_finished("echo", METRICS_END_CANCELED);
    metrics_task_finished("fail", METRICS_END_FAILED);
    metrics_worker_restart(METRICS_RESTART_CRASHED);
    metrics_worker_restart(METRICS_RESTART_CRASHED);
    metrics_worker_restart(METRICS_RESTART_RETIRED);

    struct metrics_kind_view e = kind("echo"), f = kind("fail");
    assert_int_equal(e.submitted, 5);
    assert_int_equal(f.submitted, 1);
    assert_int_equal(e.attempts[METRICS_OUT_SUCCEEDED], 1);
    assert_int_equal(e.attempts[METRICS_OUT_TIMEOUT], 1);
    assert_int_equal(e.attempts[METRICS_OUT_WORKER_LOST], 1);
    assert_int_equal(e.attempts[METRICS_OUT_FAILED], 0);
    assert_int_equal(f.attempts[METRICS_OUT_RETRIED], 1);
    assert_int_equal(f.attempts[METRICS_OUT_FAILED], 1);
    assert_int_equal(e.finished[METRICS_END_SUCCEEDED], 1);
    assert_int_equal(e.finished[METRICS_END_CANCELED], 1);
    assert_int_equal(f.finished[METRICS_END_FAILED], 1);
    assert_int_equal(e.queue.count, 1);
    assert_int_equal(e.run.count, 2);           /* the worker_lost one had no time */
    assert_true(e.run.sum_s > 2.0009 && e.run.sum_s < 2.0011);
    assert_int_equal(metrics_restarts(METRICS_RESTART_CRASHED), 2);
    assert_int_equal(metrics_restarts(METRICS_RESTART_TIMEOUT), 0);
    assert_int_equal(metrics_restarts(METRICS_RESTART_RETIRED), 1);
    /* no "_other" while every kind fits */
    struct metrics_kind_view o;
    assert_int_equal(metrics_kind_read(0, &o), 0);
}

/* Buckets are cumulative and `le`: 1 ms falls in le="0.001", 1.001 ms in "0.0025". */
static void
test_histogram_buckets(void **state)
{
    (void)state;
    assert_int_equal(metrics_create(1), 0);
    metrics_task_attempt("k", METRICS_OUT_SUCCEEDED, 1);
    metrics_task_attempt("k", METRICS_OUT_SUCCEEDED, 2);
    metrics_task_attempt("k", METRICS_OUT_SUCCEEDED, 7200000);  /* two hours: +Inf only */
    struct metrics_kind_view k = kind("k");
    assert_string_equal(METRICS_TASK_LE[0], "0.001");
    assert_int_equal(k.run.le[0], 1);           /* le 0.001 */
    assert_int_equal(k.run.le[1], 2);           /* le 0.0025 */
    assert_int_equal(k.run.le[METRICS_TASK_BUCKETS - 1], 2);    /* le 3600 */
    assert_int_equal(k.run.le[METRICS_TASK_BUCKETS], 3);        /* +Inf */
    assert_int_equal(k.run.count, 3);
    for (int i = 1; i < METRICS_TASK_BUCKETS; i++)
        assert_true(METRICS_TASK_BOUNDS_US[i] > METRICS_TASK_BOUNDS_US[i - 1]);
    for (int i = 1; i < METRICS_HTTP_BUCKETS; i++)
        assert_true(METRICS_HTTP_BOUNDS_US[i] > METRICS_HTTP_BOUNDS_US[i - 1]);

    metrics_http_request(2, 200, 500);          /* on the first bound */
    metrics_http_request(2, 200, 501);
    metrics_http_request(2, 404, 90000000);     /* past the last: +Inf */
    metrics_http_request(2, 99, 1);             /* not a status: not counted */
    metrics_http_request(2, 600, 1);
    metrics_http_request(METRICS_MAX_ROUTES, 200, 1);   /* no such route number */
    metrics_http_request(-1, 200, 1);
    assert_int_equal(metrics_http_count(2, 200), 2);
    assert_int_equal(metrics_http_count(2, 404), 1);
    assert_int_equal(metrics_http_count(2, 99), 0);
    assert_int_equal(metrics_http_count(3, 200), 0);
    struct metrics_hist_view h;
    metrics_http_hist(2, &h);
    assert_int_equal(h.le[0], 1);
    assert_int_equal(h.le[1], 2);
    assert_int_equal(h.le[METRICS_HTTP_BUCKETS - 1], 2);
    assert_int_equal(h.le[METRICS_HTTP_BUCKETS], 3);
    assert_int_equal(h.count, 3);
}

/* More kinds than the table holds: the rest are counted together as "_other". */
static void
test_other_kinds(void **state)
{
    (void)state;
    assert_int_equal(metrics_create(1), 0);
    char name[16];
    for (int i = 0; i < METRICS_MAX_KINDS + 10; i++) {
        snprintf(name, sizeof name, "kind%d", i);
        metrics_task_submitted(name);
    }
    struct metrics_kind_view o;
    assert_int_equal(metrics_kind_read(0, &o), 1);
    assert_string_equal(o.name, "_other");
    assert_int_equal(o.submitted, 10);
    assert_int_equal(kind("kind0").submitted, 1);
}

/* Counters added by several processes at once lose nothing. */
static void
test_processes_add_up(void **state)
{
    (void)state;
    enum { PROCS = 4, EACH = 20000 };
    assert_int_equal(metrics_create(PROCS), 0);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            for (int i = 0; i < EACH; i++) {
                metrics_task_submitted("echo");
                metrics_task_attempt("echo", METRICS_OUT_SUCCEEDED, i % 50);
                metrics_http_request(1, 202, 100);
            }
            _exit(0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int status;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    struct metrics_kind_view e = kind("echo");
    assert_int_equal(e.submitted, PROCS * EACH);
    assert_int_equal(e.attempts[METRICS_OUT_SUCCEEDED], PROCS * EACH);
    assert_int_equal(e.run.count, PROCS * EACH);
    assert_int_equal(metrics_http_count(1, 202), PROCS * EACH);
}

static void
test_monotonic_cpu(void **state)
{
    (void)state;
    assert_int_equal(metrics_monotonic_cpu(7), 7);     /* no block: as given */
    assert_int_equal(metrics_create(1), 0);
    assert_int_equal(metrics_monotonic_cpu(100), 100);
    assert_int_equal(metrics_monotonic_cpu(90), 100);  /* a dip (a process went away) */
    assert_int_equal(metrics_monotonic_cpu(130), 130);
}

static void
test_no_block(void **state)
{
    (void)state;
    assert_int_equal(metrics_present(), 0);
    metrics_task_submitted("echo");             /* nothing happens, nothing breaks */
    metrics_worker_restart(METRICS_RESTART_CRASHED);
    metrics_http_request(1, 200, 1);
    struct metrics_kind_view k;
    assert_int_equal(metrics_kind_read(1, &k), 0);
    assert_int_equal(metrics_restarts(METRICS_RESTART_CRASHED), 0);
    assert_int_equal(metrics_http_count(1, 200), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_task_counters, teardown),
        cmocka_unit_test_teardown(test_histogram_buckets, teardown),
        cmocka_unit_test_teardown(test_other_kinds, teardown),
        cmocka_unit_test_teardown(test_processes_add_up, teardown),
        cmocka_unit_test_teardown(test_monotonic_cpu, teardown),
        cmocka_unit_test_teardown(test_no_block, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
