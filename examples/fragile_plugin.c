/* fragile_plugin.c -- kinds that misbehave on purpose, for the tests of issue 8
 * (reload isolation, signals in run()). Not an example to copy.
 *
 *   fragile        load() reads the file named by its configuration string
 *                  (--kind-config fragile=PATH) and does what it says: "crash"
 *                  (SIGSEGV), "hang" (never returns), "fail" (returns an error),
 *                  "exit" (_exit(3)); a missing or empty file loads normally.
 *                  run() returns {"loaded": N}: the context's load counter.
 *   interruptible  run() {"ms": N} waits once in poll() for N ms and fails with
 *                  code "interrupted" if a signal cut the wait short (EINTR), as
 *                  plugin code that does not retry would; with "fail": true it
 *                  then fails anyway, retryably (code "asked_to_fail"). */
#include <warmpool/kind.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fragile_ctx {
    int loaded;                 /* how many contexts this process built (1 at start) */
};

static int g_loads;

static int
fragile_load(const char *config, void **ctx, size_t *ctx_bytes, char *err, size_t errlen)
{
    char what[32] = "";
    if (config != NULL && config[0] != '\0') {
        FILE *f = fopen(config, "r");
        if (f != NULL) {
            if (fgets(what, sizeof what, f) == NULL)
                what[0] = '\0';
            fclose(f);
            what[strcspn(what, "\r\n")] = '\0';
        }
    }
    if (strcmp(what, "crash") == 0) {
        fprintf(stderr, "fragile: crashing in load() on purpose\n");
        raise(SIGSEGV);
    } else if (strcmp(what, "hang") == 0) {
        fprintf(stderr, "fragile: hanging in load() on purpose\n");
        for (;;)
            pause();
    } else if (strcmp(what, "exit") == 0) {
        fprintf(stderr, "fragile: exiting in load() on purpose\n");
        _exit(3);
    } else if (strcmp(what, "fail") == 0) {
        snprintf(err, errlen, "the control file says fail (on purpose)");
        return -1;
    }
    struct fragile_ctx *c = malloc(sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->loaded = ++g_loads;
    *ctx = c;
    *ctx_bytes = sizeof *c;
    return 0;
}

static json_t *
fragile_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    const struct fragile_ctx *c = ctx;
    (void)ws;
    (void)input;
    (void)err;
    return json_pack("{s:i}", "loaded", c->loaded);
}

static void
fragile_unload(void *ctx)
{
    free(ctx);
}

static json_t *
interruptible_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    (void)ctx;
    (void)ws;
    json_int_t ms = json_integer_value(json_object_get(input, "ms"));
    if (ms < 0 || ms > 60000) {
        wp_task_error_set(err, "bad_input", 0, "interruptible needs {\"ms\": 0..60000}");
        return NULL;
    }
    /* one wait, no retry on EINTR: what a signal does to it is the point of the test */
    if (poll(NULL, 0, (int)ms) < 0) {
        wp_task_error_set(err, "interrupted", 0, "poll() failed: %s", strerror(errno));
        return NULL;
    }
    if (json_is_true(json_object_get(input, "fail"))) {
        wp_task_error_set(err, "asked_to_fail", 1, "waited %d ms, then failed as asked",
                          (int)ms);
        return NULL;
    }
    return json_pack("{s:I}", "waited_ms", ms);
}

static const struct wp_kind FRAGILE = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "fragile",
    .load = fragile_load,
    .run = fragile_run,
    .unload = fragile_unload,
};

static const struct wp_kind INTERRUPTIBLE = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "interruptible",
    .run = interruptible_run,
};

const struct wp_kind *const wp_kinds[] = {&FRAGILE, &INTERRUPTIBLE, NULL};
