/* Integration: the task API end to end (submit, wait, result, list, cancel,
 * priorities, idempotency, batch, stats, health). */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Shared server: test kinds on, 2 workers. */
static wp_server *G;

static int group_setup(void **state) {
    (void)state;
    G = wp_server_start_args("--enable-test-kinds", "--workers", "2", "--grace-ms", "2000", NULL);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (G) wp_server_free(G);
    G = NULL;
    return 0;
}

static void expect_json_eq(const json_t *got, const json_t *want, const char *what) {
    if (!json_equal((json_t *)got, (json_t *)want)) {
        char *g = wp_dump(got), *w = wp_dump(want);
        fail_msg("%s: got %.600s, want %.600s", what, g, w);
    }
}

static json_t *parse(const char *txt) {
    json_error_t e;
    json_t *j = json_loads(txt, JSON_DECODE_ANY, &e);
    if (!j) fail_msg("test bug: bad JSON literal %s", txt);
    return j;
}

/* ------------------------------------------------------------------ health */

WP_TEST(test_healthz_readyz) {
    wp_resp r;
    wp_call(G, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *want = parse("{\"status\":\"ok\"}");
    expect_json_eq(r.json, want, "GET /healthz body");
    json_decref(want);
    wp_resp_free(&r);

    wp_call(G, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_object(r.json));
    wp_resp_free(&r);
}

/* ------------------------------------------------------- kinds round trip */

WP_TEST(test_echo_roundtrip) {
    const char *input = "{\"a\":[1,2,{\"b\":null}],\"s\":\"h\\u00e9llo \\\"q\\\"\",\"n\":-3.5,\"t\":true}";
    long long before = wp_wall_ms();
    json_t *t = wp_submitf(G, "{\"kind\":\"echo\",\"input\":%s}", input);
    long long after = wp_wall_ms();
    json_t *in = parse(input);
    assert_string_equal(wp_str(t, "kind"), "echo");
    expect_json_eq(json_object_get(t, "input"), in, "submitted task input");
    assert_int_equal(wp_int(t, "priority"), 0);
    assert_int_equal(wp_int(t, "max_attempts"), 1);
    assert_int_equal(wp_int(t, "timeout_ms"), 300000);
    /* created_at is the server's clock at submission (same machine). */
    long long created = wp_parse_ts(wp_str(t, "created_at"));
    assert_true(created >= before - 2000 && created <= after + 2000);
    const char *st = wp_str(t, "state");
    if (strcmp(st, "pending") == 0) {
        assert_int_equal(wp_int(t, "attempts"), 0);
        assert_true(json_is_null(json_object_get(t, "started_at")));
        assert_true(json_is_null(json_object_get(t, "result")));
    }

    json_t *done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    expect_json_eq(json_object_get(done, "result"), in, "echo result");
    expect_json_eq(json_object_get(done, "input"), in, "echo input after run");
    assert_true(json_is_null(json_object_get(done, "error")));
    assert_int_equal(wp_int(done, "attempts"), 1);
    assert_string_equal(wp_str(done, "created_at"), wp_str(t, "created_at"));
    assert_string_equal(wp_str(done, "kind"), "echo");

    /* A plain GET returns the same, complete task. */
    json_t *again = wp_get_task(G, wp_str(t, "id"));
    expect_json_eq(again, done, "GET after completion");
    json_decref(again);
    json_decref(done);
    json_decref(in);
    json_decref(t);
}

WP_TEST(test_echo_default_input_null) {
    json_t *t = wp_submit(G, "{\"kind\":\"echo\"}");
    assert_true(json_is_null(json_object_get(t, "input")));
    json_t *done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    assert_true(json_is_null(json_object_get(done, "result")));
    json_decref(done);
    json_decref(t);

    /* Scalars and arrays are valid inputs too. */
    static const char *const inputs[] = {"42", "\"text\"", "[1,[2,[3]]]", "false", "{}"};
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        t = wp_submitf(G, "{\"kind\":\"echo\",\"input\":%s}", inputs[i]);
        done = wp_wait_terminal(G, wp_str(t, "id"), 20);
        json_t *in = parse(inputs[i]);
        assert_string_equal(wp_str(done, "state"), "succeeded");
        expect_json_eq(json_object_get(done, "result"), in, "echo of a non-object input");
        json_decref(in);
        json_decref(done);
        json_decref(t);
    }
}

WP_TEST(test_sleep_roundtrip) {
    json_t *t = wp_submit(G, "{\"kind\":\"sleep\",\"input\":{\"ms\":120}}");
    json_t *done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    json_t *want = parse("{\"slept_ms\":120}");
    expect_json_eq(json_object_get(done, "result"), want, "sleep result");
    long long s = wp_parse_ts(wp_str(done, "started_at"));
    long long f = wp_parse_ts(wp_str(done, "finished_at"));
    if (f - s < 110) fail_msg("sleep 120 ms ran for %lld ms (started_at..finished_at)", f - s);
    assert_int_equal(wp_int(done, "attempts"), 1);
    json_decref(want);
    json_decref(done);
    json_decref(t);

    /* ms 0 is valid. */
    t = wp_submit(G, "{\"kind\":\"sleep\",\"input\":{\"ms\":0}}");
    done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    want = parse("{\"slept_ms\":0}");
    expect_json_eq(json_object_get(done, "result"), want, "sleep 0 result");
    json_decref(want);
    json_decref(done);
    json_decref(t);
}

WP_TEST(test_fail_roundtrip) {
    json_t *t = wp_submit(G, "{\"kind\":\"fail\",\"input\":{\"message\":\"boom 42\"}}");
    json_t *done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "failed");
    json_t *want = parse("{\"code\":\"task_failed\",\"message\":\"boom 42\"}");
    expect_json_eq(json_object_get(done, "error"), want, "fail error");
    assert_true(json_is_null(json_object_get(done, "result")));
    assert_int_equal(wp_int(done, "attempts"), 1);
    json_decref(want);
    json_decref(done);
    json_decref(t);

    /* a message with a control character, quotes and non-ASCII: the answer is made by
     * jansson instead of as text (api/taskjson.c, taskjson_text), the same task */
    t = wp_submit(G, "{\"kind\":\"fail\",\"input\":{\"message\":\"one\\ntwo \\u00e9 \\\"q\\\"\"}}");
    done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "failed");
    want = parse("{\"code\":\"task_failed\",\"message\":\"one\\ntwo \\u00e9 \\\"q\\\"\"}");
    expect_json_eq(json_object_get(done, "error"), want, "fail error, escaped message");
    json_t *again = wp_get_task(G, wp_str(t, "id"));
    expect_json_eq(again, done, "GET of a task with an escaped error message");
    json_decref(again);
    json_decref(want);
    json_decref(done);
    json_decref(t);
}

WP_TEST(test_explicit_fields) {
    json_t *t = wp_submit(G, "{\"kind\":\"echo\",\"input\":[1],\"priority\":-7,\"max_attempts\":3,"
                             "\"timeout_ms\":1234}");
    assert_int_equal(wp_int(t, "priority"), -7);
    assert_int_equal(wp_int(t, "max_attempts"), 3);
    assert_int_equal(wp_int(t, "timeout_ms"), 1234);
    json_t *done = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    assert_int_equal(wp_int(done, "priority"), -7);
    assert_int_equal(wp_int(done, "max_attempts"), 3);
    assert_int_equal(wp_int(done, "timeout_ms"), 1234);
    assert_int_equal(wp_int(done, "attempts"), 1);
    json_decref(done);
    json_decref(t);

    /* Optional fields given as null take their defaults. */
    t = wp_submit(G, "{\"kind\":\"echo\",\"input\":null,\"priority\":null,\"max_attempts\":null,"
                     "\"timeout_ms\":null}");
    assert_int_equal(wp_int(t, "priority"), 0);
    assert_int_equal(wp_int(t, "max_attempts"), 1);
    assert_int_equal(wp_int(t, "timeout_ms"), 300000);
    assert_true(json_is_null(json_object_get(t, "input")));
    json_decref(t);
}

WP_TEST(test_ids_increase_in_submission_order) {
    char prev[64] = "";
    long long prev_created = 0;
    for (int i = 0; i < 25; i++) {
        json_t *t = wp_submitf(G, "{\"kind\":\"echo\",\"input\":%d}", i);
        const char *id = wp_str(t, "id");
        long long c = wp_parse_ts(wp_str(t, "created_at"));
        if (prev[0]) {
            if (wp_id_cmp(id, prev) <= 0) fail_msg("id %s not greater than previous %s", id, prev);
            if (c < prev_created) fail_msg("created_at went backwards at id %s", id);
        }
        snprintf(prev, sizeof prev, "%s", id);
        prev_created = c;
        json_decref(t);
    }
    /* And across a batch too. */
    wp_resp r;
    wp_call(G, "POST", "/v1/tasks/batch",
            "{\"tasks\":[{\"kind\":\"echo\"},{\"kind\":\"echo\"},{\"kind\":\"echo\"}]}", &r);
    assert_int_equal(r.status, 202);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(r.json, "tasks"), i, t) {
        const char *id = wp_str(t, "id");
        if (wp_id_cmp(id, prev) <= 0) fail_msg("batch id %s not greater than previous %s", id, prev);
        snprintf(prev, sizeof prev, "%s", id);
    }
    wp_resp_free(&r);
}

/* The task object has exactly the spec's fields everywhere it appears. */
WP_TEST(test_task_object_shape_exact) {
    wp_resp r;
    wp_call(G, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":{\"x\":1}}", &r);
    assert_int_equal(r.status, 202);
    wp_assert_task_keys_exact(r.json, true, "POST /v1/tasks answer");
    char id[64];
    snprintf(id, sizeof id, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    json_t *d = wp_wait_terminal(G, id, 20);
    wp_assert_task_keys_exact(d, true, "GET /v1/tasks/ID of a finished task");
    json_decref(d);
    json_t *f = wp_submit(G, "{\"kind\":\"fail\",\"input\":{\"message\":\"m\"}}");
    d = wp_wait_terminal(G, wp_str(f, "id"), 20);
    wp_assert_task_keys_exact(d, true, "GET /v1/tasks/ID of a failed task");
    json_decref(d);
    json_decref(f);
    wp_call(G, "GET", "/v1/tasks?limit=5", NULL, &r);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(r.json, "tasks"), i, t) wp_assert_task_keys_exact(t, false, "list item");
    wp_resp_free(&r);
    wp_call(G, "POST", "/v1/tasks/batch", "{\"tasks\":[{\"kind\":\"echo\"}]}", &r);
    assert_int_equal(r.status, 202);
    wp_assert_task_keys_exact(json_array_get(json_object_get(r.json, "tasks"), 0), true, "batch item");
    wp_resp_free(&r);
}

/* ------------------------------------------------------------- priorities */

WP_TEST(test_priorities) {
    wp_server *s = wp_server_start_args("--workers", "1", "--grace-ms", "1000", NULL);
    json_t *blocker = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1500}}");
    json_decref(wp_wait_state(s, wp_str(blocker, "id"), "running", 10));

    /* name, priority; expected run order: e(10) b(5) d(5) a(0) f(0) c(-3) */
    static const struct {
        const char *name;
        int prio;
    } subs[] = {{"a", 0}, {"b", 5}, {"c", -3}, {"d", 5}, {"e", 10}, {"f", 0}};
    static const char *const order = "ebdafc";
    char ids[6][64];
    for (int i = 0; i < 6; i++) {
        json_t *t = wp_submitf(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":40},\"priority\":%d}",
                               subs[i].prio);
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    json_t *b = wp_get_task(s, wp_str(blocker, "id"));
    if (strcmp(wp_str(b, "state"), "running") != 0)
        fail_msg("test setup: the blocker finished before all tasks were queued; cannot judge order");
    json_decref(b);

    long long started[6];
    for (int i = 0; i < 6; i++) {
        json_t *d = wp_wait_terminal(s, ids[i], 30);
        assert_string_equal(wp_str(d, "state"), "succeeded");
        started[i] = wp_parse_ts(wp_str(d, "started_at"));
        json_decref(d);
    }
    for (int k = 1; k < 6; k++) {
        int prev = (int)(strchr("abcdef", order[k - 1]) - "abcdef");
        int cur = (int)(strchr("abcdef", order[k]) - "abcdef");
        if (!(started[prev] < started[cur]))
            fail_msg("priority order: task %c (prio %d) started at %lld, not before %c (prio %d) at %lld; "
                     "want order e b d a f c",
                     order[k - 1], subs[prev].prio, started[prev], order[k], subs[cur].prio, started[cur]);
    }
    json_decref(blocker);
}

/* ------------------------------------------------------------ idempotency */

WP_TEST(test_idempotency_same_key) {
    const char *body = "{\"kind\":\"echo\",\"input\":{\"idem\":1}}";
    const char *const h1[] = {"Idempotency-Key: key-one-abc", NULL};
    wp_resp r1, r2, r3;
    wp_call_h(G, "POST", "/v1/tasks", body, h1, &r1);
    assert_int_equal(r1.status, 202);
    wp_assert_task_shape(r1.json, true);
    const char *id = wp_str(r1.json, "id");
    wp_snap snap = wp_snapshot(G);

    wp_call_h(G, "POST", "/v1/tasks", body, h1, &r2);
    if (r2.status != 200) fail_msg("repeat with same key+body: want 200, got %ld: %s", r2.status, r2.body);
    wp_assert_task_shape(r2.json, true);
    assert_string_equal(wp_str(r2.json, "id"), id);
    assert_string_equal(wp_str(r2.json, "kind"), "echo");
    assert_true(json_equal(json_object_get(r2.json, "input"), json_object_get(r1.json, "input")));
    wp_assert_unchanged(G, &snap, "idempotent repeat");

    /* Same key, other body: conflict, nothing created. */
    wp_call_h(G, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":{\"idem\":2}}", h1, &r3);
    wp_assert_error(&r3, 409, "idempotency_conflict", NULL);
    wp_assert_unchanged(G, &snap, "idempotency conflict");
    wp_resp_free(&r3);

    /* A different key with the same body creates a new task. */
    const char *const h2[] = {"Idempotency-Key: key-two-abc", NULL};
    wp_call_h(G, "POST", "/v1/tasks", body, h2, &r3);
    assert_int_equal(r3.status, 202);
    if (strcmp(wp_str(r3.json, "id"), id) == 0) fail_msg("another key returned the same task");
    wp_resp_free(&r3);

    /* No key: always a new task. */
    json_t *a = wp_submit(G, body), *b = wp_submit(G, body);
    assert_string_not_equal(wp_str(a, "id"), wp_str(b, "id"));
    json_decref(a);
    json_decref(b);
    wp_resp_free(&r1);
    wp_resp_free(&r2);
}

WP_TEST(test_idempotency_bad_keys) {
    const char *body = "{\"kind\":\"echo\"}";
    wp_snap snap = wp_snapshot(G);
    wp_resp r;
    /* curl sends an empty header for "Name;" */
    const char *const empty[] = {"Idempotency-Key;", NULL};
    wp_call_h(G, "POST", "/v1/tasks", body, empty, &r);
    wp_assert_error(&r, 400, "invalid_request", NULL);
    wp_resp_free(&r);

    char key[260];
    char hdr[300];
    memset(key, 'k', 201);
    key[201] = '\0';
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
    const char *const long_key[] = {hdr, NULL};
    wp_call_h(G, "POST", "/v1/tasks", body, long_key, &r);
    wp_assert_error(&r, 400, "invalid_request", NULL);
    wp_resp_free(&r);
    wp_assert_unchanged(G, &snap, "bad idempotency keys");

    /* 200 characters is fine, and 1 character too. */
    key[200] = '\0';
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
    wp_call_h(G, "POST", "/v1/tasks", body, long_key, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    const char *const one[] = {"Idempotency-Key: x", NULL};
    wp_call_h(G, "POST", "/v1/tasks", body, one, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
}

typedef struct {
    const wp_server *s;
    pthread_barrier_t *bar;
    long status;
    char id[64];
    char err[256];
} idem_arg;

static void *idem_thread(void *p) {
    idem_arg *a = p;
    const char *const h[] = {"Idempotency-Key: concurrent-key-77", NULL};
    wp_req q = {.method = "POST", .path = "/v1/tasks",
                .body = "{\"kind\":\"echo\",\"input\":{\"race\":true}}", .headers = h};
    pthread_barrier_wait(a->bar);
    wp_resp r;
    wp_http_nc(a->s, &q, &r);
    a->status = r.status;
    if (json_is_object(r.json)) snprintf(a->id, sizeof a->id, "%s", wp_str(r.json, "id"));
    snprintf(a->err, sizeof a->err, "%.200s", r.body ? r.body : r.errbuf);
    wp_resp_free(&r);
    return NULL;
}

WP_TEST(test_idempotency_concurrent) {
    enum { N = 8 };
    wp_snap snap = wp_snapshot(G);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N);
    pthread_t th[N];
    idem_arg args[N];
    memset(args, 0, sizeof args);
    for (int i = 0; i < N; i++) {
        args[i].s = G;
        args[i].bar = &bar;
        pthread_create(&th[i], NULL, idem_thread, &args[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    int created = 0;
    for (int i = 0; i < N; i++) {
        if (args[i].status != 200 && args[i].status != 202)
            fail_msg("concurrent idempotent request %d: status %ld: %s", i, args[i].status, args[i].err);
        if (args[i].status == 202) created++;
        if (strcmp(args[i].id, args[0].id) != 0)
            fail_msg("concurrent repeats returned different tasks: %s vs %s", args[i].id, args[0].id);
    }
    if (created != 1) fail_msg("concurrent repeats: %d answers were 202 (created), want exactly 1", created);
    wp_snap now = wp_snapshot(G);
    if (now.total != snap.total + 1)
        fail_msg("concurrent repeats of one key created %lld tasks, want 1", now.total - snap.total);
}

/* ------------------------------------------------------------------ batch */

WP_TEST(test_batch_ok) {
    wp_resp r;
    wp_call(G, "POST", "/v1/tasks/batch",
            "{\"tasks\":[{\"kind\":\"echo\",\"input\":\"first\"},"
            "{\"kind\":\"sleep\",\"input\":{\"ms\":10},\"priority\":3},"
            "{\"kind\":\"fail\",\"input\":{\"message\":\"third\"},\"max_attempts\":2}]}",
            &r);
    if (r.status != 202) fail_msg("batch: want 202, got %ld: %s", r.status, r.body);
    json_t *tasks = json_object_get(r.json, "tasks");
    assert_true(json_is_object(r.json) && json_object_size(r.json) == 1);
    assert_true(json_is_array(tasks));
    assert_int_equal(json_array_size(tasks), 3);
    static const char *const kinds[] = {"echo", "sleep", "fail"};
    char prev[64] = "";
    for (size_t i = 0; i < 3; i++) {
        json_t *t = json_array_get(tasks, i);
        wp_assert_task_shape(t, true);
        assert_string_equal(wp_str(t, "kind"), kinds[i]);
        if (prev[0] && wp_id_cmp(wp_str(t, "id"), prev) <= 0) fail_msg("batch ids not increasing");
        snprintf(prev, sizeof prev, "%s", wp_str(t, "id"));
    }
    assert_int_equal(wp_int(json_array_get(tasks, 1), "priority"), 3);
    assert_int_equal(wp_int(json_array_get(tasks, 2), "max_attempts"), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tasks, 0), "input")), "first");

    json_t *d0 = wp_wait_terminal(G, wp_str(json_array_get(tasks, 0), "id"), 20);
    json_t *d1 = wp_wait_terminal(G, wp_str(json_array_get(tasks, 1), "id"), 20);
    json_t *d2 = wp_wait_terminal(G, wp_str(json_array_get(tasks, 2), "id"), 20);
    assert_string_equal(wp_str(d0, "state"), "succeeded");
    assert_string_equal(json_string_value(json_object_get(d0, "result")), "first");
    assert_string_equal(wp_str(d1, "state"), "succeeded");
    assert_string_equal(wp_str(d2, "state"), "failed");
    json_decref(d0);
    json_decref(d1);
    json_decref(d2);
    wp_resp_free(&r);
}

static void batch_refused(const char *body, long status, const char *code, const char *names) {
    wp_snap snap = wp_snapshot(G);
    wp_resp r;
    wp_call(G, "POST", "/v1/tasks/batch", body, &r);
    wp_assert_error(&r, status, code, names);
    wp_resp_free(&r);
    wp_assert_unchanged(G, &snap, body);
}

WP_TEST(test_batch_all_or_nothing) {
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"},{\"kind\":\"echo\"},{\"kind\":\"no_such_kind\"}]}", 422,
                  "invalid_task", "tasks[2]");
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"},{\"kind\":\"echo\",\"priority\":5000},{\"kind\":\"echo\"}]}",
                  422, "invalid_task", "tasks[1]");
    batch_refused("{\"tasks\":[{\"kind\":\"echo\",\"bogus\":1}]}", 422, "invalid_task", "tasks[0]");
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"},{\"kind\":\"sleep\",\"input\":{}}]}", 422, "invalid_task",
                  "tasks[1]");
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"},{\"kind\":\"echo\",\"max_attempts\":1.0}]}", 422,
                  "invalid_task", "tasks[1]");
    /* the first bad item is named */
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"},5,{\"kind\":\"nope\"}]}", 422, "invalid_task", "tasks[1]");
    batch_refused("{\"tasks\":[\"echo\"]}", 422, "invalid_task", "tasks[0]");
    batch_refused("{\"tasks\":[null]}", 422, "invalid_task", "tasks[0]");
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"},[]]}", 422, "invalid_task", "tasks[1]");
    batch_refused("{\"tasks\":[]}", 422, "invalid_task", "tasks");
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"}],\"bogus_envelope_field\":1}", 422, "invalid_task",
                  "bogus_envelope_field");
    batch_refused("{\"tasks\":{\"kind\":\"echo\"}}", 422, "invalid_task", "tasks");
    batch_refused("{}", 422, "invalid_task", "tasks");
    batch_refused("[{\"kind\":\"echo\"}]", 400, "invalid_json", NULL);
    batch_refused("{\"tasks\":[{\"kind\":\"echo\"}", 400, "invalid_json", NULL);
}

static char *batch_body(int n) {
    size_t cap = (size_t)n * 40 + 64;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t off = (size_t)snprintf(b, cap, "{\"tasks\":[");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(b + off, cap - off, "%s{\"kind\":\"echo\",\"input\":%d}", i ? "," : "", i);
    snprintf(b + off, cap - off, "]}");
    return b;
}

WP_TEST(test_batch_limits) {
    char *b1001 = batch_body(1001);
    batch_refused(b1001, 422, "invalid_task", "tasks");
    free(b1001);

    char *b1000 = batch_body(1000);
    wp_snap snap = wp_snapshot(G);
    wp_resp r;
    wp_req q = {.method = "POST", .path = "/v1/tasks/batch", .body = b1000, .timeout_ms = 60000};
    wp_http(G, &q, &r);
    if (r.status != 202) fail_msg("batch of 1000: want 202, got %ld: %.300s", r.status, r.body);
    json_t *tasks = json_object_get(r.json, "tasks");
    assert_int_equal(json_array_size(tasks), 1000);
    for (size_t i = 0; i < 1000; i++) {
        json_t *t = json_array_get(tasks, i);
        assert_int_equal(json_integer_value(json_object_get(t, "input")), (json_int_t)i);
    }
    const char *last = wp_str(json_array_get(tasks, 999), "id");
    json_t *d = wp_wait_terminal(G, last, 60);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    wp_snap now = wp_snapshot(G);
    assert_int_equal(now.total, snap.total + 1000);
    assert_string_equal(now.newest, last);
    wp_resp_free(&r);
    free(b1000);

    /* The default list limit is 100 and more exist now. */
    wp_call(G, "GET", "/v1/tasks", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "tasks")), 100);
    assert_true(json_is_string(json_object_get(r.json, "next_cursor")));
    wp_resp_free(&r);
    wp_call(G, "GET", "/v1/tasks?limit=1000", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "tasks")), 1000);
    wp_resp_free(&r);
}

WP_TEST(test_batch_wrong_methods) {
    static const char *const methods[] = {"GET", "DELETE", "PUT"};
    for (int i = 0; i < 3; i++) {
        wp_resp r;
        wp_call(G, methods[i], "/v1/tasks/batch", NULL, &r);
        wp_assert_error(&r, 405, "method_not_allowed", NULL);
        if (!r.has_allow || !strstr(r.allow, "POST"))
            fail_msg("%s /v1/tasks/batch: Allow header must list POST, got '%s'", methods[i],
                     r.has_allow ? r.allow : "(none)");
        wp_resp_free(&r);
    }
}

/* ------------------------------------------------------------------- list */

static json_t *list_page(const wp_server *s, const char *query) {
    char *path = wp_fmt("/v1/tasks%s", query);
    wp_resp r;
    wp_call(s, "GET", path, NULL, &r);
    if (r.status != 200) fail_msg("GET %s: %ld %s", path, r.status, r.body);
    json_t *j = json_incref(r.json);
    wp_resp_free(&r);
    free(path);
    return j;
}

static void expect_ids(const json_t *items, char ids[][64], const int *idx, int n, const char *what) {
    if ((int)json_array_size(items) != n) {
        char *d = wp_dump(items);
        fail_msg("%s: %zu items, want %d: %.800s", what, json_array_size(items), n, d);
    }
    for (int i = 0; i < n; i++) {
        const char *got = wp_str(json_array_get(items, (size_t)i), "id");
        if (strcmp(got, ids[idx[i]]) != 0)
            fail_msg("%s: item %d is %s, want %s", what, i, got, ids[idx[i]]);
    }
}

WP_TEST(test_list_filters_and_paging) {
    wp_server *s = wp_server_start_args("--workers", "1", "--enable-test-kinds", "--grace-ms", "500", NULL);
    char ids[12][64];
    /* 0-4 echo succeeded, 5-6 fail failed, 7 sleep running, 8-11 echo pending, 9 canceled */
    for (int i = 0; i < 5; i++) {
        json_t *t = wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", i);
        snprintf(ids[i], 64, "%s", wp_str(t, "id"));
        json_decref(wp_wait_terminal(s, ids[i], 20));
        json_decref(t);
    }
    for (int i = 5; i < 7; i++) {
        json_t *t = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"x\"}}");
        snprintf(ids[i], 64, "%s", wp_str(t, "id"));
        json_decref(wp_wait_terminal(s, ids[i], 20));
        json_decref(t);
    }
    json_t *t = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":8000}}");
    snprintf(ids[7], 64, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_state(s, ids[7], "running", 10));
    for (int i = 8; i < 12; i++) {
        t = wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", i);
        snprintf(ids[i], 64, "%s", wp_str(t, "id"));
        json_decref(t);
    }
    char *path = wp_fmt("/v1/tasks/%s", ids[9]);
    wp_resp r;
    wp_call(s, "DELETE", path, NULL, &r);
    assert_int_equal(r.status, 200);
    wp_resp_free(&r);
    free(path);

    static const int all_idx[] = {11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    json_t *all = wp_list_all(s, "", 1000);
    expect_ids(all, ids, all_idx, 12, "full list newest first");
    json_decref(all);
    static const int limits[] = {1, 2, 3, 5, 11, 12, 13, 100};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        all = wp_list_all(s, "", limits[i]);
        char what[64];
        snprintf(what, sizeof what, "paging with limit=%d", limits[i]);
        expect_ids(all, ids, all_idx, 12, what);
        json_decref(all);
    }
    /* next_cursor is non-null exactly when more items exist. */
    json_t *p = list_page(s, "?limit=12");
    assert_int_equal(json_array_size(json_object_get(p, "tasks")), 12);
    if (!json_is_null(json_object_get(p, "next_cursor")))
        fail_msg("limit=12 with exactly 12 tasks: next_cursor must be null");
    json_decref(p);
    p = list_page(s, "?limit=11");
    assert_true(json_is_string(json_object_get(p, "next_cursor")));
    json_decref(p);
    p = list_page(s, "");
    assert_int_equal(json_array_size(json_object_get(p, "tasks")), 12);
    assert_true(json_is_null(json_object_get(p, "next_cursor")));
    json_decref(p);

    /* Filters. */
    static const int succ[] = {4, 3, 2, 1, 0}, failed[] = {6, 5}, running[] = {7}, pending[] = {11, 10, 8},
                     canceled[] = {9}, echo[] = {11, 10, 9, 8, 4, 3, 2, 1, 0};
    static const struct {
        const char *query;
        int page;           /* page size: 1 and 2 walk the cursors too */
        const int *idx;
        int n;
    } filters[] = {
        {"state=succeeded", 2, succ, 5},          {"state=failed", 100, failed, 2},
        {"state=running", 100, running, 1},       {"state=pending", 1, pending, 3},
        {"state=canceled", 100, canceled, 1},     {"kind=echo", 2, echo, 9},
        {"kind=fail", 100, failed, 2},            {"state=pending&kind=echo", 2, pending, 3},
        {"state=succeeded&kind=fail", 100, NULL, 0},
    };
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        all = wp_list_all(s, filters[i].query, filters[i].page);
        expect_ids(all, ids, filters[i].idx, filters[i].n, filters[i].query);
        json_decref(all);
    }
    /* An unknown kind is just an empty list. */
    p = list_page(s, "?kind=no_such_kind");
    assert_int_equal(json_array_size(json_object_get(p, "tasks")), 0);
    assert_true(json_is_null(json_object_get(p, "next_cursor")));
    json_decref(p);
    /* Empty values mean no filter. */
    p = list_page(s, "?state=&kind=&limit=&cursor=");
    expect_ids(json_object_get(p, "tasks"), ids, all_idx, 12, "empty query values");
    assert_true(json_is_null(json_object_get(p, "next_cursor")));
    json_decref(p);

    /* Paging stays exact while new tasks arrive in between pages. */
    p = list_page(s, "?limit=4");
    const char *cur = json_string_value(json_object_get(p, "next_cursor"));
    assert_non_null(cur);
    json_decref(wp_submit(s, "{\"kind\":\"echo\"}"));
    char *esc = curl_easy_escape(NULL, cur, 0);
    char *q = wp_fmt("?limit=100&cursor=%s", esc);
    curl_free(esc);
    json_t *p2 = list_page(s, q);
    free(q);
    expect_ids(json_object_get(p2, "tasks"), ids, all_idx + 4, 8, "second page after a new submission");
    json_decref(p2);
    json_decref(p);
}

/* ----------------------------------------------------------------- cancel */

typedef struct {
    const wp_server *s;
    const char *id;
    long status;
    long elapsed_ms;
    char state[32];
} waiter_arg;

static void *waiter_thread(void *p) {
    waiter_arg *a = p;
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=10", a->id);
    wp_req q = {.method = "GET", .path = path, .timeout_ms = 30000};
    wp_resp r;
    wp_http_nc(a->s, &q, &r);
    a->status = r.status;
    a->elapsed_ms = r.elapsed_ms;
    snprintf(a->state, sizeof a->state, "%s", json_is_object(r.json) ? wp_str(r.json, "state") : "");
    wp_resp_free(&r);
    return NULL;
}

WP_TEST(test_cancel) {
    wp_server *s = wp_server_start_args("--workers", "1", "--enable-test-kinds", "--grace-ms", "500", NULL);
    json_t *blk = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":2500}}");
    const char *bid = wp_str(blk, "id");
    json_decref(wp_wait_state(s, bid, "running", 10));
    json_t *e = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"never runs\"}");
    const char *eid = wp_str(e, "id");

    /* A waiter parked on the pending task is woken by its cancellation. */
    waiter_arg wa = {.s = s, .id = eid};
    pthread_t th;
    pthread_create(&th, NULL, waiter_thread, &wa);
    wp_sleep_ms(300);

    char *epath = wp_fmt("/v1/tasks/%s", eid), *bpath = wp_fmt("/v1/tasks/%s", bid);
    wp_resp r;
    wp_call(s, "DELETE", epath, NULL, &r);
    if (r.status != 200) fail_msg("cancel of a pending task: want 200, got %ld: %s", r.status, r.body);
    wp_assert_task_shape(r.json, true);
    assert_string_equal(wp_str(r.json, "state"), "canceled");
    assert_string_equal(wp_str(r.json, "id"), eid);
    wp_resp_free(&r);
    pthread_join(th, NULL);
    assert_int_equal(wa.status, 200);
    assert_string_equal(wa.state, "canceled");
    if (wa.elapsed_ms > 5000)
        fail_msg("GET ?wait=10 on a task canceled after 0.3 s answered only after %ld ms", wa.elapsed_ms);

    json_t *g = wp_get_task(s, eid);
    assert_string_equal(wp_str(g, "state"), "canceled");
    json_decref(g);

    /* running → 409 */
    wp_call(s, "DELETE", bpath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", NULL);
    wp_resp_free(&r);
    /* canceled (terminal) → 409 */
    wp_call(s, "DELETE", epath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", NULL);
    wp_resp_free(&r);
    /* unknown → 404 */
    wp_call(s, "DELETE", "/v1/tasks/987654321", NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);

    json_t *bd = wp_wait_terminal(s, bid, 20);
    assert_string_equal(wp_str(bd, "state"), "succeeded");
    json_decref(bd);
    /* succeeded → 409 */
    wp_call(s, "DELETE", bpath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", NULL);
    wp_resp_free(&r);
    /* failed → 409 */
    json_t *f = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"m\"}}");
    json_decref(wp_wait_terminal(s, wp_str(f, "id"), 20));
    char *fpath = wp_fmt("/v1/tasks/%s", wp_str(f, "id"));
    wp_call(s, "DELETE", fpath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", NULL);
    wp_resp_free(&r);

    /* The canceled task never ran. */
    wp_sleep_ms(200);
    g = wp_get_task(s, eid);
    assert_string_equal(wp_str(g, "state"), "canceled");
    assert_int_equal(wp_int(g, "attempts"), 0);
    assert_true(json_is_null(json_object_get(g, "started_at")));
    assert_true(json_is_null(json_object_get(g, "result")));
    json_decref(g);
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "canceled"), 1);
    assert_int_equal(wp_stats_count(st, "succeeded"), 1);
    assert_int_equal(wp_stats_count(st, "failed"), 1);
    json_decref(st);
    free(epath);
    free(bpath);
    free(fpath);
    json_decref(f);
    json_decref(e);
    json_decref(blk);
}

/* ------------------------------------------------------------------- wait */

WP_TEST(test_wait_really_waits) {
    long long t0 = wp_now_ms();
    json_t *t = wp_submit(G, "{\"kind\":\"sleep\",\"input\":{\"ms\":300}}");
    char *path = wp_fmt("/v1/tasks/%s?wait=5", wp_str(t, "id"));
    wp_resp r;
    wp_req q = {.method = "GET", .path = path, .timeout_ms = 20000};
    wp_http(G, &q, &r);
    long long total = wp_now_ms() - t0;
    assert_int_equal(r.status, 200);
    if (strcmp(wp_str(r.json, "state"), "succeeded") != 0)
        fail_msg("wait=5 on a 300 ms task answered '%s' after %ld ms; it must hold until the task finishes",
                 wp_str(r.json, "state"), r.elapsed_ms);
    if (total < 280) fail_msg("a 300 ms task reported succeeded %lld ms after submission", total);
    if (r.elapsed_ms < 150) fail_msg("wait=5 answered after only %ld ms", r.elapsed_ms);
    if (r.elapsed_ms > 4500)
        fail_msg("wait=5 answered %ld ms later: it should answer as soon as the task finished", r.elapsed_ms);
    wp_resp_free(&r);
    free(path);

    /* A terminal task answers at once. */
    path = wp_fmt("/v1/tasks/%s?wait=5", wp_str(t, "id"));
    q.path = path;
    wp_http(G, &q, &r);
    assert_int_equal(r.status, 200);
    if (r.elapsed_ms > 1500) fail_msg("wait=5 on a finished task took %ld ms", r.elapsed_ms);
    wp_resp_free(&r);
    free(path);
    json_decref(t);

    /* wait=1 on a 3 s task answers with a non-terminal state after about 1 s. */
    t = wp_submit(G, "{\"kind\":\"sleep\",\"input\":{\"ms\":3000}}");
    path = wp_fmt("/v1/tasks/%s?wait=1", wp_str(t, "id"));
    q.path = path;
    wp_http(G, &q, &r);
    assert_int_equal(r.status, 200);
    wp_assert_task_shape(r.json, true);
    const char *st = wp_str(r.json, "state");
    if (strcmp(st, "running") != 0 && strcmp(st, "pending") != 0)
        fail_msg("wait=1 on a 3 s task: state '%s'", st);
    if (r.elapsed_ms < 900 || r.elapsed_ms > 2600)
        fail_msg("wait=1 on a 3 s task answered after %ld ms, want about 1000", r.elapsed_ms);
    wp_resp_free(&r);
    free(path);

    /* wait=0 and no wait answer at once. */
    path = wp_fmt("/v1/tasks/%s?wait=0", wp_str(t, "id"));
    q.path = path;
    wp_http(G, &q, &r);
    assert_int_equal(r.status, 200);
    if (r.elapsed_ms > 800) fail_msg("wait=0 took %ld ms", r.elapsed_ms);
    assert_false(wp_is_terminal(wp_str(r.json, "state")));
    wp_resp_free(&r);
    free(path);
    json_t *d = wp_wait_terminal(G, wp_str(t, "id"), 20);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(t);
}

/* Several waiters on one task all get the result. */
typedef struct {
    const wp_server *s;
    char id[64];
    long status;
    char state[32];
} multi_arg;

static void *multi_waiter(void *p) {
    multi_arg *a = p;
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=10", a->id);
    wp_req q = {.method = "GET", .path = path, .timeout_ms = 30000};
    wp_resp r;
    wp_http_nc(a->s, &q, &r);
    a->status = r.status;
    snprintf(a->state, sizeof a->state, "%s", json_is_object(r.json) ? wp_str(r.json, "state") : "");
    wp_resp_free(&r);
    return NULL;
}

WP_TEST(test_wait_many_waiters) {
    enum { N = 6 };
    json_t *t = wp_submit(G, "{\"kind\":\"sleep\",\"input\":{\"ms\":400}}");
    pthread_t th[N];
    multi_arg a[N];
    long long t0 = wp_now_ms();
    for (int i = 0; i < N; i++) {
        a[i].s = G;
        snprintf(a[i].id, sizeof a[i].id, "%s", wp_str(t, "id"));
        pthread_create(&th[i], NULL, multi_waiter, &a[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    long long el = wp_now_ms() - t0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(a[i].status, 200);
        assert_string_equal(a[i].state, "succeeded");
    }
    if (el > 6000) fail_msg("%d waiters on a 400 ms task took %lld ms", N, el);
    json_decref(t);
}

/* An idle worker picks a new task up at once (wake-up channel, not polling). */
static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

WP_TEST(test_idle_worker_starts_promptly) {
    enum { N = 11 };
    long long lat[N];
    for (int i = 0; i < N; i++) {
        wp_sleep_ms(60); /* let the workers go idle and block */
        long long t0 = wp_now_ms();
        json_t *t = wp_submitf(G, "{\"kind\":\"echo\",\"input\":%d}", i);
        char *path = wp_fmt("/v1/tasks/%s?wait=5", wp_str(t, "id"));
        wp_resp r;
        wp_call(G, "GET", path, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(wp_str(r.json, "state"), "succeeded");
        lat[i] = wp_now_ms() - t0;
        wp_resp_free(&r);
        free(path);
        json_decref(t);
    }
    qsort(lat, N, sizeof *lat, cmp_ll);
    print_message("submit-to-result latency on an idle service: median %lld ms, max %lld ms\n", lat[N / 2],
                  lat[N - 1]);
    if (lat[N / 2] > 200)
        fail_msg("an echo task on an idle service takes %lld ms (median) from submission to result: "
                 "idle workers are not woken by a submission",
                 lat[N / 2]);
}

/* ------------------------------------------------------------------ stats */

WP_TEST(test_stats) {
    wp_server *s = wp_server_start_args("--workers", "2", "--enable-test-kinds", "--grace-ms", "500", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_total(st), 0);
    json_t *ws = json_object_get(st, "workers");
    assert_int_equal(json_array_size(ws), 2);
    pid_t p0 = (pid_t)wp_int(json_array_get(ws, 0), "pid"), p1 = (pid_t)wp_int(json_array_get(ws, 1), "pid");
    assert_true(p0 != p1);
    if (wp_ppid_of(p0) != s->pid || wp_ppid_of(p1) != s->pid)
        fail_msg("worker pids %d %d must be children of the supervisor %d", (int)p0, (int)p1, (int)s->pid);
    size_t i;
    json_t *w;
    json_array_foreach(ws, i, w) {
        assert_string_equal(wp_str(w, "state"), "idle");
        assert_true(json_is_null(json_object_get(w, "task_id")));
        assert_int_equal(wp_int(w, "tasks_done"), 0);
    }
    bool have_echo = false, have_sleep = false, have_fail = false;
    json_t *k;
    json_array_foreach(json_object_get(st, "kinds"), i, k) {
        const char *n = wp_str(k, "name");
        have_echo |= strcmp(n, "echo") == 0;
        have_sleep |= strcmp(n, "sleep") == 0;
        have_fail |= strcmp(n, "fail") == 0;
    }
    if (!have_echo || !have_sleep || !have_fail) fail_msg("stats.kinds must list echo, sleep and fail");
    json_decref(st);

    char ids[5][64];
    for (int j = 0; j < 5; j++) {
        json_t *t = j < 3 ? wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", j)
                          : wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"no\"}}");
        snprintf(ids[j], 64, "%s", wp_str(t, "id"));
        json_decref(t);
    }
    for (int j = 0; j < 5; j++) json_decref(wp_wait_terminal(s, ids[j], 20));
    long long done = -1;
    long long deadline = wp_now_ms() + 5000;
    do {
        st = wp_stats(s);
        done = 0;
        json_array_foreach(json_object_get(st, "workers"), i, w) done += wp_int(w, "tasks_done");
        if (done == 5 || wp_now_ms() > deadline) break;
        json_decref(st);
        wp_sleep_ms(50);
    } while (1);
    assert_int_equal(wp_stats_count(st, "succeeded"), 3);
    assert_int_equal(wp_stats_count(st, "failed"), 2);
    assert_int_equal(wp_stats_count(st, "pending"), 0);
    assert_int_equal(wp_stats_count(st, "running"), 0);
    assert_int_equal(wp_stats_count(st, "canceled"), 0);
    if (done != 5) fail_msg("sum of workers[].tasks_done is %lld after 5 runs (3 ok, 2 failed)", done);
    json_decref(st);

    json_t *t = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1500}}");
    json_decref(wp_wait_state(s, wp_str(t, "id"), "running", 10));
    pid_t wpid = wp_worker_pid_for_task(s, wp_str(t, "id"), 5);
    if (!wpid) fail_msg("no worker in stats shows task_id %s while it runs", wp_str(t, "id"));
    st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "running"), 1);
    json_array_foreach(json_object_get(st, "workers"), i, w) {
        if (strcmp(wp_str(w, "task_id"), wp_str(t, "id")) == 0) assert_string_equal(wp_str(w, "state"), "busy");
    }
    json_decref(st);
    json_decref(wp_wait_terminal(s, wp_str(t, "id"), 20));
    json_decref(t);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_healthz_readyz, wp_test_teardown),
        cmocka_unit_test_teardown(test_echo_roundtrip, wp_test_teardown),
        cmocka_unit_test_teardown(test_echo_default_input_null, wp_test_teardown),
        cmocka_unit_test_teardown(test_sleep_roundtrip, wp_test_teardown),
        cmocka_unit_test_teardown(test_fail_roundtrip, wp_test_teardown),
        cmocka_unit_test_teardown(test_explicit_fields, wp_test_teardown),
        cmocka_unit_test_teardown(test_ids_increase_in_submission_order, wp_test_teardown),
        cmocka_unit_test_teardown(test_task_object_shape_exact, wp_test_teardown),
        cmocka_unit_test_teardown(test_priorities, wp_test_teardown),
        cmocka_unit_test_teardown(test_idempotency_same_key, wp_test_teardown),
        cmocka_unit_test_teardown(test_idempotency_bad_keys, wp_test_teardown),
        cmocka_unit_test_teardown(test_idempotency_concurrent, wp_test_teardown),
        cmocka_unit_test_teardown(test_batch_ok, wp_test_teardown),
        cmocka_unit_test_teardown(test_batch_all_or_nothing, wp_test_teardown),
        cmocka_unit_test_teardown(test_batch_limits, wp_test_teardown),
        cmocka_unit_test_teardown(test_batch_wrong_methods, wp_test_teardown),
        cmocka_unit_test_teardown(test_list_filters_and_paging, wp_test_teardown),
        cmocka_unit_test_teardown(test_cancel, wp_test_teardown),
        cmocka_unit_test_teardown(test_wait_really_waits, wp_test_teardown),
        cmocka_unit_test_teardown(test_wait_many_waiters, wp_test_teardown),
        cmocka_unit_test_teardown(test_idle_worker_starts_promptly, wp_test_teardown),
        cmocka_unit_test_teardown(test_stats, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.http_tasks", tests, group_setup, group_teardown);
}
