/* tasks.c -- the handlers of API v1: submit, batch, get (and wait), list, cancel,
 * stats, health. Each one is called by server.c once the whole body is in r->body;
 * submissions and waits are called again after their connection is resumed, and
 * r->phase says which call this is. */
#include "api/internal.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_TEXT 1024

static enum MHD_Result
reply_draining(struct MHD_Connection *conn)
{
    return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                           "the service is shutting down; retry on its next start");
}

static enum MHD_Result
reply_queue_full(struct MHD_Connection *conn)
{
    return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "queue_full",
                           "too many tasks are pending (--max-pending); nothing was stored, "
                           "retry later");
}

static enum MHD_Result
reply_no_store(struct MHD_Connection *conn)
{
    return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                           "the database cannot be opened; retry shortly");
}

/* The task as text straight from the store's strings (taskjson_text: no parse of its
 * input and result, no jansson objects), or through jansson when it cannot. */
static enum MHD_Result
reply_task(struct MHD_Connection *conn, unsigned int status, const store_task *t,
           int with_location)
{
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/tasks/%" PRId64, t->id);
    const char *hdr = with_location ? MHD_HTTP_HEADER_LOCATION : NULL;
    size_t len;
    char *text = taskjson_text(t, 0, &len);
    if (text != NULL)
        return api_reply_json_text(conn, status, text, len, hdr, with_location ? loc : NULL);
    json_t *body = taskjson_from_store(t, 0);
    if (body == NULL)
        return MHD_NO;
    return api_reply_json(conn, status, body, hdr, with_location ? loc : NULL);
}

/* Parses the body as a JSON object. NULL after replying 400 (*ret set). */
static json_t *
parse_body_object(struct MHD_Connection *conn, struct req *r, enum MHD_Result *ret)
{
    json_error_t e;
    /* an empty body is "" not NULL: json_loadb(NULL, 0) fails with "wrong arguments" */
    json_t *doc = json_loadb(r->body ? r->body : "", r->len, JSON_REJECT_DUPLICATES, &e);
    if (doc == NULL) {
        *ret = api_reply_errorf(conn, MHD_HTTP_BAD_REQUEST, "invalid_json",
                                "body is not valid JSON: %s (line %d, column %d)", e.text,
                                e.line, e.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        *ret = api_reply_error(conn, MHD_HTTP_BAD_REQUEST, "invalid_json",
                               "body must be a JSON object");
        return NULL;
    }
    return doc;
}

/* Allocates room for n submissions in r. 0, or -1 out of memory. */
static int
alloc_tasks(struct req *r, size_t n)
{
    r->tasks = calloc(n, sizeof *r->tasks);
    r->inputs = calloc(n, sizeof *r->inputs);
    r->job.out = calloc(n, sizeof *r->job.out);
    r->job.n = n;
    r->job.tasks = r->tasks;
    return r->tasks && r->inputs && r->job.out ? 0 : -1;
}

/* A query parameter's value; NULL when absent or empty (an empty value means no filter). */
static const char *
query(struct MHD_Connection *conn, const char *name)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* A decimal integer in [lo, hi]: 0, else -1. */
static int
parse_int_param(const char *text, long lo, long hi, long *out)
{
    size_t n = strlen(text);
    if (n == 0 || n > 10 || strspn(text, "0123456789") != n)
        return -1;
    long v = strtol(text, NULL, 10);
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void
start_commit(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    r->phase = PHASE_COMMIT;
    r->job.conn = conn;
    MHD_suspend_connection(conn);       /* before queueing: resume must follow suspend */
    writer_submit(ctx->writer, &r->job);
}

/* ---------------------------------------------------------------- POST /v1/tasks */

static void
log_submitted(const struct req *r, const store_task *t)
{
    log_event(LOG_DEBUG, "task submitted", LOG_INT("task_id", t->id), LOG_STR("kind", t->kind),
              LOG_STR("request_id", r->request_id));
}

/* POST ?wait=S, after the commit: holds the answer until the task is terminal (200) or
 * S seconds after the request came (then `status`, as without ?wait), with the waiters
 * of GET ?wait: no polling. */
static enum MHD_Result
hold_submission(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r,
                unsigned int status)
{
    store_task *t = &r->job.out[0];
    int64_t deadline = r->start_us / 1000 + (int64_t)r->wait_s * 1000;
    if (task_state_terminal(t->state) || atomic_load(&ctx->draining) ||
        clock_mono_ms() >= deadline)
        return reply_task(conn, task_state_terminal(t->state) ? MHD_HTTP_OK : status, t, 1);
    r->hold_status = status;
    r->phase = PHASE_WAIT;
    r->wait = (struct waiter){.conn = conn, .task_id = t->id, .deadline_ms = deadline};
    if (waiters_add(ctx->waiters, &r->wait) != 0)
        return reply_task(conn, status, t, 1);      /* the drain began: answer now */
    /* it may have finished between the commit and the registration */
    store *st = api_thread_store(ctx);
    store_task now;
    if (st == NULL || store_get(st, t->id, &now) != STORE_OK || task_state_terminal(now.state))
        waiters_wake(ctx->waiters, t->id);
    if (st != NULL)
        store_task_clear(&now);
    return MHD_YES;
}

/* A held request was resumed, and its task is not terminal: before its deadline (the
 * waiters looked again at every request after events may have been lost: a RESYNC),
 * it waits on. 1 when it is held again, 0 to answer now. */
static int
wait_again(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    if (atomic_load(&ctx->draining) || clock_mono_ms() >= r->wait.deadline_ms)
        return 0;
    int64_t id = r->wait.task_id, deadline = r->wait.deadline_ms;
    r->wait = (struct waiter){.conn = conn, .task_id = id, .deadline_ms = deadline};
    if (waiters_add(ctx->waiters, &r->wait) != 0)
        return 0;
    /* it may have finished since it was read */
    store *st = api_thread_store(ctx);
    store_task now;
    if (st == NULL || store_get(st, id, &now) != STORE_OK || task_state_terminal(now.state))
        waiters_wake(ctx->waiters, id);
    if (st != NULL)
        store_task_clear(&now);
    return 1;
}

/* POST ?wait=S, resumed: the task as it is now. */
static enum MHD_Result
submission_waited(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    store_task t;
    int rc = store_get(st, r->wait.task_id, &t);
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "get", store_errmsg(st));
    if (!task_state_terminal(t.state) && wait_again(ctx, conn, r)) {
        store_task_clear(&t);
        return MHD_YES;
    }
    enum MHD_Result ret =
        reply_task(conn, task_state_terminal(t.state) ? MHD_HTTP_OK : r->hold_status, &t, 1);
    store_task_clear(&t);
    return ret;
}

static enum MHD_Result
create_done(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    store_task *t = &r->job.out[0];
    switch (r->job.status) {
    case STORE_OK:
        log_submitted(r, t);
        if (r->wait_s > 0)
            return hold_submission(ctx, conn, r, MHD_HTTP_ACCEPTED);
        return reply_task(conn, MHD_HTTP_ACCEPTED, t, 1);
    case WRITER_QUEUE_FULL:
        return reply_queue_full(conn);
    case WRITER_SHUTTING_DOWN:
        return reply_draining(conn);
    case STORE_EXISTS:
        if (!taskjson_same_submission(t, &r->tasks[0]))
            return api_reply_errorf(conn, MHD_HTTP_CONFLICT, "idempotency_conflict",
                                    "Idempotency-Key was used for task %" PRId64
                                    " with a different body", t->id);
        if (r->wait_s > 0)              /* a repeat answers 200 whether it waited or not */
            return hold_submission(ctx, conn, r, MHD_HTTP_OK);
        return reply_task(conn, MHD_HTTP_OK, t, 1);
    default:
        return api_reply_store_error(conn, r->job.status, "submit", r->job.errmsg);
    }
}

enum MHD_Result
api_tasks_create(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    if (r->phase == PHASE_COMMIT)
        return create_done(ctx, conn, r);
    if (r->phase == PHASE_WAIT)
        return submission_waited(ctx, conn, r);
    if (atomic_load(&ctx->draining))
        return reply_draining(conn);

    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (key != NULL && (key[0] == '\0' || strlen(key) > API_MAX_IDEM_KEY))
        return api_reply_errorf(conn, MHD_HTTP_BAD_REQUEST, "invalid_request",
                                "Idempotency-Key must be 1 to %d characters", API_MAX_IDEM_KEY);
    long wait_s = 0;
    const char *wait = query(conn, "wait");
    if (wait != NULL && parse_int_param(wait, 0, API_MAX_WAIT_S, &wait_s) != 0)
        return api_reply_errorf(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                                "wait: must be an integer from 0 to %d (seconds)",
                                API_MAX_WAIT_S);
    r->wait_s = (int)wait_s;
    enum MHD_Result ret = MHD_YES;
    r->doc = parse_body_object(conn, r, &ret);
    if (r->doc == NULL)
        return ret;
    if (alloc_tasks(r, 1) != 0)
        return MHD_NO;
    char err[ERR_TEXT];
    if (taskjson_parse_submission(ctx, r->doc, "", &r->tasks[0], &r->inputs[0], err,
                                  sizeof err) != 0)
        return api_reply_error(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_task", err);
    if (key != NULL) {
        r->idem_key = strdup(key);      /* the header dies with the request's first pass */
        if (r->idem_key == NULL)
            return MHD_NO;
        r->tasks[0].idem_key = r->idem_key;
    }
    start_commit(ctx, conn, r);
    return MHD_YES;
}

/* ---------------------------------------------------------------- POST /v1/tasks/batch */

static enum MHD_Result
batch_done(struct MHD_Connection *conn, struct req *r)
{
    if (r->job.status == WRITER_QUEUE_FULL)
        return reply_queue_full(conn);
    if (r->job.status == WRITER_SHUTTING_DOWN)
        return reply_draining(conn);
    if (r->job.status != STORE_OK)
        return api_reply_store_error(conn, r->job.status, "batch submit", r->job.errmsg);
    /* {"tasks":[...]} from the tasks' texts (see reply_task), else through jansson */
    size_t cap = 16, len = 0;
    char *text = malloc(cap);
    for (size_t i = 0; text != NULL && i < r->job.n; i++) {
        size_t n;
        char *one = taskjson_text(&r->job.out[i], 0, &n);
        char *grown = one != NULL && len + n + 16 > cap ? realloc(text, cap = (len + n + 16) * 2)
                                                        : text;
        if (one == NULL || grown == NULL) {
            free(one);
            free(grown != NULL ? grown : text);
            text = NULL;
            break;
        }
        text = grown;
        len += (size_t)sprintf(text + len, "%s%s", i == 0 ? "{\"tasks\":[" : ",", one);
        free(one);
    }
    if (text != NULL) {
        memcpy(text + len, "]}", 3);
        for (size_t i = 0; i < r->job.n; i++)
            log_submitted(r, &r->job.out[i]);
        return api_reply_json_text(conn, MHD_HTTP_ACCEPTED, text, len + 2, NULL, NULL);
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < r->job.n; i++) {
        log_submitted(r, &r->job.out[i]);
        if (json_array_append_new(arr, taskjson_from_store(&r->job.out[i], 0)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (arr == NULL)
        return MHD_NO;
    return api_reply_json(conn, MHD_HTTP_ACCEPTED, json_pack("{s:o}", "tasks", arr), NULL,
                          NULL);
}

enum MHD_Result
api_tasks_batch(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    if (r->phase == PHASE_COMMIT)
        return batch_done(conn, r);
    if (atomic_load(&ctx->draining))
        return reply_draining(conn);
    enum MHD_Result ret = MHD_YES;
    r->doc = parse_body_object(conn, r, &ret);
    if (r->doc == NULL)
        return ret;
    const char *key;
    json_t *value;
    json_object_foreach(r->doc, key, value) {
        if (strcmp(key, "tasks") != 0)
            return api_reply_errorf(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_task",
                                    "%.200s: unknown field", key);
    }
    json_t *tasks = json_object_get(r->doc, "tasks");
    if (!json_is_array(tasks))
        return api_reply_error(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_task",
                               "tasks: required, an array of task bodies");
    size_t n = json_array_size(tasks);
    if (n == 0 || n > API_MAX_BATCH)
        return api_reply_errorf(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_task",
                                "tasks: must hold 1 to %d task bodies", API_MAX_BATCH);
    if (alloc_tasks(r, n) != 0)
        return MHD_NO;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(tasks, i);
        char where[48], err[ERR_TEXT];
        snprintf(where, sizeof where, "tasks[%zu].", i);
        if (!json_is_object(item))
            return api_reply_errorf(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_task",
                                    "tasks[%zu]: must be an object", i);
        if (taskjson_parse_submission(ctx, item, where, &r->tasks[i], &r->inputs[i], err,
                                      sizeof err) != 0)
            return api_reply_error(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_task", err);
    }
    start_commit(ctx, conn, r);
    return MHD_YES;
}

/* ---------------------------------------------------------------- GET /v1/tasks/{id} */

enum MHD_Result
api_tasks_get(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    int64_t id;
    if (taskjson_parse_id(r->id, &id) != 0)
        return api_reply_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such task");
    long wait_s = 0;
    const char *wait = query(conn, "wait");
    if (wait != NULL && parse_int_param(wait, 0, API_MAX_WAIT_S, &wait_s) != 0)
        return api_reply_errorf(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                                "wait: must be an integer from 0 to %d (seconds)",
                                API_MAX_WAIT_S);
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    store_task t;
    int rc = store_get(st, id, &t);
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "get", store_errmsg(st));

    if (r->phase == PHASE_WAIT && !task_state_terminal(t.state) && wait_again(ctx, conn, r)) {
        store_task_clear(&t);
        return MHD_YES;
    }
    int hold = r->phase == PHASE_NEW && wait_s > 0 && !task_state_terminal(t.state) &&
               !atomic_load(&ctx->draining);
    if (hold) {
        store_task_clear(&t);
        r->phase = PHASE_WAIT;
        r->wait = (struct waiter){.conn = conn, .task_id = id,
                                  .deadline_ms = clock_mono_ms() + wait_s * 1000};
        if (waiters_add(ctx->waiters, &r->wait) != 0) {
            /* the drain began after the check above: answer now */
            rc = store_get(st, id, &t);
            if (rc != STORE_OK)
                return api_reply_store_error(conn, rc, "get", store_errmsg(st));
            enum MHD_Result ret = reply_task(conn, MHD_HTTP_OK, &t, 0);
            store_task_clear(&t);
            return ret;
        }
        /* it may have finished between the read above and the registration */
        rc = store_get(st, id, &t);
        if (rc != STORE_OK || task_state_terminal(t.state))
            waiters_wake(ctx->waiters, id);
        store_task_clear(&t);
        return MHD_YES;
    }
    enum MHD_Result ret = reply_task(conn, MHD_HTTP_OK, &t, 0);
    store_task_clear(&t);
    return ret;
}

/* ---------------------------------------------------------------- GET /v1/tasks */

enum MHD_Result
api_tasks_list(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)r;
    store_filter f = {.limit = API_DEFAULT_LIMIT};
    const char *state = query(conn, "state");
    if (state != NULL) {
        if (task_state_parse(state, &f.state) != 0)
            return api_reply_error(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                                   "state: must be pending, running, succeeded, failed or "
                                   "canceled");
        f.has_state = 1;
    }
    f.kind = query(conn, "kind");
    const char *limit = query(conn, "limit");
    long lim;
    if (limit != NULL) {
        if (parse_int_param(limit, 1, API_MAX_LIMIT, &lim) != 0)
            return api_reply_errorf(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                                    "limit: must be an integer from 1 to %d", API_MAX_LIMIT);
        f.limit = (int)lim;
    }
    const char *cursor = query(conn, "cursor");
    if (cursor != NULL && taskjson_cursor_decode(ctx->cursor_secret, cursor, &f.before_id) != 0)
        return api_reply_error(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                               "cursor: not a cursor this service issued");
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    store_task *items;
    size_t n;
    int more;
    int rc = store_list(st, &f, &items, &n, &more);
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "list", store_errmsg(st));
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        if (arr != NULL && json_array_append_new(arr, taskjson_from_store(&items[i], 1)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *next = json_null();
    if (more && n > 0) {
        char c[64];
        taskjson_cursor_encode(ctx->cursor_secret, items[n - 1].id, c);
        json_decref(next);
        next = json_string(c);
    }
    for (size_t i = 0; i < n; i++)
        store_task_clear(&items[i]);
    free(items);
    if (arr == NULL) {
        json_decref(next);
        return MHD_NO;
    }
    return api_reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:o, s:o}", "tasks", arr, "next_cursor", next), NULL, NULL);
}

/* ---------------------------------------------------------------- DELETE /v1/tasks/{id} */

enum MHD_Result
api_tasks_cancel(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    int64_t id;
    if (taskjson_parse_id(r->id, &id) != 0)
        return api_reply_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such task");
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    store_task t;
    int rc = store_cancel(st, id, clock_now_ms(), &t);
    if (rc == STORE_CONFLICT) {
        enum MHD_Result ret = api_reply_errorf(conn, MHD_HTTP_CONFLICT, "conflict",
                                               "task %" PRId64 " is %s; only a pending task "
                                               "can be canceled", id, task_state_name(t.state));
        store_task_clear(&t);
        return ret;
    }
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "cancel", store_errmsg(st));
    api_events_canceled(&t);
    waiters_wake(ctx->waiters, id);
    enum MHD_Result ret = reply_task(conn, MHD_HTTP_OK, &t, 0);
    store_task_clear(&t);
    return ret;
}

/* ---------------------------------------------------------------- stats and health */

/* The live instances sharing the store (store_instances), as the API shows them. */
static int
stats_instances(store *st, json_t **out)
{
    store_instance *v;
    size_t n;
    *out = NULL;
    int rc = store_instances(st, &v, &n);
    if (rc != STORE_OK)
        return rc;
    const store_instance *self = store_instance_self();
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        char id[24], started[CLOCK_RFC3339_LEN], seen[CLOCK_RFC3339_LEN];
        snprintf(id, sizeof id, "%" PRId64, v[i].id);
        clock_format_rfc3339(v[i].started_at_ms, started);
        clock_format_rfc3339(v[i].last_seen_ms, seen);
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:I, s:i, s:I, s:s, s:s, s:b}", "id", id, "name",
                           v[i].name, "host", v[i].host, "pid", (json_int_t)v[i].pid,
                           "workers", v[i].workers, "lease_ms", (json_int_t)v[i].lease_ms,
                           "started_at", started, "last_seen", seen, "self",
                           self != NULL && self->id == v[i].id));
    }
    free(v);
    *out = arr;
    return STORE_OK;
}

enum MHD_Result
api_stats(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)r;
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return reply_no_store(conn);
    int64_t counts[TASK_STATE_COUNT];
    int rc = store_count_states(st, counts);
    if (rc != STORE_OK)
        return api_reply_store_error(conn, rc, "stats", store_errmsg(st));
    json_t *tasks = json_object();
    for (int i = 0; tasks != NULL && i < TASK_STATE_COUNT; i++)
        json_object_set_new(tasks, task_state_name((enum task_state)i),
                            json_integer(counts[i]));
    json_t *instances = NULL;
    if ((rc = stats_instances(st, &instances)) != STORE_OK) {
        json_decref(tasks);
        return api_reply_store_error(conn, rc, "stats", store_errmsg(st));
    }
    const struct api_hooks *h = &ctx->cfg->hooks;
    json_t *workers = h->workers ? h->workers(h->arg) : json_array();
    json_t *kinds = h->kinds ? h->kinds(h->arg) : json_array();
    json_t *paused = api_queue_paused(st, kinds, &rc);     /* issue 13 */
    if (paused == NULL) {
        json_decref(tasks);
        json_decref(instances);
        json_decref(workers);
        json_decref(kinds);
        return api_reply_store_error(conn, rc, "stats", store_errmsg(st));
    }
    int64_t uptime = (clock_now_ms() - ctx->cfg->started_at_ms) / 1000;
    json_t *body = json_pack("{s:o*, s:o*, s:o*, s:o*, s:o, s:I, s:s}", "tasks", tasks,
                             "workers", workers, "kinds", kinds, "instances", instances,
                             "paused_kinds", paused, "uptime_s", (json_int_t)uptime,
                             "version", WARMPOOL_VERSION);
    if (body == NULL)
        return MHD_NO;
    return api_reply_json(conn, MHD_HTTP_OK, body, NULL, NULL);
}

enum MHD_Result
api_healthz(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)ctx;
    (void)r;
    return api_reply_json(conn, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL, NULL);
}

enum MHD_Result
api_readyz(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)r;
    if (atomic_load(&ctx->draining))
        return reply_draining(conn);
    store *st = api_thread_store(ctx);
    if (st == NULL)
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                               "the database cannot be opened");
    if (store_ping(st) != STORE_OK)
        return api_reply_errorf(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                                "the database cannot be read: %s", store_errmsg(st));
    const struct api_hooks *h = &ctx->cfg->hooks;
    int alive = h->workers_alive ? h->workers_alive(h->arg) : 0;
    if (alive < 1)
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                               "no worker is alive");
    return api_reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:s, s:i}", "status", "ready", "workers", alive), NULL,
                          NULL);
}

/* ---------------------------------------------------------------- POST /v1/admin/reload */

enum MHD_Result
api_admin_reload(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)r;
    /* only with a token: an open reload would let anyone make the service rebuild */
    if (ctx->cfg->request_reload == NULL || ctx->cfg->api_token == NULL ||
        ctx->cfg->api_token[0] == '\0')
        return api_reply_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                               "reload over HTTP needs --api-token; send SIGHUP instead");
    if (ctx->cfg->request_reload() != 0)
        return api_reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                               "could not signal the supervisor");
    return api_reply_json(conn, MHD_HTTP_ACCEPTED,
                          json_pack("{s:s}", "status", "reload requested; see /v1/stats "
                                                       "for each kind's generation"),
                          NULL, NULL);
}
