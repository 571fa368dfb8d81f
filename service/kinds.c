/* kinds.c -- the kind registry: which kinds exist, their contexts, and the calls
 * into them that are not run() (which worker.c makes). */
#include "service/kinds.h"
#include "common/clock.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>

#define MAX_KINDS 64

static struct kind_entry g_kinds[MAX_KINDS];
static size_t g_nkinds;

size_t kinds_count(void) { return g_nkinds; }
struct kind_entry *kinds_at(size_t i) { return i < g_nkinds ? &g_kinds[i] : NULL; }

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
    struct kind_entry e = {.kind = k, .generation = 1};
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

int
kinds_load(const struct config *cfg, char *err, size_t errlen)
{
    if (register_kind(&KIND_ECHO, NULL, err, errlen) != 0 ||
        register_kind(&KIND_SLEEP, NULL, err, errlen) != 0)
        return -1;
    if (cfg->enable_test_kinds && register_kind(&KIND_FAIL, NULL, err, errlen) != 0)
        return -1;
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
    if (e->kind->validate == NULL)
        return 0;
    return e->kind->validate(e->ctx, input, err, errlen) == 0 ? 0 : 1;
}

json_t *
kinds_stats(void *arg)
{
    (void)arg;
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < g_nkinds; i++) {
        const struct kind_entry *e = &g_kinds[i];
        json_array_append_new(arr, json_pack("{s:s, s:I, s:i, s:I}", "name", e->kind->name,
                                             "context_bytes", (json_int_t)e->ctx_bytes,
                                             "generation", e->generation, "load_ms",
                                             (json_int_t)e->load_ms));
    }
    return arr;
}
