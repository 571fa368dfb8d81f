/* Integration: limits and protections (issue 4, items 4-7): --max-pending
 * backpressure, the API token, retention, a full disk (tmpfs), and slow or
 * abusive clients (idle connections, deep JSON, long URLs, huge headers).
 * Each test bounds its waits and checks that refused requests store nothing. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* ------------------------------------------------------------ local helpers */

static char g_dir[512];   /* removed by the teardown */
static char g_mnt[600];   /* a tmpfs mount point, unmounted by the teardown */
static bool g_mounted;

static int limits_teardown(void **state) {
    wp_test_teardown(state);
    if (g_mounted) {
        if (umount2(g_mnt, MNT_DETACH) != 0)
            fprintf(stderr, "umount %s: %s\n", g_mnt, strerror(errno));
        g_mounted = false;
    }
    if (g_mnt[0]) rmdir(g_mnt);
    g_mnt[0] = '\0';
    if (g_dir[0] && !getenv("WARMPOOL_IT_KEEP")) wp_remove_tree(g_dir);
    g_dir[0] = '\0';
    return 0;
}

static long status_of(const wp_server *s, const char *method, const char *path, const char *body,
                      const char *const *headers) {
    wp_resp r;
    wp_call_h(s, method, path, body, headers, &r);
    long st = r.status;
    wp_resp_free(&r);
    return st;
}

static void expect_alive(const wp_server *s, const char *after) {
    wp_req q = {.method = "GET", .path = "/healthz", .timeout_ms = 5000};
    wp_resp r;
    wp_http_nc(s, &q, &r);
    if (r.status != 200)
        fail_msg("after %s: /healthz answered %ld (curl: %s)", after, r.status, r.errbuf);
    wp_resp_free(&r);
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"still serving\"}");
    json_t *d = wp_wait_terminal(s, wp_str(t, "id"), 15);
    if (strcmp(wp_str(d, "state"), "succeeded") != 0) {
        char *dd = wp_dump(d);
        fail_msg("after %s: an echo task did not succeed: %s", after, dd);
    }
    json_decref(t);
    json_decref(d);
}

/* ------------------------------------------------------------ --max-pending */

WP_TEST(test_max_pending) {
    wp_server *s = wp_server_start_args("--workers", "1", "--max-pending", "5", "--grace-ms", "500", NULL);
    json_t *b = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":20000}}");
    json_decref(wp_wait_state(s, wp_str(b, "id"), "running", 10));
    json_decref(b);
    char ids[5][32];
    for (int i = 0; i < 5; i++) {
        json_t *t = wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", i);
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    wp_snap before = wp_snapshot(s);
    json_t *list_before = wp_list_all(s, "", 100);

    wp_resp r;
    wp_call(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"sixth\"}", &r);
    wp_assert_error(&r, 503, "queue_full", NULL);
    if (!r.has_retry_after || atoi(r.retry_after) < 1)
        fail_msg("503 queue_full needs a Retry-After of >= 1 s, got '%s'", r.has_retry_after ? r.retry_after : "(none)");
    wp_resp_free(&r);
    /* an idempotent one is refused too, and its key is not taken */
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"k\"}",
              (const char *const[]){"Idempotency-Key: mp-1", NULL}, &r);
    wp_assert_error(&r, 503, "queue_full", NULL);
    wp_resp_free(&r);
    wp_call(s, "POST", "/v1/tasks/batch", "{\"tasks\":[{\"kind\":\"echo\"}]}", &r);
    wp_assert_error(&r, 503, "queue_full", NULL);
    if (!r.has_retry_after) fail_msg("batch 503 queue_full without Retry-After");
    wp_resp_free(&r);
    wp_assert_unchanged(s, &before, "submissions over --max-pending");
    json_t *list_after = wp_list_all(s, "", 100);
    if (!json_equal(list_before, list_after)) fail_msg("the task list changed after refused submissions");
    json_decref(list_after);

    /* cancel two: 3 pending. A batch of 3 would make 6 > 5: refused whole. */
    for (int i = 0; i < 2; i++) {
        char *p = wp_fmt("/v1/tasks/%s", ids[i]);
        assert_int_equal(status_of(s, "DELETE", p, NULL, NULL), 200);
        free(p);
    }
    before = wp_snapshot(s);
    wp_call(s, "POST", "/v1/tasks/batch",
            "{\"tasks\":[{\"kind\":\"echo\",\"input\":1},{\"kind\":\"echo\",\"input\":2},{\"kind\":\"echo\",\"input\":3}]}",
            &r);
    wp_assert_error(&r, 503, "queue_full", NULL);
    wp_resp_free(&r);
    wp_assert_unchanged(s, &before, "a batch over --max-pending");
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "pending"), 3);
    json_decref(st);
    /* exactly up to the cap is fine */
    wp_call(s, "POST", "/v1/tasks/batch", "{\"tasks\":[{\"kind\":\"echo\",\"input\":1},{\"kind\":\"echo\",\"input\":2}]}",
            &r);
    if (r.status != 202) fail_msg("a batch filling --max-pending exactly: want 202, got %ld: %.300s", r.status, r.body);
    wp_resp_free(&r);
    /* the key refused earlier is still free */
    char *p2 = wp_fmt("/v1/tasks/%s", ids[2]);
    assert_int_equal(status_of(s, "DELETE", p2, NULL, NULL), 200);
    free(p2);
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"k\"}",
              (const char *const[]){"Idempotency-Key: mp-1", NULL}, &r);
    if (r.status != 202)
        fail_msg("an Idempotency-Key refused with queue_full must stay free: want 202, got %ld: %.300s", r.status,
                 r.body);
    wp_resp_free(&r);
    st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "pending"), 5);
    json_decref(st);
    json_decref(list_before);
}

/* ----------------------------------------------------------------- auth */

#define TOKEN "tok-3f9a1c77e2"

/* Raw request (to see WWW-Authenticate); returns status, body JSON (new ref or NULL). */
static int raw_req(const wp_server *s, const char *method, const char *path, const char *auth, const char *body,
                   char **headers, json_t **json) {
    char *req = wp_fmt("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s"
                       "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                       method, path, auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "",
                       body ? strlen(body) : 0, body ? body : "");
    char *h = NULL, *b = NULL;
    int st = wp_raw_http(s, req, strlen(req), 10000, &h, &b, NULL);
    if (json) *json = b ? json_loads(b, JSON_DECODE_ANY, NULL) : NULL;
    if (headers)
        *headers = h;
    else
        free(h);
    free(b);
    free(req);
    return st;
}

static const char *const AUTH_OK[] = {"Authorization: Bearer " TOKEN, NULL};

typedef struct {
    long long total;
    char newest[32];
} asnap;

static asnap auth_snapshot(const wp_server *s, const char *const *auth) {
    asnap a = {0};
    wp_resp r;
    wp_call_h(s, "GET", "/v1/stats", NULL, auth, &r);
    if (r.status != 200) fail_msg("GET /v1/stats with the token: %ld %.300s", r.status, r.body);
    json_t *t = json_object_get(r.json, "tasks");
    const char *k;
    json_t *v;
    json_object_foreach(t, k, v) a.total += json_integer_value(v);
    wp_resp_free(&r);
    wp_call_h(s, "GET", "/v1/tasks?limit=1", NULL, auth, &r);
    if (r.status != 200) fail_msg("GET /v1/tasks with the token: %ld %.300s", r.status, r.body);
    json_t *first = json_array_get(json_object_get(r.json, "tasks"), 0);
    snprintf(a.newest, sizeof a.newest, "%s", first ? wp_str(first, "id") : "");
    wp_resp_free(&r);
    return a;
}

static void expect_401(const wp_server *s, const char *method, const char *path, const char *auth, const char *body) {
    char *h = NULL;
    json_t *j = NULL;
    int st = raw_req(s, method, path, auth, body, &h, &j);
    if (st != 401)
        fail_msg("%s %s with Authorization '%s': want 401, got %d: %.300s", method, path, auth ? auth : "(none)", st,
                 h ? h : "");
    if (!h || !strcasestr(h, "\r\nWWW-Authenticate: Bearer realm=\"warmpool\""))
        fail_msg("401 for %s %s without `WWW-Authenticate: Bearer realm=\"warmpool\"`: %.400s", method, path,
                 h ? h : "");
    json_t *e = json_object_get(j, "error");
    if (!json_is_object(e) || strcmp(wp_str(e, "code"), "unauthorized") != 0)
        fail_msg("401 for %s %s: body must be error unauthorized", method, path);
    free(h);
    json_decref(j);
}

static void expect_token_required(const wp_server *s, const char *token) {
    char good[128];
    snprintf(good, sizeof good, "Bearer %s", token);
    const char *const hdr_ok[] = {wp_fmt("Authorization: Bearer %s", token), NULL};
    asnap before = auth_snapshot(s, hdr_ok);
    char wrong_case[128], extra[128], shorter[128], two_spaces[128];
    snprintf(wrong_case, sizeof wrong_case, "bearer %s", token);
    snprintf(extra, sizeof extra, "Bearer %sx", token);
    snprintf(shorter, sizeof shorter, "Bearer %.*s", (int)strlen(token) - 1, token);
    snprintf(two_spaces, sizeof two_spaces, "Bearer  %s", token);
    const char *const bad[] = {NULL, "Bearer wrong", wrong_case, extra, shorter, "Bearer ", "Basic dG9rOnRvaw==",
                               token, two_spaces, "BEARER x"};
    const char *body = "{\"kind\":\"echo\",\"input\":\"intruder\"}";
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        expect_401(s, "POST", "/v1/tasks", bad[i], body);
        expect_401(s, "POST", "/v1/tasks/batch", bad[i], "{\"tasks\":[{\"kind\":\"echo\"}]}");
    }
    expect_401(s, "GET", "/v1/tasks", NULL, NULL);
    expect_401(s, "GET", "/v1/tasks/1", NULL, NULL);
    expect_401(s, "DELETE", "/v1/tasks/1", "Bearer nope", NULL);
    expect_401(s, "GET", "/v1/stats", extra, NULL);
    expect_401(s, "GET", "/v1/no-such-path", NULL, NULL);
    expect_401(s, "POST", "/v1/admin/reload", NULL, NULL);
    expect_401(s, "POST", "/v1/admin/reload", wrong_case, NULL);
    asnap after = auth_snapshot(s, hdr_ok);
    if (after.total != before.total || strcmp(after.newest, before.newest) != 0)
        fail_msg("requests without the right token changed what is stored: %lld tasks (newest '%s') before, %lld "
                 "('%s') after",
                 before.total, before.newest, after.total, after.newest);
    /* the right token works */
    wp_resp r;
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"friend\"}", hdr_ok, &r);
    if (r.status != 202) fail_msg("POST with the right token: want 202, got %ld: %.300s", r.status, r.body);
    char *p = wp_fmt("/v1/tasks/%s?wait=10", wp_str(r.json, "id"));
    wp_resp_free(&r);
    wp_call_h(s, "GET", p, NULL, hdr_ok, &r);
    if (r.status != 200 || strcmp(wp_str(r.json, "state"), "succeeded") != 0)
        fail_msg("GET with the right token: %ld %.300s", r.status, r.body);
    wp_resp_free(&r);
    free(p);
    /* health stays open */
    int st = raw_req(s, "GET", "/healthz", NULL, NULL, NULL, NULL);
    if (st != 200) fail_msg("/healthz without a token: want 200, got %d", st);
    st = raw_req(s, "GET", "/readyz", NULL, NULL, NULL, NULL);
    if (st != 200) fail_msg("/readyz without a token: want 200, got %d", st);
    free((char *)hdr_ok[0]);
}

/* Poll /v1/stats (with the token) until every kind has generation `g`. */
static void wait_generation(const wp_server *s, long long g, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        wp_resp r;
        wp_call_h(s, "GET", "/v1/stats", NULL, AUTH_OK, &r);
        if (r.status != 200) fail_msg("GET /v1/stats with the token: %ld", r.status);
        json_t *ks = json_object_get(r.json, "kinds");
        bool ok = json_array_size(ks) > 0;
        size_t i;
        json_t *k;
        json_array_foreach(ks, i, k) {
            if (json_integer_value(json_object_get(k, "generation")) != g) ok = false;
        }
        if (ok) {
            wp_resp_free(&r);
            return;
        }
        if (wp_now_ms() > deadline) fail_msg("kinds not at generation %lld within %.0f s: %.500s", g, timeout_s, r.body);
        wp_resp_free(&r);
        wp_sleep_ms(50);
    }
}

WP_TEST(test_auth_token) {
    wp_server *s = wp_server_start_args("--workers", "1", "--api-token", TOKEN, NULL);
    expect_token_required(s, TOKEN);
    /* reload over HTTP, with the token */
    wp_resp r;
    wp_call_h(s, "POST", "/v1/admin/reload", NULL, AUTH_OK, &r);
    if (r.status != 202) fail_msg("POST /v1/admin/reload with the token: want 202, got %ld: %.300s", r.status, r.body);
    wp_resp_free(&r);
    wait_generation(s, 2, 20);
    /* and it still serves after the reload */
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"after reload\"}", AUTH_OK, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    wp_server_free(s);

    /* from the environment */
    wp_opts o = {.args = (const char *const[]){"--workers", "1", NULL},
                 .env = (const char *const[]){"WARMPOOL_API_TOKEN=" TOKEN, NULL}};
    s = wp_server_start(&o);
    expect_token_required(s, TOKEN);
    wp_server_free(s);

    /* from a file with a trailing newline */
    wp_make_temp_dir(g_dir, sizeof g_dir);
    char *file = wp_fmt("%s/token", g_dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("file-token-81b2\n", f);
    fclose(f);
    chmod(file, 0600);
    s = wp_server_start_args("--workers", "1", "--api-token-file", file, NULL);
    expect_token_required(s, "file-token-81b2");
    wp_server_free(s);
    free(file);

    /* without a token: every /v1 is open, and the reload route does not exist */
    s = wp_server_start_args("--workers", "1", NULL);
    wp_call(s, "POST", "/v1/admin/reload", NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    json_decref(wp_stats(s));
}

/* --------------------------------------------------------------- retention */

static long get_status(const wp_server *s, const char *id) {
    char *p = wp_fmt("/v1/tasks/%s", id);
    long st = status_of(s, "GET", p, NULL, NULL);
    free(p);
    return st;
}

WP_TEST(test_retention) {
    wp_server *s = wp_server_start_args("--workers", "1", "--retention", "1s", "--grace-ms", "500", NULL);
    const char *const key[] = {"Idempotency-Key: retention-key-1", NULL};
    const char *kbody = "{\"kind\":\"echo\",\"input\":\"keyed\"}";
    wp_resp r;
    wp_call_h(s, "POST", "/v1/tasks", kbody, key, &r);
    assert_int_equal(r.status, 202);
    char kid[32];
    snprintf(kid, sizeof kid, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    char done[4][32];
    snprintf(done[0], 32, "%s", kid);
    for (int i = 1; i < 4; i++) {
        json_t *t = wp_submitf(s, "{\"kind\":\"echo\",\"input\":%d}", i);
        snprintf(done[i], 32, "%s", wp_str(t, "id"));
        json_decref(t);
    }
    for (int i = 0; i < 4; i++) json_decref(wp_wait_terminal(s, done[i], 10));
    long long finished = wp_now_ms();
    /* the only worker is now busy; a pending task waits behind it */
    json_t *b = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":15000}}");
    char bid[32], pid_[32];
    snprintf(bid, sizeof bid, "%s", wp_str(b, "id"));
    json_decref(b);
    json_decref(wp_wait_state(s, bid, "running", 10));
    json_t *p = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"waits\"}");
    snprintf(pid_, sizeof pid_, "%s", wp_str(p, "id"));
    json_decref(p);

    /* finished tasks go within ~5 s */
    for (int i = 0; i < 4; i++) {
        for (;;) {
            long st = get_status(s, done[i]);
            if (st == 404) break;
            if (st != 200) fail_msg("GET of finished task %s: %ld", done[i], st);
            if (wp_now_ms() - finished > 6000)
                fail_msg("--retention 1s: finished task %s still there %lld ms after it finished", done[i],
                         wp_now_ms() - finished);
            wp_sleep_ms(100);
        }
    }
    long long gone_ms = wp_now_ms() - finished;
    /* pending and running ones stay (also a while later) */
    wp_sleep_ms(1500);
    json_t *pt = wp_get_task(s, pid_);
    assert_string_equal(wp_str(pt, "state"), "pending");
    json_decref(pt);
    json_t *bt = wp_get_task(s, bid);
    assert_string_equal(wp_str(bt, "state"), "running");
    json_decref(bt);
    json_t *st = wp_stats(s);
    if (wp_stats_total(st) != 2) {
        char *d = wp_dump(json_object_get(st, "tasks"));
        fail_msg("after retention: want only the running and the pending task, stats say %s", d);
    }
    json_decref(st);
    /* the key was freed with its task: the same request creates a new task */
    wp_call_h(s, "POST", "/v1/tasks", kbody, key, &r);
    if (r.status != 202) fail_msg("Idempotency-Key of a deleted task: want 202 (a new task), got %ld: %.300s", r.status,
                                  r.body);
    if (wp_id_cmp(wp_str(r.json, "id"), kid) <= 0)
        fail_msg("reused key gave id %s, not a new one (> %s)", wp_str(r.json, "id"), kid);
    wp_resp_free(&r);
    /* and a listing no longer shows the deleted ones */
    json_t *all = wp_list_all(s, "", 100);
    assert_int_equal(json_array_size(all), 3);
    json_decref(all);
    print_message("limits: retention 1s: finished tasks gone %lld ms after they finished\n", gone_ms);
}

/* --------------------------------------------------------------- disk full */

WP_TEST(test_disk_full) {
    WP_SQLITE_ONLY("an SQLite file on a tmpfs that fills (a PostgreSQL server's full disk is its own)");
    wp_make_temp_dir(g_dir, sizeof g_dir);
    snprintf(g_mnt, sizeof g_mnt, "%s/small", g_dir);
    assert_int_equal(mkdir(g_mnt, 0755), 0);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=3m") != 0) {
        int e = errno;
        print_message("SKIPPED: cannot mount a tmpfs (%s): the disk-full test needs root (CAP_SYS_ADMIN)\n",
                      strerror(e));
        rmdir(g_mnt);
        g_mnt[0] = '\0';
        skip();
    }
    g_mounted = true;
    char *db = wp_fmt("%s/w.db", g_mnt);
    wp_opts o = {.dir = g_dir, .db = db, .args = (const char *const[]){"--workers", "1", "--grace-ms", "500", NULL}};
    wp_server *s = wp_server_start(&o);
    /* the only worker sleeps, so the big tasks stay queued */
    json_t *b = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":2500}}");
    char bid[32];
    snprintf(bid, sizeof bid, "%s", wp_str(b, "id"));
    json_decref(b);

    enum { BIG = 200 * 1024, MAX_TRIES = 60 };
    char *body = malloc(BIG + 64);
    assert_non_null(body);
    char ids[MAX_TRIES][32];
    int nids = 0, tries = 0;
    bool full = false;
    while (tries < MAX_TRIES && !full) {
        int n = snprintf(body, 64, "{\"kind\":\"echo\",\"input\":\"%02d", tries);
        memset(body + n, 'a' + tries % 26, BIG);
        snprintf(body + n + BIG, 64, "\"}");
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", body, &r);
        tries++;
        if (r.status == 202) {
            snprintf(ids[nids++], 32, "%s", wp_str(r.json, "id"));
        } else if (r.status == 507) {
            wp_assert_error(&r, 507, "insufficient_storage", NULL);
            full = true;
        } else {
            fail_msg("submission %d of ~200 KB onto a 3 MB tmpfs: want 202 or 507, got %ld: %.300s", tries, r.status,
                     r.body);
        }
        wp_resp_free(&r);
    }
    if (!full) fail_msg("%d submissions of 200 KB onto a 3 MB tmpfs never got 507", tries);
    if (nids == 0) fail_msg("the very first submission got 507: the tmpfs is too small for the test");

    /* still answers; refused ones stored nothing */
    json_t *st0 = wp_stats(s);
    long long total0 = wp_stats_total(st0);
    json_decref(st0);
    if (total0 != nids + 1) fail_msg("%d tasks acknowledged (+1 sleep), stats count %lld", nids, total0);
    for (int i = 0; i < 3; i++) {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", body, &r);
        if (r.status != 507 && r.status != 503)
            fail_msg("the disk is still full: want 507 (or 503), got %ld: %.300s", r.status, r.body);
        wp_resp_free(&r);
    }
    {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks/batch", "{\"tasks\":[{\"kind\":\"echo\",\"input\":\"small\"}]}", &r);
        if (r.status != 507 && r.status != 503 && r.status != 202)
            fail_msg("a small batch on a full disk: want 507, 503 or 202, got %ld: %.300s", r.status, r.body);
        wp_resp_free(&r);
    }
    for (int i = 0; i < nids; i++) {
        json_t *t = wp_get_task(s, ids[i]);
        json_decref(t);
    }
    json_t *st1 = wp_stats(s);
    long long total1 = wp_stats_total(st1);
    json_decref(st1);

    /* keep the disk full until the worker has to record the sleep's result and
     * claim the next task on it: the worker side must ride it out too */
    long long full_since = wp_now_ms();
    while (wp_now_ms() - full_since < 3000) {
        wp_req q = {.method = "GET", .path = "/healthz", .timeout_ms = 3000};
        wp_resp r;
        wp_http_nc(s, &q, &r);
        if (r.status != 200) fail_msg("/healthz while the disk is full: %ld (%s)", r.status, r.errbuf);
        wp_resp_free(&r);
        json_decref(wp_get_task(s, ids[0]));
        wp_sleep_ms(250);
    }
    json_t *stf = wp_stats(s);
    if (wp_stats_total(stf) != total1) fail_msg("the task count changed while the disk was full");
    json_decref(stf);

    /* space returns: it recovers by itself */
    if (mount("tmpfs", g_mnt, "tmpfs", MS_REMOUNT, "size=20m") != 0)
        fail_msg("remount %s size=20m: %s", g_mnt, strerror(errno));
    long long t0 = wp_now_ms();
    char nid[32] = "";
    for (;;) {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"space again\"}", &r);
        if (r.status == 202) {
            snprintf(nid, sizeof nid, "%s", wp_str(r.json, "id"));
            wp_resp_free(&r);
            break;
        }
        if (wp_now_ms() - t0 > 5000)
            fail_msg("5 s after the disk grew, a submission still gets %ld: %.300s", r.status, r.body);
        wp_resp_free(&r);
        wp_sleep_ms(100);
    }
    long long recover_ms = wp_now_ms() - t0;
    /* every acknowledged task finishes, with its whole input as result */
    json_t *bd = wp_wait_terminal(s, bid, 30);
    if (strcmp(wp_str(bd, "state"), "succeeded") != 0) {
        char *d = wp_dump(bd);
        fail_msg("the sleep task that ran while the disk was full: want succeeded, got %s", d);
    }
    json_decref(bd);
    for (int i = 0; i < nids; i++) {
        json_t *d = wp_wait_terminal(s, ids[i], 30);
        json_t *in = json_object_get(d, "input");
        if (strcmp(wp_str(d, "state"), "succeeded") != 0 || !json_equal(in, json_object_get(d, "result")) ||
            json_string_length(in) != BIG + 2) {
            fail_msg("big task %s after the disk grew: want succeeded with result == input (%d chars), got state "
                     "'%s', error %s",
                     ids[i], BIG + 2, wp_str(d, "state"), wp_dump(json_object_get(d, "error")));
        }
        json_decref(d);
    }
    json_t *nd = wp_wait_terminal(s, nid, 20);
    assert_string_equal(wp_str(nd, "state"), "succeeded");
    json_decref(nd);
    json_t *st2 = wp_stats(s);
    if (wp_stats_total(st2) != total1 + 1)
        fail_msg("stats total %lld after one more task; before it %lld", wp_stats_total(st2), total1);
    json_decref(st2);
    print_message("limits: disk full: %d x 200 KB accepted, then 507 insufficient_storage; nothing stored by the "
                  "refused ones (%lld tasks); recovered %lld ms after the remount; all %d finished\n",
                  nids, total0, recover_ms, nids + 1);
    wp_server_stop(s, 10000, NULL);
    free(body);
    free(db);
}

/* -------------------------------------------------- slow and abusive clients */

static int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

WP_TEST(test_slow_and_abusive_clients) {
    wp_server *s = wp_server_start_args("--workers", "1", NULL);
    enum { IDLE = 200 };
    int fds[IDLE];
    for (int i = 0; i < IDLE; i++) {
        fds[i] = connect_port(s->port);
        if (fds[i] < 0) fail_msg("idle connection %d: connect: %s", i, strerror(errno));
        if (i % 4 == 0) {
            const char *partial = "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le";
            if (send(fds[i], partial, strlen(partial), MSG_NOSIGNAL) < 0) fail_msg("send: %s", strerror(errno));
        } else if (i % 4 == 1) {
            const char *partial = "POST /v1/tasks HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"kind\":";
            if (send(fds[i], partial, strlen(partial), MSG_NOSIGNAL) < 0) fail_msg("send: %s", strerror(errno));
        }
    }
    wp_sleep_ms(200);
    for (int k = 0; k < 5; k++) {
        wp_req q = {.method = "GET", .path = "/healthz", .timeout_ms = 3000};
        wp_resp r;
        wp_http_nc(s, &q, &r);
        if (r.status != 200)
            fail_msg("with %d idle/slow connections open, /healthz answered %ld (curl: %s) within 3 s", IDLE, r.status,
                     r.errbuf);
        wp_resp_free(&r);
    }
    long long t0 = wp_now_ms();
    expect_alive(s, "200 idle and half-sent connections");
    long long alive_ms = wp_now_ms() - t0;
    if (alive_ms > 3000) fail_msg("a normal client needed %lld ms with idle connections open", alive_ms);
    for (int i = 0; i < IDLE; i++) close(fds[i]);

    wp_snap before = wp_snapshot(s);
    /* 100,000-deep arrays: closed and unclosed */
    enum { DEPTH = 100000 };
    char *deep = malloc(2 * DEPTH + 64);
    assert_non_null(deep);
    int n = sprintf(deep, "{\"kind\":\"echo\",\"input\":");
    memset(deep + n, '[', DEPTH);
    memset(deep + n + DEPTH, ']', DEPTH);
    strcpy(deep + n + 2 * DEPTH, "}");
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks", deep, &r);
    wp_assert_error(&r, 400, "invalid_json", NULL);
    wp_resp_free(&r);
    deep[n + DEPTH] = '\0';
    wp_call(s, "POST", "/v1/tasks", deep, &r);
    wp_assert_error(&r, 400, "invalid_json", NULL);
    wp_resp_free(&r);
    memset(deep, '[', DEPTH);
    deep[DEPTH] = '\0';
    wp_call(s, "POST", "/v1/tasks/batch", deep, &r);
    wp_assert_error(&r, 400, "invalid_json", NULL);
    wp_resp_free(&r);
    free(deep);
    wp_assert_unchanged(s, &before, "100,000-deep JSON");
    expect_alive(s, "100,000-deep JSON");

    /* 8,000-character URLs */
    before = wp_snapshot(s);
    char *url = malloc(8100);
    assert_non_null(url);
    strcpy(url, "/v1/tasks/");
    memset(url + 10, '7', 8000 - 10);
    url[8000] = '\0';
    wp_call(s, "GET", url, NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    wp_call(s, "DELETE", url, NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    memset(url + 4, 'a', 8000 - 4);
    wp_call(s, "GET", url, NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    strcpy(url, "/v1/tasks?kind=");
    memset(url + 15, 'k', 8000 - 15);
    url[8000] = '\0';
    wp_call(s, "GET", url, NULL, &r);
    if (r.status != 200 && r.status != 400)
        fail_msg("GET /v1/tasks?kind=<8000 chars>: want 200 (empty list) or 400, got %ld: %.200s", r.status, r.body);
    wp_resp_free(&r);
    free(url);
    wp_assert_unchanged(s, &before, "8,000-character URLs");
    expect_alive(s, "8,000-character URLs");

    /* a 100 KB header */
    before = wp_snapshot(s);
    enum { HUGE = 100 * 1024 };
    char *req = malloc(HUGE + 512);
    assert_non_null(req);
    const char *body = "{\"kind\":\"echo\",\"input\":\"huge header\"}";
    int m = sprintf(req, "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ");
    memset(req + m, 'h', HUGE);
    m += HUGE;
    m += sprintf(req + m, "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 strlen(body), body);
    char *hdrs = NULL;
    int st = wp_raw_http(s, req, (size_t)m, 10000, &hdrs, NULL, NULL);
    if (!(st == 431 || st == 413 || st == 400))
        fail_msg("a 100 KB header: want 431, 413 or 400, got %d: %.200s", st, hdrs ? hdrs : "(no answer)");
    free(hdrs);
    /* many headers adding up to 100 KB */
    m = sprintf(req, "GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; m < HUGE; i++) m += sprintf(req + m, "X-H%d: %0100d\r\n", i, i);
    m += sprintf(req + m, "Connection: close\r\n\r\n");
    hdrs = NULL;
    st = wp_raw_http(s, req, (size_t)m, 10000, &hdrs, NULL, NULL);
    if (!(st == 431 || st == 413 || st == 400))
        fail_msg("100 KB of headers: want 431, 413 or 400, got %d: %.200s", st, hdrs ? hdrs : "(no answer)");
    free(hdrs);
    free(req);
    wp_assert_unchanged(s, &before, "100 KB headers");
    expect_alive(s, "100 KB headers");
}

/* -------------------------------------------------- connection caps */

/* Sends a request on a fresh raw connection and reads what comes back within
 * timeout_ms: the HTTP status, 0 when the server closed the connection without
 * answering, -1 when nothing came back in time. *fd_out (if given) keeps the
 * connection open instead of closing it. */
static int raw_status(int port, const char *req, int timeout_ms, int *fd_out) {
    int fd = connect_port(port);
    if (fd < 0) return 0;
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
        close(fd);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64] = "";
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    int st;
    if (n > 0) {
        buf[n] = '\0';
        st = strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
    } else if (n == 0 || errno == ECONNRESET) {
        st = 0;
    } else {
        st = -1;    /* EAGAIN: no answer yet */
    }
    if (fd_out) *fd_out = fd;
    else close(fd);
    return st;
}

static const char HEALTHZ[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/* A connection that the server has certainly taken (it answered one request on it)
 * and that stays open, idle (keep-alive). */
static int open_kept_alive(int port) {
    int fd = -1;
    int st = raw_status(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 5000, &fd);
    if (st != 200) fail_msg("a keep-alive connection: /healthz answered %d", st);
    return fd;
}

WP_TEST(test_connection_caps) {
    /* --max-connections-per-ip 3: a fourth connection from 127.0.0.1 is closed at
     * once, and what it carried is not processed */
    wp_server *s = wp_server_start_args("--workers", "1", "--http-threads", "2", "--max-connections-per-ip", "3",
                                        NULL);
    wp_snap before = wp_snapshot(s);
    wp_sleep_ms(200);   /* the snapshot's own connections are gone */
    int idle[3];
    for (int i = 0; i < 3; i++) idle[i] = open_kept_alive(s->port);
    const char *post = "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 15\r\nConnection: close\r\n\r\n{\"kind\":\"echo\"}";
    int st = raw_status(s->port, post, 3000, NULL);
    if (st != 0) fail_msg("a 4th connection with --max-connections-per-ip 3: want it closed unanswered, got %d", st);
    close(idle[0]);
    wp_sleep_ms(200);
    st = raw_status(s->port, HEALTHZ, 3000, NULL);
    if (st != 200) fail_msg("after one of the 3 connections closed, a new one got %d, want 200", st);
    for (int i = 1; i < 3; i++) close(idle[i]);
    wp_sleep_ms(200);
    wp_assert_unchanged(s, &before, "a connection over the per-address cap");
    expect_alive(s, "connections over the per-address cap");
    wp_server_stop(s, 10000, NULL);

    /* --max-connections 4: a fifth waits in the listen queue, and is served as soon
     * as a connection closes */
    wp_server *t = wp_server_start_args("--workers", "1", "--http-threads", "2", "--max-connections", "4", NULL);
    int busy[4];
    for (int i = 0; i < 4; i++) busy[i] = open_kept_alive(t->port);
    int waiting = -1;
    st = raw_status(t->port, HEALTHZ, 1000, &waiting);
    if (st != -1) fail_msg("a 5th connection with --max-connections 4: want no answer while 4 are open, got %d", st);
    for (int i = 0; i < 4; i++) close(busy[i]);
    struct timeval tv = {5, 0};
    setsockopt(waiting, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64] = "";
    ssize_t n = recv(waiting, buf, sizeof buf - 1, 0);
    close(waiting);
    if (n <= 0 || strncmp(buf, "HTTP/1.1 200", 12) != 0)
        fail_msg("the queued 5th connection was not served once the others closed (recv %zd: %.30s)", n, buf);
    expect_alive(t, "connections over --max-connections");
    wp_server_stop(t, 10000, NULL);

    /* an open-file limit too small for --max-connections: it serves with fewer, and says so */
    const char *const args[] = {"--workers", "1", "--max-connections", "5000", NULL};
    wp_opts o = {.args = args, .nofile = 256};
    wp_server *u = wp_server_start(&o);
    char *log = wp_server_read_log(u);
    if (!strstr(log, "--max-connections 5000 does not fit") || !strstr(log, "serving at most 192 connections"))
        fail_msg("with RLIMIT_NOFILE 256 and --max-connections 5000, the log should say it serves at most 192: %s",
                 log);
    free(log);
    expect_alive(u, "a small open-file limit");
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_max_pending, limits_teardown),
        cmocka_unit_test_teardown(test_auth_token, limits_teardown),
        cmocka_unit_test_teardown(test_retention, limits_teardown),
        cmocka_unit_test_teardown(test_disk_full, limits_teardown),
        cmocka_unit_test_teardown(test_slow_and_abusive_clients, limits_teardown),
        cmocka_unit_test_teardown(test_connection_caps, limits_teardown),
    };
    return cmocka_run_group_tests_name("integration.limits", tests, NULL, NULL);
}
