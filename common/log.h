/* log.h -- one-line log records on stderr, shared by every process of warmpool.
 *
 * Two formats, chosen once at start (--log-format):
 *   text: "2026-01-02T03:04:05.678Z warn  [worker 1234] message key=value key2=\"a b\""
 *   json: {"ts":"2026-01-02T03:04:05.678Z","level":"warn","role":"worker","pid":1234,
 *          "msg":"message","key":"value","key2":"a b"}      (one object per line)
 * The role, level and format are process-wide, set once after fork. Safe to call from
 * several threads (one write(2) per record). A record longer than LOG_LINE_MAX is cut,
 * and a cut JSON record is still one valid JSON object.
 *
 * What never goes into a record: a task's input or result, an API token, a request
 * body. Fields are named by the code that logs them (task_id, kind, ...), never taken
 * from a request. */
#ifndef WP_LOG_H
#define WP_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

#define LOG_LINE_MAX 4096

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_set_format(enum log_format format);
/* role is a short static string ("supervisor", "http", "worker"), not copied */
void log_set_role(const char *role);
/* parse "error|warn|info|debug"; 0 on success, -1 if unknown */
int log_level_parse(const char *text, enum log_level *out);
/* parse "text|json"; 0 on success, -1 if unknown */
int log_format_parse(const char *text, enum log_format *out);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A named value of a structured record. Build them with LOG_STR, LOG_INT, LOG_NUM. */
enum log_field_type { LOG_F_STR, LOG_F_INT, LOG_F_NUM };
struct log_field {
    const char *key;            /* a static name: [a-z_]+ */
    enum log_field_type type;
    const char *s;              /* LOG_F_STR; NULL is logged as null */
    long long i;                /* LOG_F_INT */
    double d;                   /* LOG_F_NUM, logged with 3 decimals */
};
#define LOG_STR(k, v) ((struct log_field){.key = (k), .type = LOG_F_STR, .s = (v)})
#define LOG_INT(k, v) ((struct log_field){.key = (k), .type = LOG_F_INT, .i = (long long)(v)})
#define LOG_NUM(k, v) ((struct log_field){.key = (k), .type = LOG_F_NUM, .d = (double)(v)})

/* A record with a fixed message and n fields. */
void log_fields(enum log_level level, const char *msg, const struct log_field *fields,
                size_t n);
/* log_event(LOG_DEBUG, "task started", LOG_INT("task_id", id), LOG_STR("kind", k));
 * the fields are not even built when the level is off. */
#define log_event(level, msg, ...)                                                     \
    do {                                                                               \
        if (log_get_level() >= (level)) {                                              \
            const struct log_field log_f_[] = {__VA_ARGS__};                           \
            log_fields((level), (msg), log_f_, sizeof log_f_ / sizeof log_f_[0]);      \
        }                                                                              \
    } while (0)

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_get_level() >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
