/* harness.h — shared helpers of the wasockd integration tests.
 *
 * Every integration test starts the real wasockd on a Unix socket in a
 * fresh temporary directory, drives it through libwasock, and stops it
 * again. The helpers here start and stop the daemon, open clients, wait for
 * readiness with deadlines, move bytes through stream descriptors with
 * deadlines, and provide plain-socket loopback peers. Every wait is bounded;
 * on any failure the daemon's stderr is printed so the cause is visible in
 * the test log.
 *
 * Helpers whose name ends in a verb and that return void assert (ck_assert)
 * on failure: they are for test bodies, where a failed set-up step is a
 * failed test.
 */
#ifndef WASOCK_ITEST_HARNESS_H
#define WASOCK_ITEST_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>
#include <wasock/wasock.h>

/* The bound for anything that happens on loopback or on the local Unix
 * socket: far longer than any correct implementation needs (also under
 * ASan on a loaded 2-core machine), short enough that a hang fails the
 * test long before Check's own timeout. */
#define ITEST_WAIT_MS 5000

/* Check's per-test timeout for the integration test cases (seconds). It only
 * catches a test that is stuck despite the bounded waits above. */
#define ITEST_TCASE_TIMEOUT_S 60

/* Room for the temporary directory and the files in it. */
#define ITEST_PATH_MAX 256

/* A running wasockd started by itest_daemon_start. */
typedef struct itest_daemon {
    pid_t pid;                         /* 0 when not running */
    char dir[ITEST_PATH_MAX];          /* the mkdtemp directory holding the files below */
    char socket_path[ITEST_PATH_MAX];  /* the daemon's control socket */
    char log_path[ITEST_PATH_MAX];     /* the daemon's stderr */
    char policy_path[ITEST_PATH_MAX];  /* the policy file, "" when started without one */
    char control_path[ITEST_PATH_MAX]; /* the control socket (admin commands, agents) */
    char audit_path[ITEST_PATH_MAX];   /* where a policy's default audit file goes */
} itest_daemon;

/* ---------------------------------------------------------------- daemon */

/* Starts $WASOCKD with --socket in a new temporary directory and, when
 * policy_yaml is not NULL, --policy with a file holding that text. Waits
 * (bounded) until the socket accepts connections. The daemon is killed by
 * the kernel if the test process dies (PR_SET_PDEATHSIG), and stopped by an
 * atexit handler if the test fails before itest_daemon_stop. Asserts on
 * failure (printing the daemon's log). $ITEST_DAEMON_LOG_LEVEL, when set,
 * is passed as --log-level (a test that checks debug lines sets it), and
 * $ITEST_DAEMON_BUSY_POLL as --busy-poll (meson runs some tests with 0). */
void itest_daemon_start(itest_daemon *d, const char *policy_yaml);

/* Starts $WASOCKD as a service manager would with socket activation: the
 * listening socket at d->socket_path is made here and passed as descriptor
 * 3 (LISTEN_FDS, LISTEN_PID), and NOTIFY_SOCKET names a datagram socket
 * whose descriptor is returned (the caller's: read the daemon's READY=1
 * from it, then close it). Does not wait for the daemon. */
int itest_daemon_start_activated(itest_daemon *d, const char *policy_yaml);

/* Starts a daemon but returns false instead of asserting when it does not
 * come up (e.g. it refuses the policy file); the log stays readable with
 * itest_daemon_print_log until itest_daemon_discard. */
bool itest_daemon_try_start(itest_daemon *d, const char *policy_yaml);

/* Starts a daemon (default policy) whose control socket is socket_path,
 * e.g. another daemon's: waits until that path accepts connections (only
 * meaningful when nothing else answers there). False if it exits first. */
bool itest_daemon_try_start_at(itest_daemon *d, const char *socket_path);

/* Launches a daemon (default policy) on socket_path without waiting. */
void itest_daemon_spawn_at(itest_daemon *d, const char *socket_path);

/* Reaps the daemon if it exits within timeout_ms: true with *status (a
 * waitpid status). */
bool itest_daemon_wait_exit(itest_daemon *d, int timeout_ms, int *status);

/* Stops the daemon with SIGTERM, waits for it (bounded; SIGKILL after that),
 * and removes the temporary directory. Asserts that the daemon exited
 * normally with status 0 or died of that SIGTERM, and prints its log if not.
 * Safe to call for a daemon that already exited (its status is checked). */
void itest_daemon_stop(itest_daemon *d);

/* Kills the daemon with SIGKILL and reaps it (bounded), leaving its
 * directory in place (for "daemon gone" tests). */
void itest_daemon_kill(itest_daemon *d);

/* Removes the temporary directory of a daemon that is no longer running. */
void itest_daemon_discard(itest_daemon *d);

/* Copies the daemon's stderr so far to the test's stderr. */
void itest_daemon_print_log(const itest_daemon *d);

/* True when the daemon's log contains `needle`. */
bool itest_daemon_log_contains(const itest_daemon *d, const char *needle);

/* True while the daemon process has not exited (reaps it if it has). */
bool itest_daemon_alive(itest_daemon *d);

/* Number of open descriptors of the daemon (/proc/<pid>/fd), or -1. Only
 * differences are meaningful: sanitizer runtimes hold descriptors too. */
int itest_daemon_fd_count(const itest_daemon *d);

/* The daemon's descriptor count once it has stopped changing (two equal
 * readings in a row), bounded by ITEST_WAIT_MS. */
int itest_daemon_settled_fd_count(const itest_daemon *d);

/* Waits (bounded by timeout_ms) until the daemon has at most `limit` open
 * descriptors; returns the last count seen. */
int itest_daemon_wait_fd_count(const itest_daemon *d, int limit, int timeout_ms);

/* The fixture most tests use: one daemon per test with the built-in
 * default policy (tenant "default", loopback only), reachable through
 * itest_fixture_daemon(). Use with tcase_add_checked_fixture. */
void itest_fixture_setup(void);
void itest_fixture_teardown(void);
itest_daemon *itest_fixture_daemon(void);

/* The variants of a loop test over both shapes and both families:
 * _i = 0..ITEST_VARIANTS-1 gives (0.2, v4), (0.3, v4), (0.2, v6), (0.3, v6).
 * Returns false (and says so on stderr) when the variant needs IPv6 and the
 * host has none: the test then passes without running. */
#define ITEST_VARIANTS 4
bool itest_variant(int i, int *wasi_version, wasock_family *f);

/* Applies the settings every integration TCase needs (timeout). */
void itest_tcase_defaults(TCase *tc);

/* Runs the suite in fork mode and returns the process exit status. */
int itest_run_suite(Suite *s);

/* Asserts that a libwasock call returns `want`, naming both on failure. */
#define ITEST_EXPECT(call, want)                                                                   \
    do {                                                                                           \
        wasock_err itest_got_ = (call);                                                            \
        wasock_err itest_want_ = (want);                                                           \
        ck_assert_msg(itest_got_ == itest_want_, "%s: got %s, want %s", #call,                     \
                      wasock_err_name(itest_got_), wasock_err_name(itest_want_));                  \
    } while (0)

/* ---------------------------------------------------------------- clients */

/* Opens a client of daemon d in WASI shape `wasi_version` (2 or 3) for
 * `tenant` (NULL: the default). Returns the libwasock result; on success
 * *out is the caller's (wasock_client_close). The daemon's refusal reason,
 * if any, is copied to err (err_len bytes, may be 0). */
wasock_err itest_client_try_open(const itest_daemon *d, int wasi_version, const char *tenant,
                                 char *err, size_t err_len, wasock_client **out);

/* The same, asserting success. The client is the caller's. */
wasock_client *itest_client_open(const itest_daemon *d, int wasi_version, const char *tenant);

/* ---------------------------------------------------------------- addresses */

/* True when ::1 can be bound on this host (v6 test variants skip if not). */
bool itest_have_ipv6(void);

/* 127.0.0.1:port or [::1]:port. */
wasock_addr itest_loopback(wasock_family f, uint16_t port);

/* Parses text with wasock_addr_parse, asserting success. */
wasock_addr itest_addr(const char *text);

/* True when a and b name the same address and port. */
bool itest_addr_equal(const wasock_addr *a, const wasock_addr *b);

/* True when a is the loopback address of its family. */
bool itest_addr_is_loopback(const wasock_addr *a);

/* True when a is the unspecified address of its family. */
bool itest_addr_is_unspecified(const wasock_addr *a);

/* Formats a into buf (len bytes, WASOCK_ADDR_STRLEN is enough) for
 * messages; returns buf ("?" when it does not fit). */
const char *itest_addr_text(const wasock_addr *a, char *buf, size_t len);

/* ---------------------------------------------------------------- plain peers */

/* A listening plain TCP socket on loopback, port chosen by the kernel,
 * non-blocking and close-on-exec. The fd is the caller's; *port (may be
 * NULL) receives the port. Asserts on failure. */
int itest_plain_listen(wasock_family f, uint16_t *port);

/* The same on a given loopback address text ("127.0.0.1") and port (0 for
 * any); returns -errno instead of asserting (e.g. -EADDRINUSE). */
int itest_plain_listen_at(wasock_family f, const char *ip, uint16_t port);

/* A plain TCP socket connected to loopback:port (bounded wait), set
 * non-blocking, close-on-exec. The fd is the caller's. Asserts. */
int itest_plain_connect(wasock_family f, uint16_t port);

/* Starts a non-blocking connect from local address `from_ip` (NULL: any)
 * to loopback:port and returns the fd (the caller's) without waiting, or
 * -errno. */
int itest_plain_connect_start(wasock_family f, const char *from_ip, uint16_t port);

/* Accepts one connection from the plain listener lfd, waiting at most
 * timeout_ms. Returns the new non-blocking close-on-exec fd (the caller's)
 * or -errno (-ETIMEDOUT). */
int itest_plain_accept(int lfd, int timeout_ms);

/* A loopback port with nothing listening on it (bound and released; good
 * enough on a test host). */
uint16_t itest_closed_port(wasock_family f);

/* Closes fd with SO_LINGER 0, so the peer sees a reset. */
void itest_plain_reset(int fd);

/* The local / remote port of a plain socket. */
uint16_t itest_plain_local_port(int fd);
uint16_t itest_plain_remote_port(int fd);

/* ---------------------------------------------------------------- waiting */

/* Waits until wasock_tcp_ready(s) is true, polling the client's fd and
 * dispatching; false when timeout_ms passed first or the daemon went away. */
bool itest_wait_ready(wasock_client *c, wasock_tcp *s, int timeout_ms);

/* Dispatches whatever the daemon sent within `ms` milliseconds (used to let
 * asynchronous events arrive before checking that something did NOT
 * happen; never a timing assertion). */
void itest_pump(wasock_client *c, int ms);

/* Waits until wasock_tcp_stream_error(s) differs from OK, bounded. Returns
 * the last value. */
wasock_err itest_wait_stream_error(wasock_client *c, wasock_tcp *s, int timeout_ms);

/* ---------------------------------------------------------------- operations */

/* A connection end as a test sees it: the socket and its two stream
 * descriptors. In 0.2 the descriptors belong to the socket; in 0.3 they were
 * taken with wasock_tcp_receive/_send and belong to the test (own_fds). */
typedef struct itest_conn {
    wasock_tcp *s;
    int in;       /* WASI input stream: read from it */
    int out;      /* WASI output stream: write to it */
    bool own_fds; /* true: itest_conn_close closes in/out */
} itest_conn;

/* Bind in the client's shape: 0.2 start-bind, wait ready, finish-bind
 * (returns start-bind's error if it failed, else finish-bind's); 0.3
 * wasock_tcp_bind. */
wasock_err itest_bind(wasock_client *c, wasock_tcp *s, const wasock_addr *a);

/* Listen in the client's shape: 0.2 start-listen, wait, finish-listen;
 * 0.3 wasock_tcp_listen. */
wasock_err itest_listen(wasock_client *c, wasock_tcp *s);

/* Connect in the client's shape. On success conn (may be NULL) gets the
 * socket and its streams: 0.2 from finish-connect, 0.3 from
 * wasock_tcp_receive/_send. */
wasock_err itest_connect(wasock_client *c, wasock_tcp *s, const wasock_addr *remote,
                         itest_conn *conn);

/* Creates a socket of family f (asserts). The socket is the caller's. */
wasock_tcp *itest_socket(wasock_client *c, wasock_family f);

/* Creates a socket of family f, binds it to loopback port 0 and listens.
 * Asserts. The socket is the caller's; *port receives its port. */
wasock_tcp *itest_listener(wasock_client *c, wasock_family f, uint16_t *port);

/* Creates a socket and connects it to loopback:port. Asserts. */
void itest_connect_to(wasock_client *c, wasock_family f, uint16_t port, itest_conn *conn);

/* Waits for the listener to be ready and accepts one connection, with its
 * streams taken in the client's shape. Asserts. */
void itest_accept(wasock_client *c, wasock_tcp *listener, itest_conn *conn);

/* Drops the socket and closes the descriptors the test owns. */
void itest_conn_close(itest_conn *conn);

/* ---------------------------------------------------------------- streams */

/* Writes all len bytes to the non-blocking fd within timeout_ms. Returns 0
 * or -errno (-ETIMEDOUT, -EPIPE, -EBADF, ...); a reader that is gone is
 * -EPIPE, never SIGPIPE (the daemon may close first). */
int itest_write_all(int fd, const void *buf, size_t len, int timeout_ms);

/* Reads up to len bytes, stopping early only at EOF, within timeout_ms.
 * Returns the bytes read (less than len means EOF came first) or -errno
 * (-ETIMEDOUT, -ECONNRESET, ...). */
ssize_t itest_read_exact(int fd, void *buf, size_t len, int timeout_ms);

/* Waits until a read of fd returns EOF, discarding data before it.
 * Returns the number of bytes discarded, or -errno (-ETIMEDOUT, ...). */
ssize_t itest_read_to_eof(int fd, int timeout_ms);

/* Writes a short string and checks that exactly it arrives on `to`. */
void itest_send_expect(int from, int to, const char *text);

/* One direction of a bulk transfer: `total` bytes of a pattern derived from
 * `seed` are written to write_fd and read back from read_fd, every byte
 * checked in order. */
typedef struct itest_flow {
    int write_fd, read_fd;
    size_t total;
    uint32_t seed;
    size_t written, read; /* progress, filled by itest_transfer */
    size_t first_bad;     /* offset of the first wrong byte, or SIZE_MAX */
} itest_flow;

/* Runs the flows concurrently (one poll loop) until every byte arrived or
 * timeout_ms passed. Returns 0 when all bytes arrived intact, -EIO on a
 * wrong byte (see first_bad), -ENODATA when a reader saw EOF too early,
 * -ETIMEDOUT, or -errno of a failing read/write. */
int itest_transfer(itest_flow *flows, size_t n, int timeout_ms);

/* Byte `offset` of the pattern with `seed`. */
uint8_t itest_pattern_byte(uint32_t seed, size_t offset);

/* Monotonic milliseconds. */
int64_t itest_now_ms(void);

/* ---------------------------------------------------------------- control socket */

/* Longest line of the control protocol (the daemon's CTL_LINE_MAX). */
#define ITEST_CTL_LINE_MAX 4096

/* A connection to a daemon's control socket (proto/AGENT.md): an operator
 * or a prompt agent. */
typedef struct itest_ctl {
    int fd; /* -1 when closed */
    size_t len;
    char buf[2 * ITEST_CTL_LINE_MAX + 2];
} itest_ctl;

/* Connects to d's control socket (asserts). */
void itest_ctl_open(const itest_daemon *d, itest_ctl *c);

/* Closes the connection (idempotent). */
void itest_ctl_close(itest_ctl *c);

/* Sends one line (a newline is added); asserts. */
void itest_ctl_send(itest_ctl *c, const char *line);

/* Reads one line (without its newline) within timeout_ms: true with the
 * line in `line`, false at end of file or when the time ran out. */
bool itest_ctl_read_line(itest_ctl *c, char *line, size_t len, int timeout_ms);

/* True when the daemon closed the connection within timeout_ms (lines
 * still arriving are skipped). */
bool itest_ctl_wait_closed(itest_ctl *c, int timeout_ms);

/* Sends `command` on a new connection and collects the reply: the data
 * lines (newline-separated) into out, the final line into final (both may
 * be NULL). Returns true when the final line is "ok" or "ok ...", false
 * for "error: ..." (asserts that a final line came), also when the daemon
 * refused the connection before the command could be written. */
bool itest_ctl_command(const itest_daemon *d, const char *command, char *out, size_t out_len,
                       char *final, size_t final_len);

/* The value of ` key=` in a key=value line (quoted values unquoted) into
 * out; false when absent. */
bool itest_kv(const char *line, const char *key, char *out, size_t len);

/* Makes a control connection a prompt agent ("agent" or "agent NAME"),
 * asserting "ok agent ...". Prompts pending already are skipped. */
void itest_agent_open(const itest_daemon *d, const char *name, itest_ctl *agent);

/* Waits (bounded by timeout_ms) for the next "prompt" line, skipping other
 * lines; true with its id (and the line in `line` when not NULL). */
bool itest_agent_wait_prompt(itest_ctl *agent, uint64_t *id, char *line, size_t len,
                             int timeout_ms);

/* Waits for the next line that starts with `prefix` (e.g. "withdraw 3"),
 * skipping others; true with it in `line` (may be NULL). */
bool itest_agent_wait_line(itest_ctl *agent, const char *prefix, char *line, size_t len,
                           int timeout_ms);

/* Answers prompt id with "allow|deny [SCOPE]" and asserts the daemon's
 * "answered <id> ..." acknowledgement. */
void itest_agent_answer(itest_ctl *agent, uint64_t id, const char *answer);

/* Writes `yaml` as d's policy file (the one --policy names). Asserts. */
void itest_daemon_write_policy(itest_daemon *d, const char *yaml);

/* The status line of `status` whose first word is `what` ("policy",
 * "prompts", ...) into line; asserts the command succeeded. */
void itest_daemon_status_line(const itest_daemon *d, const char *what, char *line, size_t len);

/* ---------------------------------------------------------------- tools */

/* Runs a program (argv[0] is its path) with `input` on its stdin (NULL:
 * /dev/null), its stdout and stderr together into out (cut to out_len),
 * killed after timeout_ms. Returns its exit status, 128+signal, or -1
 * when it did not end in time. */
int itest_run_tool(const char *const argv[], const char *input, char *out, size_t out_len,
                   int timeout_ms);

/* Starts a program (argv[0] is its path) with pipes: *in_fd writes to its
 * stdin, *out_fd reads its stdout and stderr (both the caller's,
 * close-on-exec). Returns its pid (asserts on failure). The program dies
 * with the test process. */
pid_t itest_spawn_tool(const char *const argv[], int *in_fd, int *out_fd);

/* Reaps a program started by itest_spawn_tool within timeout_ms (killed
 * after that): its exit status, 128+signal, or -1 when it had to be
 * killed. */
int itest_tool_wait(pid_t pid, int timeout_ms);

/* Reads from fd until `needle` is in buf or timeout_ms passed. buf holds a
 * string on entry (empty, or what earlier calls read); what is read is
 * appended (cut to len). True when the needle is there. */
bool itest_read_until(int fd, const char *needle, char *buf, size_t len, int timeout_ms);

/* The wasockctl under test ($WASOCKCTL, set by meson); asserts. */
const char *itest_wasockctl(void);

#endif
