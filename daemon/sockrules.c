/* sockrules.c — pure WASI socket rules: address checks, address and option
 * conversions.
 *
 * Input: proto_addr and option values decoded from a client's frames, so
 * untrusted in value (every family and range is checked here) but already
 * well-formed in shape (the codec checked lengths). Nothing here performs a
 * system call.
 */
#include "sockrules.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int sockrules_af(uint8_t proto_family) {
    switch (proto_family) {
    case PROTO_IPV4:
        return AF_INET;
    case PROTO_IPV6:
        return AF_INET6;
    }
    return -1;
}

static bool bytes_all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

bool sockrules_addr_is_unspecified(const proto_addr *a) {
    return bytes_all_zero(a->ip, a->family == PROTO_IPV4 ? 4 : 16);
}

bool sockrules_addr_is_non_unicast(const proto_addr *a) {
    if (a->family == PROTO_IPV4) {
        bool multicast = (a->ip[0] & 0xf0) == 0xe0;
        bool broadcast = a->ip[0] == 255 && a->ip[1] == 255 && a->ip[2] == 255 && a->ip[3] == 255;
        return multicast || broadcast;
    }
    return a->ip[0] == 0xff;
}

bool sockrules_addr_is_v4_mapped(const proto_addr *a) {
    return a->family == PROTO_IPV6 && bytes_all_zero(a->ip, 10) && a->ip[10] == 0xff &&
           a->ip[11] == 0xff;
}

bool sockrules_addr_is_v4_compatible(const proto_addr *a) {
    if (a->family != PROTO_IPV6 || !bytes_all_zero(a->ip, 12)) {
        return false;
    }
    /* :: and ::1 share the prefix but are the unspecified and loopback
     * addresses, not IPv4-compatible ones. */
    bool unspecified = bytes_all_zero(a->ip + 12, 4);
    bool loopback = bytes_all_zero(a->ip + 12, 3) && a->ip[15] == 1;
    return !unspecified && !loopback;
}

/* The checks bind and connect share, in one place so their reasons match. */
static proto_err check_common(uint8_t sock_family, const proto_addr *a, const char **why) {
    if (a->family != sock_family) {
        *why = "address family does not match the socket";
        return PROTO_E_INVALID_ARGUMENT;
    }
    if (sockrules_af(a->family) < 0) {
        *why = "unknown address family";
        return PROTO_E_INVALID_ARGUMENT;
    }
    /* Mapped and compatible forms are refused so they can never be a way
     * around an IPv4 rule of the policy (v6 sockets are v6-only anyway). */
    if (sockrules_addr_is_v4_mapped(a)) {
        *why = "IPv4-mapped IPv6 addresses are not allowed";
        return PROTO_E_INVALID_ARGUMENT;
    }
    if (sockrules_addr_is_v4_compatible(a)) {
        *why = "IPv4-compatible IPv6 addresses are not allowed";
        return PROTO_E_INVALID_ARGUMENT;
    }
    if (sockrules_addr_is_non_unicast(a)) {
        *why = "not a unicast address";
        return PROTO_E_INVALID_ARGUMENT;
    }
    return PROTO_OK;
}

proto_err sockrules_check_local(uint8_t sock_family, const proto_addr *a, const char **why) {
    *why = NULL;
    return check_common(sock_family, a, why);
}

proto_err sockrules_check_remote(uint8_t sock_family, const proto_addr *a, const char **why) {
    proto_err err;

    *why = NULL;
    err = check_common(sock_family, a, why);
    if (err != PROTO_OK) {
        return err;
    }
    if (sockrules_addr_is_unspecified(a)) {
        *why = "cannot connect to the unspecified address";
        return PROTO_E_INVALID_ARGUMENT;
    }
    if (a->port == 0) {
        *why = "cannot connect to port 0";
        return PROTO_E_INVALID_ARGUMENT;
    }
    return PROTO_OK;
}

void sockrules_addr_unspecified(uint8_t family, proto_addr *out) {
    memset(out, 0, sizeof(*out));
    out->family = family;
}

int sockrules_addr_to_sockaddr(const proto_addr *a, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof(*ss));
    if (a->family == PROTO_IPV4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(a->port);
        memcpy(&sin->sin_addr, a->ip, 4);
        *len = sizeof(*sin);
        return 0;
    }
    if (a->family == PROTO_IPV6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(a->port);
        sin6->sin6_flowinfo = htonl(a->flow_info);
        memcpy(&sin6->sin6_addr, a->ip, 16);
        sin6->sin6_scope_id = a->scope_id;
        *len = sizeof(*sin6);
        return 0;
    }
    return -EAFNOSUPPORT;
}

int sockrules_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, proto_addr *out) {
    if (len < (socklen_t)sizeof(sa_family_t)) {
        return -EINVAL;
    }
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        if (len < (socklen_t)sizeof(sin)) {
            return -EINVAL;
        }
        memcpy(&sin, sa, sizeof(sin));
        memset(out, 0, sizeof(*out));
        out->family = PROTO_IPV4;
        out->port = ntohs(sin.sin_port);
        memcpy(out->ip, &sin.sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        if (len < (socklen_t)sizeof(sin6)) {
            return -EINVAL;
        }
        memcpy(&sin6, sa, sizeof(sin6));
        memset(out, 0, sizeof(*out));
        out->family = PROTO_IPV6;
        out->port = ntohs(sin6.sin6_port);
        out->flow_info = ntohl(sin6.sin6_flowinfo);
        memcpy(out->ip, &sin6.sin6_addr, 16);
        out->scope_id = sin6.sin6_scope_id;
        return 0;
    }
    return -EAFNOSUPPORT;
}

const char *sockrules_addr_format(const proto_addr *a, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN];

    if (len == 0) {
        return buf;
    }
    if (a->family == PROTO_IPV4 && inet_ntop(AF_INET, a->ip, ip, sizeof(ip)) != NULL) {
        snprintf(buf, len, "%s:%u", ip, (unsigned)a->port);
    } else if (a->family == PROTO_IPV6 && inet_ntop(AF_INET6, a->ip, ip, sizeof(ip)) != NULL) {
        if (a->scope_id != 0) {
            snprintf(buf, len, "[%s%%%u]:%u", ip, (unsigned)a->scope_id, (unsigned)a->port);
        } else {
            snprintf(buf, len, "[%s]:%u", ip, (unsigned)a->port);
        }
    } else {
        snprintf(buf, len, "(family %u)", (unsigned)a->family);
    }
    return buf;
}

/* --- options -------------------------------------------------------------- */

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

proto_err sockrules_bool_to_kernel(uint64_t value, int *out) {
    if (value > 1) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    *out = (int)value;
    return PROTO_OK;
}

proto_err sockrules_keepalive_time_to_kernel(uint64_t ns, int *seconds) {
    uint64_t s;

    if (ns == 0) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    /* Round up without overflowing: 1 ns must not become 0 s, and a value
     * that is not a whole number of seconds must not shrink. */
    s = ns / SOCKRULES_NS_PER_S + (ns % SOCKRULES_NS_PER_S != 0);
    *seconds = (int)clamp_u64(s, SOCKRULES_KEEPALIVE_MIN_S, SOCKRULES_KEEPALIVE_MAX_S);
    return PROTO_OK;
}

uint64_t sockrules_keepalive_time_from_kernel(int seconds) {
    return seconds < 0 ? 0 : (uint64_t)seconds * SOCKRULES_NS_PER_S;
}

proto_err sockrules_keepalive_count_to_kernel(uint64_t value, int *count) {
    if (value == 0) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    *count = (int)clamp_u64(value, 1, SOCKRULES_KEEPALIVE_COUNT_MAX);
    return PROTO_OK;
}

proto_err sockrules_hop_limit_to_kernel(uint64_t value, int *hops) {
    if (value == 0 || value > SOCKRULES_HOP_LIMIT_MAX) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    *hops = (int)value;
    return PROTO_OK;
}

proto_err sockrules_buffer_size_to_kernel(uint64_t value, int *bytes) {
    if (value == 0) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    *bytes = (int)clamp_u64(value, 1, SOCKRULES_BUFFER_SIZE_MAX);
    return PROTO_OK;
}

uint64_t sockrules_buffer_size_from_kernel(int kernel_bytes) {
    return kernel_bytes < 0 ? 0 : (uint64_t)kernel_bytes / 2;
}

proto_err sockrules_backlog_to_kernel(uint64_t value, int *backlog) {
    if (value == 0) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    *backlog = (int)clamp_u64(value, 1, SOCKRULES_BACKLOG_MAX);
    return PROTO_OK;
}
