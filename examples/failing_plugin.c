/* failing_plugin.c -- a plugin whose load() fails: warmpool must refuse to start
 * (tests). */
#include <warmpool/kind.h>

#include <stdio.h>

static int
broken_load(const char *config, void **ctx, size_t *ctx_bytes, char *err, size_t errlen)
{
    (void)config;
    (void)ctx;
    (void)ctx_bytes;
    snprintf(err, errlen, "this context can never be built (on purpose)");
    return -1;
}

static json_t *
broken_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    (void)ctx;
    (void)ws;
    (void)input;
    (void)err;
    return json_null();
}

static const struct wp_kind BROKEN = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "broken",
    .load = broken_load,
    .run = broken_run,
};

const struct wp_kind *const wp_kinds[] = {&BROKEN, NULL};
