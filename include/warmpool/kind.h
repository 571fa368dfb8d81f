/* warmpool/kind.h -- the interface a task kind implements (built-in or plugin).
 *
 * A kind is a named task type with a *context*: something large and slow to build
 * (a signature database, an index, a model) that every task of the kind reads.
 * warmpool builds it ONCE, in a loader process (the zygote of a generation), before
 * forking the workers from it; each worker then reads the same physical pages through
 * copy-on-write, so no task pays for loading, copying or serializing it.
 *
 * Life cycle, and which process makes each call:
 *   load()         the zygote, once at start (and a new zygote on each reload), before
 *                  it forks the HTTP process and the workers
 *   worker_init()  each worker, right after fork (per-process scratch space)
 *   validate()     HTTP process, at submission: a refusal is answered 422
 *   run()          a worker, once per attempt of a task
 *   worker_fini()  a worker, before it exits normally
 *   unload()       the zygote, when it exits after its generation was replaced or at
 *                  the end (not after a crash: what outlives a process is yours)
 *
 * Threads: validate() may be called from several HTTP threads at once, so it must
 * only read the context. run() is called by one thread per worker process.
 * Signals: run() is called with SIGTERM, SIGINT and SIGUSR1 blocked, so warmpool's
 * own signals (a drain, a reload) never make a blocking call in it fail with EINTR.
 * A process that run() starts with fork() gets them unblocked again; one started
 * with posix_spawn() or system() inherits the mask (POSIX_SPAWN_SETSIGMASK resets it).
 * Ownership: inputs are borrowed (jansson's word): do not decref them, and incref
 * whatever you keep. run()'s result is a NEW reference that warmpool takes.
 *
 * Plugins: a shared library exports `const struct wp_kind *const wp_kinds[]`, a
 * NULL-terminated array (see WP_KINDS_SYMBOL). Set abi_version to WP_KIND_ABI_VERSION.
 */
#ifndef WARMPOOL_KIND_H
#define WARMPOOL_KIND_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WP_KIND_ABI_VERSION 1
#define WP_KINDS_SYMBOL "wp_kinds"

/* What a failed attempt reports. code is snake_case ("task_failed", "bad_input");
 * message is for a person. retryable = 0 ends the task now even if attempts remain. */
struct wp_task_error {
    char code[64];
    char message[1024];
    int retryable;
};

/* Fills err (NULL-safe): code, retryable flag and a printf-style message. */
static inline void wp_task_error_set(struct wp_task_error *err, const char *code,
                                     int retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline void
wp_task_error_set(struct wp_task_error *err, const char *code, int retryable,
                  const char *fmt, ...)
{
    if (err == NULL)
        return;
    snprintf(err->code, sizeof err->code, "%s", code);
    err->retryable = retryable;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

struct wp_kind {
    int abi_version;                /* WP_KIND_ABI_VERSION */
    const char *name;               /* [a-z0-9_.-]{1,64}; unique among loaded kinds */

    /* Build the context from the kind's configuration string (NULL when none was
     * given). Return 0 and set *ctx (may be NULL for a kind without context) and
     * *ctx_bytes (memory the context holds, for /v1/stats); or return non-zero and
     * write why into err (errlen bytes). Optional: NULL means no context. */
    int (*load)(const char *config, void **ctx, size_t *ctx_bytes, char *err, size_t errlen);

    /* Check an input at submission. Return 0 if the task can run; else non-zero with a
     * message naming the offending field in err. Optional. */
    int (*validate)(const void *ctx, const json_t *input, char *err, size_t errlen);

    /* Per-worker set-up after fork (scratch space, thread-local buffers). Optional. */
    int (*worker_init)(void *ctx, void **worker_state, char *err, size_t errlen);

    /* Run one attempt. On success return a new reference to the result (any JSON,
     * json_null() included). On failure return NULL and fill err. Required. */
    json_t *(*run)(const void *ctx, void *worker_state, const json_t *input,
                   struct wp_task_error *err);

    void (*worker_fini)(void *ctx, void *worker_state);    /* optional */
    void (*unload)(void *ctx);                              /* optional */
};

#ifdef __cplusplus
}
#endif

#endif
