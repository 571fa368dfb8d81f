/* callbacks.c -- the deliverer of completion callbacks (see callbacks.h): threads of the
 * agent process that claim due deliveries, POST them with libcurl and record the end. */
#include "service/callbacks.h"
#include "api/api.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"
#include "storage/store.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fault points (test builds):
 *   callback_backoff_ms=N     the first retry waits N ms instead of 5 s (then doubling)
 *   callback_timeout_ms=N     a request may take N ms instead of 10 s
 *   callback_max_attempts=N   N attempts instead of 8
 *   callback_record_fail=N    the first N records of an outcome fail (the delivery is
 *                             then made again after its lease: at least once) */
static int64_t
knob(const char *name, int64_t def)
{
    long v = fault_value(name);
    return v > 0 ? v : def;
}

int64_t
callbacks_backoff_ms(int n, int64_t base_ms)
{
    int64_t d = base_ms;
    for (int i = 1; i < n && d < CALLBACK_BACKOFF_MAX_MS; i++)
        d *= 2;
    return d < CALLBACK_BACKOFF_MAX_MS ? d : CALLBACK_BACKOFF_MAX_MS;
}

void
callbacks_sign(const char *secret, int64_t ts, const char *body, size_t len, char *out,
               size_t outlen)
{
    char prefix[32];
    int plen = snprintf(prefix, sizeof prefix, "%" PRId64 ".", ts);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    /* HMAC over "T." then the body, without copying the body */
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t got = 0;
    int ok = ctx != NULL &&
             EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)plen) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1 &&
             EVP_MAC_final(ctx, mac, &got, sizeof mac) == 1;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    mlen = ok ? (unsigned int)got : 0;
    size_t n = (size_t)snprintf(out, outlen, "sha256=");
    for (unsigned int i = 0; i < mlen && n + 2 < outlen; i++)
        n += (size_t)snprintf(out + n, outlen - n, "%02x", mac[i]);
}

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

/* One POST of body to t's callback_url. 0 delivered, or -1 with the reason in why. */
static int
post(CURL *c, const struct config *cfg, const store_task *t, const char *body, char *why,
     size_t whylen)
{
    char h[4][160];
    struct curl_slist *hs = NULL;
    snprintf(h[0], sizeof h[0], "X-Warmpool-Task: %" PRId64, t->id);
    snprintf(h[1], sizeof h[1], "X-Warmpool-Attempt: %d", t->callback_attempts);
    hs = curl_slist_append(hs, "Content-Type: application/json");
    hs = curl_slist_append(hs, "Expect:");          /* no 100-continue round trip */
    hs = curl_slist_append(hs, h[0]);
    hs = curl_slist_append(hs, h[1]);
    if (cfg->callback_secret[0] != '\0') {
        int64_t ts = clock_now_ms() / 1000;
        char sig[96];
        callbacks_sign(cfg->callback_secret, ts, body, strlen(body), sig, sizeof sig);
        snprintf(h[2], sizeof h[2], "X-Warmpool-Timestamp: %" PRId64, ts);
        snprintf(h[3], sizeof h[3], "X-Warmpool-Signature: %s", sig);
        hs = curl_slist_append(hs, h[2]);
        hs = curl_slist_append(hs, h[3]);
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, t->callback_url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");         /* the allowed host itself, never a proxy */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);      /* threads: no SIGALRM for timeouts */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)knob("callback_timeout_ms", CALLBACK_TIMEOUT_MS));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "warmpool/" WARMPOOL_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hs);
    if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s", errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
        return -1;
    }
    if (status < 200 || status > 299) {
        snprintf(why, whylen, "HTTP %ld", status);
        return -1;
    }
    return 0;
}

/* Claims one due delivery and makes it. 1 one was made (or tried), 0 none was due, -1 the
 * store failed. */
static int
deliver_one(CURL *c, const struct config *cfg, store *st)
{
    int64_t timeout = knob("callback_timeout_ms", CALLBACK_TIMEOUT_MS);
    store_task t;
    int rc = store_callback_claim(st, clock_now_ms(), timeout + 5000, &t);
    if (rc == STORE_EMPTY)
        return 0;
    if (rc != STORE_OK) {
        log_debug("callbacks: claiming a delivery: %s", store_errmsg(st));
        return -1;
    }
    json_t *obj = api_task_json(&t);
    char *body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    char why[CURL_ERROR_SIZE + 32] = "out of memory";
    int ok = body != NULL && post(c, cfg, &t, body, why, sizeof why) == 0;
    free(body);
    int max = (int)knob("callback_max_attempts", CALLBACK_MAX_ATTEMPTS);
    int state = ok ? STORE_CB_DELIVERED
                : t.callback_attempts >= max ? STORE_CB_FAILED : STORE_CB_PENDING;
    int64_t next = state == STORE_CB_PENDING
        ? clock_now_ms() + callbacks_backoff_ms(t.callback_attempts,
                                                knob("callback_backoff_ms", CALLBACK_BACKOFF_MS))
        : 0;
    rc = fault_countdown("callback_record_fail")
             ? STORE_UNAVAILABLE
             : store_callback_record(st, t.id, t.callback_attempts, state, next, ok ? NULL : why);
    if (ok)
        log_event(LOG_DEBUG, "callback delivered", LOG_INT("task_id", t.id),
                  LOG_INT("attempt", t.callback_attempts));
    else
        log_event(state == STORE_CB_FAILED ? LOG_WARN : LOG_INFO,
                  state == STORE_CB_FAILED ? "callback failed, giving up" : "callback failed, retrying",
                  LOG_INT("task_id", t.id), LOG_INT("attempt", t.callback_attempts),
                  LOG_STR("error", why));
    if (rc != STORE_OK)
        log_warn("callbacks: recording attempt %d of task %" PRId64 ": %s (it is made again "
                 "after its lease)", t.callback_attempts, t.id,
                 rc == STORE_CONFLICT ? "claimed again meanwhile"
                 : fault_value("callback_record_fail") > 0 ? "fault point" : store_errmsg(st));
    store_task_clear(&t);
    return 1;
}

static void *
deliverer(void *arg)
{
    const struct config *cfg = arg;
    CURL *c = curl_easy_init();
    store *st = NULL;
    int64_t open_fails = 0;
    for (;;) {
        if (st == NULL) {
            char err[512];
            st = store_open(cfg->db_path, STORE_RELAXED, 2000, err, sizeof err);
            if (st == NULL) {
                if (open_fails++ % 20 == 0)
                    log_warn("callbacks: opening the database: %s (retrying)", err);
                clock_sleep_ms(1000);
                continue;
            }
            open_fails = 0;
        }
        int r = c != NULL ? deliver_one(c, cfg, st) : 0;
        if (c == NULL)
            c = curl_easy_init();
        if (r <= 0)
            clock_sleep_ms(r < 0 ? 1000 : CALLBACK_IDLE_MS);
    }
    return NULL;
}

int
callbacks_start(const struct config *cfg)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("callbacks: libcurl would not start: completion callbacks are not delivered "
                  "by this instance");
        return -1;
    }
    for (int i = 0; i < CALLBACK_THREADS; i++) {
        pthread_t th;
        if (pthread_create(&th, NULL, deliverer, (void *)cfg) != 0) {
            log_error("callbacks: cannot start a deliverer thread");
            return -1;
        }
        pthread_detach(th);
    }
    return 0;
}
