/* routes.c -- the one table of every URL the API serves: method, path, handler.
 *
 * Checklist for a new route: add it here, describe it in api/openapi.json (the unit
 * test test_routes.c fails until every route of this table is there, and the contract
 * test calls each documented one), and in docs/api.md.
 *
 * A pattern segment "{id}" (or any "{name}") matches any one non-empty path segment,
 * handed to the handler in r->id; the handler decides whether it is a valid id or name
 * (an invalid one is a 404, never a 500). At most one such segment per pattern. */
#include "api/internal.h"

#include <stdlib.h>
#include <string.h>

struct route {
    const char *method;
    const char *pattern;
    api_handler handler;
};

/* Order matters where patterns overlap: the batch path comes before the {id} path. */
static const struct route ROUTES[] = {
    {"POST",   "/v1/tasks",       api_tasks_create},
    {"GET",    "/v1/tasks",       api_tasks_list},
    {"POST",   "/v1/tasks/batch", api_tasks_batch},
    {"GET",    "/v1/tasks/{id}",  api_tasks_get},
    {"DELETE", "/v1/tasks/{id}",  api_tasks_cancel},
    {"GET",    "/v1/stats",       api_stats},
    {"GET",    "/healthz",        api_healthz},
    {"GET",    "/readyz",         api_readyz},
    {"POST",   "/v1/admin/reload", api_admin_reload},
    {"GET",    "/openapi.json",   api_openapi},
    {"GET",    "/v1/events",      api_events},
    {"GET",    "/metrics",        api_metrics},
    {"GET",    "/",               api_dashboard},
    /* issue 13 (api/queue.c) */
    {"POST",   "/v1/tasks/{id}/retry",     api_tasks_retry},
    {"POST",   "/v1/kinds/{name}/pause",   api_kinds_pause},
    {"POST",   "/v1/kinds/{name}/resume",  api_kinds_resume},
};
#define N_ROUTES (sizeof ROUTES / sizeof ROUTES[0])

/* Does path match pattern? On a match with "{id}", *seg and *seg_len delimit the segment. */
static int
path_matches(const char *pattern, const char *path, const char **seg, size_t *seg_len)
{
    const char *hole = strchr(pattern, '{');
    if (hole == NULL)
        return strcmp(pattern, path) == 0;
    const char *after = strchr(hole, '}') + 1;
    size_t pre = (size_t)(hole - pattern);
    if (strncmp(pattern, path, pre) != 0)
        return 0;
    const char *s = path + pre;
    size_t n = strcspn(s, "/");
    if (n == 0 || strcmp(s + n, after) != 0)
        return 0;
    *seg = s;
    *seg_len = n;
    return 1;
}

int
routes_match(const char *method, const char *path, struct req *r)
{
    int path_known = 0, exact_known = 0;
    size_t allow_len = 0;
    r->allow[0] = '\0';
    for (size_t i = 0; i < N_ROUTES; i++) {
        const char *seg = NULL;
        size_t seg_len = 0;
        if (!path_matches(ROUTES[i].pattern, path, &seg, &seg_len))
            continue;
        /* "/v1/tasks/batch" also matches "/v1/tasks/{id}": its Allow lists only its own */
        if (exact_known && seg != NULL)
            continue;
        path_known = 1;
        exact_known |= seg == NULL;
        r->route = ROUTES[i].pattern;
        if (strcmp(method, ROUTES[i].method) == 0) {
            r->handler = ROUTES[i].handler;
            if (seg != NULL) {
                r->id = strndup(seg, seg_len);
                if (r->id == NULL)
                    return 500;
            }
            return 0;
        }
        size_t m = strlen(ROUTES[i].method);
        if (allow_len + m + 3 < sizeof r->allow) {
            if (allow_len > 0) {
                memcpy(r->allow + allow_len, ", ", 2);
                allow_len += 2;
            }
            memcpy(r->allow + allow_len, ROUTES[i].method, m + 1);
            allow_len += m;
        }
    }
    return path_known ? 405 : 404;
}

size_t routes_count(void) { return N_ROUTES; }

void
routes_at(size_t i, const char **method, const char **pattern)
{
    *method = ROUTES[i].method;
    *pattern = ROUTES[i].pattern;
}
