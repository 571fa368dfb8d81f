/* fault.h -- named fault points, so that tests can force the windows that races
 * leave open (a failure, a pause) instead of hoping a race shows up.
 *
 * Compiled in only when WARMPOOL_FAULT_HOOKS is defined (the `release` and `asan`
 * presets, which the tests use; never the `serve` preset or the container image).
 * A test arms points through the environment of the process it starts:
 *
 *     WARMPOOL_FAULTS="release_fail=3,claim_pause_ms=200"
 *
 * Each point decides what its value means (a count, milliseconds...). Unarmed
 * points, and every point in a build without hooks, read 0. */
#ifndef WP_FAULT_H
#define WP_FAULT_H

#ifdef WARMPOOL_FAULT_HOOKS
/* The value armed for point `name` (>= 0), 0 when not armed. Thread-safe; the
 * environment is read once per process. */
long fault_value(const char *name);
/* Sleeps fault_value(name) milliseconds when the point is armed. */
void fault_pause(const char *name);
/* For points armed with a count N: true for the first N calls in this process. */
int fault_countdown(const char *name);
#else
static inline long fault_value(const char *name) { (void)name; return 0; }
static inline void fault_pause(const char *name) { (void)name; }
static inline int fault_countdown(const char *name) { (void)name; return 0; }
#endif

#endif
