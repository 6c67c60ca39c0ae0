/* udp-harness.h — UDP helpers of the integration tests, on top of harness.h.
 *
 * Shape-aware wrappers (0.2: start/finish, stream, check-send + send; 0.3:
 * bind, connect, send), bounded waits for datagrams, and plain kernel UDP
 * sockets on loopback as peers. Helpers returning void assert on failure.
 */
#ifndef WASOCK_ITEST_UDP_HARNESS_H
#define WASOCK_ITEST_UDP_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

/* Creates a UDP socket (asserts). The socket is the caller's. */
wasock_udp *iudp_socket(wasock_client *c, wasock_family f);

/* Bind in the client's shape: 0.2 start-bind then finish-bind (start-bind's
 * error if it failed); 0.3 wasock_udp_bind. */
wasock_err iudp_bind(wasock_client *c, wasock_udp *u, const wasock_addr *a);

/* Binds to loopback port 0 (asserts) and returns the local address. */
wasock_addr iudp_bind_loopback(wasock_client *c, wasock_udp *u, wasock_family f);

/* Opens the streams in the client's shape: 0.2 stream(remote); 0.3
 * connect(remote), or nothing when remote is NULL. */
wasock_err iudp_open(wasock_client *c, wasock_udp *u, const wasock_addr *remote);

/* Sends in the client's shape: 0.2 check-send (waiting, bounded, until it
 * permits n) then send; 0.3 send. */
wasock_err iudp_send(wasock_client *c, wasock_udp *u, const wasock_datagram *d, size_t n,
                     uint64_t *sent);

/* Sends one datagram (remote NULL: the associated peer) and asserts that it
 * went out. */
void iudp_send_one(wasock_client *c, wasock_udp *u, const void *data, size_t len,
                   const wasock_addr *remote);

/* Receives until `want` datagrams arrived or timeout_ms passed; payloads go
 * back to back into buf (buflen >= WASOCK_DATAGRAM_MAX). Returns how many
 * arrived (at most max). */
size_t iudp_receive_wait(wasock_client *c, wasock_udp *u, wasock_datagram *out, size_t max,
                         uint8_t *buf, size_t buflen, size_t want, int timeout_ms);

/* A plain kernel UDP socket bound to loopback (port 0), non-blocking and
 * close-on-exec; *port gets its port. The fd is the caller's. Asserts. */
int iudp_plain_socket(wasock_family f, uint16_t *port);

/* Sends len bytes from a plain socket to loopback:port. Asserts. */
void iudp_plain_send(int fd, wasock_family f, uint16_t port, const void *data, size_t len);

/* Receives one datagram from a plain socket within timeout_ms: its length
 * (and *from_port), or -ETIMEDOUT / -errno. */
ssize_t iudp_plain_recv(int fd, void *buf, size_t len, int timeout_ms, uint16_t *from_port);

#endif
