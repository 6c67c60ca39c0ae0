/* wasock.c — libwasock: the connection to wasockd and every TCP call.
 *
 * Each public call encodes one request frame, sends it, and waits for the
 * reply with the same id. Several threads may share one client: a mutex
 * guards the client's state, one thread at a time holds the "reader" role
 * (it alone reads the socket, owns the read buffer and the queue of received
 * descriptors, and dispatches every complete frame: replies to the waiting
 * callers' slots, events to the resources), and the other threads sleep on a
 * condition variable that the reader broadcasts after every batch.
 *
 * Trust: the caller's arguments are checked where the answer is certain
 * (NULL pointers, enum values outside their range); everything else is the
 * daemon's to decide. Frames from the daemon are decoded strictly by
 * proto_decode; a frame that breaks the protocol (malformed, a reply nobody
 * asked for, descriptors that do not match) puts the client into the
 * permanent "broken" state, as does the daemon going away: from then on every
 * call returns WASOCK_E_DAEMON without blocking.
 */
#include "client-internal.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "wasock-config.h"

/* How long wasock_client_open waits for the daemon to accept the connection
 * and answer HELLO. Admission is a local policy lookup that takes
 * microseconds; ten seconds leaves room for a loaded machine or a sanitizer
 * build and still lets a runtime report a wedged daemon instead of hanging. */
#define CLIENT_HANDSHAKE_TIMEOUT_MS 10000

/* Bytes the reader takes from the socket in one recvmsg. It must hold at
 * least one whole frame (a partial frame stays in the buffer until the rest
 * arrives); four frames' worth lets one read pick up a reply together with the
 * events the daemon sent before it. */
#define CLIENT_READ_BUFFER_SIZE (4 * PROTO_MAX_FRAME)

/* Descriptors received but not yet claimed by a frame. The kernel hands the
 * descriptors of one sendmsg to one recvmsg, and the reader dispatches every
 * complete frame after each read, so at most the descriptors of the frame
 * still being received plus one more batch wait here. More means the daemon
 * sent descriptors no frame names: a protocol error. */
#define CLIENT_FD_QUEUE_MAX (4 * PROTO_MAX_FDS_PER_FRAME)

/* wasock_client_dispatch reads at most this many times per call, so a daemon
 * that floods events cannot keep a "never blocks" call busy forever. */
#define CLIENT_DISPATCH_READS_MAX 64

/* Handle map size: starts small (most clients hold a few sockets) and
 * doubles with the number of sockets up to the maximum, after which chains
 * simply grow longer rather than asking for more memory. */
#define CLIENT_TCP_BUCKETS_INITIAL 16
#define CLIENT_TCP_BUCKETS_MAX     (1u << 20)

/* Longest text wasock_client_open writes into o->error on its own. */
#define CLIENT_ERRNO_TEXT_MAX 128

/* Buckets of the map of UDP sockets and lookups (client_object): a fixed
 * array, since events for them are rare compared with their calls. */
#define CLIENT_OBJECT_BUCKETS 64

struct wasock_tcp {
    wasock_client *client;
    uint32_t handle; /* the daemon's handle; never 0 once created */
    wasock_family family;
    bool ready;              /* the WASI pollable; written by the reader under the lock */
    bool listening;          /* set when finish-listen succeeded */
    wasock_err stream_error; /* first EV_STREAM_ERROR; written by the reader under the lock */
    int input_fd;            /* 0.2 streams, owned by this object; -1 when none */
    int output_fd;
    wasock_tcp *map_next; /* chain in the client's handle map */
};

/* One request waiting for its reply. Lives on the caller's stack and is
 * linked into the client's pending list from before the request is sent
 * until the caller has collected the reply. */
struct pending_request {
    uint32_t id;
    uint16_t reply_type;
    bool done; /* the reply is in `reply` (and its descriptors in fds) */
    proto_msg reply;
    int fds[PROTO_MAX_FDS_PER_FRAME]; /* owned by the slot's caller once done */
    unsigned nfds;
    /* TCP_CREATE and TCP_ACCEPT: the object that becomes the new socket. The
     * reader registers it under the reply's new_handle the moment the reply
     * is dispatched, so events for the new handle that follow are not lost. */
    wasock_tcp *new_tcp;
    /* The same for UDP sockets and lookups (client-internal.h). */
    client_object *new_object;
    struct pending_request *next;
};

struct wasock_client {
    pthread_mutex_t lock;      /* guards everything below except the reader's own fields */
    pthread_mutex_t send_lock; /* keeps frames whole on the socket; never held with `lock` */
    pthread_cond_t progress;   /* broadcast after every dispatch and when the client breaks */
    int fd;
    int wasi_version;
    uint64_t session;
    bool broken;      /* the daemon went away or broke the protocol: permanent */
    bool reader_busy; /* a thread holds the reader role */
    uint32_t last_request_id;
    uint64_t frames_dispatched; /* lets wasock_client_wait see that something arrived */
    struct pending_request *pending;

    /* The reader role's own state: touched only by the thread holding the
     * role (or by anyone while nobody holds it and `lock` is held). */
    uint8_t read_buffer[CLIENT_READ_BUFFER_SIZE];
    size_t read_length;
    int fd_queue[CLIENT_FD_QUEUE_MAX];
    unsigned fd_queue_head, fd_queue_length;

    /* handle -> wasock_tcp, for events. Buckets are chains through map_next. */
    wasock_tcp **tcp_buckets;
    size_t tcp_bucket_count;
    size_t tcp_count;

    /* handle -> client_object (UDP sockets, lookups), chained through next. */
    client_object *object_buckets[CLIENT_OBJECT_BUCKETS];
};

/* ------------------------------------------------------------- small helpers */

static void close_if_open(int fd) {
    if (fd >= 0)
        close(fd);
}

static int64_t monotonic_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline (-1: no deadline, wait forever). */
static int remaining_ms(int64_t deadline) {
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - monotonic_ms();
    if (left <= 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

static int64_t deadline_after(int timeout_ms) {
    return timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
}

static bool family_is_valid(wasock_family f) {
    return f == WASOCK_IPV4 || f == WASOCK_IPV6;
}

/* Maps a wire error to the public enum (same numbers for the WASI codes). */
static wasock_err err_from_wire(unsigned err) {
    if (err == PROTO_OK)
        return WASOCK_OK;
    if (err <= PROTO_E_LAST_WASI)
        return (wasock_err)err;
    if (err == PROTO_E_PROTOCOL)
        return WASOCK_E_DAEMON;
    return WASOCK_E_UNKNOWN;
}

/* ------------------------------------------------------------ handle map */

static size_t tcp_bucket_of(const wasock_client *c, uint32_t handle) {
    /* Handles come from a counter, so the low bits spread them evenly. */
    return handle & (c->tcp_bucket_count - 1);
}

static wasock_tcp *tcp_map_find(const wasock_client *c, uint32_t handle) {
    wasock_tcp *t;

    for (t = c->tcp_buckets[tcp_bucket_of(c, handle)]; t; t = t->map_next)
        if (t->handle == handle)
            return t;
    return NULL;
}

/* Doubles the bucket array when it is full. Failing to allocate is fine: the
 * map keeps working with longer chains. */
static void tcp_map_maybe_grow(wasock_client *c) {
    size_t new_count = c->tcp_bucket_count * 2;
    wasock_tcp **buckets;

    if (c->tcp_count < c->tcp_bucket_count || new_count > CLIENT_TCP_BUCKETS_MAX)
        return;
    buckets = calloc(new_count, sizeof(*buckets));
    if (!buckets)
        return;
    for (size_t i = 0; i < c->tcp_bucket_count; i++) {
        wasock_tcp *t = c->tcp_buckets[i];

        while (t) {
            wasock_tcp *next = t->map_next;
            size_t b = t->handle & (new_count - 1);

            t->map_next = buckets[b];
            buckets[b] = t;
            t = next;
        }
    }
    free(c->tcp_buckets);
    c->tcp_buckets = buckets;
    c->tcp_bucket_count = new_count;
}

/* Links t (whose handle is set) into the map. Never fails. */
static void tcp_map_insert(wasock_client *c, wasock_tcp *t) {
    size_t b;

    tcp_map_maybe_grow(c);
    b = tcp_bucket_of(c, t->handle);
    t->map_next = c->tcp_buckets[b];
    c->tcp_buckets[b] = t;
    c->tcp_count++;
}

static void tcp_map_remove(wasock_client *c, wasock_tcp *t) {
    wasock_tcp **link = &c->tcp_buckets[tcp_bucket_of(c, t->handle)];

    for (; *link; link = &(*link)->map_next) {
        if (*link == t) {
            *link = t->map_next;
            t->map_next = NULL;
            c->tcp_count--;
            return;
        }
    }
}

/* ---------------------------------------------------------- object map */

static client_object **object_bucket(wasock_client *c, uint32_t handle) {
    return &c->object_buckets[handle % CLIENT_OBJECT_BUCKETS];
}

static client_object *object_find(wasock_client *c, uint32_t handle) {
    for (client_object *o = *object_bucket(c, handle); o; o = o->next)
        if (o->handle == handle)
            return o;
    return NULL;
}

static void object_insert(wasock_client *c, client_object *o) {
    client_object **bucket = object_bucket(c, o->handle);

    o->next = *bucket;
    *bucket = o;
}

void client_object_unregister(wasock_client *c, client_object *o) {
    pthread_mutex_lock(&c->lock);
    for (client_object **link = object_bucket(c, o->handle); *link; link = &(*link)->next) {
        if (*link == o) {
            *link = o->next;
            o->next = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/* --------------------------------------------------- received descriptors */

static void fd_queue_close_all(wasock_client *c) {
    while (c->fd_queue_length > 0) {
        close(c->fd_queue[c->fd_queue_head]);
        c->fd_queue_head = (c->fd_queue_head + 1) % CLIENT_FD_QUEUE_MAX;
        c->fd_queue_length--;
    }
    c->fd_queue_head = 0;
}

static int fd_queue_pop(wasock_client *c) {
    int fd = c->fd_queue[c->fd_queue_head];

    c->fd_queue_head = (c->fd_queue_head + 1) % CLIENT_FD_QUEUE_MAX;
    c->fd_queue_length--;
    return fd;
}

/* Queues the descriptors of one recvmsg. Every descriptor that arrived is
 * either queued or closed here. Returns 0, or -EPROTO when the control data
 * was truncated or the queue would overflow. */
static int fd_queue_take_control(wasock_client *c, struct msghdr *msg) {
    int r = (msg->msg_flags & MSG_CTRUNC) ? -EPROTO : 0;

    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        size_t count;

        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (r == 0 && c->fd_queue_length < CLIENT_FD_QUEUE_MAX) {
                unsigned tail = (c->fd_queue_head + c->fd_queue_length) % CLIENT_FD_QUEUE_MAX;

                c->fd_queue[tail] = fd;
                c->fd_queue_length++;
            } else {
                close(fd);
                r = -EPROTO;
            }
        }
    }
    return r;
}

/* ----------------------------------------------------------- broken state */

/* Puts the client into the broken state for good and wakes every waiter.
 * Called with the lock held. The socket stays open (wasock_client_fd stays
 * valid until close) but is shut down, so the daemon sees us leave and a
 * runtime polling it sees it readable and learns DAEMON from dispatch. */
static void client_break(wasock_client *c) {
    if (!c->broken) {
        c->broken = true;
        shutdown(c->fd, SHUT_RDWR);
    }
    if (!c->reader_busy)
        fd_queue_close_all(c);
    pthread_cond_broadcast(&c->progress);
}

/* ------------------------------------------------------------- dispatching */

static struct pending_request *pending_find(wasock_client *c, uint32_t id) {
    for (struct pending_request *p = c->pending; p; p = p->next)
        if (p->id == id && !p->done)
            return p;
    return NULL;
}

static void pending_unlink(wasock_client *c, struct pending_request *p) {
    for (struct pending_request **link = &c->pending; *link; link = &(*link)->next) {
        if (*link == p) {
            *link = p->next;
            return;
        }
    }
}

/* Delivers a reply to its waiting caller. fds (nfds of them) are handed to
 * the slot on success and closed on failure. Returns 0 or -EPROTO. */
static int dispatch_reply(wasock_client *c, const proto_msg *m, int *fds, unsigned nfds) {
    struct pending_request *p = pending_find(c, m->id);

    if (!p || p->reply_type != m->type)
        goto protocol_error;
    if ((p->new_tcp || p->new_object) && m->err == PROTO_OK) {
        /* Handles are never 0 and never reused within a session. */
        if (m->new_handle == 0 || tcp_map_find(c, m->new_handle) || object_find(c, m->new_handle))
            goto protocol_error;
        if (p->new_tcp) {
            p->new_tcp->handle = m->new_handle;
            tcp_map_insert(c, p->new_tcp);
        } else {
            p->new_object->handle = m->new_handle;
            object_insert(c, p->new_object);
        }
    }
    p->reply = *m;
    memcpy(p->fds, fds, nfds * sizeof(int));
    p->nfds = nfds;
    p->done = true;
    return 0;

protocol_error:
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    return -EPROTO;
}

/* Applies an event to its resource; events for handles we do not know (made
 * up, or dropped a moment ago) are ignored. */
static void dispatch_event(wasock_client *c, const proto_msg *m) {
    wasock_tcp *t = tcp_map_find(c, m->handle);

    if (!t) {
        client_object *o = object_find(c, m->handle);

        if (o && o->on_event)
            o->on_event(o, m);
        return;
    }
    switch (m->type) {
    case PROTO_EV_READY:
        t->ready = m->ready != 0;
        break;
    case PROTO_EV_STREAM_ERROR:
        /* The first error is the one that ended the connection. */
        if (t->stream_error == WASOCK_OK)
            t->stream_error = err_from_wire(m->code);
        break;
    default:
        break;
    }
}

/* Handles one decoded frame. Called by the reader with the lock held.
 * Returns 0, or -EPROTO when the frame breaks the protocol. */
static int dispatch_frame(wasock_client *c, const proto_msg *m) {
    int fds[PROTO_MAX_FDS_PER_FRAME];
    unsigned nfds = m->nfds;

    if (nfds > PROTO_MAX_FDS_PER_FRAME || nfds > c->fd_queue_length)
        return -EPROTO;
    for (unsigned i = 0; i < nfds; i++)
        fds[i] = fd_queue_pop(c);

    if (m->type & PROTO_REPLY)
        return dispatch_reply(c, m, fds, nfds);

    /* Events and anything else carry no descriptors in version 1. */
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    if (m->type < PROTO_EVENT_FIRST || m->type > PROTO_EVENT_LAST || m->id != 0)
        return -EPROTO;
    dispatch_event(c, m);
    return 0;
}

/* Dispatches every complete frame in the read buffer and keeps the partial
 * rest. Called by the reader with the lock held. Returns 0 or -EPROTO. */
static int dispatch_buffered_frames(wasock_client *c) {
    size_t offset = 0;
    int r = 0;

    while (offset < c->read_length) {
        proto_msg m;
        size_t frame_length = 0;

        r = proto_frame_ready(c->read_buffer + offset, c->read_length - offset, &frame_length);
        if (r <= 0)
            break;
        r = proto_decode(c->read_buffer + offset, frame_length, &m);
        if (r < 0)
            break;
        offset += frame_length;
        r = dispatch_frame(c, &m);
        if (r < 0)
            break;
        c->frames_dispatched++;
    }
    memmove(c->read_buffer, c->read_buffer + offset, c->read_length - offset);
    c->read_length -= offset;
    return r < 0 ? -EPROTO : 0;
}

/* Waits up to timeout_ms (0: not at all, -1: forever) for the socket to be
 * readable and reads once into the read buffer, queueing the descriptors
 * that came with the bytes. Called by the reader WITHOUT the lock.
 * Returns the bytes read, 0 when nothing arrived (timeout, EINTR, EAGAIN),
 * or a negative errno when the connection is finished (-ECONNRESET for EOF,
 * -EPROTO for bad control data). */
static ssize_t reader_receive(wasock_client *c, int timeout_ms) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS_PER_FRAME)];
    } control;
    struct iovec iov;
    struct msghdr msg;
    ssize_t n;
    int r;

    if (timeout_ms != 0) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

        r = poll(&pfd, 1, timeout_ms);
        if (r < 0)
            return errno == EINTR ? 0 : -errno;
        if (r == 0)
            return 0;
    }
    /* dispatch_buffered_frames leaves less than one frame behind. */
    if (c->read_length >= sizeof(c->read_buffer))
        return -EPROTO;

    iov.iov_base = c->read_buffer + c->read_length;
    iov.iov_len = sizeof(c->read_buffer) - c->read_length;
    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    do {
        n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
    r = fd_queue_take_control(c, &msg);
    if (r < 0)
        return r;
    if (n == 0)
        return -ECONNRESET;
    c->read_length += (size_t)n;
    return n;
}

/* Takes the reader role, reads once (waiting up to timeout_ms), dispatches
 * what is complete, gives the role back and wakes the waiters. Called and
 * returns with the lock held; the lock is released while reading. Returns
 * the bytes read (0: nothing arrived); a failure breaks the client. */
static ssize_t reader_read_and_dispatch(wasock_client *c, int timeout_ms) {
    ssize_t n;

    c->reader_busy = true;
    pthread_mutex_unlock(&c->lock);
    n = reader_receive(c, timeout_ms);
    pthread_mutex_lock(&c->lock);
    if (n < 0)
        client_break(c);
    else if (n > 0 && !c->broken && dispatch_buffered_frames(c) < 0)
        client_break(c);
    c->reader_busy = false;
    if (c->broken)
        fd_queue_close_all(c);
    pthread_cond_broadcast(&c->progress);
    return n < 0 ? 0 : n;
}

typedef client_condition wait_condition;

/* Waits until condition(c, arg) holds: reads the socket itself when no other
 * thread is reading, otherwise sleeps until the reader has dispatched a
 * batch. Called and returns with the lock held. Returns 0 when the condition
 * holds, -EPIPE when the client is (or became) broken, -ETIMEDOUT when the
 * deadline (monotonic ms, -1: none) passed. The condition is checked first,
 * so a reply that arrived before the client broke is still delivered. */
static int client_wait_locked(wasock_client *c, wait_condition *condition, const void *arg,
                              int64_t deadline) {
    bool tried = false;

    for (;;) {
        int timeout;

        if (condition(c, arg))
            return 0;
        if (c->broken)
            return -EPIPE;
        timeout = remaining_ms(deadline);
        if (tried && timeout == 0)
            return -ETIMEDOUT;
        tried = true;
        if (!c->reader_busy) {
            reader_read_and_dispatch(c, timeout);
        } else if (deadline < 0) {
            pthread_cond_wait(&c->progress, &c->lock);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(deadline / 1000),
                                  .tv_nsec = (long)(deadline % 1000) * 1000000};

            pthread_cond_timedwait(&c->progress, &c->lock, &ts);
        }
    }
}

static bool pending_is_done(wasock_client *c, const void *arg) {
    (void)c;
    return ((const struct pending_request *)arg)->done;
}

static bool frames_dispatched_since(wasock_client *c, const void *arg) {
    return c->frames_dispatched != *(const uint64_t *)arg;
}

static bool tcp_is_ready(wasock_client *c, const void *arg) {
    (void)c;
    return ((const wasock_tcp *)arg)->ready;
}

/* ------------------------------------------------------------- requests */

/* Writes one whole frame. Serialised by send_lock, never under `lock`, so a
 * slow write never keeps the reader from dispatching. Returns 0 or -errno. */
static int client_send_frame(wasock_client *c, const uint8_t *frame, size_t len) {
    size_t off = 0;
    int r = 0;

    pthread_mutex_lock(&c->send_lock);
    while (off < len) {
        ssize_t n = send(c->fd, frame + off, len - off, MSG_NOSIGNAL);

        if (n >= 0) {
            off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* Only if the caller made our descriptor non-blocking. */
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};

            if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
                r = -errno;
                break;
            }
        } else if (errno != EINTR) {
            r = -errno;
            break;
        }
    }
    pthread_mutex_unlock(&c->send_lock);
    return r;
}

static uint32_t client_next_request_id(wasock_client *c) {
    do {
        c->last_request_id++;
    } while (c->last_request_id == 0 || pending_find(c, c->last_request_id));
    return c->last_request_id;
}

/* Releases what a collected reply still holds (its descriptors). */
static void pending_release(struct pending_request *p) {
    for (unsigned i = 0; i < p->nfds; i++)
        close_if_open(p->fds[i]);
    p->nfds = 0;
}

/* Sends req (type and fields set; the id is assigned here) and waits for
 * its reply until deadline (monotonic ms, -1: none). p is the caller's slot;
 * p->new_tcp may be set before the call (see struct pending_request).
 * Returns 0 with the reply in p->reply and its descriptors in p->fds (the
 * caller owns them and releases them with pending_release), -EINVAL when req
 * cannot be encoded, -EPIPE when the client is or became broken, or
 * -ETIMEDOUT. On failure p holds no descriptors. */
static int client_call(wasock_client *c, proto_msg *req, struct pending_request *p,
                       int64_t deadline) {
    uint8_t frame[PROTO_MAX_FRAME];
    ssize_t len;
    int r;

    p->done = false;
    p->nfds = 0;
    p->reply_type = (uint16_t)(req->type | PROTO_REPLY);

    pthread_mutex_lock(&c->lock);
    if (c->broken) {
        pthread_mutex_unlock(&c->lock);
        return -EPIPE;
    }
    req->id = client_next_request_id(c);
    req->nfds = 0;
    len = proto_encode(req, frame, sizeof(frame));
    if (len < 0) {
        pthread_mutex_unlock(&c->lock);
        return -EINVAL;
    }
    /* Linked before sending: another thread may read the reply first. */
    p->id = req->id;
    p->next = c->pending;
    c->pending = p;
    pthread_mutex_unlock(&c->lock);

    r = client_send_frame(c, frame, (size_t)len);

    pthread_mutex_lock(&c->lock);
    if (r < 0)
        client_break(c);
    r = client_wait_locked(c, pending_is_done, p, deadline);
    pending_unlink(c, p);
    if (r == 0 && p->reply.err == PROTO_E_PROTOCOL) {
        /* The daemon refused our frame as malformed and closes the session. */
        client_break(c);
        r = -EPIPE;
    }
    pthread_mutex_unlock(&c->lock);
    if (r < 0)
        pending_release(p);
    return r;
}

/* client_call for the public API: maps the outcome to a wasock_err. On OK
 * the reply's descriptors are the caller's (pending_release); otherwise none
 * are left. */
static wasock_err client_request(wasock_client *c, proto_msg *req, struct pending_request *p) {
    wasock_err err;
    int r;

    r = client_call(c, req, p, -1);
    if (r == -EINVAL)
        return WASOCK_E_INVALID_ARGUMENT;
    if (r < 0)
        return WASOCK_E_DAEMON;
    err = err_from_wire(p->reply.err);
    if (err != WASOCK_OK)
        pending_release(p);
    return err;
}

/* Marks the client broken after a reply that cannot be right (e.g. a
 * success without the descriptors it must carry) and releases the reply. */
static wasock_err client_reply_violation(wasock_client *c, struct pending_request *p) {
    pending_release(p);
    pthread_mutex_lock(&c->lock);
    client_break(c);
    pthread_mutex_unlock(&c->lock);
    return WASOCK_E_DAEMON;
}

/* ------------------------------------------------------------- the client */

void wasock_client_opts_init(wasock_client_opts *o) {
    if (!o)
        return;
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->wasi_version = 2;
}

/* Writes a formatted reason into the caller's optional error buffer. */
static void open_error(const wasock_client_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void open_error(const wasock_client_opts *o, const char *fmt, ...) {
    va_list ap;

    if (!o->error || o->error_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(o->error, o->error_len, fmt, ap);
    va_end(ap);
}

static const char *errno_text(int err, char *buf, size_t len) {
    /* GNU strerror_r: thread-safe, returns the text (maybe static). */
    return strerror_r(err, buf, len);
}

/* Frees a client that is not (or no longer) shared with other threads:
 * every resource, every descriptor, the memory. */
static void client_free(wasock_client *c) {
    for (size_t i = 0; i < c->tcp_bucket_count; i++) {
        wasock_tcp *t = c->tcp_buckets[i];

        while (t) {
            wasock_tcp *next = t->map_next;

            close_if_open(t->input_fd);
            if (t->output_fd != t->input_fd)
                close_if_open(t->output_fd);
            free(t);
            t = next;
        }
    }
    free(c->tcp_buckets);
    for (size_t i = 0; i < CLIENT_OBJECT_BUCKETS; i++) {
        client_object *o = c->object_buckets[i];

        while (o) {
            client_object *next = o->next;

            if (o->on_close)
                o->on_close(o);
            o = next;
        }
    }
    fd_queue_close_all(c);
    close_if_open(c->fd);
    pthread_cond_destroy(&c->progress);
    pthread_mutex_destroy(&c->send_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Allocates a client with its locks and an empty handle map; no socket yet.
 * Returns NULL when out of memory. */
static wasock_client *client_alloc(int wasi_version) {
    pthread_condattr_t attr;
    wasock_client *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->fd = -1;
    c->wasi_version = wasi_version;
    c->tcp_bucket_count = CLIENT_TCP_BUCKETS_INITIAL;
    c->tcp_buckets = calloc(c->tcp_bucket_count, sizeof(*c->tcp_buckets));
    if (!c->tcp_buckets) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    /* Timed waits use the monotonic clock, like the deadlines. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->progress, &attr);
    pthread_condattr_destroy(&attr);
    return c;
}

/* Sets a send timeout on the connection (0: none). On a Unix stream socket
 * it also bounds connect(2) when the daemon's backlog is full. */
static void client_set_send_timeout(int fd, int timeout_ms) {
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};

    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Connects c->fd to path. Returns 0 or a negative errno. */
static int client_connect_socket(wasock_client *c, const char *path) {
    struct sockaddr_un sun;
    size_t len = strlen(path);
    int r;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, len);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    client_set_send_timeout(c->fd, CLIENT_HANDSHAKE_TIMEOUT_MS);
    do {
        r = connect(c->fd, (struct sockaddr *)&sun,
                    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1));
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

/* Sends HELLO and interprets the answer. Returns the result of open. */
static wasock_err client_handshake(wasock_client *c, const wasock_client_opts *o, const char *path,
                                   const char *tenant, const char *token) {
    struct pending_request p;
    proto_msg req;
    int r;

    memset(&req, 0, sizeof(req));
    memset(&p, 0, sizeof(p));
    req.type = PROTO_HELLO;
    req.version_min = PROTO_VERSION;
    req.version_max = PROTO_VERSION;
    req.wasi = (uint8_t)c->wasi_version;
    memcpy(req.tenant, tenant, strlen(tenant) + 1);
    memcpy(req.token, token, strlen(token) + 1);

    r = client_call(c, &req, &p, deadline_after(CLIENT_HANDSHAKE_TIMEOUT_MS));
    if (r == -ETIMEDOUT) {
        open_error(o, "no answer from the daemon at %s within %d ms", path,
                   CLIENT_HANDSHAKE_TIMEOUT_MS);
        return WASOCK_E_DAEMON;
    }
    if (r == -EINVAL) {
        open_error(o, "the tenant name or token cannot be sent (e.g. it contains a NUL)");
        return WASOCK_E_INVALID_ARGUMENT;
    }
    if (r < 0) {
        open_error(o, "the daemon at %s closed the connection during the handshake", path);
        return WASOCK_E_DAEMON;
    }
    pending_release(&p);
    switch (p.reply.err) {
    case PROTO_OK:
        break;
    case PROTO_E_ACCESS_DENIED:
        open_error(o, "%s", p.reply.detail);
        return WASOCK_E_ACCESS_DENIED;
    case PROTO_E_NOT_SUPPORTED:
        open_error(o, "the daemon at %s speaks no protocol version in [%d, %d]%s%s", path,
                   PROTO_VERSION, PROTO_VERSION, p.reply.detail[0] ? ": " : "", p.reply.detail);
        return WASOCK_E_DAEMON;
    default: {
        const char *name = proto_err_name(p.reply.err);

        open_error(o, "the daemon at %s refused the handshake: %s%s%s", path,
                   name ? name : "unknown error", p.reply.detail[0] ? ": " : "", p.reply.detail);
        return WASOCK_E_DAEMON;
    }
    }
    if (p.reply.version != PROTO_VERSION) {
        open_error(o, "the daemon at %s chose protocol version %u, which was not offered", path,
                   (unsigned)p.reply.version);
        return WASOCK_E_DAEMON;
    }
    c->session = p.reply.session;
    return WASOCK_OK;
}

/* True when the caller's opts struct is large enough to contain `field`. */
#define OPTS_HAS(o, field) ((o)->size >= offsetof(wasock_client_opts, field) + sizeof((o)->field))

wasock_err wasock_client_open(const wasock_client_opts *o, wasock_client **out) {
    char errno_buf[CLIENT_ERRNO_TEXT_MAX];
    const char *path = NULL, *tenant = "", *token = "";
    wasock_client *c;
    wasock_err err;
    int version;
    int r;

    if (!o || !OPTS_HAS(o, error_len)) {
        /* Too small to hold even the error buffer: report nothing there. */
        return WASOCK_E_INVALID_ARGUMENT;
    }
    if (!out) {
        open_error(o, "no place for the client (out is NULL)");
        return WASOCK_E_INVALID_ARGUMENT;
    }
    path = o->socket_path;
    if (o->tenant)
        tenant = o->tenant;
    if (o->token)
        token = o->token;
    version = o->wasi_version;
    if (version != PROTO_WASI_0_2 && version != PROTO_WASI_0_3) {
        open_error(o, "wasi_version must be 2 or 3, not %d", version);
        return WASOCK_E_INVALID_ARGUMENT;
    }
    if (!path || !path[0])
        path = secure_getenv("WASOCK_SOCKET");
    if (!path || !path[0])
        path = WASOCK_DEFAULT_SOCKET;
    if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        open_error(o, "socket path too long (at most %zu bytes): %s",
                   sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1, path);
        return WASOCK_E_INVALID_ARGUMENT;
    }
    if (strlen(tenant) > PROTO_TENANT_MAX || strlen(token) > PROTO_TOKEN_MAX) {
        open_error(o, "tenant name (at most %d bytes) or token (at most %d bytes) too long",
                   PROTO_TENANT_MAX, PROTO_TOKEN_MAX);
        return WASOCK_E_INVALID_ARGUMENT;
    }

    c = client_alloc(version);
    if (!c) {
        open_error(o, "out of memory");
        return WASOCK_E_OUT_OF_MEMORY;
    }
    r = client_connect_socket(c, path);
    if (r < 0) {
        open_error(o, "cannot connect to %s: %s", path,
                   errno_text(-r, errno_buf, sizeof(errno_buf)));
        client_free(c);
        return WASOCK_E_DAEMON;
    }
    err = client_handshake(c, o, path, tenant, token);
    if (err != WASOCK_OK) {
        client_free(c);
        return err;
    }
    /* From here on a send may wait as long as the daemon needs. */
    client_set_send_timeout(c->fd, 0);
    *out = c;
    return WASOCK_OK;
}

void wasock_client_close(wasock_client *c) {
    if (c)
        client_free(c);
}

int wasock_client_fd(const wasock_client *c) {
    return c ? c->fd : -1;
}

int wasock_client_wasi_version(const wasock_client *c) {
    return c ? c->wasi_version : 0;
}

wasock_err wasock_client_dispatch(wasock_client *c) {
    wasock_err err;

    if (!c)
        return WASOCK_E_INVALID_ARGUMENT;
    pthread_mutex_lock(&c->lock);
    /* When another thread is reading, it dispatches what arrives. */
    for (int i = 0; i < CLIENT_DISPATCH_READS_MAX && !c->broken && !c->reader_busy; i++)
        if (reader_read_and_dispatch(c, 0) == 0)
            break;
    err = c->broken ? WASOCK_E_DAEMON : WASOCK_OK;
    pthread_mutex_unlock(&c->lock);
    return err;
}

wasock_err wasock_client_wait(wasock_client *c, int timeout_ms) {
    uint64_t seen;
    int r;

    if (!c)
        return WASOCK_E_INVALID_ARGUMENT;
    pthread_mutex_lock(&c->lock);
    seen = c->frames_dispatched;
    r = client_wait_locked(c, frames_dispatched_since, &seen, deadline_after(timeout_ms));
    pthread_mutex_unlock(&c->lock);
    if (r == -ETIMEDOUT)
        return WASOCK_E_TIMEOUT;
    return r < 0 ? WASOCK_E_DAEMON : WASOCK_OK;
}

/* --------------------------------------------------------------------- TCP */

/* Starts a request about socket s. */
static void tcp_request_init(proto_msg *req, const wasock_tcp *s, uint16_t type) {
    memset(req, 0, sizeof(*req));
    req->type = type;
    req->handle = s->handle;
}

/* A request about s whose success carries no result. */
static wasock_err tcp_simple_request(wasock_tcp *s, proto_msg *req) {
    struct pending_request p = {0};
    wasock_err err = client_request(s->client, req, &p);

    if (err == WASOCK_OK)
        pending_release(&p);
    return err;
}

/* Allocates an unregistered socket object (fds -1, ready: a new socket's
 * pollable is ready). NULL when out of memory. */
static wasock_tcp *tcp_alloc(wasock_client *c, wasock_family family) {
    wasock_tcp *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    t->client = c;
    t->family = family;
    t->ready = true;
    t->stream_error = WASOCK_OK;
    t->input_fd = -1;
    t->output_fd = -1;
    return t;
}

/* Takes the stream descriptors of a successful finish-connect / accept reply
 * into t (0.2 sessions) and reports them through the optional out pointers.
 * One descriptor means both directions share it. In a 0.3 session the
 * daemon keeps the streams for TCP_STREAM, and anything sent is closed.
 * Returns 0, or -EPROTO for a 0.2 success without streams. */
static int tcp_adopt_streams(wasock_tcp *t, struct pending_request *p, int *input_fd,
                             int *output_fd) {
    if (t->client->wasi_version == PROTO_WASI_0_2) {
        if (p->nfds == 0)
            return -EPROTO;
        close_if_open(t->input_fd);
        if (t->output_fd != t->input_fd)
            close_if_open(t->output_fd);
        t->input_fd = p->fds[0];
        t->output_fd = p->nfds > 1 ? p->fds[1] : p->fds[0];
        p->nfds = 0;
    } else {
        pending_release(p);
    }
    if (input_fd)
        *input_fd = t->input_fd;
    if (output_fd)
        *output_fd = t->output_fd;
    return 0;
}

wasock_err wasock_tcp_create(wasock_client *c, wasock_family f, wasock_tcp **out) {
    struct pending_request p = {0};
    proto_msg req;
    wasock_tcp *t;
    wasock_err err;

    if (!c || !out || !family_is_valid(f))
        return WASOCK_E_INVALID_ARGUMENT;
    t = tcp_alloc(c, f);
    if (!t)
        return WASOCK_E_OUT_OF_MEMORY;
    memset(&req, 0, sizeof(req));
    req.type = PROTO_TCP_CREATE;
    req.family = (uint8_t)(f == WASOCK_IPV4 ? PROTO_IPV4 : PROTO_IPV6);
    p.new_tcp = t;
    err = client_request(c, &req, &p);
    if (err != WASOCK_OK) {
        free(t);
        return err;
    }
    pending_release(&p);
    *out = t;
    return WASOCK_OK;
}

/* Requests carrying an address: start-bind and start-connect. */
static wasock_err tcp_address_request(wasock_tcp *s, uint16_t type, const wasock_addr *a) {
    proto_msg req;

    if (!s || !a)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, type);
    if (client_addr_to_proto(a, &req.addr) < 0)
        return WASOCK_E_INVALID_ARGUMENT;
    return tcp_simple_request(s, &req);
}

/* TCP_FINISH for op; streams handled as for finish-connect. */
static wasock_err tcp_finish(wasock_tcp *s, uint8_t op, int *input_fd, int *output_fd) {
    struct pending_request p = {0};
    proto_msg req;
    wasock_err err;

    if (!s)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, PROTO_TCP_FINISH);
    req.op = op;
    err = client_request(s->client, &req, &p);
    if (err != WASOCK_OK)
        return err;
    if (op == PROTO_OP_CONNECT) {
        if (tcp_adopt_streams(s, &p, input_fd, output_fd) < 0)
            return client_reply_violation(s->client, &p);
    } else {
        pending_release(&p);
        if (op == PROTO_OP_LISTEN)
            s->listening = true;
    }
    return WASOCK_OK;
}

wasock_err wasock_tcp_start_bind(wasock_tcp *s, const wasock_addr *local) {
    return tcp_address_request(s, PROTO_TCP_BIND, local);
}

wasock_err wasock_tcp_finish_bind(wasock_tcp *s) {
    return tcp_finish(s, PROTO_OP_BIND, NULL, NULL);
}

wasock_err wasock_tcp_start_connect(wasock_tcp *s, const wasock_addr *remote) {
    return tcp_address_request(s, PROTO_TCP_CONNECT, remote);
}

wasock_err wasock_tcp_finish_connect(wasock_tcp *s, int *input_fd, int *output_fd) {
    return tcp_finish(s, PROTO_OP_CONNECT, input_fd, output_fd);
}

wasock_err wasock_tcp_start_listen(wasock_tcp *s) {
    proto_msg req;

    if (!s)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, PROTO_TCP_LISTEN);
    return tcp_simple_request(s, &req);
}

wasock_err wasock_tcp_finish_listen(wasock_tcp *s) {
    return tcp_finish(s, PROTO_OP_LISTEN, NULL, NULL);
}

wasock_err wasock_tcp_accept(wasock_tcp *l, wasock_tcp **conn, int *input_fd, int *output_fd) {
    struct pending_request p = {0};
    proto_msg req;
    wasock_tcp *t;
    wasock_err err;

    if (!l || !conn)
        return WASOCK_E_INVALID_ARGUMENT;
    /* An accepted socket has its listener's family (v6 sockets are v6-only). */
    t = tcp_alloc(l->client, l->family);
    if (!t)
        return WASOCK_E_OUT_OF_MEMORY;
    tcp_request_init(&req, l, PROTO_TCP_ACCEPT);
    p.new_tcp = t;
    err = client_request(l->client, &req, &p);
    if (err != WASOCK_OK) {
        free(t);
        return err;
    }
    if (tcp_adopt_streams(t, &p, input_fd, output_fd) < 0) {
        /* Registered by the reader: unregister before freeing. */
        err = client_reply_violation(l->client, &p);
        pthread_mutex_lock(&l->client->lock);
        tcp_map_remove(l->client, t);
        pthread_mutex_unlock(&l->client->lock);
        free(t);
        return err;
    }
    *conn = t;
    return WASOCK_OK;
}

/* LOCAL_ADDRESS / REMOTE_ADDRESS. */
static wasock_err tcp_address_query(wasock_tcp *s, uint16_t type, wasock_addr *out) {
    struct pending_request p = {0};
    wasock_addr a;
    proto_msg req;
    wasock_err err;

    if (!s || !out)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, type);
    err = client_request(s->client, &req, &p);
    if (err != WASOCK_OK)
        return err;
    pending_release(&p);
    if (client_addr_from_proto(&p.reply.addr, &a) < 0)
        return client_reply_violation(s->client, &p);
    *out = a;
    return WASOCK_OK;
}

wasock_err wasock_tcp_local_address(wasock_tcp *s, wasock_addr *out) {
    return tcp_address_query(s, PROTO_TCP_LOCAL_ADDRESS, out);
}

wasock_err wasock_tcp_remote_address(wasock_tcp *s, wasock_addr *out) {
    return tcp_address_query(s, PROTO_TCP_REMOTE_ADDRESS, out);
}

bool wasock_tcp_is_listening(wasock_tcp *s) {
    return s && s->listening;
}

wasock_family wasock_tcp_address_family(wasock_tcp *s) {
    return s ? s->family : WASOCK_IPV4;
}

/* GET_OPTION: the raw u64 value. */
static wasock_err tcp_get_option(wasock_tcp *s, uint16_t option, uint64_t *value) {
    struct pending_request p = {0};
    proto_msg req;
    wasock_err err;

    if (!s)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, PROTO_TCP_GET_OPTION);
    req.option = option;
    err = client_request(s->client, &req, &p);
    if (err != WASOCK_OK)
        return err;
    pending_release(&p);
    *value = p.reply.value;
    return WASOCK_OK;
}

static wasock_err tcp_set_option(wasock_tcp *s, uint16_t option, uint64_t value) {
    proto_msg req;

    if (!s)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, PROTO_TCP_SET_OPTION);
    req.option = option;
    req.value = value;
    return tcp_simple_request(s, &req);
}

wasock_err wasock_tcp_set_listen_backlog_size(wasock_tcp *s, uint64_t v) {
    return tcp_set_option(s, PROTO_OPT_LISTEN_BACKLOG_SIZE, v);
}

wasock_err wasock_tcp_keep_alive_enabled(wasock_tcp *s, bool *out) {
    uint64_t v;
    wasock_err err;

    if (!out)
        return WASOCK_E_INVALID_ARGUMENT;
    err = tcp_get_option(s, PROTO_OPT_KEEP_ALIVE_ENABLED, &v);
    if (err == WASOCK_OK)
        *out = v != 0;
    return err;
}

wasock_err wasock_tcp_set_keep_alive_enabled(wasock_tcp *s, bool v) {
    return tcp_set_option(s, PROTO_OPT_KEEP_ALIVE_ENABLED, v ? 1 : 0);
}

wasock_err wasock_tcp_keep_alive_idle_time(wasock_tcp *s, uint64_t *ns) {
    if (!ns)
        return WASOCK_E_INVALID_ARGUMENT;
    return tcp_get_option(s, PROTO_OPT_KEEP_ALIVE_IDLE_TIME, ns);
}

wasock_err wasock_tcp_set_keep_alive_idle_time(wasock_tcp *s, uint64_t ns) {
    return tcp_set_option(s, PROTO_OPT_KEEP_ALIVE_IDLE_TIME, ns);
}

wasock_err wasock_tcp_keep_alive_interval(wasock_tcp *s, uint64_t *ns) {
    if (!ns)
        return WASOCK_E_INVALID_ARGUMENT;
    return tcp_get_option(s, PROTO_OPT_KEEP_ALIVE_INTERVAL, ns);
}

wasock_err wasock_tcp_set_keep_alive_interval(wasock_tcp *s, uint64_t ns) {
    return tcp_set_option(s, PROTO_OPT_KEEP_ALIVE_INTERVAL, ns);
}

wasock_err wasock_tcp_keep_alive_count(wasock_tcp *s, uint32_t *out) {
    uint64_t v;
    wasock_err err;

    if (!out)
        return WASOCK_E_INVALID_ARGUMENT;
    err = tcp_get_option(s, PROTO_OPT_KEEP_ALIVE_COUNT, &v);
    if (err == WASOCK_OK)
        *out = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return err;
}

wasock_err wasock_tcp_set_keep_alive_count(wasock_tcp *s, uint32_t v) {
    return tcp_set_option(s, PROTO_OPT_KEEP_ALIVE_COUNT, v);
}

wasock_err wasock_tcp_hop_limit(wasock_tcp *s, uint8_t *out) {
    uint64_t v;
    wasock_err err;

    if (!out)
        return WASOCK_E_INVALID_ARGUMENT;
    err = tcp_get_option(s, PROTO_OPT_HOP_LIMIT, &v);
    if (err == WASOCK_OK)
        *out = v > UINT8_MAX ? UINT8_MAX : (uint8_t)v;
    return err;
}

wasock_err wasock_tcp_set_hop_limit(wasock_tcp *s, uint8_t v) {
    return tcp_set_option(s, PROTO_OPT_HOP_LIMIT, v);
}

wasock_err wasock_tcp_receive_buffer_size(wasock_tcp *s, uint64_t *out) {
    if (!out)
        return WASOCK_E_INVALID_ARGUMENT;
    return tcp_get_option(s, PROTO_OPT_RECEIVE_BUFFER_SIZE, out);
}

wasock_err wasock_tcp_set_receive_buffer_size(wasock_tcp *s, uint64_t v) {
    return tcp_set_option(s, PROTO_OPT_RECEIVE_BUFFER_SIZE, v);
}

wasock_err wasock_tcp_send_buffer_size(wasock_tcp *s, uint64_t *out) {
    if (!out)
        return WASOCK_E_INVALID_ARGUMENT;
    return tcp_get_option(s, PROTO_OPT_SEND_BUFFER_SIZE, out);
}

wasock_err wasock_tcp_set_send_buffer_size(wasock_tcp *s, uint64_t v) {
    return tcp_set_option(s, PROTO_OPT_SEND_BUFFER_SIZE, v);
}

bool wasock_tcp_ready(wasock_tcp *s) {
    bool ready;

    if (!s)
        return false;
    pthread_mutex_lock(&s->client->lock);
    ready = s->ready;
    pthread_mutex_unlock(&s->client->lock);
    return ready;
}

wasock_err wasock_tcp_stream_error(wasock_tcp *s) {
    wasock_err err;

    if (!s)
        return WASOCK_E_INVALID_ARGUMENT;
    pthread_mutex_lock(&s->client->lock);
    err = s->stream_error;
    pthread_mutex_unlock(&s->client->lock);
    return err;
}

/* Replaces fd in place with a read-only /dev/null: reads see EOF at once,
 * writes fail with EBADF, poll reports it ready, and the descriptor number
 * stays valid in the runtime's poll set. Closing the old open file is what
 * tells the daemon's relay that this side of the pipe is gone. */
static wasock_err stream_replace_with_null(int fd) {
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r;

    if (null_fd < 0)
        return (errno == EMFILE || errno == ENFILE) ? WASOCK_E_NEW_SOCKET_LIMIT : WASOCK_E_UNKNOWN;
    do {
        r = dup3(null_fd, fd, O_CLOEXEC);
    } while (r < 0 && (errno == EINTR || errno == EBUSY));
    close(null_fd);
    return r < 0 ? WASOCK_E_UNKNOWN : WASOCK_OK;
}

wasock_err wasock_tcp_shutdown(wasock_tcp *s, wasock_shutdown how) {
    bool receive = how == WASOCK_SHUTDOWN_RECEIVE || how == WASOCK_SHUTDOWN_BOTH;
    bool send_side = how == WASOCK_SHUTDOWN_SEND || how == WASOCK_SHUTDOWN_BOTH;
    bool shared = s && s->input_fd == s->output_fd;
    proto_msg req;
    wasock_err err = WASOCK_OK;

    if (!s || (!receive && !send_side))
        return WASOCK_E_INVALID_ARGUMENT;
    /* A descriptor shared by both directions can only be replaced when both
     * end; for one direction the daemon's shutdown of its side is enough. */
    if (receive && s->input_fd >= 0 && (!shared || send_side))
        err = stream_replace_with_null(s->input_fd);
    if (err == WASOCK_OK && send_side && s->output_fd >= 0 && !shared)
        err = stream_replace_with_null(s->output_fd);
    if (err != WASOCK_OK)
        return err;
    tcp_request_init(&req, s, PROTO_TCP_SHUTDOWN);
    req.how = (uint8_t)(how == WASOCK_SHUTDOWN_RECEIVE ? PROTO_SHUT_RECEIVE
                        : how == WASOCK_SHUTDOWN_SEND  ? PROTO_SHUT_SEND
                                                       : PROTO_SHUT_BOTH);
    return tcp_simple_request(s, &req);
}

void wasock_tcp_drop(wasock_tcp *s) {
    wasock_client *c;
    bool broken;

    if (!s)
        return;
    c = s->client;
    /* Unregistered first, so events that race with the drop are ignored. */
    pthread_mutex_lock(&c->lock);
    tcp_map_remove(c, s);
    broken = c->broken;
    pthread_mutex_unlock(&c->lock);

    close_if_open(s->input_fd);
    if (s->output_fd != s->input_fd)
        close_if_open(s->output_fd);
    if (!broken) {
        proto_msg req;

        /* The outcome does not matter to the caller: the handle is gone
         * either way, and a daemon that went away closed the socket. */
        tcp_request_init(&req, s, PROTO_TCP_DROP);
        (void)tcp_simple_request(s, &req);
    }
    free(s);
}

/* Waits until s's pollable is ready (or the client breaks). */
static wasock_err tcp_wait_ready(wasock_tcp *s) {
    wasock_client *c = s->client;
    int r;

    pthread_mutex_lock(&c->lock);
    r = client_wait_locked(c, tcp_is_ready, s, -1);
    pthread_mutex_unlock(&c->lock);
    return r < 0 ? WASOCK_E_DAEMON : WASOCK_OK;
}

/* The second half of the 0.3 conveniences: waits for readiness and finishes
 * op. The reader role is taken only for one read at a time, so other
 * threads' replies keep flowing while this one waits for the network. */
static wasock_err tcp_finish_when_ready(wasock_tcp *s, uint8_t op) {
    for (;;) {
        wasock_err err = tcp_wait_ready(s);

        if (err != WASOCK_OK)
            return err;
        err = tcp_finish(s, op, NULL, NULL);
        if (err != WASOCK_E_WOULD_BLOCK)
            return err;
        /* Ready but still in progress: wait for the next news from the
         * daemon instead of asking again at once. */
        err = wasock_client_wait(s->client, -1);
        if (err != WASOCK_OK)
            return err;
    }
}

wasock_err wasock_tcp_bind(wasock_tcp *s, const wasock_addr *local) {
    wasock_err err = wasock_tcp_start_bind(s, local);

    return err != WASOCK_OK ? err : tcp_finish_when_ready(s, PROTO_OP_BIND);
}

wasock_err wasock_tcp_connect(wasock_tcp *s, const wasock_addr *remote) {
    wasock_err err = wasock_tcp_start_connect(s, remote);

    return err != WASOCK_OK ? err : tcp_finish_when_ready(s, PROTO_OP_CONNECT);
}

wasock_err wasock_tcp_listen(wasock_tcp *s) {
    wasock_err err = wasock_tcp_start_listen(s);

    return err != WASOCK_OK ? err : tcp_finish_when_ready(s, PROTO_OP_LISTEN);
}

/* TCP_STREAM: one descriptor for one direction, the caller's from now on. */
static wasock_err tcp_take_stream(wasock_tcp *s, uint8_t direction, int *fd) {
    struct pending_request p = {0};
    proto_msg req;
    wasock_err err;

    if (!s || !fd)
        return WASOCK_E_INVALID_ARGUMENT;
    tcp_request_init(&req, s, PROTO_TCP_STREAM);
    req.direction = direction;
    err = client_request(s->client, &req, &p);
    if (err != WASOCK_OK)
        return err;
    if (p.nfds != 1)
        return client_reply_violation(s->client, &p);
    *fd = p.fds[0];
    return WASOCK_OK;
}

wasock_err wasock_tcp_send(wasock_tcp *s, int *output_fd) {
    return tcp_take_stream(s, PROTO_DIR_SEND, output_fd);
}

wasock_err wasock_tcp_receive(wasock_tcp *s, int *input_fd) {
    return tcp_take_stream(s, PROTO_DIR_RECEIVE, input_fd);
}

/* ------------------------------------------------- for udp.c and resolve.c */

wasock_err client_transact(wasock_client *c, proto_msg *req, client_object *new_object,
                           proto_msg *reply, int *fds, unsigned max_fds, unsigned *nfds) {
    struct pending_request p = {0};
    wasock_err err;

    p.new_object = new_object;
    err = client_request(c, req, &p);
    if (err != WASOCK_OK)
        return err;
    if (p.nfds > max_fds) {
        /* Registered by the reader: unregister before reporting. */
        if (new_object)
            client_object_unregister(c, new_object);
        return client_reply_violation(c, &p);
    }
    *reply = p.reply;
    if (nfds)
        *nfds = p.nfds;
    for (unsigned i = 0; i < p.nfds; i++)
        fds[i] = p.fds[i];
    p.nfds = 0;
    return WASOCK_OK;
}

void client_break_protocol(wasock_client *c) {
    pthread_mutex_lock(&c->lock);
    client_break(c);
    pthread_mutex_unlock(&c->lock);
}

bool client_is_broken(wasock_client *c) {
    bool broken;

    pthread_mutex_lock(&c->lock);
    broken = c->broken;
    pthread_mutex_unlock(&c->lock);
    return broken;
}

void client_lock(wasock_client *c) {
    pthread_mutex_lock(&c->lock);
}

void client_unlock(wasock_client *c) {
    pthread_mutex_unlock(&c->lock);
}

wasock_err client_wait_until(wasock_client *c, client_condition *condition, const void *arg,
                             int timeout_ms) {
    int r;

    pthread_mutex_lock(&c->lock);
    r = client_wait_locked(c, condition, arg, deadline_after(timeout_ms));
    pthread_mutex_unlock(&c->lock);
    if (r == -ETIMEDOUT)
        return WASOCK_E_TIMEOUT;
    return r < 0 ? WASOCK_E_DAEMON : WASOCK_OK;
}
