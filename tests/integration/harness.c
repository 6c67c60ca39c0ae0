/* harness.c — starts and stops the real wasockd for integration tests, and
 * the bounded helpers the tests share (see harness.h).
 *
 * Trusts: the WASOCKD environment variable (set by meson) and the local
 * kernel. Everything the daemon and libwasock return is checked, never
 * assumed; every wait has a deadline.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Daemons one test may run at once (the fixture's plus a few a test starts
 * itself, e.g. with a special policy). */
#define ITEST_MAX_DAEMONS 8

/* Pause between two attempts while waiting for something that gives no
 * readiness notification (a socket file appearing, a process exiting, a
 * descriptor count changing). */
#define ITEST_POLL_STEP_MS 10

/* The file in a daemon's directory naming the test case that started it. */
#define ITEST_TEST_NAME_FILE "test-case"

/* Largest piece written or read at once by the stream helpers. */
#define ITEST_IO_CHUNK (64 * 1024)

/* A failed assertion ends a forked test process at once (no teardown, no
 * atexit handlers), so cleanup happens in three places: the daemon dies
 * with its test process (PR_SET_PDEATHSIG); the runner process, which
 * created run_dir, prints the logs of the daemons whose directories are
 * still there after the suite (their tests did not stop them) and removes
 * everything; and, when tests run without fork (CK_FORK=no), an atexit
 * handler stops the daemons still registered below. */
static char run_dir[ITEST_PATH_MAX];

/* Daemons started by this process and not yet stopped. */
static itest_daemon *running_daemons[ITEST_MAX_DAEMONS];
static pid_t running_daemons_owner;
static bool atexit_registered;

static itest_daemon fixture_daemon;

int64_t itest_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int remaining_ms(int64_t deadline) {
    int64_t left = deadline - itest_now_ms();
    if (left < 0) {
        return 0;
    }
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* ------------------------------------------------------------------ daemon */

static void remove_directory(const char *dir) {
    if (dir[0] == '\0') {
        return;
    }
    DIR *dp = opendir(dir);
    if (dp != NULL) {
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                unlinkat(dirfd(dp), e->d_name, 0);
            }
        }
        closedir(dp);
    }
    rmdir(dir);
}

void itest_daemon_print_log(const itest_daemon *d) {
    FILE *f = fopen(d->log_path, "re");
    fprintf(stderr, "---- wasockd log (%s) ----\n", d->log_path);
    if (f == NULL) {
        fprintf(stderr, "(cannot open: %s)\n", strerror(errno));
    } else {
        char line[512];
        while (fgets(line, sizeof line, f) != NULL) {
            fputs(line, stderr);
        }
        fclose(f);
    }
    fprintf(stderr, "---- end of wasockd log ----\n");
}

bool itest_daemon_log_contains(const itest_daemon *d, const char *needle) {
    FILE *f = fopen(d->log_path, "re");
    if (f == NULL) {
        return false;
    }
    bool found = false;
    char line[1024];
    while (!found && fgets(line, sizeof line, f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

static void forget_daemon(itest_daemon *d) {
    for (size_t i = 0; i < ITEST_MAX_DAEMONS; i++) {
        if (running_daemons[i] == d) {
            running_daemons[i] = NULL;
        }
    }
}

/* Reaps pid within timeout_ms; returns true with *status set, false if it
 * is still running. */
static bool reap_within(pid_t pid, int *status, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) {
            return true;
        }
        if (r < 0 && errno != EINTR) {
            *status = 0;
            return true; /* not our child any more: nothing to wait for */
        }
        if (itest_now_ms() >= deadline) {
            return false;
        }
        sleep_ms(ITEST_POLL_STEP_MS);
    }
}

/* Stops every daemon a failing test left behind, printing its log. */
static void stop_leftover_daemons(void) {
    if (getpid() != running_daemons_owner) {
        return; /* a forked helper process: the daemons are not its own */
    }
    for (size_t i = 0; i < ITEST_MAX_DAEMONS; i++) {
        itest_daemon *d = running_daemons[i];
        if (d == NULL) {
            continue;
        }
        running_daemons[i] = NULL;
        fprintf(stderr, "test ended with wasockd (pid %d) still running\n", (int)d->pid);
        itest_daemon_print_log(d);
        if (d->pid > 0) {
            int status;
            kill(d->pid, SIGKILL);
            reap_within(d->pid, &status, ITEST_WAIT_MS);
            d->pid = 0;
        }
        remove_directory(d->dir);
    }
}

static void remember_daemon(itest_daemon *d) {
    if (!atexit_registered || running_daemons_owner != getpid()) {
        for (size_t i = 0; i < ITEST_MAX_DAEMONS; i++) {
            running_daemons[i] = NULL; /* entries inherited from a parent are not ours */
        }
        running_daemons_owner = getpid();
        if (!atexit_registered) {
            atexit(stop_leftover_daemons);
            atexit_registered = true;
        }
    }
    for (size_t i = 0; i < ITEST_MAX_DAEMONS; i++) {
        if (running_daemons[i] == NULL) {
            running_daemons[i] = d;
            return;
        }
    }
    ck_abort_msg("more than %d daemons in one test", ITEST_MAX_DAEMONS);
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        done += (size_t)n;
    }
    return close(fd) == 0 ? 0 : -errno;
}

static bool socket_accepts(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    bool ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
    close(fd);
    return ok;
}

/* Socket activation for the next spawn (itest_daemon_start_activated):
 * the listening socket to pass as descriptor 3, and the NOTIFY_SOCKET
 * path; -1 and "" otherwise. */
static int activation_fd = -1;
static char activation_notify_path[ITEST_PATH_MAX];

/* The child side of the fork: becomes wasockd. Never returns. */
static void exec_daemon(const char *wasockd, const itest_daemon *d, int log_fd, pid_t test_pid) {
    /* Dies with the test process, so a test killed by a timeout leaves no
     * daemon behind. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test_pid) {
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
    if (activation_fd >= 0) {
        /* As a service manager does: the socket as descriptor 3 (kept
         * across exec), LISTEN_PID naming the process that will run. */
        char pid_text[24];
        if ((activation_fd != 3 && dup2(activation_fd, 3) < 0) || fcntl(3, F_SETFD, 0) < 0) {
            _exit(127);
        }
        snprintf(pid_text, sizeof pid_text, "%ld", (long)getpid());
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_PID", pid_text, 1);
        setenv("NOTIFY_SOCKET", activation_notify_path, 1);
    }

    const char *argv[16];
    size_t argc = 0;
    argv[argc++] = wasockd;
    argv[argc++] = "--socket";
    argv[argc++] = d->socket_path;
    /* The control socket and the audit file stay in the test's directory. */
    argv[argc++] = "--control-socket";
    argv[argc++] = d->control_path;
    argv[argc++] = "--logs-dir";
    argv[argc++] = d->dir;
    if (d->policy_path[0] != '\0') {
        argv[argc++] = "--policy";
        argv[argc++] = d->policy_path;
    }
    const char *level = getenv("ITEST_DAEMON_LOG_LEVEL");
    if (level != NULL && level[0] != '\0') {
        argv[argc++] = "--log-level";
        argv[argc++] = level;
    }
    const char *busy_poll = getenv("ITEST_DAEMON_BUSY_POLL");
    if (busy_poll != NULL && busy_poll[0] != '\0') {
        argv[argc++] = "--busy-poll";
        argv[argc++] = busy_poll;
    }
    argv[argc] = NULL;
    execv(wasockd, (char *const *)argv);
    dprintf(STDERR_FILENO, "exec %s: %s\n", wasockd, strerror(errno));
    _exit(127);
}

/* Where temporary directories go: $TMPDIR if short, else /tmp. A short
 * base keeps socket paths well below sun_path's 108 bytes. */
static const char *temp_base(void) {
    const char *tmp = getenv("TMPDIR");
    return tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 60 ? "/tmp" : tmp;
}

static void set_path(char *dst, const char *dir, const char *name) {
    int n = snprintf(dst, ITEST_PATH_MAX, "%s/%s", dir, name);
    ck_assert_msg(n > 0 && n < ITEST_PATH_MAX, "path too long: %s/%s", dir, name);
}

/* Notes in the daemon's directory which test case uses it, for the
 * runner's report. Check names the test case only while a test body runs
 * (not in fixtures), so this is called from helpers test bodies use. */
static void note_test_case(const itest_daemon *d) {
    const char *test_case = tcase_name();
    char name_path[ITEST_PATH_MAX];
    if (test_case == NULL || d->dir[0] == '\0') {
        return;
    }
    int n = snprintf(name_path, sizeof name_path, "%s/%s", d->dir, ITEST_TEST_NAME_FILE);
    if (n > 0 && (size_t)n < sizeof name_path && access(name_path, F_OK) != 0) {
        (void)write_file(name_path, test_case);
    }
}

/* Creates the daemon's temporary directory with its log and policy files;
 * the socket goes there too unless socket_path names another place. */
static void prepare_daemon(itest_daemon *d, const char *socket_path, const char *policy_yaml) {
    memset(d, 0, sizeof *d);
    int n = run_dir[0] != '\0'
                ? snprintf(d->dir, sizeof d->dir, "%s/d-XXXXXX", run_dir)
                : snprintf(d->dir, sizeof d->dir, "%s/wasockd-itest-XXXXXX", temp_base());
    ck_assert(n > 0 && (size_t)n < sizeof d->dir);
    ck_assert_msg(mkdtemp(d->dir) != NULL, "mkdtemp: %s", strerror(errno));

    if (socket_path != NULL) {
        size_t len = strlen(socket_path);
        ck_assert(len < sizeof d->socket_path);
        memcpy(d->socket_path, socket_path, len + 1);
    } else {
        set_path(d->socket_path, d->dir, "s.sock");
    }
    set_path(d->log_path, d->dir, "wasockd.log");
    set_path(d->control_path, d->dir, "control.sock");
    set_path(d->audit_path, d->dir, "audit.jsonl");
    if (policy_yaml != NULL) {
        set_path(d->policy_path, d->dir, "policy.yaml");
        int r = write_file(d->policy_path, policy_yaml);
        ck_assert_msg(r == 0, "write policy: %s", strerror(-r));
    }
}

/* Forks and executes $WASOCKD for d (prepared); does not wait. */
static void spawn_daemon(itest_daemon *d) {
    const char *wasockd = getenv("WASOCKD");
    ck_assert_msg(wasockd != NULL && wasockd[0] != '\0',
                  "WASOCKD is not set (meson sets it to the built daemon)");
    int log_fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    ck_assert_msg(log_fd >= 0, "open log: %s", strerror(errno));
    pid_t test_pid = getpid();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        exec_daemon(wasockd, d, log_fd, test_pid);
    }
    close(log_fd);
    d->pid = pid;
    remember_daemon(d);
}

/* Waits until d's socket accepts connections, or d exits / the bound
 * passes (then d is reaped or killed, and false). */
static bool wait_daemon_accepts(itest_daemon *d) {
    int64_t deadline = itest_now_ms() + 2 * ITEST_WAIT_MS;
    while (!socket_accepts(d->socket_path)) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            forget_daemon(d);
            d->pid = 0;
            fprintf(stderr, "wasockd exited during start-up (status 0x%x)\n", (unsigned)status);
            return false;
        }
        if (itest_now_ms() >= deadline) {
            fprintf(stderr, "wasockd did not accept on %s in time\n", d->socket_path);
            int ignored;
            kill(d->pid, SIGKILL);
            reap_within(d->pid, &ignored, ITEST_WAIT_MS);
            forget_daemon(d);
            d->pid = 0;
            return false;
        }
        sleep_ms(ITEST_POLL_STEP_MS);
    }
    return true;
}

bool itest_daemon_try_start(itest_daemon *d, const char *policy_yaml) {
    prepare_daemon(d, NULL, policy_yaml);
    spawn_daemon(d);
    return wait_daemon_accepts(d);
}

bool itest_daemon_try_start_at(itest_daemon *d, const char *socket_path) {
    prepare_daemon(d, socket_path, NULL);
    spawn_daemon(d);
    return wait_daemon_accepts(d);
}

void itest_daemon_spawn_at(itest_daemon *d, const char *socket_path) {
    prepare_daemon(d, socket_path, NULL);
    spawn_daemon(d);
}

bool itest_daemon_wait_exit(itest_daemon *d, int timeout_ms, int *status) {
    if (d->pid <= 0 || !reap_within(d->pid, status, timeout_ms)) {
        return false;
    }
    forget_daemon(d);
    d->pid = 0;
    return true;
}

int itest_daemon_start_activated(itest_daemon *d, const char *policy_yaml) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int listen_fd, notify_fd;

    prepare_daemon(d, NULL, policy_yaml);
    set_path(activation_notify_path, d->dir, "notify.sock");
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(notify_fd, 0);
    memcpy(sun.sun_path, activation_notify_path, strlen(activation_notify_path) + 1);
    ck_assert_int_eq(bind(notify_fd, (struct sockaddr *)&sun, sizeof sun), 0);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(listen_fd, 0);
    memcpy(sun.sun_path, d->socket_path, strlen(d->socket_path) + 1);
    ck_assert_int_eq(bind(listen_fd, (struct sockaddr *)&sun, sizeof sun), 0);
    ck_assert_int_eq(listen(listen_fd, 16), 0);
    activation_fd = listen_fd;
    spawn_daemon(d);
    activation_fd = -1;
    activation_notify_path[0] = '\0';
    close(listen_fd); /* the daemon holds it now */
    return notify_fd;
}

void itest_daemon_start(itest_daemon *d, const char *policy_yaml) {
    if (!itest_daemon_try_start(d, policy_yaml)) {
        itest_daemon_print_log(d);
        itest_daemon_discard(d);
        ck_abort_msg("wasockd did not start");
    }
}

void itest_daemon_discard(itest_daemon *d) {
    remove_directory(d->dir);
    d->dir[0] = '\0';
}

void itest_daemon_stop(itest_daemon *d) {
    if (d->pid <= 0) {
        itest_daemon_discard(d); /* killed or never started: only files are left */
        return;
    }
    int status = 0;
    int64_t stop_started = itest_now_ms();
    bool exited = reap_within(d->pid, &status, 0);
    bool killed = false;
    if (!exited) {
        kill(d->pid, SIGTERM);
        exited = reap_within(d->pid, &status, 2 * ITEST_WAIT_MS);
    }
    if (!exited) {
        kill(d->pid, SIGKILL);
        reap_within(d->pid, &status, ITEST_WAIT_MS);
        killed = true;
    }
    forget_daemon(d);
    d->pid = 0;
    bool clean = !killed && ((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                             (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM));
    if (!clean) {
        itest_daemon_print_log(d);
        itest_daemon_discard(d);
        if (killed) {
            ck_abort_msg("wasockd did not exit within %d ms of SIGTERM", 2 * ITEST_WAIT_MS);
        } else if (WIFEXITED(status)) {
            ck_abort_msg("wasockd exited with status %d", WEXITSTATUS(status));
        } else {
            ck_abort_msg("wasockd died of signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
    }
    if (getenv("ITEST_VERBOSE") != NULL) {
        itest_daemon_print_log(d);
        fprintf(stderr, "wasockd stopped %lld ms after SIGTERM\n",
                (long long)(itest_now_ms() - stop_started));
    }
    itest_daemon_discard(d);
}

void itest_daemon_kill(itest_daemon *d) {
    if (d->pid <= 0) {
        return;
    }
    int status;
    kill(d->pid, SIGKILL);
    reap_within(d->pid, &status, ITEST_WAIT_MS);
    forget_daemon(d);
    d->pid = 0;
}

bool itest_daemon_alive(itest_daemon *d) {
    if (d->pid <= 0) {
        return false;
    }
    int status;
    pid_t r = waitpid(d->pid, &status, WNOHANG);
    if (r == d->pid) {
        fprintf(stderr, "wasockd (pid %d) exited with status 0x%x\n", (int)d->pid,
                (unsigned)status);
        forget_daemon(d);
        d->pid = 0;
        return false;
    }
    return true;
}

int itest_daemon_fd_count(const itest_daemon *d) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)d->pid);
    DIR *dp = opendir(path);
    if (dp == NULL) {
        return -1;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] != '.') {
            count++;
        }
    }
    closedir(dp);
    return count;
}

int itest_daemon_settled_fd_count(const itest_daemon *d) {
    /* Three equal readings apart in time: the daemon has finished closing
     * whatever it was closing (e.g. a probe connection). */
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    int last = itest_daemon_fd_count(d), same = 0;
    while (same < 2 && itest_now_ms() < deadline) {
        sleep_ms(5 * ITEST_POLL_STEP_MS);
        int now = itest_daemon_fd_count(d);
        same = now == last ? same + 1 : 0;
        last = now;
    }
    return last;
}

int itest_daemon_wait_fd_count(const itest_daemon *d, int limit, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    int count = itest_daemon_fd_count(d);
    while (count > limit && itest_now_ms() < deadline) {
        sleep_ms(ITEST_POLL_STEP_MS);
        count = itest_daemon_fd_count(d);
    }
    if (getenv("ITEST_VERBOSE") != NULL) {
        fprintf(stderr, "wasockd holds %d descriptors (at most %d expected)\n", count, limit);
    }
    return count;
}

void itest_fixture_setup(void) {
    itest_daemon_start(&fixture_daemon, NULL);
}

void itest_fixture_teardown(void) {
    itest_daemon_stop(&fixture_daemon);
}

itest_daemon *itest_fixture_daemon(void) {
    note_test_case(&fixture_daemon);
    return &fixture_daemon;
}

bool itest_variant(int i, int *wasi_version, wasock_family *f) {
    *wasi_version = (i & 1) ? 3 : 2;
    *f = (i & 2) ? WASOCK_IPV6 : WASOCK_IPV4;
    if (*f == WASOCK_IPV6 && !itest_have_ipv6()) {
        fprintf(stderr, "note: no IPv6 on this host, skipping the v6 variant\n");
        return false;
    }
    return true;
}

void itest_tcase_defaults(TCase *tc) {
    tcase_set_timeout(tc, ITEST_TCASE_TIMEOUT_S);
}

/* Prints the log of every daemon whose directory is still in run_dir (its
 * test ended without stopping it, i.e. failed) and removes run_dir. */
static void report_and_remove_run_dir(void) {
    DIR *dp = opendir(run_dir);
    if (dp != NULL) {
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            if (e->d_name[0] == '.') {
                continue;
            }
            itest_daemon left;
            memset(&left, 0, sizeof left);
            int n = snprintf(left.dir, sizeof left.dir, "%s/%s", run_dir, e->d_name);
            if (n <= 0 || (size_t)n >= sizeof left.dir) {
                continue;
            }
            /* No Check assertions here: this runs outside any test. */
            char name_path[ITEST_PATH_MAX], name[128] = "?";
            int a = snprintf(name_path, sizeof name_path, "%s/%s", left.dir, ITEST_TEST_NAME_FILE);
            int b = snprintf(left.log_path, sizeof left.log_path, "%s/wasockd.log", left.dir);
            if (a <= 0 || (size_t)a >= sizeof name_path || b <= 0 ||
                (size_t)b >= sizeof left.log_path) {
                continue;
            }
            FILE *f = fopen(name_path, "re");
            if (f != NULL) {
                if (fgets(name, sizeof name, f) == NULL) {
                    memcpy(name, "?", 2);
                }
                fclose(f);
            }
            fprintf(stderr, "test \"%s\" ended without stopping its wasockd:\n", name);
            itest_daemon_print_log(&left);
            remove_directory(left.dir);
        }
        closedir(dp);
    }
    rmdir(run_dir);
    run_dir[0] = '\0';
}

int itest_run_suite(Suite *s) {
    int n = snprintf(run_dir, sizeof run_dir, "%s/wasockd-itest-XXXXXX", temp_base());
    if (n <= 0 || (size_t)n >= sizeof run_dir || mkdtemp(run_dir) == NULL) {
        fprintf(stderr, "cannot create a temporary directory under %s\n", temp_base());
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    report_and_remove_run_dir();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ------------------------------------------------------------------ clients */

wasock_err itest_client_try_open(const itest_daemon *d, int wasi_version, const char *tenant,
                                 char *err, size_t err_len, wasock_client **out) {
    note_test_case(d);
    wasock_client_opts o;
    wasock_client_opts_init(&o);
    o.socket_path = d->socket_path;
    o.tenant = tenant;
    o.wasi_version = wasi_version;
    o.error = err;
    o.error_len = err_len;
    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    return wasock_client_open(&o, out);
}

wasock_client *itest_client_open(const itest_daemon *d, int wasi_version, const char *tenant) {
    char why[256];
    wasock_client *c = NULL;
    wasock_err e = itest_client_try_open(d, wasi_version, tenant, why, sizeof why, &c);
    if (e != WASOCK_OK) {
        itest_daemon_print_log(d);
    }
    ck_assert_msg(e == WASOCK_OK, "wasock_client_open(0.%d, %s): %s (%s)", wasi_version,
                  tenant ? tenant : "NULL", wasock_err_name(e), why);
    ck_assert_int_eq(wasock_client_wasi_version(c), wasi_version);
    return c;
}

/* ---------------------------------------------------------------- addresses */

bool itest_have_ipv6(void) {
    static int cached = -1;
    if (cached < 0) {
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        cached = fd >= 0 && bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
        if (fd >= 0) {
            close(fd);
        }
    }
    return cached == 1;
}

wasock_addr itest_loopback(wasock_family f, uint16_t port) {
    wasock_addr a;
    memset(&a, 0, sizeof a);
    a.ip.family = f;
    if (f == WASOCK_IPV4) {
        a.ip.addr.v4[0] = 127;
        a.ip.addr.v4[3] = 1;
    } else {
        a.ip.addr.v6[7] = 1;
    }
    a.port = port;
    return a;
}

wasock_addr itest_addr(const char *text) {
    wasock_addr a;
    memset(&a, 0, sizeof a);
    ck_assert_msg(wasock_addr_parse(text, &a) == 0, "wasock_addr_parse(\"%s\") failed", text);
    return a;
}

bool itest_addr_equal(const wasock_addr *a, const wasock_addr *b) {
    if (a->ip.family != b->ip.family || a->port != b->port) {
        return false;
    }
    if (a->ip.family == WASOCK_IPV4) {
        return memcmp(a->ip.addr.v4, b->ip.addr.v4, 4) == 0;
    }
    return memcmp(a->ip.addr.v6, b->ip.addr.v6, sizeof a->ip.addr.v6) == 0;
}

bool itest_addr_is_loopback(const wasock_addr *a) {
    wasock_addr lo = itest_loopback(a->ip.family, a->port);
    return itest_addr_equal(a, &lo);
}

bool itest_addr_is_unspecified(const wasock_addr *a) {
    if (a->ip.family == WASOCK_IPV4) {
        static const uint8_t zero4[4];
        return memcmp(a->ip.addr.v4, zero4, 4) == 0;
    }
    static const uint16_t zero6[8];
    return memcmp(a->ip.addr.v6, zero6, sizeof zero6) == 0;
}

const char *itest_addr_text(const wasock_addr *a, char *buf, size_t len) {
    if (wasock_addr_format(a, buf, len) < 0 && len >= 2) {
        memcpy(buf, "?", 2);
    }
    return buf;
}

/* ---------------------------------------------------------------- plain peers */

static socklen_t plain_sockaddr(wasock_family f, const char *ip, uint16_t port,
                                struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (f == WASOCK_IPV4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        ck_assert_msg(inet_pton(AF_INET, ip ? ip : "127.0.0.1", &sin->sin_addr) == 1,
                      "bad IPv4 text %s", ip);
        return sizeof *sin;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    ck_assert_msg(inet_pton(AF_INET6, ip ? ip : "::1", &sin6->sin6_addr) == 1, "bad IPv6 text %s",
                  ip);
    return sizeof *sin6;
}

static uint16_t plain_port(int fd, bool remote) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int rc = remote ? getpeername(fd, (struct sockaddr *)&ss, &len)
                    : getsockname(fd, (struct sockaddr *)&ss, &len);
    ck_assert_msg(rc == 0, "getsockname/getpeername: %s", strerror(errno));
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

uint16_t itest_plain_local_port(int fd) {
    return plain_port(fd, false);
}

uint16_t itest_plain_remote_port(int fd) {
    return plain_port(fd, true);
}

int itest_plain_listen_at(wasock_family f, const char *ip, uint16_t port) {
    struct sockaddr_storage ss;
    socklen_t len = plain_sockaddr(f, ip, port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 16) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int itest_plain_listen(wasock_family f, uint16_t *port) {
    int fd = itest_plain_listen_at(f, NULL, 0);
    ck_assert_msg(fd >= 0, "plain listen: %s", strerror(-fd));
    if (port != NULL) {
        *port = itest_plain_local_port(fd);
    }
    return fd;
}

int itest_plain_connect_start(wasock_family f, const char *from_ip, uint16_t port) {
    struct sockaddr_storage ss;
    socklen_t len = plain_sockaddr(f, NULL, port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    if (from_ip != NULL) {
        struct sockaddr_storage local;
        socklen_t local_len = plain_sockaddr(f, from_ip, 0, &local);
        if (bind(fd, (struct sockaddr *)&local, local_len) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (connect(fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int itest_plain_connect(wasock_family f, uint16_t port) {
    int fd = itest_plain_connect_start(f, NULL, port);
    ck_assert_msg(fd >= 0, "plain connect to port %u: %s", port, strerror(-fd));
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, ITEST_WAIT_MS);
    ck_assert_msg(r == 1, "plain connect to port %u did not complete", port);
    int soerr = 0;
    socklen_t len = sizeof soerr;
    ck_assert(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0);
    ck_assert_msg(soerr == 0, "plain connect to port %u: %s", port, strerror(soerr));
    return fd;
}

int itest_plain_accept(int lfd, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            return fd;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -errno;
        }
        int left = remaining_ms(deadline);
        if (left == 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        poll(&p, 1, left);
    }
}

uint16_t itest_closed_port(wasock_family f) {
    int fd = itest_plain_listen_at(f, NULL, 0);
    ck_assert_msg(fd >= 0, "plain listen: %s", strerror(-fd));
    uint16_t port = itest_plain_local_port(fd);
    close(fd);
    return port;
}

void itest_plain_reset(int fd) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ---------------------------------------------------------------- waiting */

/* Waits for the client's descriptor (at most `ms`) and dispatches. */
static wasock_err pump_once(wasock_client *c, int ms) {
    struct pollfd p = {.fd = wasock_client_fd(c), .events = POLLIN};
    if (poll(&p, 1, ms) < 0 && errno != EINTR) {
        return WASOCK_E_DAEMON;
    }
    return wasock_client_dispatch(c);
}

bool itest_wait_ready(wasock_client *c, wasock_tcp *s, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    while (!wasock_tcp_ready(s)) {
        int left = remaining_ms(deadline);
        if (left == 0) {
            return false;
        }
        if (pump_once(c, left) != WASOCK_OK) {
            return false;
        }
    }
    return true;
}

void itest_pump(wasock_client *c, int ms) {
    int64_t deadline = itest_now_ms() + ms;
    int left;
    while ((left = remaining_ms(deadline)) > 0) {
        if (pump_once(c, left) != WASOCK_OK) {
            return;
        }
    }
}

wasock_err itest_wait_stream_error(wasock_client *c, wasock_tcp *s, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    wasock_err e;
    while ((e = wasock_tcp_stream_error(s)) == WASOCK_OK) {
        int left = remaining_ms(deadline);
        if (left == 0 || pump_once(c, left) != WASOCK_OK) {
            break;
        }
    }
    return wasock_tcp_stream_error(s);
}

/* ---------------------------------------------------------------- operations */

wasock_err itest_bind(wasock_client *c, wasock_tcp *s, const wasock_addr *a) {
    if (wasock_client_wasi_version(c) == 3) {
        return wasock_tcp_bind(s, a);
    }
    wasock_err e = wasock_tcp_start_bind(s, a);
    if (e != WASOCK_OK) {
        return e;
    }
    if (!itest_wait_ready(c, s, ITEST_WAIT_MS)) {
        return WASOCK_E_TIMEOUT;
    }
    return wasock_tcp_finish_bind(s);
}

wasock_err itest_listen(wasock_client *c, wasock_tcp *s) {
    if (wasock_client_wasi_version(c) == 3) {
        return wasock_tcp_listen(s);
    }
    wasock_err e = wasock_tcp_start_listen(s);
    if (e != WASOCK_OK) {
        return e;
    }
    if (!itest_wait_ready(c, s, ITEST_WAIT_MS)) {
        return WASOCK_E_TIMEOUT;
    }
    return wasock_tcp_finish_listen(s);
}

/* Takes the 0.3 streams of a connected socket into conn. */
static void take_streams_03(wasock_tcp *s, itest_conn *conn) {
    conn->s = s;
    conn->in = conn->out = -1;
    conn->own_fds = true;
    wasock_err e = wasock_tcp_receive(s, &conn->in);
    ck_assert_msg(e == WASOCK_OK, "wasock_tcp_receive: %s", wasock_err_name(e));
    e = wasock_tcp_send(s, &conn->out);
    ck_assert_msg(e == WASOCK_OK, "wasock_tcp_send: %s", wasock_err_name(e));
    ck_assert(conn->in >= 0 && conn->out >= 0);
}

wasock_err itest_connect(wasock_client *c, wasock_tcp *s, const wasock_addr *remote,
                         itest_conn *conn) {
    if (wasock_client_wasi_version(c) == 3) {
        wasock_err e = wasock_tcp_connect(s, remote);
        if (e == WASOCK_OK && conn != NULL) {
            take_streams_03(s, conn);
        }
        return e;
    }
    wasock_err e = wasock_tcp_start_connect(s, remote);
    if (e != WASOCK_OK) {
        return e;
    }
    if (!itest_wait_ready(c, s, ITEST_WAIT_MS)) {
        return WASOCK_E_TIMEOUT;
    }
    int in = -1, out = -1;
    e = wasock_tcp_finish_connect(s, &in, &out);
    if (e == WASOCK_OK && conn != NULL) {
        conn->s = s;
        conn->in = in;
        conn->out = out;
        conn->own_fds = false;
        ck_assert(in >= 0 && out >= 0);
    }
    return e;
}

wasock_tcp *itest_socket(wasock_client *c, wasock_family f) {
    wasock_tcp *s = NULL;
    wasock_err e = wasock_tcp_create(c, f, &s);
    ck_assert_msg(e == WASOCK_OK, "wasock_tcp_create: %s", wasock_err_name(e));
    ck_assert(s != NULL);
    return s;
}

wasock_tcp *itest_listener(wasock_client *c, wasock_family f, uint16_t *port) {
    wasock_tcp *s = itest_socket(c, f);
    wasock_err e;
    wasock_addr lo = itest_loopback(f, 0);
    e = itest_bind(c, s, &lo);
    ck_assert_msg(e == WASOCK_OK, "bind loopback: %s", wasock_err_name(e));
    e = itest_listen(c, s);
    ck_assert_msg(e == WASOCK_OK, "listen: %s", wasock_err_name(e));
    wasock_addr local;
    e = wasock_tcp_local_address(s, &local);
    ck_assert_msg(e == WASOCK_OK, "local_address: %s", wasock_err_name(e));
    ck_assert(local.port != 0);
    if (port != NULL) {
        *port = local.port;
    }
    return s;
}

void itest_connect_to(wasock_client *c, wasock_family f, uint16_t port, itest_conn *conn) {
    wasock_tcp *s = itest_socket(c, f);
    wasock_addr remote = itest_loopback(f, port);
    wasock_err e = itest_connect(c, s, &remote, conn);
    ck_assert_msg(e == WASOCK_OK, "connect to loopback port %u: %s", port, wasock_err_name(e));
}

void itest_accept(wasock_client *c, wasock_tcp *listener, itest_conn *conn) {
    ck_assert_msg(itest_wait_ready(c, listener, ITEST_WAIT_MS), "listener did not become ready");
    wasock_tcp *s = NULL;
    int in = -1, out = -1;
    wasock_err e = wasock_tcp_accept(listener, &s, &in, &out);
    ck_assert_msg(e == WASOCK_OK, "accept: %s", wasock_err_name(e));
    if (wasock_client_wasi_version(c) == 3) {
        ck_assert_int_eq(in, -1);
        ck_assert_int_eq(out, -1);
        take_streams_03(s, conn);
    } else {
        ck_assert(in >= 0 && out >= 0);
        conn->s = s;
        conn->in = in;
        conn->out = out;
        conn->own_fds = false;
    }
}

void itest_conn_close(itest_conn *conn) {
    wasock_tcp_drop(conn->s);
    conn->s = NULL;
    if (conn->own_fds) {
        if (conn->in >= 0) {
            close(conn->in);
        }
        if (conn->out >= 0 && conn->out != conn->in) {
            close(conn->out);
        }
    }
    conn->in = conn->out = -1;
}

/* ---------------------------------------------------------------- streams */

/* write(2) that reports EPIPE instead of raising SIGPIPE. The test
 * processes keep SIGPIPE at its default action (check-session relies on it
 * to show libwasock never raises it), yet the daemon may close a
 * connection or pipe the test is still writing to: a socket gets
 * MSG_NOSIGNAL; for a pipe the signal is blocked around the write and a
 * SIGPIPE it raised is consumed. */
static ssize_t write_without_sigpipe(int fd, const void *buf, size_t len) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0 || errno != ENOTSOCK) {
        return n;
    }
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    n = write(fd, buf, len);
    int err = errno;
    if (n < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
        const struct timespec now = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &now) == SIGPIPE) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return n;
}

int itest_write_all(int fd, const void *buf, size_t len, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    const uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write_without_sigpipe(fd, p + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -errno;
        }
        int left = remaining_ms(deadline);
        if (left == 0) {
            return -ETIMEDOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        poll(&pfd, 1, left);
    }
    return 0;
}

ssize_t itest_read_exact(int fd, void *buf, size_t len, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, p + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0) {
            break;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -errno;
        }
        int left = remaining_ms(deadline);
        if (left == 0) {
            return -ETIMEDOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        poll(&pfd, 1, left);
    }
    return (ssize_t)done;
}

ssize_t itest_read_to_eof(int fd, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    uint8_t buf[4096];
    ssize_t discarded = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            discarded += n;
            continue;
        }
        if (n == 0) {
            return discarded;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -errno;
        }
        int left = remaining_ms(deadline);
        if (left == 0) {
            return -ETIMEDOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        poll(&pfd, 1, left);
    }
}

void itest_send_expect(int from, int to, const char *text) {
    size_t len = strlen(text);
    char got[256];
    ck_assert(len < sizeof got);
    int w = itest_write_all(from, text, len, ITEST_WAIT_MS);
    ck_assert_msg(w == 0, "write \"%s\": %s", text, strerror(-w));
    ssize_t r = itest_read_exact(to, got, len, ITEST_WAIT_MS);
    ck_assert_msg(r == (ssize_t)len, "read \"%s\": got %zd (%s)", text, r,
                  r < 0 ? strerror((int)-r) : "early EOF");
    got[len] = '\0';
    ck_assert_str_eq(got, text);
}

uint8_t itest_pattern_byte(uint32_t seed, size_t offset) {
    /* A cheap integer hash: neighbouring offsets give unrelated bytes, so a
     * lost, duplicated or reordered chunk shows up as a wrong byte. */
    uint32_t x = seed ^ ((uint32_t)offset * 2654435761u);
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return (uint8_t)x;
}

/* Writes the next piece of the flow's pattern (held in `pattern`). */
static int transfer_write(itest_flow *fl, const uint8_t *pattern) {
    size_t want = fl->total - fl->written;
    if (want > ITEST_IO_CHUNK) {
        want = ITEST_IO_CHUNK;
    }
    ssize_t n = write_without_sigpipe(fl->write_fd, pattern + fl->written, want);
    if (n > 0) {
        fl->written += (size_t)n;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return 0;
    }
    return n < 0 ? -errno : -EIO;
}

/* Reads what arrived and compares it with the pattern. */
static int transfer_read(itest_flow *fl, const uint8_t *pattern, uint8_t *chunk) {
    size_t want = fl->total - fl->read;
    if (want > ITEST_IO_CHUNK) {
        want = ITEST_IO_CHUNK;
    }
    ssize_t n = read(fl->read_fd, chunk, want);
    if (n == 0) {
        return -ENODATA;
    }
    if (n < 0) {
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -errno;
    }
    if (memcmp(chunk, pattern + fl->read, (size_t)n) != 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] != pattern[fl->read + (size_t)i]) {
                fl->first_bad = fl->read + (size_t)i;
                break;
            }
        }
        return -EIO;
    }
    fl->read += (size_t)n;
    return 0;
}

int itest_transfer(itest_flow *flows, size_t n, int timeout_ms) {
    enum { MAX_FLOWS = 4 };
    ck_assert(n <= MAX_FLOWS);
    uint8_t *chunk = malloc(ITEST_IO_CHUNK);
    uint8_t *patterns[MAX_FLOWS] = {NULL};
    ck_assert(chunk != NULL);
    for (size_t i = 0; i < n; i++) {
        flows[i].written = flows[i].read = 0;
        flows[i].first_bad = SIZE_MAX;
        patterns[i] = malloc(flows[i].total > 0 ? flows[i].total : 1);
        ck_assert(patterns[i] != NULL);
        for (size_t k = 0; k < flows[i].total; k++) {
            patterns[i][k] = itest_pattern_byte(flows[i].seed, k);
        }
    }
    int64_t deadline = itest_now_ms() + timeout_ms;
    int result = 0;
    for (;;) {
        struct pollfd pfds[2 * MAX_FLOWS];
        size_t owner[2 * MAX_FLOWS];
        bool is_write[2 * MAX_FLOWS];
        nfds_t np = 0;
        for (size_t i = 0; i < n; i++) {
            if (flows[i].written < flows[i].total) {
                pfds[np] = (struct pollfd){.fd = flows[i].write_fd, .events = POLLOUT};
                owner[np] = i;
                is_write[np++] = true;
            }
            if (flows[i].read < flows[i].total) {
                pfds[np] = (struct pollfd){.fd = flows[i].read_fd, .events = POLLIN};
                owner[np] = i;
                is_write[np++] = false;
            }
        }
        if (np == 0) {
            break;
        }
        int left = remaining_ms(deadline);
        if (left == 0) {
            result = -ETIMEDOUT;
            break;
        }
        if (poll(pfds, np, left) < 0 && errno != EINTR) {
            result = -errno;
            break;
        }
        for (nfds_t k = 0; k < np && result == 0; k++) {
            if (pfds[k].revents == 0) {
                continue;
            }
            size_t i = owner[k];
            result = is_write[k] ? transfer_write(&flows[i], patterns[i])
                                 : transfer_read(&flows[i], patterns[i], chunk);
        }
        if (result != 0) {
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(patterns[i]);
    }
    free(chunk);
    return result;
}

/* ---------------------------------------------------------------- control socket */

void itest_ctl_open(const itest_daemon *d, itest_ctl *c) {
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(c->fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(d->control_path);
    ck_assert(len < sizeof sun.sun_path);
    memcpy(sun.sun_path, d->control_path, len + 1);
    int r = connect(c->fd, (struct sockaddr *)&sun, sizeof sun);
    if (r != 0) {
        itest_daemon_print_log(d);
    }
    ck_assert_msg(r == 0, "connect %s: %s", d->control_path, strerror(errno));
}

void itest_ctl_close(itest_ctl *c) {
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->len = 0;
}

/* Sends one line: 0, or the negative errno of the write (-EPIPE when the
 * daemon has closed the connection, e.g. after refusing it). */
static int ctl_try_send(itest_ctl *c, const char *line) {
    size_t len = strlen(line);
    char out[ITEST_CTL_LINE_MAX + 2];
    ck_assert(len <= ITEST_CTL_LINE_MAX);
    memcpy(out, line, len);
    out[len++] = '\n';
    return itest_write_all(c->fd, out, len, ITEST_WAIT_MS);
}

void itest_ctl_send(itest_ctl *c, const char *line) {
    int w = ctl_try_send(c, line);
    ck_assert_msg(w == 0, "control write: %s", strerror(-w));
}

/* Takes a whole line out of the buffer: true, or false when none is there. */
static bool ctl_take_line(itest_ctl *c, char *line, size_t len) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl == NULL) {
        return false;
    }
    size_t n = (size_t)(nl - c->buf);
    size_t copy = n < len - 1 ? n : len - 1;
    memcpy(line, c->buf, copy);
    line[copy] = '\0';
    c->len -= n + 1;
    memmove(c->buf, nl + 1, c->len);
    return true;
}

bool itest_ctl_read_line(itest_ctl *c, char *line, size_t len, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        if (ctl_take_line(c, line, len)) {
            if (getenv("ITEST_VERBOSE") != NULL) {
                fprintf(stderr, "control< %s\n", line);
            }
            return true;
        }
        if (c->len == sizeof c->buf) {
            return false; /* a line longer than the protocol allows */
        }
        int left = remaining_ms(deadline);
        if (left == 0) {
            return false;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) {
            continue;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            return false;
        }
        if (n > 0) {
            c->len += (size_t)n;
        }
    }
}

bool itest_ctl_wait_closed(itest_ctl *c, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        int left = remaining_ms(deadline);
        if (left == 0) {
            return false;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) {
            continue;
        }
        char sink[1024];
        ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            return true;
        }
    }
}

static bool ctl_is_final(const char *line) {
    return strcmp(line, "ok") == 0 || strncmp(line, "ok ", 3) == 0 ||
           strncmp(line, "error:", 6) == 0;
}

bool itest_ctl_command(const itest_daemon *d, const char *command, char *out, size_t out_len,
                       char *final, size_t final_len) {
    itest_ctl c;
    char line[ITEST_CTL_LINE_MAX + 1];
    size_t used = 0;
    if (out != NULL && out_len > 0) {
        out[0] = '\0';
    }
    itest_ctl_open(d, &c);
    /* A daemon that refuses the connection (e.g. at its connection cap)
     * writes why and closes, maybe before the command arrives: then the
     * write fails, and the refusal is still there to read below. */
    int w = ctl_try_send(&c, command);
    ck_assert_msg(w == 0 || w == -EPIPE || w == -ECONNRESET, "control write: %s", strerror(-w));
    for (;;) {
        bool got = itest_ctl_read_line(&c, line, sizeof line, ITEST_WAIT_MS);
        if (!got) {
            itest_daemon_print_log(d);
        }
        ck_assert_msg(got, "no reply to \"%s\"", command);
        if (ctl_is_final(line)) {
            break;
        }
        if (out != NULL && out_len > 0) {
            int n = snprintf(out + used, out_len - used, "%s\n", line);
            if (n > 0) {
                used += (size_t)n < out_len - used ? (size_t)n : out_len - used - 1;
            }
        }
    }
    itest_ctl_close(&c);
    if (final != NULL && final_len > 0) {
        snprintf(final, final_len, "%s", line);
    }
    return strncmp(line, "ok", 2) == 0;
}

bool itest_kv(const char *line, const char *key, char *out, size_t len) {
    size_t klen = strlen(key);
    const char *p = line;
    while ((p = strstr(p, key)) != NULL) {
        bool starts_word = p == line || p[-1] == ' ';
        if (!starts_word || p[klen] != '=') {
            p += klen;
            continue;
        }
        p += klen + 1;
        size_t n = 0;
        if (*p == '"') {
            for (p++; *p != '\0' && *p != '"'; p++) {
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                }
                if (n + 1 < len) {
                    out[n++] = *p;
                }
            }
        } else {
            for (; *p != '\0' && *p != ' '; p++) {
                if (n + 1 < len) {
                    out[n++] = *p;
                }
            }
        }
        out[n] = '\0';
        return true;
    }
    if (len > 0) {
        out[0] = '\0';
    }
    return false;
}

void itest_agent_open(const itest_daemon *d, const char *name, itest_ctl *agent) {
    char line[ITEST_CTL_LINE_MAX + 1], hello[128];
    itest_ctl_open(d, agent);
    snprintf(hello, sizeof hello, "agent%s%s", name ? " " : "", name ? name : "");
    itest_ctl_send(agent, hello);
    for (;;) {
        bool got = itest_ctl_read_line(agent, line, sizeof line, ITEST_WAIT_MS);
        if (!got) {
            itest_daemon_print_log(d);
        }
        ck_assert_msg(got, "no reply to \"%s\"", hello);
        if (ctl_is_final(line)) {
            break;
        }
    }
    ck_assert_msg(strncmp(line, "ok agent", 8) == 0, "\"%s\" refused: %s", hello, line);
}

bool itest_agent_wait_line(itest_ctl *agent, const char *prefix, char *line, size_t len,
                           int timeout_ms) {
    char buf[ITEST_CTL_LINE_MAX + 1];
    int64_t deadline = itest_now_ms() + timeout_ms;
    while (itest_ctl_read_line(agent, buf, sizeof buf, remaining_ms(deadline))) {
        if (strncmp(buf, prefix, strlen(prefix)) == 0) {
            if (line != NULL && len > 0) {
                snprintf(line, len, "%s", buf);
            }
            return true;
        }
        fprintf(stderr, "agent skipped: %s\n", buf);
    }
    return false;
}

bool itest_agent_wait_prompt(itest_ctl *agent, uint64_t *id, char *line, size_t len,
                             int timeout_ms) {
    char buf[ITEST_CTL_LINE_MAX + 1];
    if (!itest_agent_wait_line(agent, "prompt ", buf, sizeof buf, timeout_ms)) {
        return false;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf + 7, &end, 10);
    ck_assert_msg(errno == 0 && end != buf + 7 && *end == ' ', "bad prompt line: %s", buf);
    *id = (uint64_t)v;
    if (line != NULL && len > 0) {
        snprintf(line, len, "%s", buf);
    }
    return true;
}

void itest_agent_answer(itest_ctl *agent, uint64_t id, const char *answer) {
    char cmd[128], want[64], line[ITEST_CTL_LINE_MAX + 1];
    snprintf(cmd, sizeof cmd, "answer %llu %s", (unsigned long long)id, answer);
    itest_ctl_send(agent, cmd);
    snprintf(want, sizeof want, "answered %llu ", (unsigned long long)id);
    bool got = itest_ctl_read_line(agent, line, sizeof line, ITEST_WAIT_MS);
    ck_assert_msg(got, "no acknowledgement of \"%s\"", cmd);
    ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "\"%s\" got: %s", cmd, line);
}

void itest_daemon_write_policy(itest_daemon *d, const char *yaml) {
    if (d->policy_path[0] == '\0') {
        set_path(d->policy_path, d->dir, "policy.yaml");
    }
    /* Write a new file and rename it over the old one, as an editor or a
     * configuration manager does: a reload never sees half a file. */
    char tmp[ITEST_PATH_MAX];
    set_path(tmp, d->dir, "policy.yaml.new");
    int r = write_file(tmp, yaml);
    ck_assert_msg(r == 0, "write policy: %s", strerror(-r));
    ck_assert_msg(rename(tmp, d->policy_path) == 0, "rename policy: %s", strerror(errno));
}

void itest_daemon_status_line(const itest_daemon *d, const char *what, char *line, size_t len) {
    char out[8192];
    bool ok = itest_ctl_command(d, "status", out, sizeof out, NULL, 0);
    ck_assert_msg(ok, "status failed");
    size_t wlen = strlen(what);
    for (char *p = out; *p != '\0';) {
        char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (n > wlen && strncmp(p, what, wlen) == 0 && p[wlen] == ' ') {
            snprintf(line, len, "%.*s", (int)n, p);
            return;
        }
        p += n + (nl != NULL);
    }
    ck_abort_msg("no \"%s\" line in status:\n%s", what, out);
}

/* ---------------------------------------------------------------- tools */

pid_t itest_spawn_tool(const char *const argv[], int *in_fd, int *out_fd) {
    int in_pipe[2], out_pipe[2];
    ck_assert(pipe2(in_pipe, O_CLOEXEC) == 0);
    ck_assert(pipe2(out_pipe, O_CLOEXEC) == 0);
    pid_t test_pid = getpid();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test_pid) {
            _exit(127);
        }
        if (dup2(in_pipe[0], STDIN_FILENO) < 0 || dup2(out_pipe[1], STDOUT_FILENO) < 0 ||
            dup2(out_pipe[1], STDERR_FILENO) < 0) {
            _exit(127);
        }
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    *in_fd = in_pipe[1];
    *out_fd = out_pipe[0];
    return pid;
}

int itest_tool_wait(pid_t pid, int timeout_ms) {
    int status;
    if (!reap_within(pid, &status, timeout_ms)) {
        kill(pid, SIGKILL);
        reap_within(pid, &status, ITEST_WAIT_MS);
        return -1;
    }
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

bool itest_read_until(int fd, const char *needle, char *buf, size_t len, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    size_t used = strlen(buf) < len ? strlen(buf) : 0;
    if (used == 0 && len > 0) {
        buf[0] = '\0';
    }
    for (;;) {
        if (strstr(buf, needle) != NULL) {
            return true;
        }
        int left = remaining_ms(deadline);
        if (left == 0 || used + 1 >= len) {
            return false;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) {
            continue;
        }
        ssize_t n = read(fd, buf + used, len - 1 - used);
        if (n <= 0) {
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                continue;
            }
            return strstr(buf, needle) != NULL;
        }
        used += (size_t)n;
        buf[used] = '\0';
    }
}

int itest_run_tool(const char *const argv[], const char *input, char *out, size_t out_len,
                   int timeout_ms) {
    int in_fd, out_fd;
    pid_t pid = itest_spawn_tool(argv, &in_fd, &out_fd);
    if (input != NULL) {
        (void)itest_write_all(in_fd, input, strlen(input), timeout_ms);
    }
    close(in_fd);
    size_t used = 0;
    int64_t deadline = itest_now_ms() + timeout_ms;
    if (out_len > 0) {
        out[0] = '\0';
    }
    for (;;) {
        int left = remaining_ms(deadline);
        if (left == 0) {
            break;
        }
        struct pollfd p = {.fd = out_fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) {
            continue;
        }
        char chunk[4096];
        ssize_t n = read(out_fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        size_t copy = (size_t)n;
        if (out_len > 0 && used + copy > out_len - 1) {
            copy = out_len - 1 - used;
        }
        if (copy > 0) {
            memcpy(out + used, chunk, copy);
            used += copy;
            out[used] = '\0';
        }
    }
    close(out_fd);
    int status = itest_tool_wait(pid, remaining_ms(deadline) + ITEST_WAIT_MS);
    if (getenv("ITEST_VERBOSE") != NULL) {
        fprintf(stderr, "%s exited with %d:\n%s\n", argv[0], status, out_len > 0 ? out : "");
    }
    return status;
}

const char *itest_wasockctl(void) {
    const char *path = getenv("WASOCKCTL");
    ck_assert_msg(path != NULL && path[0] != '\0',
                  "WASOCKCTL is not set (meson sets it to the built wasockctl)");
    return path;
}
