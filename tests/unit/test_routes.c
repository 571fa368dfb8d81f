/* test_routes.c -- the route table (api/routes.c): handlers, 404, 405 and Allow; and the
 * table against the OpenAPI document built into the binary (api/openapi.json). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "api/internal.h"

static struct req g_r;

static int
match(const char *method, const char *path)
{
    free(g_r.id);
    memset(&g_r, 0, sizeof g_r);
    return routes_match(method, path, &g_r);
}

static int
teardown(void **state)
{
    (void)state;
    free(g_r.id);
    memset(&g_r, 0, sizeof g_r);
    return 0;
}

static void
expect_route(const char *method, const char *path, api_handler h, const char *id)
{
    int rc = match(method, path);
    if (rc != 0 || g_r.handler != h)
        fail_msg("%s %s: want a match, got %d", method, path, rc);
    if (id == NULL)
        assert_null(g_r.id);
    else {
        assert_non_null(g_r.id);
        assert_string_equal(g_r.id, id);
    }
}

static void
test_every_route(void **state)
{
    (void)state;
    expect_route("POST", "/v1/tasks", api_tasks_create, NULL);
    expect_route("GET", "/v1/tasks", api_tasks_list, NULL);
    expect_route("POST", "/v1/tasks/batch", api_tasks_batch, NULL);
    expect_route("GET", "/v1/tasks/123", api_tasks_get, "123");
    expect_route("DELETE", "/v1/tasks/123", api_tasks_cancel, "123");
    expect_route("GET", "/v1/stats", api_stats, NULL);
    expect_route("GET", "/healthz", api_healthz, NULL);
    expect_route("GET", "/readyz", api_readyz, NULL);
    expect_route("POST", "/v1/admin/reload", api_admin_reload, NULL);
    expect_route("GET", "/openapi.json", api_openapi, NULL);
    expect_route("GET", "/v1/events", api_events, NULL);
    expect_route("GET", "/metrics", api_metrics, NULL);
    expect_route("GET", "/", api_dashboard, NULL);
}

/* The access log names the route's template, never the path itself. */
static void
test_route_templates(void **state)
{
    (void)state;
    assert_int_equal(match("GET", "/v1/tasks/123"), 0);
    assert_string_equal(g_r.route, "/v1/tasks/{id}");
    assert_int_equal(match("PUT", "/v1/tasks/abc"), 405);
    assert_string_equal(g_r.route, "/v1/tasks/{id}");
    assert_int_equal(match("GET", "/v1/tasks/batch"), 405);
    assert_string_equal(g_r.route, "/v1/tasks/batch");
    assert_int_equal(match("GET", "/v1/tasks"), 0);
    assert_string_equal(g_r.route, "/v1/tasks");
    assert_int_equal(match("GET", "/nowhere/123"), 404);
    assert_null(g_r.route);
}

static json_t *
openapi_doc(void)
{
    json_error_t e;
    json_t *doc = json_loadb(API_OPENAPI_JSON, API_OPENAPI_JSON_LEN, JSON_REJECT_DUPLICATES, &e);
    if (doc == NULL)
        fail_msg("api/openapi.json is not JSON: %s (line %d, column %d)", e.text, e.line,
                 e.column);
    return doc;
}

static int
is_http_method(const char *key)
{
    static const char *const M[] = {"get", "put", "post", "delete", "options", "head", "patch",
                                    "trace"};
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++)
        if (strcmp(key, M[i]) == 0)
            return 1;
    return 0;
}

/* Both ways: every route of the table is in the document, with its method, and every
 * operation of the document is a route of the table. A new route fails here until it is
 * described (api/routes.c has the checklist). */
static void
test_routes_and_openapi_agree(void **state)
{
    (void)state;
    json_t *doc = openapi_doc();
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    const char *version = json_string_value(json_object_get(json_object_get(doc, "info"),
                                                            "version"));
    if (version == NULL || strcmp(version, WARMPOOL_VERSION) != 0)
        fail_msg("api/openapi.json info.version is '%s', the build is %s", version,
                 WARMPOOL_VERSION);
    json_t *paths = json_object_get(doc, "paths");
    assert_true(json_is_object(paths));
    char missing[2048] = "";
    for (size_t i = 0; i < routes_count(); i++) {
        const char *method, *pattern;
        routes_at(i, &method, &pattern);
        char lower[16];
        size_t k = 0;
        for (; method[k] != '\0' && k + 1 < sizeof lower; k++)
            lower[k] = (char)tolower((unsigned char)method[k]);
        lower[k] = '\0';
        json_t *op = json_object_get(json_object_get(paths, pattern), lower);
        if (!json_is_object(op) || !json_is_object(json_object_get(op, "responses")))
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing),
                     "\n  %s %s (api/routes.c) is not described in api/openapi.json", method,
                     pattern);
    }
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item) {
        const char *key;
        json_t *op;
        json_object_foreach(item, key, op) {
            if (!is_http_method(key))
                continue;
            int found = 0;
            for (size_t i = 0; i < routes_count() && !found; i++) {
                const char *method, *pattern;
                routes_at(i, &method, &pattern);
                found = strcmp(pattern, path) == 0 && strcasecmp(method, key) == 0;
            }
            if (!found)
                snprintf(missing + strlen(missing), sizeof missing - strlen(missing),
                         "\n  %s %s is in api/openapi.json but not in api/routes.c", key, path);
        }
    }
    json_decref(doc);
    if (missing[0] != '\0')
        fail_msg("routes and OpenAPI document disagree:%s", missing);
}

static void
test_id_captured_verbatim(void **state)
{
    (void)state;
    expect_route("GET", "/v1/tasks/..%2F", api_tasks_get, "..%2F");
    expect_route("GET", "/v1/tasks/abc", api_tasks_get, "abc");
    expect_route("DELETE", "/v1/tasks/-1", api_tasks_cancel, "-1");
    expect_route("GET", "/v1/tasks/9223372036854775808", api_tasks_get,
                 "9223372036854775808");
    expect_route("GET", "/v1/tasks/batchX", api_tasks_get, "batchX");
    /* an id of several thousand characters is still just a segment */
    static char path[6000], id[5001];
    memset(id, '7', 5000);
    id[5000] = '\0';
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    expect_route("GET", path, api_tasks_get, id);
}

static void
test_unknown_paths_404(void **state)
{
    (void)state;
    const char *paths[] = {
        "", "/v1", "/v1/", "/v1/task", "/metrics/", "/v1/events/", "/index.html", "//", "/v1/tasksx", "/v1/tasks/", "/v1/tasks//",
        "/v1/tasks/1/x", "/v1/tasks/1/", "/v1/tasks/batch/", "/v1/tasks/batch/1",
        "/v1/stats/", "/healthz/", "/readyz/x", "/V1/tasks", "/v2/tasks", "//v1/tasks",
        "/v1//tasks", "v1/tasks",
    };
    const char *methods[] = {"GET", "POST", "DELETE", "PUT"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
            int rc = match(methods[m], paths[i]);
            if (rc != 404)
                fail_msg("%s '%s': want 404, got %d", methods[m], paths[i], rc);
            assert_null(g_r.handler);
            assert_null(g_r.id);
            assert_string_equal(g_r.allow, "");
        }
    }
}

static void
expect_405(const char *method, const char *path, const char *allow)
{
    int rc = match(method, path);
    if (rc != 405 || strcmp(g_r.allow, allow) != 0)
        fail_msg("%s %s: want 405 Allow '%s', got %d Allow '%s'", method, path, allow, rc,
                 g_r.allow);
    assert_null(g_r.handler);
    assert_null(g_r.id);
}

static void
test_wrong_method_405(void **state)
{
    (void)state;
    expect_405("DELETE", "/v1/tasks", "POST, GET");
    expect_405("PUT", "/v1/tasks", "POST, GET");
    expect_405("PATCH", "/v1/tasks", "POST, GET");
    expect_405("POST", "/v1/tasks/123", "GET, DELETE");
    expect_405("PUT", "/v1/tasks/123", "GET, DELETE");
    expect_405("HEAD", "/v1/tasks/..%2F", "GET, DELETE");
    expect_405("GET", "/v1/tasks/batch", "POST");
    expect_405("DELETE", "/v1/tasks/batch", "POST");
    expect_405("PUT", "/v1/tasks/batch", "POST");
    expect_405("POST", "/v1/stats", "GET");
    expect_405("DELETE", "/healthz", "GET");
    expect_405("POST", "/readyz", "GET");
    expect_405("get", "/healthz", "GET");      /* methods are case-sensitive */
    expect_405("POST", "/", "GET");
    expect_405("POST", "/metrics", "GET");
    expect_405("DELETE", "/v1/events", "GET");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_route, teardown),
        cmocka_unit_test_teardown(test_id_captured_verbatim, teardown),
        cmocka_unit_test_teardown(test_unknown_paths_404, teardown),
        cmocka_unit_test_teardown(test_wrong_method_405, teardown),
        cmocka_unit_test_teardown(test_route_templates, teardown),
        cmocka_unit_test(test_routes_and_openapi_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
