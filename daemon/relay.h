/* relay.h — the data path of one connected TCP socket.
 *
 * The client never holds the network socket. For each connection the daemon
 * hands the client two descriptors and relays between them and the real
 * socket with splice(2), never through a userspace buffer:
 *
 *   download: socket --splice--> [pipe D] --read(2) by client-- client_input
 *   upload:   client_output --write(2) by client--> [pipe U or socket pair]
 *             --splice--> [staging pipe] --splice--> socket
 *
 * One descriptor per direction (rather than one socketpair for both) makes
 * "close this descriptor" mean exactly "drop this WASI stream". The
 * client's output is a pipe (U) or, faster, one end of a stream socket pair
 * (see relay.c for the measurements); either way the relay moves its bytes
 * through a staging pipe of its own, so the client's writes never wait for
 * the lock a splice into the socket holds. Memory per connection is the
 * relay struct; the bytes in flight are bounded by kernel buffers
 * (back-pressure: the relay stops reading the socket while pipe D is full,
 * and the client's writes block/EAGAIN while its output is full).
 *
 * Trust: everything arriving on the client's output comes from the
 * (untrusted) client process; the relay only moves bytes and never
 * interprets them.
 * Requires SIGPIPE to be ignored in the daemon (EPIPE is handled).
 */
#ifndef WASOCKD_RELAY_H
#define WASOCKD_RELAY_H

#include <stdbool.h>

#include <uv.h>

typedef struct relay relay;

/* Why a direction ended, reported once per direction. err is 0 for an orderly
 * end (peer FIN, client closed its output stream, shutdown requested), or a
 * negative errno (-ECONNRESET, -ETIMEDOUT, -EPIPE, ...) when the connection
 * failed. `download` is true for the socket->client direction. */
typedef void (*relay_end_cb)(void *data, bool download, int err);

/* What the client writes its output stream into. */
typedef enum relay_output_kind {
    RELAY_OUTPUT_PIPE,   /* the write end of a pipe (protocol versions 1 and 2) */
    RELAY_OUTPUT_SOCKET, /* one end of an AF_UNIX stream socket pair, shut for
                            reading (protocol version 3) */
} relay_output_kind;

/* Starts relaying for the connected socket `sock`.
 * - sock is borrowed: the caller keeps owning it until relay_drop(); it must
 *   be non-blocking, the caller must not poll, read or write it from now on,
 *   and no other descriptor of the daemon may refer to the same open socket
 *   (the relay watches it in its own epoll set, which closing the last
 *   descriptor leaves).
 * - On success returns 0, *out is the new relay (owned by the caller, ended
 *   with relay_drop), and *client_input / *client_output are the client's
 *   ends: pipe D's read end, and the output of `output_kind`. Both are owned
 *   by the caller, who sends them to the client with SCM_RIGHTS and then
 *   closes its copies. They are O_NONBLOCK and O_CLOEXEC.
 * - On failure returns a negative errno and has created or kept nothing.
 * end_cb may be NULL. */
int relay_new(uv_loop_t *loop, int sock, relay_output_kind output_kind, relay_end_cb end_cb,
              void *cb_data, relay **out, int *client_input, int *client_output);

/* WASI shutdown(receive): stop reading the socket, shutdown(SHUT_RD) it, and
 * close pipe D's write end, discarding nothing the client cannot already see
 * (the client library discards its side). Idempotent. */
void relay_shutdown_receive(relay *r);

/* WASI shutdown(send): forward every byte the client wrote to its output
 * before this call, then shutdown(SHUT_WR) the socket and stop reading the
 * client's output. Later client writes are not forwarded. Idempotent. */
void relay_shutdown_send(relay *r);

/* Drops the connection: the relay takes ownership of `sock` (from
 * relay_new), stops the download direction, forwards the bytes the client
 * wrote before the call (for at most RELAY_LINGER_MS, see relay.c), then
 * closes the socket and every descriptor it holds and frees itself. end_cb is not called after
 * this. The caller must not touch r or sock afterwards. */
void relay_drop(relay *r);

/* The relays of a loop share one epoll set (one descriptor), watched by
 * one uv_poll_t that keeps the loop alive only while a relay lives.
 * relay_watch_start creates it (relay_new does when nobody did; the daemon
 * does at start so the descriptor is there from the beginning): returns 0
 * (also when it exists already) or a negative errno: -EBUSY while the
 * previous one is still closing, -EINVAL when it belongs to another loop.
 * relay_watch_stop closes it: call once no relay is left and before
 * closing the loop, then run the loop once more for the close callback. */
int relay_watch_start(uv_loop_t *loop);
void relay_watch_stop(void);

/* Number of relays alive (dropped ones still lingering included): for
 * metrics and leak tests. */
unsigned relay_count(void);

#endif
