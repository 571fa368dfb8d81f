/* agent.h -- the instance's agent: its link with the other instances of the store.
 *
 * A small process the supervisor forks (and restarts) for the life of the instance,
 * since the supervisor, single-threaded, must never wait on a database server. With
 * one store connection it
 *  - renews the instance's lease (store_heartbeat), every store_heartbeat_every_ms(),
 *    but only while the supervisor's loop runs (its tick in shared memory is fresh):
 *    the heartbeat is a sign of life of the instance, not of this process alone; it
 *    publishes until when the lease holds, and the workers claim only until then;
 *  - hands back the running tasks of instances whose lease ran out (store_rescue; one
 *    instance of the store at a time does it);
 *  - listens for the other instances' events (store_listen) and feeds them into the
 *    local channels: READY wakes idle workers (the wake-up channel), DONE sends the
 *    task's id down the notify pipe to the HTTP process's waiters, RESYNC (events may
 *    have been lost) wakes every waiter to look again (id 0) and the idle workers;
 *  - submits the periodic tasks (--schedule, service/schedule.c) as they come due, each
 *    due time once across instances and restarts (its idempotency key), none once a
 *    drain has begun;
 *  - with --callback-allow, runs the completion callbacks' deliverer threads
 *    (service/callbacks.c), each with its own store connection;
 *  - at the end of a drain, when the supervisor says so (after every worker is gone),
 *    removes the instance from the store (store_leave) and exits.
 * With SQLite there are no other instances: the heartbeat and the rescue do nothing and
 * no event comes; the agent only waits. SIGTERM and SIGINT do not stop it (a drain needs
 * the lease renewed until its last task is recorded); it dies with the supervisor. */
#ifndef WP_AGENT_H
#define WP_AGENT_H

#include "service/config.h"
#include "service/slots.h"

#include <sys/types.h>

struct wake;

struct agent_env {
    const struct config *cfg;
    pid_t supervisor;
    struct shared *sh;
    struct wake *wake;
    int notify_wr;              /* ids of tasks terminal elsewhere, for the HTTP process */
    int ctl_fd;                 /* from the supervisor: AGENT_STOP, or end of file */
};

#define AGENT_STOP 'S'          /* leave the store and exit 0 */
#define AGENT_RESYNC_ID 0       /* on the notify pipe: every waiter looks again */

void agent_main(const struct agent_env *env) __attribute__((noreturn));

#endif
