/* test_routes.c -- the route table (api/routes.c): handlers, 404, 405 and Allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        "/", "", "/v1", "/v1/", "/v1/task", "/v1/tasksx", "/v1/tasks/", "/v1/tasks//",
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
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_route, teardown),
        cmocka_unit_test_teardown(test_id_captured_verbatim, teardown),
        cmocka_unit_test_teardown(test_unknown_paths_404, teardown),
        cmocka_unit_test_teardown(test_wrong_method_405, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
