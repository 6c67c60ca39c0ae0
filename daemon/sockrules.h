/* sockrules.h — the pure rules of WASI TCP sockets: which addresses a bind or
 * connect may name, how wire addresses become sockaddrs and back, and how
 * WASI option values become kernel option values and back.
 *
 * No libuv, no system calls: every function here is a computation, unit
 * tested in tests/unit/check-sockrules.c. The daemon applies the results.
 */
#ifndef WASOCKD_SOCKRULES_H
#define WASOCKD_SOCKRULES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proto.h"

/* Keep-alive idle time and interval: Linux takes whole seconds and refuses
 * values above MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL (32767 s). We clamp into
 * [1, 32767] so no value a guest may send is refused by the kernel, and 0 s
 * (which some systems treat as "reset") never reaches it. */
#define SOCKRULES_KEEPALIVE_MIN_S 1
#define SOCKRULES_KEEPALIVE_MAX_S 32767

/* Keep-alive probe count: Linux refuses values above MAX_TCP_KEEPCNT (127). */
#define SOCKRULES_KEEPALIVE_COUNT_MAX 127

/* Hop limit (IP_TTL / IPV6_UNICAST_HOPS): a u8 in WASI, 0 is refused. */
#define SOCKRULES_HOP_LIMIT_MAX 255

/* Largest socket buffer size we pass to the kernel (16 MiB). The kernel clamps
 * further to net.core.[rw]mem_max; the cap keeps the doubled value Linux
 * stores far from INT_MAX whatever a guest asks for. */
#define SOCKRULES_BUFFER_SIZE_MAX (16u * 1024u * 1024u)

/* Listen backlog: the default when a guest sets none (the common default of
 * listen(2) users), and the cap (Linux's SOMAXCONN since 5.4; the kernel
 * clamps again to net.core.somaxconn). */
#define SOCKRULES_BACKLOG_DEFAULT 128
#define SOCKRULES_BACKLOG_MAX     4096

#define SOCKRULES_NS_PER_S 1000000000ull

/* --- addresses ----------------------------------------------------------- */

/* AF_INET / AF_INET6 for a proto_family, or -1 for another value. */
int sockrules_af(uint8_t proto_family);

bool sockrules_addr_is_unspecified(const proto_addr *a);
/* IPv4 224.0.0.0/4, 255.255.255.255; IPv6 ff00::/8. */
bool sockrules_addr_is_non_unicast(const proto_addr *a);
/* ::ffff:a.b.c.d */
bool sockrules_addr_is_v4_mapped(const proto_addr *a);
/* ::a.b.c.d, the deprecated IPv4-compatible form (not :: and not ::1). */
bool sockrules_addr_is_v4_compatible(const proto_addr *a);

/* Checks an address a socket of `sock_family` is asked to bind to. Returns
 * PROTO_OK, or PROTO_E_INVALID_ARGUMENT with a static reason in *why (the
 * family does not match; IPv4-mapped or -compatible IPv6; multicast or
 * broadcast). */
proto_err sockrules_check_local(uint8_t sock_family, const proto_addr *a, const char **why);

/* The same for a connect target, which additionally must not be the
 * unspecified address nor port 0. */
proto_err sockrules_check_remote(uint8_t sock_family, const proto_addr *a, const char **why);

/* The unspecified address of `family`, port 0: what an implicit bind binds. */
void sockrules_addr_unspecified(uint8_t family, proto_addr *out);

/* Converts to a sockaddr_in / sockaddr_in6 (zeroed first). Returns 0 and
 * sets *len, or -EAFNOSUPPORT for a family that is neither. */
int sockrules_addr_to_sockaddr(const proto_addr *a, struct sockaddr_storage *ss, socklen_t *len);

/* Converts an AF_INET / AF_INET6 sockaddr of `len` bytes. Returns 0, or
 * -EAFNOSUPPORT (another family) / -EINVAL (too short). */
int sockrules_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, proto_addr *out);

/* "127.0.0.1:80", "[::1]:80", "[fe80::1%2]:80" into buf (always
 * NUL-terminated when len > 0); for log messages. Returns buf. */
#define SOCKRULES_ADDR_STRLEN 64
const char *sockrules_addr_format(const proto_addr *a, char *buf, size_t len);

/* --- options -------------------------------------------------------------- */

/* keep-alive-enabled: 0 or 1, anything else is INVALID_ARGUMENT. */
proto_err sockrules_bool_to_kernel(uint64_t value, int *out);

/* keep-alive idle time / interval in ns -> whole seconds for the kernel:
 * 0 is INVALID_ARGUMENT; rounded up (1 ns becomes 1 s) and clamped to
 * [SOCKRULES_KEEPALIVE_MIN_S, SOCKRULES_KEEPALIVE_MAX_S]. */
proto_err sockrules_keepalive_time_to_kernel(uint64_t ns, int *seconds);
/* Kernel seconds -> ns (negative values read as 0). */
uint64_t sockrules_keepalive_time_from_kernel(int seconds);

/* keep-alive count: 0 is INVALID_ARGUMENT; clamped to [1, 127]. */
proto_err sockrules_keepalive_count_to_kernel(uint64_t value, int *count);

/* hop limit: 0 and values above 255 are INVALID_ARGUMENT. */
proto_err sockrules_hop_limit_to_kernel(uint64_t value, int *hops);

/* receive/send buffer size: 0 is INVALID_ARGUMENT; clamped to
 * SOCKRULES_BUFFER_SIZE_MAX. */
proto_err sockrules_buffer_size_to_kernel(uint64_t value, int *bytes);
/* Linux reports twice the size that was set (the rest is bookkeeping space):
 * halve it so what was set reads back as set. Negative values read as 0. */
uint64_t sockrules_buffer_size_from_kernel(int kernel_bytes);

/* listen backlog: 0 is INVALID_ARGUMENT; clamped to [1, SOCKRULES_BACKLOG_MAX]. */
proto_err sockrules_backlog_to_kernel(uint64_t value, int *backlog);

#endif
