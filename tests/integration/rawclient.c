/* rawclient.c — a bare wire-protocol client for the integration tests (see
 * rawclient.h).
 *
 * Trusts nothing the daemon sends: frames are length-checked with
 * proto_frame_ready and decoded with proto_decode; descriptors that arrive
 * are closed at once.
 */
#include "rawclient.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Pause before trying again to connect to a daemon whose accept queue is
 * full. */
#define RAW_CONNECT_RETRY_US 1000

void itest_raw_open(itest_raw *r, const itest_daemon *d) {
    memset(r, 0, sizeof *r);
    r->next_id = 1;
    r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ck_assert_msg(r->fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(d->socket_path);
    ck_assert(len < sizeof sun.sun_path);
    memcpy(sun.sun_path, d->socket_path, len + 1);
    /* A local stream socket connects at once, or says EAGAIN while the
     * daemon's accept queue is full (a burst of connections): retry then,
     * within the bound, as any client would. */
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    int rc;
    while ((rc = connect(r->fd, (struct sockaddr *)&sun, sizeof sun)) != 0 &&
           (errno == EAGAIN || errno == EINTR) && itest_now_ms() < deadline) {
        usleep(RAW_CONNECT_RETRY_US);
    }
    ck_assert_msg(rc == 0, "connect %s: %s", d->socket_path, strerror(errno));
}

void itest_raw_close(itest_raw *r) {
    if (r->fd >= 0) {
        close(r->fd);
    }
    r->fd = -1;
}

int itest_raw_send_with_fds(itest_raw *r, const void *buf, size_t len, const int *fds,
                            size_t nfds) {
    enum { MAX_SEND_FDS = 8 };
    union {
        char buf[CMSG_SPACE(MAX_SEND_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    ck_assert(nfds <= MAX_SEND_FDS);
    size_t done = 0;
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    bool fds_sent = nfds == 0;
    while (done < len || !fds_sent) {
        struct iovec iov = {.iov_base = (uint8_t *)buf + done, .iov_len = len - done};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (!fds_sent) {
            memset(&control, 0, sizeof control);
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
            memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
        }
        ssize_t n = sendmsg(r->fd, &mh, MSG_NOSIGNAL);
        if (n >= 0) {
            done += (size_t)n;
            fds_sent = true;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -errno;
        }
        int64_t left = deadline - itest_now_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = r->fd, .events = POLLOUT};
        poll(&p, 1, (int)left);
    }
    return 0;
}

int itest_raw_send_bytes(itest_raw *r, const void *buf, size_t len) {
    return itest_raw_send_with_fds(r, buf, len, NULL, 0);
}

int itest_raw_send_msg(itest_raw *r, proto_msg *m) {
    if (m->id == 0 && proto_type_is_request(m->type)) {
        m->id = r->next_id++;
    }
    uint8_t frame[PROTO_MAX_FRAME];
    ssize_t n = proto_encode(m, frame, sizeof frame);
    ck_assert_msg(n > 0, "proto_encode(type 0x%x) = %zd", m->type, n);
    return itest_raw_send_bytes(r, frame, (size_t)n);
}

/* Receives more bytes into the buffer. Returns 1 (bytes arrived), 0 (EOF
 * or reset), -ETIMEDOUT, or another -errno. */
static int raw_fill(itest_raw *r, int timeout_ms) {
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    int pr = poll(&p, 1, timeout_ms);
    if (pr == 0) {
        return -ETIMEDOUT;
    }
    if (pr < 0) {
        return errno == EINTR ? 1 : -errno;
    }
    union {
        char buf[CMSG_SPACE(PROTO_MAX_FDS_PER_FRAME * 4 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = r->buf + r->len, .iov_len = sizeof r->buf - r->len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof control.buf};
    if (iov.iov_len == 0) {
        return -ENOBUFS;
    }
    ssize_t n = recvmsg(r->fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return 1;
        }
        return (errno == ECONNRESET || errno == EPIPE) ? 0 : -errno;
    }
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
                close(fd);
                r->fds_received++;
            }
        }
    }
    if (n == 0) {
        return 0;
    }
    r->len += (size_t)n;
    return 1;
}

int itest_raw_recv_msg(itest_raw *r, proto_msg *m, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        size_t frame_len = 0;
        int ready = proto_frame_ready(r->buf, r->len, &frame_len);
        if (ready < 0) {
            return -EPROTO;
        }
        if (ready == 1) {
            int rc = proto_decode(r->buf, frame_len, m);
            memmove(r->buf, r->buf + frame_len, r->len - frame_len);
            r->len -= frame_len;
            return rc == 0 ? 1 : -EPROTO;
        }
        int64_t left = deadline - itest_now_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        int rc = raw_fill(r, (int)left);
        if (rc <= 0) {
            return rc;
        }
    }
}

int itest_raw_call(itest_raw *r, proto_msg *m, proto_msg *reply, int timeout_ms) {
    int rc = itest_raw_send_msg(r, m);
    if (rc < 0) {
        return rc;
    }
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - itest_now_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        rc = itest_raw_recv_msg(r, reply, (int)left);
        if (rc <= 0) {
            return rc;
        }
        if (reply->type == (uint16_t)(m->type | PROTO_REPLY) && reply->id == m->id) {
            return 1;
        }
        if (reply->type < PROTO_EVENT_FIRST || reply->type > PROTO_EVENT_LAST) {
            return -EPROTO; /* a reply we did not ask for */
        }
    }
}

int itest_raw_hello(itest_raw *r, int wasi, const char *tenant) {
    return itest_raw_hello_version(r, wasi, tenant, PROTO_VERSION_MIN);
}

int itest_raw_hello_version(itest_raw *r, int wasi, const char *tenant, uint16_t version) {
    proto_msg m = itest_raw_request(PROTO_HELLO, 0);
    m.version_min = version;
    m.version_max = version;
    m.wasi = (uint8_t)wasi;
    if (tenant != NULL) {
        size_t len = strlen(tenant);
        ck_assert(len <= PROTO_TENANT_MAX);
        memcpy(m.tenant, tenant, len + 1);
    }
    proto_msg reply;
    int rc = itest_raw_call(r, &m, &reply, ITEST_WAIT_MS);
    return rc == 1 ? reply.err : -1;
}

bool itest_raw_wait_closed(itest_raw *r, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - itest_now_ms();
        if (left <= 0) {
            return false;
        }
        r->len = 0; /* whatever arrives before the close is not looked at */
        int rc = raw_fill(r, (int)left);
        if (rc == 0) {
            return true;
        }
        if (rc == -ETIMEDOUT) {
            return false;
        }
        if (rc < 0) {
            return true; /* any other receive error: the connection is gone */
        }
    }
}

proto_msg itest_raw_request(uint16_t type, uint32_t handle) {
    proto_msg m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.handle = handle;
    return m;
}
