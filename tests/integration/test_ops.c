/* Integration: what operators and web clients rely on (issue 10, first half) --
 * GET /openapi.json, X-Request-Id, CORS (--cors-origin), POST /v1/tasks?wait=S, the
 * access log, --log-format json, the task lifecycle at debug, and that no log line
 * ever holds a task's input or result or the API token. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static void expect_header(const wp_resp *r, const char *name, const char *want) {
    char got[1024];
    if (!wp_resp_header(r, name, got, sizeof got))
        fail_msg("status %ld: no %s header (want '%s'); headers:\n%s", r->status, name, want,
                 r->headers ? r->headers : "");
    if (strcmp(got, want) != 0)
        fail_msg("status %ld: %s is '%s', want '%s'", r->status, name, got, want);
}

static void expect_no_header(const wp_resp *r, const char *name) {
    char got[1024];
    if (wp_resp_header(r, name, got, sizeof got))
        fail_msg("status %ld: unexpected %s: %s", r->status, name, got);
}

/* method path [body] with extra headers (NULL-terminated), no assertion on the answer */
static void call(const wp_server *s, const char *method, const char *path, const char *body,
                 const char *const *headers, wp_resp *r) {
    wp_req q = {.method = method, .path = path, .body = body, .headers = headers};
    if (!wp_http_nc(s, &q, r)) fail_msg("%s %s: no answer: %s", method, path, r->errbuf);
}

static bool is_hex16(const char *s) {
    if (strlen(s) != 16) return false;
    for (; *s; s++)
        if (!strchr("0123456789abcdef", *s)) return false;
    return true;
}

/* ---------------------------------------------------------------- /openapi.json */

WP_TEST(test_openapi_served_open) {
    wp_server *s = wp_server_start_args("--workers", "1", "--api-token", "tok-openapi", NULL);
    wp_resp r;
    wp_call(s, "GET", "/openapi.json", NULL, &r);   /* no token: still 200 */
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(r.json, "openapi"), "3.1.0");
    json_t *paths = json_object_get(r.json, "paths");
    assert_non_null(json_object_get(json_object_get(paths, "/v1/tasks"), "post"));
    assert_non_null(json_object_get(json_object_get(paths, "/openapi.json"), "get"));
    char *doc_version = strdup(wp_str(json_object_get(r.json, "info"), "version"));
    wp_resp_free(&r);
    const char *const auth[] = {"Authorization: Bearer tok-openapi", NULL};
    wp_call_h(s, "GET", "/v1/stats", NULL, auth, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(r.json, "version"), doc_version);
    free(doc_version);
    wp_resp_free(&r);
    /* it takes GET only, like any route */
    wp_call(s, "POST", "/openapi.json", "{}", &r);
    wp_assert_error(&r, 405, "method_not_allowed", NULL);
    expect_header(&r, "Allow", "GET");
    wp_resp_free(&r);
}

/* ---------------------------------------------------------------- X-Request-Id */

WP_TEST(test_request_id) {
    wp_server *s = wp_server_start_args("--workers", "1", "--max-body", "64", NULL);
    wp_resp r;
    /* a sane id is echoed, on success and on errors alike */
    const char *const ok[] = {"X-Request-Id: 4bf92f35-77b3.4a1c_a7f8:01", NULL};
    call(s, "GET", "/healthz", NULL, ok, &r);
    expect_header(&r, "X-Request-Id", "4bf92f35-77b3.4a1c_a7f8:01");
    wp_resp_free(&r);
    static const char *const paths[][2] = {{"GET", "/nowhere"}, {"PUT", "/v1/tasks"},
                                           {"GET", "/v1/tasks/0"}, {"GET", "/v1/tasks?limit=0"}};
    for (int i = 0; i < 4; i++) {
        call(s, paths[i][0], paths[i][1], NULL, ok, &r);
        if (r.status < 400) fail_msg("%s %s: want an error, got %ld", paths[i][0], paths[i][1], r.status);
        expect_header(&r, "X-Request-Id", "4bf92f35-77b3.4a1c_a7f8:01");
        wp_resp_free(&r);
    }
    call(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"0123456789012345678901234567890123456789\"}",
         ok, &r);
    assert_int_equal(r.status, 413);
    expect_header(&r, "X-Request-Id", "4bf92f35-77b3.4a1c_a7f8:01");
    wp_resp_free(&r);
    /* 128 characters is the longest kept */
    char long_ok[160], too_long[160];
    memset(long_ok, 'a', 128);
    long_ok[128] = '\0';
    memset(too_long, 'a', 129);
    too_long[129] = '\0';
    char *h = wp_fmt("X-Request-Id: %s", long_ok);
    const char *const h128[] = {h, NULL};
    call(s, "GET", "/healthz", NULL, h128, &r);
    expect_header(&r, "X-Request-Id", long_ok);
    wp_resp_free(&r);
    free(h);
    /* anything else is replaced by a fresh id: too long, unsafe characters, empty */
    char *h129 = wp_fmt("X-Request-Id: %s", too_long);
    const char *bad[] = {h129, "X-Request-Id: a b", "X-Request-Id: <script>", "X-Request-Id: x\"y",
                         "X-Request-Id: id;drop", "X-Request-Id: caf\xc3\xa9", "X-Request-Id:", NULL};
    char seen[8][256];
    for (int i = 0; bad[i]; i++) {
        const char *const hs[] = {bad[i], NULL};
        call(s, "GET", "/healthz", NULL, hs, &r);
        char got[256];
        assert_true(wp_resp_header(&r, "X-Request-Id", got, sizeof got));
        if (!is_hex16(got)) fail_msg("'%s' was not replaced: got '%s'", bad[i], got);
        snprintf(seen[i], sizeof seen[i], "%s", got);
        for (int j = 0; j < i; j++)
            if (strcmp(seen[j], got) == 0) fail_msg("request id %s given twice", got);
        wp_resp_free(&r);
    }
    free(h129);
    /* and none given: one is made up */
    call(s, "GET", "/v1/stats", NULL, NULL, &r);
    char got[64];
    assert_true(wp_resp_header(&r, "X-Request-Id", got, sizeof got));
    assert_true(is_hex16(got));
    wp_resp_free(&r);
}

/* ---------------------------------------------------------------- CORS */

static const char *const ALLOW_HEADERS =
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id";

WP_TEST(test_cors_off_by_default) {
    wp_server *s = wp_server_start_args("--workers", "1", NULL);
    wp_resp r;
    const char *const pre[] = {"Origin: http://app.test", "Access-Control-Request-Method: POST",
                               NULL};
    call(s, "OPTIONS", "/v1/tasks", NULL, pre, &r);
    wp_assert_error(&r, 405, "method_not_allowed", NULL);    /* as before CORS existed */
    expect_header(&r, "Allow", "POST, GET");
    expect_no_header(&r, "Access-Control-Allow-Origin");
    expect_no_header(&r, "Vary");
    wp_resp_free(&r);
    const char *const origin[] = {"Origin: http://app.test", NULL};
    call(s, "GET", "/v1/stats", NULL, origin, &r);
    assert_int_equal(r.status, 200);
    expect_no_header(&r, "Access-Control-Allow-Origin");
    expect_no_header(&r, "Access-Control-Expose-Headers");
    wp_resp_free(&r);
}

WP_TEST(test_cors_origins) {
    wp_server *s = wp_server_start_args("--workers", "1", "--api-token", "tok-cors", "--cors-origin",
                                        "http://app.test", "--cors-origin", "https://other.test:8443",
                                        "--max-body", "256", NULL);
    wp_resp r;
    /* a preflight from an allowed origin: 204, no token needed */
    static const char *const origins[] = {"http://app.test", "https://other.test:8443"};
    for (int i = 0; i < 2; i++) {
        char *o = wp_fmt("Origin: %s", origins[i]);
        const char *const pre[] = {o, "Access-Control-Request-Method: POST",
                                   "Access-Control-Request-Headers: authorization, content-type, idempotency-key",
                                   NULL};
        call(s, "OPTIONS", "/v1/tasks", NULL, pre, &r);
        assert_int_equal(r.status, 204);
        assert_int_equal(r.body_len, 0);
        expect_header(&r, "Access-Control-Allow-Origin", origins[i]);
        expect_header(&r, "Access-Control-Allow-Methods", "POST, GET");
        expect_header(&r, "Access-Control-Allow-Headers", ALLOW_HEADERS);
        expect_header(&r, "Access-Control-Max-Age", "600");
        expect_header(&r, "Vary", "Origin");
        expect_header(&r, "Allow", "POST, GET, OPTIONS");
        wp_resp_free(&r);
        free(o);
    }
    const char *const pre_id[] = {"Origin: http://app.test", "Access-Control-Request-Method: DELETE", NULL};
    call(s, "OPTIONS", "/v1/tasks/17", NULL, pre_id, &r);
    assert_int_equal(r.status, 204);
    expect_header(&r, "Access-Control-Allow-Methods", "GET, DELETE");
    wp_resp_free(&r);
    /* another origin: 204 without the Access-Control-Allow-* headers (the browser refuses) */
    const char *const evil[] = {"Origin: http://evil.test", "Access-Control-Request-Method: POST", NULL};
    call(s, "OPTIONS", "/v1/tasks", NULL, evil, &r);
    assert_int_equal(r.status, 204);
    expect_no_header(&r, "Access-Control-Allow-Origin");
    expect_no_header(&r, "Access-Control-Allow-Methods");
    expect_header(&r, "Vary", "Origin");
    wp_resp_free(&r);
    /* close but not equal: scheme, port, case, a trailing slash, a suffix */
    static const char *const near[] = {"Origin: https://app.test", "Origin: http://app.test:80",
                                       "Origin: http://APP.test", "Origin: http://app.test/",
                                       "Origin: http://app.test.evil", "Origin: null", NULL};
    for (int i = 0; near[i]; i++) {
        const char *const hs[] = {near[i], "Authorization: Bearer tok-cors", NULL};
        call(s, "GET", "/v1/stats", NULL, hs, &r);
        assert_int_equal(r.status, 200);
        expect_no_header(&r, "Access-Control-Allow-Origin");
        wp_resp_free(&r);
    }
    /* an unknown path is a 404 whatever the method (a 401 first under /v1 without the
     * token, as for any method) */
    const char *const pre_auth[] = {"Origin: http://app.test", "Access-Control-Request-Method: GET",
                                    "Authorization: Bearer tok-cors", NULL};
    call(s, "OPTIONS", "/v1/nowhere", NULL, pre_auth, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    expect_header(&r, "Access-Control-Allow-Origin", "http://app.test");
    wp_resp_free(&r);
    call(s, "OPTIONS", "/nowhere", NULL, pre_id, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    /* OPTIONS without Origin (curl): 204 with Allow */
    call(s, "OPTIONS", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 204);
    expect_header(&r, "Allow", "GET, OPTIONS");
    expect_no_header(&r, "Access-Control-Allow-Origin");
    wp_resp_free(&r);

    /* answers to an allowed origin carry the headers, errors included, so the page can
     * read them: 202 with Location, 401, 404, 413, 422 */
    const char *const with_token[] = {"Origin: http://app.test", "Authorization: Bearer tok-cors", NULL};
    const char *const no_token[] = {"Origin: http://app.test", NULL};
    struct { const char *method, *path, *body; const char *const *h; long status; } cases[] = {
        {"POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":1}", with_token, 202},
        {"GET", "/v1/stats", NULL, no_token, 401},
        {"GET", "/v1/tasks/999999", NULL, with_token, 404},
        {"POST", "/v1/tasks", "{\"kind\":\"nope\"}", with_token, 422},
        {"GET", "/healthz", NULL, no_token, 200},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        call(s, cases[i].method, cases[i].path, cases[i].body, cases[i].h, &r);
        if (r.status != cases[i].status)
            fail_msg("%s %s: want %ld, got %ld", cases[i].method, cases[i].path, cases[i].status, r.status);
        expect_header(&r, "Access-Control-Allow-Origin", "http://app.test");
        expect_header(&r, "Access-Control-Expose-Headers", "Location, Retry-After, X-Request-Id");
        expect_header(&r, "Vary", "Origin");
        wp_resp_free(&r);
    }
    char big[400];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    call(s, "POST", "/v1/tasks", big, with_token, &r);
    assert_int_equal(r.status, 413);
    expect_header(&r, "Access-Control-Allow-Origin", "http://app.test");
    wp_resp_free(&r);
    /* a preflight still gets 413 for a body over the cap, and 204 only for known paths */
    call(s, "OPTIONS", "/v1/tasks", big, pre_id, &r);
    assert_int_equal(r.status, 413);
    wp_resp_free(&r);
    /* the token is still needed for the request itself */
    call(s, "DELETE", "/v1/tasks/1", NULL, no_token, &r);
    wp_assert_error(&r, 401, "unauthorized", NULL);
    wp_resp_free(&r);
}

WP_TEST(test_cors_any_origin) {
    wp_server *s = wp_server_start_args("--workers", "1", "--cors-origin", "*", NULL);
    wp_resp r;
    const char *const pre[] = {"Origin: http://anything.test:1234", "Access-Control-Request-Method: GET",
                               NULL};
    call(s, "OPTIONS", "/v1/tasks/1", NULL, pre, &r);
    assert_int_equal(r.status, 204);
    expect_header(&r, "Access-Control-Allow-Origin", "*");
    wp_resp_free(&r);
    const char *const o[] = {"Origin: null", NULL};
    call(s, "GET", "/v1/stats", NULL, o, &r);
    expect_header(&r, "Access-Control-Allow-Origin", "*");
    wp_resp_free(&r);
}

/* --cors-origin '*' with a token, however given, stops warmpool with exit code 2 */
WP_TEST(test_cors_any_origin_with_token_refused) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *tokfile = wp_fmt("%s/token", dir);
    FILE *f = fopen(tokfile, "w");
    assert_non_null(f);
    fputs("tok-file\n", f);
    fclose(f);
    char *tokenv = wp_fmt("WARMPOOL_API_TOKEN_FILE=%s", tokfile);
    struct { const char *const *args, *const *env; } cases[] = {
        {(const char *const[]){"--cors-origin", "*", "--api-token", "t", NULL}, NULL},
        {(const char *const[]){"--api-token=t", "--cors-origin=http://a.test", "--cors-origin=*", NULL}, NULL},
        {NULL, (const char *const[]){"WARMPOOL_CORS_ORIGIN=*", tokenv, NULL}},
        {(const char *const[]){"--cors-origin", "http://a.test/", NULL}, NULL},
        {(const char *const[]){"--log-format", "xml", NULL}, NULL},
    };
    static const char *const says[] = {"'*' is refused", "'*' is refused", "'*' is refused",
                                       "is not an origin", "--log-format"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        bool to = false;
        int st = wp_run_binary(cases[i].args, cases[i].env, 10000, &out, &to, NULL);
        if (to || !WIFEXITED(st) || WEXITSTATUS(st) != 2 || !strstr(out, says[i]))
            fail_msg("case %zu: want exit 2 saying \"%s\"; got status %d: %s", i, says[i], st, out);
        free(out);
    }
    free(tokenv);
    free(tokfile);
    wp_remove_tree(dir);
}

/* ---------------------------------------------------------------- POST ?wait=S */

WP_TEST(test_submit_wait) {
    wp_server *s = wp_server_start_args("--workers", "2", "--enable-test-kinds", NULL);
    wp_resp r;
    /* ends in time: 200 with the finished task and its Location */
    wp_call(s, "POST", "/v1/tasks?wait=10", "{\"kind\":\"echo\",\"input\":{\"a\":[1,2]}}", &r);
    assert_int_equal(r.status, 200);
    wp_assert_task_keys_exact(r.json, true, "POST ?wait");
    assert_string_equal(wp_str(r.json, "state"), "succeeded");
    char *d = wp_dump(json_object_get(r.json, "result"));
    assert_string_equal(d, "{\"a\":[1,2]}");
    free(d);
    char *loc = wp_fmt("/v1/tasks/%s", wp_str(r.json, "id"));
    assert_true(r.has_location);
    assert_string_equal(r.location, loc);
    free(loc);
    wp_resp_free(&r);
    /* a failed task is finished too: 200 */
    wp_call(s, "POST", "/v1/tasks?wait=10", "{\"kind\":\"fail\",\"input\":{\"message\":\"no\"}}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(r.json, "state"), "failed");
    wp_resp_free(&r);
    /* not done within S: 202 after S seconds, as without wait */
    long long t0 = wp_now_ms();
    wp_call(s, "POST", "/v1/tasks?wait=1", "{\"kind\":\"sleep\",\"input\":{\"ms\":4000}}", &r);
    long long took = wp_now_ms() - t0;
    assert_int_equal(r.status, 202);
    assert_true(r.has_location);
    const char *st = wp_str(r.json, "state");
    if (strcmp(st, "pending") != 0 && strcmp(st, "running") != 0) fail_msg("state %s", st);
    if (took < 900 || took > 3000) fail_msg("?wait=1 answered after %lld ms", took);
    wp_resp_free(&r);
    /* wait=0 and an empty wait: at once */
    t0 = wp_now_ms();
    wp_call(s, "POST", "/v1/tasks?wait=0", "{\"kind\":\"sleep\",\"input\":{\"ms\":2000}}", &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    wp_call(s, "POST", "/v1/tasks?wait=", "{\"kind\":\"sleep\",\"input\":{\"ms\":10}}", &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    if (wp_now_ms() - t0 > 1500) fail_msg("wait=0 held the answer");
    /* an idempotent repeat answers 200, after waiting for the task */
    const char *const key[] = {"Idempotency-Key: ops-wait-1", NULL};
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\":\"sleep\",\"input\":{\"ms\":300}}", key, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    wp_call_h(s, "POST", "/v1/tasks?wait=10", "{\"kind\":\"sleep\",\"input\":{\"ms\":300}}", key, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(r.json, "state"), "succeeded");
    wp_resp_free(&r);
    wp_call_h(s, "POST", "/v1/tasks?wait=10", "{\"kind\":\"sleep\",\"input\":{\"ms\":301}}", key, &r);
    wp_assert_error(&r, 409, "idempotency_conflict", NULL);
    wp_resp_free(&r);
}

/* A bad S is 400 invalid_query naming wait, and nothing is stored */
WP_TEST(test_submit_wait_bad_value) {
    wp_server *s = wp_server_start_args("--workers", "1", NULL);
    static const char *const bad[] = {"61", "-1", "abc", "1.5", "1e1", "%201", "99999999999", "0x1", NULL};
    for (int i = 0; bad[i]; i++) {
        wp_snap snap = wp_snapshot(s);
        char *p = wp_fmt("/v1/tasks?wait=%s", bad[i]);
        wp_resp r;
        wp_call(s, "POST", p, "{\"kind\":\"echo\",\"input\":1}", &r);
        wp_assert_error(&r, 400, "invalid_query", "wait");
        wp_resp_free(&r);
        wp_assert_unchanged(s, &snap, p);
        free(p);
    }
}

/* A held submission answers at once (202, the task stored) when the service drains */
WP_TEST(test_submit_wait_answered_at_drain) {
    wp_server *s = wp_server_start_args("--workers", "1", "--grace-ms", "5000", NULL);
    /* occupy the only worker so the waited task stays pending */
    json_decref(wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":3000}}"));
    pid_t killer = fork();
    if (killer == 0) {
        usleep(700 * 1000);
        kill(s->pid, SIGTERM);
        _exit(0);
    }
    long long t0 = wp_now_ms();
    wp_resp r;
    wp_req q = {.method = "POST", .path = "/v1/tasks?wait=30", .body = "{\"kind\":\"echo\",\"input\":7}"};
    wp_http(s, &q, &r);
    long long took = wp_now_ms() - t0;
    waitpid(killer, NULL, 0);
    assert_int_equal(r.status, 202);
    assert_string_equal(wp_str(r.json, "state"), "pending");
    if (took > 2500) fail_msg("the held submission answered %lld ms after the drain began", took - 700);
    wp_resp_free(&r);
    int st = wp_server_stop(s, 15000, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---------------------------------------------------------------- logs */

/* The log line (text format) holding request_id=ID, or fail. */
static char *access_line(const wp_server *s, const char *id) {
    char *log = wp_server_read_log(s);
    char *want = wp_fmt("request_id=%s", id);
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, " request method=") && strstr(line, want)) {
            char *copy = strdup(line);
            free(want);
            free(log);
            return copy;
        }
    }
    fail_msg("no access line with %s", want);
    return NULL;
}

WP_TEST(test_access_log_text) {
    wp_server *s = wp_server_start_args("--workers", "1", NULL);
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":1}");
    char *path = wp_fmt("/v1/tasks/%s?wait=5&kind=zzz", wp_str(t, "id"));
    const char *const h1[] = {"X-Request-Id: acc-1", NULL};
    wp_resp r;
    call(s, "GET", path, NULL, h1, &r);
    assert_int_equal(r.status, 200);
    size_t bytes = r.body_len;
    wp_resp_free(&r);
    const char *const h2[] = {"X-Request-Id: acc-2", NULL};
    call(s, "GET", "/no/such/thing?x=1", NULL, h2, &r);
    assert_int_equal(r.status, 404);
    wp_resp_free(&r);
    const char *const h3[] = {"X-Request-Id: acc-3", NULL};
    call(s, "PATCH", "/v1/tasks/5", NULL, h3, &r);
    assert_int_equal(r.status, 405);
    wp_resp_free(&r);
    /* the line is written when the request completes: give it a moment */
    wp_sleep_ms(200);
    char *l1 = access_line(s, "acc-1");
    char *want = wp_fmt(" info  [http ");
    assert_non_null(strstr(l1, want));
    free(want);
    want = wp_fmt("request method=GET route=/v1/tasks/{id} status=200 duration_ms=");
    if (!strstr(l1, want)) fail_msg("access line: %s", l1);
    free(want);
    want = wp_fmt(" bytes=%zu client=127.0.0.1 request_id=acc-1", bytes);
    if (!strstr(l1, want)) fail_msg("access line: %s (want '%s')", l1, want);
    free(want);
    /* never the path itself, nor its query */
    assert_null(strstr(l1, "zzz"));
    char *l2 = access_line(s, "acc-2");
    if (!strstr(l2, "method=GET route=- status=404 ") || strstr(l2, "such")) fail_msg("%s", l2);
    char *l3 = access_line(s, "acc-3");
    if (!strstr(l3, "method=PATCH route=/v1/tasks/{id} status=405 ")) fail_msg("%s", l3);
    free(l1);
    free(l2);
    free(l3);
    free(path);
    json_decref(t);
    /* at --log-level warn there are none */
    wp_server *q = wp_server_start_args("--workers", "1", "--log-level", "warn", NULL);
    call(q, "GET", "/v1/stats", NULL, NULL, &r);
    wp_resp_free(&r);
    wp_server_stop(q, 15000, NULL);
    char *log = wp_server_read_log(q);
    assert_null(strstr(log, " request method="));
    free(log);
}

#define SECRET_INPUT "s3cr3t-INPUT-7f1d"
#define SECRET_TOKEN "tok-S3CRET-9c2e"

/* Every line of the log is a JSON object with ts, level, role, pid, msg. Returns them. */
static json_t *parse_json_log(const wp_server *s) {
    char *log = wp_server_read_log(s);
    json_t *lines = json_array();
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        json_error_t e;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &e);
        if (!o || !json_is_object(o)) fail_msg("log line %d is not a JSON object (%s): %s", n + 1, e.text, line);
        static const char *const str_keys[] = {"ts", "level", "role", "msg"};
        for (int k = 0; k < 4; k++)
            if (!json_is_string(json_object_get(o, str_keys[k])))
                fail_msg("log line %d lacks string '%s': %s", n + 1, str_keys[k], line);
        if (!wp_valid_ts(wp_str(o, "ts"))) fail_msg("log line %d: bad ts: %s", n + 1, line);
        json_t *pid = json_object_get(o, "pid");
        if (!json_is_integer(pid) || json_integer_value(pid) <= 0) fail_msg("log line %d: pid: %s", n + 1, line);
        const char *lv = wp_str(o, "level");
        if (strcmp(lv, "error") && strcmp(lv, "warn") && strcmp(lv, "info") && strcmp(lv, "debug"))
            fail_msg("log line %d: level %s", n + 1, lv);
        const char *role = wp_str(o, "role");
        if (strcmp(role, "supervisor") && strcmp(role, "zygote") && strcmp(role, "http") &&
            strcmp(role, "worker") && strcmp(role, "agent"))
            fail_msg("log line %d: role %s", n + 1, role);
        json_array_append_new(lines, o);
    }
    free(log);
    if (n < 10) fail_msg("only %d log lines", n);
    return lines;
}

/* The first record with msg and field key == value (NULL value: any), or NULL. */
static json_t *find_record(json_t *lines, const char *msg, const char *key, const char *value) {
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) {
        if (strcmp(wp_str(o, "msg"), msg) != 0) continue;
        json_t *v = json_object_get(o, key);
        if (!v) continue;
        if (!value) return o;
        char *d = json_is_string(v) ? strdup(json_string_value(v)) : wp_dump(v);
        bool eq = strcmp(d, value) == 0;
        free(d);
        if (eq) return o;
    }
    return NULL;
}

static json_t *expect_event(json_t *lines, const char *msg, const char *id, const char *kind) {
    json_t *o = find_record(lines, msg, "task_id", id);
    if (!o) fail_msg("no '%s' record for task %s", msg, id);
    if (strcmp(wp_str(o, "kind"), kind) != 0) fail_msg("'%s' of task %s: kind '%s'", msg, id, wp_str(o, "kind"));
    if (strcmp(msg, "task submitted") != 0 && !json_is_integer(json_object_get(o, "worker_pid")))
        fail_msg("'%s' of task %s has no worker_pid", msg, id);
    assert_string_equal(wp_str(o, "level"), "debug");
    return o;
}

/* --log-format json at debug: every line parses; the lifecycle of tasks and an access
 * line per request are there; and nothing anywhere in the log holds the input, the
 * result or the token. */
WP_TEST(test_json_logs_lifecycle_and_no_secrets) {
    const char *const args[] = {"--workers", "2", "--enable-test-kinds", "--log-format", "json",
                                "--log-level", "debug", "--retry-base-ms", "50", "--api-token",
                                SECRET_TOKEN, "--grace-ms", "3000", NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    const char *const auth[] = {"Authorization: Bearer " SECRET_TOKEN, "X-Request-Id: ops-json-1", NULL};
    const char *const auth_only[] = {"Authorization: Bearer " SECRET_TOKEN, NULL};
    wp_resp r;
    /* succeeded, with the secret in its input and so in its result */
    call(s, "POST", "/v1/tasks?wait=10", "{\"kind\":\"echo\",\"input\":{\"password\":\"" SECRET_INPUT "\"}}", auth, &r);
    assert_int_equal(r.status, 200);
    char echo_id[32];
    snprintf(echo_id, sizeof echo_id, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    /* retried once, then failed; the kind's error message is the secret */
    call(s, "POST", "/v1/tasks?wait=10",
         "{\"kind\":\"fail\",\"input\":{\"message\":\"" SECRET_INPUT "\"},\"max_attempts\":2}", auth_only, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(r.json, "state"), "failed");
    char fail_id[32];
    snprintf(fail_id, sizeof fail_id, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    /* timeout */
    call(s, "POST", "/v1/tasks?wait=10",
         "{\"kind\":\"spin\",\"input\":{\"secret\":\"" SECRET_INPUT "\"},\"timeout_ms\":300}", auth_only, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(wp_str(json_object_get(r.json, "error"), "code"), "timeout");
    char spin_id[32];
    snprintf(spin_id, sizeof spin_id, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    /* worker lost: its worker killed while it runs */
    call(s, "POST", "/v1/tasks", "{\"kind\":\"sleep\",\"input\":{\"ms\":5000}}", auth_only, &r);
    assert_int_equal(r.status, 202);
    char lost_id[32];
    snprintf(lost_id, sizeof lost_id, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    pid_t w = 0;
    for (long long until = wp_now_ms() + 10000; !w && wp_now_ms() < until; wp_sleep_ms(20)) {
        call(s, "GET", "/v1/stats", NULL, auth_only, &r);
        size_t i;
        json_t *wk;
        json_array_foreach(json_object_get(r.json, "workers"), i, wk)
            if (strcmp(wp_str(wk, "task_id"), lost_id) == 0) w = (pid_t)wp_int(wk, "pid");
        wp_resp_free(&r);
    }
    if (!w) fail_msg("task %s never ran", lost_id);
    kill(w, SIGKILL);
    char *p = wp_fmt("/v1/tasks/%s?wait=10", lost_id);
    call(s, "GET", p, NULL, auth_only, &r);
    assert_string_equal(wp_str(json_object_get(r.json, "error"), "code"), "worker_lost");
    wp_resp_free(&r);
    free(p);
    /* a batch, refusals and unauthorized calls that carry the secret in every way a
     * client might put it */
    call(s, "POST", "/v1/tasks/batch",
         "{\"tasks\":[{\"kind\":\"echo\",\"input\":\"" SECRET_INPUT "\"},{\"kind\":\"echo\",\"input\":2}]}", auth_only, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    call(s, "POST", "/v1/tasks", "{\"kind\":\"sleep\",\"input\":{\"ms\":\"" SECRET_INPUT "\"}}", auth_only, &r);
    assert_int_equal(r.status, 422);
    wp_resp_free(&r);
    call(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"" SECRET_INPUT "\"", auth_only, &r);
    assert_int_equal(r.status, 400);
    wp_resp_free(&r);
    call(s, "GET", "/v1/tasks?kind=" SECRET_INPUT "&cursor=" SECRET_INPUT, NULL, auth_only, &r);
    assert_int_equal(r.status, 400);
    wp_resp_free(&r);
    const char *const wrong[] = {"Authorization: Bearer " SECRET_TOKEN "x", "X-Request-Id: " SECRET_INPUT "!", NULL};
    call(s, "GET", "/v1/stats", NULL, wrong, &r);
    assert_int_equal(r.status, 401);
    wp_resp_free(&r);
    call(s, "GET", "/" SECRET_INPUT, NULL, auth_only, &r);
    assert_int_equal(r.status, 404);
    wp_resp_free(&r);
    int st = wp_server_stop(s, 15000, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    char *log = wp_server_read_log(s);
    if (strstr(log, SECRET_INPUT)) fail_msg("the log holds a task's input or result:\n%s", log);
    if (strstr(log, SECRET_TOKEN)) fail_msg("the log holds the API token:\n%s", log);
    free(log);
    json_t *lines = parse_json_log(s);
    /* the lifecycle, each with task id, kind and worker pid */
    json_t *sub = expect_event(lines, "task submitted", echo_id, "echo");
    assert_string_equal(wp_str(sub, "request_id"), "ops-json-1");
    assert_string_equal(wp_str(sub, "role"), "http");
    json_t *started = expect_event(lines, "task started", echo_id, "echo");
    assert_int_equal(wp_int(started, "worker_pid"), wp_int(started, "pid"));
    assert_string_equal(wp_str(started, "role"), "worker");
    json_t *fin = expect_event(lines, "task finished", echo_id, "echo");
    assert_string_equal(wp_str(fin, "state"), "succeeded");
    assert_true(wp_int(fin, "duration_ms") >= 0);
    json_t *retried = expect_event(lines, "task retried", fail_id, "fail");
    assert_string_equal(wp_str(retried, "error_code"), "task_failed");
    assert_int_equal(wp_int(retried, "attempt"), 1);
    fin = expect_event(lines, "task finished", fail_id, "fail");
    assert_string_equal(wp_str(fin, "state"), "failed");
    assert_int_equal(wp_int(fin, "attempt"), 2);
    json_t *to = expect_event(lines, "task timeout", spin_id, "spin");
    assert_string_equal(wp_str(to, "role"), "supervisor");
    assert_string_equal(wp_str(to, "state"), "failed");
    json_t *lost = expect_event(lines, "task worker lost", lost_id, "sleep");
    assert_int_equal(wp_int(lost, "worker_pid"), w);
    /* access lines: the route template, the status, the id */
    json_t *acc = find_record(lines, "request", "request_id", "ops-json-1");
    if (!acc) fail_msg("no access record for ops-json-1");
    assert_string_equal(wp_str(acc, "level"), "info");
    assert_string_equal(wp_str(acc, "method"), "POST");
    assert_string_equal(wp_str(acc, "route"), "/v1/tasks");
    assert_int_equal(wp_int(acc, "status"), 200);
    assert_true(json_is_number(json_object_get(acc, "duration_ms")));
    assert_true(wp_int(acc, "bytes") > 0);
    assert_string_equal(wp_str(acc, "client"), "127.0.0.1");
    char *want_route = wp_fmt("/v1/tasks/{id}");
    assert_non_null(find_record(lines, "request", "route", want_route));
    free(want_route);
    assert_non_null(find_record(lines, "request", "status", "401"));
    json_decref(lines);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_openapi_served_open, wp_test_teardown),
        cmocka_unit_test_teardown(test_request_id, wp_test_teardown),
        cmocka_unit_test_teardown(test_cors_off_by_default, wp_test_teardown),
        cmocka_unit_test_teardown(test_cors_origins, wp_test_teardown),
        cmocka_unit_test_teardown(test_cors_any_origin, wp_test_teardown),
        cmocka_unit_test_teardown(test_cors_any_origin_with_token_refused, wp_test_teardown),
        cmocka_unit_test_teardown(test_submit_wait, wp_test_teardown),
        cmocka_unit_test_teardown(test_submit_wait_bad_value, wp_test_teardown),
        cmocka_unit_test_teardown(test_submit_wait_answered_at_drain, wp_test_teardown),
        cmocka_unit_test_teardown(test_access_log_text, wp_test_teardown),
        cmocka_unit_test_teardown(test_json_logs_lifecycle_and_no_secrets, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.ops", tests, NULL, NULL);
}
