/* test_scan.c -- the scan kind: rules parsing, loading and compile errors, matching
 * known (fake) credentials at exact offsets, input validation, and a big rule set.
 *
 * `test_scan cycle` runs only the load/worker_init/run/worker_fini/unload cycle; the
 * unit.valgrind.scan test runs that under valgrind.
 *
 * Every credential below is invented for this file and fits its format only; the
 * prefixes are split ("gh" "p_") so that secret scanners reading the source do not
 * take them for leaks. */
#include "service/kind_scan.h"
#include "service/scan_rules.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- Helpers ------------------------------------------------------------------- */

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Writes text to a fresh temporary file; returns its path (free() it, unlink it). */
static char *
write_temp(const char *text, size_t len)
{
    char *path = strdup("/tmp/test_scan_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Loads a rules text through a temporary file: 0 and *ctx, or -1 and err. */
static int
load_text(const char *text, void **ctx, size_t *bytes, char *err, size_t errlen)
{
    char *path = write_temp(text, strlen(text));
    int rc = KIND_SCAN.load(path, ctx, bytes, err, errlen);
    unlink(path);
    free(path);
    return rc;
}

/* Runs one scan of {"text": text}; the result is a new reference. */
static json_t *
scan_text(const void *ctx, void *ws, const char *text, size_t len)
{
    json_t *input = json_pack("{s:s%}", "text", text, len);
    struct wp_task_error err = {0};
    json_t *res = KIND_SCAN.run(ctx, ws, input, &err);
    if (res == NULL)
        fail_msg("run failed: %s: %s", err.code, err.message);
    json_decref(input);
    return res;
}

/* The number of matches of `rule` at [start, end) in res (start < 0: null start). */
static int
count_match(const json_t *res, const char *rule, long long start, long long end)
{
    int n = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(res, "matches"), i, m) {
        const json_t *s = json_object_get(m, "start");
        if (strcmp(json_string_value(json_object_get(m, "rule")), rule) == 0 &&
            json_integer_value(json_object_get(m, "end")) == end &&
            (start < 0 ? json_is_null(s) : json_integer_value(s) == start))
            n++;
    }
    return n;
}

static int
count_rule(const json_t *res, const char *rule)
{
    int n = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(res, "matches"), i, m)
        n += strcmp(json_string_value(json_object_get(m, "rule")), rule) == 0;
    return n;
}

static char *
b64_encode(const char *s, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    assert_non_null(out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* ---- Rules parsing ------------------------------------------------------------- */

static void
parse_ok(void **state)
{
    (void)state;
    static const char text[] =
        "# a comment\r\n"
        "\r\n"
        "   # an indented comment\n"
        "aws.key-1:x\tAKIA[A-Z2-7]{16}\r\n"
        "   \t  \n"
        "pw\tpassword\\s*=\\s*\"[^\"]+\"  \t\n"
        "last\tend\\b";                     /* no final newline */
    struct scan_rules r;
    char err[256] = "";
    assert_int_equal(scan_rules_parse(text, strlen(text), &r, err, sizeof err), 0);
    assert_int_equal(r.count, 3);
    assert_string_equal(r.ids[0], "aws.key-1:x");
    assert_string_equal(r.patterns[0], "AKIA[A-Z2-7]{16}");     /* no CR */
    assert_int_equal(r.lines[0], 4);
    assert_string_equal(r.ids[1], "pw");
    assert_string_equal(r.patterns[1], "password\\s*=\\s*\"[^\"]+\"");  /* trimmed */
    assert_int_equal(r.lines[1], 6);
    assert_string_equal(r.patterns[2], "end\\b");
    assert_int_equal(r.lines[2], 7);
    scan_rules_free(&r);
    scan_rules_free(&r);                    /* emptied: a second free is harmless */
    scan_rules_free(NULL);

    /* A regex may hold TABs after the first one; comments only: zero rules. */
    assert_int_equal(scan_rules_parse("a\tx\ty\n", 6, &r, err, sizeof err), 0);
    assert_string_equal(r.patterns[0], "x\ty");
    scan_rules_free(&r);
    assert_int_equal(scan_rules_parse("# only\n\n", 8, &r, err, sizeof err), 0);
    assert_int_equal(r.count, 0);
    scan_rules_free(&r);
    assert_int_equal(scan_rules_parse("", 0, &r, err, sizeof err), 0);
    assert_int_equal(r.count, 0);
    scan_rules_free(&r);
}

static void
expect_parse_error(const char *text, const char *want)
{
    struct scan_rules r;
    char err[256] = "";
    assert_int_equal(scan_rules_parse(text, strlen(text), &r, err, sizeof err), -1);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    assert_int_equal(r.count, 0);
    assert_null(r.ids);
}

static void
parse_errors(void **state)
{
    (void)state;
    expect_parse_error("# c\nok\tx\nno tab here\n", "line 3: no TAB");
    expect_parse_error("a\tx\r\nb\ty\r\na\tz\r\n", "line 3: duplicate id \"a\" (first on line 1)");
    expect_parse_error("ok\tx\nbad id\tx\n", "line 2: bad id \"bad id\"");
    expect_parse_error("ok\tx\n\n\nsl/ash\tx\n", "line 4: bad id");
    expect_parse_error("\tx\n", "line 1: empty id");
    expect_parse_error("a\tx\nb\t  \n", "line 2: empty regex for id \"b\"");
    expect_parse_error("a\t\r\n", "line 1: empty regex");
    char longid[100];
    memset(longid, 'k', 65);
    strcpy(longid + 65, "\tx\n");
    expect_parse_error(longid, "line 1: id \"kkkk");
    longid[1] = '\t';                       /* a 1-char id is fine */
    struct scan_rules r;
    char err[64];
    assert_int_equal(scan_rules_parse(longid, strlen(longid), &r, err, sizeof err), 0);
    scan_rules_free(&r);
    static const char nul[] = "a\tx\nb\ty\0z\n";
    assert_int_equal(scan_rules_parse(nul, sizeof nul - 1, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2: contains a NUL"));
}

static void
parse_large(void **state)
{
    (void)state;
    size_t n = 50000, cap = n * 64;
    char *text = malloc(cap), *p = text;
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "ioc-%05zu\t%016zx%016zx\n", i, i * 2654435761u, ~i);
    double t0 = now_ms();
    struct scan_rules r;
    char err[256];
    assert_int_equal(scan_rules_parse(text, (size_t)(p - text), &r, err, sizeof err), 0);
    double ms = now_ms() - t0;
    print_message("parsed %zu rules in %.1f ms\n", r.count, ms);
    assert_int_equal(r.count, n);
    assert_true(ms < 1000);
    scan_rules_free(&r);
    free(text);
}

/* ---- Loading ------------------------------------------------------------------- */

static void
load_default(void **state)
{
    (void)state;
    struct scan_rules r;
    char err[512] = "";
    assert_int_equal(strlen(SCAN_DEFAULT_RULES), SCAN_DEFAULT_RULES_LEN);
    assert_int_equal(scan_rules_parse(SCAN_DEFAULT_RULES, SCAN_DEFAULT_RULES_LEN, &r, err,
                                      sizeof err), 0);
    print_message("default rules: %zu\n", r.count);
    assert_true(r.count >= 50);
    scan_rules_free(&r);

    void *ctx = NULL;
    size_t bytes = 0;
    double t0 = now_ms();
    int rc = KIND_SCAN.load(NULL, &ctx, &bytes, err, sizeof err);
    double ms = now_ms() - t0;
    if (rc != 0)
        fail_msg("load: %s", err);
    print_message("default rules: load %.1f ms, ctx_bytes %zu\n", ms, bytes);
    assert_non_null(ctx);
    assert_true(bytes > 0);
    KIND_SCAN.unload(ctx);
    KIND_SCAN.unload(NULL);
}

static void
load_errors(void **state)
{
    (void)state;
    void *ctx = NULL;
    size_t bytes = 0;
    char err[512] = "";

    assert_int_equal(load_text("# header\nok\tfoo\nbad\tfoo(bar\nlater\tx\n", &ctx, &bytes,
                               err, sizeof err), -1);
    print_message("bad regex: %s\n", err);
    assert_non_null(strstr(err, "line 3 (id bad): "));
    assert_non_null(strstr(err, "rules file /tmp/test_scan_"));
    assert_null(ctx);

    assert_int_equal(KIND_SCAN.load("/nonexistent/dir/my.rules", &ctx, &bytes, err,
                                    sizeof err), -1);
    print_message("missing file: %s\n", err);
    assert_non_null(strstr(err, "/nonexistent/dir/my.rules"));
    assert_non_null(strstr(err, "No such file"));

    assert_int_equal(load_text("a\tx\na\ty\n", &ctx, &bytes, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2: duplicate id"));
    assert_int_equal(load_text("# nothing\n", &ctx, &bytes, err, sizeof err), -1);
    assert_non_null(strstr(err, "no rules"));
    /* Line 2 cannot have SOM (it falls back); line 3 is the real error. */
    assert_int_equal(load_text("lit\tx\nnosom\t\"auths\"\\s*:\\s*\\{[^}]{0,300}\"auth\"\\s*:"
                               "\\s*\"[A-Za-z0-9+/]{8,}={0,2}\"\nbad\t[z-a]\n", &ctx, &bytes,
                               err, sizeof err), -1);
    print_message("after a SOM fallback: %s\n", err);
    assert_non_null(strstr(err, "line 3 (id bad): "));
    /* Matches only the empty string: Vectorscan refuses it, naming the line. */
    assert_int_equal(load_text("a\tx\nempty\ty*\n", &ctx, &bytes, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2 (id empty)"));
}

/* ---- Matching ------------------------------------------------------------------ */

struct sample {
    const char *rule;
    const char *text;           /* the input */
    const char *match;          /* the part of text the rule must match exactly */
};

#define PEM(kind) "-----BEGIN " kind "-----"

static const struct sample SAMPLES[] = {
    {"aws.access_key_id", "export AWS_ACCESS_KEY_ID=AK" "IAX2FJUGD6TXKIC26A # dev",
     "AK" "IAX2FJUGD6TXKIC26A"},
    {"aws.temporary_access_key_id", "key: AS" "IANID2GPHQUVTUSO54\n",
     "AS" "IANID2GPHQUVTUSO54"},
    {"aws.secret_access_key",
     "[default]\naws_secret_access_key = ttNNRe033I+Bfd29j5pxedzksjf8lXY8/Xd9vd5M\n",
     "aws_secret_access_key = ttNNRe033I+Bfd29j5pxedzksjf8lXY8/Xd9vd5M"},
    {"github.pat_classic", "token=gh" "p_gQNKT2e0u47vQMBjj0hCDg7fYeaL0H8DmQEx;",
     "gh" "p_gQNKT2e0u47vQMBjj0hCDg7fYeaL0H8DmQEx"},
    {"github.pat_fine_grained",
     "GH_TOKEN: github" "_pat_XM1JC4lPftHEZeqRgpWx4I_Gd7eias96C8w3Yh07uBu6kYYrV72M1AHL5Bx"
     "rf8iUADS3fifRKBHNzwtgts\n",
     "github" "_pat_XM1JC4lPftHEZeqRgpWx4I_Gd7eias96C8w3Yh07uBu6kYYrV72M1AHL5Bxrf8iUADS3"
     "fifRKBHNzwtgts"},
    {"gitlab.pat", "git clone https://oauth2@gitlab.example/x.git # gl" "pat-fNyr9Ey7xhBg5qQTn1NE",
     "gl" "pat-fNyr9Ey7xhBg5qQTn1NE"},
    {"slack.token", "SLACK_BOT=xo" "xb-741143482338-4273510041063-Kt69oUji1ZEANEs0n0pcoImX\n",
     "xo" "xb-741143482338-4273510041063-Kt69oUji1ZEANEs0n0pcoImX"},
    {"slack.webhook_url",
     "curl -X POST https://hooks.slack.com/services/T4SKOFC0X/B9ON9XBANTB/9lCIrQNcW4uj"
     "fQjTwFWzRSlZ -d @msg.json",
     "https://hooks.slack.com/services/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"},
    {"stripe.secret_key", "Stripe.api_key = '" "sk_" "live_POzHnpNv9gXCSJQK4pyDXtGn'",
     "sk_" "live_POzHnpNv9gXCSJQK4pyDXtGn"},
    {"gcp.api_key", "<script src=\"https://maps.example/js?key=AI" "zaeaYj1MJSB9Qhu1z2nT4TXbbeveYxSJWjUA7\">",
     "AI" "zaeaYj1MJSB9Qhu1z2nT4TXbbeveYxSJWjUA7"},
    {"sendgrid.api_key", "SENDGRID=S" "G.faWjfgJQ8dvb4vzGkOIgHv.VCJZR8PwmmAu4mjzS1k5k5QngFVjWM0lWBluM0nD96p\n",
     "S" "G.faWjfgJQ8dvb4vzGkOIgHv.VCJZR8PwmmAu4mjzS1k5k5QngFVjWM0lWBluM0nD96p"},
    {"npm.access_token", "//registry.npmjs.org/:_authToken=np" "m_aW5PTM6f0k0tf1TBdcIQFZyjWyhmrhYdoLZy\n",
     "np" "m_aW5PTM6f0k0tf1TBdcIQFZyjWyhmrhYdoLZy"},
    {"pypi.upload_token",
     "password = py" "pi-AgEIcHlwaS5vcmcfiYAtZAvw10IBexyisLJ7vgobUlSgQA6YhOh2QPJOo4DKF1vMLmzssTwqZAZNzpgxiVHEo\n",
     "py" "pi-AgEIcHlwaS5vcmcfiYAtZAvw10IBexyisLJ7vgobUlSgQA6YhOh2QPJOo4DKF1vMLmzssTwqZAZNzpgxiVHEo"},
    {"digitalocean.token", "do_token: do" "p_v1_1d100292b289bac36a6df719a4abdcd07087aa8006fb88281f959a7eb8277b28",
     "do" "p_v1_1d100292b289bac36a6df719a4abdcd07087aa8006fb88281f959a7eb8277b28"},
    {"shopify.access_token", "X-Shopify-Access-Token: sh" "pat_fc76e669433cc79cd10064f7415a14c1\r\n",
     "sh" "pat_fc76e669433cc79cd10064f7415a14c1"},
    {"telegram.bot_token", "https://api.telegram.org/bot525287128:A" "AwAoWkSRy6yKZePLusoU3ZZV5KIdL9dvCL/getMe",
     "525287128:A" "AwAoWkSRy6yKZePLusoU3ZZV5KIdL9dvCL"},
    {"openai.api_key",
     "OPENAI_API_KEY=s" "k-proj-tWlmJDjsi5HcVp5nH4F56D79BpDJ5wvcGQEZIjTRT3BlbkFJJfGA0Zw6kznJROBA8oHywVV7dRVUgiEpr95PQswi\n",
     "s" "k-proj-tWlmJDjsi5HcVp5nH4F56D79BpDJ5wvcGQEZIjTRT3BlbkFJJfGA0Zw6kznJROBA8oHywVV7dRVUgiEpr95PQswi"},
    {"anthropic.api_key",
     "client = Anthropic(api_key=\"s" "k-ant-api03-ZoE99YVlXWIY5Rf2GEWD4uaQ4iZijkomPdTIig5kSRiTsnXm2j6E5MEb"
     "6asopNJxbyxA1GHqE0L0HALd4a1fUTLiZtsG6AA\")",
     "s" "k-ant-api03-ZoE99YVlXWIY5Rf2GEWD4uaQ4iZijkomPdTIig5kSRiTsnXm2j6E5MEb6asopNJxbyxA1GHqE0L0"
     "HALd4a1fUTLiZtsG6AA"},
    {"huggingface.token", "HF_TOKEN=h" "f_hoTnjpGcLFvkPBmdBXMAOsCEVWOaPCOqJV huggingface-cli login",
     "h" "f_hoTnjpGcLFvkPBmdBXMAOsCEVWOaPCOqJV"},
    {"azure.storage_connection_string",
     "conn=\"DefaultEndpointsProtocol=https;AccountName=warmpooltest;AccountKey=MU+oTmABztKD9Hb+4uAoRN"
     "/iy4VbHiTma0vDkN1MiRGbnDdvM0Syu6enHKg/y13fmyKmE1IrczI65k7dxUdDF+==;EndpointSuffix=core.windows.net\"",
     "DefaultEndpointsProtocol=https;AccountName=warmpooltest;AccountKey=MU+oTmABztKD9Hb+4uAoRN"
     "/iy4VbHiTma0vDkN1MiRGbnDdvM0Syu6enHKg/y13fmyKmE1IrczI65k7dxUdDF+=="},
    {"key.rsa_private", "id_rsa:\n" PEM("RSA PRIVATE KEY") "\nMIIEpAIBAAKCAQEA...\n",
     PEM("RSA PRIVATE KEY")},
    {"key.openssh_private", PEM("OPENSSH PRIVATE KEY") "\nb3BlbnNzaC1rZXktdjEAAAAA\n",
     PEM("OPENSSH PRIVATE KEY")},
    {"key.pkcs8_encrypted", "x" PEM("ENCRYPTED PRIVATE KEY"), PEM("ENCRYPTED PRIVATE KEY")},
    {"jwt",
     "Cookie: session=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ3YXJtcG9vbC10ZXN0In0"
     ".WHymbIzpRPHc91butohm2AlIORNYBPuAtAUCzmKpclF; Path=/",
     "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ3YXJtcG9vbC10ZXN0In0"
     ".WHymbIzpRPHc91butohm2AlIORNYBPuAtAUCzmKpclF"},
    {"url.basic_auth", "DATABASE_URL=postgres://admin:s3cr3tPa55@db.example.internal:5432/app\n",
     "postgres://admin:s3cr3tPa55@db.example.internal"},
    {"config.password_assignment", "[db]\nhost = \"db1\"\npassword = \"correct-horse-battery\"\n",
     "password = \"correct-horse-battery\""},
    {"config.env_secret", "PORT=8080\nexport DB_PASSWORD=hunter2hunter2\n",
     "export DB_PASSWORD=hunter2hunter2"},
};

static void *default_ctx;
static size_t default_bytes;

static int
setup_default(void **state)
{
    (void)state;
    char err[512];
    if (KIND_SCAN.load(NULL, &default_ctx, &default_bytes, err, sizeof err) != 0) {
        print_error("load: %s\n", err);
        return -1;
    }
    return 0;
}

static int
teardown_default(void **state)
{
    (void)state;
    KIND_SCAN.unload(default_ctx);
    default_ctx = NULL;
    return 0;
}

static void *
worker_new(void *ctx)
{
    void *ws = NULL;
    char err[256];
    if (KIND_SCAN.worker_init(ctx, &ws, err, sizeof err) != 0)
        fail_msg("worker_init: %s", err);
    return ws;
}

static void
match_samples(void **state)
{
    (void)state;
    void *ws = worker_new(default_ctx);
    for (size_t i = 0; i < sizeof SAMPLES / sizeof SAMPLES[0]; i++) {
        const struct sample *s = &SAMPLES[i];
        const char *at = strstr(s->text, s->match);
        assert_non_null(at);
        long long start = at - s->text, end = start + (long long)strlen(s->match);
        json_t *res = scan_text(default_ctx, ws, s->text, strlen(s->text));
        assert_int_equal(json_integer_value(json_object_get(res, "bytes")), strlen(s->text));
        assert_null(json_object_get(res, "truncated"));
        if (count_match(res, s->rule, start, end) != 1) {
            char *dump = json_dumps(res, JSON_COMPACT);
            fail_msg("%s: want [%lld, %lld) in \"%s\"; got %s", s->rule, start, end,
                     s->text, dump);
        }
        /* One secret, one match of its rule: extensions are folded. */
        assert_int_equal(count_rule(res, s->rule), 1);
        json_decref(res);
    }
    KIND_SCAN.worker_fini(default_ctx, ws);
}

static void
match_clean_text(void **state)
{
    (void)state;
    static const char clean[] =
        "warmpool runs CPU-heavy tasks with a preloaded context.\n"
        "To reset your password, open Settings > Account and follow the link.\n"
        "const token_count = tokens.length; // 42 tokens\n"
        "SELECT id, kind FROM tasks WHERE state = 'pending' ORDER BY priority DESC;\n"
        "The AWS region is eu-west-1; see https://docs.example.com/setup#keys.\n"
        "password_hint = get_hint(user)\n"
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    void *ws = worker_new(default_ctx);
    json_t *res = scan_text(default_ctx, ws, clean, strlen(clean));
    if (json_array_size(json_object_get(res, "matches")) != 0) {
        char *dump = json_dumps(res, JSON_COMPACT);
        fail_msg("clean text matched: %s", dump);
    }
    json_decref(res);
    res = scan_text(default_ctx, ws, "", 0);    /* empty input */
    assert_int_equal(json_integer_value(json_object_get(res, "bytes")), 0);
    assert_int_equal(json_array_size(json_object_get(res, "matches")), 0);
    json_decref(res);
    KIND_SCAN.worker_fini(default_ctx, ws);
}

static void
match_base64_same(void **state)
{
    (void)state;
    char text[8192] = "";
    for (size_t i = 0; i < sizeof SAMPLES / sizeof SAMPLES[0]; i++) {
        strcat(text, SAMPLES[i].text);
        strcat(text, "\n");
    }
    size_t len = strlen(text);
    void *ws = worker_new(default_ctx);
    json_t *a = scan_text(default_ctx, ws, text, len);
    for (size_t cut = 0; cut < 3; cut++) {      /* 0, 1 and 2 bytes of padding */
        char *b64 = b64_encode(text, len - cut);
        json_t *input = json_pack("{s:s}", "base64", b64);
        struct wp_task_error err = {0};
        json_t *b = KIND_SCAN.run(default_ctx, ws, input, &err);
        assert_non_null(b);
        assert_int_equal(json_integer_value(json_object_get(b, "bytes")), len - cut);
        if (cut == 0)
            assert_true(json_equal(a, b));
        json_decref(b);
        json_decref(input);
        free(b64);
    }
    assert_true(json_array_size(json_object_get(a, "matches")) >=
                sizeof SAMPLES / sizeof SAMPLES[0]);
    json_decref(a);
    KIND_SCAN.worker_fini(default_ctx, ws);
}

/* A rule Vectorscan cannot compile with SOM reports "start": null; others have it. */
static void
match_without_som(void **state)
{
    (void)state;
    void *ctx = NULL;
    size_t bytes;
    char err[512];
    static const char rules[] =
        "nosom\t\"auths\"\\s*:\\s*\\{[^}]{0,300}\"auth\"\\s*:\\s*\"[A-Za-z0-9+/]{8,}={0,2}\"\n"
        "lit\tneedle\n";
    if (load_text(rules, &ctx, &bytes, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    static const char text[] =
        "{\"auths\": {\"registry.example\": {\"auth\": \"d2FybXBvb2w6dGVzdA==\"}}} needle";
    void *ws = worker_new(ctx);
    json_t *res = scan_text(ctx, ws, text, strlen(text));
    const char *end = strstr(text, "==\"") + 3;
    assert_true(count_match(res, "nosom", -1, end - text) >= 1);
    assert_int_equal(count_match(res, "lit", (long long)(strstr(text, "needle") - text),
                                 (long long)strlen(text)), 1);
    json_decref(res);
    KIND_SCAN.worker_fini(ctx, ws);
    KIND_SCAN.unload(ctx);
}

static void
match_cap(void **state)
{
    (void)state;
    void *ctx = NULL;
    size_t bytes;
    char err[512];
    if (load_text("x\tx\n", &ctx, &bytes, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    void *ws = worker_new(ctx);
    size_t n = SCAN_MAX_MATCHES + 500;
    char *text = malloc(n);
    assert_non_null(text);
    memset(text, 'x', n);
    json_t *res = scan_text(ctx, ws, text, n);
    json_t *list = json_object_get(res, "matches");
    assert_int_equal(json_array_size(list), SCAN_MAX_MATCHES);
    assert_true(json_is_true(json_object_get(res, "truncated")));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 9999), "end")),
                     10000);
    json_decref(res);
    res = scan_text(ctx, ws, text, SCAN_MAX_MATCHES);      /* exactly the cap: not cut */
    assert_int_equal(json_array_size(json_object_get(res, "matches")), SCAN_MAX_MATCHES);
    assert_null(json_object_get(res, "truncated"));
    json_decref(res);
    free(text);
    KIND_SCAN.worker_fini(ctx, ws);
    KIND_SCAN.unload(ctx);
}

/* ---- Validation ---------------------------------------------------------------- */

static void
expect_refused(const char *json, const char *want)
{
    json_t *input = json_loads(json, 0, NULL);
    assert_non_null(input);
    char err[256] = "";
    assert_int_not_equal(KIND_SCAN.validate(default_ctx, input, err, sizeof err), 0);
    if (strstr(err, want) == NULL)
        fail_msg("%s: error \"%s\" lacks \"%s\"", json, err, want);
    struct wp_task_error terr = {0};            /* run() refuses it the same way */
    assert_null(KIND_SCAN.run(default_ctx, NULL, input, &terr));
    assert_string_equal(terr.code, "invalid_input");
    assert_int_equal(terr.retryable, 0);
    json_decref(input);
}

static void
validate_inputs(void **state)
{
    (void)state;
    expect_refused("[\"text\"]", "object");
    expect_refused("{}", "missing \"text\"");
    expect_refused("{\"text\": \"a\", \"base64\": \"YQ==\"}", "only one of \"text\" and \"base64\"");
    expect_refused("{\"text\": 5}", "\"text\" must be a string");
    expect_refused("{\"base64\": [1]}", "\"base64\" must be a string");
    expect_refused("{\"base64\": null}", "\"base64\" must be a string");
    expect_refused("{\"base64\": \"abc\"}", "\"base64\" is not valid base64");
    expect_refused("{\"base64\": \"ab$=\"}", "\"base64\" is not valid base64: unexpected character at offset 2");
    expect_refused("{\"base64\": \"YQ==YQ==\"}", "offset 2");
    expect_refused("{\"base64\": \"a===\"}", "\"base64\"");
    expect_refused("{\"base64\": \"YWJj\\nZGVm\"}", "\"base64\"");
    expect_refused("{\"text\": \"a\", \"lang\": \"en\"}", "unknown field \"lang\"");

    static const char *ok[] = {"{\"text\": \"\"}", "{\"text\": \"abc\"}",
                               "{\"base64\": \"\"}", "{\"base64\": \"YQ==\"}",
                               "{\"base64\": \"YWI=\"}", "{\"base64\": \"YWJj+/9A\"}"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        json_t *input = json_loads(ok[i], 0, NULL);
        char err[256] = "";
        if (KIND_SCAN.validate(default_ctx, input, err, sizeof err) != 0)
            fail_msg("%s refused: %s", ok[i], err);
        json_decref(input);
    }
}

/* ---- Life cycle and scale ------------------------------------------------------ */

/* What a worker's life does, twice over; run under valgrind by unit.valgrind.scan. */
static void
cycle(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        void *ctx = NULL, *ws = NULL;
        size_t bytes = 0;
        char err[512];
        if (KIND_SCAN.load(NULL, &ctx, &bytes, err, sizeof err) != 0)
            fail_msg("load: %s", err);
        ws = worker_new(ctx);
        for (size_t i = 0; i < 4; i++) {
            json_t *res = scan_text(ctx, ws, SAMPLES[i].text, strlen(SAMPLES[i].text));
            assert_true(count_rule(res, SAMPLES[i].rule) == 1);
            json_decref(res);
        }
        json_t *input = json_pack("{s:s}", "base64", "Z2hwXw==");
        struct wp_task_error terr;
        json_t *res = KIND_SCAN.run(ctx, ws, input, &terr);
        assert_non_null(res);
        json_decref(res);
        json_decref(input);
        KIND_SCAN.worker_fini(ctx, ws);
        KIND_SCAN.unload(ctx);
    }
}

static void
load_many_literals(void **state)
{
    (void)state;
    size_t n = 20000, cap = SCAN_DEFAULT_RULES_LEN + n * 64;
    char *text = malloc(cap), *p = text;
    assert_non_null(text);
    memcpy(p, SCAN_DEFAULT_RULES, SCAN_DEFAULT_RULES_LEN);
    p += SCAN_DEFAULT_RULES_LEN;
    p += sprintf(p, "\n# 20,000 indicators\n");
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    char lit[3][33];
    for (size_t i = 0; i < n; i++) {
        char hex[33];
        for (int k = 0; k < 2; k++) {          /* xorshift64: fixed, repeatable */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            snprintf(hex + 16 * k, 17, "%016llx", (unsigned long long)x);
        }
        if (i == 0 || i == 12345 || i == n - 1)
            memcpy(lit[i == 0 ? 0 : i == 12345 ? 1 : 2], hex, 33);
        p += sprintf(p, "ioc-%05zu\t%s\n", i, hex);
    }
    char *path = write_temp(text, (size_t)(p - text));
    free(text);

    void *ctx = NULL;
    size_t bytes = 0;
    char err[512];
    double t0 = now_ms();
    int rc = KIND_SCAN.load(path, &ctx, &bytes, err, sizeof err);
    double ms = now_ms() - t0;
    unlink(path);
    free(path);
    if (rc != 0)
        fail_msg("load: %s", err);
    print_message("default + %zu literals: load %.1f ms, ctx_bytes %zu\n", n, ms, bytes);
    assert_true(ms < 60000);

    char sample[256];
    int len = snprintf(sample, sizeof sample, "seen %s then %s and %s.", lit[0], lit[1],
                       lit[2]);
    void *ws = worker_new(ctx);
    json_t *res = scan_text(ctx, ws, sample, (size_t)len);
    assert_int_equal(count_match(res, "ioc-00000", 5, 37), 1);
    assert_int_equal(count_match(res, "ioc-12345", 43, 75), 1);
    assert_int_equal(count_match(res, "ioc-19999", 80, 112), 1);
    json_decref(res);
    KIND_SCAN.worker_fini(ctx, ws);
    KIND_SCAN.unload(ctx);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest cycle_only[] = {
        cmocka_unit_test(cycle),
    };
    const struct CMUnitTest parse[] = {
        cmocka_unit_test(parse_ok),
        cmocka_unit_test(parse_errors),
        cmocka_unit_test(parse_large),
        cmocka_unit_test(load_default),
        cmocka_unit_test(load_errors),
        cmocka_unit_test(match_without_som),
        cmocka_unit_test(match_cap),
        cmocka_unit_test(cycle),
        cmocka_unit_test(load_many_literals),
    };
    const struct CMUnitTest with_default[] = {
        cmocka_unit_test(match_samples),
        cmocka_unit_test(match_clean_text),
        cmocka_unit_test(match_base64_same),
        cmocka_unit_test(validate_inputs),
    };
    if (argc > 1 && strcmp(argv[1], "cycle") == 0)
        return cmocka_run_group_tests_name("scan_cycle", cycle_only, NULL, NULL);
    int failed = cmocka_run_group_tests_name("scan", parse, NULL, NULL);
    failed += cmocka_run_group_tests_name("scan_default_rules", with_default, setup_default,
                                          teardown_default);
    return failed != 0;
}
