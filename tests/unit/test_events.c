/* test_events.c -- the event ring (common/events.c) and its name table (common/names.c):
 * what a reader sees of what writers publish, sequence numbers across runs, falling
 * behind the ring, memory given back by events_trim(), writers in several processes
 * at once (no record lost, torn or seen twice), and the futex wake-up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/events.h"
#include "common/names.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOW_MS 1800000000000LL          /* 2027-01-15: any fixed time will do */

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
teardown(void **state)
{
    (void)state;
    events_destroy();
    return 0;
}

static void
test_names(void **state)
{
    (void)state;
    struct names_entry tab[8];
    memset(tab, 0, sizeof tab);
    int a = names_intern(tab, 8, "echo");
    int b = names_intern(tab, 8, "sleep");
    assert_true(a >= 1 && a <= 8);
    assert_true(b >= 1 && b <= 8 && b != a);
    assert_int_equal(names_intern(tab, 8, "echo"), a);
    assert_string_equal(names_get(tab, 8, a), "echo");
    assert_null(names_get(tab, 8, 0));
    assert_null(names_get(tab, 8, 9));
    assert_int_equal(names_intern(tab, 8, NULL), 0);
    assert_int_equal(names_intern(tab, 8, ""), 0);
    /* longer than NAMES_MAX_LEN: cut, and found again the same way */
    char longname[100];
    memset(longname, 'k', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    int l = names_intern(tab, 8, longname);
    assert_int_equal(strlen(names_get(tab, 8, l)), NAMES_MAX_LEN);
    assert_int_equal(names_intern(tab, 8, longname), l);
    /* full: 0, and the names already there are still found */
    char n[8];
    for (int i = 0; i < 10; i++) {
        snprintf(n, sizeof n, "k%d", i);
        names_intern(tab, 8, n);
    }
    assert_int_equal(names_intern(tab, 8, "one-too-many"), 0);
    assert_int_equal(names_intern(tab, 8, "sleep"), b);
}

static void
test_publish_and_read(void **state)
{
    (void)state;
    assert_int_equal(events_create(NOW_MS, 1024), 0);
    uint64_t base = events_base();
    assert_int_equal(base, (uint64_t)NOW_MS * 1024);
    assert_int_equal(events_head(), base);
    struct events_view v;
    assert_int_equal(events_read(base + 1, &v), EVENTS_NOT_YET);   /* not published */
    assert_int_equal(events_read(base, &v), EVENTS_GONE);           /* before this run */

    events_publish("echo", 42, "pending", 0, NULL, NOW_MS + 1);
    events_publish("fail", 43, "failed", 3, "task_failed", NOW_MS + 2);
    assert_int_equal(events_head(), base + 2);
    assert_int_equal(events_read(base + 1, &v), EVENTS_OK);
    assert_int_equal(v.seq, base + 1);
    assert_int_equal(v.task_id, 42);
    assert_int_equal(v.at_ms, NOW_MS + 1);
    assert_int_equal(v.attempts, 0);
    assert_string_equal(v.kind, "echo");
    assert_string_equal(v.state, "pending");
    assert_null(v.error);
    assert_int_equal(events_read(base + 2, &v), EVENTS_OK);
    assert_int_equal(v.task_id, 43);
    assert_int_equal(v.attempts, 3);
    assert_string_equal(v.kind, "fail");
    assert_string_equal(v.state, "failed");
    assert_string_equal(v.error, "task_failed");
    assert_int_equal(events_oldest(), base + 1);
}

/* A later run numbers its events above every number of an earlier one (events.h (3)). */
static void
test_runs_number_upwards(void **state)
{
    (void)state;
    assert_int_equal(events_create(NOW_MS, 1024), 0);
    for (int i = 0; i < 5000; i++)      /* far more than a run usually publishes per ms */
        events_publish("echo", i + 1, "running", 1, NULL, NOW_MS);
    uint64_t first_run_last = events_head();
    events_destroy();
    assert_int_equal(events_create(NOW_MS + 1000, 1024), 0);   /* restarted a second later */
    assert_true(events_base() > first_run_last);
    /* every number fits a JavaScript number (2^53) until the year 2248 */
    assert_true(events_base() < (1ULL << 53));
}

/* The ring keeps its last `size` records; older ones read as gone. */
static void
test_overwritten(void **state)
{
    (void)state;
    assert_int_equal(events_create(NOW_MS, 1024), 0);
    uint64_t base = events_base();
    for (int i = 1; i <= 3000; i++)
        events_publish("echo", i, "succeeded", 1, NULL, NOW_MS);
    assert_int_equal(events_oldest(), base + 3000 - 1024 + 1);
    struct events_view v;
    assert_int_equal(events_read(base + 1, &v), EVENTS_GONE);
    assert_int_equal(events_read(base + 3000 - 1024, &v), EVENTS_GONE);
    assert_int_equal(events_read(base + 3000 - 1023, &v), EVENTS_OK);
    assert_int_equal(v.task_id, 3000 - 1023);
    assert_int_equal(events_read(base + 3000, &v), EVENTS_OK);
    assert_int_equal(v.task_id, 3000);
}

/* How many of the ring's record pages are resident now (mincore). */
static long
resident_pages(const void *addr, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)addr & ~((uintptr_t)page - 1);
    size_t n = (len + ((uintptr_t)addr - start) + (size_t)page - 1) / (size_t)page;
    unsigned char *vec = malloc(n);
    assert_non_null(vec);
    assert_int_equal(mincore((void *)start, n * (size_t)page, vec), 0);
    long in = 0;
    for (size_t i = 0; i < n; i++)
        in += vec[i] & 1;
    free(vec);
    return in;
}

/* Only written records take memory, and events_trim() gives back the pages of old
 * ones (events.h (4)); what it gave back reads as gone, what is recent stays. */
static void
test_trim_gives_memory_back(void **state)
{
    (void)state;
    const uint32_t size = 1u << 16;     /* 2 MiB of records */
    assert_int_equal(events_create(NOW_MS, size), 0);
    uint64_t base = events_base();
    struct events_view v;
    for (int i = 1; i <= 20000; i++)    /* 20000 x 32 B: about 157 pages */
        events_publish("echo", i, "succeeded", 1, NULL, NOW_MS - 200000);  /* old */
    for (int i = 20001; i <= 21000; i++)
        events_publish("echo", i, "succeeded", 1, NULL, NOW_MS);           /* recent */
    /* the mapping: find it in /proc/self/maps as the one holding the ring */
    FILE *maps = fopen("/proc/self/maps", "r");
    assert_non_null(maps);
    char line[512];
    uintptr_t lo = 0, hi = 0;
    size_t want = (size_t)size * 32;
    while (fgets(line, sizeof line, maps) != NULL) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && b - a >= want && b - a < want + (1 << 20) &&
            strstr(line, "zero") != NULL)
            lo = a, hi = b;
    }
    fclose(maps);
    assert_true(hi > lo);
    long before = resident_pages((void *)lo, hi - lo);
    assert_true(before >= 150 && before < 200);     /* what was written, not 512 pages */
    events_trim(NOW_MS);
    uint64_t trimmed = events_trimmed_seq();
    assert_true(trimmed >= base + 19000 && trimmed <= base + 20000);
    long after = resident_pages((void *)lo, hi - lo);
    assert_true(after <= before - 140);
    assert_int_equal(events_oldest(), trimmed + 1);
    assert_int_equal(events_read(base + 5, &v), EVENTS_GONE);
    assert_int_equal(events_read(base + 21000, &v), EVENTS_OK);
    assert_int_equal(v.task_id, 21000);
    /* trimming again changes nothing; writing on goes on (into new pages) */
    events_trim(NOW_MS);
    assert_int_equal(events_trimmed_seq(), trimmed);
    events_publish("echo", 21001, "succeeded", 1, NULL, NOW_MS);
    assert_int_equal(events_read(base + 21001, &v), EVENTS_OK);
}

/* Several processes publish at once; one reader gets every record exactly once, each
 * writer's in its order, none torn (a record's fields always belong together). */
static void
test_writers_in_processes(void **state)
{
    (void)state;
    enum { WRITERS = 4, EACH = 20000 };
    assert_int_equal(events_create(NOW_MS, 1u << 17), 0);   /* room for all of them */
    uint64_t base = events_base();
    pid_t pids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            static const char *const KINDS[] = {"k0", "k1", "k2", "k3"};
            for (int i = 1; i <= EACH; i++) {
                int64_t id = (int64_t)w * 1000000 + i;
                events_publish(KINDS[w], id, i % 2 ? "running" : "succeeded", i % 60000,
                               i % 3 ? NULL : "code", id * 3);
            }
            _exit(0);
        }
    }
    int last[WRITERS] = {0};
    long got = 0;
    uint64_t seq = base + 1;
    int64_t deadline = mono_ms() + 60000;
    while (got < WRITERS * EACH && mono_ms() < deadline) {
        if (!events_wait(seq, 1000))
            continue;
        struct events_view v;
        assert_int_equal(events_read(seq, &v), EVENTS_OK);
        int w = (int)(v.task_id / 1000000), i = (int)(v.task_id % 1000000);
        assert_true(w >= 0 && w < WRITERS);
        char kind[4];
        snprintf(kind, sizeof kind, "k%d", w);
        assert_string_equal(v.kind, kind);
        assert_int_equal(v.at_ms, v.task_id * 3);
        assert_int_equal(v.attempts, i % 60000);
        assert_string_equal(v.state, i % 2 ? "running" : "succeeded");
        if (i % 3)
            assert_null(v.error);
        else
            assert_string_equal(v.error, "code");
        assert_int_equal(i, last[w] + 1);       /* each writer's in order, none twice */
        last[w] = i;
        got++;
        seq++;
    }
    for (int w = 0; w < WRITERS; w++) {
        int status;
        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_int_equal(got, WRITERS * EACH);
    assert_int_equal(events_head(), base + WRITERS * EACH);
}

/* events_wait() sleeps until a writer in another process publishes, and no longer
 * than its timeout when none does. */
static void
test_wait_wakes(void **state)
{
    (void)state;
    assert_int_equal(events_create(NOW_MS, 1024), 0);
    uint64_t next = events_base() + 1;
    int64_t t0 = mono_ms();
    assert_int_equal(events_wait(next, 150), 0);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= 140 && waited < 2000);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        events_publish("echo", 1, "pending", 0, NULL, NOW_MS);
        _exit(0);
    }
    t0 = mono_ms();
    assert_int_equal(events_wait(next, 10000), 1);
    waited = mono_ms() - t0;
    assert_true(waited >= 150 && waited < 5000);    /* woken, not timed out */
    waitpid(pid, NULL, 0);
}

/* Two processes adding the same name at the same moment give it one number: one finds
 * the entry the other is writing (forced here: the entry is marked being written, and a
 * child writes the name into it 5 ms later) and waits for it. Before the fix it took the
 * next entry, so "echo" had two numbers and /metrics two series for it (unit.metrics
 * test_processes_add_up counted 79,999 of 80,000 under ASan in CI). */
static void
test_names_written_at_the_same_moment(void **state)
{
    (void)state;
    struct names_entry scratch[8];
    memset(scratch, 0, sizeof scratch);
    int a = names_intern(scratch, 8, "echo");       /* where "echo" hashes to */
    struct names_entry *tab = mmap(NULL, 8 * sizeof *tab, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(tab != MAP_FAILED);
    atomic_store(&tab[a - 1].state, 1);             /* another process writes it now */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        memcpy(tab[a - 1].name, "echo", 5);
        atomic_store(&tab[a - 1].state, 2);
        _exit(0);
    }
    assert_int_equal(names_intern(tab, 8, "echo"), a);
    waitpid(pid, NULL, 0);
    /* a writer that never finishes (killed in the copy): given up after a moment, the
     * name goes elsewhere, and nobody waits for that entry again */
    int b = names_intern(scratch, 8, "sleep");
    atomic_store(&tab[b - 1].state, 1);
    int64_t t0 = mono_ms();
    int c = names_intern(tab, 8, "sleep");
    assert_true(c >= 1 && c != b && c != a);
    assert_true(mono_ms() - t0 < 2000);
    assert_int_equal(atomic_load(&tab[b - 1].state), 3);
    t0 = mono_ms();
    assert_int_equal(names_intern(tab, 8, "sleep"), c);
    assert_true(mono_ms() - t0 < 5);
    munmap(tab, 8 * sizeof *tab);
}

/* A reader more than a ring behind (its record overwritten) is told at once, not after
 * its timeout: the stamp it waits for will never come. Before the fix, events_wait()
 * slept the whole timeout there, so the HTTP process's notifier fell a second behind
 * (observe.events test_ring_limits failed on it under load). */
static void
test_wait_behind_the_ring(void **state)
{
    (void)state;
    assert_int_equal(events_create(NOW_MS, 1024), 0);
    uint64_t base = events_base();
    for (int i = 1; i <= 3000; i++)
        events_publish("echo", i, "succeeded", 1, NULL, NOW_MS);
    int64_t t0 = mono_ms();
    assert_int_equal(events_wait(base + 1, 3000), 1);
    assert_int_equal(events_wait(base + 3000 - 1024, 3000), 1);
    assert_true(mono_ms() - t0 < 1000);
    struct events_view v;
    assert_int_equal(events_read(base + 1, &v), EVENTS_GONE);
    /* the present still waits: nothing written after the head */
    t0 = mono_ms();
    assert_int_equal(events_wait(base + 3001, 100), 0);
    assert_true(mono_ms() - t0 >= 90);
}

static void
test_bad_sizes(void **state)
{
    (void)state;
    assert_int_equal(events_create(NOW_MS, 1000), -1);     /* not a power of two */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(events_create(NOW_MS, 512), -1);      /* too small */
    /* no ring: nothing happens, nothing is read */
    events_publish("echo", 1, "pending", 0, NULL, NOW_MS);
    struct events_view v;
    assert_int_equal(events_head(), 0);
    assert_int_equal(events_read(1, &v), EVENTS_GONE);
    assert_int_equal(events_wait(1, 10), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_names_written_at_the_same_moment),
        cmocka_unit_test_teardown(test_publish_and_read, teardown),
        cmocka_unit_test_teardown(test_runs_number_upwards, teardown),
        cmocka_unit_test_teardown(test_overwritten, teardown),
        cmocka_unit_test_teardown(test_trim_gives_memory_back, teardown),
        cmocka_unit_test_teardown(test_writers_in_processes, teardown),
        cmocka_unit_test_teardown(test_wait_wakes, teardown),
        cmocka_unit_test_teardown(test_wait_behind_the_ring, teardown),
        cmocka_unit_test_teardown(test_bad_sizes, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
