/* backend.c -- store.h's functions: each picks the implementation (backend.h) by the
 * database's name, or by the connection; and what both implementations share (state
 * names, freeing tasks and counts, this process's instance). */
#include "storage/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- shared */

static const char *const STATE_NAMES[TASK_STATE_COUNT] = {
    "pending", "running", "succeeded", "failed", "canceled",
};

const char *
task_state_name(enum task_state st)
{
    return (unsigned)st < TASK_STATE_COUNT ? STATE_NAMES[st] : NULL;
}

int
task_state_parse(const char *name, enum task_state *out)
{
    for (int i = 0; i < TASK_STATE_COUNT; i++) {
        if (strcmp(name, STATE_NAMES[i]) == 0) {
            *out = (enum task_state)i;
            return 0;
        }
    }
    return -1;
}

void
store_task_clear(store_task *t)
{
    if (t == NULL)
        return;
    free(t->kind);
    free(t->input);
    free(t->result);
    free(t->error_code);
    free(t->error_message);
    free(t->callback_url);
    free(t->callback_error);
    free(t->previous_error_code);
    free(t->previous_error_message);
    *t = (store_task){0};
}

void
store_kind_counts_free(store_kind_counts *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i].kind);
    free(v);
}

const char *
store_errmsg(const store *s)
{
    return s ? STORE_BASE(s)->errmsg : "no store";
}

/* ---------------------------------------------------------------- which backend */

enum store_backend
store_backend_of(const char *db)
{
    if (db != NULL && (strncasecmp(db, "postgres://", 11) == 0 ||
                       strncasecmp(db, "postgresql://", 13) == 0))
        return STORE_POSTGRES;
    return STORE_SQLITE;
}

static const struct store_ops *
ops_of(const char *db)
{
    return store_backend_of(db) == STORE_POSTGRES ? &store_pg_ops : &store_sqlite_ops;
}

int
store_name_check(const char *db, char *err, size_t errlen)
{
    return ops_of(db)->name_check(db, err, errlen);
}

void
store_describe(const char *db, char *out, size_t outlen)
{
    ops_of(db)->describe(db, out, outlen);
}

/* ---------------------------------------------------------------- this instance */

int64_t
store_heartbeat_every_ms(int64_t lease_ms)
{
    int64_t every = lease_ms / 4;
    return every > 1000 ? 1000 : every < 100 ? 100 : every;
}

static store_instance g_self;
static int g_have_self;
static const struct store_ops *g_self_ops;      /* whose store_start() made it */

void
store_set_self(const store_instance *inst)
{
    g_self = *inst;
    g_have_self = 1;
}

const store_instance *
store_instance_self(void)
{
    return g_have_self ? &g_self : NULL;
}

void
store_instance_adopt(const store_instance *inst)
{
    store_set_self(inst);
}

void
store_instance_end(void)
{
    if (g_self_ops != NULL)
        g_self_ops->instance_end();
    g_self_ops = NULL;
}

/* ---------------------------------------------------------------- by name */

int
store_migrate(const char *db, store_progress_fn *progress, void *arg, int *from, char *err,
              size_t errlen)
{
    return ops_of(db)->migrate(db, progress, arg, from, err, errlen);
}

int
store_start(const char *db, store_instance *inst, store_progress_fn *progress, void *arg,
            store_start_report *rep, char *err, size_t errlen)
{
    store_start_report none;
    const struct store_ops *ops = ops_of(db);
    int rc = ops->start(db, inst, progress, arg, rep != NULL ? rep : &none, err, errlen);
    if (rc == STORE_OK)
        g_self_ops = ops;
    return rc;
}

store *
store_open(const char *db, int flags, int busy_ms, char *err, size_t errlen)
{
    return ops_of(db)->open(db, flags, busy_ms, err, errlen);
}

/* ---------------------------------------------------------------- by connection */

void
store_close(store *s)
{
    if (s != NULL)
        STORE_BASE(s)->ops->close(s);
}

int store_schema_version(store *s) { return STORE_BASE(s)->ops->schema_version(s); }
int store_begin(store *s) { return STORE_BASE(s)->ops->begin(s); }
int store_commit(store *s) { return STORE_BASE(s)->ops->commit(s); }
void store_rollback(store *s) { STORE_BASE(s)->ops->rollback(s); }

int
store_insert(store *s, const store_new_task *nt, int64_t now_ms, store_task *out)
{
    return STORE_BASE(s)->ops->insert(s, nt, now_ms, out);
}

int
store_insert_batch(store *s, const store_new_task *nt, size_t n, int64_t now_ms,
                   store_task *out, int *status)
{
    return STORE_BASE(s)->ops->insert_batch(s, nt, n, now_ms, out, status);
}

int store_get(store *s, int64_t id, store_task *out) { return STORE_BASE(s)->ops->get(s, id, out); }

int
store_list(store *s, const store_filter *f, store_task **items, size_t *n, int *more)
{
    return STORE_BASE(s)->ops->list(s, f, items, n, more);
}

int
store_cancel(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    return STORE_BASE(s)->ops->cancel(s, id, now_ms, out);
}

int
store_claim_next(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
                 store_task *out)
{
    return STORE_BASE(s)->ops->claim_next(s, now_ms, owner, skip, out);
}

int
store_finish(store *s, int64_t id, int attempt, const store_outcome *o)
{
    return STORE_BASE(s)->ops->finish(s, id, attempt, o);
}

int
store_finish_claim(store *s, int64_t id, int attempt, const store_outcome *o, int64_t now_ms,
                   long owner, const store_kind_set *skip, store_task *next, int *claimed)
{
    return STORE_BASE(s)->ops->finish_claim(s, id, attempt, o, now_ms, owner, skip, next,
                                            claimed);
}

int
store_record_batch(store *s, store_done *done, size_t ndone, const store_claim_ref *back,
                   size_t nback, int64_t now_ms, long owner, const store_kind_set *skip,
                   size_t want, size_t share, store_task *next, size_t *nclaimed)
{
    *nclaimed = 0;
    if (want > STORE_BASE(s)->ops->batch_max)
        want = STORE_BASE(s)->ops->batch_max;
    return STORE_BASE(s)->ops->record_batch(s, done, ndone, back, nback, now_ms, owner, skip,
                                            want, share ? share : 1, next, nclaimed);
}

size_t
store_batch_max(store *s)
{
    return STORE_BASE(s)->ops->batch_max;
}

int
store_marks_started(store *s)
{
    return STORE_BASE(s)->ops->mark_started != NULL;
}

int
store_mark_started(store *s, int64_t id, int attempt, int64_t started_ms, int64_t prev_id,
                   int prev_attempt, int64_t prev_started_ms)
{
    if (STORE_BASE(s)->ops->mark_started == NULL)
        return STORE_NOTFOUND;
    return STORE_BASE(s)->ops->mark_started(s, id, attempt, started_ms, prev_id,
                                            prev_attempt, prev_started_ms);
}

int
store_release_lost(store *s, long owner, int64_t running_id, int64_t now_ms, const char *code,
                   const char *message, store_task_ref *released, size_t cap, size_t *n)
{
    return STORE_BASE(s)->ops->release_lost(s, owner, running_id, now_ms, code, message,
                                            released, cap, n);
}

int
store_recover_running(store *s, int64_t now_ms, int *requeued, int *failed)
{
    size_t n;
    return STORE_BASE(s)->ops->recover_running(s, now_ms, requeued, failed, NULL, 0, &n);
}

int
store_count_states(store *s, int64_t counts[TASK_STATE_COUNT])
{
    return STORE_BASE(s)->ops->count_states(s, counts);
}

int
store_count_kinds(store *s, store_kind_counts **out, size_t *n)
{
    return STORE_BASE(s)->ops->count_kinds(s, out, n);
}

int
store_has_ready(store *s, int64_t now_ms, const store_kind_set *skip)
{
    return STORE_BASE(s)->ops->has_ready(s, now_ms, skip);
}

int64_t
store_next_run_after(store *s, int64_t now_ms)
{
    return STORE_BASE(s)->ops->next_run_after(s, now_ms);
}

int64_t store_count_pending(store *s) { return STORE_BASE(s)->ops->count_pending(s); }

int
store_purge(store *s, int64_t before_ms, int limit, int *deleted)
{
    return STORE_BASE(s)->ops->purge(s, before_ms, limit, deleted);
}

int
store_maintain(store *s, char *note, size_t notelen)
{
    if (notelen > 0)
        note[0] = '\0';
    return STORE_BASE(s)->ops->maintain(s, note, notelen);
}

int store_ping(store *s) { return STORE_BASE(s)->ops->ping(s); }
uint64_t store_secret(store *s) { return STORE_BASE(s)->ops->secret(s); }
int64_t store_size_bytes(store *s) { return STORE_BASE(s)->ops->size_bytes(s); }

int
store_explain(store *s, store_plan_fn *fn, void *arg)
{
    return STORE_BASE(s)->ops->explain(s, fn, arg);
}

int64_t store_work(store *s) { return STORE_BASE(s)->ops->work(s); }

int
store_heartbeat(store *s, int *live, int *was_lost)
{
    *live = 1;
    *was_lost = 0;
    return STORE_BASE(s)->ops->heartbeat(s, live, was_lost);
}

int
store_rescue(store *s, int64_t now_ms, store_task_ref *refs, size_t cap, size_t *n, int *lost)
{
    *n = 0;
    *lost = 0;
    return STORE_BASE(s)->ops->rescue(s, now_ms, refs, cap, n, lost);
}

int
store_instances(store *s, store_instance **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    return STORE_BASE(s)->ops->instances(s, out, n);
}

int store_leave(store *s) { return STORE_BASE(s)->ops->leave(s); }
int store_listen(store *s) { return STORE_BASE(s)->ops->listen(s); }
int store_events_fd(store *s) { return STORE_BASE(s)->ops->events_fd(s); }

int
store_events(store *s, store_event *ev, size_t cap, size_t *n)
{
    *n = 0;
    return STORE_BASE(s)->ops->events(s, ev, cap, n);
}

const char *
store_callback_state_name(int state)
{
    static const char *const NAMES[] = {NULL, "pending", "delivered", "failed"};
    return state >= 0 && state <= STORE_CB_FAILED ? NAMES[state] : NULL;
}

int
store_callback_claim(store *s, int64_t now_ms, int64_t lease_ms, store_task *out)
{
    return STORE_BASE(s)->ops->callback_claim(s, now_ms, lease_ms, out);
}

int
store_callback_record(store *s, int64_t id, int attempt, int state, int64_t next_at_ms,
                      const char *error)
{
    return STORE_BASE(s)->ops->callback_record(s, id, attempt, state, next_at_ms, error);
}

/* ---------------------------------------------------------------- issue 13 */

int
store_retry(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    return STORE_BASE(s)->ops->retry(s, id, now_ms, out);
}

int
store_kind_pause(store *s, const char *kind, int paused, int64_t now_ms, int *changed)
{
    int dummy;
    return STORE_BASE(s)->ops->kind_pause(s, kind, paused, now_ms,
                                          changed != NULL ? changed : &dummy);
}

int
store_paused_kinds(store *s, char ***names, size_t *n)
{
    return STORE_BASE(s)->ops->paused_kinds(s, names, n);
}

void
store_names_free(char **names, size_t n)
{
    for (size_t i = 0; names != NULL && i < n; i++)
        free(names[i]);
    free(names);
}

int
store_set_kind_limits(store *s, const store_kind_limit *limits, size_t n)
{
    return STORE_BASE(s)->ops->set_kind_limits(s, limits, n);
}
