/* udp-harness.c — UDP helpers of the integration tests (udp-harness.h).
 *
 * Trusts: libwasock and the kernel's loopback; every wait is bounded.
 */
#include "udp-harness.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

wasock_udp *iudp_socket(wasock_client *c, wasock_family f) {
    wasock_udp *u = NULL;

    ITEST_EXPECT(wasock_udp_create(c, f, &u), WASOCK_OK);
    ck_assert_ptr_nonnull(u);
    return u;
}

wasock_err iudp_bind(wasock_client *c, wasock_udp *u, const wasock_addr *a) {
    wasock_err err;

    if (wasock_client_wasi_version(c) == 3) {
        return wasock_udp_bind(u, a);
    }
    err = wasock_udp_start_bind(u, a);
    if (err != WASOCK_OK) {
        return err;
    }
    return wasock_udp_finish_bind(u);
}

wasock_addr iudp_bind_loopback(wasock_client *c, wasock_udp *u, wasock_family f) {
    wasock_addr a = itest_loopback(f, 0), local;

    ITEST_EXPECT(iudp_bind(c, u, &a), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_local_address(u, &local), WASOCK_OK);
    ck_assert_uint_ne(local.port, 0);
    return local;
}

wasock_err iudp_open(wasock_client *c, wasock_udp *u, const wasock_addr *remote) {
    if (wasock_client_wasi_version(c) == 2) {
        return wasock_udp_stream(u, remote);
    }
    return remote != NULL ? wasock_udp_connect(u, remote) : WASOCK_OK;
}

wasock_err iudp_send(wasock_client *c, wasock_udp *u, const wasock_datagram *d, size_t n,
                     uint64_t *sent) {
    if (wasock_client_wasi_version(c) == 2) {
        int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
        uint64_t permits = 0;
        for (;;) {
            wasock_err err = wasock_udp_check_send(u, &permits);
            if (err != WASOCK_OK) {
                return err;
            }
            if (permits >= n || itest_now_ms() > deadline) {
                break;
            }
            struct pollfd p = {.fd = wasock_udp_fd(u), .events = POLLOUT};
            poll(&p, 1, 10);
        }
        if (permits < n) {
            return WASOCK_E_WOULD_BLOCK;
        }
    }
    return wasock_udp_send(u, d, n, sent);
}

void iudp_send_one(wasock_client *c, wasock_udp *u, const void *data, size_t len,
                   const wasock_addr *remote) {
    wasock_datagram d = {.data = data, .len = len, .has_remote = remote != NULL};
    uint64_t sent = 0;

    if (remote != NULL) {
        d.remote = *remote;
    }
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    ck_assert_uint_eq(sent, 1);
}

size_t iudp_receive_wait(wasock_client *c, wasock_udp *u, wasock_datagram *out, size_t max,
                         uint8_t *buf, size_t buflen, size_t want, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    size_t got = 0, used = 0;

    while (got < want && got < max) {
        size_t n = 0;
        wasock_err err;

        if (buflen - used < WASOCK_DATAGRAM_MAX) {
            break;
        }
        err = wasock_udp_receive(u, max - got, out + got, buf + used, buflen - used, &n);
        ck_assert_msg(err == WASOCK_OK, "receive: %s", wasock_err_name(err));
        for (size_t i = 0; i < n; i++) {
            used += out[got + i].len;
        }
        got += n;
        if (got >= want) {
            break;
        }
        int64_t left = deadline - itest_now_ms();
        if (left <= 0) {
            break;
        }
        struct pollfd p[2] = {{.fd = wasock_udp_fd(u), .events = POLLIN},
                              {.fd = wasock_client_fd(c), .events = POLLIN}};
        poll(p, 2, left > 50 ? 50 : (int)left);
        if (p[1].revents) {
            wasock_client_dispatch(c);
        }
    }
    return got;
}

static socklen_t loopback_sockaddr(wasock_family f, uint16_t port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof(*ss));
    if (f == WASOCK_IPV4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof(*sin);
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    sin6->sin6_addr = in6addr_loopback;
    return sizeof(*sin6);
}

int iudp_plain_socket(wasock_family f, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t len = loopback_sockaddr(f, 0, &ss);
    int fd =
        socket(f == WASOCK_IPV4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&ss, len), 0);
    len = sizeof(ss);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (port != NULL) {
        *port = ntohs(f == WASOCK_IPV4 ? ((struct sockaddr_in *)&ss)->sin_port
                                       : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

void iudp_plain_send(int fd, wasock_family f, uint16_t port, const void *data, size_t len) {
    struct sockaddr_storage ss;
    socklen_t salen = loopback_sockaddr(f, port, &ss);

    ck_assert_int_eq(sendto(fd, data, len, 0, (struct sockaddr *)&ss, salen), (ssize_t)len);
}

ssize_t iudp_plain_recv(int fd, void *buf, size_t len, int timeout_ms, uint16_t *from_port) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    struct sockaddr_storage ss;
    socklen_t salen = sizeof(ss);
    ssize_t n;

    if (poll(&p, 1, timeout_ms) <= 0) {
        return -ETIMEDOUT;
    }
    n = recvfrom(fd, buf, len, 0, (struct sockaddr *)&ss, &salen);
    if (n < 0) {
        return -errno;
    }
    if (from_port != NULL) {
        *from_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                   : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return n;
}
