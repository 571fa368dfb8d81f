/* events.h -- the task state changes of a warmpool instance: a ring of fixed-size
 * records in shared memory with one sequence, written by every process that changes
 * a task's state and read by the HTTP process for GET /v1/events.
 *
 * Writers: the HTTP process (submitted: pending; canceled), the workers (running;
 * succeeded, failed, or pending again for a retry), the supervisor (hand-backs of a
 * dead or timed-out worker's task, and tasks left running by a previous run). Issue 9
 * will add a source: changes made by other instances on a shared database, forwarded
 * here, through the same events_publish().
 *
 * How it holds together (numbered for the comments in events.c):
 *  (1) A writer takes the next sequence number with one atomic add, claims its record
 *      (a compare-and-set of the record's stamp to BUSY), fills it, and publishes it
 *      by storing the sequence number as the stamp. A reader copies a record and then
 *      reads the stamp again, so it never uses a record that was being rewritten.
 *  (2) A record whose stamp is below its sequence is not written yet: its writer is
 *      between the two steps of (1), or died there. Readers wait for it a little, then
 *      report it lost (api/events.c).
 *  (3) Sequence numbers keep growing across restarts: each start begins after
 *      (start time in ms) x 1024, so an id from an earlier run is below every id of
 *      this one, and every id fits a JavaScript number until the year 2248.
 *  (4) The ring has room for EVENTS_RECORDS records (128 MiB of address space), over a
 *      minute at the machine's peak rate (15,000 tasks/s, 3 events a task). Memory is
 *      only made resident as records are written, and events_trim() gives back the
 *      pages of records older than EVENTS_KEEP_MS, so a quiet instance keeps little.
 *
 * The ring is process-global, like metrics.h: events_create() in the supervisor before
 * it forks; the functions do nothing, or report an empty ring, where there is none. */
#ifndef WP_EVENTS_H
#define WP_EVENTS_H

#include <stdint.h>

#define EVENTS_RECORDS (1u << 22)      /* the ring's size in records (tests use less) */
#define EVENTS_KEEP_MS 120000           /* events_trim() keeps at least this much */
#define EVENTS_NAMES 1024               /* distinct kinds, states and error codes */

/* One event, as a reader sees it. The strings live as long as the ring. */
struct events_view {
    uint64_t seq;
    int64_t task_id;
    int64_t at_ms;              /* when the change happened (epoch ms, the writer's clock) */
    int attempts;
    const char *kind;
    const char *state;          /* "pending", "running", "succeeded", "failed", "canceled" */
    const char *error;          /* the error code of the attempt, or NULL */
};

enum events_read_result {
    EVENTS_OK = 0,              /* *out filled */
    EVENTS_NOT_YET,             /* not written (yet): see (2) */
    EVENTS_GONE,                /* overwritten, trimmed, or before this run */
};

/* Maps a ring of `records` records (a power of two, at least 1024; EVENTS_RECORDS in
 * the service) and makes it this process's (and its future children's); now_ms sets
 * the first sequence number (3). 0, or -1 with errno. */
int events_create(int64_t now_ms, uint32_t records);
void events_destroy(void);

/* Publishes one state change. Never allocates; lock-free (a name seen for the first time
 * may wait a moment for another process writing the same name: names.h). A name longer
 * than 64 bytes is cut; error NULL or "" is none. */
void events_publish(const char *kind, int64_t task_id, const char *state, int attempts,
                    const char *error, int64_t at_ms);

/* The last sequence number handed out (0: no ring). */
uint64_t events_head(void);
/* The oldest sequence number that may still be read. */
uint64_t events_oldest(void);
/* This run's numbers are above it (3). */
uint64_t events_base(void);
int events_read(uint64_t seq, struct events_view *out);
/* Waits until record seq is written, or gone (the ring went past it: a reader that far
 * behind must look again), or timeout_ms pass: 1 written or gone, 0 neither. Writers wake
 * a waiting reader with one futex call (only when one waits), so a reader costs them
 * nothing while it works. */
int events_wait(uint64_t seq, int timeout_ms);
/* Gives back the memory of whole pages of records older than EVENTS_KEEP_MS (their
 * sequence numbers then read as EVENTS_GONE). Cheap; call it every second or so. */
void events_trim(int64_t now_ms);
/* The last sequence number whose page was given back by events_trim(), for tests. */
uint64_t events_trimmed_seq(void);

#endif
