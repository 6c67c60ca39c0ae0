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

#endif
