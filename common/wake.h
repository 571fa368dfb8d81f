/* wake.h -- waking idle workers: an eventfd in semaphore mode (one token wakes one
 * idle worker) and, beside it in shared memory, the number of tokens not yet taken,
 * so that no more than `cap` (the number of workers) are ever outstanding.
 *
 * Busy workers claim their next task without reading tokens, so without a cap a
 * burst of submissions left thousands behind, and idle workers then woke once per
 * stale token, two queries each (issue 8). With the cap, at most one wake-up per
 * worker is ever pending, which is all that one burst can use.
 *
 * Made once, before the first fork; every process that inherits it may post and
 * take. The count is kept with atomics: concurrent posters may overshoot the cap by a
 * few tokens, never by a burst. */
#ifndef WP_WAKE_H
#define WP_WAKE_H

struct wake;

/* The eventfd and the shared count, for up to cap outstanding tokens (cap >= 1).
 * NULL on failure, with errno set. */
struct wake *wake_create(int cap);
/* Closes this process's descriptor and unmaps the count. NULL-safe. */
void wake_destroy(struct wake *w);
/* The descriptor to poll() for POLLIN (readable: a token is there). */
int wake_fd(const struct wake *w);
/* Wakes up to n idle workers: adds n tokens, or fewer so that at most cap are
 * outstanding. Never blocks. */
void wake_post(struct wake *w, int n);
/* Takes one token (after poll() said the descriptor is readable): 1 when one was
 * taken, 0 when another worker was faster. Never blocks. */
int wake_take(struct wake *w);

#endif
