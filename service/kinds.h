/* kinds.h -- the registry of task kinds and their loaded contexts.
 *
 * Filled in a zygote (service/zygote.c) before it forks the HTTP process and the
 * workers (kinds_load), so every child of one generation sees the same entries and
 * contexts, shared copy-on-write. A reload is a new zygote that loads them again. */
#ifndef WP_KINDS_H
#define WP_KINDS_H

#include "service/config.h"
#include "warmpool/kind.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct kind_entry {
    const struct wp_kind *kind; /* an exec kind's has a name and no callbacks */
    int exec;                   /* index into cfg->exec_kinds; -1 for a C kind */
    void *ctx;                  /* from kind->load(); NULL for a kind without one */
    size_t ctx_bytes;
    int64_t load_ms;            /* how long load() took */
    void *worker_state;         /* per worker, from worker_init(); set after fork */
};

/* The built-in kinds (kinds_builtin.c). */
extern const struct wp_kind KIND_ECHO, KIND_SLEEP, KIND_FAIL, KIND_SPIN;
extern const struct wp_kind KIND_SCAN;     /* kind_scan.c */

/* Is name a built-in kind's (fail and spin only with test_kinds)? */
int kinds_builtin_name(const char *name, int test_kinds);

/* Registers the built-in kinds (and `fail` with --enable-test-kinds), then the kinds
 * of each --plugin, and loads each context with its --kind-config string; then
 * registers each --exec-kind by name (its context is its zygote's: service/
 * exec_loader.c starts it). 0, or -1 with the reason in err (a plugin that does not
 * load, exports nothing, or whose load() fails; an exec kind whose name a plugin's
 * kind has; a --kind-config for no kind). */
int kinds_load(const struct config *cfg, char *err, size_t errlen);
void kinds_unload(void);
size_t kinds_count(void);
struct kind_entry *kinds_at(size_t i);
struct kind_entry *kinds_find(const char *name);        /* NULL if unknown */
/* The entry of exec kind number i (cfg->exec_kinds[i]), or NULL. */
struct kind_entry *kinds_exec(int i);

/* The HTTP process's validation of exec kinds (service/exec_validate.c); NULL: their
 * inputs are not validated. Returns as kinds_validate(). */
extern int (*kinds_exec_validate)(int exec, const json_t *input, char *err, size_t errlen);

/* In a worker, after fork: worker_init() of every kind. 0, or -1 with err. */
int kinds_worker_init(char *err, size_t errlen);
void kinds_worker_fini(void);

/* api_hooks.validate: -1 unknown kind, 0 ok, 1 refused (reason in err). */
int kinds_validate(void *arg, const char *kind, const json_t *input, char *err, size_t errlen);

#endif
