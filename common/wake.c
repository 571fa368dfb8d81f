/* wake.c -- the capped wake-up channel of wake.h. */
#include "common/wake.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

struct wake {
    int fd;                     /* eventfd, EFD_SEMAPHORE | EFD_NONBLOCK */
    int cap;
    atomic_int outstanding;     /* tokens posted and not yet taken (approximately) */
};

struct wake *
wake_create(int cap)
{
    struct wake *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED)
        return NULL;
    w->fd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
    if (w->fd < 0) {
        int e = errno;
        munmap(w, sizeof *w);
        errno = e;
        return NULL;
    }
    w->cap = cap > 0 ? cap : 1;
    atomic_init(&w->outstanding, 0);
    return w;
}

void
wake_destroy(struct wake *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    munmap(w, sizeof *w);
}

int
wake_fd(const struct wake *w)
{
    return w->fd;
}

void
wake_post(struct wake *w, int n)
{
    int room = w->cap - atomic_load(&w->outstanding);
    if (n > room)
        n = room;
    if (n <= 0)
        return;
    /* counted before the write, so that a taker never counts below zero */
    atomic_fetch_add(&w->outstanding, n);
    uint64_t v = (uint64_t)n;
    if (write(w->fd, &v, sizeof v) != (ssize_t)sizeof v)
        atomic_fetch_sub(&w->outstanding, n);   /* cannot happen below 2^64 - 1 */
}

int
wake_take(struct wake *w)
{
    uint64_t v;
    if (read(w->fd, &v, sizeof v) != (ssize_t)sizeof v)
        return 0;               /* EAGAIN: taken by another worker */
    atomic_fetch_sub(&w->outstanding, 1);
    return 1;
}
