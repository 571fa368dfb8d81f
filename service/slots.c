/* slots.c -- the shared worker table (see slots.h). */
#include "service/slots.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/mman.h>

static size_t
table_bytes(int n)
{
    return sizeof(struct shared) + (size_t)n * sizeof(struct slot);
}

struct shared *
slots_create(int n)
{
    struct shared *sh = mmap(NULL, table_bytes(n), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return NULL;
    sh->nslots = n;             /* the mapping is zero-filled: every slot SLOT_EMPTY */
    return sh;
}

void
slots_destroy(struct shared *sh)
{
    if (sh != NULL)
        munmap(sh, table_bytes(sh->nslots));
}

json_t *
slots_stats(void *arg)
{
    struct shared *sh = arg;
    json_t *arr = json_array();
    for (int i = 0; arr != NULL && i < sh->nslots; i++) {
        struct slot *s = &sh->slots[i];
        int pid = atomic_load(&s->pid);
        int state = atomic_load(&s->state);
        if (pid == 0 || state == SLOT_EMPTY || state == SLOT_STARTING)
            continue;               /* empty, or forked and not ready yet */
        int busy = state != SLOT_IDLE;  /* running, recording, or being killed */
        long long task = atomic_load(&s->task_id);
        json_t *task_id = json_null();
        if (busy && task > 0) {
            char buf[24];
            snprintf(buf, sizeof buf, "%lld", task);
            json_decref(task_id);
            task_id = json_string(buf);
        }
        json_array_append_new(arr, json_pack("{s:i, s:s, s:o, s:I}", "pid", pid, "state",
                                             busy ? "busy" : "idle", "task_id",
                                             task_id, "tasks_done",
                                             (json_int_t)atomic_load(&s->tasks_done)));
    }
    return arr;
}

int
slots_alive(void *arg)
{
    struct shared *sh = arg;
    int n = 0;
    for (int i = 0; i < sh->nslots; i++) {
        int state = atomic_load(&sh->slots[i].state);
        n += atomic_load(&sh->slots[i].pid) != 0 &&
             (state == SLOT_IDLE || state == SLOT_BUSY || state == SLOT_RECORDING);
    }
    return n;
}

json_t *
slots_kinds_stats(void *arg)
{
    struct shared *sh = arg;
    json_t *arr = json_array();
    for (int i = 0; arr != NULL && i < sh->nkinds; i++) {
        struct kind_info *k = &sh->kinds[i];
        json_array_append_new(arr, json_pack("{s:s, s:I, s:i, s:I, s:s, s:b}", "name",
                                             k->name, "context_bytes",
                                             (json_int_t)atomic_load(&k->ctx_bytes),
                                             "generation", atomic_load(&k->generation),
                                             "load_ms", (json_int_t)atomic_load(&k->load_ms),
                                             "runtime", k->exec ? "exec" : "c",
                                             "available", atomic_load(&k->available)));
    }
    return arr;
}

int
slots_draining(void *arg)
{
    struct shared *sh = arg;
    return atomic_load(&sh->draining);
}
