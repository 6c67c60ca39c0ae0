/* check-hostile.c — integration tests with hostile clients: garbage,
 * truncated, oversized and unknown frames, descriptors, requests out of
 * order, floods, and a bounded randomized fuzz loop of encoded-then-mutated
 * frames. After each, the daemon must still be alive, must have dropped the
 * offender (where the protocol says so) without leaking descriptors, and
 * must keep serving a libwasock client that worked before.
 *
 * Trusts: the harness (harness.h, rawclient.h) and the codec (proto.h) to
 * build well-formed frames before they are mutated. The fuzz loop is
 * deterministic for a seed (ITEST_FUZZ_SEED, default fixed) and bounded in
 * iterations (ITEST_FUZZ_ITERATIONS) and time.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "rawclient.h"

/* Fuzz loop defaults: enough iterations to reach every message type with
 * many mutations, few enough to stay within seconds under sanitizers. */
#define FUZZ_ITERATIONS_DEFAULT 400
#define FUZZ_ITERATIONS_MAX     100000
#define FUZZ_SEED_DEFAULT       0x5eedu
/* The whole fuzz loop stops after this long even if iterations remain. */
#define FUZZ_TIME_BUDGET_MS 30000
/* How long one fuzz iteration waits for the daemon's answers. */
#define FUZZ_REPLY_WAIT_MS 50
/* A working-client check every this many iterations. */
#define FUZZ_CHECK_EVERY 50

/* Frames a flooding client sends without reading a single reply. */
#define FLOOD_FRAMES 20000

/* Connections opened and closed at once in the churn test. */
#define CHURN_CONNECTIONS 200

/* ------------------------------------------------------------------ helpers */

/* Proves the daemon serves libwasock clients: a socket is created, bound
 * and listens, a connection to it carries bytes. */
static void expect_daemon_serves(itest_daemon *d) {
    ck_assert_msg(itest_daemon_alive(d), "wasockd died");
    wasock_client *c = itest_client_open(d, 2, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, WASOCK_IPV4, &port);
    itest_conn a, b;
    itest_connect_to(c, WASOCK_IPV4, port, &a);
    itest_accept(c, l, &b);
    itest_send_expect(a.out, b.in, "still serving");
    itest_conn_close(&a);
    itest_conn_close(&b);
    wasock_tcp_drop(l);
    wasock_client_close(c);
}

/* Writes the 12-byte frame header. */
static void put_header(uint8_t *h, uint32_t payload_len, uint16_t type, uint8_t nfds, uint8_t flags,
                       uint32_t id) {
    h[0] = (uint8_t)payload_len;
    h[1] = (uint8_t)(payload_len >> 8);
    h[2] = (uint8_t)(payload_len >> 16);
    h[3] = (uint8_t)(payload_len >> 24);
    h[4] = (uint8_t)type;
    h[5] = (uint8_t)(type >> 8);
    h[6] = nfds;
    h[7] = flags;
    h[8] = (uint8_t)id;
    h[9] = (uint8_t)(id >> 8);
    h[10] = (uint8_t)(id >> 16);
    h[11] = (uint8_t)(id >> 24);
}

static size_t encode(proto_msg *m, uint8_t *buf, size_t cap) {
    ssize_t n = proto_encode(m, buf, cap);
    ck_assert_msg(n > 0, "proto_encode(0x%x) = %zd", m->type, n);
    return (size_t)n;
}

static size_t encode_hello(uint8_t *buf, size_t cap, uint32_t id) {
    proto_msg m = itest_raw_request(PROTO_HELLO, 0);
    m.id = id;
    m.version_min = m.version_max = PROTO_VERSION_MIN;
    m.wasi = PROTO_WASI_0_2;
    return encode(&m, buf, cap);
}

/* ------------------------------------------------------------------ bad frames */

/* One kind of bad input: the bytes to send (after a good HELLO when
 * hello_first); the daemon must close the connection for each. */
typedef struct bad_input {
    const char *name;
    bool hello_first;
    size_t (*build)(uint8_t *buf, size_t cap);
} bad_input;

static size_t build_random_garbage(uint8_t *buf, size_t cap) {
    uint32_t x = 0x12345678u;
    size_t n = cap < 300 ? cap : 300;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (uint8_t)(x >> 24);
    }
    return n;
}

static size_t build_oversized(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, PROTO_MAX_PAYLOAD + 1, PROTO_PING, 0, 0, 7);
    return PROTO_HEADER_SIZE;
}

static size_t build_huge_length(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, UINT32_MAX, PROTO_HELLO, 0, 0, 7);
    return PROTO_HEADER_SIZE;
}

static size_t build_unknown_type(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, 0, 0x3333, 0, 0, 7);
    return PROTO_HEADER_SIZE;
}

static size_t build_flags_set(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, 0, PROTO_PING, 0, 0x80, 7);
    return PROTO_HEADER_SIZE;
}

static size_t build_too_many_fds_announced(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, 0, PROTO_PING, PROTO_MAX_FDS_PER_FRAME + 1, 0, 7);
    return PROTO_HEADER_SIZE;
}

static size_t build_fd_announced_none_sent(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, 0, PROTO_PING, 1, 0, 7);
    return PROTO_HEADER_SIZE;
}

static size_t build_id_zero_request(uint8_t *buf, size_t cap) {
    (void)cap;
    put_header(buf, 0, PROTO_PING, 0, 0, 0);
    return PROTO_HEADER_SIZE;
}

static size_t build_ping(uint8_t *buf, size_t cap) {
    proto_msg m = itest_raw_request(PROTO_PING, 0);
    m.id = 7;
    return encode(&m, buf, cap);
}

static size_t build_create(uint8_t *buf, size_t cap) {
    proto_msg m = itest_raw_request(PROTO_TCP_CREATE, 0);
    m.id = 7;
    return encode(&m, buf, cap);
}

static size_t build_second_hello(uint8_t *buf, size_t cap) {
    return encode_hello(buf, cap, 9);
}

static size_t build_reply_type(uint8_t *buf, size_t cap) {
    proto_msg m = itest_raw_request(PROTO_TCP_CREATE | PROTO_REPLY, 0);
    m.id = 7;
    m.new_handle = 1;
    return encode(&m, buf, cap);
}

static size_t build_event_type(uint8_t *buf, size_t cap) {
    proto_msg m = itest_raw_request(PROTO_EV_READY, 1);
    m.ready = 1;
    return encode(&m, buf, cap);
}

static size_t build_bad_family(uint8_t *buf, size_t cap) {
    size_t n = build_create(buf, cap);
    ck_assert_uint_eq(n, PROTO_HEADER_SIZE + 1); /* TCP_CREATE carries one byte: family */
    buf[PROTO_HEADER_SIZE] = 7;
    return n;
}

/* A HELLO whose payload is one byte shorter than its fields need. */
static size_t build_short_hello(uint8_t *buf, size_t cap) {
    size_t n = encode_hello(buf, cap, 1);
    put_header(buf, (uint32_t)(n - PROTO_HEADER_SIZE - 1), PROTO_HELLO, 0, 0, 1);
    return n - 1;
}

/* A HELLO followed by a byte that belongs to no field. */
static size_t build_long_hello(uint8_t *buf, size_t cap) {
    size_t n = encode_hello(buf, cap, 1);
    put_header(buf, (uint32_t)(n - PROTO_HEADER_SIZE + 1), PROTO_HELLO, 0, 0, 1);
    buf[n] = 0;
    return n + 1;
}

/* A TCP_BIND whose family says IPv6 but carries an IPv4-sized address. */
static size_t build_truncated_addr(uint8_t *buf, size_t cap) {
    proto_msg m = itest_raw_request(PROTO_TCP_BIND, 1);
    m.id = 7;
    proto_addr_set_v4(&m.addr, (const uint8_t[4]){127, 0, 0, 1}, 80);
    size_t n = encode(&m, buf, cap);
    /* handle (4 bytes) then the address's family byte */
    ck_assert_uint_eq(buf[PROTO_HEADER_SIZE + 4], PROTO_IPV4);
    buf[PROTO_HEADER_SIZE + 4] = PROTO_IPV6;
    return n;
}

static const bad_input bad_inputs[] = {
    {"random garbage", false, build_random_garbage},
    {"oversized payload", false, build_oversized},
    {"payload length 2^32-1", true, build_huge_length},
    {"unknown type", true, build_unknown_type},
    {"flags set", true, build_flags_set},
    {"too many fds announced", true, build_too_many_fds_announced},
    {"fd announced, none sent", true, build_fd_announced_none_sent},
    {"request id 0", true, build_id_zero_request},
    {"PING before HELLO", false, build_ping},
    {"TCP_CREATE before HELLO", false, build_create},
    {"second HELLO", true, build_second_hello},
    {"reply type from client", true, build_reply_type},
    {"event type from client", true, build_event_type},
    {"family out of range", true, build_bad_family},
    {"HELLO payload too short", false, build_short_hello},
    {"HELLO payload too long", false, build_long_hello},
    {"address shorter than its family", true, build_truncated_addr},
};

#define BAD_INPUT_COUNT (sizeof bad_inputs / sizeof bad_inputs[0])

START_TEST(test_bad_frame_disconnects) {
    itest_daemon *d = itest_fixture_daemon();
    const bad_input *bad = &bad_inputs[_i];
    expect_daemon_serves(d);
    int before = itest_daemon_settled_fd_count(d);

    /* A client that keeps its session open through all of this. */
    wasock_client *bystander = itest_client_open(d, 3, NULL);
    wasock_tcp *bs = itest_socket(bystander, WASOCK_IPV4);

    itest_raw r;
    itest_raw_open(&r, d);
    if (bad->hello_first) {
        ck_assert_int_eq(itest_raw_hello(&r, PROTO_WASI_0_2, NULL), 0);
    }
    uint8_t buf[2 * PROTO_MAX_FRAME];
    size_t n = bad->build(buf, sizeof buf);
    /* The daemon may close while we send: that is a fine answer too. */
    (void)itest_raw_send_bytes(&r, buf, n);
    ck_assert_msg(itest_raw_wait_closed(&r, ITEST_WAIT_MS),
                  "%s: the daemon did not close the connection", bad->name);
    itest_raw_close(&r);

    /* The bystander's session is unaffected. */
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    ITEST_EXPECT(wasock_tcp_bind(bs, &lo), WASOCK_OK);
    wasock_tcp_drop(bs);
    wasock_client_close(bystander);

    expect_daemon_serves(d);
    int after = itest_daemon_wait_fd_count(d, before, ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "%s: daemon fds %d before, %d after", bad->name, before, after);
}
END_TEST

/* Descriptors sent by a client are a protocol error; the daemon closes the
 * session and the descriptors it received (the peer of a sent socketpair
 * end then sees EOF). */
START_TEST(test_fds_from_client) {
    itest_daemon *d = itest_fixture_daemon();
    expect_daemon_serves(d);
    int before = itest_daemon_settled_fd_count(d);
    for (int announced = 0; announced <= 1; announced++) {
        for (int hello_first = 0; hello_first <= 1; hello_first++) {
            int sp[2];
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
            itest_raw r;
            itest_raw_open(&r, d);
            uint8_t buf[PROTO_MAX_FRAME];
            size_t n;
            if (hello_first) {
                ck_assert_int_eq(itest_raw_hello(&r, PROTO_WASI_0_2, NULL), 0);
                n = build_ping(buf, sizeof buf);
            } else {
                n = encode_hello(buf, sizeof buf, 1);
            }
            buf[6] = (uint8_t)announced; /* header nfds */
            (void)itest_raw_send_with_fds(&r, buf, n, &sp[1], 1);
            close(sp[1]);
            ck_assert_msg(itest_raw_wait_closed(&r, ITEST_WAIT_MS),
                          "fd sent (announced %d, hello first %d): session not closed", announced,
                          hello_first);
            itest_raw_close(&r);
            /* Every copy of sp[1] is closed once the daemon closed its own. */
            ssize_t eof = itest_read_to_eof(sp[0], ITEST_WAIT_MS);
            ck_assert_msg(eof == 0, "the daemon kept the descriptor it was sent (%zd)", eof);
            close(sp[0]);
        }
    }
    expect_daemon_serves(d);
    int after = itest_daemon_wait_fd_count(d, before, ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds %d before, %d after", before, after);
}
END_TEST

/* A half-sent frame, or a silent connection, does not stall anyone; EOF in
 * the middle of a frame ends that session quietly. */
START_TEST(test_truncated_and_silent_clients) {
    itest_daemon *d = itest_fixture_daemon();
    expect_daemon_serves(d);
    int before = itest_daemon_settled_fd_count(d);

    itest_raw silent, half, half_hello;
    itest_raw_open(&silent, d);
    itest_raw_open(&half, d);
    itest_raw_open(&half_hello, d);
    uint8_t buf[PROTO_MAX_FRAME];
    ck_assert_uint_gt(encode_hello(buf, sizeof buf, 1), 5);
    ck_assert_int_eq(itest_raw_send_bytes(&half, buf, 5), 0);
    ck_assert_int_eq(itest_raw_hello(&half_hello, PROTO_WASI_0_2, NULL), 0);
    /* Six bytes: half of a frame header. */
    ck_assert_uint_eq(build_ping(buf, sizeof buf), PROTO_HEADER_SIZE);
    ck_assert_int_eq(itest_raw_send_bytes(&half_hello, buf, 6), 0);

    /* Others are served while these wait. */
    expect_daemon_serves(d);

    /* EOF mid-frame: the daemon ends that session. */
    ck_assert_int_eq(shutdown(half.fd, SHUT_WR), 0);
    ck_assert(itest_raw_wait_closed(&half, ITEST_WAIT_MS));
    ck_assert_int_eq(shutdown(half_hello.fd, SHUT_WR), 0);
    ck_assert(itest_raw_wait_closed(&half_hello, ITEST_WAIT_MS));
    itest_raw_close(&half);
    itest_raw_close(&half_hello);
    itest_raw_close(&silent);

    expect_daemon_serves(d);
    int after = itest_daemon_wait_fd_count(d, before, ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds %d before, %d after", before, after);
}
END_TEST

/* A client that sends requests and never reads the replies does not stall
 * other sessions (nor grow the daemon without bound: it is closed or
 * throttled; both are fine). */
START_TEST(test_flood_without_reading) {
    itest_daemon *d = itest_fixture_daemon();
    expect_daemon_serves(d);
    int before = itest_daemon_settled_fd_count(d);
    itest_raw r;
    itest_raw_open(&r, d);
    ck_assert_int_eq(itest_raw_hello(&r, PROTO_WASI_0_2, NULL), 0);
    uint8_t frame[PROTO_MAX_FRAME];
    int sent = 0;
    for (uint32_t i = 0; i < FLOOD_FRAMES; i++) {
        proto_msg m = itest_raw_request(PROTO_PING, 0);
        m.id = i + 2;
        size_t n = encode(&m, frame, sizeof frame);
        ssize_t w = send(r.fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w != (ssize_t)n) {
            break; /* the socket is full (the daemon throttles) or closed */
        }
        sent++;
    }
    ck_assert_int_gt(sent, 0);
    expect_daemon_serves(d);
    itest_raw_close(&r);
    expect_daemon_serves(d);
    int after = itest_daemon_wait_fd_count(d, before, 2 * ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds %d before, %d after", before, after);
}
END_TEST

START_TEST(test_connection_churn) {
    itest_daemon *d = itest_fixture_daemon();
    expect_daemon_serves(d);
    int before = itest_daemon_settled_fd_count(d);
    uint8_t buf[PROTO_MAX_FRAME];
    size_t hello_len = encode_hello(buf, sizeof buf, 1);
    for (int i = 0; i < CHURN_CONNECTIONS; i++) {
        itest_raw r;
        itest_raw_open(&r, d);
        switch (i % 4) {
        case 0:
            break; /* connect and leave */
        case 1:
            (void)itest_raw_send_bytes(&r, buf, 3);
            break;
        case 2:
            (void)itest_raw_send_bytes(&r, buf, hello_len);
            break;
        default: {
            /* A session with a socket, closed without dropping it. */
            proto_msg m = itest_raw_request(PROTO_TCP_CREATE, 0);
            m.id = 2;
            size_t n = encode(&m, buf + hello_len, sizeof buf - hello_len);
            (void)itest_raw_send_bytes(&r, buf, hello_len + n);
            break;
        }
        }
        itest_raw_close(&r);
    }
    expect_daemon_serves(d);
    int after = itest_daemon_wait_fd_count(d, before, 2 * ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds %d before, %d after %d connections", before, after,
                  CHURN_CONNECTIONS);
}
END_TEST

/* ------------------------------------------------------------------ fuzz */

static uint32_t fuzz_state;

static uint32_t fuzz_next(void) {
    /* xorshift32: deterministic for a seed, no libc state involved. */
    uint32_t x = fuzz_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    fuzz_state = x;
    return x;
}

static uint32_t fuzz_below(uint32_t n) {
    return n == 0 ? 0 : fuzz_next() % n;
}

static unsigned long env_number(const char *name, unsigned long fallback, unsigned long max) {
    const char *text = getenv(name);
    if (text == NULL || *text == '\0') {
        return fallback;
    }
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || v > max) {
        fprintf(stderr, "ignoring %s=%s (not a number up to %lu)\n", name, text, max);
        return fallback;
    }
    return v;
}

/* Fills a message of a random known type with random field values. The
 * addresses are loopback or TEST-NET (which the default policy refuses),
 * so nothing leaves the host. */
static void fuzz_message(proto_msg *m) {
    const uint16_t *types;
    size_t ntypes = proto_all_types(&types);
    memset(m, 0, sizeof *m);
    m->type = types[fuzz_below((uint32_t)ntypes)];
    m->id = 1 + fuzz_below(8);
    m->err = (uint16_t)fuzz_below(24);
    m->version_min = (uint16_t)fuzz_below(3);
    m->version_max = (uint16_t)fuzz_below(3);
    m->version = 1;
    m->wasi = (uint8_t)(2 + fuzz_below(2));
    m->session = fuzz_next();
    m->handle = fuzz_below(6);
    m->new_handle = fuzz_below(6);
    m->family = (uint8_t)fuzz_below(2);
    m->op = (uint8_t)fuzz_below(3);
    m->how = (uint8_t)fuzz_below(3);
    m->direction = (uint8_t)fuzz_below(2);
    m->ready = (uint8_t)fuzz_below(2);
    m->more = (uint8_t)fuzz_below(2);
    m->option = (uint16_t)fuzz_below(11);
    m->code = (uint16_t)(1 + fuzz_below(PROTO_E_LAST_WASI));
    static const uint64_t values[] = {0, 1, 2, 42, 255, 65536, UINT64_MAX, 1000000000};
    m->value = values[fuzz_below(sizeof values / sizeof values[0])];
    uint16_t port = (uint16_t)(fuzz_below(3) == 0 ? 0 : 40000 + fuzz_below(20000));
    if (fuzz_below(2) == 0) {
        static const uint8_t v4[][4] = {
            {127, 0, 0, 1}, {192, 0, 2, 1}, {0, 0, 0, 0}, {224, 0, 0, 1}};
        proto_addr_set_v4(&m->addr, v4[fuzz_below(4)], port);
    } else {
        uint8_t v6[16] = {0};
        switch (fuzz_below(4)) {
        case 0:
            v6[15] = 1; /* ::1 */
            break;
        case 1:
            v6[0] = 0x20, v6[1] = 0x01, v6[2] = 0x0d, v6[3] = 0xb8, v6[15] = 1;
            break;
        case 2:
            v6[10] = v6[11] = 0xff, v6[12] = 127, v6[15] = 1; /* mapped */
            break;
        default:
            break; /* :: */
        }
        proto_addr_set_v6(&m->addr, v6, port, fuzz_next(), fuzz_below(3));
    }
    size_t tlen = fuzz_below(12);
    for (size_t i = 0; i < tlen; i++) {
        m->tenant[i] = (char)('a' + fuzz_below(26));
    }
    if (fuzz_below(4) == 0) {
        memcpy(m->tenant, "default", sizeof "default");
    }
    size_t dlen = fuzz_below(20);
    for (size_t i = 0; i < dlen; i++) {
        m->detail[i] = (char)('a' + fuzz_below(26));
    }
}

/* Mutates an encoded frame in place (or its length). */
static size_t fuzz_mutate(uint8_t *buf, size_t len, size_t cap) {
    switch (fuzz_below(6)) {
    case 0:
        return len; /* well-formed */
    case 1: {       /* flip a few bits */
        unsigned flips = 1 + fuzz_below(4);
        for (unsigned i = 0; i < flips; i++) {
            buf[fuzz_below((uint32_t)len)] ^= (uint8_t)(1u << fuzz_below(8));
        }
        return len;
    }
    case 2: /* truncate */
        return fuzz_below((uint32_t)len);
    case 3: { /* append random bytes, maybe fixing the length field */
        size_t extra = 1 + fuzz_below(32);
        if (len + extra > cap) {
            extra = cap - len;
        }
        for (size_t i = 0; i < extra; i++) {
            buf[len + i] = (uint8_t)fuzz_next();
        }
        if (fuzz_below(2) == 0) {
            uint32_t pl = (uint32_t)(len + extra - PROTO_HEADER_SIZE);
            buf[0] = (uint8_t)pl;
            buf[1] = (uint8_t)(pl >> 8);
        }
        return len + extra;
    }
    case 4: /* overwrite a header field with a random byte */
        buf[fuzz_below(PROTO_HEADER_SIZE)] = (uint8_t)fuzz_next();
        return len;
    default: /* overwrite a payload byte with an edge value */
        if (len > PROTO_HEADER_SIZE) {
            static const uint8_t edges[] = {0, 1, 0x7f, 0x80, 0xff};
            buf[PROTO_HEADER_SIZE + fuzz_below((uint32_t)(len - PROTO_HEADER_SIZE))] =
                edges[fuzz_below(sizeof edges)];
        }
        return len;
    }
}

START_TEST(test_fuzz_frames) {
    itest_daemon *d = itest_fixture_daemon();
    unsigned long iterations =
        env_number("ITEST_FUZZ_ITERATIONS", FUZZ_ITERATIONS_DEFAULT, FUZZ_ITERATIONS_MAX);
    uint32_t seed = (uint32_t)env_number("ITEST_FUZZ_SEED", FUZZ_SEED_DEFAULT, UINT32_MAX);
    fuzz_state = seed != 0 ? seed : FUZZ_SEED_DEFAULT;
    fprintf(stderr, "fuzz: seed 0x%x, %lu iterations (ITEST_FUZZ_SEED / _ITERATIONS)\n", seed,
            iterations);

    expect_daemon_serves(d);
    int before = itest_daemon_settled_fd_count(d);
    int64_t stop_at = itest_now_ms() + FUZZ_TIME_BUDGET_MS;
    unsigned long done = 0;
    for (; done < iterations && itest_now_ms() < stop_at; done++) {
        itest_raw r;
        itest_raw_open(&r, d);
        if (fuzz_below(5) != 0) {
            /* Both protocol versions: version 2 pushes connect outcomes. */
            uint16_t version = (uint16_t)(PROTO_VERSION_MIN + fuzz_below(2));
            if (itest_raw_hello_version(&r, (int)(2 + fuzz_below(2)), NULL, version) != 0) {
                itest_raw_close(&r);
                ck_abort_msg("fuzz %lu: the daemon refused a good HELLO", done);
            }
            /* Give the frames something to act on now and then. */
            if (fuzz_below(2) == 0) {
                proto_msg create = itest_raw_request(PROTO_TCP_CREATE, 0);
                create.family = (uint8_t)fuzz_below(2);
                proto_msg reply;
                (void)itest_raw_call(&r, &create, &reply, ITEST_WAIT_MS);
            }
        }
        unsigned frames = 1 + fuzz_below(4);
        for (unsigned k = 0; k < frames; k++) {
            proto_msg m;
            fuzz_message(&m);
            uint8_t buf[PROTO_MAX_FRAME + 64];
            ssize_t n = proto_encode(&m, buf, PROTO_MAX_FRAME);
            if (n <= 0) {
                continue;
            }
            size_t len = fuzz_mutate(buf, (size_t)n, sizeof buf);
            if (itest_raw_send_bytes(&r, buf, len) != 0) {
                break; /* already disconnected */
            }
        }
        /* Read what comes back for a moment; any answer is fine, a crash
         * is not. */
        proto_msg reply;
        while (itest_raw_recv_msg(&r, &reply, FUZZ_REPLY_WAIT_MS) == 1) {
        }
        itest_raw_close(&r);
        if ((done + 1) % FUZZ_CHECK_EVERY == 0) {
            ck_assert_msg(itest_daemon_alive(d),
                          "wasockd died during fuzz iteration %lu "
                          "(seed 0x%x)",
                          done, seed);
            expect_daemon_serves(d);
        }
    }
    fprintf(stderr, "fuzz: %lu iterations run\n", done);
    ck_assert_msg(itest_daemon_alive(d), "wasockd died during the fuzz loop (seed 0x%x)", seed);
    expect_daemon_serves(d);
    int after = itest_daemon_wait_fd_count(d, before, 2 * ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds %d before the fuzz loop, %d after", before, after);
}
END_TEST

static Suite *hostile_suite(void) {
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("bad_frames");
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
    tcase_add_loop_test(tc, test_bad_frame_disconnects, 0, (int)BAD_INPUT_COUNT);
    suite_add_tcase(s, tc);

    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"fds_from_client", test_fds_from_client},
        {"truncated_silent", test_truncated_and_silent_clients},
        {"flood", test_flood_without_reading},
        {"churn", test_connection_churn},
        {"fuzz", test_fuzz_frames},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc = tcase_create(cases[i].name);
        itest_tcase_defaults(tc);
        tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return itest_run_suite(hostile_suite());
}
