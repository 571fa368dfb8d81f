/* callbacks.h -- completion callbacks (issue 13): when a task submitted with a
 * callback_url ends (succeeded, failed, canceled), POST its task object there.
 *
 * Deliveries are stored with their task (store_callback_claim / _record), so they survive
 * restarts, and any instance's deliverer may make one: a claim counts an attempt and hides
 * the delivery from the other deliverers (SKIP LOCKED on PostgreSQL) for the request's
 * timeout and a margin; a deliverer that dies mid-way leaves it to be claimed again then.
 * So a receiver gets each delivery at least once, and in practice once; it can tell a
 * repeat by X-Warmpool-Task and the body's callback.attempts.
 *
 * The deliverer is CALLBACK_THREADS threads of the agent process (service/agent.c), each
 * with its own store connection, each looking for a due delivery every
 * CALLBACK_IDLE_MS when there is none. A request: POST, Content-Type application/json,
 * http only, no redirect followed, no proxy, CALLBACK_TIMEOUT_MS in all; a 2xx answer is
 * delivered, anything else (another status, no connection, a timeout) is retried after
 * 5 s, doubling, capped at 5 min, CALLBACK_MAX_ATTEMPTS in all (about 10 minutes), then
 * `failed` with the last reason. With --callback-secret each request carries
 * X-Warmpool-Timestamp: T (seconds since the epoch) and
 * X-Warmpool-Signature: sha256=HEX, HMAC-SHA256 under the secret of "T.BODY". */
#ifndef WP_CALLBACKS_H
#define WP_CALLBACKS_H

#include "service/config.h"

#include <stddef.h>
#include <stdint.h>

#define CALLBACK_THREADS 2
#define CALLBACK_IDLE_MS 250
#define CALLBACK_TIMEOUT_MS 10000
#define CALLBACK_MAX_ATTEMPTS 8
#define CALLBACK_BACKOFF_MS 5000
#define CALLBACK_BACKOFF_MAX_MS 300000

/* Starts the deliverer threads (they run until the process exits). 0, or -1 (logged). */
int callbacks_start(const struct config *cfg);

/* The signature header's value for body at time ts: "sha256=" and 64 hex digits into out
 * (at least 72 bytes). */
void callbacks_sign(const char *secret, int64_t ts, const char *body, size_t len, char *out,
                    size_t outlen);

/* How long to wait before the attempt after attempt n (1-based) failed, with base
 * base_ms (CALLBACK_BACKOFF_MS): base * 2^(n-1), capped at CALLBACK_BACKOFF_MAX_MS. */
int64_t callbacks_backoff_ms(int n, int64_t base_ms);

#endif
