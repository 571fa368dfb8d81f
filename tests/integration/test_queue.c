/* Integration: the queue controls of issue 13 on the real binary over HTTP: scheduled
 * tasks (run_at, delay_ms), retry from the dead (POST /v1/tasks/{id}/retry), pausing a
 * kind (POST /v1/kinds/{name}/pause, /resume; stored: across a restart), per-kind
 * concurrency (--kind-concurrency), with bad input. Runs on SQLite and, as
 * integration.pg.queue, on PostgreSQL. */
#include "harness.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOKEN "queue-token-0123456789"
static const char *const AUTH_OK[] = {"Authorization: Bearer " TOKEN, NULL};

static void expect_status(const wp_resp *r, long status, const char *what) {
    if (r->status != status) fail_msg("%s: want %ld, got %ld: %.500s", what, status, r->status, r->body);
}

/* POST path (no body) and its answer's status; *out (may be NULL) gets the JSON. */
static long post(const wp_server *s, const char *path, json_t **out) {
    wp_resp r;
    wp_call(s, "POST", path, NULL, &r);
    long st = r.status;
    if (out) *out = r.json ? json_incref(r.json) : NULL;
    wp_resp_free(&r);
    return st;
}

static void rfc3339(long long ms, char out[40]) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%s.%03lldZ", base, ms % 1000);
}

/* The ids of the tasks a list query returns (all pages): 1 when id is among them. */
static int listed(const wp_server *s, const char *query, const char *id) {
    json_t *all = wp_list_all(s, query, 100);
    size_t i;
    json_t *t;
    int found = 0;
    json_array_foreach(all, i, t) {
        wp_assert_task_keys_exact(t, false, "list item");
        if (strcmp(wp_str(t, "id"), id) == 0) found = 1;
    }
    json_decref(all);
    return found;
}

/* ------------------------------------------------------------------ scheduled */

/* delay_ms: pending with run_after, listed as pending, not started before its time, and
 * started soon after it: idle workers sleep until the earliest due time, not a poll (the
 * safety net is made a minute long here, fault point worker_safety_net_ms, so only that
 * sleep can start it in time). */
WP_TEST(test_scheduled_delay_runs_when_due) {
    const char *const args[] = {"--workers", "2", "--enable-test-kinds", NULL};
    const char *const env[] = {"WARMPOOL_FAULTS=worker_safety_net_ms=60000", NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    long long before = wp_wall_ms();
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":1,\"delay_ms\":1500}");
    const char *id = wp_str(t, "id");
    assert_string_equal(wp_str(t, "state"), "pending");
    long long ra = wp_parse_ts(wp_str(t, "run_after"));
    if (ra < before + 1400 || ra > wp_wall_ms() + 1600)
        fail_msg("run_after %lld is not 1.5 s after the submission (%lld)", ra, before);
    assert_true(listed(s, "state=pending", id));
    wp_sleep_ms(700);
    json_t *g = wp_get_task(s, id);
    assert_string_equal(wp_str(g, "state"), "pending");
    assert_string_equal(wp_str(g, "run_after"), wp_str(t, "run_after"));
    json_decref(g);
    json_t *done = wp_wait_terminal(s, id, 10);
    assert_string_equal(wp_str(done, "state"), "succeeded");
    long long started = wp_parse_ts(wp_str(done, "started_at"));
    if (started < ra) fail_msg("started at %lld, before its run_after %lld", started, ra);
    if (started - ra > 800)
        fail_msg("started %lld ms after its run_after: the idle workers did not wake for it",
                 started - ra);
    assert_true(json_is_null(json_object_get(done, "run_after")));
    json_decref(done);
    json_decref(t);
    wp_server_free(s);
}

/* run_at: a time past runs now; one ahead (in another zone) waits; a batch mixes them;
 * a scheduled task can be canceled. */
WP_TEST(test_scheduled_run_at_batch_and_cancel) {
    wp_server *s = wp_server_start_args("--workers", "1", "--enable-test-kinds", NULL);
    json_t *past = wp_submit(s, "{\"kind\":\"echo\",\"input\":2,\"run_at\":\"2001-02-03T04:05:06Z\"}");
    assert_true(json_is_null(json_object_get(past, "run_after")));
    json_t *d = wp_wait_terminal(s, wp_str(past, "id"), 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(past);

    /* an hour ahead, written at +02:00 */
    long long at = (wp_wall_ms() / 1000 + 3600) * 1000;
    time_t z = (time_t)(at / 1000 + 7200);
    struct tm tm;
    gmtime_r(&z, &tm);
    char local[40], utc[40];
    strftime(local, sizeof local, "%Y-%m-%dT%H:%M:%S+02:00", &tm);
    rfc3339(at, utc);
    char *body = wp_fmt("{\"tasks\":[{\"kind\":\"echo\",\"input\":3,\"run_at\":\"%s\"},"
                        "{\"kind\":\"echo\",\"input\":4,\"delay_ms\":600000},"
                        "{\"kind\":\"echo\",\"input\":5}]}", local);
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks/batch", body, &r);
    free(body);
    expect_status(&r, 202, "batch with scheduled tasks");
    json_t *tasks = json_object_get(r.json, "tasks");
    assert_int_equal(json_array_size(tasks), 3);
    json_t *t0 = json_array_get(tasks, 0), *t1 = json_array_get(tasks, 1), *t2 = json_array_get(tasks, 2);
    assert_string_equal(wp_str(t0, "run_after"), utc);
    assert_true(json_is_string(json_object_get(t1, "run_after")));
    char id0[32], id1[32], id2[32];
    snprintf(id0, sizeof id0, "%s", wp_str(t0, "id"));
    snprintf(id1, sizeof id1, "%s", wp_str(t1, "id"));
    snprintf(id2, sizeof id2, "%s", wp_str(t2, "id"));
    wp_resp_free(&r);
    d = wp_wait_terminal(s, id2, 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    assert_true(listed(s, "state=pending&kind=echo", id0));
    assert_true(listed(s, "state=pending", id1));
    /* cancel works on a scheduled task */
    char *path = wp_fmt("/v1/tasks/%s", id1);
    wp_call(s, "DELETE", path, NULL, &r);
    free(path);
    expect_status(&r, 200, "cancel of a scheduled task");
    assert_string_equal(wp_str(r.json, "state"), "canceled");
    assert_true(json_is_null(json_object_get(r.json, "run_after")));
    wp_resp_free(&r);
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "pending"), 1);
    assert_int_equal(wp_stats_count(st, "canceled"), 1);
    json_decref(st);
    wp_server_free(s);
}


/* A scheduled task outlives a restart: after it, still pending with its run_after, and run
 * at its time, not before. */
WP_TEST(test_scheduled_survives_restart) {
    const char *const args[] = {"--workers", "1", NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    json_t *t = wp_submit(s, "{\"kind\":\"echo\",\"input\":9,\"delay_ms\":4000}");
    char id[32], ra[40];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    snprintf(ra, sizeof ra, "%s", wp_str(t, "run_after"));
    json_decref(t);
    int stopped = wp_server_stop(s, 10000, NULL);
    if (!(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0)) fail_msg("stop: status %d", stopped);
    wp_opts again = {.dir = s->dir, .args = args};
    wp_server *s2 = wp_server_start(&again);
    json_t *g = wp_get_task(s2, id);
    long long run_after = wp_parse_ts(ra);
    if (wp_wall_ms() < run_after - 200) {       /* the restart took less than the delay */
        assert_string_equal(wp_str(g, "state"), "pending");
        assert_string_equal(wp_str(g, "run_after"), ra);
    }
    json_decref(g);
    json_t *d = wp_wait_terminal(s2, id, 15);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    if (wp_parse_ts(wp_str(d, "started_at")) < run_after)
        fail_msg("started before its run_after %s: %s", ra, wp_str(d, "started_at"));
    json_decref(d);
    wp_server_free(s2);
    wp_server_free(s);
}

WP_TEST(test_scheduled_bad_input) {
    wp_server *s = wp_server_start_args("--workers", "1", NULL);
    wp_snap before = wp_snapshot(s);
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"{\"kind\":\"echo\",\"run_at\":\"2030-01-02T03:04:05Z\",\"delay_ms\":5}", "not both"},
        {"{\"kind\":\"echo\",\"run_at\":\"tomorrow\"}", "RFC 3339"},
        {"{\"kind\":\"echo\",\"run_at\":\"2030-01-02T03:04:05\"}", "RFC 3339"},
        {"{\"kind\":\"echo\",\"run_at\":\"2030-02-30T03:04:05Z\"}", "RFC 3339"},
        {"{\"kind\":\"echo\",\"run_at\":1893553445}", "RFC 3339"},
        {"{\"kind\":\"echo\",\"run_at\":\"2199-01-02T03:04:05Z\"}", "more than a year"},
        {"{\"kind\":\"echo\",\"delay_ms\":-1}", "delay_ms"},
        {"{\"kind\":\"echo\",\"delay_ms\":1.5}", "delay_ms"},
        {"{\"kind\":\"echo\",\"delay_ms\":\"10\"}", "delay_ms"},
        {"{\"kind\":\"echo\",\"delay_ms\":40000000000}", "a year"},
        {"{\"kind\":\"nope\",\"delay_ms\":10}", "unknown kind"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wp_resp r;
        wp_call(s, "POST", "/v1/tasks", bad[i].body, &r);
        wp_assert_error(&r, 422, "invalid_task", bad[i].msg);
        wp_resp_free(&r);
    }
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks/batch",
            "{\"tasks\":[{\"kind\":\"echo\",\"delay_ms\":5},{\"kind\":\"echo\",\"run_at\":\"x\"}]}", &r);
    wp_assert_error(&r, 422, "invalid_task", "tasks[1].run_at");
    wp_resp_free(&r);
    wp_assert_unchanged(s, &before, "refused scheduled submissions");
    wp_server_free(s);
}

/* ------------------------------------------------------------------ retry */

/* warmpool_tasks_submitted_total{kind="KIND"} from /metrics (0 when absent). */
static long long submitted_metric(const wp_server *s, const char *kind) {
    wp_req q = {.method = "GET", .path = "/metrics"};
    wp_resp r;
    assert_true(wp_http_nc(s, &q, &r));
    char needle[128];
    snprintf(needle, sizeof needle, "warmpool_tasks_submitted_total{kind=\"%s\"} ", kind);
    const char *p = r.body ? strstr(r.body, needle) : NULL;
    long long n = p ? atoll(p + strlen(needle)) : 0;
    wp_resp_free(&r);
    return n;
}

/* failed -> pending (attempts 0, previous error shown until the new attempt ends) ->
 * runs again; canceled -> pending; 409 from other states, 404 for no task; counts exact. */
WP_TEST(test_retry_from_the_dead) {
    wp_server *s = wp_server_start_args("--workers", "1", "--enable-test-kinds", NULL);
    json_t *t = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"first\"},\"max_attempts\":2}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_t *d = wp_wait_terminal(s, id, 20);
    assert_string_equal(wp_str(d, "state"), "failed");
    assert_int_equal(wp_int(d, "attempts"), 2);
    json_decref(d);
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "failed"), 1);
    json_decref(st);

    long long submitted0 = submitted_metric(s, "fail");
    /* the paused kind keeps it pending, so that what the retry left can be read */
    assert_int_equal(post(s, "/v1/kinds/fail/pause", NULL), 200);
    char *rpath = wp_fmt("/v1/tasks/%s/retry", id);
    json_t *rt = NULL;
    assert_int_equal(post(s, rpath, &rt), 200);
    wp_assert_task_keys_exact(rt, true, "retried task");
    assert_string_equal(wp_str(rt, "state"), "pending");
    assert_int_equal(wp_int(rt, "attempts"), 0);
    assert_int_equal(wp_int(rt, "max_attempts"), 2);
    assert_true(json_is_null(json_object_get(rt, "error")));
    assert_true(json_is_null(json_object_get(rt, "finished_at")));
    assert_true(json_is_null(json_object_get(rt, "started_at")));
    json_t *pe = json_object_get(rt, "previous_error");
    assert_string_equal(wp_str(pe, "code"), "task_failed");
    assert_non_null(strstr(wp_str(pe, "message"), "first"));
    json_decref(rt);
    /* counted as a submission, and published as an event: pending, attempts 0 */
    assert_int_equal(submitted_metric(s, "fail"), submitted0 + 1);
    /* from this run's first event (an id of no run): the submission's pending, and the
     * retry's */
    static const char *const from_start[] = {"Last-Event-ID: 1", NULL};
    wp_req eq = {.method = "GET", .path = "/v1/events?kind=fail&state=pending",
                 .headers = from_start, .timeout_ms = 1500};
    wp_resp er;
    wp_http_nc(s, &eq, &er);     /* a stream: read until the timeout */
    char *ev = wp_fmt("\"id\":\"%s\",\"kind\":\"fail\",\"state\":\"pending\",\"attempts\":0", id);
    int pendings = 0;
    for (const char *p = er.body; p != NULL && (p = strstr(p, ev)) != NULL; p++)
        pendings++;
    if (pendings != 2)
        fail_msg("want 2 pending events of task %s in /v1/events (its submission, its retry), got "
                 "%d: %.800s", id, pendings, er.body ? er.body : "");
    free(ev);
    wp_resp_free(&er);
    st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "failed"), 0);
    assert_int_equal(wp_stats_count(st, "pending"), 1);
    json_decref(st);
    /* pending: 409, and the compare-and-set left it as it was */
    wp_resp r;
    wp_call(s, "POST", rpath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", "pending");
    wp_resp_free(&r);
    assert_int_equal(post(s, "/v1/kinds/fail/resume", NULL), 200);
    d = wp_wait_terminal(s, id, 20);
    assert_string_equal(wp_str(d, "state"), "failed");
    assert_int_equal(wp_int(d, "attempts"), 2);
    assert_true(json_is_null(json_object_get(d, "previous_error")));
    json_decref(d);

    /* a running task, a succeeded one: 409; no task, not an id: 404 */
    json_t *sl = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":1500}}");
    char sid[32];
    snprintf(sid, sizeof sid, "%s", wp_str(sl, "id"));
    json_decref(sl);
    json_decref(wp_wait_state(s, sid, "running", 10));
    char *spath = wp_fmt("/v1/tasks/%s/retry", sid);
    wp_call(s, "POST", spath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", "running");
    wp_resp_free(&r);
    json_decref(wp_wait_terminal(s, sid, 10));
    wp_call(s, "POST", spath, NULL, &r);
    wp_assert_error(&r, 409, "conflict", "succeeded");
    wp_resp_free(&r);
    free(spath);
    wp_call(s, "POST", "/v1/tasks/999999999/retry", NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    wp_call(s, "POST", "/v1/tasks/abc/retry", NULL, &r);
    wp_assert_error(&r, 404, "not_found", NULL);
    wp_resp_free(&r);
    wp_call(s, "GET", rpath, NULL, &r);
    expect_status(&r, 405, "GET on the retry path");
    wp_resp_free(&r);

    /* canceled -> pending -> runs */
    json_t *later = wp_submit(s, "{\"kind\":\"echo\",\"input\":7,\"delay_ms\":600000}");
    char lid[32];
    snprintf(lid, sizeof lid, "%s", wp_str(later, "id"));
    json_decref(later);
    char *lpath = wp_fmt("/v1/tasks/%s", lid), *lretry = wp_fmt("/v1/tasks/%s/retry", lid);
    wp_call(s, "POST", lretry, NULL, &r);
    wp_assert_error(&r, 409, "conflict", "pending");     /* a scheduled task too */
    wp_resp_free(&r);
    wp_call(s, "DELETE", lpath, NULL, &r);
    expect_status(&r, 200, "cancel");
    wp_resp_free(&r);
    assert_int_equal(post(s, lretry, NULL), 200);
    d = wp_wait_terminal(s, lid, 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");     /* ready now, not scheduled */
    json_decref(d);
    free(lpath);
    free(lretry);
    free(rpath);
    st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "failed"), 1);
    assert_int_equal(wp_stats_count(st, "succeeded"), 2);
    assert_int_equal(wp_stats_count(st, "canceled"), 0);
    assert_int_equal(wp_stats_count(st, "pending"), 0);
    json_decref(st);
    wp_server_free(s);
}

struct retry_arg {
    const wp_server *s;
    const char *path;
    long status;
};

static void *retry_thread(void *p) {
    struct retry_arg *a = p;
    wp_resp r;
    wp_req q = {.method = "POST", .path = a->path};
    a->status = wp_http_nc(a->s, &q, &r) ? r.status : -1;
    wp_resp_free(&r);
    return NULL;
}

/* Eight retries of one failed task at once: one 200, seven 409; one pending task. */
WP_TEST(test_retry_concurrent_calls) {
    wp_server *s = wp_server_start_args("--workers", "1", "--enable-test-kinds", "--http-threads", "4", NULL);
    json_t *t = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"x\"}}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_terminal(s, id, 20));
    assert_int_equal(post(s, "/v1/kinds/fail/pause", NULL), 200);
    char *path = wp_fmt("/v1/tasks/%s/retry", id);
    enum { N = 8 };
    struct retry_arg a[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        a[i] = (struct retry_arg){.s = s, .path = path};
        pthread_create(&th[i], NULL, retry_thread, &a[i]);
    }
    int ok = 0, conflict = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += a[i].status == 200;
        conflict += a[i].status == 409;
    }
    if (ok != 1 || conflict != N - 1)
        fail_msg("concurrent retries: %d answered 200 and %d 409 (want 1 and %d)", ok, conflict, N - 1);
    json_t *st = wp_stats(s);
    assert_int_equal(wp_stats_count(st, "pending"), 1);
    assert_int_equal(wp_stats_count(st, "failed"), 0);
    json_decref(st);
    free(path);
    wp_server_free(s);
}

/* ------------------------------------------------------------------ pause */

static int kind_paused_in_stats(const json_t *st, const char *kind) {
    size_t i;
    json_t *k;
    int in_list = 0, flag = -1;
    json_array_foreach(json_object_get(st, "paused_kinds"), i, k)
        if (strcmp(json_string_value(k), kind) == 0) in_list = 1;
    json_array_foreach(json_object_get(st, "kinds"), i, k)
        if (strcmp(wp_str(k, "name"), kind) == 0) flag = json_is_true(json_object_get(k, "paused"));
    if (flag != -1 && flag != in_list) fail_msg("stats: kinds[].paused and paused_kinds disagree for %s", kind);
    return in_list;
}

/* A paused kind's tasks stay pending while others run; submissions are accepted; a
 * resume starts them at once; bad names are 404; both are idempotent. */
WP_TEST(test_pause_and_resume) {
    wp_server *s = wp_server_start_args("--workers", "2", "--enable-test-kinds", NULL);
    assert_int_equal(wp_wait_workers(s, 2, 15), 2);
    json_t *j = NULL;
    assert_int_equal(post(s, "/v1/kinds/echo/pause", &j), 200);
    assert_string_equal(wp_str(j, "kind"), "echo");
    assert_true(json_is_true(json_object_get(j, "paused")));
    assert_true(json_is_true(json_object_get(j, "changed")));
    json_decref(j);
    assert_int_equal(post(s, "/v1/kinds/echo/pause", &j), 200);
    assert_true(json_is_false(json_object_get(j, "changed")));
    json_decref(j);
    json_t *st = wp_stats(s);
    assert_true(kind_paused_in_stats(st, "echo"));
    assert_false(kind_paused_in_stats(st, "sleep"));
    json_decref(st);

    json_t *e = wp_submit(s, "{\"kind\":\"echo\",\"input\":\"held\"}");
    char eid[32];
    snprintf(eid, sizeof eid, "%s", wp_str(e, "id"));
    json_decref(e);
    json_t *o = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":10}}");
    json_t *d = wp_wait_terminal(s, wp_str(o, "id"), 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    json_decref(o);
    wp_sleep_ms(1300);      /* past the workers' safety net */
    json_t *g = wp_get_task(s, eid);
    assert_string_equal(wp_str(g, "state"), "pending");
    json_decref(g);

    long long t0 = wp_now_ms();
    assert_int_equal(post(s, "/v1/kinds/echo/resume", &j), 200);
    assert_true(json_is_false(json_object_get(j, "paused")));
    assert_true(json_is_true(json_object_get(j, "changed")));
    json_decref(j);
    d = wp_wait_terminal(s, eid, 10);
    assert_string_equal(wp_str(d, "state"), "succeeded");
    json_decref(d);
    if (wp_now_ms() - t0 > 800)
        fail_msg("the resumed kind's task ended %lld ms after the resume: idle workers were not woken",
                 wp_now_ms() - t0);
    assert_int_equal(post(s, "/v1/kinds/echo/resume", &j), 200);
    assert_true(json_is_false(json_object_get(j, "changed")));
    json_decref(j);
    st = wp_stats(s);
    assert_false(kind_paused_in_stats(st, "echo"));
    json_decref(st);

    wp_resp r;
    wp_call(s, "POST", "/v1/kinds/nope/pause", NULL, &r);
    wp_assert_error(&r, 404, "unknown_kind", "nope");
    wp_resp_free(&r);
    wp_call(s, "POST", "/v1/kinds/nope/resume", NULL, &r);
    wp_assert_error(&r, 404, "unknown_kind", NULL);
    wp_resp_free(&r);
    char *longname = wp_fmt("/v1/kinds/%0100d/pause", 7);
    wp_call(s, "POST", longname, NULL, &r);
    wp_assert_error(&r, 404, "unknown_kind", NULL);
    wp_resp_free(&r);
    free(longname);
    wp_call(s, "GET", "/v1/kinds/echo/pause", NULL, &r);
    expect_status(&r, 405, "GET on the pause path");
    wp_resp_free(&r);
    wp_call(s, "POST", "/v1/kinds/echo", NULL, &r);
    expect_status(&r, 404, "no such path");
    wp_resp_free(&r);
    wp_server_free(s);
}

/* The pause is stored: a restart keeps it (tasks stay pending), a resume after it
 * works; with a token, both routes want it. */
WP_TEST(test_pause_survives_restart_and_needs_token) {
    const char *const args[] = {"--workers", "1", "--api-token", TOKEN, NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    wp_resp r;
    wp_call(s, "POST", "/v1/kinds/echo/pause", NULL, &r);
    wp_assert_error(&r, 401, "unauthorized", NULL);
    wp_resp_free(&r);
    wp_call_h(s, "POST", "/v1/kinds/echo/pause", NULL, AUTH_OK, &r);
    expect_status(&r, 200, "pause with the token");
    wp_resp_free(&r);
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":\"across\"}", AUTH_OK, &r);
    expect_status(&r, 202, "submission to a paused kind");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(r.json, "id"));
    wp_resp_free(&r);
    int stopped = wp_server_stop(s, 10000, NULL);
    if (!(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0)) fail_msg("stop: status %d", stopped);

    wp_opts again = {.dir = s->dir, .args = args};
    wp_server *s2 = wp_server_start(&again);
    wp_sleep_ms(1500);      /* ready (the harness waited for /readyz), past a safety net */
    char *path = wp_fmt("/v1/tasks/%s", id);
    wp_call_h(s2, "GET", path, NULL, AUTH_OK, &r);
    expect_status(&r, 200, "get");
    assert_string_equal(wp_str(r.json, "state"), "pending");
    wp_resp_free(&r);
    wp_call_h(s2, "GET", "/v1/stats", NULL, AUTH_OK, &r);
    expect_status(&r, 200, "stats");
    assert_true(kind_paused_in_stats(r.json, "echo"));
    wp_resp_free(&r);
    wp_call(s2, "POST", "/v1/kinds/echo/resume", NULL, &r);
    wp_assert_error(&r, 401, "unauthorized", NULL);
    wp_resp_free(&r);
    wp_call_h(s2, "POST", "/v1/kinds/echo/resume", NULL, AUTH_OK, &r);
    expect_status(&r, 200, "resume with the token");
    wp_resp_free(&r);
    long long deadline = wp_now_ms() + 10000;
    for (;;) {
        char *wpath = wp_fmt("/v1/tasks/%s?wait=5", id);
        wp_call_h(s2, "GET", wpath, NULL, AUTH_OK, &r);
        free(wpath);
        int done = strcmp(wp_str(r.json, "state"), "succeeded") == 0;
        wp_resp_free(&r);
        if (done) break;
        if (wp_now_ms() > deadline) fail_msg("task %s did not run after the resume", id);
    }
    free(path);
    wp_server_free(s2);
    wp_server_free(s);
}

/* ------------------------------------------------------------------ --kind-concurrency */

struct sampler {
    const wp_server *s;
    volatile int stop;
    int max_sleep_running;
    int samples;
};

static void *sample_running(void *p) {
    struct sampler *a = p;
    while (!a->stop) {
        json_t *all = wp_list_all(a->s, "state=running&kind=sleep", 100);
        int n = (int)json_array_size(all);
        json_decref(all);
        if (n > a->max_sleep_running) a->max_sleep_running = n;
        a->samples++;
        wp_sleep_ms(20);
    }
    return NULL;
}

/* --kind-concurrency sleep=1 with 3 workers: never two sleeps at once, while echo tasks
 * go by on the other workers; every sleep ends. Bad values are exit 2. */
WP_TEST(test_kind_concurrency) {
    wp_server *s = wp_server_start_args("--workers", "3", "--kind-concurrency", "sleep=1", NULL);
    assert_int_equal(wp_wait_workers(s, 3, 15), 3);
    struct sampler a = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, sample_running, &a);
    char ids[4][32];
    for (int i = 0; i < 4; i++) {
        json_t *t = wp_submit(s, "{\"kind\":\"sleep\",\"input\":{\"ms\":400}}");
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    json_decref(wp_wait_state(s, ids[0], "running", 10));
    /* echo tasks run meanwhile on the workers the limit leaves free */
    long long t0 = wp_now_ms();
    for (int i = 0; i < 5; i++) {
        json_t *e = wp_submit(s, "{\"kind\":\"echo\",\"input\":1}");
        json_t *d = wp_wait_terminal(s, wp_str(e, "id"), 10);
        assert_string_equal(wp_str(d, "state"), "succeeded");
        json_decref(d);
        json_decref(e);
    }
    if (wp_now_ms() - t0 > 1500)
        fail_msg("5 echo tasks took %lld ms beside the limited sleeps", wp_now_ms() - t0);
    for (int i = 0; i < 4; i++) {
        json_t *d = wp_wait_terminal(s, ids[i], 20);
        assert_string_equal(wp_str(d, "state"), "succeeded");
        json_decref(d);
    }
    a.stop = 1;
    pthread_join(th, NULL);
    if (a.max_sleep_running != 1)
        fail_msg("at most 1 sleep task may run at once; %d were seen running (%d samples)",
                 a.max_sleep_running, a.samples);
    wp_server_free(s);

    const char *const bad[][3] = {
        {"--kind-concurrency", "sleep", NULL},
        {"--kind-concurrency", "sleep=0", NULL},
        {"--kind-concurrency", "Sleep=1", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = NULL;
        bool to = false;
        int st = wp_run_binary(bad[i], NULL, 10000, &out, &to, NULL);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2) || out == NULL || strstr(out, "NAME=N") == NULL)
            fail_msg("%s %s: want exit 2 naming NAME=N, got status %d: %s", bad[i][0], bad[i][1], st,
                     out ? out : "");
        free(out);
    }
}


/* ------------------------------------------------------------------ a busy database */

/* With the database's write lock held by someone else past the HTTP process's lock
 * budget, a retry, a pause and a resume answer 503 busy and change nothing; once the
 * lock is let go they work. */
WP_TEST(test_busy_database_answers_503) {
    wp_server *s = wp_server_start_args("--workers", "1", "--enable-test-kinds", NULL);
    json_t *t = wp_submit(s, "{\"kind\":\"fail\",\"input\":{\"message\":\"x\"}}");
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    json_decref(wp_wait_terminal(s, id, 20));
    assert_int_equal(post(s, "/v1/kinds/sleep/pause", NULL), 200);

    sqlite3 *lite = NULL;
    PGconn *pg = NULL;
    if (wp_pg_mode()) {
        pg = PQconnectdb(s->db);
        if (PQstatus(pg) != CONNECTION_OK) fail_msg("connecting: %s", PQerrorMessage(pg));
        PGresult *r = PQexec(pg, "BEGIN; LOCK TABLE tasks, paused_kinds IN EXCLUSIVE MODE");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("locking: %s", PQresultErrorMessage(r));
        PQclear(r);
    } else {
        if (sqlite3_open(s->db, &lite) != SQLITE_OK) fail_msg("opening %s", s->db);
        sqlite3_busy_timeout(lite, 5000);
        char *msg = NULL;
        if (sqlite3_exec(lite, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
            fail_msg("taking the write lock: %s", msg ? msg : "?");
    }
    char *rpath = wp_fmt("/v1/tasks/%s/retry", id);
    const char *paths[] = {rpath, "/v1/kinds/echo/pause", "/v1/kinds/sleep/resume"};
    for (int i = 0; i < 3; i++) {
        wp_resp r;
        wp_call(s, "POST", paths[i], NULL, &r);
        wp_assert_error(&r, 503, "busy", NULL);
        if (!r.has_retry_after) fail_msg("POST %s: 503 busy without Retry-After", paths[i]);
        wp_resp_free(&r);
    }
    if (pg) {
        PQclear(PQexec(pg, "ROLLBACK"));
        PQfinish(pg);
    } else {
        sqlite3_exec(lite, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(lite);
    }
    json_t *g = wp_get_task(s, id);
    assert_string_equal(wp_str(g, "state"), "failed");
    json_decref(g);
    json_t *st = wp_stats(s);
    json_t *paused = json_object_get(st, "paused_kinds");
    if (json_array_size(paused) != 1 || strcmp(json_string_value(json_array_get(paused, 0)), "sleep") != 0) {
        char *d = wp_dump(st);
        fail_msg("the refused pause and resume changed the paused kinds: %.600s", d);
    }
    json_decref(st);
    assert_int_equal(post(s, rpath, NULL), 200);
    assert_int_equal(post(s, "/v1/kinds/sleep/resume", NULL), 200);
    free(rpath);
    wp_server_free(s);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scheduled_delay_runs_when_due, wp_test_teardown),
        cmocka_unit_test_teardown(test_scheduled_run_at_batch_and_cancel, wp_test_teardown),
        cmocka_unit_test_teardown(test_scheduled_survives_restart, wp_test_teardown),
        cmocka_unit_test_teardown(test_scheduled_bad_input, wp_test_teardown),
        cmocka_unit_test_teardown(test_retry_from_the_dead, wp_test_teardown),
        cmocka_unit_test_teardown(test_retry_concurrent_calls, wp_test_teardown),
        cmocka_unit_test_teardown(test_pause_and_resume, wp_test_teardown),
        cmocka_unit_test_teardown(test_pause_survives_restart_and_needs_token, wp_test_teardown),
        cmocka_unit_test_teardown(test_kind_concurrency, wp_test_teardown),
        cmocka_unit_test_teardown(test_busy_database_answers_503, wp_test_teardown),
    };
    return cmocka_run_group_tests_name("integration.queue", tests, NULL, NULL);
}
