/* wasock.c — libwasock: the connection to wasockd and every TCP call.
 *
 * Each public call encodes one request frame, queues it, and waits for the
 * reply with the same id. Several threads may share one client; a mutex
 * guards the client's state and three roles are handed between them:
 * - the sender writes the queued frames. Frames are appended to an output
 *   buffer under the lock; whoever appends while nobody sends becomes the
 *   sender and writes everything queued (its own frame and those other
 *   threads append meanwhile) in as few send(2) calls as possible, from a
 *   second buffer so appending never waits for a write.
 * - the reader reads the socket, owns the read buffer and the queue of
 *   received descriptors, and dispatches every complete frame: replies into
 *   the waiting callers' slots, events to the resources.
 * - everyone else sleeps on a futex word of its own. The reader wakes
 *   exactly the callers whose replies arrived (after releasing the lock, so
 *   they return without touching it), and a thread that leaves a role with
 *   work left wakes one sleeper to take it over ("duty").
 * Requests whose outcome cannot matter (TCP_DROP) are sent without waiting:
 * their replies carry ids from a separate space and are counted off when
 * they arrive. The stream is ordered, so later requests see the drop first.
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
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
 * arrives); four frames' worth lets one read pick up the replies of many
 * pipelined requests (a typical reply is under 40 bytes) at once. */
#define CLIENT_READ_BUFFER_SIZE (4 * PROTO_MAX_FRAME)

/* Each of the two output buffers: room for at least two frames of any size
 * and for a few hundred typical requests (about 20 bytes each), which is
 * what many threads append while one send(2) is under way. */
#define CLIENT_OUTPUT_BUFFER_SIZE (2 * PROTO_MAX_FRAME)

/* Rounds (one send(2) of everything queued) a sender makes before it hands
 * the role to a sleeping thread, so one caller is not kept writing other
 * threads' frames for long while its own reply has arrived. */
#define CLIENT_SEND_ROUNDS_MAX 4

/* Requests sent without waiting for their reply (drops) that may be
 * outstanding at once. Their replies queue in the daemon until some thread
 * reads; the bound keeps that under the daemon's output high-water mark (a
 * drop reply is 14 bytes), so a thread that only drops can never make the
 * daemon stop reading. Beyond it, a drop waits for its reply. */
#define CLIENT_UNACKED_MAX 256

/* Request ids: ordinary requests count up in the low 31 bits; requests
 * sent without waiting carry this bit, so their replies are told apart by
 * id alone. */
#define CLIENT_UNACKED_ID_BIT 0x80000000u

/* Buckets of the pending-request map (a power of two). Ids come from a
 * counter, so consecutive requests land in consecutive buckets: with up to
 * this many requests in flight a lookup touches one entry. */
#define CLIENT_PENDING_BUCKETS 64

/* Times a thread about to sleep yields the processor first, looking for
 * its wakeup in between. */
#define CLIENT_SPIN_YIELDS 50

/* How long the reader keeps looking for a reply (yielding in between)
 * before it sleeps in poll(2): longer than a round trip through a busy
 * daemon, short enough that a wait for the network costs little. */
#define CLIENT_READ_SPIN_NS 50000

/* Wakeups the reader collects while dispatching one read, to issue after
 * releasing the lock; more are issued at once, under the lock. */
#define CLIENT_WAKE_BATCH 128

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
    /* Handoff (the policy passed the connected socket itself): the socket,
     * owned by this object, on which shutdown, options and addresses are
     * answered locally; -1 otherwise (see client-internal.h). */
    int handoff_fd;
    /* Protocol 2: the connect's outcome pushed by EV_CONNECTED (written by
     * the reader under the lock), so finish-connect needs no round trip.
     * The pushed descriptors are owned by this object until adopted. */
    bool connect_announced;
    wasock_err connect_result;
    int pushed_fds[PROTO_MAX_FDS_PER_FRAME];
    unsigned pushed_nfds;
    wasock_tcp *map_next; /* chain in the client's handle map */
};

/* A thread that may sleep in the client: the owner of a pending request, or
 * a "watcher" waiting for any progress (wasock_client_wait, readiness). */
struct waiter {
    _Atomic uint32_t wake_seq; /* futex word: bumped under the lock to wake the owner */
    bool sleeping;             /* linked in the client's sleepers (guarded by the lock) */
    bool watcher;              /* woken after every dispatched batch */
    _Atomic bool duty;         /* woken to take over a role: must look under the lock */
    _Atomic bool in_kernel;    /* about to sleep in futex(2): a wake needs the system call */
    struct waiter *prev_sleeper, *next_sleeper;
};

/* One request waiting for its reply. Lives on the caller's stack and is
 * linked into the client's pending map from before the request is queued
 * until the reader has delivered the reply (or the caller gives up). */
struct pending_request {
    struct waiter waiter;
    uint32_t id;
    uint16_t reply_type;
    bool linked;       /* in the pending map (guarded by the lock) */
    _Atomic bool done; /* the reply is in `reply` (and its descriptors in fds) */
    proto_msg reply;
    int fds[PROTO_MAX_FDS_PER_FRAME]; /* owned by the slot's caller once done */
    unsigned nfds;
    /* TCP_CREATE and TCP_ACCEPT: the object that becomes the new socket. The
     * reader registers it under the reply's new_handle the moment the reply
     * is dispatched, so events for the new handle that follow are not lost. */
    wasock_tcp *new_tcp;
    /* The same for UDP sockets and lookups (client-internal.h). */
    client_object *new_object;
    struct pending_request *bucket_next, **bucket_link;
};

struct wasock_client {
    pthread_mutex_t lock; /* guards everything below except the roles' own fields */
    int fd;
    int wasi_version;
    unsigned protocol_version; /* negotiated in HELLO */
    uint64_t session;
    bool broken;         /* the daemon went away or broke the protocol: permanent */
    bool reader_busy;    /* a thread holds the reader role */
    bool sending;        /* a thread holds the sender role */
    bool reader_flushes; /* the reader is waking callers and sends what they queue */
    uint32_t last_request_id;
    uint32_t last_unacked_id;
    unsigned unacked;           /* requests sent without waiting whose replies are due */
    uint64_t frames_dispatched; /* lets wasock_client_wait see that something arrived */
    uint64_t replies_delivered; /* replies handed to waiting callers */
    struct pending_request *pending[CLIENT_PENDING_BUCKETS];
    struct waiter *sleepers; /* threads asleep (or about to be) in the client */
    unsigned sleeping_watchers;

    /* Output: frames are appended to out[out_fill]; the sender writes the
     * other buffer without the lock. */
    uint8_t out[2][CLIENT_OUTPUT_BUFFER_SIZE];
    unsigned out_fill;
    size_t out_length;

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

static int64_t monotonic_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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

/* Sleeps while *word == seen, at most timeout_ms (-1: no limit). Returns
 * early when woken, on a signal, or at once when *word already changed;
 * callers re-check their condition in every case. */
static void futex_sleep(_Atomic uint32_t *word, uint32_t seen, int timeout_ms) {
    struct timespec ts, *tsp = NULL;

    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, seen, tsp, NULL, 0);
}

/* Wakes the thread sleeping on word. The owner may already have returned
 * (it re-checks its condition without waiting to be woken): a wake of a
 * word nobody sleeps on does nothing, and one that meets a later sleeper at
 * the same address is a spurious wakeup, which every sleeper tolerates. */
static void futex_wake_one(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
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

/* ---------------------------------------------------------------- sleepers */

/* Wakeups decided under the lock and issued after releasing it. */
struct wake_list {
    _Atomic uint32_t *words[CLIENT_WAKE_BATCH];
    unsigned count;
};

static void wake_list_flush(struct wake_list *wl) {
    for (unsigned i = 0; i < wl->count; i++)
        futex_wake_one(wl->words[i]);
    wl->count = 0;
}

static void sleeper_link(wasock_client *c, struct waiter *w) {
    w->sleeping = true;
    w->prev_sleeper = NULL;
    w->next_sleeper = c->sleepers;
    if (c->sleepers)
        c->sleepers->prev_sleeper = w;
    c->sleepers = w;
    if (w->watcher)
        c->sleeping_watchers++;
}

static void sleeper_unlink(wasock_client *c, struct waiter *w) {
    if (!w->sleeping)
        return;
    if (w->prev_sleeper)
        w->prev_sleeper->next_sleeper = w->next_sleeper;
    else
        c->sleepers = w->next_sleeper;
    if (w->next_sleeper)
        w->next_sleeper->prev_sleeper = w->prev_sleeper;
    w->sleeping = false;
    if (w->watcher)
        c->sleeping_watchers--;
}

/* Takes w off the sleepers and wakes it: through wl after the lock is
 * released, or at once when wl is NULL or full. Called with the lock. */
static void sleeper_wake(wasock_client *c, struct waiter *w, bool duty, struct wake_list *wl) {
    sleeper_unlink(c, w);
    if (duty)
        atomic_store_explicit(&w->duty, true, memory_order_release);
    /* Sequentially consistent with the sleeper's in_kernel store and its
     * re-read of wake_seq: either it sees the new sequence and does not
     * sleep, or we see in_kernel and wake it. A sleeper still spinning
     * needs no system call. */
    atomic_fetch_add(&w->wake_seq, 1);
    if (!atomic_load(&w->in_kernel))
        return;
    if (wl && wl->count < CLIENT_WAKE_BATCH)
        wl->words[wl->count++] = &w->wake_seq;
    else
        futex_wake_one(&w->wake_seq);
}

/* Wakes every sleeping watcher: something happened that they wait for. */
static void sleepers_wake_watchers(wasock_client *c, struct wake_list *wl) {
    struct waiter *w = c->sleepers;

    while (w && c->sleeping_watchers > 0) {
        struct waiter *next = w->next_sleeper;

        if (w->watcher)
            sleeper_wake(c, w, true, wl);
        w = next;
    }
}

/* Hands a role that was left with work to do to one sleeper. */
static void sleepers_wake_one_for_duty(wasock_client *c, struct wake_list *wl) {
    if (c->sleepers)
        sleeper_wake(c, c->sleepers, true, wl);
}

/* A thread leaving its wait with the reader role free: another thread still
 * waiting must become the reader, or its reply would never be read. */
static void client_hand_off_reading(wasock_client *c) {
    if (!c->reader_busy && c->sleepers)
        sleepers_wake_one_for_duty(c, NULL);
}

/* Sleeps on w until woken or timeout_ms passed. Called with the lock held;
 * releases it while sleeping. Returns true with the lock held again, or
 * false WITHOUT the lock when `done` (may be NULL) was set and nothing else
 * asked this thread to look: the common case of a reply delivered by the
 * reader, which then needs no lock at all. */
static bool waiter_sleep(wasock_client *c, struct waiter *w, _Atomic bool *done, int timeout_ms) {
    uint32_t seen = atomic_load_explicit(&w->wake_seq, memory_order_relaxed);

    sleeper_link(c, w);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < CLIENT_SPIN_YIELDS; i++) {
        if (atomic_load_explicit(&w->wake_seq, memory_order_acquire) != seen)
            break;
        sched_yield();
    }
    atomic_store(&w->in_kernel, true);
    if (atomic_load(&w->wake_seq) == seen)
        futex_sleep(&w->wake_seq, seen, timeout_ms);
    atomic_store_explicit(&w->in_kernel, false, memory_order_relaxed);
    (void)atomic_load_explicit(&w->wake_seq, memory_order_acquire); /* pairs with the waker */
    if (done && atomic_load_explicit(done, memory_order_acquire) &&
        !atomic_load_explicit(&w->duty, memory_order_acquire))
        return false;
    pthread_mutex_lock(&c->lock);
    sleeper_unlink(c, w);
    atomic_store_explicit(&w->duty, false, memory_order_relaxed);
    return true;
}

/* ----------------------------------------------------------- broken state */

/* Puts the client into the broken state for good and wakes every sleeper.
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
    c->out_length = 0;
    while (c->sleepers)
        sleeper_wake(c, c->sleepers, true, NULL);
}

/* ------------------------------------------------------------- pending map */

static struct pending_request **pending_bucket(wasock_client *c, uint32_t id) {
    return &c->pending[id & (CLIENT_PENDING_BUCKETS - 1)];
}

static struct pending_request *pending_find(wasock_client *c, uint32_t id) {
    for (struct pending_request *p = *pending_bucket(c, id); p; p = p->bucket_next)
        if (p->id == id)
            return p;
    return NULL;
}

static void pending_link(wasock_client *c, struct pending_request *p) {
    struct pending_request **head = pending_bucket(c, p->id);

    p->bucket_next = *head;
    if (*head)
        (*head)->bucket_link = &p->bucket_next;
    p->bucket_link = head;
    *head = p;
    p->linked = true;
}

static void pending_unlink(struct pending_request *p) {
    if (!p->linked)
        return;
    *p->bucket_link = p->bucket_next;
    if (p->bucket_next)
        p->bucket_next->bucket_link = p->bucket_link;
    p->linked = false;
}

/* ------------------------------------------------------------- dispatching */

/* Reads the little-endian u16/u32 of a frame header (PROTO_HEADER_SIZE
 * bytes present): the reader looks at type and id before decoding, so a
 * reply is decoded straight into its caller's slot. */
static uint16_t header_u16(const uint8_t *b) {
    return (uint16_t)(b[0] | b[1] << 8);
}

static uint32_t header_u32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Takes the descriptors of a frame that announces nfds of them. Returns 0,
 * or -EPROTO when more are announced than a frame may carry or arrived. */
static int frame_take_fds(wasock_client *c, unsigned nfds, int *fds) {
    if (nfds > PROTO_MAX_FDS_PER_FRAME || nfds > c->fd_queue_length)
        return -EPROTO;
    for (unsigned i = 0; i < nfds; i++)
        fds[i] = fd_queue_pop(c);
    return 0;
}

static void close_fds(const int *fds, unsigned nfds) {
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
}

/* Delivers a reply decoded into its waiting caller's slot p: registers a
 * new socket, hands over the descriptors, unlinks p and marks it done (the
 * caller is woken through wl). Returns 0 or -EPROTO (descriptors closed). */
static int dispatch_reply(wasock_client *c, struct pending_request *p, int *fds, unsigned nfds,
                          struct wake_list *wl) {
    const proto_msg *m = &p->reply;

    if (p->reply_type != m->type)
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
    memcpy(p->fds, fds, nfds * sizeof(int));
    p->nfds = nfds;
    pending_unlink(p);
    c->replies_delivered++;
    atomic_store_explicit(&p->done, true, memory_order_release);
    if (p->waiter.sleeping)
        sleeper_wake(c, &p->waiter, false, wl);
    return 0;

protocol_error:
    close_fds(fds, nfds);
    return -EPROTO;
}

/* A reply to a request sent without waiting (a drop, or a finish-connect
 * whose outcome EV_CONNECTED told): counted off and otherwise ignored,
 * except that the daemon refusing it as malformed means it closes the
 * session. Returns 0 or -EPROTO. */
static int dispatch_unacked_reply(wasock_client *c, const proto_msg *m, unsigned nfds) {
    if (c->unacked == 0 || nfds != 0 ||
        (m->type != (PROTO_TCP_DROP | PROTO_REPLY) &&
         m->type != (PROTO_TCP_FINISH | PROTO_REPLY)) ||
        m->err == PROTO_E_PROTOCOL)
        return -EPROTO;
    c->unacked--;
    return 0;
}

/* EV_CONNECTED for t: the outcome, and in a 0.2 relay session its two
 * stream descriptors (taken over from fds). Returns 0 or -EPROTO. */
static int dispatch_connected(wasock_client *c, wasock_tcp *t, const proto_msg *m, int *fds,
                              unsigned nfds) {
    bool ok = m->result == PROTO_OK;

    if (c->protocol_version < 2 || t->connect_announced || (!ok && nfds != 0) ||
        (nfds != 0 && (nfds != 2 || c->wasi_version != PROTO_WASI_0_2)))
        return -EPROTO;
    t->connect_announced = true;
    t->connect_result = err_from_wire(m->result);
    memcpy(t->pushed_fds, fds, nfds * sizeof(int));
    t->pushed_nfds = nfds;
    t->ready = true;
    return 0;
}

/* Applies an event to its resource; events for handles we do not know (made
 * up, or dropped a moment ago) are ignored, and their descriptors closed.
 * Takes fds (nfds of them). Returns 0 or -EPROTO. */
static int dispatch_event(wasock_client *c, const proto_msg *m, int *fds, unsigned nfds) {
    wasock_tcp *t = tcp_map_find(c, m->handle);

    if (nfds != 0 && (m->type != PROTO_EV_CONNECTED || !t)) {
        close_fds(fds, nfds);
        return m->type == PROTO_EV_CONNECTED ? 0 : -EPROTO;
    }
    if (!t) {
        client_object *o = object_find(c, m->handle);

        if (o && o->on_event)
            o->on_event(o, m);
        return 0;
    }
    switch (m->type) {
    case PROTO_EV_CONNECTED:
        if (dispatch_connected(c, t, m, fds, nfds) < 0) {
            close_fds(fds, nfds);
            return -EPROTO;
        }
        break;
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
    return 0;
}

/* Decodes and handles one whole frame of frame_length bytes. Called by the
 * reader with the lock held. Returns 0, or -EPROTO when the frame breaks
 * the protocol. */
static int dispatch_frame(wasock_client *c, const uint8_t *frame, size_t frame_length,
                          struct wake_list *wl) {
    uint16_t type = header_u16(frame + 4);
    uint32_t id = header_u32(frame + 8);
    struct pending_request *p = NULL;
    int fds[PROTO_MAX_FDS_PER_FRAME];
    proto_msg m;
    int r;

    if ((type & PROTO_REPLY) && (id & CLIENT_UNACKED_ID_BIT) == 0) {
        /* Decoded straight into the waiting caller's slot. */
        p = pending_find(c, id);
        if (!p || proto_decode(frame, frame_length, &p->reply) < 0)
            return -EPROTO;
        if (frame_take_fds(c, p->reply.nfds, fds) < 0)
            return -EPROTO;
        return dispatch_reply(c, p, fds, p->reply.nfds, wl);
    }
    r = proto_decode(frame, frame_length, &m);
    if (r < 0 || frame_take_fds(c, m.nfds, fds) < 0)
        return -EPROTO;
    if (m.type & PROTO_REPLY) {
        close_fds(fds, m.nfds);
        return dispatch_unacked_reply(c, &m, m.nfds);
    }
    if (m.type < PROTO_EVENT_FIRST || m.type > PROTO_EVENT_LAST || m.id != 0) {
        close_fds(fds, m.nfds);
        return -EPROTO;
    }
    return dispatch_event(c, &m, fds, m.nfds);
}

/* Dispatches every complete frame in the read buffer and keeps the partial
 * rest. Called by the reader with the lock held. Returns 0 or -EPROTO. */
static int dispatch_buffered_frames(wasock_client *c, struct wake_list *wl) {
    size_t offset = 0;
    int r = 0;

    while (offset < c->read_length) {
        size_t frame_length = 0;

        r = proto_frame_ready(c->read_buffer + offset, c->read_length - offset, &frame_length);
        if (r <= 0)
            break;
        r = dispatch_frame(c, c->read_buffer + offset, frame_length, wl);
        if (r < 0)
            break;
        offset += frame_length;
        c->frames_dispatched++;
    }
    memmove(c->read_buffer, c->read_buffer + offset, c->read_length - offset);
    c->read_length -= offset;
    return r < 0 ? -EPROTO : 0;
}

/* Reads once into the read buffer, queueing the descriptors that came with
 * the bytes; waits up to timeout_ms (0: not at all, -1: forever) for the
 * socket to be readable when nothing is there yet. Called by the reader
 * WITHOUT the lock. Returns the bytes read, 0 when nothing arrived
 * (timeout, EINTR), or a negative errno when the connection is finished
 * (-ECONNRESET for EOF, -EPROTO for bad control data). */
static ssize_t reader_receive(wasock_client *c, int timeout_ms) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS_PER_FRAME)];
    } control;
    struct iovec iov;
    struct msghdr msg;
    int64_t spin_until_ns = 0;
    ssize_t n;
    int r;

    /* dispatch_buffered_frames leaves less than one frame behind. */
    if (c->read_length >= sizeof(c->read_buffer))
        return -EPROTO;

    iov.iov_base = c->read_buffer + c->read_length;
    iov.iov_len = sizeof(c->read_buffer) - c->read_length;
    for (;;) {
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        /* Try first: under load the bytes are usually there already, and a
         * poll(2) before every read would double the system calls. */
        n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n >= 0)
            break;
        if (errno == EINTR)
            continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || timeout_ms == 0)
            break;
        /* A reply usually takes a few microseconds: look again for a
         * moment before sleeping in poll(2), since waking a sleeping
         * processor costs more than the whole round trip. */
        if (spin_until_ns == 0)
            spin_until_ns = monotonic_ns() + CLIENT_READ_SPIN_NS;
        else if (monotonic_ns() >= spin_until_ns)
            break;
        sched_yield();
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && timeout_ms != 0) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

        r = poll(&pfd, 1, timeout_ms);
        if (r < 0)
            return errno == EINTR ? 0 : -errno;
        if (r == 0)
            return 0;
        do {
            memset(&msg, 0, sizeof(msg));
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof(control.buf);
            n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        } while (n < 0 && errno == EINTR);
    }
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

static void client_send_queued(wasock_client *c);

/* Takes the reader role, reads once (waiting up to timeout_ms), dispatches
 * what is complete, gives the role back and wakes the callers whose
 * replies arrived and every watcher. own is the reading caller's pending
 * request (NULL when a watcher reads). Called and returns with the lock
 * held; the lock is released while reading and while waking. Returns the
 * bytes read (0: nothing arrived); a failure breaks the client. */
static ssize_t reader_read_and_dispatch(wasock_client *c, int timeout_ms,
                                        const struct pending_request *own) {
    struct wake_list wl;
    uint64_t delivered;
    ssize_t n;

    wl.count = 0;
    delivered = c->replies_delivered;
    c->reader_busy = true;
    pthread_mutex_unlock(&c->lock);
    n = reader_receive(c, timeout_ms);
    pthread_mutex_lock(&c->lock);
    if (n < 0)
        client_break(c);
    else if (n > 0 && !c->broken && dispatch_buffered_frames(c, &wl) < 0)
        client_break(c);
    if (c->broken)
        fd_queue_close_all(c);
    if (n > 0 && c->sleeping_watchers > 0)
        sleepers_wake_watchers(c, &wl);
    /* Replies for other callers than the reading one (own is the reader's
     * slot, NULL for a watcher), which was not done before this read. */
    delivered = c->replies_delivered - delivered;
    if (own != NULL && atomic_load_explicit(&own->done, memory_order_relaxed))
        delivered--;
    if (wl.count > 0 || delivered > 0) {
        /* The callers whose replies arrived usually queue their next
         * request right away: they leave the writing to us while we wake
         * the others and give them the processor once, and one send(2)
         * below carries all of them. */
        c->reader_flushes = true;
        pthread_mutex_unlock(&c->lock);
        wake_list_flush(&wl);
        sched_yield();
        pthread_mutex_lock(&c->lock);
        c->reader_flushes = false;
        if (c->out_length > 0 && !c->sending && !c->broken)
            client_send_queued(c);
    }
    c->reader_busy = false;
    return n < 0 ? 0 : n;
}

/* ------------------------------------------------------------- sending */

/* Writes len bytes, waiting only if the caller made our descriptor
 * non-blocking. Called WITHOUT the lock by the sender. 0 or -errno. */
static int send_all(int fd, const uint8_t *buf, size_t len) {
    size_t off = 0;

    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);

        if (n >= 0) {
            off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};

            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -errno;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Takes the sender role and writes what is queued, round after round, until
 * nothing is left; after CLIENT_SEND_ROUNDS_MAX rounds a sleeping thread
 * takes the rest over. Called and returns with the lock held (released while
 * writing) when frames are queued and nobody sends. */
static void client_send_queued(wasock_client *c) {
    c->sending = true;
    for (unsigned round = 0; c->out_length > 0 && !c->broken; round++) {
        const uint8_t *buf = c->out[c->out_fill];
        size_t len = c->out_length;
        int r;

        if (round >= CLIENT_SEND_ROUNDS_MAX && c->sleepers) {
            sleepers_wake_one_for_duty(c, NULL);
            break;
        }
        c->out_fill ^= 1;
        c->out_length = 0;
        if (c->sleeping_watchers > 0)
            sleepers_wake_watchers(c, NULL); /* one may wait for room */
        pthread_mutex_unlock(&c->lock);
        r = send_all(c->fd, buf, len);
        pthread_mutex_lock(&c->lock);
        if (r < 0)
            client_break(c);
    }
    c->sending = false;
}

/* Waits, as a watcher, until the output buffer has room for one more frame
 * of any size. Called with the lock held. Returns 0, or -EPIPE when the
 * client broke meanwhile. */
static int client_wait_output_room(wasock_client *c) {
    struct waiter w = {.watcher = true};

    while (!c->broken && c->out_length + PROTO_MAX_FRAME > CLIENT_OUTPUT_BUFFER_SIZE) {
        if (!c->sending)
            client_send_queued(c);
        else
            waiter_sleep(c, &w, NULL, -1);
    }
    return c->broken ? -EPIPE : 0;
}

/* Encodes req with the given id at the end of the output buffer. Called
 * with the lock held. Returns 0, -EINVAL when req cannot be encoded, or
 * -EPIPE when the client is (or became) broken. */
static int client_queue_frame(wasock_client *c, proto_msg *req, uint32_t id) {
    ssize_t len;

    if (client_wait_output_room(c) < 0)
        return -EPIPE;
    req->id = id;
    req->nfds = 0;
    len = proto_encode(req, c->out[c->out_fill] + c->out_length,
                       CLIENT_OUTPUT_BUFFER_SIZE - c->out_length);
    if (len < 0)
        return -EINVAL;
    c->out_length += (size_t)len;
    return 0;
}

/* ------------------------------------------------------------- requests */

static uint32_t client_next_request_id(wasock_client *c) {
    do {
        c->last_request_id = (c->last_request_id + 1) & ~CLIENT_UNACKED_ID_BIT;
    } while (c->last_request_id == 0 || pending_find(c, c->last_request_id));
    return c->last_request_id;
}

/* Releases what a collected reply still holds (its descriptors). */
static void pending_release(struct pending_request *p) {
    for (unsigned i = 0; i < p->nfds; i++)
        close_if_open(p->fds[i]);
    p->nfds = 0;
}

/* Waits for p's reply: sends queued frames when nobody does, reads when
 * nobody does, sleeps otherwise. Called with the lock held; returns WITHOUT
 * it. Returns 0 once the reply is in p, -EPIPE when the client is or became
 * broken, -ETIMEDOUT when the deadline (monotonic ms, -1: none) passed. On
 * failure p is unlinked. The reply is checked first, so a reply that arrived
 * before the client broke is still delivered. */
static int client_wait_reply(wasock_client *c, struct pending_request *p, int64_t deadline) {
    bool tried = false;
    int r;

    for (;;) {
        int timeout;

        /* Frames nobody sends first: a thread woken for that duty may find
         * its own reply already delivered. */
        if (c->out_length > 0 && !c->sending && !c->reader_flushes && !c->broken) {
            client_send_queued(c);
            continue;
        }
        if (atomic_load_explicit(&p->done, memory_order_acquire)) {
            r = 0;
            break;
        }
        if (c->broken) {
            r = -EPIPE;
            break;
        }
        timeout = remaining_ms(deadline);
        if (tried && timeout == 0) {
            r = -ETIMEDOUT;
            break;
        }
        tried = true;
        if (!c->reader_busy)
            reader_read_and_dispatch(c, timeout, p);
        else if (!waiter_sleep(c, &p->waiter, &p->done, timeout))
            return 0; /* delivered; the reader handles its own hand-off */
    }
    pending_unlink(p);
    client_hand_off_reading(c);
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* Queues req (type and fields set; the id is assigned here) and waits for
 * its reply until deadline (monotonic ms, -1: none). p is the caller's slot;
 * p->new_tcp may be set before the call (see struct pending_request).
 * Returns 0 with the reply in p->reply and its descriptors in p->fds (the
 * caller owns them and releases them with pending_release), -EINVAL when req
 * cannot be encoded, -EPIPE when the client is or became broken, or
 * -ETIMEDOUT. On failure p holds no descriptors. */
static int client_call(wasock_client *c, proto_msg *req, struct pending_request *p,
                       int64_t deadline) {
    int r;

    atomic_init(&p->done, false);
    atomic_init(&p->waiter.wake_seq, 0);
    atomic_init(&p->waiter.duty, false);
    atomic_init(&p->waiter.in_kernel, false);
    p->waiter.sleeping = false;
    p->waiter.watcher = false;
    p->linked = false;
    p->nfds = 0;
    p->reply_type = (uint16_t)(req->type | PROTO_REPLY);

    pthread_mutex_lock(&c->lock);
    if (c->broken) {
        pthread_mutex_unlock(&c->lock);
        return -EPIPE;
    }
    p->id = client_next_request_id(c);
    r = client_queue_frame(c, req, p->id);
    if (r < 0) {
        pthread_mutex_unlock(&c->lock);
        return r;
    }
    /* Linked before sending: another thread may read the reply first. */
    pending_link(c, p);
    r = client_wait_reply(c, p, deadline);
    if (r == 0 && p->reply.err == PROTO_E_PROTOCOL) {
        /* The daemon refused our frame as malformed and closes the session. */
        pthread_mutex_lock(&c->lock);
        client_break(c);
        pthread_mutex_unlock(&c->lock);
        r = -EPIPE;
    }
    if (r < 0)
        pending_release(p);
    return r;
}

/* Queues req without waiting for its reply (see CLIENT_UNACKED_MAX), and
 * sends it unless another thread is sending. Returns 0, or -EAGAIN when too
 * many such requests are outstanding (the caller then waits for this one),
 * -EPIPE when broken, -EINVAL when req cannot be encoded. */
static int client_send_unacked(wasock_client *c, proto_msg *req) {
    int r;

    pthread_mutex_lock(&c->lock);
    if (c->broken) {
        r = -EPIPE;
    } else if (c->unacked >= CLIENT_UNACKED_MAX) {
        r = -EAGAIN;
    } else {
        uint32_t id = (c->last_unacked_id + 1) & ~CLIENT_UNACKED_ID_BIT;

        if (id == 0)
            id = 1;
        r = client_queue_frame(c, req, id | CLIENT_UNACKED_ID_BIT);
        if (r == 0) {
            c->last_unacked_id = id;
            c->unacked++;
            if (!c->sending && !c->reader_flushes)
                client_send_queued(c);
        }
    }
    pthread_mutex_unlock(&c->lock);
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

typedef client_condition wait_condition;

/* Waits as a watcher until condition(c, arg) holds: sends queued frames
 * when nobody does, reads the socket itself when no other thread does, and
 * otherwise sleeps until the reader has dispatched a batch. Called and
 * returns with the lock held. Returns 0 when the condition holds, -EPIPE
 * when the client is (or became) broken, -ETIMEDOUT when the deadline
 * (monotonic ms, -1: none) passed. The condition is checked first, so a
 * change that arrived before the client broke is still seen. */
static int client_wait_locked(wasock_client *c, wait_condition *condition, const void *arg,
                              int64_t deadline) {
    struct waiter w = {.watcher = true};
    bool tried = false;
    int r;

    for (;;) {
        int timeout;

        if (c->out_length > 0 && !c->sending && !c->reader_flushes && !c->broken) {
            client_send_queued(c);
            continue;
        }
        if (condition(c, arg)) {
            r = 0;
            break;
        }
        if (c->broken) {
            r = -EPIPE;
            break;
        }
        timeout = remaining_ms(deadline);
        if (tried && timeout == 0) {
            r = -ETIMEDOUT;
            break;
        }
        tried = true;
        if (!c->reader_busy)
            reader_read_and_dispatch(c, timeout, NULL);
        else
            waiter_sleep(c, &w, NULL, timeout);
    }
    client_hand_off_reading(c);
    return r;
}

static bool frames_dispatched_since(wasock_client *c, const void *arg) {
    return c->frames_dispatched != *(const uint64_t *)arg;
}

static bool tcp_is_ready(wasock_client *c, const void *arg) {
    (void)c;
    return ((const wasock_tcp *)arg)->ready;
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
            close_if_open(t->handoff_fd);
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
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Allocates a client with its locks and an empty handle map; no socket yet.
 * Returns NULL when out of memory. */
static wasock_client *client_alloc(int wasi_version) {
    pthread_mutexattr_t attr;
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
    /* The lock is held for microseconds at a time: a thread that finds it
     * taken spins briefly before sleeping, which saves a futex round trip
     * when many threads share the client. */
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&c->lock, &attr);
    pthread_mutexattr_destroy(&attr);
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

/* The highest protocol version to offer: PROTO_VERSION_MAX, or lower when
 * WASOCK_PROTOCOL_MAX says so (documented in wasock.h: to compare the
 * versions, or to keep the version 1 behaviour). */
static uint16_t client_protocol_version_max(void) {
    const char *text = secure_getenv("WASOCK_PROTOCOL_MAX");
    char *end;
    unsigned long v;

    if (!text || !*text)
        return PROTO_VERSION_MAX;
    v = strtoul(text, &end, 10);
    if (*end != '\0' || v < PROTO_VERSION_MIN || v > PROTO_VERSION_MAX)
        return PROTO_VERSION_MAX;
    return (uint16_t)v;
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
    req.version_min = PROTO_VERSION_MIN;
    req.version_max = client_protocol_version_max();
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
                   (int)req.version_min, (int)req.version_max, p.reply.detail[0] ? ": " : "",
                   p.reply.detail);
        return WASOCK_E_DAEMON;
    default: {
        const char *name = proto_err_name(p.reply.err);

        open_error(o, "the daemon at %s refused the handshake: %s%s%s", path,
                   name ? name : "unknown error", p.reply.detail[0] ? ": " : "", p.reply.detail);
        return WASOCK_E_DAEMON;
    }
    }
    if (p.reply.version < req.version_min || p.reply.version > req.version_max) {
        open_error(o, "the daemon at %s chose protocol version %u, which was not offered", path,
                   (unsigned)p.reply.version);
        return WASOCK_E_DAEMON;
    }
    c->session = p.reply.session;
    c->protocol_version = p.reply.version;
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
        if (reader_read_and_dispatch(c, 0, NULL) == 0)
            break;
    client_hand_off_reading(c);
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
    t->handoff_fd = -1;
    return t;
}

/* A handed-off connection: keeps a duplicate of the socket (its own, so
 * that shutdown replacing a stream descriptor does not lose it) for the
 * calls answered locally. Without one (out of descriptors) those calls go
 * to the daemon, which says NOT_SUPPORTED. */
static void tcp_keep_handoff_socket(wasock_tcp *t, int fd) {
    if (t->handoff_fd < 0)
        t->handoff_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/* Takes the stream descriptors of a successful finish-connect / accept reply
 * into t (0.2 sessions) and reports them through the optional out pointers.
 * One descriptor means both directions share it. In a 0.3 session the
 * daemon keeps the streams for TCP_STREAM, and anything sent is closed.
 * Returns 0, or -EPROTO for a 0.2 success without streams. */
/* Makes fds t's 0.2 streams and takes them: two (input, output), or one
 * for both (a handed-off socket). */
static void tcp_set_streams(wasock_tcp *t, const int *fds, unsigned nfds) {
    close_if_open(t->input_fd);
    if (t->output_fd != t->input_fd)
        close_if_open(t->output_fd);
    t->input_fd = fds[0];
    t->output_fd = nfds > 1 ? fds[1] : fds[0];
    if (t->input_fd == t->output_fd && client_fd_is_tcp_socket(t->input_fd))
        tcp_keep_handoff_socket(t, t->input_fd);
}

static void tcp_report_streams(const wasock_tcp *t, int *input_fd, int *output_fd) {
    if (input_fd)
        *input_fd = t->input_fd;
    if (output_fd)
        *output_fd = t->output_fd;
}

/* Takes the stream descriptors EV_CONNECTED pushed for t, if any: returns
 * how many (0..2) were copied to fds, which the caller owns from then on
 * (t no longer does). */
static unsigned tcp_take_pushed_streams(wasock_tcp *t, int *fds) {
    wasock_client *c = t->client;
    unsigned nfds;

    pthread_mutex_lock(&c->lock);
    nfds = t->pushed_nfds;
    memcpy(fds, t->pushed_fds, nfds * sizeof(int));
    t->pushed_nfds = 0;
    pthread_mutex_unlock(&c->lock);
    return nfds;
}

/* The streams of a successful finish-connect or accept reply. A protocol 2
 * finish-connect reply carries none when EV_CONNECTED (always dispatched
 * before the reply) brought them. Returns 0 or -EPROTO. */
static int tcp_adopt_streams(wasock_tcp *t, struct pending_request *p, int *input_fd,
                             int *output_fd) {
    if (t->client->wasi_version == PROTO_WASI_0_2) {
        int pushed[PROTO_MAX_FDS_PER_FRAME];
        unsigned npushed = tcp_take_pushed_streams(t, pushed);

        if (p->nfds != 0 && npushed != 0) {
            close_fds(pushed, npushed);
            return -EPROTO;
        }
        if (p->nfds != 0) {
            tcp_set_streams(t, p->fds, p->nfds);
            p->nfds = 0;
        } else if (npushed != 0) {
            tcp_set_streams(t, pushed, npushed);
        } else {
            return -EPROTO;
        }
    } else {
        pending_release(p);
    }
    tcp_report_streams(t, input_fd, output_fd);
    return 0;
}

/* Protocol 2: finish-connect answered from EV_CONNECTED, without a round
 * trip. The TCP_FINISH still goes to the daemon (to commit the state, in
 * order with everything the caller sends next) but nobody waits for its
 * reply. Returns false when the outcome is not known here yet, or when it
 * is a 0.2 handoff, whose socket only the reply carries. */
static bool tcp_finish_connect_pushed(wasock_tcp *s, wasock_err *result, int *input_fd,
                                      int *output_fd) {
    wasock_client *c = s->client;
    int fds[PROTO_MAX_FDS_PER_FRAME];
    unsigned nfds;
    proto_msg req;
    wasock_err err;
    int r;

    pthread_mutex_lock(&c->lock);
    if (!s->connect_announced || (s->connect_result == WASOCK_OK &&
                                  c->wasi_version == PROTO_WASI_0_2 && s->pushed_nfds == 0)) {
        pthread_mutex_unlock(&c->lock);
        return false;
    }
    /* Answered once: a second finish goes to the daemon (not-in-progress). */
    s->connect_announced = false;
    err = s->connect_result;
    nfds = s->pushed_nfds;
    memcpy(fds, s->pushed_fds, nfds * sizeof(int));
    s->pushed_nfds = 0;
    pthread_mutex_unlock(&c->lock);

    tcp_request_init(&req, s, PROTO_TCP_FINISH);
    req.op = PROTO_OP_CONNECT;
    r = client_send_unacked(c, &req);
    if (r == -EAGAIN) {
        struct pending_request p = {0};

        /* Too many unanswered requests already: wait for this one. */
        if (client_request(c, &req, &p) == WASOCK_E_DAEMON)
            r = -EPIPE;
        else
            r = 0;
        pending_release(&p);
    }
    if (r < 0) {
        close_fds(fds, nfds);
        *result = WASOCK_E_DAEMON;
        return true;
    }
    if (err == WASOCK_OK && nfds != 0)
        tcp_set_streams(s, fds, nfds);
    else
        close_fds(fds, nfds);
    if (err == WASOCK_OK)
        tcp_report_streams(s, input_fd, output_fd);
    *result = err;
    return true;
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
    if (op == PROTO_OP_CONNECT && tcp_finish_connect_pushed(s, &err, input_fd, output_fd))
        return err;
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
    if (s->handoff_fd >= 0)
        return client_handoff_address(s->handoff_fd, type == PROTO_TCP_REMOTE_ADDRESS, out);
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
    if (s->handoff_fd >= 0)
        return client_handoff_get_option(s->handoff_fd, s->family, option, value);
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
    if (s->handoff_fd >= 0)
        return client_handoff_set_option(s->handoff_fd, s->family, option, value);
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
    if (s->handoff_fd >= 0) {
        /* The socket itself: shut it down here. A 0.2 stream descriptor
         * (the shared socket) is replaced only when both directions end. */
        err = client_handoff_shutdown(s->handoff_fd, how);
        if (err == WASOCK_OK && receive && send_side && s->input_fd >= 0)
            err = stream_replace_with_null(s->input_fd);
        return err;
    }
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

    if (!broken) {
        proto_msg req;

        /* The outcome does not matter to the caller: the handle is gone
         * either way, and a daemon that went away closed the socket. So the
         * drop is sent without waiting for its reply, unless too many such
         * replies are due already. */
        tcp_request_init(&req, s, PROTO_TCP_DROP);
        if (client_send_unacked(c, &req) == -EAGAIN)
            (void)tcp_simple_request(s, &req);
    }
    /* The streams close after the drop is sent: bytes written before are in
     * the output stream either way, and a relay that learns of the drop
     * first finishes at once instead of also reacting to the stream's end. */
    close_if_open(s->input_fd);
    if (s->output_fd != s->input_fd)
        close_if_open(s->output_fd);
    close_if_open(s->handoff_fd);
    close_fds(s->pushed_fds, s->pushed_nfds);
    free(s);
}

/* One finish step of a TCP 0.3 convenience, as client_finish_when_ready
 * calls it. */
struct tcp_finish_step {
    wasock_tcp *s;
    uint8_t op;
};

static wasock_err tcp_finish_step_run(void *arg) {
    const struct tcp_finish_step *f = arg;

    return tcp_finish(f->s, f->op, NULL, NULL);
}

static wasock_err tcp_finish_when_ready(wasock_tcp *s, uint8_t op) {
    struct tcp_finish_step f = {.s = s, .op = op};

    return client_finish_when_ready(s->client, tcp_is_ready, s, tcp_finish_step_run, &f);
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
    if (client_fd_is_tcp_socket(*fd))
        tcp_keep_handoff_socket(s, *fd);
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

wasock_err client_finish_when_ready(wasock_client *c, client_condition *ready, const void *arg,
                                    client_finish *finish, void *finish_arg) {
    for (;;) {
        wasock_err err = client_wait_until(c, ready, arg, -1);

        if (err != WASOCK_OK)
            return err;
        err = finish(finish_arg);
        if (err != WASOCK_E_WOULD_BLOCK)
            return err;
        /* Ready but still in progress: wait for the next news from the
         * daemon instead of asking again at once. */
        err = wasock_client_wait(c, -1);
        if (err != WASOCK_OK)
            return err;
    }
}
