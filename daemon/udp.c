/* udp.c — WASI UDP sockets: the state machine of both WASI shapes, the
 * policy enforcement points, socket options, and the datagram channel.
 *
 * Trust: requests come from an untrusted client through the strict codec;
 * handles are looked up in the session's own table, addresses go through
 * sockrules, option values through their clamp/refuse rules. The datagram
 * channel is untrusted too: every message's header is decoded strictly, its
 * destination is checked like a UDP_SEND_CHECK and decided by the policy
 * (through the socket's approval cache), and anything malformed, refused or
 * too large is dropped and counted, never sent. Every system call is
 * non-blocking; both directions are batched with recvmmsg/sendmmsg and
 * stop reading when the other side cannot take more (back-pressure).
 */
#include "udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authz.h"
#include "errmap.h"
#include "socknew.h"
#include "sockopt.h"
#include "hostbind.h"
#include "log.h"
#include "server.h"
#include "sockrules.h"

typedef enum udp_state {
    /* Created; no local address. */
    UDP_UNBOUND,
    /* start-bind ran (policy and bind(2) done, result kept); finish-bind
     * reports it: success -> bound, failure -> unbound again. */
    UDP_BIND_IN_PROGRESS,
    /* Has a local address; sends to any approved destination. */
    UDP_BOUND,
    /* Bound and associated with `remote`: the kernel filters sources. */
    UDP_CONNECTED,
} udp_state;

/* A datagram kept back because the other side could not take it. */
typedef struct udp_held {
    struct sockaddr_storage sa; /* outbound: the destination */
    socklen_t salen;            /* 0: the connected peer (or inbound) */
    size_t len;
    uint8_t *data; /* malloc'd; inbound: header + payload */
} udp_held;

typedef struct udp_queue {
    udp_held items[UDP_BATCH];
    size_t head, count;
} udp_queue;

/* One remembered policy decision about a peer (and, for udp.receive, the
 * local address the datagram came in on). */
typedef struct udp_approval {
    bool used;
    uint8_t op; /* policy_op */
    uint8_t family;
    uint16_t port;
    uint32_t scope_id;
    uint8_t ip[16];
    uint8_t local_ip[16];
    uint16_t verdict; /* proto_err */
} udp_approval;

/* The key of an approval: the peer, and the local IP for udp.receive. */
typedef struct approval_key {
    uint8_t op;
    const proto_addr *peer;
    const uint8_t *local_ip; /* 16 bytes; NULL: none (zeros) */
} approval_key;

typedef struct udp_sock {
    resource res; /* first member: the session's table entry */
    int fd;       /* the network socket */
    int chan;     /* the daemon's end of the datagram channel */
    uint8_t family;
    udp_state state;
    proto_err bind_result;
    /* An explicit bind waiting for a permission decision (a prompt, a
     * delayed refusal): finish-bind says would-block, readiness is false.
     * bind_addr is what it will bind. */
    authz_pending *bind_authz;
    proto_addr bind_addr;
    bool not_ready; /* readiness the client was last told is false */
    bool has_local;
    bool port_chosen_by_kernel;
    proto_addr local;  /* valid with has_local */
    proto_addr bound;  /* the address bound to, with the port the kernel gave */
    proto_addr remote; /* valid while connected */
    uint64_t dropped;  /* datagrams dropped, both directions */

    uv_poll_t fd_poll, chan_poll;
    bool fd_poll_open, chan_poll_open;
    int fd_events, chan_events;
    unsigned polls_closing;
    bool destroyed;   /* out of the table: no events, memory waits for polls */
    bool chan_closed; /* the client closed its end, or the channel failed */

    udp_queue outbound;    /* channel -> network, held by back-pressure */
    udp_queue inbound;     /* network -> channel, held by back-pressure */
    proto_err batch_error; /* first send error of the current wakeup */

    udp_approval *approvals; /* open addressing; capacity a power of two */
    size_t approvals_cap, approvals_count;
    uint64_t approvals_generation;

    hostbind_entry *pins[UDP_PINS_MAX];
    size_t npins;
} udp_sock;

static void udp_destroy(resource *r);

static const struct resource_ops udp_ops = {"udp", udp_destroy};

/* One buffer per datagram of a batch, shared by every socket: the loop is
 * single-threaded and every batch is finished (or copied into a queue)
 * within the callback that read it. One byte more than the largest message
 * tells a too-large one apart. */
static uint8_t batch_buffers[UDP_BATCH][PROTO_DGRAM_MAX_MESSAGE + 1];

static log_ratelimit udp_log = LOG_RATELIMIT_INIT(10000, 10);

static void update_polls(udp_sock *u);

/* --- helpers ---------------------------------------------------------------- */

static session *sess_of(udp_sock *u) {
    return u->res.sess;
}

static const char *state_name(udp_state st) {
    static const char *const names[] = {
        [UDP_UNBOUND] = "unbound",
        [UDP_BIND_IN_PROGRESS] = "bind-in-progress",
        [UDP_BOUND] = "bound",
        [UDP_CONNECTED] = "connected",
    };
    return names[st];
}

static void reply_invalid_state(session *s, const proto_msg *req, const udp_sock *u) {
    session_reply_invalid_state(s, req, state_name(u->state));
}

static bool is_bound(const udp_sock *u) {
    return u->state == UDP_BOUND || u->state == UDP_CONNECTED;
}

static size_t ip_len(uint8_t family) {
    return family == PROTO_IPV6 ? 16 : 4;
}

/* Same peer: family, IP, port and (IPv6) scope; the flow label is not part
 * of an address's identity. */
static bool same_peer(const proto_addr *a, const proto_addr *b) {
    return a->family == b->family && a->port == b->port &&
           memcmp(a->ip, b->ip, ip_len(a->family)) == 0 &&
           (a->family != PROTO_IPV6 || a->scope_id == b->scope_id);
}

static int read_address(int fd, bool peer, proto_addr *out) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
                 : getsockname(fd, (struct sockaddr *)&ss, &len);

    if (r < 0) {
        return -errno;
    }
    return sockrules_addr_from_sockaddr((struct sockaddr *)&ss, len, out);
}

static void refresh_local(udp_sock *u) {
    u->has_local = read_address(u->fd, false, &u->local) == 0;
}

/* --- approvals and pins ------------------------------------------------------- */

static void pin_binding(udp_sock *u, hostbind_entry *e) {
    for (size_t i = 0; i < u->npins; i++) {
        if (u->pins[i] == e) {
            return;
        }
    }
    /* Beyond the cap a binding is simply not kept alive by this socket. */
    if (u->npins < UDP_PINS_MAX) {
        hostbind_pin(e);
        u->pins[u->npins++] = e;
    }
}

static const uint8_t no_local_ip[16];

static uint64_t approval_hash(const approval_key *k) {
    const proto_addr *a = k->peer;
    const uint8_t *local = k->local_ip != NULL ? k->local_ip : no_local_ip;
    uint64_t h = 1469598103934665603ull;
    uint8_t head[4] = {k->op, a->family, (uint8_t)a->port, (uint8_t)(a->port >> 8)};

    for (size_t i = 0; i < sizeof(head); i++) {
        h = (h ^ head[i]) * 1099511628211ull;
    }
    for (size_t i = 0; i < ip_len(a->family); i++) {
        h = (h ^ a->ip[i]) * 1099511628211ull;
    }
    for (size_t i = 0; i < 16; i++) {
        h = (h ^ local[i]) * 1099511628211ull;
    }
    return h ^ a->scope_id;
}

static bool approval_matches(const udp_approval *ap, const approval_key *k) {
    const proto_addr *a = k->peer;

    return ap->used && ap->op == k->op && ap->family == a->family && ap->port == a->port &&
           memcmp(ap->ip, a->ip, ip_len(a->family)) == 0 &&
           (a->family != PROTO_IPV6 || ap->scope_id == a->scope_id) &&
           memcmp(ap->local_ip, k->local_ip != NULL ? k->local_ip : no_local_ip, 16) == 0;
}

static udp_approval *approval_slot(udp_approval *table, size_t cap, const approval_key *k) {
    size_t i = approval_hash(k) & (cap - 1);

    while (table[i].used && !approval_matches(&table[i], k)) {
        i = (i + 1) & (cap - 1);
    }
    return &table[i];
}

static void approvals_clear(udp_sock *u) {
    if (u->approvals != NULL) {
        memset(u->approvals, 0, u->approvals_cap * sizeof(*u->approvals));
    }
    u->approvals_count = 0;
}

/* Remembers a verdict; failing to (out of memory) only costs a later
 * re-evaluation. */
static void approval_store(udp_sock *u, const approval_key *key, proto_err verdict) {
    const proto_addr *a = key->peer;
    udp_approval *slot;

    if (u->approvals_count >= UDP_APPROVALS_MAX) {
        approvals_clear(u);
    }
    if (u->approvals == NULL || (u->approvals_count + 1) * 2 > u->approvals_cap) {
        size_t cap = u->approvals_cap == 0 ? 16 : u->approvals_cap * 2;
        udp_approval *grown = calloc(cap, sizeof(*grown));
        if (grown == NULL) {
            return;
        }
        for (size_t i = 0; i < u->approvals_cap; i++) {
            if (u->approvals[i].used) {
                proto_addr peer;
                memset(&peer, 0, sizeof(peer));
                peer.family = u->approvals[i].family;
                peer.port = u->approvals[i].port;
                peer.scope_id = u->approvals[i].scope_id;
                memcpy(peer.ip, u->approvals[i].ip, sizeof(peer.ip));
                approval_key k = {u->approvals[i].op, &peer, u->approvals[i].local_ip};
                *approval_slot(grown, cap, &k) = u->approvals[i];
            }
        }
        free(u->approvals);
        u->approvals = grown;
        u->approvals_cap = cap;
    }
    slot = approval_slot(u->approvals, u->approvals_cap, key);
    if (!slot->used) {
        u->approvals_count++;
    }
    slot->used = true;
    slot->op = key->op;
    memcpy(slot->local_ip, key->local_ip != NULL ? key->local_ip : no_local_ip, 16);
    slot->family = a->family;
    slot->port = a->port;
    slot->scope_id = a->family == PROTO_IPV6 ? a->scope_id : 0;
    memset(slot->ip, 0, sizeof(slot->ip));
    memcpy(slot->ip, a->ip, ip_len(a->family));
    slot->verdict = (uint16_t)verdict;
}

/* The policy's answer for datagrams to (udp.send) or from (udp.receive)
 * peer `a`, remembered per socket until the policy is reloaded. For
 * udp.receive, `local` is the address the datagram arrived at (NULL: the
 * socket's own). */
static proto_err approve(udp_sock *u, policy_op op, const proto_addr *a, const proto_addr *local) {
    session *s = sess_of(u);
    uint64_t generation = server_policy_generation(session_server(s));
    hostbind_entry *binding = NULL;
    uint8_t local_ip[16];
    approval_key key = {(uint8_t)op, a, NULL};
    authz_query q;
    proto_err verdict;

    if (op == POLICY_OP_UDP_RECEIVE && local != NULL) {
        memset(local_ip, 0, sizeof(local_ip));
        memcpy(local_ip, local->ip, ip_len(local->family));
        key.local_ip = local_ip;
    }
    if (generation != u->approvals_generation) {
        approvals_clear(u);
        u->approvals_generation = generation;
    }
    if (u->approvals != NULL) {
        udp_approval *slot = approval_slot(u->approvals, u->approvals_cap, &key);
        if (slot->used) {
            return (proto_err)slot->verdict;
        }
    }
    memset(&q, 0, sizeof(q));
    q.op = op;
    q.remote = a;
    q.handle = u->res.handle;
    if (op == POLICY_OP_UDP_RECEIVE) {
        q.local = local != NULL ? local : u->has_local ? &u->local : NULL;
        q.local_port_ephemeral = u->port_chosen_by_kernel;
    } else {
        q.binding = &binding;
    }
    verdict = authz_decide(s, &q);
    if (binding != NULL) {
        pin_binding(u, binding);
    }
    approval_store(u, &key, verdict);
    return verdict;
}

/* --- queues --------------------------------------------------------------------- */

static udp_held *queue_front(udp_queue *q) {
    return &q->items[q->head];
}

static void queue_pop(udp_queue *q) {
    free(q->items[q->head].data);
    q->items[q->head].data = NULL;
    q->head = (q->head + 1) % UDP_BATCH;
    q->count--;
}

static void queue_clear(udp_queue *q) {
    while (q->count > 0) {
        queue_pop(q);
    }
    q->head = 0;
}

/* Copies a datagram into the queue. Returns false when out of memory (the
 * caller drops it). The queue never holds more than one batch. */
static bool queue_push(udp_queue *q, const struct msghdr *msg) {
    udp_held *h;
    size_t len = 0;

    if (q->count >= UDP_BATCH) {
        return false;
    }
    for (size_t i = 0; i < msg->msg_iovlen; i++) {
        len += msg->msg_iov[i].iov_len;
    }
    h = &q->items[(q->head + q->count) % UDP_BATCH];
    h->data = malloc(len > 0 ? len : 1);
    if (h->data == NULL) {
        return false;
    }
    len = 0;
    for (size_t i = 0; i < msg->msg_iovlen; i++) {
        memcpy(h->data + len, msg->msg_iov[i].iov_base, msg->msg_iov[i].iov_len);
        len += msg->msg_iov[i].iov_len;
    }
    h->len = len;
    h->salen = msg->msg_name != NULL ? msg->msg_namelen : 0;
    if (h->salen > 0) {
        memcpy(&h->sa, msg->msg_name, h->salen);
    }
    q->count++;
    return true;
}

/* --- the datagram path ------------------------------------------------------------ */

/* Remembers a send error for one EV_DATAGRAM_ERROR per wakeup. */
static void note_send_error(udp_sock *u, proto_err why) {
    if (u->batch_error == PROTO_OK) {
        u->batch_error = why;
    }
}

/* Counts a datagram dropped on the way out and remembers why. */
static void drop_outbound(udp_sock *u, proto_err why) {
    u->dropped++;
    note_send_error(u, why);
}

static void report_batch_error(udp_sock *u) {
    proto_msg ev;

    if (u->batch_error == PROTO_OK) {
        return;
    }
    if (!u->destroyed && !session_is_closing(sess_of(u))) {
        memset(&ev, 0, sizeof(ev));
        ev.type = PROTO_EV_DATAGRAM_ERROR;
        ev.handle = u->res.handle;
        ev.code = u->batch_error <= PROTO_E_LAST_WASI ? u->batch_error : PROTO_E_UNKNOWN;
        session_send_event(sess_of(u), &ev);
    }
    u->batch_error = PROTO_OK;
}

/* Where a datagram of the channel may go: PROTO_OK with *sa and *salen set
 * (salen 0: the connected peer), or the reason to drop it. `dst` NULL
 * means the header said "no address". */
static proto_err outbound_destination(udp_sock *u, const proto_addr *dst,
                                      struct sockaddr_storage *sa, socklen_t *salen) {
    const char *why;

    if (!is_bound(u)) {
        return PROTO_E_INVALID_STATE;
    }
    *salen = 0;
    if (dst == NULL) {
        if (u->state != UDP_CONNECTED) {
            return PROTO_E_INVALID_ARGUMENT;
        }
        return approve(u, POLICY_OP_UDP_SEND, &u->remote, NULL);
    }
    if (sockrules_check_remote(u->family, dst, &why) != PROTO_OK) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    if (u->state == UDP_CONNECTED) {
        if (!same_peer(dst, &u->remote)) {
            return PROTO_E_INVALID_ARGUMENT;
        }
        return approve(u, POLICY_OP_UDP_SEND, &u->remote, NULL);
    }
    proto_err verdict = approve(u, POLICY_OP_UDP_SEND, dst, NULL);
    if (verdict == PROTO_OK && sockrules_addr_to_sockaddr(dst, sa, salen) < 0) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    return verdict;
}

/* Sends msgs[*off, n) on fd with sendmmsg, retrying on EINTR and advancing
 * *off past every datagram the kernel took. Returns 0 when all went,
 * -EAGAIN when the kernel can take no more now (EAGAIN, ENOBUFS), or the
 * negative errno of the datagram at *off, which failed (-EIO when sendmmsg
 * sent nothing without saying why). */
static int send_batch_from(int fd, struct mmsghdr *msgs, size_t n, size_t *off) {
    while (*off < n) {
        int r = sendmmsg(fd, msgs + *off, (unsigned)(n - *off), MSG_DONTWAIT);
        if (r > 0) {
            *off += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            return -EAGAIN;
        }
        return r < 0 ? -errno : -EIO;
    }
    return 0;
}

/* Sends msgs[0, n) to the network; what the kernel cannot take now is
 * held; a datagram the kernel refuses is dropped and reported. */
static void send_to_network(udp_sock *u, struct mmsghdr *msgs, size_t n) {
    size_t off = 0;
    int err;

    while ((err = send_batch_from(u->fd, msgs, n, &off)) != 0) {
        if (err == -EAGAIN) {
            for (; off < n; off++) {
                if (!queue_push(&u->outbound, &msgs[off].msg_hdr)) {
                    drop_outbound(u, PROTO_E_OUT_OF_MEMORY);
                }
            }
            return;
        }
        /* The datagram at `off` failed (an ICMP error reported now, a size
         * the kernel refuses, ...): drop it and go on with the rest. */
        drop_outbound(u, errmap_errno(-err, 0));
        off++;
    }
}

/* Reads batches from the channel and sends them, while the network socket
 * takes them. */
static void forward_outbound(udp_sock *u, int max_batches) {
    for (int round = 0; round < max_batches; round++) {
        struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
        struct iovec in_iov[UDP_BATCH], out_iov[UDP_BATCH];
        struct sockaddr_storage dest[UDP_BATCH];
        size_t nout = 0;
        int n;

        if (u->chan_closed || u->outbound.count > 0) {
            return;
        }
        memset(in, 0, sizeof(in));
        for (size_t i = 0; i < UDP_BATCH; i++) {
            in_iov[i].iov_base = batch_buffers[i];
            in_iov[i].iov_len = sizeof(batch_buffers[i]);
            in[i].msg_hdr.msg_iov = &in_iov[i];
            in[i].msg_hdr.msg_iovlen = 1;
        }
        n = recvmmsg(u->chan, in, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                u->chan_closed = true;
            }
            return;
        }
        if (n == 0) {
            u->chan_closed = true;
            return;
        }
        memset(out, 0, sizeof(out));
        for (int i = 0; i < n; i++) {
            const uint8_t *buf = batch_buffers[i];
            size_t len = in[i].msg_len;
            proto_addr dst;
            socklen_t salen = 0;
            proto_err err;
            int kind;

            if (len == 0) {
                /* Every message has a header: an empty read is the end. */
                u->chan_closed = true;
                break;
            }
            if ((in[i].msg_hdr.msg_flags & MSG_TRUNC) ||
                (len > PROTO_DGRAM_HEADER_SIZE &&
                 len - PROTO_DGRAM_HEADER_SIZE > PROTO_DGRAM_MAX_PAYLOAD)) {
                drop_outbound(u, PROTO_E_DATAGRAM_TOO_LARGE);
                continue;
            }
            kind = proto_dgram_header_decode(buf, len, &dst);
            if (kind < 0) {
                log_write_ratelimited(&udp_log, LOG_LEVEL_INFO,
                                      "session %llu handle %u: malformed datagram header dropped",
                                      (unsigned long long)session_id(sess_of(u)),
                                      (unsigned)u->res.handle);
                drop_outbound(u, PROTO_E_INVALID_ARGUMENT);
                continue;
            }
            err = outbound_destination(u, kind == 1 ? &dst : NULL, &dest[nout], &salen);
            if (err != PROTO_OK) {
                drop_outbound(u, err);
                continue;
            }
            out_iov[nout].iov_base = (void *)(buf + PROTO_DGRAM_HEADER_SIZE);
            out_iov[nout].iov_len = len - PROTO_DGRAM_HEADER_SIZE;
            out[nout].msg_hdr.msg_iov = &out_iov[nout];
            out[nout].msg_hdr.msg_iovlen = 1;
            out[nout].msg_hdr.msg_name = salen > 0 ? &dest[nout] : NULL;
            out[nout].msg_hdr.msg_namelen = salen;
            nout++;
        }
        send_to_network(u, out, nout);
        if (n < UDP_BATCH) {
            return; /* the channel is empty for now */
        }
    }
}

/* Sends held outbound datagrams; stops at the first EAGAIN. */
static void flush_outbound(udp_sock *u) {
    while (u->outbound.count > 0) {
        udp_held *h = queue_front(&u->outbound);
        struct iovec iov = {h->data, h->len};
        struct msghdr msg;
        ssize_t r;

        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_name = h->salen > 0 ? &h->sa : NULL;
        msg.msg_namelen = h->salen;
        r = sendmsg(u->fd, &msg, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            return;
        }
        if (r < 0) {
            drop_outbound(u, errmap_errno(errno, 0));
        }
        queue_pop(&u->outbound);
    }
}

/* Writes msgs[0, n) to the channel; what it cannot take now is held. */
static void send_to_channel(udp_sock *u, struct mmsghdr *msgs, size_t n) {
    size_t off = 0;
    int err = send_batch_from(u->chan, msgs, n, &off);

    if (err == -EAGAIN) {
        for (; off < n; off++) {
            if (!queue_push(&u->inbound, &msgs[off].msg_hdr)) {
                u->dropped++;
            }
        }
    } else if (err != 0) {
        /* The client closed its end: nobody will read these. */
        u->chan_closed = true;
        u->dropped += n - off;
    }
}

/* Control space for the IP_PKTINFO / IPV6_PKTINFO of one datagram. */
#define UDP_PKTINFO_SPACE CMSG_SPACE(sizeof(struct in6_pktinfo))

/* The address a received datagram was sent to (our side), from its
 * packet info: a socket bound to the wildcard address learns which of the
 * host's addresses the peer used, and that is what udp.receive's `local`
 * means. False when the kernel gave none. */
static bool arrival_address(const udp_sock *u, struct msghdr *msg, proto_addr *out) {
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
            cm->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(cm), sizeof(info));
            proto_addr_set_v4(out, (const uint8_t *)&info.ipi_addr, u->local.port);
            return true;
        }
        if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO &&
            cm->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(cm), sizeof(info));
            proto_addr_set_v6(out, (const uint8_t *)&info.ipi6_addr, u->local.port, 0, 0);
            return true;
        }
    }
    return false;
}

/* Receives batches from the network and forwards those whose source the
 * policy allows, while the channel takes them. */
static void forward_inbound(udp_sock *u, int max_batches) {
    for (int round = 0; round < max_batches; round++) {
        struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
        struct iovec in_iov[UDP_BATCH], out_iov[UDP_BATCH];
        struct sockaddr_storage src[UDP_BATCH];
        union {
            char buf[UDP_PKTINFO_SPACE];
            struct cmsghdr align;
        } control[UDP_BATCH];
        size_t nout = 0;
        int n;

        if (u->chan_closed || u->inbound.count > 0 || !is_bound(u)) {
            return;
        }
        memset(in, 0, sizeof(in));
        for (size_t i = 0; i < UDP_BATCH; i++) {
            in_iov[i].iov_base = batch_buffers[i] + PROTO_DGRAM_HEADER_SIZE;
            in_iov[i].iov_len = PROTO_DGRAM_MAX_PAYLOAD;
            in[i].msg_hdr.msg_iov = &in_iov[i];
            in[i].msg_hdr.msg_iovlen = 1;
            in[i].msg_hdr.msg_name = &src[i];
            in[i].msg_hdr.msg_namelen = sizeof(src[i]);
            in[i].msg_hdr.msg_control = control[i].buf;
            in[i].msg_hdr.msg_controllen = sizeof(control[i].buf);
        }
        n = recvmmsg(u->fd, in, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return;
            }
            /* A pending error of the socket (an ICMP report about an
             * earlier datagram): it is the sender's news. */
            note_send_error(u, errmap_errno(errno, 0));
            continue;
        }
        memset(out, 0, sizeof(out));
        for (int i = 0; i < n; i++) {
            proto_addr from, to;
            bool have_to = arrival_address(u, &in[i].msg_hdr, &to);

            if ((in[i].msg_hdr.msg_flags & MSG_TRUNC) ||
                sockrules_addr_from_sockaddr((struct sockaddr *)&src[i], in[i].msg_hdr.msg_namelen,
                                             &from) < 0 ||
                approve(u, POLICY_OP_UDP_RECEIVE, &from, have_to ? &to : NULL) != PROTO_OK) {
                u->dropped++;
                continue;
            }
            proto_dgram_header_encode(&from, batch_buffers[i]);
            out_iov[nout].iov_base = batch_buffers[i];
            out_iov[nout].iov_len = PROTO_DGRAM_HEADER_SIZE + in[i].msg_len;
            out[nout].msg_hdr.msg_iov = &out_iov[nout];
            out[nout].msg_hdr.msg_iovlen = 1;
            nout++;
        }
        send_to_channel(u, out, nout);
        if (n < UDP_BATCH) {
            return;
        }
    }
}

/* Writes held inbound datagrams to the channel; stops at the first EAGAIN. */
static void flush_inbound(udp_sock *u) {
    while (u->inbound.count > 0 && !u->chan_closed) {
        udp_held *h = queue_front(&u->inbound);
        ssize_t r = send(u->chan, h->data, h->len, MSG_DONTWAIT);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            return;
        }
        if (r < 0) {
            u->chan_closed = true;
            u->dropped += u->inbound.count;
            queue_clear(&u->inbound);
            return;
        }
        queue_pop(&u->inbound);
    }
    if (u->chan_closed) {
        u->dropped += u->inbound.count;
        queue_clear(&u->inbound);
    }
}

static void on_chan_ready(uv_poll_t *h, int status, int events) {
    udp_sock *u = h->data;

    /* On a poll error the system calls find out what is wrong. */
    if (status < 0) {
        events = u->chan_events;
    }
    if (events & UV_WRITABLE) {
        flush_inbound(u);
        /* Room again: take in what the network queued meanwhile. */
        forward_inbound(u, UDP_BATCHES_PER_WAKEUP);
    }
    if (events & (UV_READABLE | UV_DISCONNECT)) {
        forward_outbound(u, UDP_BATCHES_PER_WAKEUP);
    }
    report_batch_error(u);
    update_polls(u);
}

static void on_fd_ready(uv_poll_t *h, int status, int events) {
    udp_sock *u = h->data;

    if (status < 0) {
        events = u->fd_events;
    }
    if (events & UV_WRITABLE) {
        flush_outbound(u);
        forward_outbound(u, UDP_BATCHES_PER_WAKEUP);
    }
    if (events & UV_READABLE) {
        forward_inbound(u, UDP_BATCHES_PER_WAKEUP);
    }
    report_batch_error(u);
    update_polls(u);
}

static void on_poll_closed(uv_handle_t *h) {
    udp_sock *u = h->data;
    session *s = sess_of(u);

    u->polls_closing--;
    if (u->polls_closing == 0 && u->destroyed) {
        free(u);
    }
    session_release(s);
}

/* Sets the events one poll handle watches (0: none). */
static void poll_set(udp_sock *u, uv_poll_t *p, bool *open, int *current, int fd, int events,
                     uv_poll_cb cb) {
    if (events == *current) {
        return;
    }
    if (!*open) {
        if (uv_poll_init(session_loop(sess_of(u)), p, fd) < 0) {
            return;
        }
        p->data = u;
        *open = true;
    }
    if (events == 0) {
        uv_poll_stop(p);
    } else if (uv_poll_start(p, events, cb) < 0) {
        return;
    }
    *current = events;
}

/* Watches exactly what the data path can make progress on: the channel
 * unless outbound datagrams wait for the network, the network socket
 * (once bound) unless inbound datagrams wait for the channel, and the
 * writable side of whichever holds datagrams back. */
static void update_polls(udp_sock *u) {
    int chan_events = 0, fd_events = 0;

    if (u->destroyed) {
        return;
    }
    if (!u->chan_closed) {
        if (u->outbound.count == 0) {
            chan_events |= UV_READABLE;
        }
        if (u->inbound.count > 0) {
            chan_events |= UV_WRITABLE;
        }
        if (is_bound(u) && u->inbound.count == 0) {
            fd_events |= UV_READABLE;
        }
    }
    if (u->outbound.count > 0) {
        fd_events |= UV_WRITABLE;
    }
    poll_set(u, &u->chan_poll, &u->chan_poll_open, &u->chan_events, u->chan, chan_events,
             on_chan_ready);
    poll_set(u, &u->fd_poll, &u->fd_poll_open, &u->fd_events, u->fd, fd_events, on_fd_ready);
}

/* --- lifetime ------------------------------------------------------------------------ */

/* Releases everything. Datagrams the client wrote to the channel before it
 * dropped the socket are sent first, as far as the kernel takes them now. */
static void udp_destroy(resource *r) {
    udp_sock *u = (udp_sock *)r;
    session *s = sess_of(u);

    session_usage(s)->sockets--;
    flush_outbound(u);
    forward_outbound(u, UDP_BATCHES_PER_WAKEUP * 4);
    u->destroyed = true;
    u->batch_error = PROTO_OK;
    if (u->bind_authz != NULL) {
        authz_cancel(u->bind_authz); /* a prompt nobody waits for is withdrawn */
        u->bind_authz = NULL;
    }
    for (size_t i = 0; i < u->npins; i++) {
        hostbind_unpin(u->pins[i]);
    }
    u->npins = 0;
    queue_clear(&u->outbound);
    queue_clear(&u->inbound);
    free(u->approvals);
    u->approvals = NULL;
    if (u->chan_poll_open) {
        u->polls_closing++;
        session_hold(s);
        uv_close((uv_handle_t *)&u->chan_poll, on_poll_closed);
    }
    if (u->fd_poll_open) {
        u->polls_closing++;
        session_hold(s);
        uv_close((uv_handle_t *)&u->fd_poll, on_poll_closed);
    }
    /* uv_close stops watching at once, so the descriptors may go now. */
    close(u->fd);
    close(u->chan);
    if (u->polls_closing == 0) {
        free(u);
    }
}

static udp_sock *find_sock(session *s, const proto_msg *req) {
    resource *r = session_find_resource(s, req->handle, &udp_ops);

    if (r == NULL) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "no such handle");
    }
    return (udp_sock *)r;
}

/* --- create --------------------------------------------------------------------------- */

static void handle_create(session *s, const proto_msg *req) {
    int af = sockrules_af(req->family);
    int pair[2] = {-1, -1};
    udp_sock *u;
    proto_msg reply;
    int fd, r;

    fd = socknew_open(s, req, POLICY_PROTO_UDP);
    if (fd < 0) {
        return;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) < 0) {
        r = errno;
        close(fd);
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "socketpair: %s", strerror(r));
        return;
    }
    /* Each datagram's arrival address, for udp.receive decisions. */
    sockopt_set_int(fd, af == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP,
                    af == AF_INET6 ? IPV6_RECVPKTINFO : IP_PKTINFO, 1);
    /* A hint: the kernel caps it at net.core.wmem_max. */
    sockopt_set_int(pair[0], SOL_SOCKET, SO_SNDBUF, UDP_CHANNEL_BUFFER);
    sockopt_set_int(pair[1], SOL_SOCKET, SO_SNDBUF, UDP_CHANNEL_BUFFER);
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        close(fd);
        close(pair[0]);
        close(pair[1]);
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    u->fd = fd;
    u->chan = pair[0];
    u->family = req->family;
    u->state = UDP_UNBOUND;
    r = session_add_resource(s, &u->res, &udp_ops);
    if (r < 0) {
        close(fd);
        close(pair[0]);
        close(pair[1]);
        free(u);
        session_reply_error(s, req, r == -ENOSPC ? PROTO_E_NEW_SOCKET_LIMIT : PROTO_E_OUT_OF_MEMORY,
                            "no handle available");
        return;
    }
    session_usage(s)->sockets++;
    u->approvals_generation = server_policy_generation(session_server(s));
    update_polls(u);
    proto_reply_ok(req, &reply);
    reply.new_handle = u->res.handle;
    reply.nfds = 1;
    session_send(s, &reply, &pair[1]);
}

/* --- bind ------------------------------------------------------------------------------ */

/* bind(2) without SO_REUSEADDR (UDP never shares ports implicitly).
 * Returns a WASI result. */
static proto_err do_bind(udp_sock *u, const proto_addr *addr) {
    struct sockaddr_storage ss;
    socklen_t len;
    int r = sockrules_addr_to_sockaddr(addr, &ss, &len);

    if (r == 0 && bind(u->fd, (struct sockaddr *)&ss, len) < 0) {
        r = -errno;
    }
    if (r < 0) {
        return errmap_errno(r, ERRMAP_ADDRESS_GIVEN | errmap_wasi_flags(session_wasi(sess_of(u))));
    }
    u->port_chosen_by_kernel = addr->port == 0;
    refresh_local(u);
    u->bound = *addr;
    u->bound.port = u->has_local ? u->local.port : addr->port;
    return PROTO_OK;
}

/* Readiness is the WASI pollable; a UDP socket is not ready only while its
 * bind waits for a permission decision. Tells the client of a change. */
static void set_ready(udp_sock *u, bool ready) {
    if (u->not_ready == !ready) {
        return;
    }
    u->not_ready = !ready;
    session_send_ready(sess_of(u), u->res.handle, ready);
}

/* The decision on an explicit bind that had to wait: bind now (or keep the
 * refusal) for finish-bind to report. Not called once the socket is
 * dropped (udp_destroy cancels). */
static void on_bind_decided(void *cookie, proto_err result) {
    udp_sock *u = cookie;
    session *s = sess_of(u);

    u->bind_authz = NULL;
    u->bind_result = result == PROTO_OK ? do_bind(u, &u->bind_addr) : result;
    session_hold(s);
    set_ready(u, true); /* may close the session (output cap): u is not used after */
    session_flush(s);
    session_release(s);
}

static void handle_bind(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    authz_pending *pending = NULL;
    const char *why;
    authz_query q;

    if (u == NULL) {
        return;
    }
    /* bind checks the address first, then the state. */
    if (sockrules_check_local(u->family, &req->addr, &why) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (u->state != UDP_UNBOUND) {
        reply_invalid_state(s, req, u);
        return;
    }
    /* The outcome (policy or kernel) is finish-bind's to report. */
    u->state = UDP_BIND_IN_PROGRESS;
    u->bind_addr = req->addr;
    u->bind_result = PROTO_OK;
    memset(&q, 0, sizeof(q));
    q.op = POLICY_OP_UDP_BIND;
    q.local = &u->bind_addr;
    q.handle = u->res.handle;
    if (authz_begin(s, &q, on_bind_decided, u, &u->bind_result, &pending) == AUTHZ_PENDING) {
        u->bind_authz = pending;
        set_ready(u, false); /* events before the reply */
    } else if (u->bind_result == PROTO_OK) {
        u->bind_result = do_bind(u, &u->bind_addr);
    }
    session_reply_ok(s, req);
}

static void handle_finish_bind(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);

    if (u == NULL) {
        return;
    }
    if (u->state != UDP_BIND_IN_PROGRESS) {
        session_reply_error(s, req, PROTO_E_NOT_IN_PROGRESS, "no bind in progress");
        return;
    }
    if (u->bind_authz != NULL) {
        session_reply_error(s, req, PROTO_E_WOULD_BLOCK, "waiting for a permission decision");
        return;
    }
    if (u->bind_result != PROTO_OK) {
        u->state = UDP_UNBOUND;
        session_reply_error(s, req, u->bind_result, "bind failed");
        return;
    }
    u->state = UDP_BOUND;
    update_polls(u);
    session_reply_ok(s, req);
}

/* The implicit bind of a connect or send on an unbound socket: the policy
 * sees udp.bind of the unspecified address, port 0. */
static proto_err implicit_bind(udp_sock *u) {
    proto_addr unspecified;
    authz_query q;
    proto_err err;

    sockrules_addr_unspecified(u->family, &unspecified);
    memset(&q, 0, sizeof(q));
    q.op = POLICY_OP_UDP_BIND;
    q.implicit = true;
    q.local = &unspecified;
    q.handle = u->res.handle;
    err = authz_decide(sess_of(u), &q);
    if (err == PROTO_OK) {
        err = do_bind(u, &unspecified);
    }
    if (err == PROTO_OK) {
        u->state = UDP_BOUND;
        update_polls(u);
    }
    return err;
}

/* --- association ----------------------------------------------------------------------- */

/* Dissociates a connected socket. Linux forgets a port the kernel chose
 * when a UDP socket disconnects; WASI keeps the local address, so the port
 * is bound again. Returns a WASI result. */
static proto_err disconnect(udp_sock *u) {
    struct sockaddr unspec;
    struct sockaddr_storage ss;
    socklen_t len;

    memset(&unspec, 0, sizeof(unspec));
    unspec.sa_family = AF_UNSPEC;
    if (connect(u->fd, &unspec, sizeof(unspec)) < 0 && errno != EAFNOSUPPORT) {
        return errmap_errno(errno, errmap_wasi_flags(session_wasi(sess_of(u))));
    }
    u->state = UDP_BOUND;
    refresh_local(u);
    if ((!u->has_local || u->local.port == 0) && u->bound.port != 0 &&
        sockrules_addr_to_sockaddr(&u->bound, &ss, &len) == 0) {
        /* Best effort: should another socket have taken the port in the
         * meantime, the next send binds a new one. */
        (void)bind(u->fd, (struct sockaddr *)&ss, len);
        refresh_local(u);
    }
    return PROTO_OK;
}

/* Asks the policy about `remote` as the socket's association and connects.
 * Returns a WASI result; on failure the socket stays bound. */
static proto_err associate(udp_sock *u, const proto_addr *remote) {
    hostbind_entry *binding = NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    authz_query q;
    proto_err err;

    memset(&q, 0, sizeof(q));
    q.op = POLICY_OP_UDP_CONNECT;
    q.remote = remote;
    q.local = u->has_local ? &u->local : NULL;
    q.handle = u->res.handle;
    q.binding = &binding;
    err = authz_decide(sess_of(u), &q);
    if (err != PROTO_OK) {
        return err;
    }
    if (binding != NULL) {
        pin_binding(u, binding);
    }
    if (sockrules_addr_to_sockaddr(remote, &ss, &len) < 0) {
        return PROTO_E_INVALID_ARGUMENT;
    }
    if (connect(u->fd, (struct sockaddr *)&ss, len) < 0) {
        return errmap_errno(errno,
                            ERRMAP_ADDRESS_GIVEN | errmap_wasi_flags(session_wasi(sess_of(u))));
    }
    u->state = UDP_CONNECTED;
    u->remote = *remote;
    refresh_local(u);
    return PROTO_OK;
}

/* 0.2 stream(remote?): bound sockets only; dissociate, then associate. */
static void handle_stream(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    const char *why;
    proto_err err;

    if (u == NULL) {
        return;
    }
    if (!is_bound(u)) {
        reply_invalid_state(s, req, u);
        return;
    }
    if (req->has_remote && sockrules_check_remote(u->family, &req->addr, &why) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (u->state == UDP_CONNECTED && (err = disconnect(u)) != PROTO_OK) {
        session_reply_error(s, req, err, "cannot dissociate");
        return;
    }
    if (req->has_remote && (err = associate(u, &req->addr)) != PROTO_OK) {
        session_reply_error(s, req, err, "cannot associate with the remote address");
        return;
    }
    update_polls(u);
    session_reply_ok(s, req);
}

/* 0.3 connect: address, then state; an unbound socket binds implicitly. */
static void handle_connect(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    const char *why;
    proto_err err;

    if (u == NULL) {
        return;
    }
    if (sockrules_check_remote(u->family, &req->addr, &why) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (u->state == UDP_BIND_IN_PROGRESS) {
        reply_invalid_state(s, req, u);
        return;
    }
    if (u->state == UDP_UNBOUND && (err = implicit_bind(u)) != PROTO_OK) {
        session_reply_error(s, req, err, "implicit bind failed");
        return;
    }
    if (u->state == UDP_CONNECTED && (err = disconnect(u)) != PROTO_OK) {
        session_reply_error(s, req, err, "cannot dissociate");
        return;
    }
    err = associate(u, &req->addr);
    update_polls(u);
    if (err != PROTO_OK) {
        session_reply_error(s, req, err, "connect failed");
        return;
    }
    session_reply_ok(s, req);
}

static void handle_disconnect(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    proto_err err;

    if (u == NULL) {
        return;
    }
    if (u->state != UDP_CONNECTED) {
        reply_invalid_state(s, req, u);
        return;
    }
    err = disconnect(u);
    update_polls(u);
    if (err != PROTO_OK) {
        session_reply_error(s, req, err, "disconnect failed");
        return;
    }
    session_reply_ok(s, req);
}

/* Approves a destination before the client writes datagrams for it. */
static void handle_send_check(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    const char *why;
    proto_err err;

    if (u == NULL) {
        return;
    }
    if (sockrules_check_remote(u->family, &req->addr, &why) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (u->state == UDP_BIND_IN_PROGRESS ||
        (u->state == UDP_UNBOUND && session_wasi(s) == PROTO_WASI_0_2)) {
        reply_invalid_state(s, req, u);
        return;
    }
    if (u->state == UDP_CONNECTED && !same_peer(&req->addr, &u->remote)) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT,
                            "the socket is connected to another address");
        return;
    }
    if (u->state == UDP_UNBOUND && (err = implicit_bind(u)) != PROTO_OK) {
        session_reply_error(s, req, err, "implicit bind failed");
        return;
    }
    err = approve(u, POLICY_OP_UDP_SEND, &req->addr, NULL);
    if (err != PROTO_OK) {
        session_reply_error(s, req, err, "the policy refuses this destination");
        return;
    }
    session_reply_ok(s, req);
}

/* --- options, addresses, drop ------------------------------------------------------------- */

static void handle_get_option(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    proto_msg reply;
    int v = 0, r = 0;

    if (u == NULL) {
        return;
    }
    proto_reply_ok(req, &reply);
    switch (req->option) {
    case PROTO_OPT_HOP_LIMIT:
        r = sockopt_get_int(u->fd, sockopt_hop_limit_level(u->family),
                            sockopt_hop_limit_name(u->family), &v);
        reply.value = v < 0 ? 0 : (uint64_t)v;
        break;
    case PROTO_OPT_RECEIVE_BUFFER_SIZE:
        r = sockopt_get_int(u->fd, SOL_SOCKET, SO_RCVBUF, &v);
        reply.value = sockrules_buffer_size_from_kernel(v);
        break;
    case PROTO_OPT_SEND_BUFFER_SIZE:
        r = sockopt_get_int(u->fd, SOL_SOCKET, SO_SNDBUF, &v);
        reply.value = sockrules_buffer_size_from_kernel(v);
        break;
    case PROTO_OPT_DATAGRAMS_DROPPED:
        reply.value = u->dropped;
        break;
    default:
        session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "option %u cannot be read",
                            (unsigned)req->option);
        return;
    }
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "getsockopt: %s", strerror(-r));
        return;
    }
    session_send(s, &reply, NULL);
}

static void handle_set_option(session *s, const proto_msg *req) {
    udp_sock *u = find_sock(s, req);
    proto_err err;
    int v = 0, r, level, name;

    if (u == NULL) {
        return;
    }
    switch (req->option) {
    case PROTO_OPT_HOP_LIMIT:
        err = sockrules_hop_limit_to_kernel(req->value, &v);
        level = sockopt_hop_limit_level(u->family);
        name = sockopt_hop_limit_name(u->family);
        break;
    case PROTO_OPT_RECEIVE_BUFFER_SIZE:
        err = sockrules_buffer_size_to_kernel(req->value, &v);
        level = SOL_SOCKET;
        name = SO_RCVBUF;
        break;
    case PROTO_OPT_SEND_BUFFER_SIZE:
        err = sockrules_buffer_size_to_kernel(req->value, &v);
        level = SOL_SOCKET;
        name = SO_SNDBUF;
        break;
    default:
        session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "option %u cannot be set",
                            (unsigned)req->option);
        return;
    }
    if (err != PROTO_OK) {
        session_reply_error(s, req, err, "value %llu out of range", (unsigned long long)req->value);
        return;
    }
    r = sockopt_set_int(u->fd, level, name, v);
    /* Buffer sizes are a hint (Linux clamps silently). */
    if (r == -ENOBUFS && level == SOL_SOCKET) {
        r = 0;
    }
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "setsockopt: %s", strerror(-r));
        return;
    }
    session_reply_ok(s, req);
}

static void handle_address(session *s, const proto_msg *req, bool peer) {
    udp_sock *u = find_sock(s, req);
    proto_msg reply;
    int r;

    if (u == NULL) {
        return;
    }
    if (peer ? u->state != UDP_CONNECTED : !is_bound(u)) {
        reply_invalid_state(s, req, u);
        return;
    }
    proto_reply_ok(req, &reply);
    r = read_address(u->fd, peer, &reply.addr);
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))), "%s: %s",
                            peer ? "getpeername" : "getsockname", strerror(-r));
        return;
    }
    session_send(s, &reply, NULL);
}

static void handle_drop(session *s, const proto_msg *req) {
    resource *r = session_take_resource(s, req->handle, &udp_ops);

    if (r == NULL) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "no such handle");
        return;
    }
    udp_destroy(r);
    session_reply_ok(s, req);
}

/* --- dispatch ------------------------------------------------------------------------------ */

void udp_handle_request(session *s, const proto_msg *req) {
    switch (req->type) {
    case PROTO_UDP_CREATE:
        handle_create(s, req);
        return;
    case PROTO_UDP_BIND:
        handle_bind(s, req);
        return;
    case PROTO_UDP_FINISH_BIND:
        handle_finish_bind(s, req);
        return;
    case PROTO_UDP_STREAM:
        handle_stream(s, req);
        return;
    case PROTO_UDP_CONNECT:
        handle_connect(s, req);
        return;
    case PROTO_UDP_DISCONNECT:
        handle_disconnect(s, req);
        return;
    case PROTO_UDP_SEND_CHECK:
        handle_send_check(s, req);
        return;
    case PROTO_UDP_GET_OPTION:
        handle_get_option(s, req);
        return;
    case PROTO_UDP_SET_OPTION:
        handle_set_option(s, req);
        return;
    case PROTO_UDP_LOCAL_ADDRESS:
        handle_address(s, req, false);
        return;
    case PROTO_UDP_REMOTE_ADDRESS:
        handle_address(s, req, true);
        return;
    case PROTO_UDP_DROP:
        handle_drop(s, req);
        return;
    }
    session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "unknown UDP request");
}
