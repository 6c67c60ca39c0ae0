/* log.c — wasockd's stderr logging.
 *
 * Trusts its callers for the format strings; message arguments may contain
 * text a client chose (tenant names, error details), so control characters
 * are replaced before the line is written: one message is always one line,
 * and a client cannot forge log lines or send terminal escapes.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longest message line; longer messages are cut. The longest messages we
 * write are policy diagnostics of one line each, far below this. */
#define LOG_LINE_MAX 1024

static log_level current_level = LOG_LEVEL_INFO;
static bool stderr_is_journal;

/* systemd tells a service its stderr is the journal by setting
 * JOURNAL_STREAM=<device>:<inode> of that stream; only then the "<N>"
 * priority prefix is wanted (a terminal would show it literally). */
static bool detect_journal_stream(void) {
    const char *env = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    char tail;

    if (env == NULL || fstat(STDERR_FILENO, &st) < 0) {
        return false;
    }
    if (sscanf(env, "%llu:%llu%c", &dev, &ino, &tail) != 2) {
        return false;
    }
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(void) {
    stderr_is_journal = detect_journal_stream();
}

void log_set_level(log_level level) {
    current_level = level;
}

log_level log_get_level(void) {
    return current_level;
}

int log_level_parse(const char *name, log_level *out) {
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool log_enabled(log_level level) {
    return level <= current_level;
}

/* syslog priorities journald understands in a "<N>" prefix. */
static int journal_priority(log_level level) {
    switch (level) {
    case LOG_LEVEL_ERROR:
        return 3;
    case LOG_LEVEL_WARN:
        return 4;
    case LOG_LEVEL_INFO:
        return 6;
    case LOG_LEVEL_DEBUG:
        return 7;
    }
    return 6;
}

static const char *level_tag(log_level level) {
    switch (level) {
    case LOG_LEVEL_ERROR:
        return "error: ";
    case LOG_LEVEL_WARN:
        return "warning: ";
    case LOG_LEVEL_INFO:
        return "";
    case LOG_LEVEL_DEBUG:
        return "debug: ";
    }
    return "";
}

static void write_line(log_level level, const char *fmt, va_list ap) LOG_PRINTF(2, 0);

static void write_line(log_level level, const char *fmt, va_list ap) {
    char msg[LOG_LINE_MAX];
    int saved_errno = errno;

    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0) {
        snprintf(msg, sizeof(msg), "(unformattable log message)");
    }
    for (char *p = msg; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) {
            *p = '?';
        }
    }
    if (stderr_is_journal) {
        fprintf(stderr, "<%d>%s\n", journal_priority(level), msg);
    } else {
        fprintf(stderr, "%s%s\n", level_tag(level), msg);
    }
    fflush(stderr);
    errno = saved_errno;
}

void log_write(log_level level, const char *fmt, ...) {
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

void log_always(const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    write_line(LOG_LEVEL_INFO, fmt, ap);
    va_end(ap);
}

static uint64_t monotonic_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void log_write_ratelimited(log_ratelimit *rl, log_level level, const char *fmt, ...) {
    va_list ap;
    uint64_t now;

    if (!log_enabled(level)) {
        return;
    }
    now = monotonic_ms();
    if (rl->window_start_ms == 0 || now - rl->window_start_ms >= rl->interval_ms) {
        if (rl->suppressed > 0) {
            log_write(level, "%u similar messages suppressed", (unsigned)rl->suppressed);
        }
        rl->window_start_ms = now == 0 ? 1 : now;
        rl->printed = 0;
        rl->suppressed = 0;
    }
    if (rl->printed >= rl->burst) {
        rl->suppressed++;
        return;
    }
    rl->printed++;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}
