/* Integration: 8 concurrent clients submit 500 echo tasks each; every task
 * completes with its own input as result; none lost, none duplicated. */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CLIENTS = 8, PER_CLIENT = 500, TOTAL = CLIENTS * PER_CLIENT };

typedef struct {
    const wp_server *s;
    int client;
    pthread_barrier_t *bar;
    char (*ids)[32];     /* [PER_CLIENT] */
    int failures;
    int busy_retries;
    char first_error[512];
} client_arg;

static void *client_thread(void *p) {
    client_arg *a = p;
    CURL *h = curl_easy_init();
    pthread_barrier_wait(a->bar);
    for (int i = 0; i < PER_CLIENT; i++) {
        char body[160];
        snprintf(body, sizeof body, "{\"kind\":\"echo\",\"input\":{\"client\":%d,\"i\":%d,\"tag\":\"c%d-%d\"}}",
                 a->client, i, a->client, i);
        wp_req q = {.method = "POST", .path = "/v1/tasks", .body = body, .handle = h, .timeout_ms = 30000};
        wp_resp r;
        bool done = false;
        for (int attempt = 0; attempt < 50 && !done; attempt++) {
            wp_http_nc(a->s, &q, &r);
            if (r.status == 503) { /* "busy" is a legal, retried answer */
                a->busy_retries++;
                wp_resp_free(&r);
                wp_sleep_ms(20);
                continue;
            }
            done = true;
        }
        if (!done || r.status != 202 || !json_is_object(r.json) || !json_is_string(json_object_get(r.json, "id"))) {
            if (!a->failures)
                snprintf(a->first_error, sizeof a->first_error, "client %d task %d: status %ld curl %d %s: %.200s",
                         a->client, i, done ? r.status : 503L, r.curl_code, r.errbuf, r.body ? r.body : "");
            a->failures++;
            a->ids[i][0] = '\0';
        } else {
            snprintf(a->ids[i], 32, "%s", json_string_value(json_object_get(r.json, "id")));
        }
        if (done) wp_resp_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

typedef struct {
    const wp_server *s;
    char (*ids)[32];
    int from, to; /* flat index range */
    int bad;
    char first_error[512];
} check_arg;

static void *check_thread(void *p) {
    check_arg *a = p;
    CURL *h = curl_easy_init();
    for (int k = a->from; k < a->to; k++) {
        int client = k / PER_CLIENT, i = k % PER_CLIENT;
        char path[96];
        snprintf(path, sizeof path, "/v1/tasks/%s", a->ids[k]);
        wp_req q = {.method = "GET", .path = path, .handle = h};
        wp_resp r;
        wp_http_nc(a->s, &q, &r);
        char want[160];
        snprintf(want, sizeof want, "{\"client\":%d,\"i\":%d,\"tag\":\"c%d-%d\"}", client, i, client, i);
        json_t *w = json_loads(want, 0, NULL);
        bool ok = r.status == 200 && json_is_object(r.json) &&
                  strcmp(wp_str(r.json, "state"), "succeeded") == 0 &&
                  json_equal(json_object_get(r.json, "result"), w) &&
                  json_equal(json_object_get(r.json, "input"), w) &&
                  json_is_integer(json_object_get(r.json, "attempts")) &&
                  json_integer_value(json_object_get(r.json, "attempts")) == 1;
        if (!ok) {
            if (!a->bad)
                snprintf(a->first_error, sizeof a->first_error, "task %s (client %d #%d): status %ld: %.300s",
                         a->ids[k], client, i, r.status, r.body ? r.body : r.errbuf);
            a->bad++;
        }
        json_decref(w);
        wp_resp_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp_ids(const void *x, const void *y) { return wp_id_cmp((const char *)x, (const char *)y); }

WP_TEST(test_concurrent_clients) {
    wp_server *s = wp_server_start_args("--workers", "2", NULL);
    char(*ids)[32] = calloc(TOTAL, 32);
    assert_non_null(ids);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, CLIENTS);
    pthread_t th[CLIENTS];
    client_arg args[CLIENTS];
    memset(args, 0, sizeof args);
    long long t0 = wp_now_ms();
    for (int c = 0; c < CLIENTS; c++) {
        args[c].s = s;
        args[c].client = c;
        args[c].bar = &bar;
        args[c].ids = ids + c * PER_CLIENT;
        pthread_create(&th[c], NULL, client_thread, &args[c]);
    }
    for (int c = 0; c < CLIENTS; c++) pthread_join(th[c], NULL);
    pthread_barrier_destroy(&bar);
    long long t_submit = wp_now_ms() - t0;
    int busy = 0;
    for (int c = 0; c < CLIENTS; c++) {
        if (args[c].failures) fail_msg("%d submissions failed; first: %s", args[c].failures, args[c].first_error);
        busy += args[c].busy_retries;
    }
    print_message("submitted %d tasks from %d clients in %lld ms (%d busy retries)\n", TOTAL, CLIENTS, t_submit, busy);

    /* Every id unique. */
    char(*sorted)[32] = malloc((size_t)TOTAL * 32);
    memcpy(sorted, ids, (size_t)TOTAL * 32);
    qsort(sorted, TOTAL, 32, cmp_ids);
    for (int k = 1; k < TOTAL; k++)
        if (wp_id_cmp(sorted[k - 1], sorted[k]) == 0) fail_msg("id %s was given to two submissions", sorted[k]);
    /* Ids increase in submission order within each client. */
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 1; i < PER_CLIENT; i++)
            if (wp_id_cmp(ids[c * PER_CLIENT + i - 1], ids[c * PER_CLIENT + i]) >= 0)
                fail_msg("client %d: id %s after %s", c, ids[c * PER_CLIENT + i], ids[c * PER_CLIENT + i - 1]);

    /* Wait until everything is terminal (bounded). */
    long long deadline = wp_now_ms() + 150000;
    json_t *st = NULL;
    for (;;) {
        st = wp_stats(s);
        if (wp_stats_count(st, "pending") == 0 && wp_stats_count(st, "running") == 0) break;
        if (wp_now_ms() > deadline) {
            char *d = wp_dump(json_object_get(st, "tasks"));
            fail_msg("tasks not all terminal after 150 s: %s", d);
        }
        json_decref(st);
        wp_sleep_ms(200);
    }
    print_message("all terminal %lld ms after the start\n", wp_now_ms() - t0);
    assert_int_equal(wp_stats_count(st, "succeeded"), TOTAL);
    assert_int_equal(wp_stats_count(st, "failed"), 0);
    assert_int_equal(wp_stats_count(st, "canceled"), 0);
    assert_int_equal(wp_stats_total(st), TOTAL);
    json_decref(st);

    /* tasks_done adds up (poll briefly: counters may trail the store). */
    long long done = 0;
    deadline = wp_now_ms() + 5000;
    for (;;) {
        st = wp_stats(s);
        done = 0;
        size_t i;
        json_t *w;
        json_array_foreach(json_object_get(st, "workers"), i, w) done += wp_int(w, "tasks_done");
        json_decref(st);
        if (done == TOTAL || wp_now_ms() > deadline) break;
        wp_sleep_ms(100);
    }
    if (done != TOTAL) fail_msg("sum of tasks_done is %lld, want %d", done, TOTAL);

    /* Every task: succeeded, result == input == what its client sent. */
    enum { CHECKERS = 4 };
    pthread_t ct[CHECKERS];
    check_arg ca[CHECKERS];
    memset(ca, 0, sizeof ca);
    for (int k = 0; k < CHECKERS; k++) {
        ca[k].s = s;
        ca[k].ids = ids;
        ca[k].from = k * TOTAL / CHECKERS;
        ca[k].to = (k + 1) * TOTAL / CHECKERS;
        pthread_create(&ct[k], NULL, check_thread, &ca[k]);
    }
    for (int k = 0; k < CHECKERS; k++) pthread_join(ct[k], NULL);
    for (int k = 0; k < CHECKERS; k++)
        if (ca[k].bad) fail_msg("%d tasks wrong; first: %s", ca[k].bad, ca[k].first_error);

    /* The list holds exactly these ids, once each. */
    json_t *all = wp_list_all(s, "", 1000);
    assert_int_equal(json_array_size(all), TOTAL);
    for (int k = 0; k < TOTAL; k++) {
        /* newest first: all[k] is the k-th largest id */
        const char *got = wp_str(json_array_get(all, (size_t)k), "id");
        if (strcmp(got, sorted[TOTAL - 1 - k]) != 0)
            fail_msg("list item %d is %s, want %s", k, got, sorted[TOTAL - 1 - k]);
        if (strcmp(wp_str(json_array_get(all, (size_t)k), "state"), "succeeded") != 0)
            fail_msg("list item %s not succeeded", got);
    }
    json_decref(all);
    all = wp_list_all(s, "state=succeeded&kind=echo", 777);
    assert_int_equal(json_array_size(all), TOTAL);
    json_decref(all);
    free(sorted);
    free(ids);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_concurrent_clients, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.concurrency", tests, NULL, NULL);
}
