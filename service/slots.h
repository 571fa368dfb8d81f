/* slots.h -- the worker table in shared memory, mapped by the supervisor before it
 * forks, so the supervisor, the HTTP process and the workers all see it.
 *
 * Each worker writes only its own slot; the supervisor clears a slot when its
 * worker dies; the HTTP process only reads (for /v1/stats and /readyz). Fields are
 * C11 atomics, lock-free on every platform we build for, and so usable between
 * processes. */
#ifndef WP_SLOTS_H
#define WP_SLOTS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

/* A slot's state. Only SLOT_BUSY is subject to the task's deadline, and the two
 * moves out of it are compare-and-sets, so exactly one of them happens:
 *   BUSY -> RECORDING  the worker, when run() returned: recording the outcome (and
 *                      claiming the next task) is not the task's time;
 *   BUSY -> KILLED     the supervisor, past the deadline, just before its SIGKILL.
 * A worker that loses (finds KILLED) records nothing and waits for the SIGKILL, so the
 * supervisor's `timeout` hand-back can only ever concern the task that timed out. */
enum slot_state { SLOT_EMPTY = 0, SLOT_STARTING, SLOT_IDLE, SLOT_BUSY, SLOT_RECORDING,
                  SLOT_KILLED };

struct slot {
    atomic_int pid;                 /* 0 when no worker holds the slot */
    atomic_int state;               /* enum slot_state */
    atomic_llong task_id;           /* the task being run; 0 when idle */
    atomic_int attempt;             /* its attempt number */
    atomic_llong deadline_ms;       /* monotonic deadline of the running attempt; written
                                     * before the slot becomes SLOT_BUSY */
    atomic_ullong tasks_done;       /* attempts finished, whatever their outcome */
    atomic_int retire;              /* set by the supervisor: exit after this task */
    atomic_llong held_started_ms;   /* wall clock: when the running task began, if it is
                                     * held in a batch (its started_at unset); else 0.
                                     * Written before the slot shows the task; the agent
                                     * writes it in the store (store_mark_started) */
    atomic_int child_pid;           /* an exec kind's task: the child running it, written
                                     * before SLOT_BUSY; the supervisor's timeout kills it
                                     * instead of the worker. 0 for a C kind's task */
    atomic_ullong exec_missing;     /* bit i: this worker has no usable child of exec
                                     * kind i (never had one, or it died) */
};

#define SHARED_MAX_KINDS 64

/* What /v1/stats shows of a kind; written by the supervisor at start and reload. */
struct kind_info {
    char name[65];
    atomic_llong ctx_bytes;
    atomic_int generation;
    atomic_llong load_ms;
    int exec;                       /* an exec kind (its code runs in its zygote's children) */
    atomic_int available;           /* 0 while an exec kind's zygote is down */
};

struct shared {
    atomic_int draining;            /* set by the supervisor on SIGTERM */
    /* the instance's life, between the supervisor, the agent and the workers */
    atomic_llong supervisor_tick_ms;    /* monotonic: the supervisor's loop last ran; the
                                         * agent renews the lease only while it is fresh */
    atomic_llong lease_until_ms;        /* monotonic: the lease, as last renewed, holds
                                         * until then; workers claim only before it */
    atomic_int instances_live;          /* instances sharing the store, this one included */
    int nkinds;
    struct kind_info kinds[SHARED_MAX_KINDS];
    int nslots;
    struct slot slots[];
};

/* Maps a zeroed table of n slots (MAP_SHARED | MAP_ANONYMOUS). NULL on failure. */
struct shared *slots_create(int n);
void slots_destroy(struct shared *sh);
/* api_hooks: the stats "workers" and "kinds" arrays, and the number of live workers. */
json_t *slots_stats(void *sh);
json_t *slots_kinds_stats(void *sh);
int slots_alive(void *sh);
int slots_draining(void *sh);      /* the supervisor has begun a drain */

#endif
