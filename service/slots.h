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

enum slot_state { SLOT_EMPTY = 0, SLOT_STARTING, SLOT_IDLE, SLOT_BUSY };

struct slot {
    atomic_int pid;                 /* 0 when no worker holds the slot */
    atomic_int state;               /* enum slot_state */
    atomic_llong task_id;           /* the task being run; 0 when idle */
    atomic_int attempt;             /* its attempt number */
    atomic_llong deadline_ms;       /* monotonic deadline of the running attempt */
    atomic_ullong tasks_done;       /* attempts finished, whatever their outcome */
};

struct shared {
    atomic_int draining;            /* set by the supervisor on SIGTERM */
    int nslots;
    struct slot slots[];
};

/* Maps a zeroed table of n slots (MAP_SHARED | MAP_ANONYMOUS). NULL on failure. */
struct shared *slots_create(int n);
void slots_destroy(struct shared *sh);
/* api_hooks: the stats "workers" array, and the number of live workers. */
json_t *slots_stats(void *sh);
int slots_alive(void *sh);

#endif
