/* kinds.c -- the kind registry: which kinds exist, their contexts, and the calls
 * into them that are not run() (which worker.c makes). */
#include "service/kinds.h"
#include "common/clock.h"
#include "common/log.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#define MAX_KINDS 64

static struct kind_entry g_kinds[MAX_KINDS];
static size_t g_nkinds;
static struct wp_kind g_exec_kinds[CONFIG_MAX_EXEC_KINDS];  /* names only */
int (*kinds_exec_validate)(int exec, const json_t *input, char *err, size_t errlen);

size_t kinds_count(void) { return g_nkinds; }
struct kind_entry *kinds_at(size_t i) { return i < g_nkinds ? &g_kinds[i] : NULL; }

struct kind_entry *
kinds_exec(int i)
{
    for (size_t k = 0; k < g_nkinds; k++)
        if (g_kinds[k].exec == i)
            return &g_kinds[k];
    return NULL;
}

struct kind_entry *
kinds_find(const char *name)
{
    for (size_t i = 0; i < g_nkinds; i++)
        if (strcmp(g_kinds[i].kind->name, name) == 0)
            return &g_kinds[i];
    return NULL;
}

static int
valid_name(const char *name)
{
    size_t n = strlen(name);
    return n >= 1 && n <= 64 && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* Registers k and builds its context. 0, or -1 with err. */
static int
register_kind(const struct wp_kind *k, const char *config, char *err, size_t errlen)
{
    if (k->abi_version != WP_KIND_ABI_VERSION || k->name == NULL || !valid_name(k->name) ||
        k->run == NULL) {
        snprintf(err, errlen, "kind '%s': wrong ABI version, bad name or no run()",
                 k->name ? k->name : "?");
        return -1;
    }
    if (kinds_find(k->name) != NULL) {
        snprintf(err, errlen, "kind '%s' is registered twice", k->name);
        return -1;
    }
    if (g_nkinds == MAX_KINDS) {
        snprintf(err, errlen, "more than %d kinds", MAX_KINDS);
        return -1;
    }
    struct kind_entry e = {.kind = k, .exec = -1};
    int64_t t0 = clock_mono_ms();
    if (k->load != NULL) {
        char why[512] = "";
        if (k->load(config, &e.ctx, &e.ctx_bytes, why, sizeof why) != 0) {
            snprintf(err, errlen, "kind '%s': loading its context failed: %s", k->name,
                     why[0] ? why : "no reason given");
            return -1;
        }
    }
    e.load_ms = clock_mono_ms() - t0;
    g_kinds[g_nkinds++] = e;
    log_info("kind %s loaded in %lld ms (context %zu bytes)", k->name, (long long)e.load_ms,
             e.ctx_bytes);
    return 0;
}

/* dlopen()s a plugin and registers every kind in its wp_kinds array. */
static int
load_plugin(const struct config *cfg, const char *path, char *err, size_t errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, errlen, "plugin %s: cannot load: %s", path, dlerror());
        return -1;
    }
    const struct wp_kind *const *list = dlsym(h, WP_KINDS_SYMBOL);
    if (list == NULL || list[0] == NULL) {
        snprintf(err, errlen, "plugin %s: exports no kinds (a NULL-terminated `%s` array)",
                 path, WP_KINDS_SYMBOL);
        dlclose(h);
        return -1;
    }
    /* the library stays loaded for the life of the process: its code is the kinds' */
    for (size_t i = 0; list[i] != NULL; i++) {
        const char *name = list[i]->name ? list[i]->name : "?";
        if (register_kind(list[i], config_kind_config(cfg, name), err, errlen) != 0) {
            char why[1024];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "plugin %s: %s", path, why);
            return -1;
        }
    }
    log_info("plugin %s loaded", path);
    return 0;
}

static const struct wp_kind *const builtin[] = {&KIND_ECHO, &KIND_SLEEP, &KIND_SCAN};

int
kinds_builtin_name(const char *name, int test_kinds)
{
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (strcmp(builtin[i]->name, name) == 0)
            return 1;
    return test_kinds && (strcmp(name, KIND_FAIL.name) == 0 || strcmp(name, KIND_SPIN.name) == 0);
}

int
kinds_load(const struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (register_kind(builtin[i], config_kind_config(cfg, builtin[i]->name), err,
                          errlen) != 0)
            return -1;
    if (cfg->enable_test_kinds && (register_kind(&KIND_FAIL, NULL, err, errlen) != 0 ||
                                   register_kind(&KIND_SPIN, NULL, err, errlen) != 0))
        return -1;
    for (int i = 0; i < cfg->nplugins; i++)
        if (load_plugin(cfg, cfg->plugins[i], err, errlen) != 0)
            return -1;
    for (int i = 0; i < cfg->nexec_kinds; i++) {
        const char *name = cfg->exec_kinds[i].name;
        if (kinds_find(name) != NULL) {
            snprintf(err, errlen, "--exec-kind %s: a kind of that name is already loaded "
                     "(built-in or --plugin)", name);
            return -1;
        }
        if (g_nkinds == MAX_KINDS) {
            snprintf(err, errlen, "more than %d kinds", MAX_KINDS);
            return -1;
        }
        g_exec_kinds[i] = (struct wp_kind){.abi_version = WP_KIND_ABI_VERSION, .name = name};
        g_kinds[g_nkinds++] = (struct kind_entry){.kind = &g_exec_kinds[i], .exec = i};
    }
    for (int i = 0; i < cfg->nkind_configs; i++) {
        if (kinds_find(cfg->kind_configs[i].name) == NULL) {
            snprintf(err, errlen, "--kind-config %s: no such kind", cfg->kind_configs[i].name);
            return -1;
        }
    }
    return 0;
}

void
kinds_unload(void)
{
    for (size_t i = 0; i < g_nkinds; i++)
        if (g_kinds[i].kind->unload != NULL)
            g_kinds[i].kind->unload(g_kinds[i].ctx);
    g_nkinds = 0;
}

int
kinds_worker_init(char *err, size_t errlen)
{
    for (size_t i = 0; i < g_nkinds; i++) {
        struct kind_entry *e = &g_kinds[i];
        if (e->kind->worker_init == NULL)
            continue;
        char why[512] = "";
        if (e->kind->worker_init(e->ctx, &e->worker_state, why, sizeof why) != 0) {
            snprintf(err, errlen, "kind '%s': worker_init failed: %s", e->kind->name, why);
            return -1;
        }
    }
    return 0;
}

void
kinds_worker_fini(void)
{
    for (size_t i = 0; i < g_nkinds; i++)
        if (g_kinds[i].kind->worker_fini != NULL)
            g_kinds[i].kind->worker_fini(g_kinds[i].ctx, g_kinds[i].worker_state);
}

int
kinds_validate(void *arg, const char *kind, const json_t *input, char *err, size_t errlen)
{
    (void)arg;
    const struct kind_entry *e = kinds_find(kind);
    if (e == NULL)
        return -1;
    if (e->exec >= 0)
        return kinds_exec_validate != NULL ? kinds_exec_validate(e->exec, input, err, errlen)
                                           : 0;
    if (e->kind->validate == NULL)
        return 0;
    return e->kind->validate(e->ctx, input, err, errlen) == 0 ? 0 : 1;
}

