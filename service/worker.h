/* worker.h -- the worker process's entry point. */
#ifndef WP_WORKER_H
#define WP_WORKER_H

#include "service/exec_zygote.h"
#include "service/config.h"
#include "service/slots.h"

struct worker_env {
    const struct config *cfg;
    struct shared *sh;
    int slot;                   /* index of this worker's slot in sh */
    struct wake *wake;          /* common/wake.h: one token wakes one idle worker */
    int notify_fd;              /* pipe to the HTTP process: ids of tasks now terminal */
    struct exec_child *exec;    /* one child per exec kind (cfg->exec_kinds), fd -1 where
                                 * there is none; the worker owns them */
    uint64_t exec_missing;      /* bit i: no child of exec kind i came */
};

/* Runs the worker loop in a freshly forked child; never returns (exit 0 after a
 * SIGTERM, 1 if it could not start). */
void worker_main(const struct worker_env *env) __attribute__((noreturn));

#endif
