/* check-proto.c — unit tests of the wire codec (proto/proto.c).
 *
 * The tests restate the message catalogue from PROTOCOL.md in their own table
 * (test_catalogue below) and check the codec against it: every type round
 * trips with pseudo-random field values, every field lands at the wire offset
 * and size the document gives, and the decoder refuses every malformed frame
 * with a documented code. Inputs are generated from fixed seeds, so a failure
 * reproduces exactly. The corpus in $DATA_DIR/proto/ holds hand-written
 * frames (the examples of PROTOCOL.md, and one file per past parser bug).
 *
 * Debugging: CK_FORK=no runs in one process (for gdb); CK_RUN_CASE=<tcase>
 * runs one feature only.
 */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Every ck_assert records its source location with the parent process, which
 * costs a write per call; loops that check thousands of values use require(),
 * which only reports a failure. */
#define require(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            ck_abort_msg(__VA_ARGS__);                                                             \
        }                                                                                          \
    } while (0)

/* Random instances per frame kind in the round-trip test: enough that every
 * field sees its boundaries and many values in between, cheap enough to run
 * in well under a second. */
#define ROUND_TRIPS_PER_KIND 300

/* Buffers fed to the decoder by the garbage test. */
#define GARBAGE_ITERATIONS 200000

/* Largest corpus file (hex text) and number of corpus files we accept. */
#define CORPUS_FILE_MAX  65536
#define CORPUS_FILES_MAX 256

/* ---- deterministic pseudo-random numbers (splitmix64) ----------------------- */

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform enough in [lo, hi] for tests (modulo bias is irrelevant here). */
static uint64_t rng_range(rng *r, uint64_t lo, uint64_t hi) {
    uint64_t span = hi - lo;
    if (span == UINT64_MAX) {
        return rng_next(r);
    }
    return lo + rng_next(r) % (span + 1);
}

/* ---- the catalogue as PROTOCOL.md states it ---------------------------------- */

enum test_field {
    TF_END = 0,
    TF_VERSION_MIN,
    TF_VERSION_MAX,
    TF_VERSION,
    TF_WASI,
    TF_TENANT,
    TF_TOKEN,
    TF_SESSION,
    TF_HANDLE,
    TF_NEW_HANDLE,
    TF_FAMILY,
    TF_ADDR,
    TF_OP,
    TF_HOW,
    TF_DIRECTION,
    TF_READY,
    TF_MORE,
    TF_OPTION,
    TF_VALUE,
    TF_CODE,
    TF_DETAIL,
    TF_NAME,
    TF_RESULT,
    TF_HAS_REMOTE,
    TF_COUNT
};

enum test_kind { TK_U8, TK_U16, TK_U32, TK_U64, TK_ADDR, TK_STRING };

struct test_field_desc {
    const char *name;
    enum test_kind kind;
    size_t offset;
    uint64_t lo, hi; /* valid values (integers), or max length (strings: hi) */
};

#define TFIELD(member, kind, lo, hi)                                                               \
    { #member, kind, offsetof(proto_msg, member), lo, hi }

static const struct test_field_desc test_fields[TF_COUNT] = {
    [TF_VERSION_MIN] = TFIELD(version_min, TK_U16, 0, UINT16_MAX),
    [TF_VERSION_MAX] = TFIELD(version_max, TK_U16, 0, UINT16_MAX),
    [TF_VERSION] = TFIELD(version, TK_U16, 0, UINT16_MAX),
    [TF_WASI] = TFIELD(wasi, TK_U8, 2, 3),
    [TF_TENANT] = TFIELD(tenant, TK_STRING, 0, 128),
    [TF_TOKEN] = TFIELD(token, TK_STRING, 0, 512),
    [TF_SESSION] = TFIELD(session, TK_U64, 0, UINT64_MAX),
    [TF_HANDLE] = TFIELD(handle, TK_U32, 0, UINT32_MAX),
    [TF_NEW_HANDLE] = TFIELD(new_handle, TK_U32, 0, UINT32_MAX),
    [TF_FAMILY] = TFIELD(family, TK_U8, 0, 1),
    [TF_ADDR] = TFIELD(addr, TK_ADDR, 0, 0),
    [TF_OP] = TFIELD(op, TK_U8, 0, 2),
    [TF_HOW] = TFIELD(how, TK_U8, 0, 2),
    [TF_DIRECTION] = TFIELD(direction, TK_U8, 0, 1),
    [TF_READY] = TFIELD(ready, TK_U8, 0, 1),
    [TF_MORE] = TFIELD(more, TK_U8, 0, 1),
    [TF_OPTION] = TFIELD(option, TK_U16, 0, UINT16_MAX),
    [TF_VALUE] = TFIELD(value, TK_U64, 0, UINT64_MAX),
    [TF_CODE] = TFIELD(code, TK_U16, 1, 21),
    [TF_DETAIL] = TFIELD(detail, TK_STRING, 0, 256),
    [TF_NAME] = TFIELD(name, TK_STRING, 0, 1024),
    [TF_RESULT] = TFIELD(result, TK_U16, 0, 21),
    [TF_HAS_REMOTE] = TFIELD(has_remote, TK_U8, 0, 1),
};

#define TEST_SCHEMA_MAX 5

struct test_message {
    uint16_t type;
    const char *name;
    bool is_event;
    enum test_field request[TEST_SCHEMA_MAX + 1];
    enum test_field result[TEST_SCHEMA_MAX + 1];
    unsigned reply_fds; /* of a success reply; of an event, the event's own */
};

static const struct test_message test_catalogue[] = {
    {0x0001,
     "HELLO",
     false,
     {TF_VERSION_MIN, TF_VERSION_MAX, TF_WASI, TF_TENANT, TF_TOKEN},
     {TF_VERSION, TF_SESSION},
     0},
    {0x0002, "PING", false, {TF_END}, {TF_END}, 0},
    {0x0100, "TCP_CREATE", false, {TF_FAMILY}, {TF_NEW_HANDLE}, 0},
    {0x0101, "TCP_BIND", false, {TF_HANDLE, TF_ADDR}, {TF_END}, 0},
    {0x0102, "TCP_CONNECT", false, {TF_HANDLE, TF_ADDR}, {TF_END}, 0},
    {0x0103, "TCP_LISTEN", false, {TF_HANDLE}, {TF_END}, 0},
    {0x0104, "TCP_FINISH", false, {TF_HANDLE, TF_OP}, {TF_END}, 2},
    {0x0105, "TCP_ACCEPT", false, {TF_HANDLE}, {TF_NEW_HANDLE, TF_MORE, TF_FAMILY}, 2},
    {0x0106, "TCP_SHUTDOWN", false, {TF_HANDLE, TF_HOW}, {TF_END}, 0},
    {0x0107, "TCP_DROP", false, {TF_HANDLE}, {TF_END}, 0},
    {0x0108, "TCP_GET_OPTION", false, {TF_HANDLE, TF_OPTION}, {TF_VALUE}, 0},
    {0x0109, "TCP_SET_OPTION", false, {TF_HANDLE, TF_OPTION, TF_VALUE}, {TF_END}, 0},
    {0x010a, "TCP_LOCAL_ADDRESS", false, {TF_HANDLE}, {TF_ADDR}, 0},
    {0x010b, "TCP_REMOTE_ADDRESS", false, {TF_HANDLE}, {TF_ADDR}, 0},
    {0x010c, "TCP_STREAM", false, {TF_HANDLE, TF_DIRECTION}, {TF_END}, 1},
    {0x4001, "EV_READY", true, {TF_HANDLE, TF_READY}, {TF_END}, 0},
    {0x0200, "UDP_CREATE", false, {TF_FAMILY}, {TF_NEW_HANDLE}, 1},
    {0x0201, "UDP_BIND", false, {TF_HANDLE, TF_ADDR}, {TF_END}, 0},
    {0x0202, "UDP_FINISH_BIND", false, {TF_HANDLE}, {TF_END}, 0},
    {0x0203, "UDP_STREAM", false, {TF_HANDLE, TF_HAS_REMOTE, TF_ADDR}, {TF_END}, 0},
    {0x0204, "UDP_CONNECT", false, {TF_HANDLE, TF_ADDR}, {TF_END}, 0},
    {0x0205, "UDP_DISCONNECT", false, {TF_HANDLE}, {TF_END}, 0},
    {0x0206, "UDP_SEND_CHECK", false, {TF_HANDLE, TF_ADDR}, {TF_END}, 0},
    {0x0207, "UDP_GET_OPTION", false, {TF_HANDLE, TF_OPTION}, {TF_VALUE}, 0},
    {0x0208, "UDP_SET_OPTION", false, {TF_HANDLE, TF_OPTION, TF_VALUE}, {TF_END}, 0},
    {0x0209, "UDP_LOCAL_ADDRESS", false, {TF_HANDLE}, {TF_ADDR}, 0},
    {0x020a, "UDP_REMOTE_ADDRESS", false, {TF_HANDLE}, {TF_ADDR}, 0},
    {0x020b, "UDP_DROP", false, {TF_HANDLE}, {TF_END}, 0},
    {0x0300, "RESOLVE", false, {TF_NAME}, {TF_NEW_HANDLE}, 0},
    {0x0301, "RESOLVE_DROP", false, {TF_HANDLE}, {TF_END}, 0},
    {0x4002, "EV_STREAM_ERROR", true, {TF_HANDLE, TF_DIRECTION, TF_CODE}, {TF_END}, 0},
    {0x4003, "EV_DATAGRAM_ERROR", true, {TF_HANDLE, TF_CODE}, {TF_END}, 0},
    {0x4004, "EV_RESOLVE_ADDRESS", true, {TF_HANDLE, TF_ADDR}, {TF_END}, 0},
    {0x4005, "EV_RESOLVE_DONE", true, {TF_HANDLE, TF_RESULT}, {TF_END}, 0},
    {0x4006, "EV_CONNECTED", true, {TF_HANDLE, TF_RESULT}, {TF_END}, 2},
};

static const enum test_field detail_schema[] = {TF_DETAIL, TF_END};

static const struct test_message *test_message_of(uint16_t type) {
    for (size_t i = 0; i < ARRAY_SIZE(test_catalogue); i++) {
        if (test_catalogue[i].type == (type & 0x7fff)) {
            return &test_catalogue[i];
        }
    }
    return NULL;
}

/* The kinds of frame one catalogue entry produces. */
enum frame_shape { SHAPE_REQUEST, SHAPE_REPLY_OK, SHAPE_REPLY_ERROR, SHAPE_EVENT };

/* Frame shapes to test for one type from proto_all_types(): a reply type
 * gives two (success and error). */
static size_t shapes_of(uint16_t type, enum frame_shape shapes[2]) {
    const struct test_message *tm = test_message_of(type);

    ck_assert_msg(tm != NULL, "type 0x%04x missing from the test catalogue", type);
    if (tm->is_event) {
        shapes[0] = SHAPE_EVENT;
        return 1;
    }
    if (type & PROTO_REPLY) {
        shapes[0] = SHAPE_REPLY_OK;
        shapes[1] = SHAPE_REPLY_ERROR;
        return 2;
    }
    shapes[0] = SHAPE_REQUEST;
    return 1;
}

static const enum test_field *schema_of(const struct test_message *tm, enum frame_shape shape) {
    switch (shape) {
    case SHAPE_REQUEST:
    case SHAPE_EVENT:
        return tm->request;
    case SHAPE_REPLY_OK:
        return tm->result;
    case SHAPE_REPLY_ERROR:
        return detail_schema;
    }
    return NULL;
}

/* ---- filling messages -------------------------------------------------------- */

/* How string fields are chosen: random length, all at their limit, all empty. */
enum string_mode { STRINGS_RANDOM, STRINGS_MAX, STRINGS_EMPTY };

static uint64_t pick_integer(rng *r, uint64_t lo, uint64_t hi) {
    /* Boundaries are where codecs break: give them half the draws. */
    switch (rng_next(r) % 4) {
    case 0:
        return lo;
    case 1:
        return hi;
    default:
        return rng_range(r, lo, hi);
    }
}

static void set_uint(proto_msg *m, const struct test_field_desc *f, uint64_t v) {
    unsigned char *at = (unsigned char *)m + f->offset;
    uint8_t v8 = (uint8_t)v;
    uint16_t v16 = (uint16_t)v;
    uint32_t v32 = (uint32_t)v;

    switch (f->kind) {
    case TK_U8:
        memcpy(at, &v8, 1);
        break;
    case TK_U16:
        memcpy(at, &v16, 2);
        break;
    case TK_U32:
        memcpy(at, &v32, 4);
        break;
    case TK_U64:
        memcpy(at, &v, 8);
        break;
    default:
        ck_abort_msg("not an integer field");
    }
}

static size_t integer_width(enum test_kind kind) {
    return kind == TK_U8 ? 1 : kind == TK_U16 ? 2 : kind == TK_U32 ? 4 : 8;
}

static uint64_t get_uint(const proto_msg *m, const struct test_field_desc *f) {
    const unsigned char *at = (const unsigned char *)m + f->offset;
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;

    switch (f->kind) {
    case TK_U8:
        memcpy(&v8, at, 1);
        return v8;
    case TK_U16:
        memcpy(&v16, at, 2);
        return v16;
    case TK_U32:
        memcpy(&v32, at, 4);
        return v32;
    case TK_U64:
        memcpy(&v64, at, 8);
        return v64;
    default:
        ck_abort_msg("not an integer field");
    }
    return 0;
}

static void fill_string(rng *r, char *dst, uint64_t limit, enum string_mode mode) {
    size_t n;

    switch (mode) {
    case STRINGS_MAX:
        n = (size_t)limit;
        break;
    case STRINGS_EMPTY:
        n = 0;
        break;
    default:
        n = (size_t)pick_integer(r, 0, limit);
        break;
    }
    /* Any byte but NUL is legal on the wire; include non-ASCII ones. */
    for (size_t i = 0; i < n; i++) {
        dst[i] = (char)rng_range(r, 1, 255);
    }
    dst[n] = '\0';
}

static void fill_addr(rng *r, proto_addr *a) {
    uint8_t ip[16];

    for (size_t i = 0; i < sizeof(ip); i++) {
        ip[i] = (uint8_t)rng_next(r);
    }
    if (rng_next(r) % 2 == 0) {
        proto_addr_set_v4(a, ip, (uint16_t)pick_integer(r, 0, UINT16_MAX));
    } else {
        proto_addr_set_v6(a, ip, (uint16_t)pick_integer(r, 0, UINT16_MAX),
                          (uint32_t)pick_integer(r, 0, UINT32_MAX),
                          (uint32_t)pick_integer(r, 0, UINT32_MAX));
    }
}

/* Wire size of one field as it is set in m. */
static size_t field_wire_size(const proto_msg *m, enum test_field id) {
    const struct test_field_desc *f = &test_fields[id];
    const unsigned char *at = (const unsigned char *)m + f->offset;

    switch (f->kind) {
    case TK_U8:
        return 1;
    case TK_U16:
        return 2;
    case TK_U32:
        return 4;
    case TK_U64:
        return 8;
    case TK_ADDR:
        return m->addr.family == PROTO_IPV4 ? 1 + 2 + 4 : 1 + 2 + 16 + 4 + 4;
    case TK_STRING:
        return 2 + strlen((const char *)at);
    }
    return 0;
}

/* Fills a zeroed message of the given shape with random valid values in the
 * schema fields only, and returns the payload length PROTOCOL.md predicts. */
static size_t fill_message(rng *r, proto_msg *m, uint16_t type, enum frame_shape shape,
                           enum string_mode mode) {
    const struct test_message *tm = test_message_of(type);
    const enum test_field *schema = schema_of(tm, shape);
    size_t payload = 0;

    memset(m, 0, sizeof(*m));
    m->type = type;
    m->id = shape == SHAPE_EVENT ? 0 : (uint32_t)pick_integer(r, 1, UINT32_MAX);
    if (shape == SHAPE_REPLY_OK || shape == SHAPE_EVENT) {
        m->nfds = (uint8_t)rng_range(r, 0, tm->reply_fds);
    }
    if (shape == SHAPE_REPLY_OK || shape == SHAPE_REPLY_ERROR) {
        payload += 2;
        m->err = shape == SHAPE_REPLY_OK ? 0 : (uint16_t)rng_range(r, 1, 22);
        if (m->err == 22) {
            m->err = PROTO_E_PROTOCOL;
        }
    }
    for (size_t i = 0; schema[i] != TF_END; i++) {
        const struct test_field_desc *f = &test_fields[schema[i]];
        if (f->kind == TK_ADDR) {
            fill_addr(r, &m->addr);
        } else if (f->kind == TK_STRING) {
            fill_string(r, (char *)m + f->offset, f->hi, mode);
        } else {
            set_uint(m, f, pick_integer(r, f->lo, f->hi));
        }
        payload += field_wire_size(m, schema[i]);
    }
    return payload;
}

/* Payload offset of field number `index` of the shape's schema, in m's wire
 * form. */
static size_t field_offset(const proto_msg *m, enum frame_shape shape, size_t index) {
    const enum test_field *schema = schema_of(test_message_of(m->type), shape);
    size_t off = shape == SHAPE_REPLY_OK || shape == SHAPE_REPLY_ERROR ? 2 : 0;

    for (size_t i = 0; i < index; i++) {
        off += field_wire_size(m, schema[i]);
    }
    return PROTO_HEADER_SIZE + off;
}

/* Names the first member in which a and b differ, or NULL. */
static const char *first_difference(const proto_msg *a, const proto_msg *b) {
#define SAME(member)                                                                               \
    if (a->member != b->member) {                                                                  \
        return #member;                                                                            \
    }
    SAME(type)
    SAME(nfds)
    SAME(id)
    SAME(err)
    SAME(version_min)
    SAME(version_max)
    SAME(version)
    SAME(wasi)
    SAME(session)
    SAME(handle)
    SAME(new_handle)
    SAME(family)
    SAME(op)
    SAME(how)
    SAME(direction)
    SAME(ready)
    SAME(more)
    SAME(option)
    SAME(code)
    SAME(result)
    SAME(has_remote)
    SAME(value)
    SAME(addr.family)
    SAME(addr.port)
    SAME(addr.flow_info)
    SAME(addr.scope_id)
#undef SAME
    if (memcmp(a->addr.ip, b->addr.ip, sizeof(a->addr.ip)) != 0) {
        return "addr.ip";
    }
    if (strcmp(a->tenant, b->tenant) != 0) {
        return "tenant";
    }
    if (strcmp(a->token, b->token) != 0) {
        return "token";
    }
    if (strcmp(a->detail, b->detail) != 0) {
        return "detail";
    }
    if (strcmp(a->name, b->name) != 0) {
        return "name";
    }
    return NULL;
}

static void assert_messages_equal(const proto_msg *a, const proto_msg *b) {
    const char *member = first_difference(a, b);

    require(member == NULL, "%s: member %s differs", proto_type_name(a->type), member);
}

static bool is_documented_decode_error(int rc) {
    return rc == -EPROTO || rc == -ENOMSG || rc == -EMSGSIZE;
}

static void put_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void set_header(uint8_t *frame, uint32_t payload_len, uint16_t type, uint8_t nfds,
                       uint8_t flags, uint32_t id) {
    put_le(frame, payload_len, 4);
    put_le(frame + 4, type, 2);
    frame[6] = nfds;
    frame[7] = flags;
    put_le(frame + 8, id, 4);
}

/* Encodes m and checks the frame length against the predicted payload. */
static size_t encode_checked(const proto_msg *m, uint8_t *frame, size_t cap, size_t payload) {
    ssize_t n = proto_encode(m, frame, cap);

    require(n == (ssize_t)(PROTO_HEADER_SIZE + payload), "%s: encoded %zd bytes, expected %zu",
            proto_type_name(m->type), n, PROTO_HEADER_SIZE + payload);
    return (size_t)n;
}

/* ---- TCase catalogue -------------------------------------------------------- */

START_TEST(test_all_types_match_catalogue) {
    const uint16_t *types;
    size_t n = proto_all_types(&types);
    size_t requests = 0, replies = 0, events = 0;

    ck_assert_uint_eq(n, 64);
    for (size_t i = 0; i < n; i++) {
        const struct test_message *tm = test_message_of(types[i]);
        ck_assert_msg(tm != NULL, "unexpected type 0x%04x", types[i]);
        for (size_t j = 0; j < i; j++) {
            ck_assert_uint_ne(types[i], types[j]);
        }
        if (tm->is_event) {
            ck_assert_uint_ge(types[i], PROTO_EVENT_FIRST);
            ck_assert_uint_le(types[i], PROTO_EVENT_LAST);
            ck_assert(!proto_type_is_request(types[i]));
            events++;
        } else if (types[i] & PROTO_REPLY) {
            ck_assert(!proto_type_is_request(types[i]));
            replies++;
        } else {
            ck_assert(proto_type_is_request(types[i]));
            requests++;
        }
    }
    ck_assert_uint_eq(requests, 29);
    ck_assert_uint_eq(replies, 29);
    ck_assert_uint_eq(events, 6);
    /* Conversely, every catalogue entry is listed. */
    for (size_t i = 0; i < ARRAY_SIZE(test_catalogue); i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++) {
            found = found || types[j] == test_catalogue[i].type;
        }
        ck_assert_msg(found, "%s not in proto_all_types()", test_catalogue[i].name);
    }
}
END_TEST

START_TEST(test_type_names) {
    char reply_name[64];

    for (size_t i = 0; i < ARRAY_SIZE(test_catalogue); i++) {
        const struct test_message *tm = &test_catalogue[i];
        ck_assert_str_eq(proto_type_name(tm->type), tm->name);
        if (tm->is_event) {
            ck_assert_ptr_null(proto_type_name(tm->type | PROTO_REPLY));
        } else {
            snprintf(reply_name, sizeof(reply_name), "%s reply", tm->name);
            ck_assert_str_eq(proto_type_name(tm->type | PROTO_REPLY), reply_name);
        }
    }
    ck_assert_str_eq(proto_type_name(PROTO_TCP_CONNECT | PROTO_REPLY), "TCP_CONNECT reply");
    ck_assert_ptr_null(proto_type_name(0));
    ck_assert_ptr_null(proto_type_name(PROTO_REPLY));
    ck_assert_ptr_null(proto_type_name(0x0003));
    ck_assert_ptr_null(proto_type_name(0x4000));
    ck_assert_ptr_null(proto_type_name(0xffff));
    ck_assert(!proto_type_is_request(0));
    ck_assert(!proto_type_is_request(0x010d));
}
END_TEST

START_TEST(test_err_names) {
    static const char *const wit[] = {
        "unknown",
        "access-denied",
        "not-supported",
        "invalid-argument",
        "out-of-memory",
        "timeout",
        "concurrency-conflict",
        "not-in-progress",
        "would-block",
        "invalid-state",
        "new-socket-limit",
        "address-not-bindable",
        "address-in-use",
        "remote-unreachable",
        "connection-refused",
        "connection-reset",
        "connection-aborted",
        "datagram-too-large",
        "name-unresolvable",
        "temporary-resolver-failure",
        "permanent-resolver-failure",
    };

    ck_assert_uint_eq(ARRAY_SIZE(wit), PROTO_E_LAST_WASI);
    for (unsigned i = 0; i < ARRAY_SIZE(wit); i++) {
        ck_assert_str_eq(proto_err_name(i + 1), wit[i]);
    }
    ck_assert_str_eq(proto_err_name(PROTO_E_ACCESS_DENIED), "access-denied");
    ck_assert_str_eq(proto_err_name(PROTO_E_PROTOCOL), "protocol");
    ck_assert_str_eq(proto_err_name(PROTO_OK), "ok");
    for (unsigned i = PROTO_E_LAST_WASI + 1; i < 70000; i++) {
        if (i != PROTO_E_PROTOCOL) {
            require(proto_err_name(i) == NULL, "err %u has a name", i);
        }
    }
    ck_assert_ptr_null(proto_err_name(~0u));
}
END_TEST

/* ---- TCase round_trip ------------------------------------------------------- */

/* One loop iteration per type of proto_all_types(). */
START_TEST(test_round_trip) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    uint16_t type;
    enum frame_shape shapes[2];
    rng r = {0x5eed0000u + (uint64_t)_i};
    uint8_t frame[PROTO_MAX_FRAME];
    uint8_t again[PROTO_MAX_FRAME];
    proto_msg m, d;

    ck_assert_uint_lt((size_t)_i, ntypes);
    type = types[_i];
    size_t nshapes = shapes_of(type, shapes);
    for (size_t s = 0; s < nshapes; s++) {
        for (int iter = 0; iter < ROUND_TRIPS_PER_KIND; iter++) {
            /* The first iterations pin every string at its limit, then empty. */
            enum string_mode mode = iter == 0   ? STRINGS_MAX
                                    : iter == 1 ? STRINGS_EMPTY
                                                : STRINGS_RANDOM;
            size_t payload = fill_message(&r, &m, type, shapes[s], mode);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);
            size_t frame_len = 0;

            const char *name = proto_type_name(type);
            require(proto_frame_ready(frame, len, &frame_len) == 1 && frame_len == len,
                    "%s: frame not ready", name);
            memset(&d, 0xa5, sizeof(d));
            require(proto_decode(frame, len, &d) == 0, "%s: decode failed", name);
            assert_messages_equal(&m, &d);
            /* Decoding then encoding gives the same bytes. */
            require(proto_encode(&d, again, sizeof(again)) == (ssize_t)len &&
                        memcmp(frame, again, len) == 0,
                    "%s: re-encoding differs", name);
        }
    }
}
END_TEST

/* The encoded header is exactly what PROTOCOL.md describes. */
START_TEST(test_header_layout) {
    proto_msg m;
    uint8_t frame[64];

    memset(&m, 0, sizeof(m));
    m.type = PROTO_TCP_STREAM | PROTO_REPLY;
    m.id = 0x11223344;
    m.nfds = 1;
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), 14);
    static const uint8_t expect[] = {
        0x02, 0x00, 0x00, 0x00, 0x0c, 0x81, 0x01, 0x00, 0x44, 0x33, 0x22, 0x11, 0x00, 0x00,
    };
    ck_assert_mem_eq(frame, expect, sizeof(expect));
}
END_TEST

/* Each field sits where the document says, little-endian, with its size. */
START_TEST(test_field_offsets) {
    proto_msg m;
    uint8_t frame[PROTO_MAX_FRAME];
    rng r = {77};

    for (size_t t = 0; t < ARRAY_SIZE(test_catalogue); t++) {
        const struct test_message *tm = &test_catalogue[t];
        enum frame_shape shape = tm->is_event ? SHAPE_EVENT : SHAPE_REQUEST;
        for (int reply = 0; reply < (tm->is_event ? 1 : 2); reply++) {
            uint16_t type = reply ? (uint16_t)(tm->type | PROTO_REPLY) : tm->type;
            if (reply) {
                shape = SHAPE_REPLY_OK;
            }
            size_t payload = fill_message(&r, &m, type, shape, STRINGS_RANDOM);
            encode_checked(&m, frame, sizeof(frame), payload);
            const enum test_field *schema = schema_of(tm, shape);
            for (size_t i = 0; schema[i] != TF_END; i++) {
                const struct test_field_desc *f = &test_fields[schema[i]];
                size_t off = field_offset(&m, shape, i);
                switch (f->kind) {
                case TK_U8:
                case TK_U16:
                case TK_U32:
                case TK_U64: {
                    size_t width = integer_width(f->kind);
                    uint64_t got = 0;
                    for (size_t b = width; b-- > 0;) {
                        got = (got << 8) | frame[off + b];
                    }
                    ck_assert_msg(got == get_uint(&m, f), "%s.%s at %zu", tm->name, f->name, off);
                    break;
                }
                case TK_ADDR:
                    ck_assert_uint_eq(frame[off], m.addr.family);
                    ck_assert_uint_eq(frame[off + 1] | frame[off + 2] << 8, m.addr.port);
                    ck_assert_mem_eq(frame + off + 3, m.addr.ip,
                                     m.addr.family == PROTO_IPV4 ? 4 : 16);
                    break;
                case TK_STRING: {
                    const char *s = (const char *)&m + f->offset;
                    size_t n = strlen(s);
                    ck_assert_uint_eq(frame[off] | frame[off + 1] << 8, n);
                    ck_assert_mem_eq(frame + off + 2, s, n);
                    break;
                }
                }
            }
        }
    }
}
END_TEST

/* The worked example of PROTOCOL.md, byte for byte. */
START_TEST(test_hello_example) {
    static const uint8_t hello[] = {
        0x0d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, /* header */
        0x01, 0x00, 0x01, 0x00, 0x02,                                           /* 1, 1, 0.2 */
        0x04, 0x00, 'd',  'e',  'm',  'o',                                      /* tenant */
        0x00, 0x00,                                                             /* token */
    };
    static const uint8_t reply[] = {
        0x0c, 0x00, 0x00, 0x00, 0x01, 0x80, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00,             /* err ok */
        0x01, 0x00,                                     /* version 1 */
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* session 42 */
    };
    proto_msg m, d;
    uint8_t frame[128];

    memset(&m, 0, sizeof(m));
    m.type = PROTO_HELLO;
    m.id = 1;
    m.version_min = 1;
    m.version_max = 1;
    m.wasi = PROTO_WASI_0_2;
    memcpy(m.tenant, "demo", 5);
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), sizeof(hello));
    ck_assert_mem_eq(frame, hello, sizeof(hello));
    ck_assert_int_eq(proto_decode(hello, sizeof(hello), &d), 0);
    ck_assert_str_eq(d.tenant, "demo");
    ck_assert_str_eq(d.token, "");

    proto_reply_ok(&m, &m);
    m.version = 1;
    m.session = 42;
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), sizeof(reply));
    ck_assert_mem_eq(frame, reply, sizeof(reply));
    ck_assert_int_eq(proto_decode(reply, sizeof(reply), &d), 0);
    ck_assert_uint_eq(d.type, PROTO_HELLO | PROTO_REPLY);
    ck_assert_uint_eq(d.session, 42);
}
END_TEST

START_TEST(test_reply_helpers) {
    proto_msg req, reply, d;
    uint8_t frame[PROTO_MAX_FRAME];
    char long_detail[600];

    memset(&req, 0, sizeof(req));
    req.type = PROTO_TCP_CONNECT;
    req.id = 9;
    req.handle = 5;

    memset(long_detail, 'x', sizeof(long_detail) - 1);
    long_detail[sizeof(long_detail) - 1] = '\0';
    proto_reply_error(&req, PROTO_E_ACCESS_DENIED, long_detail, &reply);
    ck_assert_uint_eq(reply.type, PROTO_TCP_CONNECT | PROTO_REPLY);
    ck_assert_uint_eq(reply.id, 9);
    ck_assert_uint_eq(reply.err, PROTO_E_ACCESS_DENIED);
    ck_assert_uint_eq(reply.handle, 0);
    ck_assert_uint_eq(strlen(reply.detail), PROTO_DETAIL_MAX);
    ck_assert_int_eq(proto_encode(&reply, frame, sizeof(frame)),
                     PROTO_HEADER_SIZE + 2 + 2 + PROTO_DETAIL_MAX);

    proto_reply_error(&req, PROTO_E_PROTOCOL, NULL, &reply);
    ck_assert_str_eq(reply.detail, "");
    ssize_t n = proto_encode(&reply, frame, sizeof(frame));
    ck_assert_int_eq(n, PROTO_HEADER_SIZE + 4);
    ck_assert_int_eq(proto_decode(frame, (size_t)n, &d), 0);
    ck_assert_uint_eq(d.err, PROTO_E_PROTOCOL);

    proto_reply_ok(&req, &reply);
    ck_assert_uint_eq(reply.type, PROTO_TCP_CONNECT | PROTO_REPLY);
    ck_assert_uint_eq(reply.id, 9);
    ck_assert_uint_eq(reply.err, 0);
    ck_assert_uint_eq(reply.handle, 0);
    ck_assert_int_eq(proto_encode(&reply, frame, sizeof(frame)), PROTO_HEADER_SIZE + 2);

    /* The request may be the reply struct itself. */
    proto_reply_error(&req, PROTO_E_TIMEOUT, "slow", &req);
    ck_assert_uint_eq(req.type, PROTO_TCP_CONNECT | PROTO_REPLY);
    ck_assert_uint_eq(req.id, 9);
    ck_assert_str_eq(req.detail, "slow");
}
END_TEST

START_TEST(test_addr_helpers) {
    static const uint8_t v4[4] = {127, 0, 0, 1};
    static const uint8_t v6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    proto_addr a;

    memset(&a, 0xff, sizeof(a));
    proto_addr_set_v4(&a, v4, 8080);
    ck_assert_uint_eq(a.family, PROTO_IPV4);
    ck_assert_uint_eq(a.port, 8080);
    ck_assert_mem_eq(a.ip, v4, 4);
    for (size_t i = 4; i < 16; i++) {
        ck_assert_uint_eq(a.ip[i], 0);
    }
    ck_assert_uint_eq(a.flow_info, 0);
    ck_assert_uint_eq(a.scope_id, 0);

    proto_addr_set_v6(&a, v6, 443, 7, 3);
    ck_assert_uint_eq(a.family, PROTO_IPV6);
    ck_assert_uint_eq(a.port, 443);
    ck_assert_mem_eq(a.ip, v6, 16);
    ck_assert_uint_eq(a.flow_info, 7);
    ck_assert_uint_eq(a.scope_id, 3);
}
END_TEST

/* ---- TCase truncation --------------------------------------------------------- */

/* Every prefix of every valid frame is "not ready", and refused if forced;
 * every strict prefix of a payload, with a header that agrees, is refused. */
START_TEST(test_truncation) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    rng r = {4242 + (uint64_t)_i};
    uint8_t frame[PROTO_MAX_FRAME];
    uint8_t cut[PROTO_MAX_FRAME];
    enum frame_shape shapes[2];
    proto_msg m, d;

    ck_assert_uint_lt((size_t)_i, ntypes);
    size_t nshapes = shapes_of(types[_i], shapes);
    for (size_t s = 0; s < nshapes; s++) {
        for (int mode = STRINGS_RANDOM; mode <= STRINGS_EMPTY; mode++) {
            size_t payload = fill_message(&r, &m, types[_i], shapes[s], (enum string_mode)mode);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);

            for (size_t prefix = 0; prefix < len; prefix++) {
                size_t frame_len = 12345;
                int ready = proto_frame_ready(frame, prefix, &frame_len);
                require(ready == 0 && frame_len == (prefix < PROTO_HEADER_SIZE ? 0 : len),
                        "%s prefix %zu: ready %d, frame_len %zu", proto_type_name(types[_i]),
                        prefix, ready, frame_len);
                int rc = proto_decode(frame, prefix, &d);
                require(rc == -EPROTO || rc == -EMSGSIZE, "%s prefix %zu: decode %d",
                        proto_type_name(types[_i]), prefix, rc);
            }
            for (size_t p = 0; p < payload; p++) {
                memcpy(cut, frame, PROTO_HEADER_SIZE + p);
                put_le(cut, p, 4);
                require(proto_frame_ready(cut, PROTO_HEADER_SIZE + p, NULL) == 1 &&
                            proto_decode(cut, PROTO_HEADER_SIZE + p, &d) == -EPROTO,
                        "%s payload cut at %zu accepted", proto_type_name(types[_i]), p);
            }
        }
    }
}
END_TEST

/* Extra bytes after the payload are refused, whether the header counts them
 * or not; frame_ready still finds the first frame in a longer stream. */
START_TEST(test_trailing_bytes) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    rng r = {99};
    uint8_t frame[PROTO_MAX_FRAME + 16];
    enum frame_shape shapes[2];
    proto_msg m, d;

    for (size_t t = 0; t < ntypes; t++) {
        size_t nshapes = shapes_of(types[t], shapes);
        for (size_t s = 0; s < nshapes; s++) {
            size_t payload = fill_message(&r, &m, types[t], shapes[s], STRINGS_RANDOM);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);
            size_t frame_len;

            for (size_t extra = 1; extra <= 9; extra++) {
                memset(frame + len, 0, extra);
                ck_assert_int_eq(proto_frame_ready(frame, len + extra, &frame_len), 1);
                ck_assert_uint_eq(frame_len, len);
                ck_assert_int_eq(proto_decode(frame, len + extra, &d), -EPROTO);
                put_le(frame, payload + extra, 4);
                ck_assert_int_eq(proto_decode(frame, len + extra, &d), -EPROTO);
                put_le(frame, payload, 4);
            }
            ck_assert_int_eq(proto_decode(frame, len, &d), 0);
        }
    }
}
END_TEST

/* ---- TCase header ------------------------------------------------------------- */

START_TEST(test_oversized_payload) {
    uint8_t *frame = calloc(1, PROTO_MAX_FRAME + 1);
    static const uint32_t sizes[] = {PROTO_MAX_PAYLOAD + 1, 65536, 0x7fffffff, 0xffffffff};
    size_t frame_len;
    proto_msg d;

    ck_assert_ptr_nonnull(frame);
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        set_header(frame, sizes[i], PROTO_PING, 0, 0, 1);
        /* The header alone is enough to refuse it. */
        ck_assert_int_eq(proto_frame_ready(frame, PROTO_HEADER_SIZE, &frame_len), -EMSGSIZE);
        ck_assert_int_eq(proto_decode(frame, PROTO_HEADER_SIZE, &d), -EMSGSIZE);
        ck_assert_int_eq(proto_decode(frame, PROTO_MAX_FRAME + 1, &d), -EMSGSIZE);
    }
    /* The largest allowed payload is waited for, then refused as not PING. */
    set_header(frame, PROTO_MAX_PAYLOAD, PROTO_PING, 0, 0, 1);
    ck_assert_int_eq(proto_frame_ready(frame, PROTO_HEADER_SIZE, &frame_len), 0);
    ck_assert_uint_eq(frame_len, PROTO_MAX_FRAME);
    ck_assert_int_eq(proto_frame_ready(frame, PROTO_MAX_FRAME, &frame_len), 1);
    ck_assert_int_eq(proto_decode(frame, PROTO_MAX_FRAME, &d), -EPROTO);
    free(frame);
}
END_TEST

START_TEST(test_bad_flags_and_nfds) {
    uint8_t frame[PROTO_HEADER_SIZE];
    size_t frame_len;
    proto_msg d;

    for (unsigned flags = 1; flags <= 255; flags++) {
        set_header(frame, 0, PROTO_PING, 0, (uint8_t)flags, 1);
        ck_assert_int_eq(proto_frame_ready(frame, sizeof(frame), &frame_len), -EPROTO);
        ck_assert_int_eq(proto_decode(frame, sizeof(frame), &d), -EPROTO);
    }
    for (unsigned nfds = PROTO_MAX_FDS_PER_FRAME + 1; nfds <= 255; nfds++) {
        set_header(frame, 0, PROTO_PING, (uint8_t)nfds, 0, 1);
        ck_assert_int_eq(proto_frame_ready(frame, sizeof(frame), &frame_len), -EPROTO);
        ck_assert_int_eq(proto_decode(frame, sizeof(frame), &d), -EPROTO);
    }
    set_header(frame, 0, PROTO_PING, 0, 0, 1);
    ck_assert_int_eq(proto_frame_ready(frame, sizeof(frame), &frame_len), 1);
    ck_assert_uint_eq(frame_len, PROTO_HEADER_SIZE);
    ck_assert_int_eq(proto_decode(frame, sizeof(frame), &d), 0);
    ck_assert_uint_eq(d.type, PROTO_PING);
    ck_assert_uint_eq(d.id, 1);
}
END_TEST

/* Every type number: the known ones decode (or fail on their payload), the
 * others are -ENOMSG. */
START_TEST(test_unknown_types) {
    uint8_t frame[PROTO_HEADER_SIZE];
    proto_msg d;
    unsigned known = 0;

    for (unsigned type = 0; type <= 0xffff; type++) {
        bool is_known = test_message_of((uint16_t)type) != NULL &&
                        !(test_message_of((uint16_t)type)->is_event && (type & PROTO_REPLY));
        uint32_t id = type >= PROTO_EVENT_FIRST && type <= PROTO_EVENT_LAST ? 0 : 1;
        set_header(frame, 0, (uint16_t)type, 0, 0, id);
        int rc = proto_decode(frame, sizeof(frame), &d);
        if (is_known) {
            known++;
            require(rc != -ENOMSG, "type 0x%04x", type);
        } else {
            require(rc == -ENOMSG, "type 0x%04x: %d", type, rc);
            require(proto_type_name((uint16_t)type) == NULL, "type 0x%04x named", type);
        }
    }
    ck_assert_uint_eq(known, 64);
}
END_TEST

/* Requests and replies need an id; events must not have one. */
START_TEST(test_id_rules) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    rng r = {5};
    uint8_t frame[PROTO_MAX_FRAME];
    enum frame_shape shapes[2];
    proto_msg m, d;

    for (size_t t = 0; t < ntypes; t++) {
        size_t nshapes = shapes_of(types[t], shapes);
        for (size_t s = 0; s < nshapes; s++) {
            size_t payload = fill_message(&r, &m, types[t], shapes[s], STRINGS_RANDOM);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);
            uint32_t wrong = shapes[s] == SHAPE_EVENT ? 1 : 0;

            put_le(frame + 8, wrong, 4);
            ck_assert_int_eq(proto_decode(frame, len, &d), -EPROTO);
            if (shapes[s] == SHAPE_EVENT) {
                put_le(frame + 8, UINT32_MAX, 4);
                ck_assert_int_eq(proto_decode(frame, len, &d), -EPROTO);
            }
            m.id = wrong;
            ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), -EINVAL);
        }
    }
}
END_TEST

/* Descriptors: never with requests or error replies; success replies and
 * events up to their type's count (only EV_CONNECTED has any). */
START_TEST(test_nfds_per_type) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    rng r = {6};
    uint8_t frame[PROTO_MAX_FRAME];
    enum frame_shape shapes[2];
    proto_msg m, d;

    for (size_t t = 0; t < ntypes; t++) {
        const struct test_message *tm = test_message_of(types[t]);
        size_t nshapes = shapes_of(types[t], shapes);
        for (size_t s = 0; s < nshapes; s++) {
            size_t payload = fill_message(&r, &m, types[t], shapes[s], STRINGS_RANDOM);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);
            unsigned allowed =
                shapes[s] == SHAPE_REPLY_OK || shapes[s] == SHAPE_EVENT ? tm->reply_fds : 0;

            for (unsigned nfds = 0; nfds <= PROTO_MAX_FDS_PER_FRAME; nfds++) {
                frame[6] = (uint8_t)nfds;
                m.nfds = (uint8_t)nfds;
                int expect = nfds <= allowed ? 0 : -EPROTO;
                ck_assert_msg(proto_decode(frame, len, &d) == expect, "%s nfds %u",
                              proto_type_name(types[t]), nfds);
                ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)),
                                 nfds <= allowed ? (ssize_t)len : -EINVAL);
            }
            m.nfds = PROTO_MAX_FDS_PER_FRAME + 1;
            ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), -EINVAL);
        }
    }
}
END_TEST

/* ---- TCase values ------------------------------------------------------------- */

/* Every value of every ranged 8-bit field, and of EV_STREAM_ERROR.code. */
START_TEST(test_enum_ranges) {
    rng r = {8};
    uint8_t frame[PROTO_MAX_FRAME];
    uint8_t patched[PROTO_MAX_FRAME];
    proto_msg m, d;
    unsigned checked = 0;

    for (size_t t = 0; t < ARRAY_SIZE(test_catalogue); t++) {
        const struct test_message *tm = &test_catalogue[t];
        for (int reply = 0; reply < (tm->is_event ? 1 : 2); reply++) {
            enum frame_shape shape = tm->is_event ? SHAPE_EVENT
                                     : reply      ? SHAPE_REPLY_OK
                                                  : SHAPE_REQUEST;
            uint16_t type = reply ? (uint16_t)(tm->type | PROTO_REPLY) : tm->type;
            const enum test_field *schema = schema_of(tm, shape);
            size_t payload = fill_message(&r, &m, type, shape, STRINGS_RANDOM);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);

            for (size_t i = 0; schema[i] != TF_END; i++) {
                const struct test_field_desc *f = &test_fields[schema[i]];
                size_t off = field_offset(&m, shape, i);
                uint64_t top;
                if (f->kind == TK_U8) {
                    top = UINT8_MAX;
                } else if (f->kind == TK_U16 && (f->lo != 0 || f->hi != UINT16_MAX)) {
                    top = UINT16_MAX;
                } else {
                    continue;
                }
                for (uint64_t v = 0; v <= top; v++) {
                    memcpy(patched, frame, len);
                    put_le(patched + off, v, f->kind == TK_U8 ? 1 : 2);
                    int expect = v >= f->lo && v <= f->hi ? 0 : -EPROTO;
                    require(proto_decode(patched, len, &d) == expect, "%s.%s = %u",
                            proto_type_name(type), f->name, (unsigned)v);
                    /* The encoder refuses what the decoder refuses. */
                    proto_msg bad = m;
                    set_uint(&bad, f, v);
                    require(proto_encode(&bad, patched, sizeof(patched)) ==
                                (expect == 0 ? (ssize_t)len : -EINVAL),
                            "encoding %s.%s = %u", proto_type_name(type), f->name, (unsigned)v);
                }
                checked++;
            }
        }
    }
    /* wasi, family x2 (TCP) + x1 (UDP), op, how, direction x2, ready, more,
     * code x2, has_remote, result x2 */
    ck_assert_uint_eq(checked, 15);
}
END_TEST

START_TEST(test_bad_family) {
    static const uint8_t ip[16] = {10, 0, 0, 1};
    proto_msg m, d;
    uint8_t frame[128];
    uint8_t patched[128];

    for (int v6 = 0; v6 <= 1; v6++) {
        memset(&m, 0, sizeof(m));
        m.type = PROTO_TCP_BIND;
        m.id = 3;
        m.handle = 1;
        if (v6) {
            proto_addr_set_v6(&m.addr, ip, 80, 0, 0);
        } else {
            proto_addr_set_v4(&m.addr, ip, 80);
        }
        ssize_t len = proto_encode(&m, frame, sizeof(frame));
        ck_assert_int_eq(len, PROTO_HEADER_SIZE + 4 + (v6 ? 27 : 7));
        for (unsigned family = 2; family <= 255; family++) {
            memcpy(patched, frame, (size_t)len);
            patched[PROTO_HEADER_SIZE + 4] = (uint8_t)family;
            ck_assert_int_eq(proto_decode(patched, (size_t)len, &d), -EPROTO);
            m.addr.family = (uint8_t)family;
            ck_assert_int_eq(proto_encode(&m, patched, sizeof(patched)), -EINVAL);
        }
        /* The other valid family makes the length wrong. */
        memcpy(patched, frame, (size_t)len);
        patched[PROTO_HEADER_SIZE + 4] = v6 ? PROTO_IPV4 : PROTO_IPV6;
        ck_assert_int_eq(proto_decode(patched, (size_t)len, &d), -EPROTO);
    }

    /* Address results of replies are checked the same way. */
    memset(&m, 0, sizeof(m));
    m.type = PROTO_TCP_LOCAL_ADDRESS | PROTO_REPLY;
    m.id = 4;
    m.addr.family = 2;
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), -EINVAL);
}
END_TEST

/* Builds a HELLO frame by hand with the given tenant bytes. */
static size_t hello_with_tenant(uint8_t *frame, const uint8_t *tenant, size_t tenant_len,
                                size_t declared_len) {
    size_t p = PROTO_HEADER_SIZE;

    put_le(frame + p, 1, 2);
    put_le(frame + p + 2, 1, 2);
    frame[p + 4] = PROTO_WASI_0_3;
    p += 5;
    put_le(frame + p, declared_len, 2);
    p += 2;
    memcpy(frame + p, tenant, tenant_len);
    p += tenant_len;
    put_le(frame + p, 0, 2); /* token */
    p += 2;
    set_header(frame, (uint32_t)(p - PROTO_HEADER_SIZE), PROTO_HELLO, 0, 0, 1);
    return p;
}

START_TEST(test_strings) {
    uint8_t frame[PROTO_MAX_FRAME];
    uint8_t text[PROTO_TOKEN_MAX + 2];
    proto_msg m, d;
    size_t len;

    memset(text, 'a', sizeof(text));
    /* At the limit: accepted. */
    len = hello_with_tenant(frame, text, PROTO_TENANT_MAX, PROTO_TENANT_MAX);
    ck_assert_int_eq(proto_decode(frame, len, &d), 0);
    ck_assert_uint_eq(strlen(d.tenant), PROTO_TENANT_MAX);
    /* One over: refused. */
    len = hello_with_tenant(frame, text, PROTO_TENANT_MAX + 1, PROTO_TENANT_MAX + 1);
    ck_assert_int_eq(proto_decode(frame, len, &d), -EPROTO);
    /* A NUL anywhere inside: refused. */
    for (size_t at = 0; at < 8; at++) {
        memset(text, 'a', sizeof(text));
        text[at] = 0;
        len = hello_with_tenant(frame, text, 8, 8);
        ck_assert_int_eq(proto_decode(frame, len, &d), -EPROTO);
    }
    /* A length running past the payload: refused. */
    memset(text, 'a', sizeof(text));
    len = hello_with_tenant(frame, text, 4, 60);
    ck_assert_int_eq(proto_decode(frame, len, &d), -EPROTO);
    len = hello_with_tenant(frame, text, 4, 0xffff);
    ck_assert_int_eq(proto_decode(frame, len, &d), -EPROTO);

    /* Encoder: a member filled to its end without NUL, or one byte over. */
    memset(&m, 0, sizeof(m));
    m.type = PROTO_HELLO;
    m.id = 1;
    m.wasi = PROTO_WASI_0_2;
    memset(m.tenant, 'a', sizeof(m.tenant));
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), -EINVAL);
    m.tenant[PROTO_TENANT_MAX] = '\0';
    memset(m.token, 'b', PROTO_TOKEN_MAX);
    len = (size_t)proto_encode(&m, frame, sizeof(frame));
    ck_assert_uint_eq(len, PROTO_HEADER_SIZE + 5 + 2 + PROTO_TENANT_MAX + 2 + PROTO_TOKEN_MAX);
    memset(m.token, 'b', sizeof(m.token));
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), -EINVAL);

    /* Over-long token and detail on the wire. */
    memset(&m, 0, sizeof(m));
    m.type = PROTO_PING | PROTO_REPLY;
    m.id = 2;
    m.err = PROTO_E_UNKNOWN;
    memset(m.detail, 'c', PROTO_DETAIL_MAX);
    len = (size_t)proto_encode(&m, frame, sizeof(frame));
    ck_assert_uint_eq(len, PROTO_HEADER_SIZE + 2 + 2 + PROTO_DETAIL_MAX);
    frame[len] = 'c';
    put_le(frame, len + 1 - PROTO_HEADER_SIZE, 4);
    put_le(frame + PROTO_HEADER_SIZE + 2, PROTO_DETAIL_MAX + 1, 2);
    ck_assert_int_eq(proto_decode(frame, len + 1, &d), -EPROTO);
    m.detail[PROTO_DETAIL_MAX] = 'c';
    ck_assert_int_eq(proto_encode(&m, frame, sizeof(frame)), -EINVAL);

    memset(&m, 0, sizeof(m));
    m.type = PROTO_HELLO;
    m.id = 1;
    m.wasi = PROTO_WASI_0_2;
    memset(m.token, 'b', PROTO_TOKEN_MAX);
    len = (size_t)proto_encode(&m, frame, sizeof(frame));
    frame[len] = 'b';
    put_le(frame, len + 1 - PROTO_HEADER_SIZE, 4);
    put_le(frame + PROTO_HEADER_SIZE + 7, PROTO_TOKEN_MAX + 1, 2);
    ck_assert_int_eq(proto_decode(frame, len + 1, &d), -EPROTO);
}
END_TEST

/* Every u16 err value: only proto_err numbers are accepted. */
START_TEST(test_err_values) {
    uint8_t frame[PROTO_HEADER_SIZE + 4];
    proto_msg m, d;
    unsigned accepted = 0;

    for (unsigned err = 0; err <= 0xffff; err++) {
        /* An error reply: err + empty detail. */
        set_header(frame, 4, PROTO_PING | PROTO_REPLY, 0, 0, 7);
        put_le(frame + PROTO_HEADER_SIZE, err, 2);
        put_le(frame + PROTO_HEADER_SIZE + 2, 0, 2);
        int rc = proto_decode(frame, sizeof(frame), &d);
        bool valid = (err >= 1 && err <= PROTO_E_LAST_WASI) || err == PROTO_E_PROTOCOL;
        require(rc == (valid ? 0 : -EPROTO), "err %u: %d", err, rc);
        if (rc == 0) {
            require(d.err == err, "err %u decoded as %u", err, d.err);
            accepted++;
        }
        memset(&m, 0, sizeof(m));
        m.type = PROTO_PING | PROTO_REPLY;
        m.id = 7;
        m.err = (uint16_t)err;
        ssize_t n = proto_encode(&m, frame, sizeof(frame));
        require(n == (valid      ? (ssize_t)sizeof(frame)
                      : err == 0 ? 14
                                 : -EINVAL),
                "encoding err %u: %zd", err, n);
    }
    ck_assert_uint_eq(accepted, PROTO_E_LAST_WASI + 1);
    /* A success reply is only err 0 and its (here: no) result fields. */
    set_header(frame, 2, PROTO_PING | PROTO_REPLY, 0, 0, 7);
    put_le(frame + PROTO_HEADER_SIZE, 0, 2);
    ck_assert_int_eq(proto_decode(frame, PROTO_HEADER_SIZE + 2, &d), 0);
    ck_assert_uint_eq(d.err, 0);
    /* An error reply without its detail is truncated. */
    put_le(frame + PROTO_HEADER_SIZE, PROTO_E_TIMEOUT, 2);
    ck_assert_int_eq(proto_decode(frame, PROTO_HEADER_SIZE + 2, &d), -EPROTO);
}
END_TEST

/* ---- TCase datagram_header ---------------------------------------------------- */

/* The channel header is laid out as PROTOCOL.md section 13 says and round
 * trips for both families and "no address". */
START_TEST(test_dgram_header_layout) {
    static const uint8_t v4[4] = {192, 0, 2, 7};
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
    uint8_t h[PROTO_DGRAM_HEADER_SIZE];
    proto_addr a, d;

    ck_assert_int_eq(PROTO_DGRAM_HEADER_SIZE, 28);
    proto_addr_set_v4(&a, v4, 0x1234);
    proto_dgram_header_encode(&a, h);
    static const uint8_t expect_v4[PROTO_DGRAM_HEADER_SIZE] = {
        0x00, 0x00, 0x34, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 7,
    };
    ck_assert_mem_eq(h, expect_v4, sizeof(h));
    memset(&d, 0xa5, sizeof(d));
    ck_assert_int_eq(proto_dgram_header_decode(h, sizeof(h), &d), 1);
    ck_assert_uint_eq(d.family, PROTO_IPV4);
    ck_assert_uint_eq(d.port, 0x1234);
    ck_assert_mem_eq(d.ip, v4, 4);

    proto_addr_set_v6(&a, v6, 53, 0x01020304, 0x0a0b0c0d);
    proto_dgram_header_encode(&a, h);
    static const uint8_t expect_v6_head[12] = {
        0x01, 0x00, 53, 0, 0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a,
    };
    ck_assert_mem_eq(h, expect_v6_head, sizeof(expect_v6_head));
    ck_assert_mem_eq(h + 12, v6, 16);
    ck_assert_int_eq(proto_dgram_header_decode(h, sizeof(h), &d), 1);
    ck_assert_uint_eq(d.family, PROTO_IPV6);
    ck_assert_uint_eq(d.port, 53);
    ck_assert_uint_eq(d.flow_info, 0x01020304);
    ck_assert_uint_eq(d.scope_id, 0x0a0b0c0d);
    ck_assert_mem_eq(d.ip, v6, 16);

    proto_dgram_header_encode(NULL, h);
    ck_assert_uint_eq(h[0], PROTO_DGRAM_NO_ADDRESS);
    for (size_t i = 1; i < sizeof(h); i++) {
        ck_assert_uint_eq(h[i], 0);
    }
    ck_assert_int_eq(proto_dgram_header_decode(h, sizeof(h), &d), 0);
}
END_TEST

/* Every single-byte change that breaks the one-spelling rule is refused,
 * and a short header is refused. */
START_TEST(test_dgram_header_malformed) {
    static const uint8_t v4[4] = {127, 0, 0, 1};
    uint8_t h[PROTO_DGRAM_HEADER_SIZE], bad[PROTO_DGRAM_HEADER_SIZE];
    proto_addr a, d;
    unsigned refused = 0;

    proto_addr_set_v4(&a, v4, 9);
    proto_dgram_header_encode(&a, h);
    ck_assert_int_eq(proto_dgram_header_decode(h, sizeof(h) - 1, &d), -EPROTO);
    ck_assert_int_eq(proto_dgram_header_decode(h, 0, &d), -EPROTO);
    /* Family bytes other than 0, 1 and 0xff. */
    for (unsigned f = 2; f < 0xff; f++) {
        memcpy(bad, h, sizeof(h));
        bad[0] = (uint8_t)f;
        require(proto_dgram_header_decode(bad, sizeof(bad), &d) == -EPROTO, "family %u", f);
    }
    /* IPv4: the reserved byte, flow info, scope id and ip[4..15] must be 0. */
    for (size_t i = 1; i < sizeof(h); i++) {
        bool must_be_zero = i == 1 || (i >= 4 && i < 12) || i >= 16;
        memcpy(bad, h, sizeof(h));
        bad[i] ^= 0x40;
        int rc = proto_dgram_header_decode(bad, sizeof(bad), &d);
        require(rc == (must_be_zero ? -EPROTO : 1), "v4 byte %zu: %d", i, rc);
        refused += rc < 0;
    }
    ck_assert_uint_eq(refused, 1 + 8 + 12);
    /* "No address" with any other byte set. */
    proto_dgram_header_encode(NULL, h);
    for (size_t i = 1; i < sizeof(h); i++) {
        memcpy(bad, h, sizeof(h));
        bad[i] = 1;
        require(proto_dgram_header_decode(bad, sizeof(bad), &d) == -EPROTO, "none byte %zu", i);
    }
}
END_TEST

/* ---- TCase encoder ------------------------------------------------------------ */

START_TEST(test_encode_limits) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    rng r = {12};
    uint8_t frame[PROTO_MAX_FRAME];
    uint8_t small[PROTO_MAX_FRAME];
    enum frame_shape shapes[2];
    proto_msg m;

    for (size_t t = 0; t < ntypes; t++) {
        size_t nshapes = shapes_of(types[t], shapes);
        for (size_t s = 0; s < nshapes; s++) {
            size_t payload = fill_message(&r, &m, types[t], shapes[s], STRINGS_MAX);
            size_t len = encode_checked(&m, frame, sizeof(frame), payload);
            for (size_t cap = 0; cap < len; cap++) {
                memset(small, 0xee, len);
                require(proto_encode(&m, small, cap) == -EMSGSIZE, "%s fits in %zu of %zu",
                        proto_type_name(m.type), cap, len);
                /* Nothing is written past cap. */
                for (size_t i = cap; i < len; i++) {
                    require(small[i] == 0xee, "%s: byte %zu written with cap %zu",
                            proto_type_name(m.type), i, cap);
                }
            }
            ck_assert_int_eq(proto_encode(&m, small, len), (ssize_t)len);
            ck_assert_mem_eq(small, frame, len);
        }
    }
    ck_assert_int_eq(proto_encode(&m, NULL, 0), -EMSGSIZE);

    memset(&m, 0, sizeof(m));
    m.id = 1;
    for (unsigned type = 0; type <= 0xffff; type++) {
        m.type = (uint16_t)type;
        if (proto_type_name((uint16_t)type) == NULL) {
            require(proto_encode(&m, frame, sizeof(frame)) == -EINVAL, "type 0x%04x encoded", type);
        }
    }
}
END_TEST

/* ---- TCase garbage ------------------------------------------------------------ */

static void check_garbage(const uint8_t *buf, size_t len, unsigned *decoded) {
    size_t frame_len = 0;
    proto_msg d;
    uint8_t again[PROTO_MAX_FRAME];
    int ready = proto_frame_ready(buf, len, &frame_len);
    int rc = proto_decode(buf, len, &d);

    require(ready == 0 || ready == 1 || ready == -EPROTO || ready == -EMSGSIZE,
            "frame_ready returned %d", ready);
    require(rc == 0 || is_documented_decode_error(rc), "decode returned %d", rc);
    if (rc == 0) {
        /* A frame that decodes is whole, and the decoder's view is canonical. */
        require(ready == 1 && frame_len == len, "decoded frame not whole: %d %zu", ready,
                frame_len);
        require(proto_encode(&d, again, sizeof(again)) == (ssize_t)len &&
                    memcmp(again, buf, len) == 0,
                "%s: re-encoding differs", proto_type_name(d.type));
        (*decoded)++;
    }
}

/* Random bytes; random payloads behind plausible headers; and valid frames
 * with a few bytes changed. Every result must be a documented one. */
START_TEST(test_garbage) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    rng r = {0xdecafbadULL};
    uint8_t buf[PROTO_MAX_FRAME + 64];
    enum frame_shape shapes[2];
    unsigned decoded[3] = {0, 0, 0};
    proto_msg m;

    for (unsigned iter = 0; iter < GARBAGE_ITERATIONS; iter++) {
        unsigned strategy = iter % 3;
        size_t len;

        if (strategy == 0) {
            len = (size_t)rng_range(&r, 0, 96);
            for (size_t i = 0; i < len; i++) {
                buf[i] = (uint8_t)rng_next(&r);
            }
        } else if (strategy == 1) {
            size_t payload = (size_t)rng_range(&r, 0, 40);
            uint16_t type = types[rng_next(&r) % ntypes];
            uint32_t id = rng_next(&r) % 8 == 0 ? 0 : (uint32_t)rng_next(&r);
            set_header(buf, (uint32_t)payload, type, (uint8_t)rng_range(&r, 0, 2), 0, id);
            for (size_t i = 0; i < payload; i++) {
                /* Small bytes make plausible lengths, enums and families. */
                buf[PROTO_HEADER_SIZE + i] =
                    (uint8_t)(rng_next(&r) % 4 == 0 ? rng_next(&r) : rng_range(&r, 0, 3));
            }
            len = PROTO_HEADER_SIZE + payload;
        } else {
            uint16_t type = types[rng_next(&r) % ntypes];
            size_t nshapes = shapes_of(type, shapes);
            size_t payload =
                fill_message(&r, &m, type, shapes[rng_next(&r) % nshapes], STRINGS_RANDOM);
            len = encode_checked(&m, buf, sizeof(buf), payload);
            unsigned flips = (unsigned)rng_range(&r, 0, 3);
            for (unsigned i = 0; i < flips; i++) {
                buf[rng_next(&r) % len] ^= (uint8_t)(1u << (rng_next(&r) % 8));
            }
            if (rng_next(&r) % 4 == 0) {
                len = (size_t)rng_range(&r, 0, len + 8);
            }
        }
        check_garbage(buf, len, &decoded[strategy]);
    }
    /* The mutations keep some frames valid, so the deep paths ran. */
    ck_assert_uint_gt(decoded[1], 100);
    ck_assert_uint_gt(decoded[2], 1000);
}
END_TEST

/* ---- TCase corpus ------------------------------------------------------------- */

static char corpus_dir[4096];
static char corpus_files[CORPUS_FILES_MAX][256];
static int corpus_count;

static int compare_names(const void *a, const void *b) {
    return strcmp((const char *)a, (const char *)b);
}

/* Lists $DATA_DIR/proto/ *.hex before the tests fork. */
static void corpus_scan(void) {
    const char *data = getenv("DATA_DIR");
    DIR *dir;
    struct dirent *de;

    if (data == NULL) {
        return;
    }
    snprintf(corpus_dir, sizeof(corpus_dir), "%s/proto", data);
    dir = opendir(corpus_dir);
    if (dir == NULL) {
        return;
    }
    while ((de = readdir(dir)) != NULL && corpus_count < CORPUS_FILES_MAX) {
        size_t n = strlen(de->d_name);
        if (n > 4 && n < sizeof(corpus_files[0]) && strcmp(de->d_name + n - 4, ".hex") == 0) {
            memcpy(corpus_files[corpus_count++], de->d_name, n + 1);
        }
    }
    closedir(dir);
    qsort(corpus_files, (size_t)corpus_count, sizeof(corpus_files[0]), compare_names);
}

/* Corpus format: hex bytes (whitespace between pairs optional), '#' starts a
 * comment; one comment line "# expect: ok|EPROTO|ENOMSG|EMSGSIZE". */
static size_t corpus_parse(const char *text, uint8_t *out, size_t cap, int *expect) {
    size_t n = 0;
    int high = -1;

    *expect = 1; /* "no expectation": fails below */
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '#') {
            const char *line_end = strchr(p, '\n');
            size_t line_len = line_end ? (size_t)(line_end - p) : strlen(p);
            char line[128];
            snprintf(line, sizeof(line), "%.*s", (int)line_len, p);
            if (strncmp(line, "# expect: ", 10) == 0) {
                const char *want = line + 10;
                *expect = strcmp(want, "ok") == 0         ? 0
                          : strcmp(want, "EPROTO") == 0   ? -EPROTO
                          : strcmp(want, "ENOMSG") == 0   ? -ENOMSG
                          : strcmp(want, "EMSGSIZE") == 0 ? -EMSGSIZE
                                                          : 1;
            }
            if (line_end == NULL) {
                break;
            }
            p = line_end;
            continue;
        }
        if (isspace((unsigned char)*p)) {
            ck_assert_msg(high < 0, "odd hex digit count");
            continue;
        }
        ck_assert_msg(isxdigit((unsigned char)*p), "not hex: '%c'", *p);
        int nibble =
            isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10);
        if (high < 0) {
            high = nibble;
        } else {
            ck_assert_uint_lt(n, cap);
            out[n++] = (uint8_t)(high << 4 | nibble);
            high = -1;
        }
    }
    ck_assert_msg(high < 0, "odd hex digit count");
    return n;
}

START_TEST(test_corpus_present) {
    ck_assert_msg(getenv("DATA_DIR") != NULL, "set DATA_DIR to tests/data");
    ck_assert_msg(corpus_count >= 10, "only %d files in %s", corpus_count, corpus_dir);
}
END_TEST

START_TEST(test_corpus_file) {
    char path[4400];
    static char text[CORPUS_FILE_MAX];
    uint8_t frame[PROTO_MAX_FRAME + 64];
    uint8_t again[PROTO_MAX_FRAME];
    proto_msg d;
    int expect;

    snprintf(path, sizeof(path), "%s/%s", corpus_dir, corpus_files[_i]);
    FILE *f = fopen(path, "re");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';

    size_t len = corpus_parse(text, frame, sizeof(frame), &expect);
    ck_assert_msg(expect <= 0, "%s: no valid '# expect:' line", corpus_files[_i]);
    int rc = proto_decode(frame, len, &d);
    ck_assert_msg(rc == expect, "%s: decode gave %d, expected %d", corpus_files[_i], rc, expect);
    if (rc == 0) {
        ck_assert_int_eq(proto_encode(&d, again, sizeof(again)), (ssize_t)len);
        ck_assert_mem_eq(again, frame, len);
    }
}
END_TEST

/* ---- suite ---------------------------------------------------------------------- */

static Suite *proto_suite(void) {
    Suite *s = suite_create("proto");
    const uint16_t *types;
    int ntypes = (int)proto_all_types(&types);
    TCase *tc;

    tc = tcase_create("catalogue");
    tcase_add_test(tc, test_all_types_match_catalogue);
    tcase_add_test(tc, test_type_names);
    tcase_add_test(tc, test_err_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("round_trip");
    tcase_add_loop_test(tc, test_round_trip, 0, ntypes);
    tcase_add_test(tc, test_header_layout);
    tcase_add_test(tc, test_field_offsets);
    tcase_add_test(tc, test_hello_example);
    tcase_add_test(tc, test_reply_helpers);
    tcase_add_test(tc, test_addr_helpers);
    suite_add_tcase(s, tc);

    tc = tcase_create("truncation");
    tcase_add_loop_test(tc, test_truncation, 0, ntypes);
    tcase_add_test(tc, test_trailing_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("header");
    tcase_add_test(tc, test_oversized_payload);
    tcase_add_test(tc, test_bad_flags_and_nfds);
    tcase_add_test(tc, test_unknown_types);
    tcase_add_test(tc, test_id_rules);
    tcase_add_test(tc, test_nfds_per_type);
    suite_add_tcase(s, tc);

    tc = tcase_create("values");
    tcase_add_test(tc, test_enum_ranges);
    tcase_add_test(tc, test_bad_family);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_err_values);
    /* Exhaustive over 16-bit values: give sanitizer builds room. */
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("datagram_header");
    tcase_add_test(tc, test_dgram_header_layout);
    tcase_add_test(tc, test_dgram_header_malformed);
    suite_add_tcase(s, tc);

    tc = tcase_create("encoder");
    tcase_add_test(tc, test_encode_limits);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("garbage");
    tcase_add_test(tc, test_garbage);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    corpus_scan();
    tc = tcase_create("corpus");
    tcase_add_test(tc, test_corpus_present);
    tcase_add_loop_test(tc, test_corpus_file, 0, corpus_count);
    suite_add_tcase(s, tc);

    return s;
}

int main(void) {
    SRunner *sr = srunner_create(proto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
