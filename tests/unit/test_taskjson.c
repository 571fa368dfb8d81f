/* test_taskjson.c -- the API's JSON shapes (api/taskjson.c): submissions in, task
 * objects out, ids and list cursors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "api/internal.h"
#include "common/clock.h"

/* ---------------------------------------------------------------- a test validator */

static int g_validate_calls;
static json_t *g_last_input;        /* a copy of the last input the validator saw */

/* echo: anything; sleep: {"ms": integer >= 0}; any other kind is unknown */
static int
test_validate(void *arg, const char *kind, const json_t *input, char *err, size_t errlen)
{
    assert_ptr_equal(arg, &g_validate_calls);
    g_validate_calls++;
    json_decref(g_last_input);
    g_last_input = json_deep_copy(input);
    if (strcmp(kind, "echo") == 0)
        return 0;
    if (strcmp(kind, "sleep") == 0) {
        const json_t *ms = json_is_object(input) ? json_object_get(input, "ms") : NULL;
        if (ms == NULL || !json_is_integer(ms) || json_integer_value(ms) < 0) {
            snprintf(err, errlen, "ms: must be an integer >= 0");
            return 1;
        }
        return 0;
    }
    return -1;
}

static struct api_config g_cfg;
static struct api_ctx g_ctx;

static int
setup(void **state)
{
    (void)state;
    memset(&g_cfg, 0, sizeof g_cfg);
    g_cfg.default_timeout_ms = 123456;
    g_cfg.hooks.arg = &g_validate_calls;
    g_cfg.hooks.validate = test_validate;
    memset(&g_ctx, 0, sizeof g_ctx);
    g_ctx.cfg = &g_cfg;
    g_validate_calls = 0;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    json_decref(g_last_input);
    g_last_input = NULL;
    return 0;
}

static json_t *
load(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    if (v == NULL)
        fail_msg("bad test JSON %s: %s", text, e.text);
    return v;
}

/* Parses text as a submission, expecting success; frees nothing: see done(). */
static store_new_task g_nt;
static char *g_input;
static char g_err[512];

static int
submit(const char *text, const char *where)
{
    json_t *obj = load(text);
    memset(&g_nt, 0x5a, sizeof g_nt);
    g_input = (char *)0x1;
    g_err[0] = '\0';
    int rc = taskjson_parse_submission(&g_ctx, obj, where, &g_nt, &g_input, g_err,
                                       sizeof g_err);
    /* nt->kind is borrowed from obj: copy what we check before letting obj go */
    static char kind[128], cb[2100];
    if (rc == 0) {
        snprintf(kind, sizeof kind, "%s", g_nt.kind);
        g_nt.kind = kind;
        if (g_nt.callback_url != NULL) {
            snprintf(cb, sizeof cb, "%s", g_nt.callback_url);
            g_nt.callback_url = cb;
        }
    }
    json_decref(obj);
    return rc;
}

static void
done(void)
{
    free(g_input);
    g_input = NULL;
}

static void
expect_ok(const char *text)
{
    int rc = submit(text, "");
    if (rc != 0)
        fail_msg("%s: refused: %s", text, g_err);
    assert_non_null(g_input);
    assert_ptr_equal(g_nt.input, g_input);
}

/* Expects a refusal whose message starts with `prefix` (and contains `also`, if any). */
static void
expect_err(const char *text, const char *where, const char *prefix, const char *also)
{
    int rc = submit(text, where);
    if (rc != -1 || strncmp(g_err, prefix, strlen(prefix)) != 0 ||
        (also != NULL && strstr(g_err, also) == NULL))
        fail_msg("%s: want -1 with '%s...'%s%s; got %d '%s'", text, prefix,
                 also ? " containing " : "", also ? also : "", rc, g_err);
    assert_null(g_input);
}

/* ---------------------------------------------------------------- parse_submission */

static void
test_submission_defaults(void **state)
{
    (void)state;
    expect_ok("{\"kind\": \"echo\"}");
    assert_string_equal(g_nt.kind, "echo");
    assert_string_equal(g_nt.input, "null");
    assert_int_equal(g_nt.priority, 0);
    assert_int_equal(g_nt.max_attempts, 1);
    assert_int_equal(g_nt.timeout_ms, 123456);          /* from the config */
    assert_null(g_nt.idem_key);
    assert_int_equal(g_validate_calls, 1);
    assert_true(json_is_null(g_last_input));            /* the validator saw null */
    done();
}

static void
test_submission_all_fields(void **state)
{
    (void)state;
    expect_ok("{\"kind\": \"sleep\", \"input\": {\"ms\": 5, \"x\": [1, \"a\", null]},"
              " \"priority\": -3, \"max_attempts\": 7, \"timeout_ms\": 2500}");
    assert_string_equal(g_nt.kind, "sleep");
    assert_string_equal(g_nt.input, "{\"ms\":5,\"x\":[1,\"a\",null]}");
    assert_int_equal(g_nt.priority, -3);
    assert_int_equal(g_nt.max_attempts, 7);
    assert_int_equal(g_nt.timeout_ms, 2500);
    json_t *want = load("{\"ms\": 5, \"x\": [1, \"a\", null]}");
    assert_true(json_equal(g_last_input, want));
    json_decref(want);
    done();

    /* any JSON is an input */
    const char *inputs[][2] = {
        {"{\"kind\":\"echo\",\"input\":\"hi\"}", "\"hi\""},
        {"{\"kind\":\"echo\",\"input\":42}", "42"},
        {"{\"kind\":\"echo\",\"input\":[true,false]}", "[true,false]"},
        {"{\"kind\":\"echo\",\"input\":{}}", "{}"},
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        expect_ok(inputs[i][0]);
        assert_string_equal(g_nt.input, inputs[i][1]);
        done();
    }
}

static void
test_submission_nulls_take_defaults(void **state)
{
    (void)state;
    expect_ok("{\"kind\": \"echo\", \"input\": null, \"priority\": null,"
              " \"max_attempts\": null, \"timeout_ms\": null}");
    assert_string_equal(g_nt.input, "null");
    assert_int_equal(g_nt.priority, 0);
    assert_int_equal(g_nt.max_attempts, 1);
    assert_int_equal(g_nt.timeout_ms, 123456);
    done();
}

static void
test_submission_integers_must_be_integers(void **state)
{
    (void)state;
    const char *fields[] = {"priority", "max_attempts", "timeout_ms"};
    const char *values[] = {"1.0", "\"5\"", "true", "[1]", "{}"};
    for (size_t f = 0; f < 3; f++) {
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            char text[256];
            snprintf(text, sizeof text, "{\"kind\": \"echo\", \"%s\": %s}", fields[f],
                     values[v]);
            char prefix[64];
            snprintf(prefix, sizeof prefix, "%s:", fields[f]);
            expect_err(text, "", prefix, "integer");
        }
    }
}

static void
test_submission_ranges(void **state)
{
    (void)state;
    struct { const char *field; long long lo, hi; } r[] = {
        {"priority", -1000, 1000}, {"max_attempts", 1, 100}, {"timeout_ms", 1, 86400000},
    };
    for (size_t i = 0; i < 3; i++) {
        long long ok[] = {r[i].lo, r[i].hi}, bad[] = {r[i].lo - 1, r[i].hi + 1};
        for (int k = 0; k < 2; k++) {
            char text[256];
            snprintf(text, sizeof text, "{\"kind\": \"echo\", \"%s\": %lld}", r[i].field, ok[k]);
            expect_ok(text);
            long long got = i == 0 ? g_nt.priority : i == 1 ? g_nt.max_attempts
                                                            : g_nt.timeout_ms;
            assert_int_equal(got, ok[k]);
            done();
            snprintf(text, sizeof text, "{\"kind\": \"echo\", \"%s\": %lld}", r[i].field, bad[k]);
            char prefix[64];
            snprintf(prefix, sizeof prefix, "%s:", r[i].field);
            expect_err(text, "", prefix, NULL);
        }
    }
    /* far out of int range must not wrap into range */
    expect_err("{\"kind\": \"echo\", \"priority\": 4294967296}", "", "priority:", NULL);
    expect_err("{\"kind\": \"echo\", \"max_attempts\": -4294967295}", "", "max_attempts:",
               NULL);
}

static void
test_submission_unknown_field(void **state)
{
    (void)state;
    expect_err("{\"kind\": \"echo\", \"prio\": 1}", "", "prio:", "unknown");
    expect_err("{\"kind\": \"echo\", \"Kind\": \"echo\"}", "", "Kind:", "unknown");
    expect_err("{\"kind\": \"echo\", \"idempotency_key\": \"x\"}", "", "idempotency_key:",
               "unknown");
    assert_int_equal(g_validate_calls, 0);
}

static void
test_submission_kind(void **state)
{
    (void)state;
    expect_err("{}", "", "kind:", NULL);
    expect_err("{\"input\": 1}", "", "kind:", NULL);
    expect_err("{\"kind\": null}", "", "kind:", NULL);
    expect_err("{\"kind\": 42}", "", "kind:", "string");
    expect_err("{\"kind\": [\"echo\"]}", "", "kind:", "string");
    expect_err("{\"kind\": \"nope\"}", "", "kind:", "nope");
    expect_err("{\"kind\": \"\"}", "", "kind:", NULL);
}

static void
test_submission_validator_refusal(void **state)
{
    (void)state;
    expect_err("{\"kind\": \"sleep\"}", "", "input: ", "ms: must be an integer >= 0");
    expect_err("{\"kind\": \"sleep\", \"input\": {\"ms\": -1}}", "", "input: ", "ms");
    expect_err("{\"kind\": \"sleep\", \"input\": null}", "", "input: ", NULL);
    assert_int_equal(g_validate_calls, 3);
}

static void
test_submission_where_prefix(void **state)
{
    (void)state;
    const char *w = "tasks[3].";
    expect_err("{\"kind\": \"echo\", \"bogus\": 1}", w, "tasks[3].bogus", NULL);
    expect_err("{}", w, "tasks[3].kind", NULL);
    expect_err("{\"kind\": 1}", w, "tasks[3].kind", NULL);
    expect_err("{\"kind\": \"nope\"}", w, "tasks[3].kind", "nope");
    expect_err("{\"kind\": \"echo\", \"priority\": 1.5}", w, "tasks[3].priority", NULL);
    expect_err("{\"kind\": \"echo\", \"max_attempts\": 0}", w, "tasks[3].max_attempts", NULL);
    expect_err("{\"kind\": \"echo\", \"timeout_ms\": 0}", w, "tasks[3].timeout_ms", NULL);
    expect_err("{\"kind\": \"sleep\", \"input\": {}}", w, "tasks[3].input: ", NULL);
}

static void
test_submission_no_validator(void **state)
{
    (void)state;
    g_cfg.hooks.validate = NULL;    /* no hook: every kind is taken as it is */
    expect_ok("{\"kind\": \"anything\", \"input\": [1]}");
    assert_string_equal(g_nt.kind, "anything");
    assert_string_equal(g_nt.input, "[1]");
    done();
}

/* issue 13: run_at (RFC 3339) or delay_ms, not both, at most a year ahead; the past
 * runs now */
static void
test_submission_schedule(void **state)
{
    (void)state;
    int64_t now = clock_now_ms();
    expect_ok("{\"kind\": \"echo\"}");
    assert_int_equal(g_nt.run_after_ms, 0);
    done();
    expect_ok("{\"kind\": \"echo\", \"delay_ms\": 60000}");
    assert_true(g_nt.run_after_ms >= now + 60000 && g_nt.run_after_ms < now + 70000);
    done();
    expect_ok("{\"kind\": \"echo\", \"delay_ms\": 0, \"run_at\": null}");
    assert_int_equal(g_nt.run_after_ms, 0);
    done();
    /* the past runs now */
    expect_ok("{\"kind\": \"echo\", \"run_at\": \"2001-02-03T04:05:06Z\"}");
    assert_int_equal(g_nt.run_after_ms, 0);
    done();
    /* a minute ahead, in a zone */
    char text[256], when[64];
    time_t later = (time_t)((now + 120000) / 1000);
    struct tm tm;
    gmtime_r(&later, &tm);
    tm.tm_hour = (tm.tm_hour + 2) % 24;     /* the same instant at +02:00 */
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text, sizeof text, "{\"kind\": \"echo\", \"run_at\": \"%s.250+02:00\"}", when);
    if (tm.tm_hour >= 2) {      /* no day change in the shift: the text is exact */
        expect_ok(text);
        assert_int_equal(g_nt.run_after_ms, (int64_t)later * 1000 + 250);
        done();
    }
    gmtime_r(&later, &tm);
    tm.tm_hour = (tm.tm_hour + 24 - 5) % 24;    /* the same instant at -05:00 */
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text, sizeof text, "{\"kind\": \"echo\", \"run_at\": \"%s.7-05:00\"}", when);
    if (tm.tm_hour < 19) {
        expect_ok(text);
        assert_int_equal(g_nt.run_after_ms, (int64_t)later * 1000 + 700);
        done();
    }
    expect_err("{\"kind\": \"echo\", \"run_at\": \"2030-01-02T03:04:05Z\", \"delay_ms\": 5}",
               "", "run_at, delay_ms: give one", NULL);
    expect_err("{\"kind\": \"echo\", \"delay_ms\": -1}", "", "delay_ms:", NULL);
    expect_err("{\"kind\": \"echo\", \"delay_ms\": 1.5}", "", "delay_ms:", NULL);
    expect_err("{\"kind\": \"echo\", \"delay_ms\": \"5\"}", "", "delay_ms:", NULL);
    expect_err("{\"kind\": \"echo\", \"delay_ms\": 31708800001}", "", "delay_ms:", NULL);
    expect_err("{\"kind\": \"echo\", \"run_at\": \"2100-01-02T03:04:05Z\"}", "",
               "run_at: more than a year", NULL);
    const char *bad[] = {
        "tomorrow", "2030-01-02", "2030-01-02T03:04:05", "2030-01-02 03:04:05Z",
        "2030-13-02T03:04:05Z", "2030-02-30T03:04:05Z", "2029-02-29T00:00:00Z",
        "2030-01-02T24:04:05Z", "2030-01-02T03:04:05.Z", "2030-01-02T03:04:05+1:00",
        "2030-01-02T03:04:05Zjunk", "1969-12-31T23:59:59Z", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "{\"kind\": \"echo\", \"run_at\": \"%s\"}", bad[i]);
        expect_err(text, "", "run_at: must be an RFC 3339 time", NULL);
    }
    expect_err("{\"kind\": \"echo\", \"run_at\": 5}", "", "run_at: must be", NULL);
    expect_err("{\"kind\": \"echo\", \"delay_ms\": -5}", "tasks[3].", "tasks[3].delay_ms", NULL);
}

/* ---------------------------------------------------------------- from_store */

static const char *const FULL_KEYS[] = {
    "id", "kind", "state", "priority", "input", "result", "error", "attempts",
    "max_attempts", "timeout_ms", "created_at", "started_at", "finished_at",
    "run_after",    /* beyond the list: when a waiting retry may start, or null */
    "previous_error",   /* issue 13: the error before a retry from the dead, or null */
};

static void
assert_keys(const json_t *o, int brief)
{
    size_t want = 0;
    for (size_t i = 0; i < sizeof FULL_KEYS / sizeof FULL_KEYS[0]; i++) {
        int optional = strcmp(FULL_KEYS[i], "input") == 0 || strcmp(FULL_KEYS[i], "result") == 0;
        if (brief && optional) {
            assert_null(json_object_get(o, FULL_KEYS[i]));
            continue;
        }
        if (json_object_get(o, FULL_KEYS[i]) == NULL)
            fail_msg("missing key %s", FULL_KEYS[i]);
        want++;
    }
    assert_int_equal(json_object_size(o), want);
}

static void
test_from_store_full(void **state)
{
    (void)state;
    store_task t = {
        .id = 42, .kind = "echo", .state = TASK_SUCCEEDED, .priority = -5,
        .input = "{\"a\":1}", .result = "[1,\"two\",null]", .attempts = 2,
        .max_attempts = 3, .timeout_ms = 86400000, .created_at_ms = 1767323045678,
        .started_at_ms = 1767323046000, .finished_at_ms = 1767323046001,
        .run_after_ms = 99,
    };
    json_t *o = taskjson_from_store(&t, 0);
    assert_non_null(o);
    assert_keys(o, 0);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "42");
    assert_string_equal(json_string_value(json_object_get(o, "kind")), "echo");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "succeeded");
    assert_true(json_is_integer(json_object_get(o, "priority")));
    assert_int_equal(json_integer_value(json_object_get(o, "priority")), -5);
    json_t *want_in = load("{\"a\":1}"), *want_res = load("[1,\"two\",null]");
    assert_true(json_equal(json_object_get(o, "input"), want_in));
    assert_true(json_equal(json_object_get(o, "result"), want_res));
    json_decref(want_in);
    json_decref(want_res);
    assert_true(json_is_null(json_object_get(o, "error")));
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "max_attempts")), 3);
    assert_true(json_is_integer(json_object_get(o, "timeout_ms")));
    assert_int_equal(json_integer_value(json_object_get(o, "timeout_ms")), 86400000);
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "2026-01-02T03:04:05.678Z");
    assert_string_equal(json_string_value(json_object_get(o, "started_at")),
                        "2026-01-02T03:04:06.000Z");
    assert_string_equal(json_string_value(json_object_get(o, "finished_at")),
                        "2026-01-02T03:04:06.001Z");
    assert_true(json_is_null(json_object_get(o, "run_after")));    /* not pending */
    json_decref(o);
}

static void
test_from_store_pending_and_error(void **state)
{
    (void)state;
    store_task t = {
        .id = INT64_MAX, .kind = "sleep", .state = TASK_PENDING, .input = "null",
        .result = NULL, .max_attempts = 1, .timeout_ms = 300000, .created_at_ms = 1,
    };
    json_t *o = taskjson_from_store(&t, 0);
    assert_keys(o, 0);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "9223372036854775807");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "pending");
    assert_true(json_is_null(json_object_get(o, "input")));
    assert_true(json_is_null(json_object_get(o, "result")));
    assert_true(json_is_null(json_object_get(o, "error")));
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 0);
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "1970-01-01T00:00:00.001Z");
    assert_true(json_is_null(json_object_get(o, "started_at")));
    assert_true(json_is_null(json_object_get(o, "finished_at")));
    assert_true(json_is_null(json_object_get(o, "run_after")));
    json_decref(o);

    /* a retry waiting for its time */
    t.run_after_ms = 1767323045678;
    t.attempts = 1;
    o = taskjson_from_store(&t, 0);
    assert_keys(o, 0);
    assert_string_equal(json_string_value(json_object_get(o, "run_after")),
                        "2026-01-02T03:04:05.678Z");
    json_decref(o);
    t.run_after_ms = 0;
    t.attempts = 0;

    t.state = TASK_FAILED;
    t.error_code = "worker_lost";
    t.error_message = "the worker running this task died";
    o = taskjson_from_store(&t, 0);
    json_t *err = json_object_get(o, "error");
    assert_true(json_is_object(err));
    assert_int_equal(json_object_size(err), 2);
    assert_string_equal(json_string_value(json_object_get(err, "code")), "worker_lost");
    assert_string_equal(json_string_value(json_object_get(err, "message")),
                        "the worker running this task died");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "failed");
    json_decref(o);

    /* every state by name */
    const char *names[] = {"pending", "running", "succeeded", "failed", "canceled"};
    for (int i = 0; i < TASK_STATE_COUNT; i++) {
        t.state = (enum task_state)i;
        o = taskjson_from_store(&t, 1);
        assert_string_equal(json_string_value(json_object_get(o, "state")), names[i]);
        json_decref(o);
    }
}

static void
test_from_store_brief(void **state)
{
    (void)state;
    store_task t = {
        .id = 7, .kind = "echo", .state = TASK_SUCCEEDED, .input = "{\"big\":true}",
        .result = "1", .attempts = 1, .max_attempts = 1, .timeout_ms = 5,
        .created_at_ms = 1000, .started_at_ms = 2000, .finished_at_ms = 3000,
    };
    json_t *o = taskjson_from_store(&t, 1);
    assert_keys(o, 1);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "7");
    assert_string_equal(json_string_value(json_object_get(o, "finished_at")),
                        "1970-01-01T00:00:03.000Z");
    json_decref(o);
}

/* taskjson_text() is byte for byte json_dumps(taskjson_from_store()), or NULL where it
 * leaves the task to jansson */
static void
expect_same_text(const store_task *t, int brief)
{
    json_t *o = taskjson_from_store(t, brief);
    assert_non_null(o);
    char *want = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(o);
    size_t len = 0;
    char *got = taskjson_text(t, brief, &len);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
    free(want);
}

static void
test_text_as_jansson(void **state)
{
    (void)state;
    store_task t = {
        .id = 42, .kind = "echo", .state = TASK_SUCCEEDED, .priority = -5,
        .input = "{\"a\":1,\"s\":\"x\\\"y\\\\z\\n\\u0000\",\"f\":1.5,\"u\":\"\xc3\xa9\"}",
        .result = "[1,\"two\",null,{\"k\":[]}]", .attempts = 2, .max_attempts = 3,
        .timeout_ms = 86400000, .created_at_ms = 1767323045678,
        .started_at_ms = 1767323046000, .finished_at_ms = 1767323046001, .run_after_ms = 99,
    };
    expect_same_text(&t, 0);
    expect_same_text(&t, 1);
    for (int i = 0; i < TASK_STATE_COUNT; i++) {
        t.state = (enum task_state)i;
        expect_same_text(&t, 0);
    }
    /* a fresh submission: no result, no times but created_at; a pending retry */
    store_task p = {.id = INT64_MAX, .kind = "a.b-c_d", .state = TASK_PENDING, .input = "null",
                    .max_attempts = 1, .timeout_ms = 300000, .created_at_ms = 1};
    expect_same_text(&p, 0);
    p.input = NULL;
    expect_same_text(&p, 0);
    p.run_after_ms = 1767323045678;
    p.attempts = 1;
    p.priority = 1000;
    expect_same_text(&p, 0);
    /* an error, with quotes and backslashes in its message; a code without a message */
    t.state = TASK_FAILED;
    t.result = NULL;
    t.error_code = "task_failed";
    t.error_message = "bad \"input\" at C:\\x";
    expect_same_text(&t, 0);
    t.error_message = NULL;
    expect_same_text(&t, 0);
    t.error_message = "";
    expect_same_text(&t, 1);
    /* a completion callback, in each of its states, with and without its last error */
    t.callback_url = "http://127.0.0.1:8080/done?x=\"1\"";
    for (int cb = STORE_CB_PENDING; cb <= STORE_CB_FAILED; cb++) {
        t.callback_state = cb;
        t.callback_attempts = cb * 3;
        t.callback_error = NULL;
        expect_same_text(&t, 0);
        t.callback_error = "HTTP 500 from \\receiver";
        expect_same_text(&t, 1);
    }
}

static void
test_text_leaves_to_jansson(void **state)
{
    (void)state;
    size_t len = 0;
    store_task t = {.id = 1, .kind = "k\xc3\xa9", .state = TASK_PENDING, .input = "1",
                    .max_attempts = 1, .timeout_ms = 1, .created_at_ms = 1};
    assert_null(taskjson_text(&t, 0, &len));        /* not ASCII: jansson checks UTF-8 */
    t.kind = "echo";
    t.state = TASK_FAILED;
    t.error_code = "x";
    t.error_message = "line one\nline two";
    assert_null(taskjson_text(&t, 0, &len));        /* a control character */
    t.error_message = "tab\there";
    assert_null(taskjson_text(&t, 1, &len));
    t.error_message = "fine";
    t.state = TASK_STATE_COUNT;                     /* no such state */
    assert_null(taskjson_text(&t, 0, &len));
}

/* ---------------------------------------------------------------- same_submission */

static void
test_same_submission(void **state)
{
    (void)state;
    store_task t = {.id = 1, .kind = "echo", .priority = 2, .max_attempts = 3,
                    .timeout_ms = 4, .input = "{\"a\":1,\"b\":{\"c\":[1,2]}}"};
    store_new_task nt = {.kind = "echo", .priority = 2, .max_attempts = 3, .timeout_ms = 4,
                         .input = "{\"b\":{\"c\":[1,2]},\"a\":1}"};
    assert_int_equal(taskjson_same_submission(&t, &nt), 1);

    store_new_task d = nt;
    d.kind = "sleep";
    assert_int_equal(taskjson_same_submission(&t, &d), 0);
    d = nt;
    d.priority = 1;
    assert_int_equal(taskjson_same_submission(&t, &d), 0);
    d = nt;
    d.max_attempts = 1;
    assert_int_equal(taskjson_same_submission(&t, &d), 0);
    d = nt;
    d.timeout_ms = 5;
    assert_int_equal(taskjson_same_submission(&t, &d), 0);
    d = nt;
    d.input = "{\"b\":{\"c\":[2,1]},\"a\":1}";        /* array order counts */
    assert_int_equal(taskjson_same_submission(&t, &d), 0);
    d.input = "{\"a\":1}";
    assert_int_equal(taskjson_same_submission(&t, &d), 0);
    d.input = "null";
    assert_int_equal(taskjson_same_submission(&t, &d), 0);

    t.input = "null";
    assert_int_equal(taskjson_same_submission(&t, &d), 1);
    t.input = NULL;             /* SQL NULL reads as JSON null */
    assert_int_equal(taskjson_same_submission(&t, &d), 1);
}

/* ---------------------------------------------------------------- parse_id */

static void
test_parse_id(void **state)
{
    (void)state;
    struct { const char *text; int64_t want; } ok[] = {
        {"1", 1}, {"42", 42}, {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t id = -5;
        assert_int_equal(taskjson_parse_id(ok[i].text, &id), 0);
        assert_int_equal(id, ok[i].want);
    }
    const char *bad[] = {
        "", "0", "00", "-1", "+1", "abc", "1a", "a1", " 1", "1 ", "1.0", "0x10",
        "9223372036854775808", "18446744073709551615", "18446744073709551616",
        "12345678901234567890", "00000000000000000001", "..%2F", "1/2",
        /* one spelling per id: leading zeros are not ids (nor forged cursors) */
        "01", "0000000000000000042",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t id = -5;
        if (taskjson_parse_id(bad[i], &id) != -1)
            fail_msg("'%s' accepted as %lld", bad[i], (long long)id);
        assert_int_equal(id, -5);
    }
}

/* ---------------------------------------------------------------- cursors */

static void
test_cursor_round_trip(void **state)
{
    (void)state;
    uint64_t secret = 0x0123456789abcdefULL;
    int64_t ids[] = {1, 2, 99, 123456789, INT64_MAX};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char c[64];
        taskjson_cursor_encode(secret, ids[i], c);
        assert_true(strlen(c) > 0);
        assert_true(strlen(c) < 64);
        int64_t back = 0;
        assert_int_equal(taskjson_cursor_decode(secret, c, &back), 0);
        assert_int_equal(back, ids[i]);
        /* another secret does not accept it */
        back = -5;
        assert_int_equal(taskjson_cursor_decode(secret ^ 1, c, &back), -1);
        assert_int_equal(taskjson_cursor_decode(0, c, &back), -1);
        assert_int_equal(back, -5);
    }
    /* the same input gives the same cursor; another id another cursor */
    char a[64], b[64], c2[64];
    taskjson_cursor_encode(secret, 10, a);
    taskjson_cursor_encode(secret, 10, b);
    taskjson_cursor_encode(secret, 11, c2);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c2);
}

static void
test_cursor_tampered(void **state)
{
    (void)state;
    uint64_t secret = 0xfeedface12345678ULL;
    char c[64];
    taskjson_cursor_encode(secret, 500, c);
    int64_t id = -5;
    /* flip each character in turn: none of the variants is accepted */
    size_t n = strlen(c);
    for (size_t i = 0; i < n; i++) {
        char t[64];
        memcpy(t, c, n + 1);
        t[i] = t[i] == '1' ? '2' : '1';
        if (taskjson_cursor_decode(secret, t, &id) != -1)
            fail_msg("tampered cursor '%s' (from '%s') accepted as %lld", t, c, (long long)id);
    }
    /* truncated or extended */
    char t[80];
    memcpy(t, c, n - 1);
    t[n - 1] = '\0';
    assert_int_equal(taskjson_cursor_decode(secret, t, &id), -1);
    snprintf(t, sizeof t, "%s0", c);
    assert_int_equal(taskjson_cursor_decode(secret, t, &id), -1);
    /* someone else's cursor for a different id, with our id pasted in */
    char other[64];
    taskjson_cursor_encode(secret, 499, other);
    const char *dot = strchr(other, '.');
    assert_non_null(dot);
    snprintf(t, sizeof t, "500%s", dot);
    assert_int_equal(taskjson_cursor_decode(secret, t, &id), -1);

    const char *garbage[] = {
        "", ".", "abc", "500", "500.", ".0123456789abcdef", "500.zzzzzzzzzzzzzzzz",
        "-1.0123456789abcdef", "0.0123456789abcdef", "x.y",
        "99999999999999999999999999.0123456789abcdef",
        "500.0123456789abcdef0123456789abcdef",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        if (taskjson_cursor_decode(secret, garbage[i], &id) != -1)
            fail_msg("garbage cursor '%s' accepted", garbage[i]);
    }
    assert_int_equal(id, -5);
}

/* ---------------------------------------------------------------- callbacks (issue 13) */

static void
test_submission_callback_url(void **state)
{
    (void)state;
    /* no --callback-allow: any callback_url is refused, naming the flag */
    expect_err("{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:9000/x\"}", "",
               "callback_url: no callback host is allowed", "--callback-allow");
    static const char *const allow[] = {"127.0.0.1:9000", "Hooks.Example.com", "[::1]:81"};
    g_cfg.callback_allow = allow;
    g_cfg.ncallback_allow = 3;
    expect_ok("{\"kind\": \"echo\"}");
    assert_null(g_nt.callback_url);
    done();
    expect_ok("{\"kind\": \"echo\", \"callback_url\": null}");
    assert_null(g_nt.callback_url);
    done();
    expect_ok("{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:9000/done?x=1\"}");
    assert_string_equal(g_nt.callback_url, "http://127.0.0.1:9000/done?x=1");
    done();
    expect_ok("{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:9000\"}");
    done();
    expect_ok("{\"kind\": \"echo\", \"callback_url\": \"http://hooks.example.com/a\"}");
    done();                                                    /* no port: 80, case-blind */
    expect_ok("{\"kind\": \"echo\", \"callback_url\": \"http://hooks.example.com:80/a\"}");
    done();
    expect_ok("{\"kind\": \"echo\", \"callback_url\": \"http://[::1]:81/a\"}");
    done();
    const char *bad[][2] = {
        {"1", "callback_url: must be a string"},
        {"\"https://127.0.0.1:9000/x\"", "callback_url: must be an http:// URL"},
        {"\"ftp://127.0.0.1:9000/x\"", "callback_url: must be an http:// URL"},
        {"\"HTTP://127.0.0.1:9000/x\"", "callback_url: must be an http:// URL"},
        {"\"http://127.0.0.1:9001/x\"", "callback_url: host 127.0.0.1 port 9001 is not allowed"},
        {"\"http://127.0.0.1/x\"", "callback_url: host 127.0.0.1 port 80 is not allowed"},
        {"\"http://10.0.0.1:9000/x\"", "callback_url: host 10.0.0.1 port 9000 is not allowed"},
        {"\"http://hooks.example.com:8080/\"", "callback_url: host hooks.example.com port 8080"},
        {"\"http://u:p@127.0.0.1:9000/x\"", "callback_url: 'http://u:p@127.0.0.1:9000/x' is not"},
        {"\"http://127.0.0.1:9000@evil/x\"", "callback_url: "},
        {"\"http://127.0.0.1:/x\"", "callback_url: "},
        {"\"http://127.0.0.1:99999/x\"", "callback_url: "},
        {"\"http:///x\"", "callback_url: "},
        {"\"http://[::1/x\"", "callback_url: "},
        {"\"http://127.0.0.1:9000/a b\"", "callback_url: must be printable ASCII"},
        {"\"http://127.0.0.1:9000/a#frag\"", "callback_url: must be printable ASCII"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"kind\": \"echo\", \"callback_url\": %s}", bad[i][0]);
        expect_err(body, "", bad[i][1], NULL);
    }
    char *long_url = malloc(2100);
    memset(long_url, 'a', 2099);
    long_url[2099] = '\0';
    memcpy(long_url, "http://127.0.0.1:9000/", 22);
    char *body = malloc(2200);
    snprintf(body, 2200, "{\"kind\": \"echo\", \"callback_url\": \"%s\"}", long_url);
    expect_err(body, "", "callback_url: longer than 2048", NULL);
    free(body);
    free(long_url);
    expect_err("{\"kind\": \"echo\", \"callback_url\": \"http://10.1.1.1/\"}", "tasks[2].",
               "tasks[2].callback_url: host 10.1.1.1", NULL);
    g_cfg.ncallback_allow = 0;
}

static void
test_from_store_callback(void **state)
{
    (void)state;
    store_task t = {.id = 7, .kind = "echo", .state = TASK_SUCCEEDED, .input = "1",
                    .result = "1", .max_attempts = 1, .timeout_ms = 5,
                    .callback_url = "http://h/x", .callback_state = STORE_CB_PENDING,
                    .callback_attempts = 2, .callback_error = "HTTP 500"};
    json_t *o = taskjson_from_store(&t, 0);
    json_t *want = load("{\"url\": \"http://h/x\", \"state\": \"pending\", \"attempts\": 2,"
                        " \"last_error\": \"HTTP 500\"}");
    assert_true(json_equal(json_object_get(o, "callback"), want));
    json_decref(want);
    json_decref(o);
    t.callback_state = STORE_CB_DELIVERED;
    t.callback_error = NULL;
    o = api_task_json(&t);
    want = load("{\"url\": \"http://h/x\", \"state\": \"delivered\", \"attempts\": 2,"
                " \"last_error\": null}");
    assert_true(json_equal(json_object_get(o, "callback"), want));
    json_decref(want);
    json_decref(o);
    t.callback_state = STORE_CB_FAILED;
    o = taskjson_from_store(&t, 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "callback"), "state")),
                        "failed");
    json_decref(o);
    /* no callback_url: no callback key at all */
    t.callback_url = NULL;
    o = taskjson_from_store(&t, 0);
    assert_null(json_object_get(o, "callback"));
    json_decref(o);

    /* an idempotent repeat must name the same callback_url */
    store_task st = {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 5,
                     .callback_url = "http://h/x"};
    store_new_task nt = {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 5,
                         .callback_url = "http://h/x"};
    assert_int_equal(taskjson_same_submission(&st, &nt), 1);
    nt.callback_url = "http://h/y";
    assert_int_equal(taskjson_same_submission(&st, &nt), 0);
    nt.callback_url = NULL;
    assert_int_equal(taskjson_same_submission(&st, &nt), 0);
    st.callback_url = NULL;
    assert_int_equal(taskjson_same_submission(&st, &nt), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submission_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_all_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_nulls_take_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_integers_must_be_integers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_submission_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_unknown_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_validator_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_where_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_no_validator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submission_schedule, setup, teardown),
        cmocka_unit_test(test_from_store_full),
        cmocka_unit_test(test_from_store_pending_and_error),
        cmocka_unit_test(test_from_store_brief),
        cmocka_unit_test(test_text_as_jansson),
        cmocka_unit_test(test_text_leaves_to_jansson),
        cmocka_unit_test(test_same_submission),
        cmocka_unit_test(test_parse_id),
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_tampered),
        cmocka_unit_test_setup_teardown(test_submission_callback_url, setup, teardown),
        cmocka_unit_test(test_from_store_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
