/* wasock-nc.h — what the parts of wasock-nc share: exit statuses, and the
 * UDP and lookup modes (wasock-nc-udp.c).
 */
#ifndef WASOCK_NC_H
#define WASOCK_NC_H

#include <stdbool.h>

#include "wasock/wasock.h"

/* Exit statuses, documented in the help text. */
#define NC_EXIT_OK           0
#define NC_EXIT_SOCKET_ERROR 1 /* a socket operation failed; its WASI error is printed */
#define NC_EXIT_USAGE        2 /* bad command line */
#define NC_EXIT_DAEMON       3 /* the daemon cannot be reached, or went away */
#define NC_EXIT_REFUSED      4 /* the daemon refused the session (tenant, token) */
#define NC_EXIT_LOCAL_IO     5 /* reading stdin or writing stdout failed */

/* What the UDP mode needs from the command line. */
struct nc_udp_options {
    bool listen;      /* -l: bind to address and answer whoever sends */
    bool shape_0_3;   /* -3 */
    bool verbose;     /* -v */
    int wait_seconds; /* -w: after stdin ends, receive this long (-1: not at all) */
    const char *address_text;
    wasock_addr address;
};

/* -u: each line of stdin (without its newline) is one datagram to the
 * peer; each datagram received is written to stdout followed by a newline.
 * Without -l the peer is `address`; with -l the socket is bound to it and
 * lines go to whoever sent the last datagram. Returns an exit status. */
int nc_run_udp(const struct nc_udp_options *o, wasock_client *c);

/* -L NAME: prints every address NAME resolves to, one per line. Returns an
 * exit status. */
int nc_run_lookup(const char *name, bool verbose, wasock_client *c);

#endif
