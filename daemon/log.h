/* log.h — wasockd's stderr logging: levels, journald priorities, rate limits.
 *
 * Logs go to stderr, one line per message; under systemd, journald adds the
 * metadata and the line starts with a "<N>" priority prefix it understands.
 * Messages about things a client controls (garbage frames, refused peers)
 * go through a log_ratelimit so a hostile client cannot flood the log.
 */
#ifndef WASOCKD_LOG_H
#define WASOCKD_LOG_H

#include <stdbool.h>
#include <stdint.h>

/* Ordered by verbosity: a message is written when its level is <= the
 * configured level. */
typedef enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
} log_level;

#define LOG_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))

/* Reads the environment once (JOURNAL_STREAM) to choose the line format.
 * Call early in main; logging works without it (plain format). */
void log_init(void);

void log_set_level(log_level level);
log_level log_get_level(void);

/* "error", "warn", "info", "debug" -> 0 and *out; else -EINVAL. */
int log_level_parse(const char *name, log_level *out);

/* True when a message of this level would be written: lets callers skip
 * formatting work (address strings) for debug messages. */
bool log_enabled(log_level level);

void log_write(log_level level, const char *fmt, ...) LOG_PRINTF(2, 3);

/* Written whatever the configured level (startup banner, shutdown). */
void log_always(const char *fmt, ...) LOG_PRINTF(1, 2);

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* A token bucket per kind of message: at most `burst` messages per
 * `interval_ms`; the rest are counted and summarised ("N similar messages
 * suppressed") by the first message of a later interval. Define one static
 * instance per call site or per kind with LOG_RATELIMIT_INIT. */
typedef struct log_ratelimit {
    uint32_t interval_ms;
    uint32_t burst;
    uint64_t window_start_ms;
    uint32_t printed;
    uint32_t suppressed;
} log_ratelimit;

#define LOG_RATELIMIT_INIT(interval_ms, burst)                                                     \
    { (interval_ms), (burst), 0, 0, 0 }

/* Writes the message unless the limit is reached (then it is counted). */
void log_write_ratelimited(log_ratelimit *rl, log_level level, const char *fmt, ...)
    LOG_PRINTF(3, 4);

#endif
