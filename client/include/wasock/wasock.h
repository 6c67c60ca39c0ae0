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
 * - One resource (wasock_tcp) must not be used from two threads at once.
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
 * error_len > 0) is written only on failure, NUL-terminated. */
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
 * normally two pipes relayed by the daemon; when the policy hands the
 * connection off (allow: { data_path: handoff }), one descriptor, the
 * connected TCP socket itself. For a handed-off socket libwasock answers
 * shutdown, the options and the addresses locally on the socket (the daemon
 * no longer holds it), with the same rules; see policy/REFERENCE.md for
 * what handing a socket to the runtime means for trust.
 * They belong to the wasock_tcp: do not close them; wasock_tcp_shutdown
 * changes them and wasock_tcp_drop closes them. In a 0.3 session both are
 * set to -1: take streams with wasock_tcp_send/_receive. Either pointer may
 * be NULL when the caller does not want it. A read that returns 0 (EOF)
 * means the stream is closed; wasock_tcp_stream_error says whether the
 * connection ended with an error (e.g. connection-reset). */
WASOCK_API wasock_err wasock_tcp_finish_connect(wasock_tcp *s, int *input_fd, int *output_fd);
WASOCK_API wasock_err wasock_tcp_start_listen(wasock_tcp *s);
WASOCK_API wasock_err wasock_tcp_finish_listen(wasock_tcp *s);
/* Takes one waiting connection: WOULD_BLOCK when none waits. *conn is a new
 * connected wasock_tcp owned by the caller; its streams are returned as for
 * finish_connect (fds -1 in a 0.3 session). Accepted sockets report the
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

#ifdef __cplusplus
}
#endif
#endif
