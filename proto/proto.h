/* proto.h — the wasockd wire protocol: message catalogue and codec.
 *
 * One header for both sides (daemon and libwasock). proto/ knows nothing of
 * sockets, libuv or file descriptors: it turns a proto_msg into bytes and back,
 * and refuses every byte sequence that is not exactly one well-formed frame.
 * proto/PROTOCOL.md is the normative description of everything here.
 *
 * Frame = 12-byte header + payload, all integers little-endian:
 *
 *   u32 payload_len   bytes after the header, <= PROTO_MAX_PAYLOAD
 *   u16 type          enum proto_type; replies are request type | PROTO_REPLY
 *   u8  nfds          descriptors sent with SCM_RIGHTS for this frame
 *   u8  flags         must be 0 in version 1
 *   u32 id            request id chosen by the client (non-zero); a reply
 *                     carries its request's id; events carry 0
 *
 * A request payload is its fields in schema order. A reply payload starts with
 * u16 err (a proto_err); when err == 0 the result fields follow in schema
 * order, otherwise one string field `detail` (human-readable, may be empty).
 */
#ifndef WASOCK_PROTO_H
#define WASOCK_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The versions this code speaks. A client offers [min, max] in HELLO and
 * the daemon answers with the highest version both support. Version 2 adds
 * EV_CONNECTED (a connect's outcome, with its stream descriptors, pushed
 * when it resolves); version 3 makes a relayed connection's output stream
 * one end of a stream socket pair instead of a pipe. Nothing else differs. */
#define PROTO_VERSION_MIN 1
#define PROTO_VERSION_MAX 3

#define PROTO_HEADER_SIZE 12

/* Largest payload of one frame. Every message of version 1 fits in far less
 * (the largest is HELLO with a tenant and a token); the cap keeps a session's
 * read buffer small and fixed, so a hostile client cannot make the daemon
 * allocate by announcing a huge frame. */
#define PROTO_MAX_PAYLOAD 4096
#define PROTO_MAX_FRAME (PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD)

/* Most descriptors one frame may carry (the input and output stream of a
 * connection). A receiver treats more as a protocol error. */
#define PROTO_MAX_FDS_PER_FRAME 2

/* String field limits (bytes, without the terminating NUL added on decode).
 * Tenant names are identifiers from the policy file; tokens are printable
 * HMAC tokens minted by an orchestrator; details are one log-like line. */
#define PROTO_TENANT_MAX 128
#define PROTO_TOKEN_MAX 512
#define PROTO_DETAIL_MAX 256

/* Name lookup: bytes of the name a client asks to resolve, as sent (UTF-8,
 * before IDNA). A DNS name is at most 253 bytes in its ASCII form; a Unicode
 * name converts to at most that, and its UTF-8 spelling (up to four bytes a
 * character) fits in 1024 with room to spare. Anything longer cannot be a
 * valid name and is refused by the client before it is sent. */
#define PROTO_NAME_MAX 1024

/* Message types. Numbers are grouped by purpose in blocks of 0x100 so new
 * messages of one kind stay together; a number is never reused. */
typedef enum proto_type {
    /* session */
    PROTO_HELLO = 0x0001,         /* first frame of a connection */
    PROTO_PING = 0x0002,          /* no-op round trip (liveness, benchmarks) */

    /* TCP requests */
    PROTO_TCP_CREATE = 0x0100,
    PROTO_TCP_BIND = 0x0101,      /* 0.2 start-bind; 0.3 bind = BIND + FINISH */
    PROTO_TCP_CONNECT = 0x0102,   /* 0.2 start-connect */
    PROTO_TCP_LISTEN = 0x0103,    /* 0.2 start-listen (0.3 sessions: implicit bind) */
    PROTO_TCP_FINISH = 0x0104,    /* 0.2 finish-bind/-connect/-listen, by `op` */
    PROTO_TCP_ACCEPT = 0x0105,
    PROTO_TCP_SHUTDOWN = 0x0106,
    PROTO_TCP_DROP = 0x0107,
    PROTO_TCP_GET_OPTION = 0x0108,
    PROTO_TCP_SET_OPTION = 0x0109,
    PROTO_TCP_LOCAL_ADDRESS = 0x010a,
    PROTO_TCP_REMOTE_ADDRESS = 0x010b,
    PROTO_TCP_STREAM = 0x010c,    /* 0.3 send/receive: one descriptor per direction */

    /* UDP requests */
    PROTO_UDP_CREATE = 0x0200,         /* reply carries the datagram channel */
    PROTO_UDP_BIND = 0x0201,           /* 0.2 start-bind; 0.3 bind = BIND + FINISH_BIND */
    PROTO_UDP_FINISH_BIND = 0x0202,    /* 0.2 finish-bind */
    PROTO_UDP_STREAM = 0x0203,         /* 0.2 stream(remote?): (re)associate */
    PROTO_UDP_CONNECT = 0x0204,        /* 0.3 connect (implicit bind) */
    PROTO_UDP_DISCONNECT = 0x0205,     /* 0.3 disconnect */
    PROTO_UDP_SEND_CHECK = 0x0206,     /* approve a datagram destination (implicit bind) */
    PROTO_UDP_GET_OPTION = 0x0207,
    PROTO_UDP_SET_OPTION = 0x0208,
    PROTO_UDP_LOCAL_ADDRESS = 0x0209,
    PROTO_UDP_REMOTE_ADDRESS = 0x020a,
    PROTO_UDP_DROP = 0x020b,

    /* name lookup requests */
    PROTO_RESOLVE = 0x0300,      /* resolve-addresses(name) */
    PROTO_RESOLVE_DROP = 0x0301, /* drop a resolve-address-stream */

    /* events: daemon -> client, id 0, never answered */
    PROTO_EV_READY = 0x4001,        /* a resource's pollable changed readiness */
    PROTO_EV_STREAM_ERROR = 0x4002, /* the relay of a connection ended with an error */
    PROTO_EV_DATAGRAM_ERROR = 0x4003,  /* a datagram from the channel could not be sent */
    PROTO_EV_RESOLVE_ADDRESS = 0x4004, /* one address of a finished lookup */
    PROTO_EV_RESOLVE_DONE = 0x4005,    /* a lookup finished: its result */
    PROTO_EV_CONNECTED = 0x4006,       /* version 2: a connect resolved: outcome and streams */

    /* replies: request type | PROTO_REPLY */
    PROTO_REPLY = 0x8000,
} proto_type;

#define PROTO_EVENT_FIRST 0x4000
#define PROTO_EVENT_LAST 0x7fff

/* Error codes on the wire: the wasi:sockets 0.2 error-code enum in WIT order,
 * starting at 1 (0 is success), plus PROTO_E_PROTOCOL for replies that refuse
 * a malformed request. libwasock's wasock_err uses the same numbers. */
typedef enum proto_err {
    PROTO_OK = 0,
    PROTO_E_UNKNOWN,
    PROTO_E_ACCESS_DENIED,
    PROTO_E_NOT_SUPPORTED,
    PROTO_E_INVALID_ARGUMENT,
    PROTO_E_OUT_OF_MEMORY,
    PROTO_E_TIMEOUT,
    PROTO_E_CONCURRENCY_CONFLICT,
    PROTO_E_NOT_IN_PROGRESS,
    PROTO_E_WOULD_BLOCK,
    PROTO_E_INVALID_STATE,
    PROTO_E_NEW_SOCKET_LIMIT,
    PROTO_E_ADDRESS_NOT_BINDABLE,
    PROTO_E_ADDRESS_IN_USE,
    PROTO_E_REMOTE_UNREACHABLE,
    PROTO_E_CONNECTION_REFUSED,
    PROTO_E_CONNECTION_RESET,
    PROTO_E_CONNECTION_ABORTED,
    PROTO_E_DATAGRAM_TOO_LARGE,
    PROTO_E_NAME_UNRESOLVABLE,
    PROTO_E_TEMPORARY_RESOLVER_FAILURE,
    PROTO_E_PERMANENT_RESOLVER_FAILURE,
    PROTO_E_LAST_WASI = PROTO_E_PERMANENT_RESOLVER_FAILURE,
    /* not a WASI code: the request was malformed or not allowed in this
     * session (e.g. before HELLO); the daemon then closes the connection. */
    PROTO_E_PROTOCOL = 99,
} proto_err;

/* WIT spelling of an error ("access-denied"); "protocol" for
 * PROTO_E_PROTOCOL; NULL for a number that is not a proto_err. */
const char *proto_err_name(unsigned err);

/* HELLO.wasi: which WASI shape the host implements. */
enum proto_wasi_shape { PROTO_WASI_0_2 = 2, PROTO_WASI_0_3 = 3 };

/* Address family on the wire (matches WIT ip-address-family order). */
enum proto_family { PROTO_IPV4 = 0, PROTO_IPV6 = 1 };

/* TCP_FINISH.op */
enum proto_tcp_op { PROTO_OP_BIND = 0, PROTO_OP_CONNECT = 1, PROTO_OP_LISTEN = 2 };

/* TCP_SHUTDOWN.how (matches WIT shutdown-type order) */
enum proto_shutdown { PROTO_SHUT_RECEIVE = 0, PROTO_SHUT_SEND = 1, PROTO_SHUT_BOTH = 2 };

/* TCP_STREAM.direction and EV_STREAM_ERROR.direction */
enum proto_direction { PROTO_DIR_RECEIVE = 0, PROTO_DIR_SEND = 1 };

/* TCP_GET_OPTION / TCP_SET_OPTION.option. Values are u64 on the wire:
 * booleans 0/1, durations in nanoseconds, sizes in bytes. */
enum proto_tcp_option {
    PROTO_OPT_KEEP_ALIVE_ENABLED = 1,
    PROTO_OPT_KEEP_ALIVE_IDLE_TIME = 2,  /* ns */
    PROTO_OPT_KEEP_ALIVE_INTERVAL = 3,   /* ns */
    PROTO_OPT_KEEP_ALIVE_COUNT = 4,
    PROTO_OPT_HOP_LIMIT = 5,
    PROTO_OPT_RECEIVE_BUFFER_SIZE = 6,
    PROTO_OPT_SEND_BUFFER_SIZE = 7,
    PROTO_OPT_LISTEN_BACKLOG_SIZE = 8,   /* set only */
    PROTO_OPT_IS_LISTENING = 9,          /* get only: 0/1 */
    /* UDP_GET_OPTION only: datagrams the daemon dropped on this socket's
     * channel (malformed header, refused destination, too large). */
    PROTO_OPT_DATAGRAMS_DROPPED = 10,
};

/* UDP_GET_OPTION / UDP_SET_OPTION use the ids above: PROTO_OPT_HOP_LIMIT is
 * the unicast hop limit, the buffer sizes are the socket's, and
 * PROTO_OPT_DATAGRAMS_DROPPED is UDP's own. */

/* The datagram channel (PROTOCOL.md section 13): one SOCK_SEQPACKET message
 * per datagram, this header then the payload. Integers little-endian.
 *   u8  family     0 IPv4, 1 IPv6, PROTO_DGRAM_NO_ADDRESS: none (client to
 *                  daemon only: the socket's connected peer)
 *   u8  reserved   0
 *   u16 port
 *   u32 flow_info  IPv6 only, else 0
 *   u32 scope_id   IPv6 only, else 0
 *   u8  ip[16]     network order; IPv4 in ip[0..3], the rest 0 */
#define PROTO_DGRAM_HEADER_SIZE 28
#define PROTO_DGRAM_NO_ADDRESS 0xff
/* Largest UDP payload WASI allows (the 16-bit length field). */
#define PROTO_DGRAM_MAX_PAYLOAD 65535
#define PROTO_DGRAM_MAX_MESSAGE (PROTO_DGRAM_HEADER_SIZE + PROTO_DGRAM_MAX_PAYLOAD)

/* A socket address as it travels: family, port, address bytes in network
 * order (IPv4 uses ip[0..3]), and the IPv6 flow info and scope id.
 * Encoding: u8 family, u16 port, then 4 address bytes (IPv4) or 16 address
 * bytes + u32 flow_info + u32 scope_id (IPv6). */
typedef struct proto_addr {
    uint8_t family; /* enum proto_family */
    uint16_t port;
    uint8_t ip[16];
    uint32_t flow_info, scope_id;
} proto_addr;

/* One decoded message. A single flat struct serves every type: each type's
 * schema (see PROTOCOL.md and proto_schema_*) says which members travel, in
 * which order; the others are ignored by the encoder and zeroed by the
 * decoder. Strings are NUL-terminated copies, so a decoded message owns no
 * memory and borrows nothing from the frame. */
typedef struct proto_msg {
    uint16_t type; /* proto_type (with PROTO_REPLY for replies) */
    uint8_t nfds;  /* descriptors that travel with the frame */
    uint32_t id;

    uint16_t err; /* replies only: proto_err */

    /* HELLO / reply */
    uint16_t version_min, version_max; /* HELLO */
    uint16_t version;                  /* HELLO reply */
    uint8_t wasi;                      /* HELLO: enum proto_wasi_shape */
    uint64_t session;                  /* HELLO reply: session id (logs, wasockctl) */

    /* resources */
    uint32_t handle;     /* the resource a request is about; 0 is never valid */
    uint32_t new_handle; /* TCP_CREATE and TCP_ACCEPT replies */
    uint8_t family;      /* enum proto_family */
    uint8_t op;          /* enum proto_tcp_op */
    uint8_t how;         /* enum proto_shutdown */
    uint8_t direction;   /* enum proto_direction */
    uint8_t ready;       /* EV_READY: 0/1 */
    uint8_t more;        /* TCP_ACCEPT reply: another connection is waiting */
    uint16_t option;     /* enum proto_tcp_option */
    uint16_t code;       /* EV_STREAM_ERROR, EV_DATAGRAM_ERROR: proto_err */
    uint16_t result;     /* EV_RESOLVE_DONE, EV_CONNECTED: proto_err, 0 = success */
    uint8_t has_remote;  /* UDP_STREAM: 0/1, whether addr is the remote to associate */
    uint64_t value;      /* option values */
    proto_addr addr;

    char tenant[PROTO_TENANT_MAX + 1];
    char token[PROTO_TOKEN_MAX + 1];
    char detail[PROTO_DETAIL_MAX + 1]; /* error replies */
    char name[PROTO_NAME_MAX + 1];     /* RESOLVE: the name to look up */
} proto_msg;

/* Encodes m as one frame into buf (cap bytes). Uses m->type, m->nfds, m->id
 * and, for a reply, m->err: err 0 writes the result fields, otherwise
 * m->detail. Returns the frame length, or -EMSGSIZE (does not fit in cap or
 * above PROTO_MAX_PAYLOAD), -EINVAL (unknown type, a string over its limit,
 * a family that is neither v4 nor v6, nfds above PROTO_MAX_FDS_PER_FRAME). */
ssize_t proto_encode(const proto_msg *m, uint8_t *buf, size_t cap);

/* Looks at the first len bytes of a stream. Returns 0 while fewer than a
 * whole frame has arrived (*frame_len then says how many bytes the frame
 * needs once the header is in, else 0), 1 when a whole frame of *frame_len
 * bytes is there, or -EMSGSIZE (payload over PROTO_MAX_PAYLOAD) / -EPROTO
 * (flags not 0, nfds over the cap) as soon as the header shows it. */
int proto_frame_ready(const uint8_t *buf, size_t len, size_t *frame_len);

/* Decodes exactly one whole frame (len must equal its length). Strict: every
 * field is bounds-checked, enums are range-checked where the schema says so,
 * strings must not contain NUL, and the payload must be consumed exactly.
 * Returns 0, or -EPROTO (malformed), -ENOMSG (unknown type), -EMSGSIZE (too
 * long). On error *m is unspecified. */
int proto_decode(const uint8_t *frame, size_t len, proto_msg *m);

/* Convenience: fill an error reply to request `req` in *reply. */
void proto_reply_error(const proto_msg *req, proto_err err, const char *detail,
                       proto_msg *reply);
/* Convenience: fill an empty success reply to `req` (result fields zero). */
void proto_reply_ok(const proto_msg *req, proto_msg *reply);

/* "TCP_CONNECT", "TCP_CONNECT reply", "EV_READY"; NULL if unknown. */
const char *proto_type_name(uint16_t type);

/* True for a request type the daemon may receive (not a reply, not an event). */
bool proto_type_is_request(uint16_t type);

/* Every known type (requests, their replies, events), for tests and fuzzers:
 * returns the count and points *types at a static array. */
size_t proto_all_types(const uint16_t **types);

/* Writes the wire form of addr-like fields: these two help both sides keep
 * the "IPv4 in ip[0..3]" convention in one place. */
void proto_addr_set_v4(proto_addr *a, const uint8_t ip[4], uint16_t port);
void proto_addr_set_v6(proto_addr *a, const uint8_t ip[16], uint16_t port,
                       uint32_t flow_info, uint32_t scope_id);

/* The datagram channel header (see PROTO_DGRAM_HEADER_SIZE). Writes exactly
 * PROTO_DGRAM_HEADER_SIZE bytes: a's address, or "no address" when a is
 * NULL. */
void proto_dgram_header_encode(const proto_addr *a, uint8_t out[PROTO_DGRAM_HEADER_SIZE]);

/* Reads a header of `len` bytes (at least PROTO_DGRAM_HEADER_SIZE). Returns 1
 * and *a for an address, 0 for "no address", or -EPROTO when it is
 * malformed: a family that is none of the three, a reserved byte that is not
 * 0, IPv4 with flow_info, scope_id or bytes after ip[3] set, or "no address"
 * with any other byte set. */
int proto_dgram_header_decode(const uint8_t *in, size_t len, proto_addr *a);

#endif
