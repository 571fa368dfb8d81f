/* Integration: every error case of the HTTP API. Each asserts the status, the
 * error body, error.code, that the message names the field or parameter where
 * the spec says so, and that nothing was stored. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Default server: no test kinds, 2 workers. */
static wp_server *G;
/* Server with --max-body 1024. */
static wp_server *SMALL;
/* The HTTP process pid at start: it must never be restarted (no crash). */
static pid_t G_http_pid;
static char G_done_id[64];

static pid_t find_http_pid(const wp_server *s) {
    pid_t h[4];
    return wp_children_named(s, "warmpool-http", h, 4) == 1 ? h[0] : 0;
}

static int group_setup(void **state) {
    (void)state;
    G = wp_server_start_args("--workers", "2", "--grace-ms", "1000", NULL);
    SMALL = wp_server_start_args("--workers", "1", "--max-body", "1024", "--grace-ms", "1000", NULL);
    wp_wait_workers(G, 2, 15);
    G_http_pid = find_http_pid(G);
    json_t *t = wp_submit(G, "{\"kind\":\"echo\",\"input\":1}");
    snprintf(G_done_id, sizeof G_done_id, "%s", wp_str(t, "id"));
    json_decref(wp_wait_terminal(G, G_done_id, 20));
    json_decref(t);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    wp_server_free(G);
    wp_server_free(SMALL);
    return 0;
}

/* POST body to /v1/tasks on s, expect an error, and nothing stored. */
static void refused_on(const wp_server *s, const char *body, size_t len, long status, const char *code,
                       const char *names) {
    wp_snap snap = wp_snapshot(s);
    wp_req q = {.method = "POST", .path = "/v1/tasks", .body = body, .body_len = len, .timeout_ms = 30000};
    wp_resp r;
    wp_http(s, &q, &r);
    if (r.status != status)
        fail_msg("POST /v1/tasks %.200s%s: want %ld %s, got %ld: %.400s", body, strlen(body) > 200 ? "..." : "",
                 status, code, r.status, r.body);
    wp_assert_error(&r, status, code, names);
    wp_resp_free(&r);
    wp_assert_unchanged(s, &snap, body);
}

static void refused(const char *body, long status, const char *code, const char *names) {
    refused_on(G, body, strlen(body), status, code, names);
}

static void accepted(const char *body) { json_decref(wp_submit(G, body)); }

/* ------------------------------------------------------------- bad bodies */

WP_TEST(test_invalid_json) {
    refused("{\"kind\":", 400, "invalid_json", NULL);
    refused("{kind: \"echo\"}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"echo\",}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"echo\"} trailing", 400, "invalid_json", NULL);
    refused("{\"kind\":\"echo\"}{}", 400, "invalid_json", NULL);
    refused("\xff\xfe{}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"ec\xc3\x28ho\"}", 400, "invalid_json", NULL); /* invalid UTF-8 */
    /* not an object */
    refused("[]", 400, "invalid_json", NULL);
    refused("[{\"kind\":\"echo\"}]", 400, "invalid_json", NULL);
    refused("\"echo\"", 400, "invalid_json", NULL);
    refused("42", 400, "invalid_json", NULL);
    refused("null", 400, "invalid_json", NULL);
    refused("true", 400, "invalid_json", NULL);
    /* \u0000 in a string, numbers jansson cannot represent */
    refused("{\"kind\":\"echo\",\"input\":\"a\\u0000b\"}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"ech\\u0000o\"}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"echo\",\"input\":99999999999999999999999}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"echo\",\"priority\":99999999999999999999999}", 400, "invalid_json", NULL);
    refused("{\"kind\":\"echo\",\"input\":1e400}", 400, "invalid_json", NULL);
    /* raw NUL bytes, inside a string and after the object */
    static const char nul_in[] = "{\"kind\":\"echo\",\"input\":\"a\0b\"}";
    refused_on(G, nul_in, sizeof nul_in - 1, 400, "invalid_json", NULL);
    static const char nul_after[] = "{\"kind\":\"echo\"}\0";
    refused_on(G, nul_after, sizeof nul_after - 1, 400, "invalid_json", NULL);
}

WP_TEST(test_empty_body) {
    /* Content-Length: 0 */
    refused_on(G, "", 0, 400, "invalid_json", NULL);
    /* No body at all */
    wp_snap snap = wp_snapshot(G);
    wp_resp r;
    wp_call(G, "POST", "/v1/tasks", NULL, &r);
    wp_assert_error(&r, 400, "invalid_json", NULL);
    wp_resp_free(&r);
    wp_call(G, "POST", "/v1/tasks/batch", NULL, &r);
    wp_assert_error(&r, 400, "invalid_json", NULL);
    wp_resp_free(&r);
    /* whitespace only */
    wp_call(G, "POST", "/v1/tasks", "  \n ", &r);
    wp_assert_error(&r, 400, "invalid_json", NULL);
    wp_resp_free(&r);
    wp_assert_unchanged(G, &snap, "empty bodies");
}

WP_TEST(test_integer_fields) {
    static const char *const fields[] = {"priority", "max_attempts", "timeout_ms"};
    for (int i = 0; i < 3; i++) {
        char body[256];
        static const char *const bad[] = {"1.0", "5.5", "\"5\"", "true", "[1]", "{}", "1e2"};
        for (size_t j = 0; j < sizeof bad / sizeof *bad; j++) {
            snprintf(body, sizeof body, "{\"kind\":\"echo\",\"%s\":%s}", fields[i], bad[j]);
            refused(body, 422, "invalid_task", fields[i]);
        }
    }
    /* ranges */
    refused("{\"kind\":\"echo\",\"priority\":-1001}", 422, "invalid_task", "priority");
    refused("{\"kind\":\"echo\",\"priority\":1001}", 422, "invalid_task", "priority");
    refused("{\"kind\":\"echo\",\"max_attempts\":0}", 422, "invalid_task", "max_attempts");
    refused("{\"kind\":\"echo\",\"max_attempts\":101}", 422, "invalid_task", "max_attempts");
    refused("{\"kind\":\"echo\",\"max_attempts\":-1}", 422, "invalid_task", "max_attempts");
    refused("{\"kind\":\"echo\",\"timeout_ms\":0}", 422, "invalid_task", "timeout_ms");
    refused("{\"kind\":\"echo\",\"timeout_ms\":86400001}", 422, "invalid_task", "timeout_ms");
    refused("{\"kind\":\"echo\",\"timeout_ms\":-5}", 422, "invalid_task", "timeout_ms");
    refused("{\"kind\":\"echo\",\"priority\":9223372036854775807}", 422, "invalid_task", "priority");
    refused("{\"kind\":\"echo\",\"timeout_ms\":-9223372036854775808}", 422, "invalid_task", "timeout_ms");
    /* boundaries are accepted */
    accepted("{\"kind\":\"echo\",\"priority\":-1000}");
    accepted("{\"kind\":\"echo\",\"priority\":1000}");
    accepted("{\"kind\":\"echo\",\"max_attempts\":1}");
    accepted("{\"kind\":\"echo\",\"max_attempts\":100}");
    accepted("{\"kind\":\"echo\",\"timeout_ms\":1}");
    accepted("{\"kind\":\"echo\",\"timeout_ms\":86400000}");
}

WP_TEST(test_kind_and_unknown_fields) {
    refused("{\"kind\":\"echo\",\"bogus_field\":1}", 422, "invalid_task", "bogus_field");
    refused("{\"kind\":\"echo\",\"Priority\":1}", 422, "invalid_task", "Priority");
    refused("{\"kind\":\"echo\",\"id\":\"5\"}", 422, "invalid_task", "id");
    refused("{\"kind\":\"echo\",\"state\":\"succeeded\"}", 422, "invalid_task", "state");
    refused("{\"kind\":\"no_such_kind\"}", 422, "invalid_task", "kind");
    refused("{\"kind\":\"\"}", 422, "invalid_task", "kind");
    refused("{\"kind\":\"ECHO\"}", 422, "invalid_task", "kind");
    /* fail exists only with --enable-test-kinds */
    refused("{\"kind\":\"fail\",\"input\":{\"message\":\"x\"}}", 422, "invalid_task", "kind");
    refused("{}", 422, "invalid_task", "kind");
    refused("{\"input\":1}", 422, "invalid_task", "kind");
    refused("{\"kind\":null}", 422, "invalid_task", "kind");
    refused("{\"kind\":5}", 422, "invalid_task", "kind");
    refused("{\"kind\":[\"echo\"]}", 422, "invalid_task", "kind");
    json_t *st = wp_stats(G);
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(st, "kinds"), i, k) {
        if (strcmp(wp_str(k, "name"), "fail") == 0) fail_msg("stats lists kind 'fail' without --enable-test-kinds");
    }
    json_decref(st);
}

WP_TEST(test_sleep_validation) {
    refused("{\"kind\":\"sleep\"}", 422, "invalid_task", NULL);
    refused("{\"kind\":\"sleep\",\"input\":null}", 422, "invalid_task", NULL);
    refused("{\"kind\":\"sleep\",\"input\":{}}", 422, "invalid_task", "ms");
    refused("{\"kind\":\"sleep\",\"input\":{\"ms\":-1}}", 422, "invalid_task", "ms");
    refused("{\"kind\":\"sleep\",\"input\":{\"ms\":600001}}", 422, "invalid_task", "ms");
    refused("{\"kind\":\"sleep\",\"input\":{\"ms\":\"5\"}}", 422, "invalid_task", "ms");
    refused("{\"kind\":\"sleep\",\"input\":{\"ms\":1.5}}", 422, "invalid_task", "ms");
    refused("{\"kind\":\"sleep\",\"input\":{\"ms\":null}}", 422, "invalid_task", "ms");
    refused("{\"kind\":\"sleep\",\"input\":[100]}", 422, "invalid_task", NULL);
    refused("{\"kind\":\"sleep\",\"input\":100}", 422, "invalid_task", NULL);
    /* boundaries accepted (a high priority -1000 task; the server is stopped with a short grace) */
    accepted("{\"kind\":\"sleep\",\"input\":{\"ms\":0}}");
    accepted("{\"kind\":\"sleep\",\"input\":{\"ms\":600000},\"priority\":-1000}");
}

WP_TEST(test_null_optionals_take_defaults) {
    json_t *t = wp_submit(G, "{\"kind\":\"echo\",\"input\":null,\"priority\":null,\"max_attempts\":null,"
                             "\"timeout_ms\":null}");
    assert_int_equal(wp_int(t, "priority"), 0);
    assert_int_equal(wp_int(t, "max_attempts"), 1);
    assert_int_equal(wp_int(t, "timeout_ms"), 300000);
    assert_true(json_is_null(json_object_get(t, "input")));
    json_decref(t);
}

WP_TEST(test_content_type_ignored) {
    static const char *const types[] = {"Content-Type: application/x-www-form-urlencoded",
                                        "Content-Type: text/plain", "Content-Type: multipart/form-data",
                                        NULL};
    for (int i = 0; i < 4; i++) {
        const char *const h[] = {types[i], NULL};
        wp_req q = {.method = "POST", .path = "/v1/tasks",
                    .body = "{\"kind\":\"echo\",\"input\":{\"form\":true}}",
                    .headers = types[i] ? h : NULL, .no_default_content_type = (types[i] == NULL)};
        wp_resp r;
        wp_http(G, &q, &r);
        if (r.status != 202)
            fail_msg("POST with %s: want 202, got %ld: %s", types[i] ? types[i] : "no Content-Type", r.status, r.body);
        assert_true(json_is_true(json_object_get(json_object_get(r.json, "input"), "form")));
        wp_resp_free(&r);
    }
}

static void expect_survives(const char *what) {
    wp_resp r;
    wp_call(G, "GET", "/healthz", NULL, &r);
    if (r.status != 200) fail_msg("after %s: /healthz answered %ld", what, r.status);
    wp_resp_free(&r);
}

WP_TEST(test_deep_nesting) {
    enum { DEPTH = 100000 };
    char *body = malloc(DEPTH * 5 + 64);
    assert_non_null(body);
    /* 100000 '[' with no closing */
    size_t off = (size_t)sprintf(body, "{\"kind\":\"echo\",\"input\":");
    memset(body + off, '[', DEPTH);
    body[off + DEPTH] = '\0';
    wp_snap snap = wp_snapshot(G);
    wp_resp r;
    wp_call(G, "POST", "/v1/tasks", body, &r);
    if (r.status < 400 || r.status > 499) fail_msg("100000 '[': want 4xx, got %ld", r.status);
    wp_assert_error(&r, r.status, NULL, NULL);
    wp_resp_free(&r);
    expect_survives("100000 unclosed [");
    /* balanced, deeper than jansson's limit */
    memset(body + off + DEPTH, ']', DEPTH);
    strcpy(body + off + 2 * DEPTH, "}");
    wp_call(G, "POST", "/v1/tasks", body, &r);
    if (r.status < 400 || r.status > 499) fail_msg("100000 nested arrays: want 4xx, got %ld", r.status);
    wp_assert_error(&r, r.status, NULL, NULL);
    wp_resp_free(&r);
    expect_survives("100000 nested arrays");
    /* nested objects */
    off = (size_t)sprintf(body, "{\"kind\":\"echo\",\"input\":");
    for (int i = 0; i < DEPTH / 2; i++) {
        memcpy(body + off, "{\"a\":", 5);
        off += 5;
    }
    body[off] = '\0';
    wp_call(G, "POST", "/v1/tasks", body, &r);
    if (r.status < 400 || r.status > 499) fail_msg("50000 nested objects: want 4xx, got %ld", r.status);
    wp_assert_error(&r, r.status, NULL, NULL);
    wp_resp_free(&r);
    expect_survives("50000 nested objects");
    /* the same in a batch */
    off = (size_t)sprintf(body, "{\"tasks\":[{\"kind\":\"echo\",\"input\":");
    memset(body + off, '[', DEPTH);
    body[off + DEPTH] = '\0';
    wp_call(G, "POST", "/v1/tasks/batch", body, &r);
    if (r.status < 400 || r.status > 499) fail_msg("batch with 100000 '[': want 4xx, got %ld", r.status);
    wp_assert_error(&r, r.status, NULL, NULL);
    wp_resp_free(&r);
    expect_survives("batch nesting");
    wp_assert_unchanged(G, &snap, "deep nesting");
    free(body);
}

/* ------------------------------------------------------------- body size */

/* A valid task body of exactly n bytes (echo with a padded string). */
static char *body_of_size(size_t n) {
    const char *pre = "{\"kind\":\"echo\",\"input\":\"";
    const char *post = "\"}";
    size_t fixed = strlen(pre) + strlen(post);
    assert_true(n > fixed);
    char *b = malloc(n + 1);
    assert_non_null(b);
    strcpy(b, pre);
    memset(b + strlen(pre), 'x', n - fixed);
    strcpy(b + n - strlen(post), post);
    assert_int_equal(strlen(b), n);
    return b;
}

WP_TEST(test_max_body) {
    char *b = body_of_size(1024);
    json_t *t = wp_submit(SMALL, b);
    assert_int_equal(json_string_length(json_object_get(t, "input")), 1024 - 26);
    json_decref(t);
    free(b);

    b = body_of_size(1025);
    refused_on(SMALL, b, 1025, 413, "payload_too_large", NULL);
    free(b);
    b = body_of_size(100000);
    refused_on(SMALL, b, 100000, 413, "payload_too_large", NULL);

    /* chunked, no Content-Length */
    wp_snap snap = wp_snapshot(SMALL);
    wp_req q = {.method = "POST", .path = "/v1/tasks", .body = b, .body_len = 5000, .chunked = true};
    b[4998] = '"';
    b[4999] = '}';
    wp_resp r;
    wp_http(SMALL, &q, &r);
    wp_assert_error(&r, 413, "payload_too_large", NULL);
    wp_resp_free(&r);
    /* batch too */
    char *bb = malloc(2100);
    strcpy(bb, "{\"tasks\":[{\"kind\":\"echo\",\"input\":\"");
    memset(bb + strlen(bb), 'y', 2000);
    bb[2034] = '\0';
    strcat(bb, "\"}]}");
    refused_on(SMALL, bb, strlen(bb), 413, "payload_too_large", NULL);
    free(bb);
    wp_assert_unchanged(SMALL, &snap, "chunked body over the limit");
    free(b);

    /* The default limit is 1 MiB. */
    b = body_of_size(1048576 + 1);
    refused_on(G, b, 1048576 + 1, 413, "payload_too_large", NULL);
    free(b);
    b = body_of_size(1048576);
    json_decref(wp_submit(G, b));
    free(b);
}

WP_TEST(test_content_length_over_limit_answered_at_once) {
    wp_snap snap = wp_snapshot(SMALL);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: 50000\r\n\r\n",
                     SMALL->port);
    char *hdrs = NULL, *body = NULL;
    long el = 0;
    /* We send the headers only and never the body. */
    int status = wp_raw_http(SMALL, req, (size_t)n, 5000, &hdrs, &body, &el);
    if (status != 413)
        fail_msg("Content-Length 50000 over --max-body 1024, body not sent: want 413 at once, got %d after %ld ms: %.300s",
                 status, el, hdrs ? hdrs : "(nothing)");
    if (!strcasestr(hdrs, "\r\nContent-Type: application/json")) fail_msg("413 without JSON content type: %s", hdrs);
    json_t *j = json_loads(body ? body : "", 0, NULL);
    if (!j || strcmp(wp_str(json_object_get(j, "error"), "code"), "payload_too_large") != 0)
        fail_msg("413 body: %s", body ? body : "(none)");
    json_decref(j);
    free(hdrs);
    free(body);

    /* Same with Expect: 100-continue (curl's way for large bodies). */
    n = snprintf(req, sizeof req,
                 "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 "Expect: 100-continue\r\nContent-Length: 50000\r\n\r\n",
                 SMALL->port);
    status = wp_raw_http(SMALL, req, (size_t)n, 5000, &hdrs, &body, &el);
    if (status != 413) fail_msg("Expect: 100-continue with Content-Length over the limit: want 413, got %d: %.300s",
                                status, hdrs ? hdrs : "(nothing)");
    free(hdrs);
    free(body);
    wp_assert_unchanged(SMALL, &snap, "Content-Length over the limit");
}

/* ----------------------------------------------------------- paths/methods */

WP_TEST(test_unknown_paths) {
    /* "/" is the dashboard (issue 10) */
    static const char *const paths[] = {"/index.html", "/nope", "/v1", "/v1/", "/v1/nope", "/v2/tasks", "/v1/tasks/1/extra",
                                        "/v1/taskss", "/V1/tasks", "/healthz/x", "/v1/stats/x", "/v1/tasks/batch/x",
                                        "/metrics/x", "/v1/events/x", NULL};
    for (int i = 0; paths[i]; i++) {
        wp_resp r;
        wp_call(G, "GET", paths[i], NULL, &r);
        if (r.status != 404) fail_msg("GET %s: want 404 not_found, got %ld: %s", paths[i], r.status, r.body);
        wp_assert_error(&r, 404, "not_found", NULL);
        wp_resp_free(&r);
    }
    wp_snap snap = wp_snapshot(G);
    wp_resp r;
    wp_call(G, "POST", "/v1/nope", "{\"kind\":\"echo\"}", &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    wp_assert_unchanged(G, &snap, "POST to an unknown path");
}

static void expect_405(const char *method, const char *path, const char *allow_has) {
    wp_resp r;
    wp_req q = {.method = method, .path = path};
    if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0)
        q.body = "{\"kind\":\"echo\"}";
    wp_http(G, &q, &r);
    if (r.status != 405) fail_msg("%s %s: want 405, got %ld: %s", method, path, r.status, r.body);
    wp_assert_error(&r, 405, "method_not_allowed", NULL);
    if (!r.has_allow) fail_msg("%s %s: 405 without an Allow header", method, path);
    if (allow_has && !strstr(r.allow, allow_has))
        fail_msg("%s %s: Allow '%s' should list %s", method, path, r.allow, allow_has);
    if (strstr(r.allow, method)) fail_msg("%s %s: Allow '%s' lists the refused method", method, path, r.allow);
    wp_resp_free(&r);
}

WP_TEST(test_wrong_methods) {
    wp_snap snap = wp_snapshot(G);
    expect_405("PUT", "/v1/tasks", "POST");
    expect_405("PUT", "/v1/tasks", "GET");
    expect_405("POST", "/", "GET");
    expect_405("POST", "/metrics", "GET");
    expect_405("DELETE", "/v1/events", "GET");
    expect_405("DELETE", "/v1/tasks", "GET");
    char *p = wp_fmt("/v1/tasks/%s", G_done_id);
    expect_405("POST", p, "GET");
    expect_405("PUT", p, "DELETE");
    free(p);
    expect_405("POST", "/v1/tasks/123456789", "GET");
    expect_405("GET", "/v1/tasks/batch", "POST");
    expect_405("DELETE", "/v1/tasks/batch", "POST");
    expect_405("POST", "/v1/stats", "GET");
    expect_405("DELETE", "/v1/stats", "GET");
    expect_405("POST", "/healthz", "GET");
    expect_405("PUT", "/readyz", "GET");
    wp_assert_unchanged(G, &snap, "wrong methods");
}

WP_TEST(test_unknown_methods) {
    static const char *const methods[] = {"PATCH", "FROBNICATE", "OPTIONS", "TRACE", NULL};
    static const char *const paths[] = {"/v1/tasks", "/v1/tasks/1", "/v1/stats", NULL};
    wp_snap snap = wp_snapshot(G);
    for (int i = 0; methods[i]; i++)
        for (int j = 0; paths[j]; j++) {
            wp_resp r;
            wp_req q = {.method = methods[i], .path = paths[j]};
            wp_http(G, &q, &r);
            if (r.status != 405 && r.status != 501)
                fail_msg("%s %s: want 405 or 501, got %ld: %s", methods[i], paths[j], r.status, r.body);
            wp_assert_error(&r, r.status, NULL, NULL);
            if (r.status == 405 && !r.has_allow) fail_msg("%s %s: 405 without Allow", methods[i], paths[j]);
            wp_resp_free(&r);
        }
    wp_assert_unchanged(G, &snap, "unknown methods");
}

WP_TEST(test_malformed_ids) {
    char *digits = malloc(5001);
    memset(digits, '1', 5000);
    digits[5000] = '\0';
    char *big = malloc(8001);
    memset(big, '9', 8000);
    big[8000] = '\0';
    const char *const ids[] = {"abc", "-1", "0", "99999999999999999999999", "18446744073709551616",
                               "9223372036854775808", digits, big, "..%2F", "..%2F..%2Fetc%2Fpasswd", "%00",
                               "1%00", "%20", "1.5", "+1", "1e3", "0x10", "%2e%2e", "1abc", "%FF", NULL};
    /* Check every id, then report every wrong answer at once. */
    char report[4096] = "";
    size_t off = 0;
    int bad = 0;
    for (int i = 0; ids[i]; i++) {
        static const char *const methods[] = {"GET", "DELETE", "GET"};
        for (int m = 0; m < 3; m++) {
            char *path = wp_fmt("/v1/tasks/%s%s", ids[i], m == 2 ? "?wait=1" : "");
            wp_req q = {.method = methods[m], .path = path};
            wp_resp r;
            wp_http_nc(G, &q, &r);
            const char *code = json_is_object(r.json) ? wp_str(json_object_get(r.json, "error"), "code") : "";
            bool json_ok = r.has_content_type && strncmp(r.content_type, "application/json", 16) == 0;
            if (r.status != 404 || strcmp(code, "not_found") != 0 || !json_ok || (m == 2 && r.elapsed_ms > 900)) {
                bad++;
                if (off < sizeof report - 300)
                    off += (size_t)snprintf(report + off, sizeof report - off,
                                            "\n  %s /v1/tasks/%.40s%s%s: %ld after %ld ms: %.120s", methods[m],
                                            ids[i], strlen(ids[i]) > 40 ? "..." : "", m == 2 ? "?wait=1" : "",
                                            r.status, r.elapsed_ms, r.body ? r.body : r.errbuf);
            }
            wp_resp_free(&r);
            free(path);
        }
    }
    free(digits);
    free(big);
    if (bad) fail_msg("%d malformed-id requests did not get a JSON 404 not_found (promptly):%s", bad, report);
    /* A well-formed id that does not exist. */
    wp_resp r;
    wp_call(G, "GET", "/v1/tasks/987654321", NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
}

/* --------------------------------------------------------- query params */

static void bad_query(const char *path, const char *names) {
    wp_resp r;
    wp_call(G, "GET", path, NULL, &r);
    if (r.status != 400) fail_msg("GET %s: want 400 invalid_query, got %ld: %.300s", path, r.status, r.body);
    wp_assert_error(&r, 400, "invalid_query", names);
    wp_resp_free(&r);
}

static void good_query(const char *path) {
    wp_resp r;
    wp_call(G, "GET", path, NULL, &r);
    if (r.status != 200) fail_msg("GET %s: want 200, got %ld: %.300s", path, r.status, r.body);
    wp_resp_free(&r);
}

WP_TEST(test_query_params) {
    bad_query("/v1/tasks?state=bogus", "state");
    bad_query("/v1/tasks?state=PENDING", "state");
    bad_query("/v1/tasks?state=pending,running", "state");
    bad_query("/v1/tasks?limit=0", "limit");
    bad_query("/v1/tasks?limit=1001", "limit");
    bad_query("/v1/tasks?limit=abc", "limit");
    bad_query("/v1/tasks?limit=-1", "limit");
    bad_query("/v1/tasks?limit=1.5", "limit");
    bad_query("/v1/tasks?limit=10abc", "limit");
    bad_query("/v1/tasks?limit=%2010", "limit");
    bad_query("/v1/tasks?limit=99999999999999999999", "limit");
    bad_query("/v1/tasks?cursor=garbage", "cursor");
    bad_query("/v1/tasks?cursor=%25%25%25", "cursor");
    bad_query("/v1/tasks?cursor=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "cursor");
    bad_query("/v1/tasks?cursor=AAAAAAAAAAAAAAAA", "cursor");
    bad_query("/v1/tasks?limit=5&state=nope", "state");
    char *p = wp_fmt("/v1/tasks/%s?wait=-1", G_done_id);
    bad_query(p, "wait");
    free(p);
    static const char *const waits[] = {"61", "x", "1.5", "1e1", "99999999999999999999", "-0.5", "5s", NULL};
    for (int i = 0; waits[i]; i++) {
        p = wp_fmt("/v1/tasks/%s?wait=%s", G_done_id, waits[i]);
        bad_query(p, "wait");
        free(p);
    }
    good_query("/v1/tasks?limit=1");
    good_query("/v1/tasks?limit=1000");
    good_query("/v1/tasks?state=&kind=&limit=&cursor=");
    for (const char *const *s = (const char *const[]){"pending", "running", "succeeded", "failed", "canceled", NULL}; *s;
         s++) {
        p = wp_fmt("/v1/tasks?state=%s", *s);
        good_query(p);
        free(p);
    }
    p = wp_fmt("/v1/tasks/%s?wait=", G_done_id);
    good_query(p);
    free(p);
    p = wp_fmt("/v1/tasks/%s?wait=0", G_done_id);
    good_query(p);
    free(p);
    p = wp_fmt("/v1/tasks/%s?wait=60", G_done_id);
    good_query(p);
    free(p);
}

WP_TEST(test_tampered_cursor) {
    for (int i = 0; i < 3; i++) json_decref(wp_submit(G, "{\"kind\":\"echo\"}"));
    wp_resp r;
    wp_call(G, "GET", "/v1/tasks?limit=1", NULL, &r);
    assert_int_equal(r.status, 200);
    const char *cur = json_string_value(json_object_get(r.json, "next_cursor"));
    assert_non_null(cur);
    char *tampered = strdup(cur);
    size_t n = strlen(tampered);
    char *first = tampered;
    /* change the last character */
    tampered[n - 1] = tampered[n - 1] == 'A' ? 'B' : (tampered[n - 1] == '1' ? '2' : 'A');
    char *esc = curl_easy_escape(NULL, tampered, 0);
    char *p = wp_fmt("/v1/tasks?limit=1&cursor=%s", esc);
    bad_query(p, "cursor");
    free(p);
    /* truncated */
    free(first);
    tampered = strdup(cur);
    tampered[n / 2] = '\0';
    curl_free(esc);
    esc = curl_easy_escape(NULL, tampered, 0);
    p = wp_fmt("/v1/tasks?limit=1&cursor=%s", esc);
    bad_query(p, "cursor");
    free(p);
    curl_free(esc);
    free(tampered);
    wp_resp_free(&r);
}

/* The HTTP process never crashed (was never restarted) during all of the above. */
WP_TEST(test_http_process_survived) {
    expect_survives("all bad input");
    if (!G_http_pid) {
        print_message("note: could not identify the HTTP process pid; checked readiness only\n");
    } else if (!wp_pid_alive(G_http_pid) || wp_ppid_of(G_http_pid) != G->pid) {
        fail_msg("the HTTP process %d died during the bad-input tests (restarted by the supervisor?)",
                 (int)G_http_pid);
    }
    char *log = wp_server_read_log(G);
    if (strstr(log, "AddressSanitizer") || strstr(log, "runtime error:"))
        fail_msg("sanitizer report in the server log");
    free(log);
    wp_resp r;
    wp_call(G, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 200);
    wp_resp_free(&r);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_invalid_json, wp_test_teardown),
        cmocka_unit_test_teardown(test_empty_body, wp_test_teardown),
        cmocka_unit_test_teardown(test_integer_fields, wp_test_teardown),
        cmocka_unit_test_teardown(test_kind_and_unknown_fields, wp_test_teardown),
        cmocka_unit_test_teardown(test_sleep_validation, wp_test_teardown),
        cmocka_unit_test_teardown(test_null_optionals_take_defaults, wp_test_teardown),
        cmocka_unit_test_teardown(test_content_type_ignored, wp_test_teardown),
        cmocka_unit_test_teardown(test_deep_nesting, wp_test_teardown),
        cmocka_unit_test_teardown(test_max_body, wp_test_teardown),
        cmocka_unit_test_teardown(test_content_length_over_limit_answered_at_once, wp_test_teardown),
        cmocka_unit_test_teardown(test_unknown_paths, wp_test_teardown),
        cmocka_unit_test_teardown(test_wrong_methods, wp_test_teardown),
        cmocka_unit_test_teardown(test_unknown_methods, wp_test_teardown),
        cmocka_unit_test_teardown(test_malformed_ids, wp_test_teardown),
        cmocka_unit_test_teardown(test_query_params, wp_test_teardown),
        cmocka_unit_test_teardown(test_tampered_cursor, wp_test_teardown),
        cmocka_unit_test_teardown(test_http_process_survived, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.http_errors", tests, group_setup, group_teardown);
}
