/* Integration: periodic tasks (--schedule, issue 13 item 5) and completion callbacks
 * (callback_url, item 6) with the real binary, on SQLite and PostgreSQL.
 *
 * Periodic tasks: the scheduler's clock runs 60 times as fast in these tests (fault point
 * schedule_clock_speed=60: a minute of cron time is a second of real time, the same in
 * every process), so `* * * * *` comes due every second.
 *
 * Callbacks: a receiver on loopback, started by the test (a thread of this program),
 * answers each request as told (200, 500, or never), and keeps what it got. Shorter
 * back-offs and timeouts through fault points (service/callbacks.c). Every wait is
 * bounded. */
#include "harness.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAST "WARMPOOL_FAULTS=schedule_clock_speed=60"

/* ---------------------------------------------------------------- helpers */

static long long wall_s(void) { return wp_wall_ms() / 1000; }

/* Tasks of kind `kind` in the store. */
static size_t count_kind(const wp_server *s, const char *kind) {
    char *q = wp_fmt("kind=%s", kind);
    json_t *all = wp_list_all(s, q, 1000);
    size_t n = json_array_size(all);
    json_decref(all);
    free(q);
    return n;
}

/* Appends to due[] the `due=N` of every log line of s holding `what`; returns the new n. */
static int collect_dues(const wp_server *s, const char *what, long long *due, int n, int cap) {
    char *log = wp_server_read_log(s);
    for (char *p = strstr(log, what); p != NULL && n < cap; p = strstr(p + 1, what)) {
        char *eol = strchr(p, '\n');
        char *d = strstr(p, " due=");
        if (d == NULL || (eol != NULL && d > eol)) continue;
        due[n++] = atoll(d + 5);
    }
    free(log);
    return n;
}

static int cmp_ll(const void *x, const void *y) {
    long long a = *(const long long *)x, b = *(const long long *)y;
    return a < b ? -1 : a > b;
}

/* No due time twice in due[0..n). */
static void assert_distinct(long long *due, int n, const char *what) {
    qsort(due, (size_t)n, sizeof *due, cmp_ll);
    for (int i = 1; i < n; i++)
        if (due[i] == due[i - 1]) fail_msg("%s: due time %lld submitted twice", what, due[i]);
}

static bool wait_count(const wp_server *s, const char *kind, size_t n, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    while (count_kind(s, kind) < n) {
        if (wp_now_ms() > deadline) return false;
        wp_sleep_ms(100);
    }
    return true;
}


/* ---------------------------------------------------------------- a callback receiver */

#define RX_MAX 64

struct rx_req {
    char *body;
    char task[32], attempt[16], ts[32], sig[128], ctype[64], path[256];
};

struct receiver {
    int fd, port;
    pthread_t th;
    atomic_int stop;
    int answers[8];             /* what the n-th request gets (the last repeats): an HTTP
                                 * status, or 0: no answer at all (held until the end) */
    int nanswers;
    pthread_mutex_t mu;
    struct rx_req req[RX_MAX];
    int n;
    int held[RX_MAX];
    int nheld;
};

static void header(const char *head, const char *name, char *out, size_t cap) {
    out[0] = '\0';
    char needle[64];
    snprintf(needle, sizeof needle, "\r\n%s:", name);
    const char *p = strcasestr(head, needle);
    if (p == NULL) return;
    p += strlen(needle);
    while (*p == ' ') p++;
    size_t n = strcspn(p, "\r\n");
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

static void serve_one(struct receiver *rx, int c) {
    char buf[65536];
    size_t len = 0;
    char *end = NULL;
    long long deadline = wp_now_ms() + 5000;
    while (end == NULL && len < sizeof buf - 1 && wp_now_ms() < deadline) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = read(c, buf + len, sizeof buf - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (end == NULL) { close(c); return; }
    char cl[32];
    header(buf, "Content-Length", cl, sizeof cl);
    size_t want = (size_t)atol(cl), have_head = (size_t)(end + 4 - buf);
    while (len < have_head + want && len < sizeof buf - 1 && wp_now_ms() < deadline) {
        ssize_t r = read(c, buf + len, sizeof buf - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    pthread_mutex_lock(&rx->mu);
    int k = rx->n < RX_MAX ? rx->n++ : -1;
    if (k >= 0) {
        struct rx_req *q = &rx->req[k];
        *end = '\0';
        q->body = strndup(end + 4, want);
        header(buf, "X-Warmpool-Task", q->task, sizeof q->task);
        header(buf, "X-Warmpool-Attempt", q->attempt, sizeof q->attempt);
        header(buf, "X-Warmpool-Timestamp", q->ts, sizeof q->ts);
        header(buf, "X-Warmpool-Signature", q->sig, sizeof q->sig);
        header(buf, "Content-Type", q->ctype, sizeof q->ctype);
        sscanf(buf, "POST %255s ", q->path);
    }
    int status = rx->answers[k < 0 ? rx->nanswers - 1 : k < rx->nanswers ? k : rx->nanswers - 1];
    if (status == 0 && rx->nheld < RX_MAX) {
        rx->held[rx->nheld++] = c;          /* never answered: closed at the end */
        pthread_mutex_unlock(&rx->mu);
        return;
    }
    pthread_mutex_unlock(&rx->mu);
    char resp[128];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                     status == 0 ? 500 : status);
    if (write(c, resp, (size_t)n) < 0) { /* the client went away */ }
    close(c);
}

static void *rx_main(void *arg) {
    struct receiver *rx = arg;
    while (!atomic_load(&rx->stop)) {
        struct pollfd p = {.fd = rx->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(rx->fd, NULL, NULL);
        if (c >= 0) serve_one(rx, c);
    }
    return NULL;
}

/* A receiver on 127.0.0.1:port (0: any free port) answering answers[] in turn. */
static struct receiver *rx_start(int port, const int *answers, int nanswers) {
    struct receiver *rx = calloc(1, sizeof *rx);
    assert_non_null(rx);
    pthread_mutex_init(&rx->mu, NULL);
    for (int i = 0; i < nanswers && i < 8; i++) rx->answers[i] = answers[i];
    rx->nanswers = nanswers;
    rx->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(rx->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(rx->fd, (struct sockaddr *)&a, sizeof a) != 0) fail_msg("receiver: bind %d: %m", port);
    assert_int_equal(listen(rx->fd, 64), 0);
    socklen_t al = sizeof a;
    getsockname(rx->fd, (struct sockaddr *)&a, &al);
    rx->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&rx->th, NULL, rx_main, rx), 0);
    return rx;
}

static void rx_stop(struct receiver *rx) {
    atomic_store(&rx->stop, 1);
    pthread_join(rx->th, NULL);
    close(rx->fd);
    for (int i = 0; i < rx->nheld; i++) close(rx->held[i]);
    for (int i = 0; i < rx->n; i++) free(rx->req[i].body);
    pthread_mutex_destroy(&rx->mu);
    free(rx);
}

static int rx_count(struct receiver *rx) {
    pthread_mutex_lock(&rx->mu);
    int n = rx->n;
    pthread_mutex_unlock(&rx->mu);
    return n;
}

static bool rx_wait(struct receiver *rx, int n, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    while (rx_count(rx) < n) {
        if (wp_now_ms() > deadline) return false;
        wp_sleep_ms(20);
    }
    return true;
}

/* Requests for task id so far. */
static int rx_count_task(struct receiver *rx, const char *id) {
    pthread_mutex_lock(&rx->mu);
    int c = 0;
    for (int i = 0; i < rx->n; i++) c += strcmp(rx->req[i].task, id) == 0;
    pthread_mutex_unlock(&rx->mu);
    return c;
}

/* Polls GET /v1/tasks/{id} until its callback is in `state` (bounded); a new ref. */
static json_t *wait_callback(const wp_server *s, const char *id, const char *state, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    for (;;) {
        json_t *t = wp_get_task(s, id);
        json_t *cb = json_object_get(t, "callback");
        if (cb == NULL) fail_msg("task %s has no callback object", id);
        if (strcmp(wp_str(cb, "state"), state) == 0) return t;
        if (wp_now_ms() > deadline) {
            char *d = wp_dump(t);
            fail_msg("task %s: callback not %s within %d ms: %s", id, state, timeout_ms, d);
        }
        json_decref(t);
        wp_sleep_ms(50);
    }
}

static char *allow_arg(int port) { return wp_fmt("127.0.0.1:%d", port); }

/* ---------------------------------------------------------------- tests */

/* `* * * * *` submits one task per due time, each with the schedule's input, and
 * they run. */
WP_TEST(test_schedule_submits_each_due_time_once) {
    const char *args[] = {"--schedule", "tick=* * * * * echo {\"from\": \"tick\"}",
                          "--log-level", "debug", NULL};
    const char *env[] = {FAST, NULL};
    wp_opts o = {.args = args, .env = env};
    long long t0 = wp_now_ms();         /* the agent may submit before the server is ready */
    wp_server *s = wp_server_start(&o);
    if (!wait_count(s, "echo", 4, 10000)) fail_msg("fewer than 4 scheduled tasks in 10 s");
    long long elapsed = wp_now_ms() - t0;
    json_t *all = wp_list_all(s, "kind=echo", 1000);
    size_t n = json_array_size(all);
    /* one at start (the latest due time, replayed), then one a second */
    if ((long long)n > elapsed / 1000 + 3)
        fail_msg("%zu tasks in %lld ms: more than one per due time", n, elapsed);
    long long due[256];
    int nd = collect_dues(s, "schedule submitted a task", due, 0, 256);
    if ((size_t)nd < n) fail_msg("%zu tasks, %d submissions logged", n, nd);
    assert_distinct(due, nd, "one instance");
    for (int i = 1; i < nd; i++)
        if (due[i] % 60 != 0) fail_msg("due time %lld is not a whole minute", due[i]);
    const char *id = wp_str(json_array_get(all, n - 1), "id");
    json_t *t = wp_wait_terminal(s, id, 10);
    assert_string_equal(wp_str(t, "state"), "succeeded");
    char *result = wp_dump(json_object_get(t, "result"));
    assert_string_equal(result, "{\"from\":\"tick\"}");
    assert_int_equal(wp_int(t, "max_attempts"), 1);
    free(result);
    json_decref(t);
    json_decref(all);
}

/* A restart within one due period submits nothing new: the latest due time, replayed
 * at start, was submitted by the previous run (its idempotency key says so). A due time
 * every 10 s (`*\/10 * * * *` at 60x); the test starts 1 s into a period. */
WP_TEST(test_schedule_restart_submits_no_due_time_twice) {
    while (wall_s() % 10 != 1) wp_sleep_ms(50);
    long long boundary_ms = (wall_s() / 10 + 1) * 10000;     /* the next due time */
    const char *args[] = {"--schedule", "ten=*/10 * * * * echo 10", "--log-level", "debug",
                          NULL};
    const char *env[] = {FAST, NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    if (!wait_count(s, "echo", 1, 5000)) fail_msg("the latest due time was not submitted at start");
    long long due[64];
    int nd = collect_dues(s, "schedule submitted a task", due, 0, 64);
    assert_int_equal(nd, 1);
    int st = wp_server_stop(s, 10000, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wp_opts o2 = {.args = args, .env = env, .dir = s->dir};
    wp_server *s2 = wp_server_start(&o2);
    char needle[96];
    snprintf(needle, sizeof needle, "due time already submitted schedule=ten due=%lld", due[0]);
    long long deadline = wp_now_ms() + 5000;
    char *log = NULL;
    for (;;) {
        free(log);
        log = wp_server_read_log(s2);
        if (strstr(log, needle) != NULL) break;
        if (wp_now_ms() > deadline) fail_msg("the restart did not find due time %lld submitted", due[0]);
        wp_sleep_ms(50);
    }
    free(log);
    if (wp_wall_ms() < boundary_ms - 200) assert_int_equal(count_kind(s2, "echo"), 1);
    /* the next due time comes after the restart: submitted once */
    if (!wait_count(s2, "echo", 2, 15000)) fail_msg("the next due time was not submitted");
    nd = collect_dues(s2, "schedule submitted a task", due, 1, 64);
    assert_distinct(due, nd, "across a restart");
    assert_int_equal((size_t)nd, count_kind(s2, "echo"));
    wp_server_free(s2);
}

/* A submission that fails (the database out of reach) is tried again a second later, and
 * the due time is still submitted once. */
WP_TEST(test_schedule_failed_submission_retried) {
    while (wall_s() % 10 != 1) wp_sleep_ms(50);
    const char *args[] = {"--schedule", "ten=*/10 * * * * echo 1", NULL};
    const char *env[] = {FAST ",schedule_submit_fail=2", NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    if (!wait_count(s, "echo", 1, 6000)) fail_msg("the due time was not submitted after two failures");
    char *log = wp_server_read_log(s);
    int fails = 0;
    for (char *p = strstr(log, "schedule ten: submitting the task due at"); p; p = strstr(p + 1, "schedule ten: submitting"))
        fails++;
    free(log);
    assert_int_equal(fails, 2);
    long long due[8];
    int nd = collect_dues(s, "schedule submitted a task", due, 0, 8);
    assert_int_equal(nd, 1);
    assert_int_equal(count_kind(s, "echo"), 1);
}

/* PostgreSQL: two instances with the same schedule give one task per due time. */
WP_TEST(test_schedule_two_instances_one_task_per_due_time) {
    WP_PG_ONLY();
    const char *args[] = {"--schedule", "both=* * * * * echo 2", "--log-level", "debug", NULL};
    const char *env[] = {FAST, NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *a = wp_server_start(&o);
    wp_opts ob = {.args = args, .env = env, .db = a->db};
    wp_server *b = wp_server_start(&ob);
    wp_sleep_ms(5000);
    long long due[512];
    int nd = collect_dues(a, "schedule submitted a task", due, 0, 512);
    nd = collect_dues(b, "schedule submitted a task", due, nd, 512);
    int na = collect_dues(a, "due time already submitted", (long long[512]){0}, 0, 512);
    int nb = collect_dues(b, "due time already submitted", (long long[512]){0}, 0, 512);
    size_t n = count_kind(a, "echo");
    if (n < 4) fail_msg("%zu tasks in 5 s", n);
    if (na + nb == 0) fail_msg("neither instance found a due time the other had submitted");
    /* each task was submitted by exactly one of them */
    assert_distinct(due, nd, "two instances");
    if ((size_t)nd != n && (size_t)nd != n - 1)   /* the last one may not be logged yet */
        fail_msg("%d submissions logged for %zu tasks", nd, n);
    wp_server_free(b);
    wp_server_free(a);
}

/* Bad schedules stop warmpool before anything starts: exit 2 with the reason. */
static void expect_exit2(const char *const *extra, const char *needle) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *db = wp_fmt("%s/never.db", dir);
    char *listen = wp_fmt("127.0.0.1:%d", wp_free_port());
    const char *argv[16] = {"--db", db, "--listen", listen};
    int k = 4;
    for (int i = 0; extra[i] && k < 15; i++) argv[k++] = extra[i];
    argv[k] = NULL;
    char *out = NULL;
    bool to = false;
    int st = wp_run_binary(argv, NULL, 20000, &out, &to, NULL);
    if (to) fail_msg("%s: still running after 20 s", needle);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2))
        fail_msg("want exit 2 naming '%s', got status %d: %.800s", needle, st, out);
    if (strstr(out, needle) == NULL) fail_msg("exit 2 without '%s': %.800s", needle, out);
    free(out);
    free(db);
    free(listen);
    wp_remove_tree(dir);
}

WP_TEST(test_schedule_bad_config_exit_2) {
    expect_exit2((const char *[]){"--schedule", "a=61 * * * * echo {}", NULL}, "minute field");
    expect_exit2((const char *[]){"--schedule", "a=* * * * echo {}", NULL}, "day of week field 'echo'");
    expect_exit2((const char *[]){"--schedule", "a=0 0 30 2 * echo", NULL}, "never comes due");
    expect_exit2((const char *[]){"--schedule", "a=* * * * * nope {}", NULL}, "no kind is named 'nope'");
    expect_exit2((const char *[]){"--schedule", "a=* * * * * echo {oops", NULL}, "the input is not JSON");
    /* a plugin's kinds are only known once loaded: checked then, still exit 2 */
    const char *so = getenv("WP_IT_LOOKUP_SO");
    if (so != NULL && so[0] != '\0') {
        expect_exit2((const char *[]){"--plugin", so, "--schedule", "p=@daily not_in_plugin", NULL},
                     "--schedule p: no kind is named 'not_in_plugin'");
    } else {
        print_message("WP_IT_LOOKUP_SO not set: the plugin case is not run\n");
    }
}


/* ---------------------------------------------------------------- callbacks */

/* A task with a callback_url: once it ends, its task object is POSTed once, signed; a
 * batch's tasks each get theirs; the delivery is visible on the task. */
WP_TEST(test_callback_delivered_once_signed) {
    struct receiver *rx = rx_start(0, (const int[]){200}, 1);
    char *allow = allow_arg(rx->port);
    const char *args[] = {"--callback-allow", allow, "--callback-secret", "s3cret", NULL};
    wp_opts o = {.args = args};
    wp_server *s = wp_server_start(&o);
    char *url = wp_fmt("http://127.0.0.1:%d/hook?x=1", rx->port);
    json_t *t = wp_submitf(s, "{\"kind\": \"echo\", \"input\": {\"n\": 1}, \"callback_url\": \"%s\"}", url);
    const char *id = wp_str(t, "id");
    json_t *cb = json_object_get(t, "callback");
    assert_non_null(cb);
    assert_string_equal(wp_str(cb, "url"), url);
    assert_string_equal(wp_str(cb, "state"), "pending");
    assert_int_equal(wp_int(cb, "attempts"), 0);
    assert_true(json_is_null(json_object_get(cb, "last_error")));
    if (!rx_wait(rx, 1, 10000)) fail_msg("no callback within 10 s");
    json_t *done = wait_callback(s, id, "delivered", 5000);
    assert_int_equal(wp_int(json_object_get(done, "callback"), "attempts"), 1);
    wp_sleep_ms(1000);
    assert_int_equal(rx_count(rx), 1);                          /* once */
    struct rx_req *q = &rx->req[0];
    assert_string_equal(q->path, "/hook?x=1");
    assert_string_equal(q->task, id);
    assert_string_equal(q->attempt, "1");
    assert_string_equal(q->ctype, "application/json");
    /* the body is the task object, as GET shows it (the delivery then in progress) */
    json_error_t je;
    json_t *body = json_loads(q->body, 0, &je);
    assert_non_null(body);
    wp_assert_task_keys_exact(body, true, "callback body");
    assert_string_equal(wp_str(body, "id"), id);
    assert_string_equal(wp_str(body, "state"), "succeeded");
    assert_true(json_equal(json_object_get(body, "result"), json_object_get(done, "result")));
    assert_string_equal(wp_str(json_object_get(body, "callback"), "state"), "pending");
    assert_int_equal(wp_int(json_object_get(body, "callback"), "attempts"), 1);
    /* the signature: HMAC-SHA256 of "TIMESTAMP.BODY" under the secret */
    long long ts = atoll(q->ts);
    if (llabs(ts - wp_wall_ms() / 1000) > 60) fail_msg("timestamp %s is not now", q->ts);
    char *signed_text = wp_fmt("%s.%s", q->ts, q->body);
    unsigned char mac[32];
    unsigned int mlen = 0;
    HMAC(EVP_sha256(), "s3cret", 6, (const unsigned char *)signed_text, strlen(signed_text), mac, &mlen);
    char want[80] = "sha256=";
    for (unsigned i = 0; i < mlen; i++) snprintf(want + 7 + 2 * i, 3, "%02x", mac[i]);
    assert_string_equal(q->sig, want);
    free(signed_text);
    json_decref(body);
    json_decref(done);

    /* a batch: each task its own delivery; a canceled task's too */
    wp_resp r;
    char *batch = wp_fmt("{\"tasks\": [{\"kind\": \"echo\", \"input\": 1, \"callback_url\": \"%s\"},"
                         " {\"kind\": \"echo\", \"input\": 2}, {\"kind\": \"echo\", \"input\": 3,"
                         " \"callback_url\": \"%s\"}]}", url, url);
    wp_call(s, "POST", "/v1/tasks/batch", batch, &r);
    assert_int_equal(r.status, 202);
    json_t *items = json_object_get(r.json, "tasks");
    const char *b0 = wp_str(json_array_get(items, 0), "id"), *b2 = wp_str(json_array_get(items, 2), "id");
    assert_null(json_object_get(json_array_get(items, 1), "callback"));
    json_decref(wait_callback(s, b0, "delivered", 10000));
    json_decref(wait_callback(s, b2, "delivered", 10000));
    assert_int_equal(rx_count_task(rx, b0), 1);
    assert_int_equal(rx_count_task(rx, b2), 1);
    assert_int_equal(rx_count(rx), 3);
    wp_resp_free(&r);
    free(batch);

    /* an idempotent repeat must name the same callback_url */
    const char *h[] = {"Idempotency-Key: cb-1", NULL};
    char *b1 = wp_fmt("{\"kind\": \"sleep\", \"input\": {\"ms\": 1}, \"callback_url\": \"%s\"}", url);
    wp_call_h(s, "POST", "/v1/tasks", b1, h, &r);
    assert_int_equal(r.status, 202);
    wp_resp_free(&r);
    wp_call_h(s, "POST", "/v1/tasks", b1, h, &r);
    assert_int_equal(r.status, 200);
    wp_resp_free(&r);
    wp_call_h(s, "POST", "/v1/tasks", "{\"kind\": \"sleep\", \"input\": {\"ms\": 1}}", h, &r);
    wp_assert_error(&r, 409, "idempotency_conflict", NULL);
    wp_resp_free(&r);
    free(b1);
    json_decref(t);
    free(url);
    wp_server_free(s);
    rx_stop(rx);
    free(allow);
}

/* A receiver that answers 500 first, then 200: retried after the back-off, delivered;
 * the failure is visible meanwhile. */
WP_TEST(test_callback_retried_after_500) {
    struct receiver *rx = rx_start(0, (const int[]){500, 200}, 2);
    char *allow = allow_arg(rx->port);
    const char *args[] = {"--callback-allow", allow, NULL};
    const char *env[] = {"WARMPOOL_FAULTS=callback_backoff_ms=1500", NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    json_t *t = wp_submitf(s, "{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:%d/\"}", rx->port);
    const char *id = wp_str(t, "id");
    if (!rx_wait(rx, 1, 10000)) fail_msg("no first callback");
    long long deadline = wp_now_ms() + 1000;
    bool seen = false;
    while (!seen && wp_now_ms() < deadline) {
        json_t *g = wp_get_task(s, id);
        json_t *cb = json_object_get(g, "callback");
        seen = strcmp(wp_str(cb, "last_error"), "HTTP 500") == 0 && strcmp(wp_str(cb, "state"), "pending") == 0 &&
               wp_int(cb, "attempts") == 1;
        json_decref(g);
        if (!seen) wp_sleep_ms(20);
    }
    if (!seen) fail_msg("the failed first attempt was not visible as pending, HTTP 500");
    json_t *done = wait_callback(s, id, "delivered", 10000);
    json_t *cb = json_object_get(done, "callback");
    assert_int_equal(wp_int(cb, "attempts"), 2);
    assert_true(json_is_null(json_object_get(cb, "last_error")));
    assert_int_equal(rx_count(rx), 2);
    assert_string_equal(rx->req[1].attempt, "2");
    assert_string_equal(rx->req[1].sig, "");                    /* no secret: not signed */
    json_decref(done);
    json_decref(t);
    wp_server_free(s);
    rx_stop(rx);
    free(allow);
}

/* A receiver that never answers: each attempt times out, is retried, and the delivery
 * ends failed with the reason once the attempts run out. */
WP_TEST(test_callback_never_answered_fails) {
    struct receiver *rx = rx_start(0, (const int[]){0}, 1);
    char *allow = allow_arg(rx->port);
    const char *args[] = {"--callback-allow", allow, NULL};
    const char *env[] = {"WARMPOOL_FAULTS=callback_timeout_ms=400,callback_backoff_ms=100,callback_max_attempts=3",
                         NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    json_t *t = wp_submitf(s, "{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:%d/slow\"}", rx->port);
    const char *id = wp_str(t, "id");
    json_t *done = wait_callback(s, id, "failed", 20000);
    json_t *cb = json_object_get(done, "callback");
    assert_int_equal(wp_int(cb, "attempts"), 3);
    if (strstr(wp_str(cb, "last_error"), "timed out") == NULL)
        fail_msg("last_error does not say it timed out: %s", wp_str(cb, "last_error"));
    assert_int_equal(rx_count(rx), 3);
    wp_sleep_ms(600);
    assert_int_equal(rx_count(rx), 3);                          /* given up */
    char *log = wp_server_read_log(s);
    assert_non_null(strstr(log, "callback failed, giving up"));
    free(log);
    json_decref(done);
    json_decref(t);
    wp_server_free(s);
    rx_stop(rx);
    free(allow);
}

/* Bad callback URLs: 422 naming the field (or the flag), nothing stored. */
WP_TEST(test_callback_url_not_allowed_422) {
    wp_server *plain = wp_server_start_args(NULL);
    wp_snap before = wp_snapshot(plain);
    wp_resp r;
    wp_call(plain, "POST", "/v1/tasks", "{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:9/x\"}", &r);
    wp_assert_error(&r, 422, "invalid_task", "--callback-allow");
    wp_resp_free(&r);
    wp_assert_unchanged(plain, &before, "callback_url without --callback-allow");
    wp_server_free(plain);

    int port = wp_free_port();
    char *allow = allow_arg(port);
    wp_server *s = wp_server_start_args("--callback-allow", allow, NULL);
    before = wp_snapshot(s);
    const char *bad[][2] = {
        {"\"http://127.0.0.1:1/x\"", "port 1 is not allowed"},
        {"\"http://10.0.0.1/x\"", "host 10.0.0.1 port 80 is not allowed"},
        {"\"https://127.0.0.1/x\"", "must be an http:// URL"},
        {"\"http://user@127.0.0.1/x\"", "is not http://HOST[:PORT]/PATH"},
        {"42", "must be a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *b = wp_fmt("{\"kind\": \"echo\", \"callback_url\": %s}", bad[i][0]);
        wp_call(s, "POST", "/v1/tasks", b, &r);
        wp_assert_error(&r, 422, "invalid_task", bad[i][1]);
        assert_non_null(strstr(wp_str(json_object_get(r.json, "error"), "message"), "callback_url"));
        wp_resp_free(&r);
        free(b);
    }
    char *batch = wp_fmt("{\"tasks\": [{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:%d/\"},"
                         " {\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.2:%d/\"}]}", port, port);
    wp_call(s, "POST", "/v1/tasks/batch", batch, &r);
    wp_assert_error(&r, 422, "invalid_task", "tasks[1].callback_url: host 127.0.0.2");
    wp_resp_free(&r);
    free(batch);
    wp_assert_unchanged(s, &before, "bad callback URLs");
    wp_server_free(s);
    free(allow);
}

/* A delivery still pending when warmpool stops is made after the restart. */
WP_TEST(test_callback_pending_delivered_after_restart) {
    int port = wp_free_port();                  /* nobody listens there yet */
    char *allow = allow_arg(port);
    const char *args[] = {"--callback-allow", allow, NULL};
    const char *env[] = {"WARMPOOL_FAULTS=callback_backoff_ms=1000", NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    json_t *t = wp_submitf(s, "{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:%d/r\"}", port);
    char id[32];
    snprintf(id, sizeof id, "%s", wp_str(t, "id"));
    json_decref(t);
    long long deadline = wp_now_ms() + 10000;
    for (;;) {
        json_t *g = wp_get_task(s, id);
        json_t *cb = json_object_get(g, "callback");
        bool tried = wp_int(cb, "attempts") >= 1 && !json_is_null(json_object_get(cb, "last_error"));
        if (tried) assert_string_equal(wp_str(cb, "state"), "pending");
        json_decref(g);
        if (tried) break;
        if (wp_now_ms() > deadline) fail_msg("the delivery was not tried");
        wp_sleep_ms(50);
    }
    int st = wp_server_stop(s, 10000, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct receiver *rx = rx_start(port, (const int[]){200}, 1);
    wp_opts o2 = {.args = args, .env = env, .dir = s->dir};
    wp_server *s2 = wp_server_start(&o2);
    json_t *done = wait_callback(s2, id, "delivered", 15000);
    assert_int_equal(rx_count_task(rx, id), 1);
    json_decref(done);
    wp_server_free(s2);
    rx_stop(rx);
    free(allow);
}

/* The outcome of a delivery cannot be recorded (the database out of reach): the delivery
 * is made again after its lease, and then recorded (at least once). */
WP_TEST(test_callback_unrecorded_delivery_made_again) {
    struct receiver *rx = rx_start(0, (const int[]){200}, 1);
    char *allow = allow_arg(rx->port);
    const char *args[] = {"--callback-allow", allow, NULL};
    const char *env[] = {"WARMPOOL_FAULTS=callback_timeout_ms=500,callback_record_fail=1", NULL};
    wp_opts o = {.args = args, .env = env};
    wp_server *s = wp_server_start(&o);
    json_t *t = wp_submitf(s, "{\"kind\": \"echo\", \"callback_url\": \"http://127.0.0.1:%d/\"}", rx->port);
    const char *id = wp_str(t, "id");
    if (!rx_wait(rx, 1, 10000)) fail_msg("no first delivery");
    json_t *g = wp_get_task(s, id);
    assert_string_equal(wp_str(json_object_get(g, "callback"), "state"), "pending");
    json_decref(g);
    json_t *done = wait_callback(s, id, "delivered", 15000);     /* after the 5.5 s lease */
    assert_int_equal(wp_int(json_object_get(done, "callback"), "attempts"), 2);
    assert_int_equal(rx_count_task(rx, id), 2);
    assert_string_equal(rx->req[1].attempt, "2");
    char *log = wp_server_read_log(s);
    assert_non_null(strstr(log, "it is made again after its lease"));
    free(log);
    json_decref(done);
    json_decref(t);
    wp_server_free(s);
    rx_stop(rx);
    free(allow);
}

/* PostgreSQL: two instances deliver every task's callback once between them. */
WP_TEST(test_callback_two_instances_deliver_once) {
    WP_PG_ONLY();
    struct receiver *rx = rx_start(0, (const int[]){200}, 1);
    char *allow = allow_arg(rx->port);
    const char *args[] = {"--callback-allow", allow, NULL};
    wp_opts o = {.args = args};
    wp_server *a = wp_server_start(&o);
    wp_opts ob = {.args = args, .db = a->db};
    wp_server *b = wp_server_start(&ob);
    enum { N = 20 };
    char ids[N][32];
    for (int i = 0; i < N; i++) {
        json_t *t = wp_submitf(i % 2 ? a : b, "{\"kind\": \"echo\", \"input\": %d, \"callback_url\": \"http://127.0.0.1:%d/\"}",
                               i, rx->port);
        snprintf(ids[i], sizeof ids[i], "%s", wp_str(t, "id"));
        json_decref(t);
    }
    for (int i = 0; i < N; i++) json_decref(wait_callback(a, ids[i], "delivered", 15000));
    wp_sleep_ms(500);
    for (int i = 0; i < N; i++)
        if (rx_count_task(rx, ids[i]) != 1) fail_msg("task %s: %d deliveries", ids[i], rx_count_task(rx, ids[i]));
    assert_int_equal(rx_count(rx), N);
    wp_server_free(b);
    wp_server_free(a);
    rx_stop(rx);
    free(allow);
}

int main(void) {
    wp_harness_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_schedule_submits_each_due_time_once, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_restart_submits_no_due_time_twice, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_two_instances_one_task_per_due_time, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_bad_config_exit_2, wp_test_teardown),
        cmocka_unit_test_teardown(test_schedule_failed_submission_retried, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_delivered_once_signed, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_retried_after_500, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_never_answered_fails, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_url_not_allowed_422, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_pending_delivered_after_restart, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_unrecorded_delivery_made_again, wp_test_teardown),
        cmocka_unit_test_teardown(test_callback_two_instances_deliver_once, wp_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
