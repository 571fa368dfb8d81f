/* clock.h -- wall and monotonic time in milliseconds, and RFC 3339 formatting. */
#ifndef WP_CLOCK_H
#define WP_CLOCK_H

#include <stdint.h>

#define CLOCK_RFC3339_LEN 32    /* "2026-01-02T03:04:05.678Z" plus slack */

/* milliseconds since the Unix epoch (CLOCK_REALTIME) */
int64_t clock_now_ms(void);
/* milliseconds from an arbitrary start (CLOCK_MONOTONIC): for deadlines and durations */
int64_t clock_mono_ms(void);
/* writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) into out, which holds CLOCK_RFC3339_LEN bytes */
void clock_format_rfc3339(int64_t epoch_ms, char out[CLOCK_RFC3339_LEN]);
/* sleeps for ms milliseconds, resuming after signals; returns 0 */
int clock_sleep_ms(int64_t ms);

#endif
