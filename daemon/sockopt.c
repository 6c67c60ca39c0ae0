/* sockopt.c — socket option plumbing shared by tcp.c and udp.c.
 *
 * Input: descriptors of the daemon's own sockets and option values already
 * validated and clamped by sockrules; nothing here comes from a client.
 */
#include "sockopt.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "proto.h"

int sockopt_get_int(int fd, int level, int name, int *out) {
    socklen_t len = sizeof(*out);

    return getsockopt(fd, level, name, out, &len) < 0 ? -errno : 0;
}

int sockopt_set_int(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

int sockopt_hop_limit_level(uint8_t family) {
    return family == PROTO_IPV6 ? IPPROTO_IPV6 : IPPROTO_IP;
}

int sockopt_hop_limit_name(uint8_t family) {
    return family == PROTO_IPV6 ? IPV6_UNICAST_HOPS : IP_TTL;
}
