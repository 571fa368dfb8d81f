/* log.h -- one-line log records on stderr, shared by every process of warmpool.
 *
 * Each record: "2026-01-02T03:04:05.678Z warn  [worker 1234] message". The role and
 * level are process-wide, set once after fork. Safe to call from several threads
 * (one write(2) per record). */
#ifndef WP_LOG_H
#define WP_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* role is a short static string ("supervisor", "http", "worker"), not copied */
void log_set_role(const char *role);
/* parse "error|warn|info|debug"; 0 on success, -1 if unknown */
int log_level_parse(const char *text, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_get_level() >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
