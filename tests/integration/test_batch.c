/* Integration: a worker's batches (issue 12). While its tasks are short a worker records
 * them and claims its next ones several at a time (store_record_batch); the tasks of a
 * batch are held, not started. These tests check what must not change with batches:
 *  - a worker killed (or timed out) in the middle of a batch loses one attempt, the one
 *    it was running; the tasks it held, run or not, go back as never claimed;
 *  - a long task in a batch hands the rest back at once, and they run with their first
 *    attempt.
 * The fault point worker_batch_budget_ms lengthens a batch's time budget, so that the
 * whole batch is still held when the long task in it runs (the window of the kill).
 * Both backends batch (store_batch_max 16): the tests check that the tasks after the
 * long one are held while it runs. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTASKS 11
#define MID 4               /* the long task's place in the batch */

static wp_server *start_one_worker(const char *faults) {
    char *env0 = faults ? wp_fmt("WARMPOOL_FAULTS=%s", faults) : NULL;
    const char *const env[] = {env0, NULL};
    const char *const args[] = {"--workers", "1", NULL};
    wp_opts o = {.args = args, .env = env0 ? env : NULL};
    wp_server *s = wp_server_start(&o);
    free(env0);
    assert_int_equal(wp_wait_workers(s, 1, 15), 1);
    /* one short task first: the worker's last batch was short, so its next claims are
     * batches */
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":0}");
    json_t *done = wp_wait_terminal(s, wp_str(t, "id"), 10);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    json_decref(done);
    json_decref(t);
    return s;
}

/* POSTs one batch of NTASKS: echoes, with `mid` (a task body) at MID, all with
 * max_attempts 1; their ids into ids[]. The worker claims the first alone (it is idle),
 * and the others as one batch when it records the first. */
static void submit_batch(wp_server *s, const char *mid, char ids[NTASKS][64]) {
    char body[4096];
    int off = snprintf(body, sizeof body, "{\"tasks\":[");
    for (int i = 0; i < NTASKS; i++) {
        off += snprintf(body + off, sizeof body - (size_t)off, "%s", i > 0 ? "," : "");
        off += i == MID ? snprintf(body + off, sizeof body - (size_t)off, "%s", mid)
                        : snprintf(body + off, sizeof body - (size_t)off,
                                   "{\"kind\":\"echo\",\"input\":%d,\"max_attempts\":1}", i);
    }
    snprintf(body + off, sizeof body - (size_t)off, "]}");
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks/batch", body, &r);
    assert_int_equal(r.status, 202);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    json_t *tasks = json_object_get(j, "tasks");
    assert_int_equal(json_array_size(tasks), NTASKS);
    for (size_t i = 0; i < NTASKS; i++)
        snprintf(ids[i], 64, "%s", wp_str(json_array_get(tasks, i), "id"));
    json_decref(j);
    wp_resp_free(&r);
}

/* Every echo of the batch succeeded with one attempt, with a start no later than its end. */
static void expect_echoes_once(wp_server *s, char ids[NTASKS][64], const char *what) {
    for (int i = 0; i < NTASKS; i++) {
        if (i == MID)
            continue;
        json_t *t = wp_wait_terminal(s, ids[i], 20);
        const char *st = wp_str(t, "started_at"), *fin = wp_str(t, "finished_at");
        if (strcmp(wp_str(t, "state"), "succeeded") != 0 || wp_int(t, "attempts") != 1 ||
            !wp_valid_ts(st) || !wp_valid_ts(fin) || wp_parse_ts(st) > wp_parse_ts(fin)) {
            char *d = wp_dump(t);
            fail_msg("%s: echo %d: want succeeded after 1 attempt, started before it "
                     "finished; got %s", what, i, d);
        }
        json_decref(t);
    }
}

/* While the long task runs, the tasks after it were claimed with it in one batch (on
 * both backends): held, i.e. running with no start yet. */
static void expect_held_after_mid(wp_server *s, char ids[NTASKS][64]) {
    for (int i = MID + 1; i < NTASKS; i++) {
        json_t *t = wp_get_task(s, ids[i]);
        if (strcmp(wp_str(t, "state"), "running") != 0 ||
            !json_is_null(json_object_get(t, "started_at"))) {
            char *d = wp_dump(t);
            fail_msg("echo %d after the long task: want held (running, started_at null), "
                     "got %s", i, d);
        }
        json_decref(t);
    }
}

static void kill_mid_batch(const char *mid, const char *code, int kill_it) {
    wp_server *s = start_one_worker("worker_batch_budget_ms=60000");
    char ids[NTASKS][64];
    submit_batch(s, mid, ids);
    /* the long task is running (the slot shows it): the echoes before it in the batch
     * have run, those after it have not, and none is recorded */
    pid_t w = wp_worker_pid_for_task(s, ids[MID], 10);
    assert_true(w > 0);
    expect_held_after_mid(s, ids);
    if (kill_it)
        assert_int_equal(kill(w, SIGKILL), 0);
    json_t *t = wp_wait_terminal(s, ids[MID], 20);
    if (strcmp(wp_str(t, "state"), "failed") != 0 || strcmp(wp_str(json_object_get(t, "error"), "code"), code) != 0 ||
        wp_int(t, "attempts") != 1) {
        char *d = wp_dump(t);
        fail_msg("the task running when its worker died: want failed/%s after 1 attempt, got %s",
                 code, d);
    }
    json_decref(t);
    expect_echoes_once(s, ids, "a task of the batch whose worker died");
}

/* kill -9 of a worker while the 4th task of its batch runs: only that task loses its
 * (only) attempt; the three before it (run, not recorded) and the six after it run
 * again. Without the slot's running task in store_release_lost, every task of the batch
 * failed as worker_lost. */
WP_TEST(test_worker_killed_mid_batch) {
    kill_mid_batch("{\"kind\":\"sleep\",\"input\":{\"ms\":5000},\"max_attempts\":1}", "worker_lost", 1);
}

/* The same when the supervisor kills the worker for the running task's timeout. */
WP_TEST(test_timeout_mid_batch) {
    kill_mid_batch("{\"kind\":\"sleep\",\"input\":{\"ms\":5000},\"max_attempts\":1,\"timeout_ms\":400}",
                   "timeout", 0);
}

/* With the default budget (2 ms), a 300 ms task in a batch hands back the tasks after
 * it when it ends: they run with their first attempt (the claim that counted one when
 * handed back would show 2), and start after it ended. */
WP_TEST(test_long_task_hands_back_the_rest) {
    wp_server *s = start_one_worker(NULL);
    char ids[NTASKS][64];
    submit_batch(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":300},\"max_attempts\":1}", ids);
    json_t *t = wp_wait_terminal(s, ids[MID], 20);
    assert_string_equal(wp_str(t, "state"), "succeeded");
    long long long_end = wp_parse_ts(wp_str(t, "finished_at"));
    json_decref(t);
    expect_echoes_once(s, ids, "an echo after a long task in a batch");
    for (int i = MID + 1; i < NTASKS; i++) {
        json_t *e = wp_get_task(s, ids[i]);
        if (wp_parse_ts(wp_str(e, "started_at")) < long_end) {
            char *d = wp_dump(e);
            fail_msg("echo %d started before the long task before it ended: %s", i, d);
        }
        json_decref(e);
    }
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_killed_mid_batch, wp_test_teardown),
        cmocka_unit_test_teardown(test_timeout_mid_batch, wp_test_teardown),
        cmocka_unit_test_teardown(test_long_task_hands_back_the_rest, wp_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
