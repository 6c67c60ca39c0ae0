/* sockopt.h — socket option plumbing shared by the TCP and UDP state
 * machines: integer getsockopt/setsockopt with our error convention, and
 * where the hop limit lives for each family.
 */
#ifndef WASOCKD_SOCKOPT_H
#define WASOCKD_SOCKOPT_H

#include <stdint.h>

/* getsockopt / setsockopt of one int. Return 0 or a negative errno. */
int sockopt_get_int(int fd, int level, int name, int *out);
int sockopt_set_int(int fd, int level, int name, int value);

/* The level and option name of the unicast hop limit for a socket of
 * `family` (enum proto_family): IP_TTL or IPV6_UNICAST_HOPS. */
int sockopt_hop_limit_level(uint8_t family);
int sockopt_hop_limit_name(uint8_t family);

#endif
