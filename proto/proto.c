/* proto.c — the wasockd wire codec: one catalogue of message schemas, and one
 * generic encoder and one generic decoder that walk it.
 *
 * Trust: proto_frame_ready() and proto_decode() read bytes straight from the
 * peer (for the daemon, an untrusted client) and trust nothing in them: every
 * read is bounds-checked first, multi-byte integers are assembled byte by byte
 * (never through a pointer cast into the buffer), every range the schema
 * names is checked, and a payload must be consumed exactly. proto_encode()
 * takes a proto_msg from our own code and still checks every value it writes,
 * so it never produces a frame that proto_decode() would refuse.
 */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- fields ---------------------------------------------------------------- */

/* Every field that can travel. A schema is a list of these ids in wire order;
 * F_END (0) ends the list, so a zero-initialised schema is an empty one. */
enum field_id {
    F_END = 0,
    F_VERSION_MIN,
    F_VERSION_MAX,
    F_VERSION,
    F_WASI,
    F_TENANT,
    F_TOKEN,
    F_SESSION,
    F_HANDLE,
    F_NEW_HANDLE,
    F_FAMILY,
    F_ADDR,
    F_OP,
    F_HOW,
    F_DIRECTION,
    F_READY,
    F_MORE,
    F_OPTION,
    F_VALUE,
    F_CODE,
    F_DETAIL,
    F_NAME,
    F_RESULT,
    F_HAS_REMOTE,
    F_COUNT
};

enum field_kind { KIND_U8, KIND_U16, KIND_U32, KIND_U64, KIND_ADDR, KIND_STRING };

struct field_desc {
    enum field_kind kind;
    size_t offset;     /* of the proto_msg member that holds the value */
    bool ranged;       /* integers: min/max below are enforced both ways */
    uint64_t min, max; /* integer range; for strings, max is the byte limit */
};

/* The kind follows from the member's C type, so a table entry can never
 * disagree with the struct it reads and writes. The member expression is not
 * evaluated. Arrays decay (char[] -> char *), which is how strings are told
 * apart from uint8_t members. */
#define MEMBER(member) (((proto_msg *)0)->member)
#define KIND_OF(member)                                                                            \
    _Generic(MEMBER(member), uint8_t: KIND_U8, uint16_t: KIND_U16, uint32_t: KIND_U32,             \
             uint64_t: KIND_U64, proto_addr: KIND_ADDR, char *: KIND_STRING)

#define PLAIN_FIELD(member)                                                                        \
    { KIND_OF(member), offsetof(proto_msg, member), false, 0, 0 }
#define RANGED_FIELD(member, lo, hi)                                                               \
    { KIND_OF(member), offsetof(proto_msg, member), true, (lo), (hi) }
/* A string's limit is its member's size minus the terminating NUL, which
 * proto.h defines as PROTO_TENANT_MAX, PROTO_TOKEN_MAX and PROTO_DETAIL_MAX. */
#define STRING_FIELD(member)                                                                       \
    { KIND_OF(member), offsetof(proto_msg, member), false, 0, sizeof(MEMBER(member)) - 1 }

static const struct field_desc field_table[F_COUNT] = {
    [F_VERSION_MIN] = PLAIN_FIELD(version_min),
    [F_VERSION_MAX] = PLAIN_FIELD(version_max),
    [F_VERSION] = PLAIN_FIELD(version),
    [F_WASI] = RANGED_FIELD(wasi, PROTO_WASI_0_2, PROTO_WASI_0_3),
    [F_TENANT] = STRING_FIELD(tenant),
    [F_TOKEN] = STRING_FIELD(token),
    [F_SESSION] = PLAIN_FIELD(session),
    [F_HANDLE] = PLAIN_FIELD(handle),
    [F_NEW_HANDLE] = PLAIN_FIELD(new_handle),
    [F_FAMILY] = RANGED_FIELD(family, PROTO_IPV4, PROTO_IPV6),
    [F_ADDR] = PLAIN_FIELD(addr),
    [F_OP] = RANGED_FIELD(op, PROTO_OP_BIND, PROTO_OP_LISTEN),
    [F_HOW] = RANGED_FIELD(how, PROTO_SHUT_RECEIVE, PROTO_SHUT_BOTH),
    [F_DIRECTION] = RANGED_FIELD(direction, PROTO_DIR_RECEIVE, PROTO_DIR_SEND),
    [F_READY] = RANGED_FIELD(ready, 0, 1),
    [F_MORE] = RANGED_FIELD(more, 0, 1),
    /* Options stay open: an option id this side does not know is the
     * daemon's to answer (not-supported), not a malformed frame. */
    [F_OPTION] = PLAIN_FIELD(option),
    [F_VALUE] = PLAIN_FIELD(value),
    /* A stream error is always a WASI error code, never success. */
    [F_CODE] = RANGED_FIELD(code, PROTO_E_UNKNOWN, PROTO_E_LAST_WASI),
    [F_DETAIL] = STRING_FIELD(detail),
    [F_NAME] = STRING_FIELD(name),
    /* A lookup's result: success (0) or a WASI error code. */
    [F_RESULT] = RANGED_FIELD(result, PROTO_OK, PROTO_E_LAST_WASI),
    [F_HAS_REMOTE] = RANGED_FIELD(has_remote, 0, 1),
};

_Static_assert(sizeof(MEMBER(tenant)) == PROTO_TENANT_MAX + 1, "tenant limit");
_Static_assert(sizeof(MEMBER(token)) == PROTO_TOKEN_MAX + 1, "token limit");
_Static_assert(sizeof(MEMBER(detail)) == PROTO_DETAIL_MAX + 1, "detail limit");
_Static_assert(sizeof(MEMBER(name)) == PROTO_NAME_MAX + 1, "name limit");
/* String lengths travel as u16. */
_Static_assert(PROTO_TOKEN_MAX <= UINT16_MAX, "string limits fit a u16 length");
_Static_assert(PROTO_NAME_MAX <= UINT16_MAX, "string limits fit a u16 length");
/* The longest message (RESOLVE with a name at its limit) fits a frame. */
_Static_assert(2 + PROTO_NAME_MAX <= PROTO_MAX_PAYLOAD, "a name fits a frame");

/* ---- the message catalogue ------------------------------------------------- */

/* The most fields one schema has (HELLO: versions, wasi, tenant, token). */
#define SCHEMA_MAX_FIELDS 5

struct message_desc {
    uint16_t type;
    bool is_event;
    const char *name;
    const char *reply_name;
    uint8_t fields[SCHEMA_MAX_FIELDS + 1];        /* request or event payload */
    uint8_t result_fields[SCHEMA_MAX_FIELDS + 1]; /* success reply, after err */
    uint8_t max_fds; /* descriptors a success reply (or the event) may carry */
};

#define FIELDS(...)                                                                                \
    { __VA_ARGS__, F_END }
#define NO_FIELDS                                                                                  \
    { F_END }

/* The single source of truth for the message list (PROTOCOL.md describes the
 * same table in prose):
 *   REQUEST(name, request fields, success-reply fields, most reply descriptors)
 *   EVENT(name, fields, most descriptors)
 * Error replies of every request carry `detail` instead of the result fields
 * and no descriptors; requests never carry descriptors. */
#define PROTO_CATALOGUE(REQUEST, EVENT)                                                            \
    REQUEST(HELLO, FIELDS(F_VERSION_MIN, F_VERSION_MAX, F_WASI, F_TENANT, F_TOKEN),                \
            FIELDS(F_VERSION, F_SESSION), 0)                                                       \
    REQUEST(PING, NO_FIELDS, NO_FIELDS, 0)                                                         \
    REQUEST(TCP_CREATE, FIELDS(F_FAMILY), FIELDS(F_NEW_HANDLE), 0)                                 \
    REQUEST(TCP_BIND, FIELDS(F_HANDLE, F_ADDR), NO_FIELDS, 0)                                      \
    REQUEST(TCP_CONNECT, FIELDS(F_HANDLE, F_ADDR), NO_FIELDS, 0)                                   \
    REQUEST(TCP_LISTEN, FIELDS(F_HANDLE), NO_FIELDS, 0)                                            \
    REQUEST(TCP_FINISH, FIELDS(F_HANDLE, F_OP), NO_FIELDS, 2)                                      \
    REQUEST(TCP_ACCEPT, FIELDS(F_HANDLE), FIELDS(F_NEW_HANDLE, F_MORE, F_FAMILY), 2)               \
    REQUEST(TCP_SHUTDOWN, FIELDS(F_HANDLE, F_HOW), NO_FIELDS, 0)                                   \
    REQUEST(TCP_DROP, FIELDS(F_HANDLE), NO_FIELDS, 0)                                              \
    REQUEST(TCP_GET_OPTION, FIELDS(F_HANDLE, F_OPTION), FIELDS(F_VALUE), 0)                        \
    REQUEST(TCP_SET_OPTION, FIELDS(F_HANDLE, F_OPTION, F_VALUE), NO_FIELDS, 0)                     \
    REQUEST(TCP_LOCAL_ADDRESS, FIELDS(F_HANDLE), FIELDS(F_ADDR), 0)                                \
    REQUEST(TCP_REMOTE_ADDRESS, FIELDS(F_HANDLE), FIELDS(F_ADDR), 0)                               \
    REQUEST(TCP_STREAM, FIELDS(F_HANDLE, F_DIRECTION), NO_FIELDS, 1)                               \
    REQUEST(UDP_CREATE, FIELDS(F_FAMILY), FIELDS(F_NEW_HANDLE), 1)                                 \
    REQUEST(UDP_BIND, FIELDS(F_HANDLE, F_ADDR), NO_FIELDS, 0)                                      \
    REQUEST(UDP_FINISH_BIND, FIELDS(F_HANDLE), NO_FIELDS, 0)                                       \
    REQUEST(UDP_STREAM, FIELDS(F_HANDLE, F_HAS_REMOTE, F_ADDR), NO_FIELDS, 0)                      \
    REQUEST(UDP_CONNECT, FIELDS(F_HANDLE, F_ADDR), NO_FIELDS, 0)                                   \
    REQUEST(UDP_DISCONNECT, FIELDS(F_HANDLE), NO_FIELDS, 0)                                        \
    REQUEST(UDP_SEND_CHECK, FIELDS(F_HANDLE, F_ADDR), NO_FIELDS, 0)                                \
    REQUEST(UDP_GET_OPTION, FIELDS(F_HANDLE, F_OPTION), FIELDS(F_VALUE), 0)                        \
    REQUEST(UDP_SET_OPTION, FIELDS(F_HANDLE, F_OPTION, F_VALUE), NO_FIELDS, 0)                     \
    REQUEST(UDP_LOCAL_ADDRESS, FIELDS(F_HANDLE), FIELDS(F_ADDR), 0)                                \
    REQUEST(UDP_REMOTE_ADDRESS, FIELDS(F_HANDLE), FIELDS(F_ADDR), 0)                               \
    REQUEST(UDP_DROP, FIELDS(F_HANDLE), NO_FIELDS, 0)                                              \
    REQUEST(RESOLVE, FIELDS(F_NAME), FIELDS(F_NEW_HANDLE), 0)                                      \
    REQUEST(RESOLVE_DROP, FIELDS(F_HANDLE), NO_FIELDS, 0)                                          \
    EVENT(EV_READY, FIELDS(F_HANDLE, F_READY), 0)                                                  \
    EVENT(EV_STREAM_ERROR, FIELDS(F_HANDLE, F_DIRECTION, F_CODE), 0)                               \
    EVENT(EV_DATAGRAM_ERROR, FIELDS(F_HANDLE, F_CODE), 0)                                          \
    EVENT(EV_RESOLVE_ADDRESS, FIELDS(F_HANDLE, F_ADDR), 0)                                         \
    EVENT(EV_RESOLVE_DONE, FIELDS(F_HANDLE, F_RESULT), 0)                                          \
    EVENT(EV_CONNECTED, FIELDS(F_HANDLE, F_RESULT), 2)

#define REQUEST_ENTRY(name, request, result, fds)                                                  \
    {PROTO_##name, false, #name, #name " reply", request, result, fds},
#define EVENT_ENTRY(name, event_fields, fds)                                                       \
    {PROTO_##name, true, #name, NULL, event_fields, NO_FIELDS, fds},

static const struct message_desc message_table[] = {PROTO_CATALOGUE(REQUEST_ENTRY, EVENT_ENTRY)};

#define REQUEST_TYPE(name, request, result, fds) PROTO_##name,
#define REPLY_TYPE(name, request, result, fds)   PROTO_##name | PROTO_REPLY,
#define EVENT_TYPE(name, event_fields, fds)      PROTO_##name,
#define SKIP_REQUEST(name, request, result, fds)
#define SKIP_EVENT(name, event_fields, fds)

/* Requests, then their replies, then events. */
/* clang-format off */
static const uint16_t all_types[] = {
    PROTO_CATALOGUE(REQUEST_TYPE, SKIP_EVENT)
    PROTO_CATALOGUE(REPLY_TYPE, SKIP_EVENT)
    PROTO_CATALOGUE(SKIP_REQUEST, EVENT_TYPE)
};
/* clang-format on */

/* What a frame is, once its type is known. */
enum frame_class { FRAME_REQUEST, FRAME_REPLY, FRAME_EVENT };

/* Looks up a frame type; NULL if it names no message (including a "reply"
 * to an event). */
static const struct message_desc *classify_type(uint16_t type, enum frame_class *cls) {
    uint16_t base = type & (uint16_t)~PROTO_REPLY;
    bool is_reply = (type & PROTO_REPLY) != 0;

    for (size_t i = 0; i < ARRAY_SIZE(message_table); i++) {
        const struct message_desc *msg = &message_table[i];
        if (msg->type != base) {
            continue;
        }
        if (msg->is_event) {
            if (is_reply) {
                return NULL;
            }
            *cls = FRAME_EVENT;
        } else {
            *cls = is_reply ? FRAME_REPLY : FRAME_REQUEST;
        }
        return msg;
    }
    return NULL;
}

/* Most descriptors a frame of this class may carry; error replies none. */
static unsigned frame_max_fds(const struct message_desc *msg, enum frame_class cls, uint16_t err) {
    if (cls == FRAME_EVENT) {
        return msg->max_fds;
    }
    return cls == FRAME_REPLY && err == PROTO_OK ? msg->max_fds : 0;
}

/* Requests and replies name a request (id != 0); events are unsolicited. */
static bool frame_id_valid(enum frame_class cls, uint32_t id) {
    return cls == FRAME_EVENT ? id == 0 : id != 0;
}

/* ---- names ----------------------------------------------------------------- */

static const char *const wasi_error_names[] = {
    [PROTO_OK] = "ok",
    [PROTO_E_UNKNOWN] = "unknown",
    [PROTO_E_ACCESS_DENIED] = "access-denied",
    [PROTO_E_NOT_SUPPORTED] = "not-supported",
    [PROTO_E_INVALID_ARGUMENT] = "invalid-argument",
    [PROTO_E_OUT_OF_MEMORY] = "out-of-memory",
    [PROTO_E_TIMEOUT] = "timeout",
    [PROTO_E_CONCURRENCY_CONFLICT] = "concurrency-conflict",
    [PROTO_E_NOT_IN_PROGRESS] = "not-in-progress",
    [PROTO_E_WOULD_BLOCK] = "would-block",
    [PROTO_E_INVALID_STATE] = "invalid-state",
    [PROTO_E_NEW_SOCKET_LIMIT] = "new-socket-limit",
    [PROTO_E_ADDRESS_NOT_BINDABLE] = "address-not-bindable",
    [PROTO_E_ADDRESS_IN_USE] = "address-in-use",
    [PROTO_E_REMOTE_UNREACHABLE] = "remote-unreachable",
    [PROTO_E_CONNECTION_REFUSED] = "connection-refused",
    [PROTO_E_CONNECTION_RESET] = "connection-reset",
    [PROTO_E_CONNECTION_ABORTED] = "connection-aborted",
    [PROTO_E_DATAGRAM_TOO_LARGE] = "datagram-too-large",
    [PROTO_E_NAME_UNRESOLVABLE] = "name-unresolvable",
    [PROTO_E_TEMPORARY_RESOLVER_FAILURE] = "temporary-resolver-failure",
    [PROTO_E_PERMANENT_RESOLVER_FAILURE] = "permanent-resolver-failure",
};
_Static_assert(ARRAY_SIZE(wasi_error_names) == PROTO_E_LAST_WASI + 1, "one name per code");

const char *proto_err_name(unsigned err) {
    if (err < ARRAY_SIZE(wasi_error_names)) {
        return wasi_error_names[err];
    }
    return err == PROTO_E_PROTOCOL ? "protocol" : NULL;
}

static bool err_valid(unsigned err) {
    return proto_err_name(err) != NULL;
}

const char *proto_type_name(uint16_t type) {
    enum frame_class cls;
    const struct message_desc *msg = classify_type(type, &cls);

    if (msg == NULL) {
        return NULL;
    }
    return cls == FRAME_REPLY ? msg->reply_name : msg->name;
}

bool proto_type_is_request(uint16_t type) {
    enum frame_class cls;
    return classify_type(type, &cls) != NULL && cls == FRAME_REQUEST;
}

size_t proto_all_types(const uint16_t **types) {
    *types = all_types;
    return ARRAY_SIZE(all_types);
}

/* ---- member access --------------------------------------------------------- */

static size_t kind_size(enum field_kind kind) {
    switch (kind) {
    case KIND_U8:
        return 1;
    case KIND_U16:
        return 2;
    case KIND_U32:
        return 4;
    case KIND_U64:
        return 8;
    case KIND_ADDR:
    case KIND_STRING:
        break;
    }
    return 0;
}

/* Reads an integer member of its kind's width. memcpy keeps the access free of
 * type punning whatever the member's declared type is. */
static uint64_t member_get_uint(const proto_msg *m, const struct field_desc *f) {
    const unsigned char *at = (const unsigned char *)m + f->offset;
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64 = 0;

    switch (f->kind) {
    case KIND_U8:
        memcpy(&v8, at, sizeof(v8));
        return v8;
    case KIND_U16:
        memcpy(&v16, at, sizeof(v16));
        return v16;
    case KIND_U32:
        memcpy(&v32, at, sizeof(v32));
        return v32;
    case KIND_U64:
        memcpy(&v64, at, sizeof(v64));
        return v64;
    case KIND_ADDR:
    case KIND_STRING:
        break;
    }
    return 0;
}

/* Writes an integer member; v has already been read with the kind's width. */
static void member_set_uint(proto_msg *m, const struct field_desc *f, uint64_t v) {
    unsigned char *at = (unsigned char *)m + f->offset;
    uint8_t v8 = (uint8_t)v;
    uint16_t v16 = (uint16_t)v;
    uint32_t v32 = (uint32_t)v;

    switch (f->kind) {
    case KIND_U8:
        memcpy(at, &v8, sizeof(v8));
        break;
    case KIND_U16:
        memcpy(at, &v16, sizeof(v16));
        break;
    case KIND_U32:
        memcpy(at, &v32, sizeof(v32));
        break;
    case KIND_U64:
        memcpy(at, &v, sizeof(v));
        break;
    case KIND_ADDR:
    case KIND_STRING:
        break;
    }
}

static bool value_in_range(const struct field_desc *f, uint64_t v) {
    return !f->ranged || (v >= f->min && v <= f->max);
}

/* Address bytes on the wire for each family. */
#define ADDR_V4_BYTES 4
#define ADDR_V6_BYTES 16

/* ---- encoder --------------------------------------------------------------- */

/* Appends to buf while it fits; `len` keeps counting past cap so the caller
 * learns the size the frame needed. */
struct writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
};

static void put_bytes(struct writer *w, const void *src, size_t n) {
    if (n == 0) {
        return;
    }
    if (w->len <= w->cap && n <= w->cap - w->len) {
        memcpy(w->buf + w->len, src, n);
    }
    w->len += n;
}

static void put_uint(struct writer *w, uint64_t v, size_t n) {
    uint8_t le[8];

    for (size_t i = 0; i < n; i++) {
        le[i] = (uint8_t)(v >> (8 * i));
    }
    put_bytes(w, le, n);
}

static int put_addr(struct writer *w, const proto_addr *a) {
    if (a->family == PROTO_IPV4) {
        put_uint(w, a->family, 1);
        put_uint(w, a->port, 2);
        put_bytes(w, a->ip, ADDR_V4_BYTES);
        return 0;
    }
    if (a->family == PROTO_IPV6) {
        put_uint(w, a->family, 1);
        put_uint(w, a->port, 2);
        put_bytes(w, a->ip, ADDR_V6_BYTES);
        put_uint(w, a->flow_info, 4);
        put_uint(w, a->scope_id, 4);
        return 0;
    }
    return -EINVAL;
}

static int put_field(struct writer *w, const proto_msg *m, const struct field_desc *f) {
    const unsigned char *at = (const unsigned char *)m + f->offset;

    switch (f->kind) {
    case KIND_U8:
    case KIND_U16:
    case KIND_U32:
    case KIND_U64: {
        uint64_t v = member_get_uint(m, f);
        if (!value_in_range(f, v)) {
            return -EINVAL;
        }
        put_uint(w, v, kind_size(f->kind));
        return 0;
    }
    case KIND_ADDR: {
        proto_addr a;
        memcpy(&a, at, sizeof(a));
        return put_addr(w, &a);
    }
    case KIND_STRING: {
        /* The member holds max + 1 bytes, so strnlen stays inside it; a length
         * above max means the string is too long or not terminated. */
        size_t n = strnlen((const char *)at, (size_t)f->max + 1);
        if (n > f->max) {
            return -EINVAL;
        }
        put_uint(w, n, 2);
        put_bytes(w, at, n);
        return 0;
    }
    }
    return -EINVAL;
}

static int put_schema(struct writer *w, const proto_msg *m, const uint8_t *schema) {
    for (size_t i = 0; i <= SCHEMA_MAX_FIELDS && schema[i] != F_END; i++) {
        int rc = put_field(w, m, &field_table[schema[i]]);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

ssize_t proto_encode(const proto_msg *m, uint8_t *buf, size_t cap) {
    enum frame_class cls;
    const struct message_desc *msg = classify_type(m->type, &cls);
    struct writer w = {buf, cap, PROTO_HEADER_SIZE};
    uint16_t err;
    int rc;

    if (msg == NULL) {
        return -EINVAL;
    }
    err = cls == FRAME_REPLY ? m->err : PROTO_OK;
    if (m->nfds > PROTO_MAX_FDS_PER_FRAME || !frame_id_valid(cls, m->id)) {
        return -EINVAL;
    }
    if (cls == FRAME_REPLY) {
        if (!err_valid(err)) {
            return -EINVAL;
        }
        put_uint(&w, err, 2);
    }
    if (m->nfds > frame_max_fds(msg, cls, err)) {
        return -EINVAL;
    }

    if (cls != FRAME_REPLY) {
        rc = put_schema(&w, m, msg->fields);
    } else if (err == PROTO_OK) {
        rc = put_schema(&w, m, msg->result_fields);
    } else {
        rc = put_field(&w, m, &field_table[F_DETAIL]);
    }
    if (rc < 0) {
        return rc;
    }
    if (w.len > PROTO_MAX_FRAME || w.len > cap) {
        return -EMSGSIZE;
    }

    /* The payload is in place; the header goes in front of it. */
    size_t frame_len = w.len;
    w.len = 0;
    put_uint(&w, frame_len - PROTO_HEADER_SIZE, 4);
    put_uint(&w, m->type, 2);
    put_uint(&w, m->nfds, 1);
    put_uint(&w, 0, 1); /* flags */
    put_uint(&w, m->id, 4);
    return (ssize_t)frame_len;
}

/* ---- header ---------------------------------------------------------------- */

struct frame_header {
    uint32_t payload_len;
    uint16_t type;
    uint8_t nfds;
    uint8_t flags;
    uint32_t id;
};

static uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;

    for (size_t i = n; i-- > 0;) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* buf holds at least PROTO_HEADER_SIZE bytes. */
static void parse_header(const uint8_t *buf, struct frame_header *h) {
    h->payload_len = (uint32_t)load_le(buf, 4);
    h->type = (uint16_t)load_le(buf + 4, 2);
    h->nfds = buf[6];
    h->flags = buf[7];
    h->id = (uint32_t)load_le(buf + 8, 4);
}

/* What the header alone can refuse, checked the same way by
 * proto_frame_ready() and proto_decode(). */
static int check_header(const struct frame_header *h) {
    if (h->payload_len > PROTO_MAX_PAYLOAD) {
        return -EMSGSIZE;
    }
    if (h->flags != 0 || h->nfds > PROTO_MAX_FDS_PER_FRAME) {
        return -EPROTO;
    }
    return 0;
}

int proto_frame_ready(const uint8_t *buf, size_t len, size_t *frame_len) {
    struct frame_header h;
    int rc;

    if (frame_len != NULL) {
        *frame_len = 0;
    }
    if (len < PROTO_HEADER_SIZE) {
        return 0;
    }
    parse_header(buf, &h);
    rc = check_header(&h);
    if (rc < 0) {
        return rc;
    }
    size_t need = PROTO_HEADER_SIZE + (size_t)h.payload_len;
    if (frame_len != NULL) {
        *frame_len = need;
    }
    return len >= need ? 1 : 0;
}

/* ---- decoder --------------------------------------------------------------- */

struct reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
};

static size_t reader_left(const struct reader *r) {
    return r->len - r->pos;
}

static int get_bytes(struct reader *r, void *dst, size_t n) {
    if (reader_left(r) < n) {
        return -EPROTO;
    }
    if (n > 0) {
        memcpy(dst, r->buf + r->pos, n);
        r->pos += n;
    }
    return 0;
}

static int get_uint(struct reader *r, size_t n, uint64_t *v) {
    if (reader_left(r) < n) {
        return -EPROTO;
    }
    *v = load_le(r->buf + r->pos, n);
    r->pos += n;
    return 0;
}

static int get_addr(struct reader *r, proto_addr *a) {
    uint64_t family, port, flow_info, scope_id;

    memset(a, 0, sizeof(*a));
    if (get_uint(r, 1, &family) < 0 || get_uint(r, 2, &port) < 0) {
        return -EPROTO;
    }
    a->family = (uint8_t)family;
    a->port = (uint16_t)port;
    if (family == PROTO_IPV4) {
        return get_bytes(r, a->ip, ADDR_V4_BYTES);
    }
    if (family != PROTO_IPV6) {
        return -EPROTO;
    }
    if (get_bytes(r, a->ip, ADDR_V6_BYTES) < 0 || get_uint(r, 4, &flow_info) < 0 ||
        get_uint(r, 4, &scope_id) < 0) {
        return -EPROTO;
    }
    a->flow_info = (uint32_t)flow_info;
    a->scope_id = (uint32_t)scope_id;
    return 0;
}

static int get_field(struct reader *r, proto_msg *m, const struct field_desc *f) {
    unsigned char *at = (unsigned char *)m + f->offset;

    switch (f->kind) {
    case KIND_U8:
    case KIND_U16:
    case KIND_U32:
    case KIND_U64: {
        uint64_t v;
        if (get_uint(r, kind_size(f->kind), &v) < 0 || !value_in_range(f, v)) {
            return -EPROTO;
        }
        member_set_uint(m, f, v);
        return 0;
    }
    case KIND_ADDR: {
        proto_addr a;
        if (get_addr(r, &a) < 0) {
            return -EPROTO;
        }
        memcpy(at, &a, sizeof(a));
        return 0;
    }
    case KIND_STRING: {
        uint64_t n;
        if (get_uint(r, 2, &n) < 0 || n > f->max || reader_left(r) < n) {
            return -EPROTO;
        }
        if (memchr(r->buf + r->pos, '\0', (size_t)n) != NULL) {
            return -EPROTO;
        }
        /* The member holds max + 1 bytes: room for the NUL after n <= max. */
        get_bytes(r, at, (size_t)n);
        at[n] = '\0';
        return 0;
    }
    }
    return -EPROTO;
}

static int get_schema(struct reader *r, proto_msg *m, const uint8_t *schema) {
    for (size_t i = 0; i <= SCHEMA_MAX_FIELDS && schema[i] != F_END; i++) {
        if (get_field(r, m, &field_table[schema[i]]) < 0) {
            return -EPROTO;
        }
    }
    return 0;
}

int proto_decode(const uint8_t *frame, size_t len, proto_msg *m) {
    struct frame_header h;
    enum frame_class cls;
    const struct message_desc *msg;
    int rc;

    if (len < PROTO_HEADER_SIZE) {
        return -EPROTO;
    }
    parse_header(frame, &h);
    rc = check_header(&h);
    if (rc < 0) {
        return rc;
    }
    if (len - PROTO_HEADER_SIZE != h.payload_len) {
        return -EPROTO;
    }
    msg = classify_type(h.type, &cls);
    if (msg == NULL) {
        return -ENOMSG;
    }
    if (!frame_id_valid(cls, h.id)) {
        return -EPROTO;
    }

    memset(m, 0, sizeof(*m));
    m->type = h.type;
    m->nfds = h.nfds;
    m->id = h.id;

    struct reader r = {frame + PROTO_HEADER_SIZE, h.payload_len, 0};
    if (cls == FRAME_REPLY) {
        uint64_t err;
        if (get_uint(&r, 2, &err) < 0 || !err_valid((unsigned)err)) {
            return -EPROTO;
        }
        m->err = (uint16_t)err;
        rc = m->err == PROTO_OK ? get_schema(&r, m, msg->result_fields)
                                : get_field(&r, m, &field_table[F_DETAIL]);
    } else {
        rc = get_schema(&r, m, msg->fields);
    }
    if (rc < 0 || reader_left(&r) != 0) {
        return -EPROTO;
    }
    if (h.nfds > frame_max_fds(msg, cls, m->err)) {
        return -EPROTO;
    }
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

void proto_reply_error(const proto_msg *req, proto_err err, const char *detail, proto_msg *reply) {
    uint16_t type = req->type;
    uint32_t id = req->id;

    /* req and reply may be the same struct: read it before clearing. */
    memset(reply, 0, sizeof(*reply));
    reply->type = type | PROTO_REPLY;
    reply->id = id;
    reply->err = (uint16_t)err;
    /* A detail longer than the wire allows is cut: it is a log line. */
    snprintf(reply->detail, sizeof(reply->detail), "%s", detail != NULL ? detail : "");
}

void proto_reply_ok(const proto_msg *req, proto_msg *reply) {
    uint16_t type = req->type;
    uint32_t id = req->id;

    memset(reply, 0, sizeof(*reply));
    reply->type = type | PROTO_REPLY;
    reply->id = id;
}

void proto_addr_set_v4(proto_addr *a, const uint8_t ip[4], uint16_t port) {
    memset(a, 0, sizeof(*a));
    a->family = PROTO_IPV4;
    a->port = port;
    memcpy(a->ip, ip, ADDR_V4_BYTES);
}

void proto_addr_set_v6(proto_addr *a, const uint8_t ip[16], uint16_t port, uint32_t flow_info,
                       uint32_t scope_id) {
    memset(a, 0, sizeof(*a));
    a->family = PROTO_IPV6;
    a->port = port;
    memcpy(a->ip, ip, ADDR_V6_BYTES);
    a->flow_info = flow_info;
    a->scope_id = scope_id;
}

/* ---- datagram channel header ----------------------------------------------- */

/* Offsets in the header (PROTO_DGRAM_HEADER_SIZE bytes). */
#define DGRAM_FAMILY    0
#define DGRAM_RESERVED  1
#define DGRAM_PORT      2
#define DGRAM_FLOW_INFO 4
#define DGRAM_SCOPE_ID  8
#define DGRAM_IP        12
_Static_assert(DGRAM_IP + ADDR_V6_BYTES == PROTO_DGRAM_HEADER_SIZE, "header layout");

static void store_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

void proto_dgram_header_encode(const proto_addr *a, uint8_t out[PROTO_DGRAM_HEADER_SIZE]) {
    memset(out, 0, PROTO_DGRAM_HEADER_SIZE);
    if (a == NULL || (a->family != PROTO_IPV4 && a->family != PROTO_IPV6)) {
        out[DGRAM_FAMILY] = PROTO_DGRAM_NO_ADDRESS;
        return;
    }
    out[DGRAM_FAMILY] = a->family;
    store_le(out + DGRAM_PORT, a->port, 2);
    if (a->family == PROTO_IPV4) {
        memcpy(out + DGRAM_IP, a->ip, ADDR_V4_BYTES);
        return;
    }
    store_le(out + DGRAM_FLOW_INFO, a->flow_info, 4);
    store_le(out + DGRAM_SCOPE_ID, a->scope_id, 4);
    memcpy(out + DGRAM_IP, a->ip, ADDR_V6_BYTES);
}

/* True when every byte of p[0, n) is 0. */
static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

int proto_dgram_header_decode(const uint8_t *in, size_t len, proto_addr *a) {
    if (len < PROTO_DGRAM_HEADER_SIZE || in[DGRAM_RESERVED] != 0) {
        return -EPROTO;
    }
    switch (in[DGRAM_FAMILY]) {
    case PROTO_DGRAM_NO_ADDRESS:
        return all_zero(in + 1, PROTO_DGRAM_HEADER_SIZE - 1) ? 0 : -EPROTO;
    case PROTO_IPV4:
        /* One spelling per address: nothing but the port and four bytes. */
        if (!all_zero(in + DGRAM_FLOW_INFO, DGRAM_IP - DGRAM_FLOW_INFO) ||
            !all_zero(in + DGRAM_IP + ADDR_V4_BYTES, ADDR_V6_BYTES - ADDR_V4_BYTES)) {
            return -EPROTO;
        }
        proto_addr_set_v4(a, in + DGRAM_IP, (uint16_t)load_le(in + DGRAM_PORT, 2));
        return 1;
    case PROTO_IPV6:
        proto_addr_set_v6(a, in + DGRAM_IP, (uint16_t)load_le(in + DGRAM_PORT, 2),
                          (uint32_t)load_le(in + DGRAM_FLOW_INFO, 4),
                          (uint32_t)load_le(in + DGRAM_SCOPE_ID, 4));
        return 1;
    }
    return -EPROTO;
}
