/* exec_loader.h -- the exec kinds' zygotes, as a generation's loader (service/zygote.c)
 * runs them (docs/exec-kinds.md, "What warmpool does").
 *
 * The loader starts one zygote per --exec-kind when it loads its generation, and waits
 * until each is ready, as part of the load (within --load-timeout-ms). Afterwards:
 *  - for each worker it forks, it first asks every ready zygote for a child (spawn, one
 *    end of a new channel passed with SCM_RIGHTS); the worker inherits the channels;
 *  - it watches each zygote's control channel: end of file or bytes nobody asked for
 *    mean the zygote is gone or broken. It then kills the zygote's process group (the
 *    zygote and every child it forked: the children of a dead zygote go with it), reaps
 *    it, logs why, and starts a new one after a back-off (100 ms, doubling up to 60 s
 *    while they keep dying young), which becomes ready in the background;
 *  - it tells the supervisor when a kind goes down and comes up (ZYGOTE_EXEC_STATE), so
 *    that the supervisor can publish it and replace the workers that lack that kind's
 *    child, one at a time;
 *  - a spawn the zygote refuses (spawn_failed) leaves that worker without the kind; the
 *    kind is announced up again after a back-off, so that such workers are replaced
 *    then, not in a loop.
 * Single-threaded, like the loader: every wait has a deadline. */
#ifndef WP_EXEC_LOADER_H
#define WP_EXEC_LOADER_H

#include "service/config.h"
#include "service/exec_zygote.h"

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* At most this long for all of one worker's spawns (the supervisor gives a SPAWN 10 s). */
#define EXEC_LOADER_SPAWN_MS 8000

/* Starts every exec kind's zygote and waits until each is ready or deadline_ms
 * (monotonic) passes. Fills each kind's registry entry (ctx_bytes, load_ms). sock is the
 * supervisor's channel, for ZYGOTE_EXEC_STATE. 0, or -1 with err naming the kind and
 * the reason; then every zygote started is stopped. */
int exec_loader_start(const struct config *cfg, int sock, int64_t deadline_ms, char *err,
                      size_t errlen);

/* The control channels to watch: fills p (at most cap) and returns how many. */
int exec_loader_pollfds(struct pollfd *p, int cap);
/* How long the loader may sleep before exec_loader_service() has work (ms; -1: no
 * exec kinds). */
int exec_loader_timeout_ms(void);
/* Reacts to what poll() saw on the channels of exec_loader_pollfds() (p, n as filled,
 * revents set) and to timers: deaths, restarts, readiness, re-announcements. */
void exec_loader_service(const struct pollfd *p, int n);

/* One child per ready exec kind, into out[i] (out[i].fd = -1 where there is none).
 * Returns the mask of kinds left without a child (bit i: exec kind i). */
uint64_t exec_loader_spawn(struct exec_child out[CONFIG_MAX_EXEC_KINDS], int64_t deadline_ms);
/* The same for the HTTP process: only kinds whose zygote said validate: true. *seq
 * orders them among the validating children this loader hands out (exec_validate.h). */
uint64_t exec_loader_spawn_validators(struct exec_child out[CONFIG_MAX_EXEC_KINDS],
                                      int64_t deadline_ms, int *seq);
/* Sends the HTTP process a fresh validate child of each kind that has validation, over
 * its channel (service/exec_validate.h); generation orders them. */
void exec_loader_push_validators(int http_sock, int generation);

/* In a process forked from the loader (the HTTP process, a worker): closes every
 * control channel, so that a zygote sees end of file when the loader closes its own. */
void exec_loader_close_inherited(void);

/* Closes the control channels (each zygote exits at end of file, its children with
 * it), waits up to grace_ms for the zygotes, then kills what is left of their process
 * groups and reaps them. */
void exec_loader_stop(int64_t grace_ms);

#endif
