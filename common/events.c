/* events.c -- the shared ring of task state changes of events.h. */
#include "common/events.h"
#include "common/fault.h"
#include "common/names.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BUSY UINT64_MAX             /* a record's stamp while its writer fills it */
#define PAGE 4096
#define PER_PAGE (PAGE / sizeof(struct rec))

/* 32 bytes. Every field is an atomic read and written relaxed; the stamp orders them
 * (1). The small fields share one word: kind, state and error are name numbers. */
struct rec {
    atomic_ullong stamp;            /* the sequence number once written; BUSY; 0 never */
    atomic_llong task_id;
    atomic_llong at_ms;
    atomic_ullong packed;           /* kind << 48 | state << 32 | error << 16 | attempts */
};

struct ring {
    uint64_t base;                  /* (3): the first record of this run is base + 1 */
    uint64_t size, mask;            /* records in the ring; size - 1 */
    size_t bytes;                   /* of the mapping */
    _Alignas(64) atomic_ullong head;        /* the last sequence number handed out */
    _Alignas(64) atomic_ullong trimmed;     /* records up to this one were given back */
    _Alignas(64) atomic_int sleepers;       /* a reader waits in events_wait() */
    atomic_uint wake;                       /* the futex word: bumped to wake readers */
    struct names_entry names[EVENTS_NAMES];
    _Alignas(PAGE) struct rec recs[];   /* size of them */
};

static struct ring *g_ring;

int
events_create(int64_t now_ms, uint32_t records)
{
    /* fault point events_ring_records=N: a ring of N records, so that tests can fill it */
    if (fault_value("events_ring_records") > 0)
        records = (uint32_t)fault_value("events_ring_records");
    if (records < 1024 || (records & (records - 1)) != 0) {
        errno = EINVAL;
        return -1;
    }
    size_t bytes = sizeof(struct ring) + (size_t)records * sizeof(struct rec);
    /* MAP_NORESERVE: the record pages are committed only as they are written (4) */
    struct ring *r = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return -1;
    r->size = records;
    r->mask = records - 1;
    r->bytes = bytes;
    r->base = (uint64_t)(now_ms > 0 ? now_ms : 0) * 1024;
    atomic_store(&r->head, r->base);
    atomic_store(&r->trimmed, r->base);
    g_ring = r;
    return 0;
}

void
events_destroy(void)
{
    if (g_ring != NULL)
        munmap(g_ring, g_ring->bytes);
    g_ring = NULL;
}

static uint64_t
name_no(const char *name)
{
    return (uint64_t)names_intern(g_ring->names, EVENTS_NAMES, name);
}

static void
wake_readers(struct ring *r)
{
    /* (sequentially consistent, against events_wait(): either the reader sees our
     * stamp, or we see it waiting) */
    if (atomic_load(&r->sleepers) == 0 || atomic_exchange(&r->sleepers, 0) == 0)
        return;
    atomic_fetch_add(&r->wake, 1);
    syscall(SYS_futex, (unsigned *)&r->wake, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void
events_publish(const char *kind, int64_t task_id, const char *state, int attempts,
               const char *error, int64_t at_ms)
{
    struct ring *r = g_ring;
    if (r == NULL)
        return;
    uint64_t packed = name_no(kind) << 48 | name_no(state) << 32 | name_no(error) << 16 |
                      (uint64_t)(attempts < 0 ? 0 : attempts > 65535 ? 65535 : attempts);
    uint64_t seq = atomic_fetch_add(&r->head, 1) + 1;
    /* fault point events_publish_skip=N: this process's first N events take their number
     * and are never written, as when their writer dies between the steps of (1) */
    if (fault_countdown("events_publish_skip"))
        return;
    struct rec *rec = &r->recs[seq & r->mask];
    /* (1) claim the record: only from an older stamp. A newer one, or BUSY, means a
     * writer a whole ring ahead of us has it: this event is lost (readers see (2)). */
    unsigned long long old = atomic_load_explicit(&rec->stamp, memory_order_relaxed);
    if (old == BUSY || old >= seq ||
        !atomic_compare_exchange_strong(&rec->stamp, &old, BUSY))
        return;
    atomic_store_explicit(&rec->task_id, task_id, memory_order_relaxed);
    atomic_store_explicit(&rec->at_ms, at_ms, memory_order_relaxed);
    atomic_store_explicit(&rec->packed, packed, memory_order_relaxed);
    atomic_store(&rec->stamp, seq);     /* publishes the fields (release and more) */
    wake_readers(r);
}

uint64_t
events_head(void)
{
    return g_ring != NULL ? atomic_load(&g_ring->head) : 0;
}

uint64_t
events_base(void)
{
    return g_ring != NULL ? g_ring->base : 0;
}

uint64_t
events_oldest(void)
{
    struct ring *r = g_ring;
    if (r == NULL)
        return 1;
    uint64_t head = atomic_load(&r->head), oldest = atomic_load(&r->trimmed) + 1;
    if (head >= r->size && head - r->size + 1 > oldest)
        oldest = head - r->size + 1;
    return oldest;
}

uint64_t
events_trimmed_seq(void)
{
    return g_ring != NULL ? atomic_load(&g_ring->trimmed) : 0;
}

int
events_read(uint64_t seq, struct events_view *out)
{
    struct ring *r = g_ring;
    if (r == NULL || seq <= r->base || seq < events_oldest())
        return EVENTS_GONE;
    if (seq > atomic_load(&r->head))
        return EVENTS_NOT_YET;
    struct rec *rec = &r->recs[seq & r->mask];
    uint64_t s1 = atomic_load_explicit(&rec->stamp, memory_order_acquire);
    if (s1 == BUSY)             /* its own writer, or one a ring later */
        return atomic_load(&r->head) >= seq + r->size ? EVENTS_GONE : EVENTS_NOT_YET;
    if (s1 != seq)
        return s1 < seq ? EVENTS_NOT_YET : EVENTS_GONE;
    int64_t id = atomic_load_explicit(&rec->task_id, memory_order_relaxed);
    int64_t at = atomic_load_explicit(&rec->at_ms, memory_order_relaxed);
    uint64_t packed = atomic_load_explicit(&rec->packed, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&rec->stamp, memory_order_relaxed) != seq)
        return EVENTS_GONE;     /* rewritten while we read it (1) */
    out->seq = seq;
    out->task_id = id;
    out->at_ms = at;
    out->attempts = (int)(packed & 0xffff);
    out->kind = names_get(r->names, EVENTS_NAMES, (int)(packed >> 48));
    out->state = names_get(r->names, EVENTS_NAMES, (int)(packed >> 32 & 0xffff));
    out->error = names_get(r->names, EVENTS_NAMES, (int)(packed >> 16 & 0xffff));
    if (out->kind == NULL)
        out->kind = "";
    if (out->state == NULL)
        out->state = "";
    return EVENTS_OK;
}

/* Record seq is written, or gone: overwritten by a later round of the ring (or being
 * overwritten: BUSY with the head a ring ahead), or trimmed. A reader that far behind
 * has to look again at once, not wait for a stamp that will never come. */
static int
written_or_gone(struct ring *r, uint64_t seq)
{
    uint64_t s = atomic_load(&r->recs[seq & r->mask].stamp);
    if (s == seq || (s != BUSY && s > seq))
        return 1;
    return seq < events_oldest();
}

int
events_wait(uint64_t seq, int timeout_ms)
{
    struct ring *r = g_ring;
    if (r == NULL)
        return 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (written_or_gone(r, seq))
            return 1;
        unsigned v = atomic_load(&r->wake);
        atomic_store(&r->sleepers, 1);
        if (written_or_gone(r, seq))    /* stored before we said we sleep: we would miss it */
            return 1;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t spent = (now.tv_sec - start.tv_sec) * 1000 +
                        (now.tv_nsec - start.tv_nsec) / 1000000;
        if (spent >= timeout_ms)
            return 0;
        int64_t left = timeout_ms - spent;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000),
                              .tv_nsec = (long)(left % 1000) * 1000000L};
        if (syscall(SYS_futex, (unsigned *)&r->wake, FUTEX_WAIT, v, &ts, NULL, 0) != 0 &&
            errno != EAGAIN && errno != EINTR && errno != ETIMEDOUT)
            return written_or_gone(r, seq);
    }
}

void
events_trim(int64_t now_ms)
{
    struct ring *r = g_ring;
    if (r == NULL)
        return;
    uint64_t head = atomic_load(&r->head);
    unsigned long long trimmed = atomic_load(&r->trimmed);
    /* the first page after what was given back, and nothing the writers are near: a
     * page of the last two is left alone however old its records */
    uint64_t from = trimmed + 1;
    if (head >= r->size && head - r->size + 1 > from)
        from = head - r->size + 1;
    from = (from + PER_PAGE - 1) / PER_PAGE * PER_PAGE;     /* page-aligned in the ring */
    uint64_t upto = trimmed;
    for (uint64_t p = from; p + 3 * PER_PAGE <= head; p += PER_PAGE) {
        /* the page's last record is its newest: if it is old, the whole page is */
        uint64_t last = p + PER_PAGE - 1;
        struct rec *rec = &r->recs[last & r->mask];
        if (atomic_load(&rec->stamp) != last ||
            atomic_load_explicit(&rec->at_ms, memory_order_relaxed) > now_ms - EVENTS_KEEP_MS)
            break;
        upto = last;
    }
    if (upto <= trimmed)
        return;
    /* readers see the numbers as gone before the pages go (events_read checks first) */
    if (!atomic_compare_exchange_strong(&r->trimmed, &trimmed, upto))
        return;                 /* another HTTP process trims meanwhile */
    uint64_t first = from & r->mask, n = upto - from + 1;
    while (n > 0) {             /* the range may wrap around the end of the ring */
        uint64_t run = r->size - first < n ? r->size - first : n;
        madvise(&r->recs[first], run * sizeof(struct rec), MADV_REMOVE);
        n -= run;
        first = 0;
    }
}
