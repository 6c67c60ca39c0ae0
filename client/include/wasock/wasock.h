/* wasock.h — libwasock, the runtime-facing C API of wasockd.
 *
 * A WebAssembly runtime implements wasi:sockets by calling these functions:
 * one C function per WIT method, named after the 0.2 method
 * (wasock_<resource>_<method>, dashes as underscores). Every socket operation
 * is performed by the wasockd daemon, which applies the operator's policy;
 * the runtime process itself needs no network access.
 *
 * Installed as <wasock/wasock.h>; link with `pkg-config --libs libwasock`.
 * The header compiles as C99 and as C++.
 *
 * Conventions
 * - Every fallible function returns wasock_err. Out-parameters come last and
 *   are written only on success (WASOCK_OK).
 * - Calls that talk to the daemon block for one round trip (microseconds on
 *   a local Unix socket) and never wait for the network, except the 0.3
 *   conveniences wasock_tcp_bind/_connect/_listen, which wait for the
 *   operation to resolve, as a 0.3 async call does.
 * - The library never logs, never exits, installs no signal handler and
 *   starts no thread. It writes to the daemon with MSG_NOSIGNAL, so a daemon
 *   that goes away yields WASOCK_E_DAEMON, never SIGPIPE.
 * - All descriptors the library creates or receives are close-on-exec.
 *
 * Thread safety
 * - One wasock_client may be used from several threads at once: requests are
 *   serialised on the connection under an internal mutex, and replies are
 *   matched to their callers by request id.
 * - One resource (wasock_tcp, wasock_udp, wasock_resolve) must not be used
 *   from two threads at once.
 * - A resource must not be used after its drop, nor after
 *   wasock_client_close() of its client.
 * - A thread waiting for its reply reads the connection itself when no other
 *   thread does, and otherwise sleeps until the reading thread has dispatched
 *   what arrived. So every call also handles events (readiness stays current
 *   in every thread), and wasock_client_dispatch returns at once when another
 *   thread is reading (that thread dispatches).
 * - Waiting costs a little processor time: a thread yields the processor
 *   for up to about 50 us (reading) or 50 yields (sleeping) before it
 *   sleeps in the kernel, because on a virtual machine waking a sleeping
 *   thread costs more than a whole round trip to the daemon.
 * - Requests from several threads are written together: one send(2) may
 *   carry many threads' requests, in the order the calls queued them.
 *
 * When the daemon goes away
 * - When the daemon closes the connection, dies, or sends something that
 *   breaks the protocol, the client is broken for good: every call returns
 *   WASOCK_E_DAEMON at once, without blocking, and threads waiting for a
 *   reply are woken with it. wasock_tcp_drop and wasock_client_close still
 *   free memory and close descriptors. wasock_client_fd() then stays
 *   readable; close the client and open a new one.
 * - Locally checked arguments (NULL pointers, a family that is neither IPv4
 *   nor IPv6, a shutdown type outside the enum) return INVALID_ARGUMENT
 *   without a round trip; every other check is the daemon's.
 */
#ifndef WASOCK_WASOCK_H
#define WASOCK_WASOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define WASOCK_API __attribute__((visibility("default")))
#else
#define WASOCK_API
#endif

/* ------------------------------------------------------------------ errors */

typedef enum wasock_err {
    WASOCK_OK = 0,
    /* the wasi:sockets 0.2 error-code enum, in WIT order, starting at 1 */
    WASOCK_E_UNKNOWN,
    WASOCK_E_ACCESS_DENIED,
    WASOCK_E_NOT_SUPPORTED,
    WASOCK_E_INVALID_ARGUMENT,
    WASOCK_E_OUT_OF_MEMORY,
    WASOCK_E_TIMEOUT,
    WASOCK_E_CONCURRENCY_CONFLICT,
    WASOCK_E_NOT_IN_PROGRESS,
    WASOCK_E_WOULD_BLOCK,
    WASOCK_E_INVALID_STATE,
    WASOCK_E_NEW_SOCKET_LIMIT,
    WASOCK_E_ADDRESS_NOT_BINDABLE,
    WASOCK_E_ADDRESS_IN_USE,
    WASOCK_E_REMOTE_UNREACHABLE,
    WASOCK_E_CONNECTION_REFUSED,
    WASOCK_E_CONNECTION_RESET,
    WASOCK_E_CONNECTION_ABORTED,
    WASOCK_E_DATAGRAM_TOO_LARGE,
    WASOCK_E_NAME_UNRESOLVABLE,
    WASOCK_E_TEMPORARY_RESOLVER_FAILURE,
    WASOCK_E_PERMANENT_RESOLVER_FAILURE,
    /* not WASI error codes */
    WASOCK_E_DAEMON = 100, /* the daemon is unreachable, went away, or broke the protocol */
    WASOCK_E_TRAP = 101,   /* the guest broke a rule WASI defines as a trap: the host must trap it */
} wasock_err;

/* WIT spelling ("access-denied"), "daemon", "trap"; "unknown" for any other
 * value. The string is static. */
WASOCK_API const char *wasock_err_name(wasock_err e);

/* --------------------------------------------------------------- addresses */

typedef enum wasock_family { WASOCK_IPV4 = 0, WASOCK_IPV6 = 1 } wasock_family;

typedef struct wasock_ip {
    wasock_family family;
    union {
        uint8_t v4[4];
        uint16_t v6[8]; /* 8 segments, host byte order, as in WIT */
    } addr;
} wasock_ip;

typedef struct wasock_addr {
    wasock_ip ip;
    uint16_t port;
    uint32_t flow_info, scope_id; /* IPv6 only; ignored and zero for IPv4 */
} wasock_addr;

/* Longest text wasock_addr_format writes, with its NUL:
 * "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535". */
#define WASOCK_ADDR_STRLEN 64

/* Parses "127.0.0.1:80", "[::1]:80", "[fe80::1%2]:80" (scope as a number).
 * Strict: IPv4 in dotted-quad form only (no "1.2.3", no leading zeros),
 * IPv6 always in brackets, a port of 1 to 5 decimal digits up to 65535 is
 * required, no spaces. flow_info is set to 0. Returns 0, or -1 for anything
 * else (out untouched). */
WASOCK_API int wasock_addr_parse(const char *text, wasock_addr *out);
/* Formats like the parser reads (IPv6 in its canonical lower-case form, the
 * scope only when non-zero; flow_info has no text form). Returns the
 * characters written (without NUL), or -1 if len is too small or the family
 * is invalid (buf then holds an empty string if len>0). WASOCK_ADDR_STRLEN
 * is always enough. */
WASOCK_API int wasock_addr_format(const wasock_addr *a, char *buf, size_t len);

struct sockaddr;
struct sockaddr_storage;
/* Converts to a sockaddr_in / sockaddr_in6 in *ss; returns its length, or 0
 * for an invalid family. */
WASOCK_API unsigned wasock_addr_to_sockaddr(const wasock_addr *a, struct sockaddr_storage *ss);
/* Converts an AF_INET / AF_INET6 sockaddr; returns 0, or -1 for another
 * family or a too-short length. */
WASOCK_API int wasock_addr_from_sockaddr(const struct sockaddr *sa, unsigned salen,
                                         wasock_addr *out);

/* ------------------------------------------------------------------ client */

typedef struct wasock_client wasock_client;

typedef struct wasock_client_opts {
    size_t size;             /* set by wasock_client_opts_init; lets the struct grow */
    const char *socket_path; /* NULL: $WASOCK_SOCKET, then the built-in default path */
    const char *tenant;      /* tenant this connection acts for; NULL: "default" */
    const char *token;       /* optional tenant token; NULL: none */
    int wasi_version;        /* 2 or 3: which WASI shape the host implements (default 2) */
    char *error;             /* optional buffer: why open failed, as text */
    size_t error_len;
} wasock_client_opts;

/* Sets size and the defaults above. */
WASOCK_API void wasock_client_opts_init(wasock_client_opts *o);

/* Connects to the daemon and performs the handshake. On success *out is a
 * new client owned by the caller (free it with wasock_client_close).
 * Returns ACCESS_DENIED when the daemon refused this peer as this tenant
 * (the daemon's reason is copied to o->error), DAEMON when the daemon is
 * unreachable or the handshake failed, INVALID_ARGUMENT for bad options
 * (size 0, wasi_version not 2 or 3, over-long tenant/token or path),
 * OUT_OF_MEMORY. Strings in o are copied; o may be freed afterwards.
 * The handshake is bounded: a daemon that does not accept and answer within
 * ten seconds yields DAEMON. $WASOCK_SOCKET is ignored in set-user-ID and
 * set-group-ID processes (secure_getenv). o->error (when set and
 * error_len > 0) is written only on failure, NUL-terminated.
 * Protocol: the library offers versions 1..2 (proto/PROTOCOL.md) and uses
 * what the daemon chooses; with version 2 finish-connect is answered from
 * the outcome the daemon pushed, without a round trip. $WASOCK_PROTOCOL_MAX
 * set to 1 makes it offer version 1 only (to compare, or to rule the
 * newer exchange out when chasing a problem); other values are ignored, as
 * is the variable in set-user-ID and set-group-ID processes. */
WASOCK_API wasock_err wasock_client_open(const wasock_client_opts *o, wasock_client **out);

/* Closes the connection and frees the client and every resource still open
 * on it (their handles are invalid afterwards; stream descriptors obtained
 * from wasock_tcp_send/_receive stay the caller's). No other thread may be
 * inside a call on c. NULL is allowed. The daemon then drops everything the
 * session held. */
WASOCK_API void wasock_client_close(wasock_client *c);

/* The connection descriptor, borrowed for the client's lifetime: readable
 * means replies or events are waiting, so call wasock_client_dispatch. */
WASOCK_API int wasock_client_fd(const wasock_client *c);

/* Handles whatever has arrived (maybe nothing); never blocks.
 * OK, or DAEMON when the daemon has gone away. */
WASOCK_API wasock_err wasock_client_dispatch(wasock_client *c);

/* Blocks until at least one reply or event arrived, and dispatches it: OK;
 * nothing within timeout_ms (-1 = forever): TIMEOUT; daemon gone: DAEMON. */
WASOCK_API wasock_err wasock_client_wait(wasock_client *c, int timeout_ms);

/* The WASI shape this client speaks (2 or 3), as negotiated. */
WASOCK_API int wasock_client_wasi_version(const wasock_client *c);

/* --------------------------------------------------------------------- TCP */

typedef struct wasock_tcp wasock_tcp;

typedef enum wasock_shutdown {
    WASOCK_SHUTDOWN_RECEIVE,
    WASOCK_SHUTDOWN_SEND,
    WASOCK_SHUTDOWN_BOTH
} wasock_shutdown;

/* create-tcp-socket. *out is owned by the caller until wasock_tcp_drop (or
 * wasock_client_close). ACCESS_DENIED when the policy allows no TCP for this
 * tenant, NEW_SOCKET_LIMIT at the tenant's socket limit, INVALID_ARGUMENT
 * (locally) for a family that is neither IPv4 nor IPv6. */
WASOCK_API wasock_err wasock_tcp_create(wasock_client *c, wasock_family f, wasock_tcp **out);

/* 0.2 shape. Argument and state errors come from start_*; kernel and policy
 * results (address-in-use, access-denied, connection-refused, ...) come from
 * finish_*, which returns WOULD_BLOCK while the operation is still in
 * progress (the kernel is not done, or a permission prompt is pending) and
 * NOT_IN_PROGRESS when nothing was started. */
WASOCK_API wasock_err wasock_tcp_start_bind(wasock_tcp *s, const wasock_addr *local);
WASOCK_API wasock_err wasock_tcp_finish_bind(wasock_tcp *s);
WASOCK_API wasock_err wasock_tcp_start_connect(wasock_tcp *s, const wasock_addr *remote);
/* On success in a 0.2 session: *input_fd and *output_fd are the WASI input
 * and output streams: non-blocking descriptors to read, write and poll.
 * They may be the same descriptor or two (the runtime must handle both):
 * normally two relayed by the daemon (the input a pipe; the output a pipe,
 * or from protocol 3 a Unix stream socket whose reads give EOF: write and
 * poll either the same way); when the policy hands the connection off
 * (allow: { data_path: handoff }), one descriptor, the connected TCP
 * socket itself. For a handed-off socket libwasock answers
 * shutdown, the options and the addresses locally on the socket (the daemon
 * no longer holds it), with the same rules; see policy/REFERENCE.md for
 * what handing a socket to the runtime means for trust.
 * They belong to the wasock_tcp: do not close them; wasock_tcp_shutdown
 * changes them and wasock_tcp_drop closes them. In a 0.3 session both are
 * set to -1: take streams with wasock_tcp_send/_receive. Either pointer may
 * be NULL when the caller does not want it. A read that returns 0 (EOF)
 * means the stream is closed; wasock_tcp_stream_error says whether the
 * connection ended with an error (e.g. connection-reset). Once the socket
 * is ready (the connect resolved) and the daemon speaks protocol 2, the
 * outcome and the streams are already here and the call does not wait for
 * the daemon (relayed connections; a handoff still takes a round trip). */
WASOCK_API wasock_err wasock_tcp_finish_connect(wasock_tcp *s, int *input_fd, int *output_fd);
WASOCK_API wasock_err wasock_tcp_start_listen(wasock_tcp *s);
WASOCK_API wasock_err wasock_tcp_finish_listen(wasock_tcp *s);
/* Takes one waiting connection: WOULD_BLOCK when none waits. *conn is a new
 * connected wasock_tcp owned by the caller; its streams are returned as for
 * finish_connect (fds -1 in a 0.3 session), including a handoff when the
 * accept rule says so (one descriptor, the socket, for both streams). Accepted sockets report the
 * listener's options as they were at accept time. */
WASOCK_API wasock_err wasock_tcp_accept(wasock_tcp *l, wasock_tcp **conn, int *input_fd,
                                        int *output_fd);
WASOCK_API wasock_err wasock_tcp_local_address(wasock_tcp *s, wasock_addr *out);
WASOCK_API wasock_err wasock_tcp_remote_address(wasock_tcp *s, wasock_addr *out);
/* Answered locally, without a round trip: true once finish_listen (or the
 * 0.3 listen) succeeded on s; the family is the one s was created with (an
 * accepted socket has its listener's). */
WASOCK_API bool wasock_tcp_is_listening(wasock_tcp *s);
WASOCK_API wasock_family wasock_tcp_address_family(wasock_tcp *s);
/* Options: durations in nanoseconds, sizes in bytes. The rules (0 is
 * INVALID_ARGUMENT, keep-alive times round up to whole seconds, clamping,
 * buffer sizes read back as set) are the daemon's; see wasi-semantics. */
WASOCK_API wasock_err wasock_tcp_set_listen_backlog_size(wasock_tcp *s, uint64_t v);
WASOCK_API wasock_err wasock_tcp_keep_alive_enabled(wasock_tcp *s, bool *out);
WASOCK_API wasock_err wasock_tcp_set_keep_alive_enabled(wasock_tcp *s, bool v);
WASOCK_API wasock_err wasock_tcp_keep_alive_idle_time(wasock_tcp *s, uint64_t *ns);
WASOCK_API wasock_err wasock_tcp_set_keep_alive_idle_time(wasock_tcp *s, uint64_t ns);
WASOCK_API wasock_err wasock_tcp_keep_alive_interval(wasock_tcp *s, uint64_t *ns);
WASOCK_API wasock_err wasock_tcp_set_keep_alive_interval(wasock_tcp *s, uint64_t ns);
WASOCK_API wasock_err wasock_tcp_keep_alive_count(wasock_tcp *s, uint32_t *out);
WASOCK_API wasock_err wasock_tcp_set_keep_alive_count(wasock_tcp *s, uint32_t v);
WASOCK_API wasock_err wasock_tcp_hop_limit(wasock_tcp *s, uint8_t *out);
WASOCK_API wasock_err wasock_tcp_set_hop_limit(wasock_tcp *s, uint8_t v);
WASOCK_API wasock_err wasock_tcp_receive_buffer_size(wasock_tcp *s, uint64_t *out);
WASOCK_API wasock_err wasock_tcp_set_receive_buffer_size(wasock_tcp *s, uint64_t v);
WASOCK_API wasock_err wasock_tcp_send_buffer_size(wasock_tcp *s, uint64_t *out);
WASOCK_API wasock_err wasock_tcp_set_send_buffer_size(wasock_tcp *s, uint64_t v);

/* The socket's pollable (WASI subscribe): true exactly when the in-progress
 * bind/connect/listen has resolved (finish_* will not say WOULD_BLOCK), or,
 * on a listener, when a connection is waiting. Updated by dispatch. */
WASOCK_API bool wasock_tcp_ready(wasock_tcp *s);

/* WASI shutdown (connected sockets only, else INVALID_STATE). RECEIVE: the
 * input stream reports closed at once and queued input is discarded. SEND:
 * the output stream's writes fail from now on (write(2) returns -1 with
 * EBADF), and a FIN follows every byte written before. The stream
 * descriptors keep their numbers (they are replaced in place with dup2),
 * so a runtime's poll set stays valid. In a 0.3 session the descriptors
 * are the caller's and are left alone (closing them is the 0.3 way); the
 * request still reaches the daemon. A handed-off connection is shut down
 * with shutdown(2) on the socket, without a round trip: RECEIVE and SEND
 * act on the socket (writes after SEND fail with EPIPE; after RECEIVE,
 * Linux still lets reads return bytes that were queued or arrive later, so
 * the runtime must stop reading the input stream itself), and BOTH also
 * replaces a 0.2 stream descriptor with /dev/null as above. */
WASOCK_API wasock_err wasock_tcp_shutdown(wasock_tcp *s, wasock_shutdown how);

/* The error that ended the connection's streams, once the input stream has
 * reported EOF: OK for an orderly close, e.g. CONNECTION_RESET otherwise.
 * Updated by dispatch. */
WASOCK_API wasock_err wasock_tcp_stream_error(wasock_tcp *s);

/* Drops the socket in any state: the daemon closes the real socket (bytes
 * already written to the output stream are delivered first), cancels what
 * is pending, and the 0.2 stream descriptors are closed. Does not wait for
 * the daemon: the request is sent and its reply is discarded when it
 * arrives (only when hundreds of such replies are still due does a drop
 * wait for its own). Requests made after it, from any thread, reach the
 * daemon after it. NULL is allowed. */
WASOCK_API void wasock_tcp_drop(wasock_tcp *s);

/* 0.3 shape: each call waits until the operation resolved and returns its
 * result (bind = start-bind + finish-bind, and so on), for as long as that
 * takes (a kernel connect timeout, a pending permission prompt); other
 * threads' calls proceed meanwhile. They may also be used in a 0.2 session,
 * where connect keeps the stream descriptors in the wasock_tcp as
 * finish_connect does. */
WASOCK_API wasock_err wasock_tcp_bind(wasock_tcp *s, const wasock_addr *local);
WASOCK_API wasock_err wasock_tcp_connect(wasock_tcp *s, const wasock_addr *remote);
/* Binds implicitly (unspecified address, port 0) when unbound. Connections
 * are then taken with wasock_tcp_accept. */
WASOCK_API wasock_err wasock_tcp_listen(wasock_tcp *s);
/* The send / receive stream of a connected socket, once each per socket
 * (again: INVALID_STATE). The descriptor is the caller's, non-blocking and
 * close-on-exec: closing the output descriptor ends the send stream (a FIN
 * after every byte written); closing the input descriptor drops the receive
 * stream (SHUT_RD). Both stay valid after wasock_tcp_drop. In a 0.2 session
 * the streams came with finish_connect / accept, and these return
 * INVALID_STATE. For a handed-off connection each is a duplicate of the
 * connected socket: closing one does not end its direction while the other
 * (or the wasock_tcp) is open, so end a direction with shutdown(2) on it or
 * with wasock_tcp_shutdown. */
WASOCK_API wasock_err wasock_tcp_send(wasock_tcp *s, int *output_fd);
WASOCK_API wasock_err wasock_tcp_receive(wasock_tcp *s, int *input_fd);

/* --------------------------------------------------------------------- UDP */

typedef struct wasock_udp wasock_udp;

/* One datagram. Outgoing: data/len are the caller's; remote is the
 * destination when has_remote (else the socket's connected peer). Incoming
 * (wasock_udp_receive): data points into the caller's buffer, remote is the
 * source and has_remote is true. */
typedef struct wasock_datagram {
    const uint8_t *data;
    size_t len;
    wasock_addr remote;
    bool has_remote;
} wasock_datagram;

/* Largest datagram WASI allows. The kernel's limit is lower (65507 bytes of
 * payload over IPv4, 65527 over IPv6): larger ones are DATAGRAM_TOO_LARGE. */
#define WASOCK_DATAGRAM_MAX 65535

/* How many datagrams one check_send permits (0.2): as many as the daemon
 * batches per system call. */
#define WASOCK_UDP_SEND_PERMITS 32

/* create-udp-socket. *out is owned by the caller until wasock_udp_drop (or
 * wasock_client_close). ACCESS_DENIED when the policy allows no UDP for this
 * tenant, NEW_SOCKET_LIMIT at the tenant's socket limit, INVALID_ARGUMENT
 * (locally) for a family that is neither IPv4 nor IPv6.
 *
 * How datagrams travel: each socket has a datagram channel to the daemon
 * (wasock_udp_fd). Sends are written to it and the daemon sends them on the
 * network; received datagrams arrive on it. A destination is approved by
 * the daemon (policy udp.send) the first time the socket sends to it, in a
 * round trip inside wasock_udp_send, so a refusal is that call's result;
 * later datagrams to an approved destination cost no round trip. Errors the
 * daemon meets afterwards (an ICMP error, a policy reloaded to refuse the
 * destination) are reported by the socket's next wasock_udp_send, which then
 * sends nothing (as Linux reports an earlier ICMP error on the next send). */
WASOCK_API wasock_err wasock_udp_create(wasock_client *c, wasock_family f, wasock_udp **out);

/* 0.2 shape. start_bind checks the arguments and state; the policy's and
 * the kernel's answer (ACCESS_DENIED, ADDRESS_IN_USE, ...) comes from
 * finish_bind, as for TCP. While a permission prompt decides the bind,
 * finish_bind says WOULD_BLOCK and wasock_udp_ready is false. */
WASOCK_API wasock_err wasock_udp_start_bind(wasock_udp *u, const wasock_addr *local);
WASOCK_API wasock_err wasock_udp_finish_bind(wasock_udp *u);

/* 0.2 stream(remote): (re)associates a bound socket with remote (NULL:
 * dissociates) and creates a fresh pair of datagram streams, which
 * receive/check_send/send then use. The previous pair must have been dropped
 * first (wasock_udp_incoming_drop and _outgoing_drop): otherwise TRAP. While
 * associated, datagrams from other sources are not delivered. A failure
 * after the dissociation (ACCESS_DENIED, a kernel error) leaves the socket
 * bound and unassociated. */
WASOCK_API wasock_err wasock_udp_stream(wasock_udp *u, const wasock_addr *remote);
/* The host dropped the incoming-datagram-stream / outgoing-datagram-stream
 * resource of the current pair. Local; no round trip. */
WASOCK_API void wasock_udp_incoming_drop(wasock_udp *u);
WASOCK_API void wasock_udp_outgoing_drop(wasock_udp *u);

/* Receives up to max datagrams that are waiting, never blocking: *n == 0
 * means none is there (never WOULD_BLOCK). out has room for max entries;
 * payloads are copied back to back into buf (buflen bytes, at least
 * WASOCK_DATAGRAM_MAX, else INVALID_ARGUMENT), each out[i].data pointing
 * into it; a datagram that does not fit in what is left of buf stays queued
 * for the next call. 0.2: needs a live incoming stream (else
 * INVALID_STATE); 0.3: needs a bound socket (else INVALID_STATE). */
WASOCK_API wasock_err wasock_udp_receive(wasock_udp *u, uint64_t max, wasock_datagram *out,
                                         uint8_t *buf, size_t buflen, size_t *n);

/* 0.2 check-send: how many datagrams the next send may carry: up to
 * WASOCK_UDP_SEND_PERMITS, 0 while the channel is full (then wait for
 * wasock_udp_send_ready). Needs a live outgoing stream (else INVALID_STATE). */
WASOCK_API wasock_err wasock_udp_check_send(wasock_udp *u, uint64_t *permits);

/* Sends datagrams in order and stops at the first that fails: *sent is the
 * number sent. If at least one was sent the result is OK; otherwise the
 * first failure: INVALID_ARGUMENT (no remote on an unassociated socket, a
 * remote differing from the associated one, a wrong family, the unspecified
 * address, port 0, an IPv4-mapped address), DATAGRAM_TOO_LARGE (above what
 * the family can carry), ACCESS_DENIED (or the policy's error), an earlier
 * asynchronous error (see wasock_udp_create). A full channel stops the send
 * early with OK (0.2: check_send then permits 0 until send_ready). 0.2: a
 * send without a preceding check_send, or with more datagrams than it
 * permitted, is TRAP (the guest must be trapped; nothing is sent); each send
 * uses up the permit. 0.3: no permits; an unbound socket is bound
 * implicitly. */
WASOCK_API wasock_err wasock_udp_send(wasock_udp *u, const wasock_datagram *d, size_t n,
                                      uint64_t *sent);

/* The socket's pollable: true unless a bind is in progress in the daemon. */
WASOCK_API bool wasock_udp_ready(wasock_udp *u);
/* The incoming stream's pollable: a datagram is waiting. */
WASOCK_API bool wasock_udp_receive_ready(wasock_udp *u);
/* The outgoing stream's pollable: check_send would permit at least one. */
WASOCK_API bool wasock_udp_send_ready(wasock_udp *u);
/* The datagram channel, borrowed for the socket's lifetime: poll it for
 * POLLIN (receive_ready may have changed) and POLLOUT (send_ready). */
WASOCK_API int wasock_udp_fd(wasock_udp *u);

/* 0.3 shape. bind = start_bind + finish_bind, waiting for a permission
 * prompt if there is one. connect binds an unbound
 * socket implicitly and (re)associates; disconnect dissociates
 * (INVALID_STATE when not connected). */
WASOCK_API wasock_err wasock_udp_bind(wasock_udp *u, const wasock_addr *local);
WASOCK_API wasock_err wasock_udp_connect(wasock_udp *u, const wasock_addr *remote);
WASOCK_API wasock_err wasock_udp_disconnect(wasock_udp *u);

/* INVALID_STATE while unbound (local) or not associated (remote). */
WASOCK_API wasock_err wasock_udp_local_address(wasock_udp *u, wasock_addr *out);
WASOCK_API wasock_err wasock_udp_remote_address(wasock_udp *u, wasock_addr *out);
WASOCK_API wasock_family wasock_udp_address_family(wasock_udp *u);
/* Options, with the rules of the TCP ones (0 is INVALID_ARGUMENT, buffer
 * sizes clamped and read back as set). */
WASOCK_API wasock_err wasock_udp_unicast_hop_limit(wasock_udp *u, uint8_t *out);
WASOCK_API wasock_err wasock_udp_set_unicast_hop_limit(wasock_udp *u, uint8_t v);
WASOCK_API wasock_err wasock_udp_receive_buffer_size(wasock_udp *u, uint64_t *out);
WASOCK_API wasock_err wasock_udp_set_receive_buffer_size(wasock_udp *u, uint64_t v);
WASOCK_API wasock_err wasock_udp_send_buffer_size(wasock_udp *u, uint64_t *out);
WASOCK_API wasock_err wasock_udp_set_send_buffer_size(wasock_udp *u, uint64_t v);
/* Not WASI: how many datagrams of this socket the daemon dropped (malformed
 * channel messages, refused destinations or sources, too large). */
WASOCK_API wasock_err wasock_udp_dropped_datagrams(wasock_udp *u, uint64_t *out);

/* Drops the socket in any state: datagrams already sent are still
 * delivered by the daemon; the channel is closed. NULL is allowed. */
WASOCK_API void wasock_udp_drop(wasock_udp *u);

/* ------------------------------------------------------------- name lookup */

typedef struct wasock_resolve wasock_resolve;

/* resolve-addresses: starts looking `name` up (UTF-8; IP literals, with or
 * without brackets for IPv6, are their own answer; Unicode names are
 * converted with IDNA by the daemon). Errors here: INVALID_ARGUMENT (a name
 * longer than the protocol carries is refused locally; every other check is
 * the daemon's: empty, spaces or control characters, a port, a scheme, ...),
 * the policy's refusal (ACCESS_DENIED, NAME_UNRESOLVABLE or
 * PERMANENT_RESOLVER_FAILURE, as the operator chose),
 * TEMPORARY_RESOLVER_FAILURE when too many lookups of the tenant are in
 * flight. *out is the caller's until wasock_resolve_drop. */
WASOCK_API wasock_err wasock_resolve_addresses(wasock_client *c, const char *name,
                                               wasock_resolve **out);
/* WOULD_BLOCK while the lookup runs (or waits for a permission prompt);
 * then OK with *done false and one address per call, then OK with *done
 * true (out untouched); or the lookup's error (NAME_UNRESOLVABLE,
 * TEMPORARY_RESOLVER_FAILURE, PERMANENT_RESOLVER_FAILURE, or the policy's
 * refusal when it came after a prompt or a delay), on every call. Never an empty success:
 * a finished lookup has at least one address or an error. */
WASOCK_API wasock_err wasock_resolve_next_address(wasock_resolve *r, wasock_ip *out, bool *done);
/* The stream's pollable: the lookup has finished. */
WASOCK_API bool wasock_resolve_ready(wasock_resolve *r);
/* Drops the lookup, finished or not. NULL is allowed. */
WASOCK_API void wasock_resolve_drop(wasock_resolve *r);

/* 0.3 resolve-addresses: looks name up, waits for the answer, and copies up
 * to cap addresses to out (*n: how many). Errors as above. */
WASOCK_API wasock_err wasock_resolve_addresses_list(wasock_client *c, const char *name,
                                                    wasock_ip *out, size_t cap, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
