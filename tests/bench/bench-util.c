/* bench-util.c — what every wasock-bench row needs: monotonic time, the
 * wasockd it starts and stops, libwasock clients of it, and plain loopback
 * sockets for the peers and the direct baselines.
 *
 * Trusts the daemon path from the command line or the environment, and the
 * local kernel. Every wait is bounded (BENCH_WAIT_MS or a caller's
 * deadline); the daemon dies with this process.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* Pause between two checks of something that gives no notification (the
 * daemon's socket appearing, the daemon exiting). */
#define BENCH_POLL_STEP_MS 5

/* How long the daemon gets to exit after SIGTERM before SIGKILL. */
#define BENCH_DAEMON_STOP_MS 5000

/* Last bytes of the daemon's log printed when something went wrong. */
#define BENCH_LOG_TAIL_BYTES 4096

/* Room for the daemon's refusal reason. */
#define BENCH_OPEN_ERROR_MAX 256

/* Daemons running at once: the shared one and one a memory row starts. */
#define BENCH_MAX_LIVE_DAEMONS 4

bench_config bench_cfg;

/* The daemons started and not yet stopped, for bench_daemon_emergency_stop. */
static bench_daemon *volatile live_daemons[BENCH_MAX_LIVE_DAEMONS];

static void remember_daemon(bench_daemon *d) {
    for (size_t i = 0; i < BENCH_MAX_LIVE_DAEMONS; i++) {
        if (live_daemons[i] == NULL) {
            live_daemons[i] = d;
            return;
        }
    }
}

static void forget_daemon(bench_daemon *d) {
    for (size_t i = 0; i < BENCH_MAX_LIVE_DAEMONS; i++) {
        if (live_daemons[i] == d) {
            live_daemons[i] = NULL;
        }
    }
}

void bench_daemon_emergency_stop(void) {
    for (size_t i = 0; i < BENCH_MAX_LIVE_DAEMONS; i++) {
        bench_daemon *d = live_daemons[i];
        if (d == NULL) {
            continue;
        }
        if (d->pid > 0) {
            kill(d->pid, SIGKILL);
        }
        unlink(d->socket_path);
        unlink(d->log_path);
        if (d->policy_path[0] != '\0') {
            unlink(d->policy_path);
        }
        rmdir(d->dir);
    }
}

int bench_loop_ms(void) {
    /* 400 ms per sample: long enough that start-up effects (thread
     * creation, the first page faults) vanish, short enough for 5
     * repetitions of every series in the full run. */
    return BENCH_PICK(400, 100);
}

/* ------------------------------------------------------------------ time */

int64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double bench_now_s(void) {
    return (double)bench_now_ns() / 1e9;
}

void bench_sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void bench_progress(const char *fmt, ...) {
    if (!bench_cfg.verbose) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("wasock-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ------------------------------------------------------------------ daemon */

static void remove_directory(const char *dir) {
    static const char *const names[] = {"s.sock", "wasockd.log", "policy.yaml", "audit.jsonl"};
    char path[BENCH_PATH_MAX + 32];
    if (dir[0] == '\0') {
        return;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

void bench_daemon_print_log(const bench_daemon *d) {
    char buf[BENCH_LOG_TAIL_BYTES + 1];
    int fd = open(d->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "wasock-bench: cannot open the daemon's log %s: %s\n", d->log_path,
                strerror(errno));
        return;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    off_t start = size > BENCH_LOG_TAIL_BYTES ? size - BENCH_LOG_TAIL_BYTES : 0;
    ssize_t n = pread(fd, buf, BENCH_LOG_TAIL_BYTES, start);
    close(fd);
    fprintf(stderr, "---- end of the wasockd log ----\n");
    if (n > 0) {
        buf[n] = '\0';
        fputs(buf, stderr);
    }
    fprintf(stderr, "---- (%s) ----\n", d->log_path);
}

static bool socket_accepts(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    bool ok = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    close(fd);
    return ok;
}

/* Reaps pid within timeout_ms: true with *status, false if still running. */
static bool reap_within(pid_t pid, int *status, int timeout_ms) {
    int64_t deadline = bench_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) {
            return true;
        }
        if (r < 0 && errno != EINTR) {
            *status = 0;
            return true;
        }
        if (bench_now_ns() >= deadline) {
            return false;
        }
        bench_sleep_ms(BENCH_POLL_STEP_MS);
    }
}

/* The child after fork: becomes wasockd with its output in log_fd. */
static void exec_daemon(const bench_daemon *d, const bench_daemon_opts *o, int log_fd,
                        pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
        _exit(127);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    const char *argv[7 + BENCH_DAEMON_EXTRA_ARGS + 1] = {bench_cfg.wasockd, "--socket",
                                                         d->socket_path};
    size_t argc = 3;
    if (d->policy_path[0] != '\0') {
        /* A policy file's audit log goes to the logs directory: ours. */
        argv[argc++] = "--policy";
        argv[argc++] = d->policy_path;
        argv[argc++] = "--logs-dir";
        argv[argc++] = d->dir;
    }
    for (size_t i = 0; o != NULL && i < BENCH_DAEMON_EXTRA_ARGS && o->extra_args[i] != NULL; i++) {
        argv[argc++] = o->extra_args[i];
    }
    argv[argc] = NULL;
    execv(bench_cfg.wasockd, (char *const *)argv);
    dprintf(STDERR_FILENO, "exec %s: %s\n", bench_cfg.wasockd, strerror(errno));
    _exit(127);
}

int bench_daemon_start(bench_daemon *d) {
    return bench_daemon_start_with(d, NULL);
}

/* Writes the policy text to d->policy_path. 0 or -errno. */
static int write_policy(bench_daemon *d, const char *yaml) {
    int n = snprintf(d->policy_path, sizeof(d->policy_path), "%s/policy.yaml", d->dir);
    if (n < 0 || (size_t)n >= sizeof(d->policy_path)) {
        d->policy_path[0] = '\0';
        return -ENAMETOOLONG;
    }
    int fd = open(d->policy_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    size_t len = strlen(yaml);
    ssize_t w = write(fd, yaml, len);
    int r = w == (ssize_t)len ? 0 : -EIO;
    close(fd);
    return r;
}

int bench_daemon_start_with(bench_daemon *d, const bench_daemon_opts *o) {
    memset(d, 0, sizeof(*d));
    const char *tmp = getenv("TMPDIR");
    /* A short base keeps the socket path far below sun_path's 108 bytes. */
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 60) {
        tmp = "/tmp";
    }
    snprintf(d->dir, sizeof(d->dir), "%s/wasock-bench-XXXXXX", tmp);
    if (mkdtemp(d->dir) == NULL) {
        int e = errno;
        fprintf(stderr, "wasock-bench: mkdtemp %s: %s\n", d->dir, strerror(e));
        d->dir[0] = '\0';
        return -e;
    }
    int n1 = snprintf(d->socket_path, sizeof(d->socket_path), "%s/s.sock", d->dir);
    int n2 = snprintf(d->log_path, sizeof(d->log_path), "%s/wasockd.log", d->dir);
    if (n1 < 0 || (size_t)n1 >= sizeof(d->socket_path) || n2 < 0 ||
        (size_t)n2 >= sizeof(d->log_path)) {
        remove_directory(d->dir);
        return -ENAMETOOLONG;
    }
    if (o != NULL && o->policy_yaml != NULL) {
        int r = write_policy(d, o->policy_yaml);
        if (r < 0) {
            remove_directory(d->dir);
            return r;
        }
    }
    int log_fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        int e = errno;
        remove_directory(d->dir);
        return -e;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(log_fd);
        remove_directory(d->dir);
        return -e;
    }
    if (pid == 0) {
        exec_daemon(d, o, log_fd, parent);
    }
    close(log_fd);
    d->pid = pid;
    remember_daemon(d);

    int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
    while (!socket_accepts(d->socket_path)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "wasock-bench: wasockd exited during start-up (status 0x%x)\n",
                    (unsigned)status);
            forget_daemon(d);
            d->pid = 0;
            bench_daemon_print_log(d);
            remove_directory(d->dir);
            return -ECHILD;
        }
        if (bench_now_ns() >= deadline) {
            fprintf(stderr, "wasock-bench: wasockd did not accept on %s in time\n", d->socket_path);
            kill(pid, SIGKILL);
            reap_within(pid, &status, BENCH_DAEMON_STOP_MS);
            forget_daemon(d);
            d->pid = 0;
            bench_daemon_print_log(d);
            remove_directory(d->dir);
            return -ETIMEDOUT;
        }
        bench_sleep_ms(BENCH_POLL_STEP_MS);
    }
    return 0;
}

int bench_daemon_stop(bench_daemon *d) {
    int status = 0, r = 0;
    forget_daemon(d);
    if (d->pid <= 0) {
        remove_directory(d->dir);
        return 0;
    }
    if (reap_within(d->pid, &status, 0)) {
        fprintf(stderr, "wasock-bench: wasockd had exited before the end (status 0x%x)\n",
                (unsigned)status);
        bench_daemon_print_log(d);
        r = -ECHILD;
    } else {
        kill(d->pid, SIGTERM);
        if (!reap_within(d->pid, &status, BENCH_DAEMON_STOP_MS)) {
            fprintf(stderr, "wasock-bench: wasockd ignored SIGTERM for %d ms: killed\n",
                    BENCH_DAEMON_STOP_MS);
            kill(d->pid, SIGKILL);
            reap_within(d->pid, &status, BENCH_DAEMON_STOP_MS);
            r = -ETIMEDOUT;
        }
    }
    bool clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                 (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    if (r == 0 && !clean) {
        fprintf(stderr, "wasock-bench: wasockd ended with status 0x%x after SIGTERM\n",
                (unsigned)status);
        bench_daemon_print_log(d);
        r = -ECHILD;
    }
    d->pid = 0;
    remove_directory(d->dir);
    d->dir[0] = '\0';
    return r;
}

long long bench_daemon_rss(const bench_daemon *d) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return -errno;
    }
    long long kib = -ENOENT;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(line + 6, &end, 10);
            if (errno == 0 && end != line + 6) {
                kib = (long long)v;
            }
            break;
        }
    }
    fclose(f);
    return kib < 0 ? kib : kib * 1024;
}

wasock_err bench_client_open(const bench_daemon *d, wasock_client **out) {
    char why[BENCH_OPEN_ERROR_MAX] = "";
    wasock_client_opts o;
    wasock_client_opts_init(&o);
    o.socket_path = d->socket_path;
    o.wasi_version = 2;
    o.error = why;
    o.error_len = sizeof(why);
    wasock_err e = wasock_client_open(&o, out);
    if (e != WASOCK_OK && bench_cfg.verbose) {
        fprintf(stderr, "wasock-bench: wasock_client_open: %s: %s\n", wasock_err_name(e), why);
    }
    return e;
}

bool bench_wait_ready(wasock_client *c, wasock_tcp *s, int timeout_ms) {
    int64_t deadline = bench_now_ns() + (int64_t)timeout_ms * 1000000;
    while (!wasock_tcp_ready(s)) {
        int64_t left = (deadline - bench_now_ns()) / 1000000;
        if (left <= 0) {
            return false;
        }
        wasock_err e = wasock_client_wait(c, (int)(left > BENCH_WAIT_MS ? BENCH_WAIT_MS : left));
        if (e == WASOCK_E_DAEMON) {
            return false;
        }
    }
    return true;
}

wasock_err bench_tcp_connect(wasock_client *c, wasock_tcp *s, uint16_t port, int *input_fd,
                             int *output_fd) {
    wasock_addr a = {.ip = {.family = WASOCK_IPV4, .addr.v4 = {127, 0, 0, 1}}, .port = port};
    wasock_err e = wasock_tcp_start_connect(s, &a);
    if (e != WASOCK_OK) {
        return e;
    }
    if (!bench_wait_ready(c, s, BENCH_WAIT_MS)) {
        return WASOCK_E_TIMEOUT;
    }
    return wasock_tcp_finish_connect(s, input_fd, output_fd);
}

/* ------------------------------------------------------------------ loopback */

static struct sockaddr_in loopback_addr(uint16_t port) {
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

int bench_listen_loopback(uint16_t *port, int backlog) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = loopback_addr(0);
    socklen_t len = sizeof(sin);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

int bench_connect_loopback(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    struct sockaddr_in sin = loopback_addr(port);
    while (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    return fd;
}

int bench_set_nonblocking(int fd, bool on) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) {
        return -errno;
    }
    flags = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, flags) < 0 ? -errno : 0;
}

int bench_wait_fd(int fd, short events, int64_t deadline_ns) {
    for (;;) {
        int64_t left_ms = (deadline_ns - bench_now_ns()) / 1000000;
        if (left_ms <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left_ms > BENCH_WAIT_MS ? BENCH_WAIT_MS : (int)left_ms);
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -errno;
        }
    }
}

int bench_write_all(int fd, const void *buf, size_t len, int64_t deadline_ns) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            int r = bench_wait_fd(fd, POLLOUT, deadline_ns);
            if (r < 0) {
                return r;
            }
            continue;
        }
        return n < 0 ? -errno : -EIO;
    }
    return 0;
}

int bench_read_exact(int fd, void *buf, size_t len, int64_t deadline_ns) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0) {
            return -ENODATA;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            int r = bench_wait_fd(fd, POLLIN, deadline_ns);
            if (r < 0) {
                return r;
            }
            continue;
        }
        return -errno;
    }
    return 0;
}

long bench_raise_fd_limit(long want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return -errno;
    }
    if ((long)rl.rlim_cur >= want) {
        return (long)rl.rlim_cur;
    }
    /* Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft
     * limit can still go up to the hard one. */
    struct rlimit more = {.rlim_cur = (rlim_t)want, .rlim_max = (rlim_t)want};
    if (rl.rlim_max != RLIM_INFINITY && (long)rl.rlim_max >= want) {
        more.rlim_max = rl.rlim_max;
    }
    if (setrlimit(RLIMIT_NOFILE, &more) < 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}
