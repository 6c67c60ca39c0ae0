/* handoff.c — the calls libwasock answers itself for a connection the
 * policy handed off (allow.data_path handoff): the client holds the
 * connected TCP socket, and the daemon has closed its copy, so shutdown,
 * the options and the addresses are done on the socket here, with the same
 * rules the daemon applies (wasi-semantics; daemon/sockrules.c).
 *
 * Trust: the descriptor is a connected TCP socket received from the daemon
 * (checked with fstat and getsockopt before it is treated as one: a
 * relayed connection's output stream may be a Unix stream socket); values
 * come from the caller and are checked like the daemon checks them.
 */
#include "client-internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* The daemon's limits (daemon/sockrules.h), repeated: keep-alive times in
 * whole seconds within what Linux accepts, the probe count Linux accepts,
 * and the largest buffer size passed to the kernel. */
#define HANDOFF_KEEPALIVE_MIN_S     1
#define HANDOFF_KEEPALIVE_MAX_S     32767
#define HANDOFF_KEEPALIVE_COUNT_MAX 127
#define HANDOFF_BUFFER_SIZE_MAX     (16u * 1024u * 1024u)
#define HANDOFF_NS_PER_S            1000000000ull

bool client_fd_is_tcp_socket(int fd) {
    struct stat st;
    int domain = 0, protocol = 0;
    socklen_t len = sizeof domain;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 ||
        (domain != AF_INET && domain != AF_INET6)) {
        return false;
    }
    len = sizeof protocol;
    return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == IPPROTO_TCP;
}

/* errno of a failed call on the socket as a WASI error. */
static wasock_err handoff_errno(int err) {
    switch (err) {
    case ENOTCONN:
        return WASOCK_E_INVALID_STATE;
    case EINVAL:
        return WASOCK_E_INVALID_ARGUMENT;
    case ENOMEM:
    case ENOBUFS:
        return WASOCK_E_OUT_OF_MEMORY;
    default:
        return WASOCK_E_UNKNOWN;
    }
}

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

wasock_err client_handoff_shutdown(int fd, wasock_shutdown how) {
    int kernel_how = how == WASOCK_SHUTDOWN_RECEIVE ? SHUT_RD
                     : how == WASOCK_SHUTDOWN_SEND  ? SHUT_WR
                                                    : SHUT_RDWR;

    return shutdown(fd, kernel_how) == 0 ? WASOCK_OK : handoff_errno(errno);
}

wasock_err client_handoff_address(int fd, bool remote, wasock_addr *out) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int r = remote ? getpeername(fd, (struct sockaddr *)&ss, &len)
                   : getsockname(fd, (struct sockaddr *)&ss, &len);

    if (r < 0)
        return handoff_errno(errno);
    return wasock_addr_from_sockaddr((struct sockaddr *)&ss, len, out) == 0 ? WASOCK_OK
                                                                            : WASOCK_E_UNKNOWN;
}

/* The kernel option behind a WASI option: level and name. False for an
 * option that has none (the backlog, is-listening). */
static bool option_kernel_name(uint16_t option, wasock_family family, int *level, int *name) {
    switch (option) {
    case PROTO_OPT_KEEP_ALIVE_ENABLED:
        *level = SOL_SOCKET;
        *name = SO_KEEPALIVE;
        return true;
    case PROTO_OPT_KEEP_ALIVE_IDLE_TIME:
        *level = IPPROTO_TCP;
        *name = TCP_KEEPIDLE;
        return true;
    case PROTO_OPT_KEEP_ALIVE_INTERVAL:
        *level = IPPROTO_TCP;
        *name = TCP_KEEPINTVL;
        return true;
    case PROTO_OPT_KEEP_ALIVE_COUNT:
        *level = IPPROTO_TCP;
        *name = TCP_KEEPCNT;
        return true;
    case PROTO_OPT_HOP_LIMIT:
        *level = family == WASOCK_IPV6 ? IPPROTO_IPV6 : IPPROTO_IP;
        *name = family == WASOCK_IPV6 ? IPV6_UNICAST_HOPS : IP_TTL;
        return true;
    case PROTO_OPT_RECEIVE_BUFFER_SIZE:
        *level = SOL_SOCKET;
        *name = SO_RCVBUF;
        return true;
    case PROTO_OPT_SEND_BUFFER_SIZE:
        *level = SOL_SOCKET;
        *name = SO_SNDBUF;
        return true;
    default:
        return false;
    }
}

wasock_err client_handoff_get_option(int fd, wasock_family family, uint16_t option,
                                     uint64_t *value) {
    socklen_t len = sizeof(int);
    int level, name, v = 0;

    if (option == PROTO_OPT_IS_LISTENING) {
        *value = 0; /* a handed-off socket is connected */
        return WASOCK_OK;
    }
    if (!option_kernel_name(option, family, &level, &name))
        return WASOCK_E_NOT_SUPPORTED;
    if (getsockopt(fd, level, name, &v, &len) < 0)
        return handoff_errno(errno);
    if (v < 0)
        v = 0;
    switch (option) {
    case PROTO_OPT_KEEP_ALIVE_ENABLED:
        *value = v != 0;
        break;
    case PROTO_OPT_KEEP_ALIVE_IDLE_TIME:
    case PROTO_OPT_KEEP_ALIVE_INTERVAL:
        *value = (uint64_t)v * HANDOFF_NS_PER_S;
        break;
    case PROTO_OPT_RECEIVE_BUFFER_SIZE:
    case PROTO_OPT_SEND_BUFFER_SIZE:
        /* Linux reports twice the size set: what was set reads back. */
        *value = (uint64_t)v / 2;
        break;
    default:
        *value = (uint64_t)v;
        break;
    }
    return WASOCK_OK;
}

wasock_err client_handoff_set_option(int fd, wasock_family family, uint16_t option,
                                     uint64_t value) {
    int level, name, v;

    /* A connected socket's backlog cannot change (the daemon's rule). */
    if (option == PROTO_OPT_LISTEN_BACKLOG_SIZE)
        return value == 0 ? WASOCK_E_INVALID_ARGUMENT : WASOCK_E_INVALID_STATE;
    if (!option_kernel_name(option, family, &level, &name))
        return WASOCK_E_NOT_SUPPORTED;
    switch (option) {
    case PROTO_OPT_KEEP_ALIVE_ENABLED:
        if (value > 1)
            return WASOCK_E_INVALID_ARGUMENT;
        v = (int)value;
        break;
    case PROTO_OPT_KEEP_ALIVE_IDLE_TIME:
    case PROTO_OPT_KEEP_ALIVE_INTERVAL:
        if (value == 0)
            return WASOCK_E_INVALID_ARGUMENT;
        /* Rounded up to whole seconds, then clamped. */
        value = value / HANDOFF_NS_PER_S + (value % HANDOFF_NS_PER_S != 0);
        v = (int)clamp_u64(value, HANDOFF_KEEPALIVE_MIN_S, HANDOFF_KEEPALIVE_MAX_S);
        break;
    case PROTO_OPT_KEEP_ALIVE_COUNT:
        if (value == 0)
            return WASOCK_E_INVALID_ARGUMENT;
        v = (int)clamp_u64(value, 1, HANDOFF_KEEPALIVE_COUNT_MAX);
        break;
    case PROTO_OPT_HOP_LIMIT:
        if (value == 0 || value > UINT8_MAX)
            return WASOCK_E_INVALID_ARGUMENT;
        v = (int)value;
        break;
    default: /* buffer sizes */
        if (value == 0)
            return WASOCK_E_INVALID_ARGUMENT;
        v = (int)clamp_u64(value, 1, HANDOFF_BUFFER_SIZE_MAX);
        break;
    }
    if (setsockopt(fd, level, name, &v, sizeof(v)) < 0) {
        /* Buffer sizes are a hint: Linux clamps, others may say ENOBUFS. */
        if (errno == ENOBUFS && level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF))
            return WASOCK_OK;
        return handoff_errno(errno);
    }
    return WASOCK_OK;
}
