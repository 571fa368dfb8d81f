/* backend.h -- how store.h's functions reach an implementation (internal to storage/).
 *
 * Each implementation (store_sqlite.c, store_pg.c) fills a `struct store_ops` and
 * embeds `struct store` as the first member of its own connection struct; backend.c
 * defines the public store_* functions, which pick the table by the database's name
 * (store_open, store_migrate, store_start) or by the connection (everything else).
 * Checklist for a new store.h function: a member here, a line in backend.c, and an
 * implementation in each backend (a backend without the notion does nothing there and
 * says so in a comment). */
#ifndef WP_STORAGE_BACKEND_H
#define WP_STORAGE_BACKEND_H

#include "storage/store.h"

struct store_ops {
    const char *name;
    int (*migrate)(const char *db, store_progress_fn *progress, void *arg, int *from,
                   char *err, size_t errlen);
    int (*start)(const char *db, store_instance *inst, store_progress_fn *progress, void *arg,
                 store_start_report *rep, char *err, size_t errlen);
    void (*instance_end)(void);
    void (*describe)(const char *db, char *out, size_t outlen);
    int (*name_check)(const char *db, char *err, size_t errlen);
    store *(*open)(const char *db, int flags, int busy_ms, char *err, size_t errlen);
    void (*close)(store *s);
    int (*schema_version)(store *s);
    int (*begin)(store *s);
    int (*commit)(store *s);
    void (*rollback)(store *s);
    int (*insert)(store *s, const store_new_task *nt, int64_t now_ms, store_task *out);
    int (*insert_batch)(store *s, const store_new_task *nt, size_t n, int64_t now_ms,
                        store_task *out, int *status);
    int (*get)(store *s, int64_t id, store_task *out);
    int (*list)(store *s, const store_filter *f, store_task **items, size_t *n, int *more);
    int (*cancel)(store *s, int64_t id, int64_t now_ms, store_task *out);
    int (*claim_next)(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
                      store_task *out);
    int (*finish)(store *s, int64_t id, int attempt, const store_outcome *o);
    int (*finish_claim)(store *s, int64_t id, int attempt, const store_outcome *o,
                        int64_t now_ms, long owner, const store_kind_set *skip,
                        store_task *next, int *claimed);
    int (*record_batch)(store *s, store_done *done, size_t ndone, const store_claim_ref *back,
                        size_t nback, int64_t now_ms, long owner, const store_kind_set *skip,
                        size_t want, size_t share, store_task *next, size_t *nclaimed);
    size_t batch_max;       /* store_batch_max() */
    /* store_mark_started(); NULL: nothing to write (the slot tells, store_release_lost) */
    int (*mark_started)(store *s, int64_t id, int attempt, int64_t started_ms,
                        int64_t prev_id, int prev_attempt, int64_t prev_started_ms);
    int (*release_lost)(store *s, long owner, int64_t running_id, int64_t now_ms,
                        const char *code, const char *message, store_task_ref *released,
                        size_t cap, size_t *n);
    int (*recover_running)(store *s, int64_t now_ms, int *requeued, int *failed,
                           store_task_ref *refs, size_t cap, size_t *n);
    int (*count_states)(store *s, int64_t counts[TASK_STATE_COUNT]);
    int (*count_kinds)(store *s, store_kind_counts **out, size_t *n);
    int (*has_ready)(store *s, int64_t now_ms, const store_kind_set *skip);
    int64_t (*next_run_after)(store *s, int64_t now_ms);
    int64_t (*count_pending)(store *s);
    int (*purge)(store *s, int64_t before_ms, int limit, int *deleted);
    int (*maintain)(store *s, char *note, size_t notelen);
    int (*ping)(store *s);
    uint64_t (*secret)(store *s);
    int64_t (*size_bytes)(store *s);
    int (*explain)(store *s, store_plan_fn *fn, void *arg);
    int64_t (*work)(store *s);
    int (*heartbeat)(store *s, int *live, int *was_lost);
    int (*rescue)(store *s, int64_t now_ms, store_task_ref *refs, size_t cap, size_t *n,
                  int *lost);
    int (*instances)(store *s, store_instance **out, size_t *n);
    int (*leave)(store *s);
    int (*listen)(store *s);
    int (*events_fd)(store *s);
    int (*events)(store *s, store_event *ev, size_t cap, size_t *n);
    int (*callback_claim)(store *s, int64_t now_ms, int64_t lease_ms, store_task *out);
    int (*callback_record)(store *s, int64_t id, int attempt, int state, int64_t next_at_ms,
                           const char *error);
    /* issue 13 */
    int (*retry)(store *s, int64_t id, int64_t now_ms, store_task *out);
    int (*kind_pause)(store *s, const char *kind, int paused, int64_t now_ms, int *changed);
    int (*paused_kinds)(store *s, char ***names, size_t *n);
    int (*set_kind_limits)(store *s, const store_kind_limit *limits, size_t n);
};

/* The part of every connection that backend.c reads: each backend defines its own
 * `struct store` (in its own file) with this as its first member, so a store * is also
 * a pointer to it (C11 6.7.2.1p15). */
struct store_base {
    const struct store_ops *ops;
    char errmsg[512];
};
#define STORE_BASE(s) ((struct store_base *)(void *)(s))

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* What store_start() sets: this process's instance. */
void store_set_self(const store_instance *inst);

#endif
