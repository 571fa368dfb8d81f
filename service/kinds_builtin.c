/* kinds_builtin.c -- the kinds every warmpool has: echo, sleep; and, for tests, fail
 * and spin. */
#include "service/kinds.h"
#include "common/clock.h"

#include <stdint.h>
#include <stdio.h>

#define SLEEP_MAX_MS 600000

/* echo: the result is the input. */
static json_t *
echo_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    (void)ctx;
    (void)ws;
    (void)err;
    return json_deep_copy(input);
}

const struct wp_kind KIND_ECHO = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "echo",
    .run = echo_run,
};

/* sleep: {"ms": 0..600000} -> sleeps, then {"slept_ms": ms}. */
static int
sleep_validate(const void *ctx, const json_t *input, char *err, size_t errlen)
{
    (void)ctx;
    const json_t *ms = json_is_object(input) ? json_object_get(input, "ms") : NULL;
    if (ms == NULL || !json_is_integer(ms) || json_integer_value(ms) < 0 ||
        json_integer_value(ms) > SLEEP_MAX_MS) {
        snprintf(err, errlen, "sleep needs {\"ms\": an integer from 0 to %d}", SLEEP_MAX_MS);
        return -1;
    }
    return 0;
}

static json_t *
sleep_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    (void)ws;
    char why[128];
    if (sleep_validate(ctx, input, why, sizeof why) != 0) {
        wp_task_error_set(err, "invalid_input", 0, "%s", why);
        return NULL;
    }
    json_int_t ms = json_integer_value(json_object_get(input, "ms"));
    clock_sleep_ms(ms);
    return json_pack("{s:I}", "slept_ms", ms);
}

const struct wp_kind KIND_SLEEP = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "sleep",
    .validate = sleep_validate,
    .run = sleep_run,
};

/* fail: fails with task_failed and the input's "message" (retryable). */
static json_t *
fail_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    (void)ctx;
    (void)ws;
    const char *msg = json_string_value(json_object_get(input, "message"));
    wp_task_error_set(err, "task_failed", 1, "%s", msg ? msg : "failed on purpose");
    return NULL;
}

const struct wp_kind KIND_FAIL = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "fail",
    .run = fail_run,
};

/* spin (test kind): burns CPU for {"ms": N} milliseconds, or forever without "ms" --
 * a task that never returns, for the timeout and fault tests. */
static json_t *
spin_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    (void)ctx;
    (void)ws;
    (void)err;
    const json_t *ms = json_object_get(input, "ms");
    int64_t until = json_is_integer(ms) ? clock_mono_ms() + json_integer_value(ms) : INT64_MAX;
    volatile uint64_t x = 0;
    while (clock_mono_ms() < until)
        for (int i = 0; i < 100000; i++)
            x += (uint64_t)i;
    return json_pack("{s:b}", "spun", x != 1);      /* reads x: the loop is not dead code */
}

const struct wp_kind KIND_SPIN = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "spin",
    .run = spin_run,
};
