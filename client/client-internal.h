/* client-internal.h — helpers shared by libwasock's source files.
 *
 * Not installed. Everything here has hidden visibility (the library is built
 * with -fvisibility=hidden and the version script exports wasock_* only).
 */
#ifndef WASOCK_CLIENT_INTERNAL_H
#define WASOCK_CLIENT_INTERNAL_H

#include <errno.h>

#include "proto.h"
#include "wasock/wasock.h"

/* Converts a caller's address to its wire form. Returns 0, or -EINVAL when
 * the family is neither IPv4 nor IPv6. Writes only *out; owns nothing. */
int client_addr_to_proto(const wasock_addr *a, proto_addr *out);

/* Converts a decoded wire address back. Returns 0, or -EPROTO for a family
 * the decoder should not have let through. *out is written only on success. */
int client_addr_from_proto(const proto_addr *p, wasock_addr *out);

/* --- handoff (handoff.c) ---------------------------------------------------
 * For a connection the policy handed off, the client holds the connected
 * socket and answers these itself on `fd` (borrowed), with the daemon's
 * rules. Each returns the WASI result. */

/* True when fd is a socket (a handed-off connection), not a relay pipe. */
bool client_fd_is_socket(int fd);
wasock_err client_handoff_shutdown(int fd, wasock_shutdown how);
/* getsockname (remote false) or getpeername (remote true) into *out. */
wasock_err client_handoff_address(int fd, bool remote, wasock_addr *out);
/* A proto_tcp_option, value as on the wire (ns, bytes, 0/1). */
wasock_err client_handoff_get_option(int fd, wasock_family family, uint16_t option,
                                     uint64_t *value);
wasock_err client_handoff_set_option(int fd, wasock_family family, uint16_t option, uint64_t value);

#endif
