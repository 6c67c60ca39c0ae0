/* rawclient.h — a bare wire-protocol client for the integration tests.
 *
 * libwasock only ever sends well-formed frames with handles the daemon gave
 * it. To check what the daemon does with everything else (made-up handles,
 * handles of another session, garbage, truncated or oversized frames,
 * descriptors, requests out of order) the tests speak the protocol directly
 * with the shared codec (proto/proto.h) or with hand-made bytes.
 */
#ifndef WASOCK_ITEST_RAWCLIENT_H
#define WASOCK_ITEST_RAWCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "proto.h"

/* One raw connection to the daemon, with its receive buffer. */
typedef struct itest_raw {
    int fd;
    uint32_t next_id;                 /* request ids: 1, 2, ... */
    uint8_t buf[2 * PROTO_MAX_FRAME]; /* bytes received, not yet decoded */
    size_t len;
    unsigned fds_received; /* descriptors that came with frames (closed) */
} itest_raw;

/* Connects to the daemon's socket (asserts). The connection is the caller's:
 * end it with itest_raw_close. */
void itest_raw_open(itest_raw *r, const itest_daemon *d);

/* Closes the connection (fd -1 afterwards). */
void itest_raw_close(itest_raw *r);

/* Sends bytes as they are (MSG_NOSIGNAL). Returns 0 or -errno (-EPIPE,
 * -ECONNRESET when the daemon already closed). */
int itest_raw_send_bytes(itest_raw *r, const void *buf, size_t len);

/* Sends bytes with descriptors attached (SCM_RIGHTS; the fds stay the
 * caller's). Returns 0 or -errno. */
int itest_raw_send_with_fds(itest_raw *r, const void *buf, size_t len, const int *fds, size_t nfds);

/* Encodes m and sends it; when m->id is 0 and m is a request, the next id
 * is used and written back to m->id. Returns 0 or -errno. Asserts that m
 * encodes. */
int itest_raw_send_msg(itest_raw *r, proto_msg *m);

/* Receives one frame within timeout_ms. Returns 1 with *m decoded, 0 when
 * the daemon closed the connection (EOF or reset), -ETIMEDOUT, or -EPROTO
 * when the daemon sent bytes that do not decode (a daemon bug).
 * Descriptors arriving with frames are closed and counted. */
int itest_raw_recv_msg(itest_raw *r, proto_msg *m, int timeout_ms);

/* Sends request m and waits for its reply (events are skipped). Returns 1
 * with *reply, 0 when the daemon closed the connection, or -errno. */
int itest_raw_call(itest_raw *r, proto_msg *m, proto_msg *reply, int timeout_ms);

/* HELLO with versions [1,1], shape `wasi`, tenant (NULL: none): returns the
 * reply's err (0: admitted), or -1 when no reply came. */
int itest_raw_hello(itest_raw *r, int wasi, const char *tenant);
/* The same, offering exactly `version` (itest_raw_hello offers version 1,
 * whose frames the raw tests spell out). */
int itest_raw_hello_version(itest_raw *r, int wasi, const char *tenant, uint16_t version);

/* Reads and discards frames until the daemon closes the connection:
 * true when it did within timeout_ms. */
bool itest_raw_wait_closed(itest_raw *r, int timeout_ms);

/* A request with type, handle and the next id filled in, the rest zero. */
proto_msg itest_raw_request(uint16_t type, uint32_t handle);

#endif
