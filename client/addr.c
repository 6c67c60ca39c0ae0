/* addr.c — libwasock's address helpers and error names.
 *
 * Converts between the WIT-shaped wasock_addr, its text form, the kernel's
 * sockaddr structures and the wire's proto_addr. Text comes from the caller
 * (an operator's command line, a guest's string): it is untrusted and parsed
 * strictly, so that one address has exactly one accepted spelling family and
 * nothing ambiguous (an IPv6 address without brackets, a port with a sign or
 * trailing garbage) slips through. proto_addr values come from the decoder,
 * which has already range-checked the family.
 */
#include "client-internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Longest host part we accept inside the text form: an IPv6 address in its
 * longest spelling (INET6_ADDRSTRLEN counts the NUL) plus "%" and the ten
 * digits of a 32-bit scope id. Anything longer cannot be valid. */
#define ADDR_HOST_TEXT_MAX (INET6_ADDRSTRLEN + 1 + 10)

/* A port is at most five decimal digits (65535). */
#define ADDR_PORT_DIGITS_MAX 5

/* A scope id is a 32-bit number: at most ten decimal digits. */
#define ADDR_SCOPE_DIGITS_MAX 10

static const char *const wasi_error_names[] = {
    [WASOCK_OK] = "ok",
    [WASOCK_E_UNKNOWN] = "unknown",
    [WASOCK_E_ACCESS_DENIED] = "access-denied",
    [WASOCK_E_NOT_SUPPORTED] = "not-supported",
    [WASOCK_E_INVALID_ARGUMENT] = "invalid-argument",
    [WASOCK_E_OUT_OF_MEMORY] = "out-of-memory",
    [WASOCK_E_TIMEOUT] = "timeout",
    [WASOCK_E_CONCURRENCY_CONFLICT] = "concurrency-conflict",
    [WASOCK_E_NOT_IN_PROGRESS] = "not-in-progress",
    [WASOCK_E_WOULD_BLOCK] = "would-block",
    [WASOCK_E_INVALID_STATE] = "invalid-state",
    [WASOCK_E_NEW_SOCKET_LIMIT] = "new-socket-limit",
    [WASOCK_E_ADDRESS_NOT_BINDABLE] = "address-not-bindable",
    [WASOCK_E_ADDRESS_IN_USE] = "address-in-use",
    [WASOCK_E_REMOTE_UNREACHABLE] = "remote-unreachable",
    [WASOCK_E_CONNECTION_REFUSED] = "connection-refused",
    [WASOCK_E_CONNECTION_RESET] = "connection-reset",
    [WASOCK_E_CONNECTION_ABORTED] = "connection-aborted",
    [WASOCK_E_DATAGRAM_TOO_LARGE] = "datagram-too-large",
    [WASOCK_E_NAME_UNRESOLVABLE] = "name-unresolvable",
    [WASOCK_E_TEMPORARY_RESOLVER_FAILURE] = "temporary-resolver-failure",
    [WASOCK_E_PERMANENT_RESOLVER_FAILURE] = "permanent-resolver-failure",
};

const char *wasock_err_name(wasock_err e) {
    if (e == WASOCK_E_DAEMON)
        return "daemon";
    if (e == WASOCK_E_TRAP)
        return "trap";
    /* The enum's underlying type may be unsigned or int: compare as unsigned
     * so a negative value cast into it also lands in "unknown". */
    if ((unsigned)e < sizeof(wasi_error_names) / sizeof(wasi_error_names[0]))
        return wasi_error_names[e];
    return "unknown";
}

/* Parses 1..max_digits decimal digits (nothing else) into *out, refusing
 * values above max. Returns 0 or -EINVAL. */
static int addr_parse_decimal(const char *text, size_t len, size_t max_digits, uint64_t max,
                              uint64_t *out) {
    uint64_t value = 0;

    if (len == 0 || len > max_digits)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -EINVAL;
        value = value * 10 + (uint64_t)(text[i] - '0');
    }
    if (value > max)
        return -EINVAL;
    *out = value;
    return 0;
}

/* Fills a->ip from 16 bytes of an IPv6 address in network order. */
static void addr_set_v6_bytes(wasock_addr *a, const uint8_t bytes[16]) {
    a->ip.family = WASOCK_IPV6;
    for (int i = 0; i < 8; i++)
        a->ip.addr.v6[i] = (uint16_t)(bytes[2 * i] << 8 | bytes[2 * i + 1]);
}

/* Writes the 16 network-order bytes of an IPv6 wasock_addr. */
static void addr_get_v6_bytes(const wasock_addr *a, uint8_t bytes[16]) {
    for (int i = 0; i < 8; i++) {
        bytes[2 * i] = (uint8_t)(a->ip.addr.v6[i] >> 8);
        bytes[2 * i + 1] = (uint8_t)(a->ip.addr.v6[i] & 0xff);
    }
}

/* Parses the bracketed part of "[v6%scope]" (without the brackets). */
static int addr_parse_v6_host(const char *host, size_t len, wasock_addr *a) {
    char text[ADDR_HOST_TEXT_MAX + 1];
    uint8_t bytes[16];
    uint64_t scope = 0;
    const char *percent;
    size_t addr_len = len;

    if (len == 0 || len > ADDR_HOST_TEXT_MAX)
        return -EINVAL;
    percent = memchr(host, '%', len);
    if (percent) {
        addr_len = (size_t)(percent - host);
        if (addr_parse_decimal(percent + 1, len - addr_len - 1, ADDR_SCOPE_DIGITS_MAX, UINT32_MAX,
                               &scope) < 0)
            return -EINVAL;
    }
    memcpy(text, host, addr_len);
    text[addr_len] = '\0';
    if (inet_pton(AF_INET6, text, bytes) != 1)
        return -EINVAL;
    addr_set_v6_bytes(a, bytes);
    a->flow_info = 0;
    a->scope_id = (uint32_t)scope;
    return 0;
}

/* Parses a dotted-quad IPv4 host. inet_pton is strict: exactly four decimal
 * parts, no leading zeros, no shorthand like "1.2.3". */
static int addr_parse_v4_host(const char *host, size_t len, wasock_addr *a) {
    char text[ADDR_HOST_TEXT_MAX + 1];

    if (len == 0 || len > ADDR_HOST_TEXT_MAX)
        return -EINVAL;
    memcpy(text, host, len);
    text[len] = '\0';
    if (inet_pton(AF_INET, text, a->ip.addr.v4) != 1)
        return -EINVAL;
    a->ip.family = WASOCK_IPV4;
    a->flow_info = 0;
    a->scope_id = 0;
    return 0;
}

int wasock_addr_parse(const char *text, wasock_addr *out) {
    wasock_addr parsed;
    const char *colon;
    uint64_t port;
    size_t len;
    int r;

    if (!text || !out)
        return -1;
    memset(&parsed, 0, sizeof(parsed));
    len = strnlen(text, 2 * ADDR_HOST_TEXT_MAX);
    if (len == 0 || len >= 2 * ADDR_HOST_TEXT_MAX)
        return -1;

    if (text[0] == '[') {
        const char *close = memchr(text, ']', len);

        /* "[host]:port" and nothing else: the port follows the bracket. */
        if (!close || close[1] != ':')
            return -1;
        colon = close + 1;
        r = addr_parse_v6_host(text + 1, (size_t)(close - text - 1), &parsed);
    } else {
        /* IPv4: exactly one colon. A second one means an IPv6 address
         * without the brackets, which is ambiguous and refused. */
        colon = memchr(text, ':', len);
        if (!colon || memchr(colon + 1, ':', len - (size_t)(colon - text) - 1))
            return -1;
        r = addr_parse_v4_host(text, (size_t)(colon - text), &parsed);
    }
    if (r < 0)
        return -1;
    if (addr_parse_decimal(colon + 1, len - (size_t)(colon - text) - 1, ADDR_PORT_DIGITS_MAX,
                           UINT16_MAX, &port) < 0)
        return -1;
    parsed.port = (uint16_t)port;
    *out = parsed;
    return 0;
}

int wasock_addr_format(const wasock_addr *a, char *buf, size_t len) {
    char host[INET6_ADDRSTRLEN];
    int n;

    if (buf && len > 0)
        buf[0] = '\0';
    if (!a || !buf || len == 0)
        return -1;
    if (a->ip.family == WASOCK_IPV4) {
        if (!inet_ntop(AF_INET, a->ip.addr.v4, host, sizeof(host)))
            return -1;
        n = snprintf(buf, len, "%s:%u", host, (unsigned)a->port);
    } else if (a->ip.family == WASOCK_IPV6) {
        uint8_t bytes[16];

        addr_get_v6_bytes(a, bytes);
        if (!inet_ntop(AF_INET6, bytes, host, sizeof(host)))
            return -1;
        if (a->scope_id != 0)
            n = snprintf(buf, len, "[%s%%%lu]:%u", host, (unsigned long)a->scope_id,
                         (unsigned)a->port);
        else
            n = snprintf(buf, len, "[%s]:%u", host, (unsigned)a->port);
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return -1;
    }
    return n;
}

unsigned wasock_addr_to_sockaddr(const wasock_addr *a, struct sockaddr_storage *ss) {
    if (!a || !ss)
        return 0;
    if (a->ip.family == WASOCK_IPV4) {
        struct sockaddr_in sin;

        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_port = htons(a->port);
        memcpy(&sin.sin_addr, a->ip.addr.v4, 4);
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, &sin, sizeof(sin));
        return (unsigned)sizeof(sin);
    }
    if (a->ip.family == WASOCK_IPV6) {
        struct sockaddr_in6 sin6;

        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(a->port);
        sin6.sin6_flowinfo = htonl(a->flow_info);
        sin6.sin6_scope_id = a->scope_id;
        addr_get_v6_bytes(a, sin6.sin6_addr.s6_addr);
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, &sin6, sizeof(sin6));
        return (unsigned)sizeof(sin6);
    }
    return 0;
}

int wasock_addr_from_sockaddr(const struct sockaddr *sa, unsigned salen, wasock_addr *out) {
    wasock_addr a;

    if (!sa || !out || salen < sizeof(sa_family_t))
        return -1;
    memset(&a, 0, sizeof(a));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;

        if (salen < sizeof(sin))
            return -1;
        memcpy(&sin, sa, sizeof(sin));
        a.ip.family = WASOCK_IPV4;
        memcpy(a.ip.addr.v4, &sin.sin_addr, 4);
        a.port = ntohs(sin.sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;

        if (salen < sizeof(sin6))
            return -1;
        memcpy(&sin6, sa, sizeof(sin6));
        addr_set_v6_bytes(&a, sin6.sin6_addr.s6_addr);
        a.port = ntohs(sin6.sin6_port);
        a.flow_info = ntohl(sin6.sin6_flowinfo);
        a.scope_id = sin6.sin6_scope_id;
    } else {
        return -1;
    }
    *out = a;
    return 0;
}

int client_addr_to_proto(const wasock_addr *a, proto_addr *out) {
    if (a->ip.family == WASOCK_IPV4) {
        proto_addr_set_v4(out, a->ip.addr.v4, a->port);
        return 0;
    }
    if (a->ip.family == WASOCK_IPV6) {
        uint8_t bytes[16];

        addr_get_v6_bytes(a, bytes);
        proto_addr_set_v6(out, bytes, a->port, a->flow_info, a->scope_id);
        return 0;
    }
    return -EINVAL;
}

int client_addr_from_proto(const proto_addr *p, wasock_addr *out) {
    wasock_addr a;

    memset(&a, 0, sizeof(a));
    if (p->family == PROTO_IPV4) {
        a.ip.family = WASOCK_IPV4;
        memcpy(a.ip.addr.v4, p->ip, 4);
    } else if (p->family == PROTO_IPV6) {
        addr_set_v6_bytes(&a, p->ip);
        a.flow_info = p->flow_info;
        a.scope_id = p->scope_id;
    } else {
        return -EPROTO;
    }
    a.port = p->port;
    *out = a;
    return 0;
}
