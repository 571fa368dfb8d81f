/* queue.c -- the queue controls of API v1 (issue 13): retry a failed or canceled task
 * (POST /v1/tasks/{id}/retry), pause and resume a kind (POST /v1/kinds/{name}/pause,
 * /resume), and the paused kinds that /v1/stats shows. The store does the work
 * (store_retry, store_kind_pause); this file turns it into HTTP, events and wake-ups. */
#include "api/internal.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/wake.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define KIND_NAME_MAX 64

static enum MHD_Result
reply_no_store(struct MHD_Connection *conn)
{
    return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                           "the database cannot be opened; retry shortly");
}

/* ---------------------------------------------------------------- POST /v1/tasks/{id}/retry */

enum MHD_Result
api_tasks_retry(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    int64_t id;
    if (taskjson_parse_id(r->id, &id) != 0)
        return api_reply_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such task");
    if (atomic_load(&ctx->draining))
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                               "the service is shutting down; retry on its next start");
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    store_task t;
    int64_t now = clock_now_ms();
    int rc = store_retry(st, id, now, &t);
    if (rc == STORE_CONFLICT) {
        enum MHD_Result ret = api_reply_errorf(conn, MHD_HTTP_CONFLICT, "conflict",
                                               "task %" PRId64 " is %s; only a failed or "
                                               "canceled task can be retried", id,
                                               task_state_name(t.state));
        store_task_clear(&t);
        return ret;
    }
    if (rc == STORE_NOTFOUND)
        return api_reply_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such task");
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "retry", store_errmsg(st));
    /* pending again: an event as for a submission (attempts 0), counted as one, and an
     * idle worker woken (other instances: the store's NOTIFY) */
    events_publish(t.kind, t.id, "pending", t.attempts, NULL, now);
    metrics_task_submitted(t.kind);
    wake_post(ctx->cfg->wake, 1);
    log_event(LOG_INFO, "task retry requested", LOG_INT("task_id", t.id), LOG_STR("kind", t.kind),
              LOG_STR("request_id", r->request_id));
    json_t *body = taskjson_from_store(&t, 0);
    store_task_clear(&t);
    if (body == NULL)
        return MHD_NO;
    return api_reply_json(conn, MHD_HTTP_OK, body, NULL, NULL);
}

/* ---------------------------------------------------------------- POST /v1/kinds/{name}/... */

/* Is name paused in the store? 1 yes, 0 no, <0 a store error (-code). */
static int
is_paused(store *st, const char *name)
{
    char **names;
    size_t n;
    int rc = store_paused_kinds(st, &names, &n);
    if (rc != STORE_OK)
        return -rc;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(names[i], name) == 0;
    store_names_free(names, n);
    return found;
}

static enum MHD_Result
pause_or_resume(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r, int pause)
{
    const char *name = r->id;
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    /* a kind this instance knows; a resume also takes any paused name (a kind no longer
     * loaded, or loaded only by another instance sharing the database) */
    const struct api_hooks *h = &ctx->cfg->hooks;
    char why[256];
    json_t *null_input = json_null();
    int known = strlen(name) <= KIND_NAME_MAX &&
                (h->validate == NULL || h->validate(h->arg, name, null_input, why, sizeof why) >= 0);
    json_decref(null_input);
    if (!known && !pause && strlen(name) <= KIND_NAME_MAX) {
        int p = is_paused(st, name);
        if (p < 0)
            return api_reply_store_error(conn, -p, "resume", store_errmsg(st));
        known = p;
    }
    if (!known)
        return api_reply_errorf(conn, MHD_HTTP_NOT_FOUND, "unknown_kind",
                                "no kind named '%.64s'", name);
    int changed = 0;
    int rc = store_kind_pause(st, name, pause, clock_now_ms(), &changed);
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, pause ? "pause" : "resume", store_errmsg(st));
    /* a resume wakes every idle worker (wake.h caps the tokens at the pool's size): the
     * kind's tasks may be waiting. Other instances hear it from the store (NOTIFY). */
    if (!pause && changed)
        wake_post(ctx->cfg->wake, 1 << 16);
    log_event(LOG_INFO, pause ? "kind paused" : "kind resumed", LOG_STR("kind", name),
              LOG_INT("changed", changed), LOG_STR("request_id", r->request_id));
    return api_reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:s, s:b, s:b}", "kind", name, "paused", pause,
                                    "changed", changed),
                          NULL, NULL);
}

enum MHD_Result
api_kinds_pause(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    return pause_or_resume(ctx, conn, r, 1);
}

enum MHD_Result
api_kinds_resume(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    return pause_or_resume(ctx, conn, r, 0);
}

/* ---------------------------------------------------------------- /v1/stats */

json_t *
api_queue_paused(store *st, json_t *kinds, int *rc)
{
    char **names;
    size_t n;
    *rc = store_paused_kinds(st, &names, &n);
    if (*rc != STORE_OK)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++)
        json_array_append_new(arr, json_string(names[i]));
    size_t k;
    json_t *entry;
    json_array_foreach(kinds, k, entry) {
        const char *kn = json_string_value(json_object_get(entry, "name"));
        int paused = 0;
        for (size_t i = 0; kn != NULL && i < n && !paused; i++)
            paused = strcmp(names[i], kn) == 0;
        if (json_is_object(entry))
            json_object_set_new(entry, "paused", json_boolean(paused));
    }
    store_names_free(names, n);
    return arr;
}
