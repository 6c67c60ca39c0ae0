/* check-libwasock.c — unit tests of libwasock against a scripted fake daemon.
 *
 * The integration suite drives the library against the real wasockd, which
 * behaves. These tests put a small scripted daemon on the other end of the
 * Unix socket (a thread of the test process, speaking proto.h frames) so that
 * they can check what only a misbehaving or dying daemon shows: the broken
 * state after EOF, garbage, missing or surplus descriptors and unknown reply
 * ids; replies out of order across threads; events before replies; the exact
 * frames the library sends; and that nothing leaks a descriptor.
 *
 * The fake daemon's expectations run in its own thread and are recorded, not
 * asserted there; the test thread checks them after joining it. Every read in
 * the fake daemon is bounded by FAKE_IO_TIMEOUT_MS so a broken library fails
 * a test instead of hanging it.
 *
 * Debugging: CK_FORK=no runs in one process (for gdb); CK_RUN_CASE=<tcase>
 * runs one feature only.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"
#include "wasock/wasock.h"

/* Longest the fake daemon waits for one frame or connection. Generous, since
 * it only bounds a failing test. */
#define FAKE_IO_TIMEOUT_MS 10000

/* Longest a test waits for an asynchronous event through wasock_client_wait. */
#define CLIENT_WAIT_MS 10000

/* How long the fake daemon of the concurrency test holds a reply back
 * waiting for the next request. Threads do not finish together (nothing
 * makes them take turns), so the last one's requests each wait this out:
 * kept short so that tail stays far below the test's timeout. */
#define FAKE_HOLD_MS 2

/* Threads and requests per thread in the concurrency test. */
#define THREADS             4
#define REQUESTS_PER_THREAD 500

/* ------------------------------------------------------------ fake daemon */

typedef struct fake_daemon fake_daemon;
typedef void fake_script(fake_daemon *d);

struct fake_daemon {
    char dir[64];
    char path[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
    int listen_fd;
    int fd; /* the accepted session */
    pthread_t thread;
    fake_script *script;
    /* how to answer HELLO */
    uint16_t hello_err;
    const char *hello_detail;
    uint16_t hello_version;
    /* what HELLO said */
    proto_msg hello;
    /* the first expectation that failed in the daemon thread */
    char failure[256];
    /* scratch for scripts */
    int pipes[2][2];
};

#define FAKE_EXPECT(d, cond)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fake_fail((d), __LINE__, #cond);                                                       \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void fake_fail(fake_daemon *d, int line, const char *what) {
    if (!d->failure[0])
        snprintf(d->failure, sizeof(d->failure), "fake daemon, line %d: %s", line, what);
}

static bool wait_readable(int fd, int timeout_ms) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, timeout_ms) == 1;
}

/* Reads one frame. Returns 0, or -1 on EOF, timeout or a malformed frame. */
static int fake_read(fake_daemon *d, proto_msg *m) {
    uint8_t buf[PROTO_MAX_FRAME];
    size_t len = 0, frame_len = 0;

    for (;;) {
        int r = proto_frame_ready(buf, len, &frame_len);
        size_t want;
        ssize_t n;

        if (r == 1)
            break;
        if (r < 0 || !wait_readable(d->fd, FAKE_IO_TIMEOUT_MS))
            return -1;
        want = frame_len ? frame_len - len : PROTO_HEADER_SIZE - len;
        n = read(d->fd, buf + len, want);
        if (n <= 0)
            return -1;
        len += (size_t)n;
    }
    return proto_decode(buf, frame_len, m) == 0 ? 0 : -1;
}

/* Writes raw bytes with up to three descriptors attached. */
static void fake_write_raw(fake_daemon *d, const void *buf, size_t len, const int *fds,
                           unsigned nfds) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 3)];
    } control;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    if (nfds > 0) {
        struct cmsghdr *cm;

        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    if (sendmsg(d->fd, &msg, MSG_NOSIGNAL) != (ssize_t)len)
        fake_fail(d, __LINE__, "sendmsg");
}

/* Encodes and sends m with its descriptors (m->nfds is set from nfds). */
static void fake_send(fake_daemon *d, proto_msg *m, const int *fds, unsigned nfds) {
    uint8_t buf[PROTO_MAX_FRAME];
    ssize_t len;

    m->nfds = (uint8_t)nfds;
    len = proto_encode(m, buf, sizeof(buf));
    if (len < 0) {
        fake_fail(d, __LINE__, "proto_encode");
        return;
    }
    fake_write_raw(d, buf, (size_t)len, fds, nfds);
}

static void fake_send_ok(fake_daemon *d, const proto_msg *req) {
    proto_msg reply;

    proto_reply_ok(req, &reply);
    fake_send(d, &reply, NULL, 0);
}

static void fake_send_event_ready(fake_daemon *d, uint32_t handle, bool ready) {
    proto_msg ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = PROTO_EV_READY;
    ev.handle = handle;
    ev.ready = ready;
    fake_send(d, &ev, NULL, 0);
}

/* Reads a TCP_CREATE and answers it with `handle`. */
static int fake_answer_create(fake_daemon *d, uint32_t handle) {
    proto_msg m, reply;

    if (fake_read(d, &m) < 0 || m.type != PROTO_TCP_CREATE)
        return -1;
    proto_reply_ok(&m, &reply);
    reply.new_handle = handle;
    fake_send(d, &reply, NULL, 0);
    return 0;
}

/* Answers a drop. libwasock does not wait for this reply, so the client
 * may have closed the connection already: that is not a failure. */
static void fake_answer_drop(fake_daemon *d, const proto_msg *req) {
    uint8_t buf[PROTO_MAX_FRAME];
    proto_msg reply;
    ssize_t len;

    proto_reply_ok(req, &reply);
    len = proto_encode(&reply, buf, sizeof(buf));
    if (len < 0)
        fake_fail(d, __LINE__, "proto_encode");
    else
        (void)send(d->fd, buf, (size_t)len, MSG_NOSIGNAL);
}

/* Serves drops (and ignores everything else) until the client hangs up. */
static void fake_serve_drops(fake_daemon *d) {
    proto_msg m;

    while (fake_read(d, &m) == 0)
        if (m.type == PROTO_TCP_DROP)
            fake_answer_drop(d, &m);
}

static void *fake_thread(void *arg) {
    fake_daemon *d = arg;
    proto_msg reply;

    if (!wait_readable(d->listen_fd, FAKE_IO_TIMEOUT_MS)) {
        fake_fail(d, __LINE__, "no connection");
        return NULL;
    }
    d->fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (d->fd < 0 || fake_read(d, &d->hello) < 0 || d->hello.type != PROTO_HELLO) {
        fake_fail(d, __LINE__, "no HELLO");
        return NULL;
    }
    if (d->hello_err != PROTO_OK) {
        proto_reply_error(&d->hello, (proto_err)d->hello_err, d->hello_detail, &reply);
    } else {
        proto_reply_ok(&d->hello, &reply);
        reply.version = d->hello_version;
        reply.session = 42;
    }
    fake_send(d, &reply, NULL, 0);
    if (d->hello_err == PROTO_OK && d->script)
        d->script(d);
    close(d->fd);
    d->fd = -1;
    return NULL;
}

/* Starts a fake daemon that answers HELLO (with hello_err and detail, or
 * with success and `version`) and then runs script. */
static void fake_start_with(fake_daemon *d, fake_script *script, uint16_t hello_err,
                            const char *detail, uint16_t version) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};

    memset(d, 0, sizeof(*d));
    d->fd = -1;
    d->script = script;
    d->hello_err = hello_err;
    d->hello_detail = detail;
    d->hello_version = version;
    snprintf(d->dir, sizeof(d->dir), "/tmp/check-libwasock-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d->dir));
    snprintf(d->path, sizeof(d->path), "%s/s.sock", d->dir);
    memcpy(sun.sun_path, d->path, strlen(d->path));
    d->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(d->listen_fd, 0);
    ck_assert_int_eq(bind(d->listen_fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    ck_assert_int_eq(listen(d->listen_fd, 4), 0);
    ck_assert_int_eq(pthread_create(&d->thread, NULL, fake_thread, d), 0);
}

static void fake_start(fake_daemon *d, fake_script *script) {
    fake_start_with(d, script, PROTO_OK, NULL, PROTO_VERSION_MIN);
}

/* Waits for the daemon thread, cleans up, and fails the test if the daemon
 * saw something it did not expect. */
static void fake_finish(fake_daemon *d) {
    pthread_join(d->thread, NULL);
    close(d->listen_fd);
    unlink(d->path);
    rmdir(d->dir);
    ck_assert_msg(d->failure[0] == '\0', "%s", d->failure);
}

static wasock_err open_client(fake_daemon *d, int wasi, wasock_client **c, char *error,
                              size_t error_len) {
    wasock_client_opts o;

    wasock_client_opts_init(&o);
    o.socket_path = d->path;
    o.wasi_version = wasi;
    o.error = error;
    o.error_len = error_len;
    return wasock_client_open(&o, c);
}

static wasock_client *open_ok(fake_daemon *d, int wasi) {
    char error[256] = "";
    wasock_client *c = NULL;
    wasock_err err = open_client(d, wasi, &c, error, sizeof(error));

    ck_assert_msg(err == WASOCK_OK, "open: %s: %s", wasock_err_name(err), error);
    return c;
}

static int count_open_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(dir);
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n - 1; /* the directory's own descriptor */
}

static bool fd_is_open(int fd) {
    return fcntl(fd, F_GETFD) >= 0;
}

/* -------------------------------------------------------------- handshake */

START_TEST(test_open_sends_hello) {
    fake_daemon d;
    wasock_client_opts o;
    wasock_client *c = NULL;

    fake_start(&d, NULL);
    wasock_client_opts_init(&o);
    o.socket_path = d.path;
    o.tenant = "tenant-1";
    o.token = "secret";
    o.wasi_version = 3;
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_OK);
    ck_assert_int_eq(wasock_client_wasi_version(c), 3);
    ck_assert_int_ge(wasock_client_fd(c), 0);
    wasock_client_close(c);
    fake_finish(&d);
    ck_assert_uint_eq(d.hello.version_min, PROTO_VERSION_MIN);
    ck_assert_uint_eq(d.hello.version_max, PROTO_VERSION_MAX);
    ck_assert_uint_eq(d.hello.wasi, 3);
    ck_assert_str_eq(d.hello.tenant, "tenant-1");
    ck_assert_str_eq(d.hello.token, "secret");
    ck_assert_uint_ne(d.hello.id, 0);
}
END_TEST

START_TEST(test_open_access_denied_copies_detail) {
    fake_daemon d;
    char error[256] = "";
    wasock_client *c = NULL;

    fake_start_with(&d, NULL, PROTO_E_ACCESS_DENIED, "uid 1000 may not act for tenant x",
                    PROTO_VERSION_MIN);
    ck_assert_int_eq(open_client(&d, 2, &c, error, sizeof(error)), WASOCK_E_ACCESS_DENIED);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(error, "uid 1000 may not act for tenant x");
    fake_finish(&d);
}
END_TEST

START_TEST(test_open_version_refused) {
    fake_daemon d;
    char error[256] = "";
    wasock_client *c = NULL;

    fake_start_with(&d, NULL, PROTO_E_NOT_SUPPORTED, "speaks 7", PROTO_VERSION_MIN);
    ck_assert_int_eq(open_client(&d, 2, &c, error, sizeof(error)), WASOCK_E_DAEMON);
    ck_assert_ptr_nonnull(strstr(error, "protocol version"));
    fake_finish(&d);
}
END_TEST

START_TEST(test_open_version_not_offered) {
    fake_daemon d;
    char error[256] = "";
    wasock_client *c = NULL;

    char expected[32];

    fake_start_with(&d, NULL, PROTO_OK, NULL, PROTO_VERSION_MAX + 1);
    ck_assert_int_eq(open_client(&d, 2, &c, error, sizeof(error)), WASOCK_E_DAEMON);
    snprintf(expected, sizeof expected, "version %u", PROTO_VERSION_MAX + 1);
    ck_assert_ptr_nonnull(strstr(error, expected));
    fake_finish(&d);
}
END_TEST

START_TEST(test_open_unreachable) {
    char error[256] = "";
    wasock_client_opts o;
    wasock_client *c = NULL;

    wasock_client_opts_init(&o);
    o.socket_path = "/nonexistent-wasock-dir/s.sock";
    o.error = error;
    o.error_len = sizeof(error);
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_E_DAEMON);
    ck_assert_str_eq(error,
                     "cannot connect to /nonexistent-wasock-dir/s.sock: No such file or directory");
}
END_TEST

START_TEST(test_open_uses_environment) {
    fake_daemon d;
    wasock_client_opts o;
    wasock_client *c = NULL;

    fake_start(&d, NULL);
    ck_assert_int_eq(setenv("WASOCK_SOCKET", d.path, 1), 0);
    wasock_client_opts_init(&o);
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_OK);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

START_TEST(test_open_bad_options) {
    char long_text[PROTO_TOKEN_MAX + 2];
    char long_path[200];
    char error[256];
    wasock_client_opts o;
    wasock_client *c = NULL;

    ck_assert_int_eq(wasock_client_open(NULL, &c), WASOCK_E_INVALID_ARGUMENT);
    wasock_client_opts_init(&o);
    o.socket_path = "/nonexistent-wasock-dir/s.sock";
    o.error = error;
    o.error_len = sizeof(error);
    ck_assert_int_eq(wasock_client_open(&o, NULL), WASOCK_E_INVALID_ARGUMENT);

    o.wasi_version = 4;
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_str_eq(error, "wasi_version must be 2 or 3, not 4");
    o.wasi_version = 2;

    memset(long_text, 'a', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    o.token = long_text; /* PROTO_TOKEN_MAX + 1 bytes */
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    o.token = NULL;
    long_text[PROTO_TENANT_MAX + 1] = '\0';
    o.tenant = long_text;
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    o.tenant = NULL;

    memset(long_path, 'p', sizeof(long_path) - 1);
    long_path[0] = '/';
    long_path[sizeof(long_path) - 1] = '\0';
    o.socket_path = long_path;
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);

    o.size = 0;
    ck_assert_int_eq(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);
}
END_TEST

/* ---------------------------------------------------------------- requests */

/* The library must answer these locally: the first frame after HELLO is the
 * valid create. */
static void script_local_checks(fake_daemon *d) {
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    FAKE_EXPECT(d, m.type == PROTO_TCP_CREATE && m.family == PROTO_IPV6);
    proto_reply_ok(&m, &reply);
    reply.new_handle = 3;
    fake_send(d, &reply, NULL, 0);
    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    FAKE_EXPECT(d, m.type == PROTO_TCP_DROP && m.handle == 3);
    fake_answer_drop(d, &m);
}

START_TEST(test_local_checks_without_round_trip) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s = NULL;
    wasock_addr a;
    uint64_t v;
    bool b;

    fake_start(&d, script_local_checks);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, (wasock_family)2, &s), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_create(NULL, WASOCK_IPV4, &s), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV6, &s), WASOCK_OK);

    memset(&a, 0, sizeof(a));
    a.ip.family = (wasock_family)9;
    ck_assert_int_eq(wasock_tcp_start_bind(s, &a), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_start_connect(s, &a), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_start_bind(s, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_start_bind(NULL, &a), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_local_address(s, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_keep_alive_idle_time(s, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_keep_alive_idle_time(NULL, &v), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_keep_alive_enabled(s, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_keep_alive_enabled(NULL, &b), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_shutdown(s, (wasock_shutdown)3), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_accept(s, NULL, NULL, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_send(s, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_receive(NULL, NULL), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(wasock_tcp_address_family(s), WASOCK_IPV6);
    ck_assert(!wasock_tcp_is_listening(s));
    ck_assert(wasock_tcp_ready(s)); /* a new socket is ready */
    wasock_tcp_drop(s);
    wasock_tcp_drop(NULL);
    wasock_client_close(c);
    wasock_client_close(NULL);
    fake_finish(&d);
}
END_TEST

/* Checks the fields of every request the library sends for a sequence of
 * calls, answering each as the test expects. */
static void script_request_fields(fake_daemon *d) {
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x01};
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_answer_create(d, 7) == 0);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_BIND && m.handle == 7);
    FAKE_EXPECT(d, m.addr.family == PROTO_IPV6 && m.addr.port == 8080);
    FAKE_EXPECT(d, memcmp(m.addr.ip, v6, 16) == 0 && m.addr.scope_id == 5);
    fake_send_ok(d, &m);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_FINISH);
    FAKE_EXPECT(d, m.op == PROTO_OP_BIND);
    proto_reply_error(&m, PROTO_E_ADDRESS_IN_USE, "taken", &reply);
    fake_send(d, &reply, NULL, 0);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_SET_OPTION);
    FAKE_EXPECT(d, m.option == PROTO_OPT_KEEP_ALIVE_IDLE_TIME && m.value == 1500000000ull);
    fake_send_ok(d, &m);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_GET_OPTION);
    FAKE_EXPECT(d, m.option == PROTO_OPT_HOP_LIMIT);
    proto_reply_ok(&m, &reply);
    reply.value = 64;
    fake_send(d, &reply, NULL, 0);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_SET_OPTION);
    FAKE_EXPECT(d, m.option == PROTO_OPT_LISTEN_BACKLOG_SIZE && m.value == 9);
    fake_send_ok(d, &m);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_LISTEN && m.handle == 7);
    fake_send_ok(d, &m);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_FINISH);
    FAKE_EXPECT(d, m.op == PROTO_OP_LISTEN);
    fake_send_ok(d, &m);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_LOCAL_ADDRESS);
    proto_reply_ok(&m, &reply);
    proto_addr_set_v6(&reply.addr, v6, 8080, 3, 5);
    fake_send(d, &reply, NULL, 0);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_SHUTDOWN);
    FAKE_EXPECT(d, m.how == PROTO_SHUT_BOTH);
    proto_reply_error(&m, PROTO_E_INVALID_STATE, "", &reply);
    fake_send(d, &reply, NULL, 0);

    fake_serve_drops(d);
}

START_TEST(test_request_fields_and_errors) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s;
    wasock_addr a, local;
    uint8_t hops = 0;

    fake_start(&d, script_request_fields);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV6, &s), WASOCK_OK);
    ck_assert_int_eq(wasock_addr_parse("[2001:db8::1%5]:8080", &a), 0);
    ck_assert_int_eq(wasock_tcp_start_bind(s, &a), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_finish_bind(s), WASOCK_E_ADDRESS_IN_USE);
    ck_assert_int_eq(wasock_tcp_set_keep_alive_idle_time(s, 1500000000ull), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_hop_limit(s, &hops), WASOCK_OK);
    ck_assert_uint_eq(hops, 64);
    ck_assert_int_eq(wasock_tcp_set_listen_backlog_size(s, 9), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_listen(s), WASOCK_OK);
    ck_assert(wasock_tcp_is_listening(s));
    ck_assert_int_eq(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert_int_eq(local.ip.family, WASOCK_IPV6);
    ck_assert_mem_eq(local.ip.addr.v6, a.ip.addr.v6, sizeof(a.ip.addr.v6));
    ck_assert_uint_eq(local.port, 8080);
    ck_assert_uint_eq(local.flow_info, 3);
    ck_assert_uint_eq(local.scope_id, 5);
    ck_assert_int_eq(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_BOTH), WASOCK_E_INVALID_STATE);
    /* An error reply leaves the client working. */
    ck_assert_int_eq(wasock_client_dispatch(c), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

/* A drop does not wait for its reply: the daemon reads the drop, answers
 * the next request first, and the drop's reply arrives late and is ignored.
 * The stream is ordered, so the daemon sees the drop before the request. */
static void script_drop_without_waiting(fake_daemon *d) {
    proto_msg m, drop, reply;

    FAKE_EXPECT(d, fake_answer_create(d, 7) == 0);
    FAKE_EXPECT(d, fake_answer_create(d, 8) == 0);
    FAKE_EXPECT(d, fake_read(d, &drop) == 0 && drop.type == PROTO_TCP_DROP && drop.handle == 7);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_GET_OPTION && m.handle == 8);
    proto_reply_ok(&m, &reply);
    reply.value = 1;
    fake_send(d, &reply, NULL, 0);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_GET_OPTION && m.handle == 8);
    fake_send_ok(d, &drop); /* late, between two replies */
    proto_reply_ok(&m, &reply);
    reply.value = 0;
    fake_send(d, &reply, NULL, 0);
    fake_serve_drops(d);
}

START_TEST(test_drop_does_not_wait) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s, *t;
    bool enabled = false;

    fake_start(&d, script_drop_without_waiting);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &t), WASOCK_OK);
    wasock_tcp_drop(s); /* returns although the daemon has not answered */
    ck_assert_int_eq(wasock_tcp_keep_alive_enabled(t, &enabled), WASOCK_OK);
    ck_assert(enabled);
    ck_assert_int_eq(wasock_tcp_keep_alive_enabled(t, &enabled), WASOCK_OK);
    ck_assert(!enabled);
    wasock_tcp_drop(t);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

/* A reply in the id space of unanswered drops when no drop is due breaks
 * the protocol. */
static void script_stray_drop_reply(fake_daemon *d) {
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_CREATE);
    memset(&reply, 0, sizeof(reply));
    reply.type = PROTO_TCP_DROP | PROTO_REPLY;
    reply.id = 0x80000001u;
    fake_send(d, &reply, NULL, 0);
    fake_serve_drops(d);
}

START_TEST(test_stray_drop_reply_breaks) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s = NULL;

    fake_start(&d, script_stray_drop_reply);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_E_DAEMON);
    ck_assert_ptr_null(s);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

/* Many threads, each dropping sockets in a loop with getters in between:
 * the drops' replies come back while others wait, and every getter must
 * get its own answer. The fake daemon answers in arrival order, so this
 * exercises the hand-over of the reader and sender roles, not reordering. */
#define MANY_THREADS 32
#define MANY_ROUNDS  50

static void script_many_threads(fake_daemon *d) {
    proto_msg m, reply;
    uint32_t next_handle = 1;

    while (fake_read(d, &m) == 0) {
        proto_reply_ok(&m, &reply);
        switch (m.type) {
        case PROTO_TCP_CREATE:
            reply.new_handle = next_handle++;
            break;
        case PROTO_TCP_GET_OPTION:
            reply.value = m.handle;
            break;
        case PROTO_TCP_DROP:
            fake_answer_drop(d, &m);
            continue;
        default:
            fake_fail(d, __LINE__, "unexpected request");
            return;
        }
        fake_send(d, &reply, NULL, 0);
    }
}

struct many_worker {
    wasock_client *c;
    int failures;
};

static void *many_worker_thread(void *arg) {
    struct many_worker *w = arg;

    for (int i = 0; i < MANY_ROUNDS; i++) {
        wasock_tcp *s = NULL;
        uint64_t v = 0;

        if (wasock_tcp_create(w->c, WASOCK_IPV4, &s) != WASOCK_OK) {
            w->failures++;
            continue;
        }
        /* The fake answers a getter with the socket's own handle. */
        if (wasock_tcp_receive_buffer_size(s, &v) != WASOCK_OK || v == 0)
            w->failures++;
        if (wasock_tcp_send_buffer_size(s, &v) != WASOCK_OK || v == 0)
            w->failures++;
        wasock_tcp_drop(s);
    }
    return NULL;
}

START_TEST(test_many_threads_with_drops) {
    fake_daemon d;
    wasock_client *c;
    struct many_worker workers[MANY_THREADS];
    pthread_t threads[MANY_THREADS];

    fake_start(&d, script_many_threads);
    c = open_ok(&d, 2);
    for (int i = 0; i < MANY_THREADS; i++) {
        workers[i].c = c;
        workers[i].failures = 0;
        ck_assert_int_eq(pthread_create(&threads[i], NULL, many_worker_thread, &workers[i]), 0);
    }
    for (int i = 0; i < MANY_THREADS; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_int_eq(workers[i].failures, 0);
    }
    /* Still usable after all that, and nothing is waiting. */
    ck_assert_int_eq(wasock_client_dispatch(c), WASOCK_OK);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

/* ------------------------------------------------------------------ events */

static void script_events(fake_daemon *d) {
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_answer_create(d, 5) == 0);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_CONNECT);
    /* The request's own event goes before its reply. */
    fake_send_event_ready(d, 5, false);
    fake_send_ok(d, &m);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_GET_OPTION);
    /* An event for a handle the client does not know is ignored. */
    fake_send_event_ready(d, 99, true);
    proto_reply_ok(&m, &reply);
    reply.value = 1;
    fake_send(d, &reply, NULL, 0);
    /* The connect resolves later, unasked. */
    fake_send_event_ready(d, 5, true);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_GET_OPTION);
    memset(&reply, 0, sizeof(reply));
    reply.type = PROTO_EV_STREAM_ERROR;
    reply.handle = 5;
    reply.direction = PROTO_DIR_RECEIVE;
    reply.code = PROTO_E_CONNECTION_RESET;
    fake_send(d, &reply, NULL, 0);
    reply.code = PROTO_E_TIMEOUT; /* a later error does not replace the first */
    fake_send(d, &reply, NULL, 0);
    proto_reply_ok(&m, &reply);
    reply.value = 3;
    fake_send(d, &reply, NULL, 0);

    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_DROP && m.handle == 5);
    fake_answer_drop(d, &m);
    /* Events for a dropped handle are ignored. */
    fake_send_event_ready(d, 5, false);
    FAKE_EXPECT(d, fake_answer_create(d, 6) == 0);
    fake_serve_drops(d);
}

START_TEST(test_events_update_resources) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s, *t;
    wasock_addr a;
    bool enabled = false;
    uint32_t count = 0;

    fake_start(&d, script_events);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_OK);
    ck_assert(wasock_tcp_ready(s));
    ck_assert_int_eq(wasock_addr_parse("127.0.0.1:80", &a), 0);
    ck_assert_int_eq(wasock_tcp_start_connect(s, &a), WASOCK_OK);
    ck_assert(!wasock_tcp_ready(s)); /* already updated when the call returns */
    ck_assert_int_eq(wasock_tcp_keep_alive_enabled(s, &enabled), WASOCK_OK);
    ck_assert(enabled);
    /* The resolving event follows that reply: one wait may have to see it,
     * unless it came in the same read as the reply. */
    if (!wasock_tcp_ready(s))
        ck_assert_int_eq(wasock_client_wait(c, CLIENT_WAIT_MS), WASOCK_OK);
    ck_assert(wasock_tcp_ready(s));
    ck_assert_int_eq(wasock_tcp_stream_error(s), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_keep_alive_count(s, &count), WASOCK_OK);
    ck_assert_uint_eq(count, 3);
    ck_assert_int_eq(wasock_tcp_stream_error(s), WASOCK_E_CONNECTION_RESET);
    wasock_tcp_drop(s);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &t), WASOCK_OK);
    ck_assert_int_eq(wasock_client_dispatch(c), WASOCK_OK);
    wasock_tcp_drop(t);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

START_TEST(test_wait_times_out) {
    fake_daemon d;
    wasock_client *c;

    fake_start(&d, fake_serve_drops);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_client_wait(c, 0), WASOCK_E_TIMEOUT);
    ck_assert_int_eq(wasock_client_wait(c, 20), WASOCK_E_TIMEOUT);
    ck_assert_int_eq(wasock_client_dispatch(c), WASOCK_OK);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

/* ----------------------------------------------------------------- streams */

/* Answers finish-connect (0.2) or accept with a pipe per direction: the
 * client's input is pipes[0]'s read end, its output pipes[1]'s write end. */
static void fake_send_streams(fake_daemon *d, proto_msg *reply) {
    int fds[2];

    if (pipe2(d->pipes[0], O_CLOEXEC) < 0 || pipe2(d->pipes[1], O_CLOEXEC) < 0) {
        fake_fail(d, __LINE__, "pipe2");
        return;
    }
    fds[0] = d->pipes[0][0];
    fds[1] = d->pipes[1][1];
    fake_send(d, reply, fds, 2);
    close(d->pipes[0][0]);
    close(d->pipes[1][1]);
}

static void script_streams_0_2(fake_daemon *d) {
    proto_msg m, reply;
    char buf[8];

    FAKE_EXPECT(d, fake_answer_create(d, 1) == 0);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_FINISH);
    FAKE_EXPECT(d, m.op == PROTO_OP_CONNECT);
    proto_reply_ok(&m, &reply);
    fake_send_streams(d, &reply);
    FAKE_EXPECT(d, write(d->pipes[0][1], "down", 4) == 4);
    FAKE_EXPECT(d, wait_readable(d->pipes[1][0], FAKE_IO_TIMEOUT_MS));
    FAKE_EXPECT(d, read(d->pipes[1][0], buf, sizeof(buf)) == 2 && memcmp(buf, "up", 2) == 0);

    /* shutdown(send): the library closed our upload pipe's write end first. */
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_SHUTDOWN);
    FAKE_EXPECT(d, m.how == PROTO_SHUT_SEND);
    FAKE_EXPECT(d, read(d->pipes[1][0], buf, sizeof(buf)) == 0);
    fake_send_ok(d, &m);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_SHUTDOWN);
    FAKE_EXPECT(d, m.how == PROTO_SHUT_RECEIVE);
    fake_send_ok(d, &m);
    close(d->pipes[0][1]);
    close(d->pipes[1][0]);

    /* accept: a new socket of the listener's family with its own streams */
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_ACCEPT && m.handle == 1);
    proto_reply_ok(&m, &reply);
    reply.new_handle = 2;
    reply.family = PROTO_IPV4;
    fake_send_streams(d, &reply);
    close(d->pipes[0][1]);
    close(d->pipes[1][0]);
    fake_serve_drops(d);
}

START_TEST(test_streams_0_2) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s, *conn;
    int in = -1, out = -1, in2 = -1, out2 = -1;
    int fds_before = count_open_fds();
    char buf[8];

    fake_start(&d, script_streams_0_2);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_finish_connect(s, &in, &out), WASOCK_OK);
    ck_assert_int_ge(in, 0);
    ck_assert_int_ge(out, 0);
    ck_assert_int_ne(in, out);
    ck_assert(fcntl(in, F_GETFD) & FD_CLOEXEC);
    ck_assert(fcntl(out, F_GETFD) & FD_CLOEXEC);
    ck_assert(wait_readable(in, CLIENT_WAIT_MS));
    ck_assert_int_eq(read(in, buf, sizeof(buf)), 4);
    ck_assert_int_eq(memcmp(buf, "down", 4), 0);
    ck_assert_int_eq(write(out, "up", 2), 2);

    /* The descriptors keep their numbers; writes fail, reads see EOF. */
    ck_assert_int_eq(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_SEND), WASOCK_OK);
    ck_assert(fd_is_open(out));
    errno = 0;
    ck_assert_int_eq(write(out, "x", 1), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_RECEIVE), WASOCK_OK);
    ck_assert(fd_is_open(in));
    ck_assert_int_eq(read(in, buf, sizeof(buf)), 0);

    ck_assert_int_eq(wasock_tcp_accept(s, &conn, &in2, &out2), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_address_family(conn), WASOCK_IPV4);
    ck_assert(!wasock_tcp_is_listening(conn));
    ck_assert_int_ge(in2, 0);
    ck_assert_int_ge(out2, 0);
    wasock_tcp_drop(conn);
    ck_assert(!fd_is_open(in2));
    ck_assert(!fd_is_open(out2));
    wasock_tcp_drop(s);
    ck_assert(!fd_is_open(in));
    ck_assert(!fd_is_open(out));
    wasock_client_close(c);
    fake_finish(&d);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

static void script_streams_0_3(fake_daemon *d) {
    proto_msg m, reply;
    int p[2];

    FAKE_EXPECT(d, fake_answer_create(d, 1) == 0);
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_FINISH);
    fake_send_ok(d, &m); /* 0.3: no descriptors */
    for (int i = 0; i < 2; i++) {
        FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_STREAM);
        FAKE_EXPECT(d, m.direction == (i == 0 ? PROTO_DIR_RECEIVE : PROTO_DIR_SEND));
        FAKE_EXPECT(d, pipe2(p, O_CLOEXEC) == 0);
        proto_reply_ok(&m, &reply);
        fake_send(d, &reply, &p[i == 0 ? 0 : 1], 1);
        close(p[0]);
        close(p[1]);
    }
    FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_STREAM);
    proto_reply_error(&m, PROTO_E_INVALID_STATE, "taken", &reply);
    fake_send(d, &reply, NULL, 0);
    fake_serve_drops(d);
}

START_TEST(test_streams_0_3) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s;
    int in = 7, out = 7, rx = -1, tx = -1;

    fake_start(&d, script_streams_0_3);
    c = open_ok(&d, 3);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_finish_connect(s, &in, &out), WASOCK_OK);
    ck_assert_int_eq(in, -1);
    ck_assert_int_eq(out, -1);
    ck_assert_int_eq(wasock_tcp_receive(s, &rx), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_send(s, &tx), WASOCK_OK);
    ck_assert_int_ge(rx, 0);
    ck_assert_int_ge(tx, 0);
    ck_assert(fcntl(rx, F_GETFD) & FD_CLOEXEC);
    ck_assert_int_eq(wasock_tcp_send(s, &tx), WASOCK_E_INVALID_STATE);
    wasock_tcp_drop(s);
    /* The 0.3 streams stay the caller's. */
    ck_assert(fd_is_open(rx));
    ck_assert(fd_is_open(tx));
    close(rx);
    close(tx);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

/* ------------------------------------------------------------ broken state */

/* Each script answers TCP_CREATE (handle 1), then misbehaves in answer to
 * the next request (a 0.2 finish-connect, whose reply may carry
 * descriptors); the client must call the daemon broken. */
static void misbehave_close(fake_daemon *d) {
    proto_msg m;

    FAKE_EXPECT(d, fake_read(d, &m) == 0); /* and never answer */
}

static void misbehave_garbage(fake_daemon *d) {
    static const char garbage[] = "this is not a frame, not at all";
    proto_msg m;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    fake_write_raw(d, garbage, sizeof(garbage), NULL, 0);
    fake_serve_drops(d);
}

static void misbehave_missing_fds(fake_daemon *d) {
    uint8_t buf[PROTO_MAX_FRAME];
    proto_msg m, reply;
    ssize_t len;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    proto_reply_ok(&m, &reply);
    reply.nfds = 2; /* announced, never sent */
    len = proto_encode(&reply, buf, sizeof(buf));
    FAKE_EXPECT(d, len > 0);
    fake_write_raw(d, buf, (size_t)len, NULL, 0);
    fake_serve_drops(d);
}

static void misbehave_too_many_fds(fake_daemon *d) {
    uint8_t buf[PROTO_MAX_FRAME];
    proto_msg m, reply;
    int fds[3] = {d->fd, d->fd, d->fd};
    ssize_t len;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    proto_reply_ok(&m, &reply);
    reply.nfds = 2;
    len = proto_encode(&reply, buf, sizeof(buf));
    FAKE_EXPECT(d, len > 0);
    fake_write_raw(d, buf, (size_t)len, fds, 3); /* one more than fits */
    fake_serve_drops(d);
}

static void misbehave_unknown_id(fake_daemon *d) {
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    proto_reply_ok(&m, &reply);
    reply.id = m.id + 1000;
    fake_send(d, &reply, NULL, 0);
    fake_serve_drops(d);
}

static void misbehave_wrong_reply_type(fake_daemon *d) {
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    memset(&reply, 0, sizeof(reply));
    reply.type = PROTO_TCP_LISTEN | PROTO_REPLY;
    reply.id = m.id;
    fake_send(d, &reply, NULL, 0);
    fake_serve_drops(d);
}

static void misbehave_protocol_reply(fake_daemon *d) {
    proto_msg m, reply;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    proto_reply_error(&m, PROTO_E_PROTOCOL, "malformed", &reply);
    fake_send(d, &reply, NULL, 0);
    fake_serve_drops(d);
}

static void misbehave_request_frame(fake_daemon *d) {
    proto_msg m, req;

    FAKE_EXPECT(d, fake_read(d, &m) == 0);
    memset(&req, 0, sizeof(req));
    req.type = PROTO_TCP_DROP; /* a request, from the daemon */
    req.id = 5;
    req.handle = 1;
    fake_send(d, &req, NULL, 0);
    fake_serve_drops(d);
}

static fake_script *const misbehaviours[] = {
    misbehave_close,          misbehave_garbage,       misbehave_missing_fds,
    misbehave_too_many_fds,   misbehave_unknown_id,    misbehave_wrong_reply_type,
    misbehave_protocol_reply, misbehave_request_frame,
};

static fake_script *current_misbehaviour;

static void script_misbehave(fake_daemon *d) {
    FAKE_EXPECT(d, fake_answer_create(d, 1) == 0);
    current_misbehaviour(d);
}

START_TEST(test_misbehaving_daemon_breaks_client) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s, *t = NULL;
    int in = -1, out = -1;
    int fds_before = count_open_fds();

    current_misbehaviour = misbehaviours[_i];
    fake_start(&d, script_misbehave);
    c = open_ok(&d, 2);
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_OK);
    ck_assert_int_eq(wasock_tcp_finish_connect(s, &in, &out), WASOCK_E_DAEMON);
    ck_assert_int_eq(in, -1);
    /* Broken for good, without blocking: the fake daemon may still be up. */
    ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &t), WASOCK_E_DAEMON);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(wasock_tcp_start_listen(s), WASOCK_E_DAEMON);
    ck_assert_int_eq(wasock_client_dispatch(c), WASOCK_E_DAEMON);
    ck_assert_int_eq(wasock_client_wait(c, -1), WASOCK_E_DAEMON);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    fake_finish(&d);
    ck_assert_int_eq(count_open_fds(), fds_before);
}
END_TEST

/* The daemon is gone before the next call: the send fails or the read sees
 * EOF; either way DAEMON, and never SIGPIPE (the default disposition would
 * kill this test). */
START_TEST(test_daemon_gone_no_sigpipe) {
    fake_daemon d;
    wasock_client *c;
    wasock_tcp *s = NULL;

    signal(SIGPIPE, SIG_DFL);
    fake_start(&d, NULL);
    c = open_ok(&d, 2);
    pthread_join(d.thread, NULL); /* the daemon has closed the session */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_E_DAEMON);
    wasock_client_close(c);
    close(d.listen_fd);
    unlink(d.path);
    rmdir(d.dir);
    ck_assert_msg(d.failure[0] == '\0', "%s", d.failure);
}
END_TEST

/* ----------------------------------------------------------------- threads */

/* Answers GET_OPTION with handle * 1000 + option, holding back every other
 * reply until the next request arrived (or a short quiet spell), and sends
 * an event before each reply: replies arrive out of order and interleaved
 * with events. */
static void script_threads(fake_daemon *d) {
    proto_msg m, reply, held = {0};
    bool holding = false;

    for (uint32_t h = 1; h <= THREADS; h++)
        FAKE_EXPECT(d, fake_answer_create(d, h) == 0);
    for (int i = 0; i < THREADS * REQUESTS_PER_THREAD; i++) {
        if (holding && !wait_readable(d->fd, FAKE_HOLD_MS)) {
            fake_send(d, &held, NULL, 0);
            holding = false;
        }
        FAKE_EXPECT(d, fake_read(d, &m) == 0 && m.type == PROTO_TCP_GET_OPTION);
        fake_send_event_ready(d, m.handle, i & 1);
        proto_reply_ok(&m, &reply);
        reply.value = m.handle * 1000ull + m.option;
        if (!holding) {
            held = reply;
            holding = true;
            continue;
        }
        fake_send(d, &reply, NULL, 0);
        fake_send(d, &held, NULL, 0);
        holding = false;
    }
    if (holding)
        fake_send(d, &held, NULL, 0);
    fake_serve_drops(d);
}

struct worker {
    wasock_tcp *s;
    uint32_t handle;
    int failures;
};

static void *thread_worker(void *arg) {
    struct worker *w = arg;

    for (int i = 0; i < REQUESTS_PER_THREAD; i++) {
        uint64_t v = 0;

        if (wasock_tcp_receive_buffer_size(w->s, &v) != WASOCK_OK ||
            v != w->handle * 1000ull + PROTO_OPT_RECEIVE_BUFFER_SIZE)
            w->failures++;
    }
    return NULL;
}

START_TEST(test_threads_share_a_client) {
    fake_daemon d;
    wasock_client *c;
    struct worker workers[THREADS];
    pthread_t threads[THREADS];

    fake_start(&d, script_threads);
    c = open_ok(&d, 2);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(wasock_tcp_create(c, WASOCK_IPV4, &workers[i].s), WASOCK_OK);
        workers[i].handle = (uint32_t)i + 1;
        workers[i].failures = 0;
    }
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, thread_worker, &workers[i]), 0);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_int_eq(workers[i].failures, 0);
    }
    for (int i = 0; i < THREADS; i++)
        wasock_tcp_drop(workers[i].s);
    wasock_client_close(c);
    fake_finish(&d);
}
END_TEST

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *libwasock_suite(void) {
    Suite *s = suite_create("libwasock");
    TCase *tc;

    tc = tcase_create("handshake");
    tcase_add_test(tc, test_open_sends_hello);
    tcase_add_test(tc, test_open_access_denied_copies_detail);
    tcase_add_test(tc, test_open_version_refused);
    tcase_add_test(tc, test_open_version_not_offered);
    tcase_add_test(tc, test_open_unreachable);
    tcase_add_test(tc, test_open_uses_environment);
    tcase_add_test(tc, test_open_bad_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_add_test(tc, test_local_checks_without_round_trip);
    tcase_add_test(tc, test_request_fields_and_errors);
    tcase_add_test(tc, test_drop_does_not_wait);
    tcase_add_test(tc, test_stray_drop_reply_breaks);
    suite_add_tcase(s, tc);

    tc = tcase_create("events");
    tcase_add_test(tc, test_events_update_resources);
    tcase_add_test(tc, test_wait_times_out);
    suite_add_tcase(s, tc);

    tc = tcase_create("streams");
    tcase_add_test(tc, test_streams_0_2);
    tcase_add_test(tc, test_streams_0_3);
    suite_add_tcase(s, tc);

    tc = tcase_create("broken");
    tcase_add_loop_test(tc, test_misbehaving_daemon_breaks_client, 0, COUNT(misbehaviours));
    tcase_add_test(tc, test_daemon_gone_no_sigpipe);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_test(tc, test_threads_share_a_client);
    tcase_add_test(tc, test_many_threads_with_drops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(libwasock_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
