/* bench.h — shared pieces of wasock-bench: the run configuration, the result
 * store (groups of measured series, comparisons between them, targets), the
 * daemon it starts, timing, and plain loopback peers.
 *
 * A row of the benchmark is one function (bench_row_fn) that opens a group,
 * adds series (one per thing measured: "through wasockd", "direct", ...),
 * records one sample per series per repetition, and declares comparisons
 * (series A / series B, or A alone against an absolute target). The report
 * (bench-report.c) turns that into the table and the JSON/TSV files, so a
 * new row (UDP, name lookup) is one new function and one catalogue entry.
 */
#ifndef WASOCK_BENCH_H
#define WASOCK_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <wasock/wasock.h>

/* ------------------------------------------------------------------ limits */

/* Repetitions of every figure: enough for a median that one scheduling
 * hiccup cannot move, few enough for the 10-minute budget. */
#define BENCH_REPS_FULL  5
#define BENCH_REPS_QUICK 3
/* Most repetitions --reps accepts (sample arrays are this long). */
#define BENCH_REPS_MAX 15

/* Groups (rows of the catalogue may open several), series per group and
 * comparisons per group: fixed so the store needs no allocation. */
#define BENCH_MAX_GROUPS      24
#define BENCH_MAX_SERIES      8
#define BENCH_MAX_COMPARISONS 8
#define BENCH_MAX_NOTES       4
#define BENCH_TEXT_MAX        160

/* Longest any set-up step on loopback or the local Unix socket may take
 * (connect, accept, a daemon reply) before it counts as an error: far above
 * what a working system needs, short enough to keep a hang bounded. */
#define BENCH_WAIT_MS 10000

/* Iterations of a tight timed loop between two clock readings: a reading
 * costs tens of nanoseconds, so this keeps it far below 1% of the loop. */
#define BENCH_CLOCK_EVERY 64

/* Pause between two checks of something that gives no notification (a
 * peer thread's counter, socat starting to listen). */
#define BENCH_RETRY_MS 1

/* Longest an echo thread of a peer serves one connection: far above one
 * sample, so only a hang ends it this way. */
#define BENCH_ECHO_LIFETIME_MS 60000

/* Room for the temporary directory and the files in it. */
#define BENCH_PATH_MAX 256

/* ------------------------------------------------------------------ config */

typedef struct bench_config {
    bool quick;          /* smaller counts, fewer repetitions */
    unsigned reps;       /* repetitions of every figure */
    const char *wasockd; /* path of the daemon to start */
    const char *socat;   /* path of socat, or NULL when not found */
    bool verbose;        /* progress lines on stderr */
} bench_config;

extern bench_config bench_cfg;

/* Time budget of one timed loop (one sample), in milliseconds: every loop
 * stops at this time or at its count, whichever comes first. */
int bench_loop_ms(void);

/* full or quick, picked by bench_cfg.quick. */
#define BENCH_PICK(full, quick_value) (bench_cfg.quick ? (quick_value) : (full))

/* ------------------------------------------------------------------ store */

typedef enum bench_better { BENCH_HIGHER_IS_BETTER, BENCH_LOWER_IS_BETTER } bench_better;

typedef enum bench_target_kind {
    BENCH_TARGET_NONE,
    BENCH_TARGET_AT_MOST,  /* the compared value (ratio or absolute) <= bound */
    BENCH_TARGET_AT_LEAST, /* >= bound */
} bench_target_kind;

typedef struct bench_target {
    bench_target_kind kind;
    double bound;
    const char *text; /* as the issue states it, e.g. "<= 1.5x" */
} bench_target;

typedef struct bench_series bench_series;
typedef struct bench_group bench_group;

/* Opens a group (one figure of the table). key: short identifier for the
 * machine-readable files; title: what a person reads; unit: of every series
 * in it. Returns NULL when the store is full (a programming error, reported
 * on stderr); every other call accepts a NULL group and does nothing. */
bench_group *bench_group_open(const char *key, const char *title, const char *unit,
                              bench_better better);

/* Adds a line of explanation under the group's title (what was measured,
 * caps, caveats); printf format. */
void bench_group_note(bench_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records that the group failed; the tool then exits with status 1. The
 * samples taken so far are still reported. printf format. */
void bench_group_error(bench_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Adds a series (one measured thing); key unique in the group. */
bench_series *bench_series_add(bench_group *g, const char *key, const char *label);

/* Records one sample (one repetition) of a series. */
void bench_series_sample(bench_series *s, double value);

/* Marks a series as skipped with a reason (e.g. socat missing); it is
 * printed with the reason instead of figures. */
void bench_series_skip(bench_series *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Compares the medians of series a and b (b NULL: a's median itself) and
 * checks the target on that ratio (or value). */
void bench_compare(bench_group *g, const bench_series *a, const bench_series *b,
                   bench_target target);

/* The catalogue entries with no measurement yet: listed at the end. */
void bench_not_measured(const char *what);

/* True when any group recorded an error. */
bool bench_any_error(void);

/* Prints the table to stdout. */
void bench_report_print(void);

/* Write the figures as JSON / as TSV (one line per series and per
 * comparison) to path. 0 or -errno. */
int bench_report_write_json(const char *path);
int bench_report_write_tsv(const char *path);

/* Header facts for the table and the JSON file. */
void bench_report_set_header(const char *wasockd, unsigned reps, bool quick);

/* ------------------------------------------------------------------ time */

/* Monotonic time in nanoseconds / seconds. */
int64_t bench_now_ns(void);
double bench_now_s(void);
void bench_sleep_ms(int ms);

/* Progress on stderr when --verbose. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------ daemon */

/* A wasockd started by bench_daemon_start. */
typedef struct bench_daemon {
    pid_t pid;                        /* 0 when not running */
    char dir[BENCH_PATH_MAX];         /* the mkdtemp directory */
    char socket_path[BENCH_PATH_MAX]; /* its control socket */
    char log_path[BENCH_PATH_MAX];    /* its stderr */
    char policy_path[BENCH_PATH_MAX]; /* its policy file, "" for the built-in default */
} bench_daemon;

/* Most extra command-line arguments bench_daemon_start_with passes. */
#define BENCH_DAEMON_EXTRA_ARGS 4

/* How a row wants its own daemon started. */
typedef struct bench_daemon_opts {
    const char *policy_yaml; /* written to a file and passed with --policy; NULL: none */
    const char *extra_args[BENCH_DAEMON_EXTRA_ARGS + 1]; /* NULL-terminated */
} bench_daemon_opts;

/* Starts bench_cfg.wasockd with the built-in default policy on a socket in
 * a new temporary directory and waits (bounded) until it accepts. 0 or
 * -errno; on failure nothing is left running and the log is printed. The
 * daemon dies with this process (PR_SET_PDEATHSIG). */
int bench_daemon_start(bench_daemon *d);

/* The same with a policy and extra arguments (o may be NULL). */
int bench_daemon_start_with(bench_daemon *d, const bench_daemon_opts *o);

/* SIGTERM, a bounded wait, then SIGKILL; removes the directory. Returns 0
 * when the daemon exited by itself or from the SIGTERM, -ETIMEDOUT when it
 * had to be killed, -ECHILD when it had died before (log printed). */
int bench_daemon_stop(bench_daemon *d);

/* Kills every daemon still running and removes its files, using only
 * async-signal-safe calls: for the run's watchdog, which then exits. */
void bench_daemon_emergency_stop(void);

/* The daemon's resident set (VmRSS) in bytes, or -errno. */
long long bench_daemon_rss(const bench_daemon *d);

/* Prints the last lines of the daemon's log to stderr. */
void bench_daemon_print_log(const bench_daemon *d);

/* Opens a 0.2 client of d; the client is the caller's (wasock_client_close).
 * WASOCK_OK or the libwasock error; the daemon's reason goes to stderr. */
wasock_err bench_client_open(const bench_daemon *d, wasock_client **out);

/* Waits until wasock_tcp_ready(s), dispatching the client's frames; false
 * after timeout_ms or when the daemon went away. */
bool bench_wait_ready(wasock_client *c, wasock_tcp *s, int timeout_ms);

/* Connects s to 127.0.0.1:port in the 0.2 shape (start, wait, finish);
 * the stream fds stay the socket's. WASOCK_OK or the first error. */
wasock_err bench_tcp_connect(wasock_client *c, wasock_tcp *s, uint16_t port, int *input_fd,
                             int *output_fd);

/* ------------------------------------------------------------------ loopback */

/* A blocking, close-on-exec TCP listener on 127.0.0.1, port chosen by the
 * kernel (written to *port). The fd is the caller's; -errno on failure. */
int bench_listen_loopback(uint16_t *port, int backlog);

/* A blocking, close-on-exec TCP socket connected to 127.0.0.1:port; the fd
 * is the caller's; -errno on failure. */
int bench_connect_loopback(uint16_t port);

/* Sets or clears O_NONBLOCK. 0 or -errno. */
int bench_set_nonblocking(int fd, bool on);

/* Waits for `events` (POLLIN, POLLOUT) on fd until the deadline
 * (bench_now_ns scale): 0, or -ETIMEDOUT / -errno. */
int bench_wait_fd(int fd, short events, int64_t deadline_ns);

/* Writes len bytes to fd (blocking or not: waits with poll) before the
 * deadline (bench_now_ns scale). 0 or -errno (-ETIMEDOUT). */
int bench_write_all(int fd, const void *buf, size_t len, int64_t deadline_ns);

/* Reads exactly len bytes the same way; -ENODATA on early EOF. */
int bench_read_exact(int fd, void *buf, size_t len, int64_t deadline_ns);

/* Raises RLIMIT_NOFILE (soft and, if allowed, hard) to at least `want`.
 * Returns the soft limit now in force. */
long bench_raise_fd_limit(long want);

#endif
