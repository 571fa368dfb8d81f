/* lookup_plugin.c -- an example warmpool plugin: a kind whose context is a large
 * table built once in load() and read by every task.
 *
 * Build: see examples/CMakeLists.txt (a MODULE library linked with jansson).
 * Run:   warmpool --plugin build/release/examples/liblookup.so --kind-config lookup=mb=256
 * Task:  {"kind": "lookup", "input": {"slice": 3, "of": 64}}
 *        -> {"slice": 3, "of": 64, "words": N, "sum": "0x..."}: the wrapping sum of
 *           the 64-bit words of that slice of the table.
 *
 * The table is filled with splitmix64 from a seed, so a result can be checked
 * without the service: see lookup_expected_sum() below. Configuration string:
 * "mb=N" (table size in MiB, default 64) and optionally ",seed=S". */
#include <warmpool/kind.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct table {
    uint64_t *words;
    size_t nwords;
    uint64_t seed;
};

static uint64_t
splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int
lookup_load(const char *config, void **ctx, size_t *ctx_bytes, char *err, size_t errlen)
{
    unsigned long long mb = 64, seed = 42;
    if (config != NULL && config[0] != '\0') {
        const char *p = strstr(config, "mb=");
        const char *q = strstr(config, "seed=");
        if ((p == NULL && q == NULL) || (p && sscanf(p, "mb=%llu", &mb) != 1) ||
            (q && sscanf(q, "seed=%llu", &seed) != 1) || mb == 0 || mb > 65536) {
            snprintf(err, errlen, "configuration '%s' is not \"mb=N[,seed=S]\" "
                     "with N from 1 to 65536", config);
            return -1;
        }
    }
    struct table *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->nwords = (size_t)mb * 1024 * 1024 / sizeof(uint64_t);
    t->seed = seed;
    t->words = malloc(t->nwords * sizeof(uint64_t));
    if (t->words == NULL) {
        snprintf(err, errlen, "cannot allocate %llu MiB", mb);
        free(t);
        return -1;
    }
    uint64_t state = seed;
    for (size_t i = 0; i < t->nwords; i++)      /* touches every page: real memory */
        t->words[i] = splitmix64(&state);
    *ctx = t;
    *ctx_bytes = t->nwords * sizeof(uint64_t);
    return 0;
}

static int
get_slice(const json_t *input, json_int_t *slice, json_int_t *of, char *err, size_t errlen)
{
    const json_t *s = json_object_get(input, "slice"), *o = json_object_get(input, "of");
    if (!json_is_object(input) || !json_is_integer(s) || !json_is_integer(o) ||
        json_integer_value(o) < 1 || json_integer_value(o) > 1000000 ||
        json_integer_value(s) < 0 || json_integer_value(s) >= json_integer_value(o)) {
        snprintf(err, errlen, "lookup needs {\"slice\": 0..of-1, \"of\": 1..1000000}");
        return -1;
    }
    *slice = json_integer_value(s);
    *of = json_integer_value(o);
    return 0;
}

static int
lookup_validate(const void *ctx, const json_t *input, char *err, size_t errlen)
{
    json_int_t slice, of;
    (void)ctx;
    return get_slice(input, &slice, &of, err, errlen);
}

static json_t *
lookup_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    const struct table *t = ctx;
    json_int_t slice, of;
    char why[128];
    (void)ws;
    if (get_slice(input, &slice, &of, why, sizeof why) != 0) {
        wp_task_error_set(err, "invalid_input", 0, "%s", why);
        return NULL;
    }
    size_t per = (t->nwords + (size_t)of - 1) / (size_t)of;
    size_t from = (size_t)slice * per;
    size_t to = from + per < t->nwords ? from + per : t->nwords;
    uint64_t sum = 0;
    for (size_t i = from; i < to; i++)
        sum += t->words[i];
    char hex[32];
    snprintf(hex, sizeof hex, "0x%016" PRIx64, sum);
    return json_pack("{s:I, s:I, s:I, s:s}", "slice", slice, "of", of, "words",
                     (json_int_t)(to > from ? to - from : 0), "sum", hex);
}

static void
lookup_unload(void *ctx)
{
    struct table *t = ctx;
    if (t != NULL) {
        free(t->words);
        free(t);
    }
}

static const struct wp_kind LOOKUP = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "lookup",
    .load = lookup_load,
    .validate = lookup_validate,
    .run = lookup_run,
    .unload = lookup_unload,
};

/* What warmpool looks for: a NULL-terminated array of the kinds this library has. */
const struct wp_kind *const wp_kinds[] = {&LOOKUP, NULL};
