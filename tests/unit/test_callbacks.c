/* test_callbacks.c -- the completion callbacks' signature and back-off
 * (service/callbacks.c); deliveries themselves are tested end to end in
 * integration.sched against a receiver on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "service/callbacks.h"

static void
test_signature(void **state)
{
    (void)state;
    char sig[96];
    /* python3: hmac.new(b's3cret', b'1700000000.{"a":1}', hashlib.sha256).hexdigest() */
    callbacks_sign("s3cret", 1700000000, "{\"a\":1}", 7, sig, sizeof sig);
    assert_string_equal(sig, "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940");
    callbacks_sign("Jefe", 1, "", 0, sig, sizeof sig);          /* an empty body: "1." */
    assert_string_equal(sig, "sha256=c5009ac9fb219943cae5947bf5ea45251fc6f7bb84976c7a02e94799d5d100a9");
    /* the body's length is what counts, not a NUL in it */
    callbacks_sign("s3cret", 1700000000, "{\"a\":1}XYZ", 7, sig, sizeof sig);
    assert_string_equal(sig, "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940");
}

/* 5 s, doubling, capped at 5 min: 8 attempts span about 10 minutes */
static void
test_backoff(void **state)
{
    (void)state;
    assert_int_equal(callbacks_backoff_ms(1, CALLBACK_BACKOFF_MS), 5000);
    assert_int_equal(callbacks_backoff_ms(2, CALLBACK_BACKOFF_MS), 10000);
    assert_int_equal(callbacks_backoff_ms(6, CALLBACK_BACKOFF_MS), 160000);
    assert_int_equal(callbacks_backoff_ms(7, CALLBACK_BACKOFF_MS), 300000);
    assert_int_equal(callbacks_backoff_ms(100, CALLBACK_BACKOFF_MS), 300000);
    int64_t total = 0;
    for (int n = 1; n < CALLBACK_MAX_ATTEMPTS; n++)
        total += callbacks_backoff_ms(n, CALLBACK_BACKOFF_MS);
    assert_int_equal(total, 615000);
    assert_int_equal(callbacks_backoff_ms(3, 100), 400);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
