/* fuzz_submission.c -- libFuzzer target: everything the API does to untrusted bytes
 * before a task reaches the store: JSON parsing, submission and batch validation,
 * id and cursor parsing, routing. Any crash, leak, or sanitizer report is a bug.
 *
 * Run longer:  build/fuzz/tests/fuzz/fuzz_submission -max_total_time=600 corpus/ */
#include "api/internal.h"
#include "service/kinds.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct api_config g_cfg = {
    .max_body_bytes = 1 << 20,
    .default_timeout_ms = 300000,
    .hooks = {.validate = kinds_validate},
};
static struct api_ctx g_ctx = {.cfg = &g_cfg, .cursor_secret = 0x1234567890abcdefULL};

static void
load_kinds_once(void)
{
    static int done;
    if (!done) {
        struct config cfg = {.enable_test_kinds = 1};
        char err[256];
        kinds_load(&cfg, err, sizeof err);
        done = 1;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_kinds_once();
    /* 1. the body as a submission, and as a batch envelope */
    json_error_t e;
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
    if (json_is_object(doc)) {
        store_new_task nt;
        char *input = NULL, err[1024];
        if (taskjson_parse_submission(&g_ctx, doc, "", &nt, &input, err, sizeof err) == 0) {
            store_task t = {.id = 1, .kind = (char *)nt.kind, .input = input,
                            .priority = nt.priority, .max_attempts = nt.max_attempts,
                            .timeout_ms = nt.timeout_ms};
            if (!taskjson_same_submission(&t, &nt))
                abort();            /* a submission must match itself */
            json_decref(taskjson_from_store(&t, 0));
        }
        free(input);
        json_t *tasks = json_object_get(doc, "tasks");
        for (size_t i = 0; json_is_array(tasks) && i < json_array_size(tasks) && i < 8; i++) {
            json_t *item = json_array_get(tasks, i);
            if (!json_is_object(item))
                continue;
            input = NULL;
            taskjson_parse_submission(&g_ctx, item, "tasks[0].", &nt, &input, err, sizeof err);
            free(input);
        }
    }
    json_decref(doc);

    /* 2. the bytes as a path, an id and a cursor */
    char text[512];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    struct req r = {0};
    routes_match(size % 2 ? "GET" : "DELETE", text, &r);
    free(r.id);
    int64_t id;
    if (taskjson_parse_id(text, &id) == 0 && id <= 0)
        abort();
    if (taskjson_cursor_decode(g_ctx.cursor_secret, text, &id) == 0) {
        char again[64];
        taskjson_cursor_encode(g_ctx.cursor_secret, id, again);
        if (strcmp(again, text) != 0)
            abort();                /* only cursors we issue decode */
    }
    return 0;
}
