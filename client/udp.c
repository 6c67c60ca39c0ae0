/* udp.c — libwasock's UDP sockets: requests to the daemon, the datagram
 * channel, and the 0.2 stream rules (permits and traps).
 *
 * Each socket's datagrams travel on its channel (PROTOCOL.md section 15):
 * a send writes one SOCK_SEQPACKET message per datagram, a receive reads
 * them. The first datagram to a destination is preceded by a UDP_SEND_CHECK
 * round trip so the policy's refusal is the send's result; approved
 * destinations are remembered in a small per-socket cache.
 *
 * Trust: the caller's arguments are checked where the answer is certain
 * (NULL pointers, sizes, address forms); the daemon decides everything else
 * and re-checks what it receives on the channel. Messages from the daemon on
 * the channel are decoded strictly and skipped when malformed.
 */
#include "client-internal.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Destinations one socket remembers as approved. Most sockets talk to one
 * peer or a handful; beyond this a destination costs one more round trip
 * when it comes back, nothing else. */
#define CLIENT_UDP_APPROVED_MAX 16

/* Largest payloads the kernel sends: 65535 minus the IPv4 (20) and UDP (8)
 * headers, and minus the UDP header for IPv6 (whose 16-bit payload length
 * excludes its own header). */
#define CLIENT_UDP_MAX_PAYLOAD_V4 65507
#define CLIENT_UDP_MAX_PAYLOAD_V6 65527

/* Datagrams one receive call may read and discard (from a source other than
 * the associated one) before it returns: bounds the call's work. */
#define CLIENT_UDP_SKIP_MAX 1024

/* Datagrams written to the channel per sendmmsg. */
#define CLIENT_UDP_BATCH 32

/* What the client knows about a state it mirrors. */
enum udp_known { KNOWN_NO = 0, KNOWN_YES, KNOWN_UNSURE };

/* 0.2 outgoing stream: the check-send/send protocol (as wasmtime). */
enum udp_send_state { SEND_IDLE, SEND_PERMITTED, SEND_WAITING };

struct wasock_udp {
    client_object obj; /* first member: the client's map entry */
    wasock_client *client;
    wasock_family family;
    int chan;

    /* Written by the reader under the client's lock. */
    bool ready;
    wasock_err async_error; /* from EV_DATAGRAM_ERROR, for the next send */

    enum udp_known bound;
    enum udp_known connected;
    wasock_addr remote; /* valid when connected == KNOWN_YES */

    /* 0.2 streams */
    bool incoming_alive, outgoing_alive;
    enum udp_send_state send_state;
    uint64_t permits;

    wasock_addr approved[CLIENT_UDP_APPROVED_MAX];
    size_t napproved, approved_next;
};

static bool is_wasi_0_2(const wasock_udp *u) {
    return wasock_client_wasi_version(u->client) == PROTO_WASI_0_2;
}

static bool family_is_valid(wasock_family f) {
    return f == WASOCK_IPV4 || f == WASOCK_IPV6;
}

/* Same peer: address, port and (IPv6) scope. */
static bool same_peer(const wasock_addr *a, const wasock_addr *b) {
    if (a->ip.family != b->ip.family || a->port != b->port)
        return false;
    if (a->ip.family == WASOCK_IPV4)
        return memcmp(a->ip.addr.v4, b->ip.addr.v4, 4) == 0;
    return memcmp(a->ip.addr.v6, b->ip.addr.v6, 16) == 0 && a->scope_id == b->scope_id;
}

/* ------------------------------------------------------------ events */

static void udp_on_event(client_object *o, const proto_msg *ev) {
    wasock_udp *u = (wasock_udp *)o;

    switch (ev->type) {
    case PROTO_EV_READY:
        u->ready = ev->ready != 0;
        break;
    case PROTO_EV_DATAGRAM_ERROR:
        if (u->async_error == WASOCK_OK)
            u->async_error =
                ev->code <= PROTO_E_LAST_WASI ? (wasock_err)ev->code : WASOCK_E_UNKNOWN;
        break;
    default:
        break;
    }
}

static void udp_on_close(client_object *o) {
    wasock_udp *u = (wasock_udp *)o;

    if (u->chan >= 0)
        close(u->chan);
    free(u);
}

/* ------------------------------------------------------------ requests */

static void udp_request_init(proto_msg *req, const wasock_udp *u, uint16_t type) {
    memset(req, 0, sizeof(*req));
    req->type = type;
    req->handle = u->obj.handle;
}

static wasock_err udp_call(wasock_udp *u, proto_msg *req, proto_msg *reply) {
    proto_msg ignored;

    return client_transact(u->client, req, NULL, reply ? reply : &ignored, NULL, 0, NULL);
}

static wasock_err udp_address_request(wasock_udp *u, uint16_t type, const wasock_addr *a,
                                      bool has_remote) {
    proto_msg req;

    udp_request_init(&req, u, type);
    req.has_remote = has_remote;
    if (a && client_addr_to_proto(a, &req.addr) < 0)
        return WASOCK_E_INVALID_ARGUMENT;
    if (!a) {
        /* UDP_STREAM without a remote still carries a (zero) address. */
        req.addr.family = u->family == WASOCK_IPV4 ? PROTO_IPV4 : PROTO_IPV6;
    }
    return udp_call(u, &req, NULL);
}

wasock_err wasock_udp_create(wasock_client *c, wasock_family f, wasock_udp **out) {
    proto_msg req, reply;
    wasock_udp *u;
    wasock_err err;
    unsigned nfds = 0;
    int fd = -1;

    if (!c || !out || !family_is_valid(f))
        return WASOCK_E_INVALID_ARGUMENT;
    u = calloc(1, sizeof(*u));
    if (!u)
        return WASOCK_E_OUT_OF_MEMORY;
    u->client = c;
    u->family = f;
    u->chan = -1;
    u->ready = true;
    u->bound = KNOWN_NO;
    u->connected = KNOWN_NO;
    u->obj.on_event = udp_on_event;
    u->obj.on_close = udp_on_close;
    memset(&req, 0, sizeof(req));
    req.type = PROTO_UDP_CREATE;
    req.family = (uint8_t)(f == WASOCK_IPV4 ? PROTO_IPV4 : PROTO_IPV6);
    err = client_transact(c, &req, &u->obj, &reply, &fd, 1, &nfds);
    if (err != WASOCK_OK) {
        free(u);
        return err;
    }
    if (nfds != 1) {
        client_object_unregister(c, &u->obj);
        free(u);
        client_break_protocol(c);
        return WASOCK_E_DAEMON;
    }
    u->chan = fd;
    *out = u;
    return WASOCK_OK;
}

/* A request that passed the daemon's argument and state checks may have
 * changed the association before failing: the mirror is then unsure. */
static bool failed_after_checks(wasock_err err) {
    return err != WASOCK_E_INVALID_ARGUMENT && err != WASOCK_E_INVALID_STATE &&
           err != WASOCK_E_DAEMON && err != WASOCK_OK;
}

wasock_err wasock_udp_start_bind(wasock_udp *u, const wasock_addr *local) {
    if (!u || !local)
        return WASOCK_E_INVALID_ARGUMENT;
    return udp_address_request(u, PROTO_UDP_BIND, local, false);
}

wasock_err wasock_udp_finish_bind(wasock_udp *u) {
    proto_msg req;
    wasock_err err;

    if (!u)
        return WASOCK_E_INVALID_ARGUMENT;
    udp_request_init(&req, u, PROTO_UDP_FINISH_BIND);
    err = udp_call(u, &req, NULL);
    if (err == WASOCK_OK)
        u->bound = KNOWN_YES;
    return err;
}

static bool udp_is_ready(wasock_client *c, const void *arg) {
    (void)c;
    return ((const wasock_udp *)arg)->ready;
}

static wasock_err udp_finish_bind_step(void *arg) {
    return wasock_udp_finish_bind(arg);
}

wasock_err wasock_udp_bind(wasock_udp *u, const wasock_addr *local) {
    wasock_err err = wasock_udp_start_bind(u, local);

    /* In progress while a permission prompt waits: readiness turns true
     * when it is answered. */
    return err != WASOCK_OK
               ? err
               : client_finish_when_ready(u->client, udp_is_ready, u, udp_finish_bind_step, u);
}

wasock_err wasock_udp_stream(wasock_udp *u, const wasock_addr *remote) {
    wasock_err err;

    if (!u)
        return WASOCK_E_INVALID_ARGUMENT;
    if (is_wasi_0_2(u) && (u->incoming_alive || u->outgoing_alive))
        return WASOCK_E_TRAP; /* WASI: the previous streams must be dropped first */
    err = udp_address_request(u, PROTO_UDP_STREAM, remote, remote != NULL);
    if (err == WASOCK_OK) {
        u->bound = KNOWN_YES;
        u->connected = remote ? KNOWN_YES : KNOWN_NO;
        if (remote)
            u->remote = *remote;
        u->incoming_alive = u->outgoing_alive = true;
        u->send_state = SEND_IDLE;
        u->permits = 0;
    } else if (failed_after_checks(err)) {
        u->connected = KNOWN_NO; /* the daemon dissociated first */
    }
    return err;
}

void wasock_udp_incoming_drop(wasock_udp *u) {
    if (u)
        u->incoming_alive = false;
}

void wasock_udp_outgoing_drop(wasock_udp *u) {
    if (u) {
        u->outgoing_alive = false;
        u->send_state = SEND_IDLE;
    }
}

wasock_err wasock_udp_connect(wasock_udp *u, const wasock_addr *remote) {
    wasock_err err;

    if (!u || !remote)
        return WASOCK_E_INVALID_ARGUMENT;
    err = udp_address_request(u, PROTO_UDP_CONNECT, remote, false);
    if (err == WASOCK_OK) {
        u->bound = KNOWN_YES;
        u->connected = KNOWN_YES;
        u->remote = *remote;
    } else if (failed_after_checks(err)) {
        /* The implicit bind or the dissociation may have happened. */
        u->bound = KNOWN_UNSURE;
        u->connected = KNOWN_NO;
    }
    return err;
}

wasock_err wasock_udp_disconnect(wasock_udp *u) {
    proto_msg req;
    wasock_err err;

    if (!u)
        return WASOCK_E_INVALID_ARGUMENT;
    udp_request_init(&req, u, PROTO_UDP_DISCONNECT);
    err = udp_call(u, &req, NULL);
    if (err == WASOCK_OK || failed_after_checks(err))
        u->connected = KNOWN_NO;
    return err;
}

static wasock_err udp_address_query(wasock_udp *u, uint16_t type, wasock_addr *out) {
    proto_msg req, reply;
    wasock_addr a;
    wasock_err err;

    if (!u || !out)
        return WASOCK_E_INVALID_ARGUMENT;
    udp_request_init(&req, u, type);
    err = udp_call(u, &req, &reply);
    if (err != WASOCK_OK)
        return err;
    if (client_addr_from_proto(&reply.addr, &a) < 0) {
        client_break_protocol(u->client);
        return WASOCK_E_DAEMON;
    }
    *out = a;
    return WASOCK_OK;
}

wasock_err wasock_udp_local_address(wasock_udp *u, wasock_addr *out) {
    wasock_err err = udp_address_query(u, PROTO_UDP_LOCAL_ADDRESS, out);

    if (u && (err == WASOCK_OK || err == WASOCK_E_INVALID_STATE) && u->bound == KNOWN_UNSURE)
        u->bound = err == WASOCK_OK ? KNOWN_YES : KNOWN_NO;
    return err;
}

wasock_err wasock_udp_remote_address(wasock_udp *u, wasock_addr *out) {
    return udp_address_query(u, PROTO_UDP_REMOTE_ADDRESS, out);
}

wasock_family wasock_udp_address_family(wasock_udp *u) {
    return u ? u->family : WASOCK_IPV4;
}

static wasock_err udp_get_option(wasock_udp *u, uint16_t option, uint64_t *value) {
    proto_msg req, reply;
    wasock_err err;

    if (!u || !value)
        return WASOCK_E_INVALID_ARGUMENT;
    udp_request_init(&req, u, PROTO_UDP_GET_OPTION);
    req.option = option;
    err = udp_call(u, &req, &reply);
    if (err == WASOCK_OK)
        *value = reply.value;
    return err;
}

static wasock_err udp_set_option(wasock_udp *u, uint16_t option, uint64_t value) {
    proto_msg req;

    if (!u)
        return WASOCK_E_INVALID_ARGUMENT;
    udp_request_init(&req, u, PROTO_UDP_SET_OPTION);
    req.option = option;
    req.value = value;
    return udp_call(u, &req, NULL);
}

wasock_err wasock_udp_unicast_hop_limit(wasock_udp *u, uint8_t *out) {
    uint64_t v;
    wasock_err err;

    if (!out)
        return WASOCK_E_INVALID_ARGUMENT;
    err = udp_get_option(u, PROTO_OPT_HOP_LIMIT, &v);
    if (err == WASOCK_OK)
        *out = v > UINT8_MAX ? UINT8_MAX : (uint8_t)v;
    return err;
}

wasock_err wasock_udp_set_unicast_hop_limit(wasock_udp *u, uint8_t v) {
    return udp_set_option(u, PROTO_OPT_HOP_LIMIT, v);
}

wasock_err wasock_udp_receive_buffer_size(wasock_udp *u, uint64_t *out) {
    return udp_get_option(u, PROTO_OPT_RECEIVE_BUFFER_SIZE, out);
}

wasock_err wasock_udp_set_receive_buffer_size(wasock_udp *u, uint64_t v) {
    return udp_set_option(u, PROTO_OPT_RECEIVE_BUFFER_SIZE, v);
}

wasock_err wasock_udp_send_buffer_size(wasock_udp *u, uint64_t *out) {
    return udp_get_option(u, PROTO_OPT_SEND_BUFFER_SIZE, out);
}

wasock_err wasock_udp_set_send_buffer_size(wasock_udp *u, uint64_t v) {
    return udp_set_option(u, PROTO_OPT_SEND_BUFFER_SIZE, v);
}

wasock_err wasock_udp_dropped_datagrams(wasock_udp *u, uint64_t *out) {
    return udp_get_option(u, PROTO_OPT_DATAGRAMS_DROPPED, out);
}

void wasock_udp_drop(wasock_udp *u) {
    wasock_client *c;

    if (!u)
        return;
    c = u->client;
    client_object_unregister(c, &u->obj);
    /* The daemon drains the channel before it closes the socket, so the
     * datagrams written so far still go out; closing our end after the
     * request keeps them readable until then. */
    if (!client_is_broken(c)) {
        proto_msg req;

        udp_request_init(&req, u, PROTO_UDP_DROP);
        (void)udp_call(u, &req, NULL);
    }
    if (u->chan >= 0)
        close(u->chan);
    free(u);
}

/* ------------------------------------------------------------ readiness */

static bool chan_poll(const wasock_udp *u, short events) {
    struct pollfd p = {.fd = u->chan, .events = events};

    return poll(&p, 1, 0) > 0 && (p.revents & (events | POLLERR | POLLHUP));
}

bool wasock_udp_ready(wasock_udp *u) {
    bool ready;

    if (!u)
        return false;
    client_lock(u->client);
    ready = u->ready;
    client_unlock(u->client);
    return ready;
}

bool wasock_udp_receive_ready(wasock_udp *u) {
    return u && chan_poll(u, POLLIN);
}

bool wasock_udp_send_ready(wasock_udp *u) {
    if (!u)
        return false;
    if (u->send_state != SEND_WAITING)
        return true;
    return chan_poll(u, POLLOUT);
}

int wasock_udp_fd(wasock_udp *u) {
    return u ? u->chan : -1;
}

/* ------------------------------------------------------------ receive */

/* True when the socket is bound, asking the daemon when the mirror is
 * unsure. */
static bool udp_is_bound(wasock_udp *u) {
    if (u->bound == KNOWN_UNSURE) {
        wasock_addr ignored;
        (void)wasock_udp_local_address(u, &ignored);
    }
    return u->bound == KNOWN_YES;
}

wasock_err wasock_udp_receive(wasock_udp *u, uint64_t max, wasock_datagram *out, uint8_t *buf,
                              size_t buflen, size_t *n) {
    size_t count = 0, used = 0, skipped = 0;

    if (!u || !n || (max > 0 && (!out || !buf)) || buflen < WASOCK_DATAGRAM_MAX)
        return WASOCK_E_INVALID_ARGUMENT;
    if (is_wasi_0_2(u) ? !u->incoming_alive : !udp_is_bound(u))
        return WASOCK_E_INVALID_STATE;
    if (client_is_broken(u->client))
        return WASOCK_E_DAEMON;

    while (count < max && skipped < CLIENT_UDP_SKIP_MAX) {
        uint8_t header[PROTO_DGRAM_HEADER_SIZE];
        struct iovec iov[2];
        struct msghdr msg;
        proto_addr from;
        wasock_addr source;
        ssize_t whole, got;

        /* The message's size first: one that does not fit stays queued. */
        whole = recv(u->chan, header, sizeof(header), MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
        if (whole <= 0)
            break; /* nothing waiting (or the daemon went away) */
        if ((size_t)whole > PROTO_DGRAM_HEADER_SIZE &&
            (size_t)whole - PROTO_DGRAM_HEADER_SIZE > buflen - used)
            break;
        iov[0].iov_base = header;
        iov[0].iov_len = sizeof(header);
        iov[1].iov_base = buf + used;
        iov[1].iov_len = buflen - used;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = 2;
        got = recvmsg(u->chan, &msg, MSG_DONTWAIT);
        if (got <= 0)
            break;
        if ((size_t)got < PROTO_DGRAM_HEADER_SIZE || (msg.msg_flags & MSG_TRUNC) ||
            proto_dgram_header_decode(header, sizeof(header), &from) != 1 ||
            client_addr_from_proto(&from, &source) < 0) {
            skipped++;
            continue;
        }
        /* Associated (0.2): datagrams queued before the association from
         * another source are not the stream's. */
        if (is_wasi_0_2(u) && u->connected == KNOWN_YES && !same_peer(&source, &u->remote)) {
            skipped++;
            continue;
        }
        out[count].data = buf + used;
        out[count].len = (size_t)got - PROTO_DGRAM_HEADER_SIZE;
        out[count].remote = source;
        out[count].has_remote = true;
        used += out[count].len;
        count++;
    }
    *n = count;
    return WASOCK_OK;
}

/* ------------------------------------------------------------ send */

wasock_err wasock_udp_check_send(wasock_udp *u, uint64_t *permits) {
    if (!u || !permits)
        return WASOCK_E_INVALID_ARGUMENT;
    if (is_wasi_0_2(u) && !u->outgoing_alive)
        return WASOCK_E_INVALID_STATE;
    switch (u->send_state) {
    case SEND_PERMITTED:
        break;
    case SEND_IDLE:
    case SEND_WAITING:
        if (!chan_poll(u, POLLOUT)) {
            u->send_state = SEND_WAITING;
            u->permits = 0;
            break;
        }
        u->send_state = SEND_PERMITTED;
        u->permits = WASOCK_UDP_SEND_PERMITS;
        break;
    }
    *permits = u->permits;
    return WASOCK_OK;
}

static bool is_approved(const wasock_udp *u, const wasock_addr *a) {
    for (size_t i = 0; i < u->napproved; i++)
        if (same_peer(&u->approved[i], a))
            return true;
    return false;
}

static void remember_approved(wasock_udp *u, const wasock_addr *a) {
    u->approved[u->approved_next] = *a;
    u->approved_next = (u->approved_next + 1) % CLIENT_UDP_APPROVED_MAX;
    if (u->napproved < CLIENT_UDP_APPROVED_MAX)
        u->napproved++;
}

/* The address checks every destination gets (the daemon repeats them). */
static bool destination_is_valid(const wasock_udp *u, const wasock_addr *a) {
    if (a->ip.family != u->family || a->port == 0)
        return false;
    if (a->ip.family == WASOCK_IPV4) {
        const uint8_t *b = a->ip.addr.v4;
        bool unspecified = (b[0] | b[1] | b[2] | b[3]) == 0;
        bool multicast = (b[0] & 0xf0) == 0xe0;
        bool broadcast = b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255;
        return !unspecified && !multicast && !broadcast;
    }
    const uint16_t *w = a->ip.addr.v6;
    bool zero_prefix = (w[0] | w[1] | w[2] | w[3] | w[4]) == 0;
    bool unspecified = zero_prefix && (w[5] | w[6] | w[7]) == 0;
    bool mapped = zero_prefix && w[5] == 0xffff;
    bool compatible = zero_prefix && w[5] == 0 && !unspecified && !(w[6] == 0 && w[7] == 1);
    bool multicast = (w[0] & 0xff00) == 0xff00;
    return !unspecified && !mapped && !compatible && !multicast;
}

/* The destination of d, or the reason it cannot be sent. *use_peer says
 * the header carries no address (the associated peer). */
static wasock_err datagram_destination(wasock_udp *u, const wasock_datagram *d, wasock_addr *dest,
                                       bool *use_peer) {
    size_t limit = u->family == WASOCK_IPV4 ? CLIENT_UDP_MAX_PAYLOAD_V4 : CLIENT_UDP_MAX_PAYLOAD_V6;

    if (!d->data && d->len > 0)
        return WASOCK_E_INVALID_ARGUMENT;
    if (d->len > limit)
        return WASOCK_E_DATAGRAM_TOO_LARGE;
    if (u->connected == KNOWN_UNSURE) {
        wasock_addr peer;
        wasock_err err = udp_address_query(u, PROTO_UDP_REMOTE_ADDRESS, &peer);
        u->connected = err == WASOCK_OK ? KNOWN_YES : KNOWN_NO;
        if (err == WASOCK_OK)
            u->remote = peer;
    }
    if (d->has_remote) {
        if (!destination_is_valid(u, &d->remote))
            return WASOCK_E_INVALID_ARGUMENT;
        if (u->connected == KNOWN_YES && !same_peer(&d->remote, &u->remote))
            return WASOCK_E_INVALID_ARGUMENT;
        *dest = d->remote;
    } else {
        if (u->connected != KNOWN_YES)
            return WASOCK_E_INVALID_ARGUMENT;
        *dest = u->remote;
    }
    *use_peer = u->connected == KNOWN_YES;
    return WASOCK_OK;
}

/* UDP_SEND_CHECK for dest unless already approved. */
static wasock_err approve_destination(wasock_udp *u, const wasock_addr *dest) {
    wasock_err err;

    if (is_approved(u, dest))
        return WASOCK_OK;
    err = udp_address_request(u, PROTO_UDP_SEND_CHECK, dest, false);
    if (err == WASOCK_OK) {
        remember_approved(u, dest);
        u->bound = KNOWN_YES; /* 0.3: bound implicitly if it was not */
    } else if (failed_after_checks(err) && u->bound == KNOWN_NO) {
        u->bound = KNOWN_UNSURE;
    }
    return err;
}

/* Writes msgs[0, n) to the channel. Returns how many went, or -1 when the
 * channel is gone (the daemon closed it). */
static int write_batch(wasock_udp *u, struct mmsghdr *msgs, size_t n) {
    size_t off = 0;

    while (off < n) {
        int r = sendmmsg(u->chan, msgs + off, (unsigned)(n - off), MSG_DONTWAIT | MSG_NOSIGNAL);

        if (r > 0) {
            off += (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            break;
        } else {
            return off > 0 ? (int)off : -1;
        }
    }
    return (int)off;
}

wasock_err wasock_udp_send(wasock_udp *u, const wasock_datagram *d, size_t n, uint64_t *sent) {
    struct mmsghdr msgs[CLIENT_UDP_BATCH];
    struct iovec iov[CLIENT_UDP_BATCH][2];
    uint8_t headers[CLIENT_UDP_BATCH][PROTO_DGRAM_HEADER_SIZE];
    size_t done = 0, batched = 0;
    wasock_err first = WASOCK_OK, pending;
    bool channel_full = false;

    if (!u || !sent || (n > 0 && !d))
        return WASOCK_E_INVALID_ARGUMENT;
    if (is_wasi_0_2(u)) {
        if (!u->outgoing_alive)
            return WASOCK_E_INVALID_STATE;
        /* WASI: send must follow check-send and stay within its permit. */
        if (u->send_state != SEND_PERMITTED || n > u->permits)
            return WASOCK_E_TRAP;
        u->send_state = SEND_IDLE;
        u->permits = 0;
    }
    if (n == 0) {
        *sent = 0;
        return WASOCK_OK;
    }
    /* Errors the daemon met with earlier datagrams come first. */
    if (wasock_client_dispatch(u->client) != WASOCK_OK)
        return WASOCK_E_DAEMON;
    client_lock(u->client);
    pending = u->async_error;
    u->async_error = WASOCK_OK;
    client_unlock(u->client);
    if (pending != WASOCK_OK) {
        /* A refusal after a reload, say: ask again for every destination. */
        u->napproved = 0;
        return pending;
    }

    memset(msgs, 0, sizeof(msgs));
    for (size_t i = 0; i < n && first == WASOCK_OK && !channel_full; i++) {
        wasock_addr dest;
        proto_addr wire;
        bool use_peer = false;
        wasock_err err = datagram_destination(u, &d[i], &dest, &use_peer);

        if (err == WASOCK_OK && !is_approved(u, &dest)) {
            /* Datagrams before this one go out before the round trip. */
            int w = write_batch(u, msgs, batched);
            if (w < 0) {
                first = WASOCK_E_DAEMON;
                break;
            }
            done += (size_t)w;
            channel_full = (size_t)w < batched;
            batched = 0;
            if (channel_full)
                break;
            err = approve_destination(u, &dest);
        }
        if (err != WASOCK_OK) {
            first = err;
            break;
        }
        if (use_peer) {
            proto_dgram_header_encode(NULL, headers[batched]);
        } else {
            client_addr_to_proto(&dest, &wire);
            proto_dgram_header_encode(&wire, headers[batched]);
        }
        iov[batched][0].iov_base = headers[batched];
        iov[batched][0].iov_len = PROTO_DGRAM_HEADER_SIZE;
        iov[batched][1].iov_base = (void *)d[i].data;
        iov[batched][1].iov_len = d[i].len;
        msgs[batched].msg_hdr.msg_iov = iov[batched];
        msgs[batched].msg_hdr.msg_iovlen = 2;
        batched++;
        if (batched == CLIENT_UDP_BATCH) {
            int w = write_batch(u, msgs, batched);
            if (w < 0) {
                first = WASOCK_E_DAEMON;
                break;
            }
            done += (size_t)w;
            channel_full = (size_t)w < batched;
            batched = 0;
        }
    }
    if (batched > 0 && first == WASOCK_OK && !channel_full) {
        int w = write_batch(u, msgs, batched);
        if (w < 0)
            first = WASOCK_E_DAEMON;
        else {
            done += (size_t)w;
            channel_full = (size_t)w < batched;
        }
    }
    if (channel_full && is_wasi_0_2(u))
        u->send_state = SEND_WAITING;
    /* WIT: once a datagram went out, the call succeeds. */
    if (done == 0 && first != WASOCK_OK)
        return first;
    *sent = done;
    return WASOCK_OK;
}
