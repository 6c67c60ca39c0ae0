/* relay.c — moves the bytes of one connected TCP socket to and from the
 * client's stream descriptors with splice(2), never through a userspace
 * buffer.
 *
 * Download: socket -> pipe D, one splice per chunk; the client reads pipe D.
 * Upload: the client writes its output (pipe U up to protocol 2, one end of
 * a Unix stream socket pair from protocol 3); the relay splices it into a
 * staging pipe of its own and from there into the socket. One descriptor
 * per direction, because closing one is exactly dropping one WASI stream
 * (0.3 hands each direction out as its own descriptor; 0.2 shutdown
 * replaces one direction in place).
 *
 * Why the socket pair and the staging pipe: a splice from a pipe into a TCP
 * socket holds the pipe's lock while the socket takes the bytes (on
 * loopback, while the receiver's side is processed too), and a client
 * writing pipe U waits for that lock; the socket pair has its own buffer
 * and lock, and the staging pipe is the relay's alone, so the client's
 * writes and the socket's sends overlap. Measured with wasock-bench on a
 * 2-processor VM (bulk upload, medians of five): with pipe U spliced
 * straight into the socket the relay moved 1,990 MB/s under cubic
 * congestion control (0.39x direct, 0.42x the textbook TCP->pipe->TCP
 * relay) and about 1,900 MB/s under bbr; with the socket pair and the
 * staging pipe 4,730 MB/s under cubic (0.72x direct) and 1,907 MB/s under
 * bbr in a run whose direct baseline was low (0.68x; the textbook relay
 * 0.61x). A scratch relay, one connection, alternating runs: pipe U direct
 * 2.0-2.3 GB/s, pipe U staged 2.5-3.4 GB/s, socket pair staged 4.2-5.3
 * GB/s, the textbook relay 4.3-5.8 GB/s (cubic). Earlier measurements
 * taken only under bbr, whose pacing caps every loopback relay near 2 GB/s
 * on that machine, had shown no difference. Pipe U stays for clients that
 * speak protocol 1 or 2, whose libwasock took any socket for a handed-off
 * TCP connection.
 *
 * The staging pipe is created with the first upload bytes, so idle and
 * download-only connections hold three descriptors (socket, pipe D's write
 * end, the client output's read end), a busy one five.
 *
 * Trust: the client's descriptors belong to the untrusted client process,
 * which may close them, stop reading, or fill its output at any time; the network peer is
 * untrusted too (resets, urgent data, a window that never opens). The relay
 * never interprets a byte. Every blocking point is a poll on exactly one
 * descriptor, so neither side can make the daemon spin or buffer without
 * bound: in flight per connection is at most the kernel capacity of the
 * client's output (64 KiB for pipe U; the client socket's send buffer, at
 * most net.core.wmem_max, for the socket pair), of the staging pipe and of
 * pipe D (16 buffers each by default; up to one TCP buffer fragment each
 * when spliced from the socket into pipe D; a bulk connection's pipes are
 * enlarged once, within a daemon-wide budget, see RELAY_UPLOAD_PIPE_BYTES).
 *
 * Structure: one watch per descriptor (the socket serves both directions)
 * in an epoll set shared by every relay, a zero-delay timer that reports direction ends from the
 * loop (so end_cb never runs inside a relay_* call), and a linger timer for relay_drop. All handles
 * live in the relay; it is freed from the last close callback. A pipe end's poll handle is closed
 * together with the descriptor, because closing a poll handle whose descriptor number was already
 * reused would unregister the new owner's descriptor from epoll.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

/* Bytes asked of one splice call while a pipe has its default capacity:
 * that capacity, so a single call can fill or drain it. An enlarged pipe is
 * spliced in calls of its own capacity. */
#define RELAY_SPLICE_CHUNK (64 * 1024)

/* Pipe capacities for a connection that moves bulk data (a splice moved a
 * whole chunk), set with F_SETPIPE_SZ from the daemon's side. With 64 KiB
 * pipes the relay reached 0.32x direct TCP upload and 0.95x download on 2
 * processors (wasock-bench, medians of three runs, before the staging pipe);
 * 256 KiB for pipe U gave 0.56x (1 MiB: no better, 0.49-0.59x), and the
 * staging pipe now gets that size; 1 MiB for pipe D gave 1.25x (256 KiB:
 * 1.05x). Each pipe starts at the default and is enlarged once, so idle and
 * chatty connections never pay. Cost: kernel pages, allocated only while
 * bytes are in flight, but the whole capacity counts against the daemon
 * user's pipe budget (fs.pipe-user-pages-soft, 64 MiB by default, which
 * root without CAP_SYS_RESOURCE is subject to, as under the shipped unit):
 * hence the cap below. Kernel buffers are not in the daemon's RSS. */
#define RELAY_UPLOAD_PIPE_BYTES   (256 * 1024)
#define RELAY_DOWNLOAD_PIPE_BYTES (1024 * 1024)

/* Most capacity all enlarged pipes together may add beyond their default:
 * half the default per-user soft limit, so enlarging alone can never push
 * the daemon's user over it (beyond it the kernel gives new pipes two pages,
 * which would slow every later connection). When the budget is used up,
 * further connections keep default pipes. */
#define RELAY_ENLARGED_PIPES_MAX_BYTES (32u * 1024u * 1024u)

/* Splice calls per direction per wakeup before yielding to the loop: with
 * default chunks that is at most 1 MiB (16 MiB with enlarged pipes), so one
 * busy connection cannot starve the others for long (level-triggered polls
 * bring us back at once if more is ready). */
#define RELAY_SPLICES_PER_WAKEUP 16

/* How long a dropped relay may wait for the socket to accept the bytes the
 * client wrote before the drop. Long enough for a slow but live peer to open
 * its window (several retransmission timeouts); short enough that a peer that
 * never reads cannot pin a dropped connection's resources for long. */
#define RELAY_LINGER_MS 10000

/* Unread incoming data at close(2) makes the kernel send a reset, which can
 * destroy our own last bytes still in flight to the peer. Before closing a
 * dropped socket we discard at most this many chunks of incoming data; a
 * peer sending more than that gets the reset it asked for. */
#define RELAY_DRAIN_ROUNDS 16

/* Where the download direction (socket -> pipe D) waits. */
enum download_state {
    DOWNLOAD_WAIT_SOCKET, /* pipe D has room; waiting for the socket readable */
    DOWNLOAD_WAIT_PIPE,   /* pipe D is full; waiting for the client to read */
    DOWNLOAD_ENDED,       /* pipe D's write end is closed; never restarts */
};

/* Where the upload direction (client output -> staging pipe -> socket) waits. */
enum upload_state {
    UPLOAD_WAIT_CLIENT, /* nothing staged; waiting for client bytes */
    UPLOAD_WAIT_SOCKET, /* bytes staged; the socket's send buffer is full */
    UPLOAD_ENDED,       /* the client output's read end is closed; never restarts */
};

/* --- one epoll set for the descriptors of every relay --------------------- */

/* Why not a uv_poll_t per descriptor: libuv probes each new one with
 * epoll_ctl ADD and DEL and sets O_NONBLOCK again, and retries ADD as MOD,
 * which cost about ten system calls per relayed connection, a third of the
 * daemon's work for a short connection. Here a descriptor costs one
 * epoll_ctl when first watched and one per change of interest; closing it
 * removes it from the set (the relay holds the only reference to each of
 * its descriptors' open files), and the set is watched by one uv_poll_t.
 *
 * Events fetched in one batch may name a descriptor a handler of the same
 * batch has closed: its watch then says fd -1 and the event is dropped. The
 * memory stays valid because relays are freed from timer close callbacks,
 * which libuv runs after the poll phase. */
typedef struct relay_watch relay_watch;
typedef void (*relay_watch_cb)(relay *r, int status, int events);

struct relay_watch {
    relay *owner;
    int fd;          /* -1: closed (or never watched) */
    uint32_t wanted; /* EPOLLIN/EPOLLOUT asked for; 0 = none */
    uint32_t in_set; /* what the epoll set has; 0 = not in it */
    relay_watch_cb cb;
};

static struct {
    uv_poll_t poll;
    int epoll_fd; /* -1 when not started */
    bool closing;
} relay_watcher = {.epoll_fd = -1};

/* Readiness of the set: deliver the events. Libuv's conventions are kept
 * for the handlers: an error is a negative status (the watch is stopped
 * until set again), a hang-up is readiness of what was watched. */
static void relay_watcher_on_ready(uv_poll_t *handle, int status, int events) {
    struct epoll_event ready[64];
    int n;

    (void)handle;
    (void)status;
    (void)events;
    do {
        n = epoll_wait(relay_watcher.epoll_fd, ready, 64, 0);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < n; i++) {
        relay_watch *w = ready[i].data.ptr;
        uint32_t got = ready[i].events;

        if (w->fd < 0) {
            continue; /* closed by an earlier handler of this batch */
        }
        if (w->wanted == 0) {
            /* No longer wanted (stopping costs nothing until now): leave. */
            (void)epoll_ctl(relay_watcher.epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
            w->in_set = 0;
            continue;
        }
        if (got & EPOLLERR) {
            w->wanted = 0;
            w->cb(w->owner, UV_EBADF, 0);
            continue;
        }
        if (got & EPOLLHUP) {
            got |= w->wanted;
        }
        int uv_events = ((got & w->wanted & EPOLLIN) ? UV_READABLE : 0) |
                        ((got & w->wanted & EPOLLOUT) ? UV_WRITABLE : 0);
        if (uv_events != 0) {
            w->cb(w->owner, 0, uv_events);
        }
    }
}

static void relay_watcher_on_closed(uv_handle_t *handle) {
    (void)handle;
    close(relay_watcher.epoll_fd);
    relay_watcher.epoll_fd = -1;
    relay_watcher.closing = false;
}

int relay_watch_start(uv_loop_t *loop) {
    int r;

    if (relay_watcher.closing) {
        return -EBUSY;
    }
    if (relay_watcher.epoll_fd >= 0) {
        return relay_watcher.poll.loop == loop ? 0 : -EINVAL;
    }
    relay_watcher.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (relay_watcher.epoll_fd < 0) {
        return -errno;
    }
    r = uv_poll_init(loop, &relay_watcher.poll, relay_watcher.epoll_fd);
    if (r == 0) {
        r = uv_poll_start(&relay_watcher.poll, UV_READABLE, relay_watcher_on_ready);
        if (r < 0) {
            relay_watcher.closing = true;
            uv_close((uv_handle_t *)&relay_watcher.poll, relay_watcher_on_closed);
            return r;
        }
    }
    if (r < 0) {
        close(relay_watcher.epoll_fd);
        relay_watcher.epoll_fd = -1;
        return r;
    }
    /* Only live relays keep the loop alive (see live_relay_count), not
     * the set itself. */
    uv_unref((uv_handle_t *)&relay_watcher.poll);
    return 0;
}

void relay_watch_stop(void) {
    if (relay_watcher.epoll_fd < 0 || relay_watcher.closing) {
        return;
    }
    relay_watcher.closing = true;
    uv_close((uv_handle_t *)&relay_watcher.poll, relay_watcher_on_closed);
}

static void relay_watch_init(relay_watch *w, relay *owner, int fd, relay_watch_cb cb) {
    w->owner = owner;
    w->fd = fd;
    w->wanted = 0;
    w->in_set = 0;
    w->cb = cb;
}

/* Watches w's descriptor for `uv_events` (UV_READABLE/UV_WRITABLE; 0
 * stops, lazily). Returns 0 or a negative errno. */
static int relay_watch_set(relay_watch *w, int uv_events) {
    uint32_t want =
        ((uv_events & UV_READABLE) ? EPOLLIN : 0) | ((uv_events & UV_WRITABLE) ? EPOLLOUT : 0);
    struct epoll_event ev = {.events = want, .data.ptr = w};
    int op;

    w->wanted = want;
    if (w->fd < 0 || want == 0 || want == w->in_set) {
        return 0;
    }
    op = w->in_set == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(relay_watcher.epoll_fd, op, w->fd, &ev) < 0) {
        int err = -errno;

        w->wanted = 0;
        return err;
    }
    w->in_set = want;
    return 0;
}

/* Closes w's descriptor, which takes it out of the set. */
static void relay_watch_close(relay_watch *w) {
    if (w->fd < 0) {
        return;
    }
    close(w->fd);
    w->fd = -1;
    w->wanted = 0;
    w->in_set = 0;
}

struct relay {
    int sock;                /* borrowed until relay_drop, then owned */
    int download_pipe_write; /* pipe D write end, -1 once closed */
    int upload_source;       /* the relay's end of the client's output (pipe U's read end or
                                the socket pair's other end), -1 once closed */
    int staging_pipe[2];     /* [0] spliced to the socket, [1] filled from upload_source;
                                -1 until the first upload bytes, and once the upload ended */

    relay_watch sock_watch;
    relay_watch download_pipe_watch;
    relay_watch upload_source_watch;
    uv_timer_t report_timer; /* zero-delay: delivers end reports from the loop */
    uv_timer_t linger_timer; /* bounds the forwarding after relay_drop */

    /* Events each descriptor is watched for (0 = none): the interests
     * derived from the direction states (relay_update_polls). */
    int sock_events;
    int download_pipe_events;
    int upload_source_events;

    enum download_state download;
    enum upload_state upload;

    /* Set by shutdown_send and drop: only upload_remaining more bytes are
     * taken from upload_source (the staged ones are forwarded anyway), then
     * the upload direction completes. */
    bool upload_limited;
    size_t upload_remaining;

    /* Bytes in the staging pipe, and its capacity (the most one splice
     * into it asks for). */
    size_t staged;
    size_t staging_capacity;

    /* Bytes asked of one splice from the socket into pipe D: its capacity. */
    size_t download_chunk;
    bool staging_pipe_sized, download_pipe_sized; /* enlargement tried (once) */
    size_t enlarged_bytes; /* capacity added beyond the defaults, in the budget */

    bool receive_shut; /* shutdown(SHUT_RD) done */
    bool send_shut;    /* shutdown(SHUT_WR) done */

    relay_end_cb end_cb;
    void *cb_data;
    bool report_pending[2]; /* indexed by `download` */
    int report_error[2];

    bool dropped;                     /* relay_drop was called: no more reports */
    bool close_download_after_report; /* pipe D closes once its error is reported */
    bool finished;                    /* all handles are closing */
    bool counted;                     /* included in live_relay_count */
    int open_handles;                 /* the two timers: freed from the last close callback */
};

static unsigned live_relay_count;

/* Capacity added by enlarged pipes of live relays (RELAY_ENLARGED_PIPES_MAX_BYTES). */
static size_t enlarged_pipe_bytes;

/* Enlarges the pipe of pipe_fd to `capacity` once the direction has shown
 * it moves bulk data, within the daemon-wide budget. Returns the pipe's
 * capacity now (`chunk`, the old one, when nothing changed). */
static size_t relay_enlarge_pipe(relay *r, int pipe_fd, bool *sized, size_t chunk,
                                 size_t capacity) {
    int got;

    if (*sized) {
        return chunk;
    }
    *sized = true;
    if (enlarged_pipe_bytes + (capacity - chunk) > RELAY_ENLARGED_PIPES_MAX_BYTES) {
        return chunk;
    }
    got = fcntl(pipe_fd, F_SETPIPE_SZ, (int)capacity);
    if (got <= (int)chunk) {
        return chunk; /* refused (the user's pipe budget) or no larger */
    }
    r->enlarged_bytes += (size_t)got - chunk;
    enlarged_pipe_bytes += (size_t)got - chunk;
    return (size_t)got;
}

static void relay_on_handle_closed(uv_handle_t *handle) {
    relay *r = handle->data;

    r->open_handles--;
    if (r->open_handles > 0) {
        return;
    }
    if (r->counted) {
        live_relay_count--;
        if (live_relay_count == 0 && relay_watcher.epoll_fd >= 0 && !relay_watcher.closing) {
            uv_unref((uv_handle_t *)&relay_watcher.poll);
        }
    }
    enlarged_pipe_bytes -= r->enlarged_bytes;
    free(r);
}

/* Closes a pipe end the relay watches, and sets *fd and *events to -1/0. */
static void relay_close_watched_fd(relay_watch *w, int *fd, int *events) {
    if (*fd < 0) {
        return;
    }
    relay_watch_close(w);
    *fd = -1;
    *events = 0;
}

static void relay_on_report_timer(uv_timer_t *timer) {
    relay *r = timer->data;

    /* Download first, then upload; end_cb may drop the relay, after which
     * nothing more is reported (the memory stays valid until the close
     * callbacks run, later in this loop iteration). */
    for (int i = 1; i >= 0; i--) {
        if (r->dropped) {
            return;
        }
        if (!r->report_pending[i]) {
            continue;
        }
        r->report_pending[i] = false;
        if (r->end_cb != NULL) {
            r->end_cb(r->cb_data, i == 1, r->report_error[i]);
        }
        if (i == 1 && r->close_download_after_report && !r->dropped) {
            r->close_download_after_report = false;
            relay_close_watched_fd(&r->download_pipe_watch, &r->download_pipe_write,
                                   &r->download_pipe_events);
        }
    }
}

/* Queues the once-per-direction end report; it runs from the loop so that
 * callers of relay_* never see end_cb re-enter them. */
static void relay_report_end(relay *r, bool download, int err) {
    if (r->dropped) {
        return;
    }
    r->report_pending[download] = true;
    r->report_error[download] = err;
    uv_timer_start(&r->report_timer, relay_on_report_timer, 0, 0);
}

/* Zero-timeout readiness test of one descriptor: returns the revents. */
static short fd_ready_now(int fd, short events) {
    struct pollfd pfd = {.fd = fd, .events = events};

    if (poll(&pfd, 1, 0) <= 0) {
        return 0;
    }
    return pfd.revents;
}

static void relay_end_download(relay *r, int err) {
    if (r->download == DOWNLOAD_ENDED) {
        return;
    }
    r->download = DOWNLOAD_ENDED;
    if (err != 0 && r->end_cb != NULL && !r->dropped) {
        /* The client must learn why the stream ended before it reads EOF:
         * pipe D stays open (unpolled) until end_cb has reported the error,
         * and the report timer closes it right after. */
        (void)relay_watch_set(&r->download_pipe_watch, 0);
        r->download_pipe_events = 0;
        r->close_download_after_report = true;
    } else {
        relay_close_watched_fd(&r->download_pipe_watch, &r->download_pipe_write,
                               &r->download_pipe_events);
    }
    relay_report_end(r, true, err);
}

/* Closes the staging pipe; bytes still in it are lost (the upload ended). */
static void relay_close_staging_pipe(relay *r) {
    for (int i = 0; i < 2; i++) {
        if (r->staging_pipe[i] >= 0) {
            close(r->staging_pipe[i]);
            r->staging_pipe[i] = -1;
        }
    }
    r->staged = 0;
}

static void relay_end_upload(relay *r, int err) {
    if (r->upload == UPLOAD_ENDED) {
        return;
    }
    r->upload = UPLOAD_ENDED;
    r->upload_limited = false;
    r->upload_remaining = 0;
    relay_close_watched_fd(&r->upload_source_watch, &r->upload_source, &r->upload_source_events);
    relay_close_staging_pipe(r);
    relay_report_end(r, false, err);
}

/* The socket failed (reset, timeout, ...): no byte can move in either
 * direction any more, so both end with the same error (the kernel hands the
 * error out only once, to whichever direction asks first). Closing the
 * relay's end of the client's output makes its further writes fail with
 * EPIPE. */
static void relay_connection_failed(relay *r, int err) {
    relay_end_download(r, err);
    relay_end_upload(r, err);
}

/* Discards what the peer sent and nobody will read, so that close(2) ends
 * the connection with a FIN after our data rather than a reset. */
static void relay_discard_unread_input(relay *r) {
    for (int i = 0; i < RELAY_DRAIN_ROUNDS; i++) {
        ssize_t n = recv(r->sock, NULL, RELAY_SPLICE_CHUNK, MSG_TRUNC | MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && errno == EINTR)) {
            return;
        }
    }
}

/* Final step of relay_drop: closes every handle and descriptor. When bytes
 * the client wrote could not be forwarded, the socket is reset rather than
 * closed, so the peer cannot mistake a truncated stream for a complete one. */
static void relay_finish_drop(relay *r, bool all_forwarded) {
    if (r->finished) {
        return;
    }
    r->finished = true;
    r->download = DOWNLOAD_ENDED;
    r->upload = UPLOAD_ENDED;
    relay_close_watched_fd(&r->download_pipe_watch, &r->download_pipe_write,
                           &r->download_pipe_events);
    relay_close_watched_fd(&r->upload_source_watch, &r->upload_source, &r->upload_source_events);
    relay_close_staging_pipe(r);
    (void)relay_watch_set(&r->sock_watch, 0);
    uv_close((uv_handle_t *)&r->report_timer, relay_on_handle_closed);
    uv_close((uv_handle_t *)&r->linger_timer, relay_on_handle_closed);
    r->sock_events = 0;

    if (all_forwarded) {
        relay_discard_unread_input(r);
    } else {
        struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(r->sock, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
    }
    relay_watch_close(&r->sock_watch); /* closes r->sock */
    r->sock = -1;
}

/* The upload direction forwarded everything it was asked to: the client
 * closed its output (nothing left in it), or the byte count of a
 * shutdown_send or drop was reached, and nothing is left staged. */
static void relay_complete_upload(relay *r) {
    if (r->dropped) {
        relay_finish_drop(r, true);
        return;
    }
    if (!r->send_shut) {
        (void)shutdown(r->sock, SHUT_WR);
        r->send_shut = true;
    }
    relay_end_upload(r, 0);
}

/* splice(2) stops in front of TCP urgent data: it reports EAGAIN while the
 * socket stays readable (the loop would spin), or 0 if the FIN is already
 * queued (the rest of the stream would be lost). Returns whether the socket
 * is at the urgent mark, where relay_download_step_over_urgent_mark helps. */
static bool relay_download_at_urgent_mark(relay *r) {
    int at_mark = 0;

    return ioctl(r->sock, SIOCATMARK, &at_mark) == 0 && at_mark;
}

/* One recv(2) of a single byte moves past the urgent mark (the urgent byte
 * itself is not part of the stream unless SO_OOBINLINE is set); the byte
 * received goes to pipe D, which has room (splice only stops at the mark
 * with room in the pipe, and only the relay writes to it). Returns the recv
 * result, with errno set when negative. */
static ssize_t relay_download_step_over_urgent_mark(relay *r) {
    unsigned char byte;
    ssize_t n;

    do {
        n = recv(r->sock, &byte, 1, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n == 1 && write(r->download_pipe_write, &byte, 1) != 1) {
        /* Cannot happen while the pipe has room; losing the byte silently
         * would corrupt the stream, so fail the connection instead. */
        errno = EIO;
        return -1;
    }
    return n;
}

/* Moves socket -> pipe D until one of them blocks, the stream ends, or the
 * per-wakeup budget is spent, and records where to wait next. */
static void relay_pump_download(relay *r) {
    for (int i = 0; i < RELAY_SPLICES_PER_WAKEUP; i++) {
        if (r->download == DOWNLOAD_ENDED) {
            return;
        }
        ssize_t n = splice(r->sock, NULL, r->download_pipe_write, NULL, r->download_chunk,
                           SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            if ((size_t)n == r->download_chunk) {
                r->download_chunk =
                    relay_enlarge_pipe(r, r->download_pipe_write, &r->download_pipe_sized,
                                       r->download_chunk, RELAY_DOWNLOAD_PIPE_BYTES);
            }
            continue;
        }
        int err = n == 0 ? 0 : errno;
        if (err == EINTR) {
            continue;
        }
        if (err == EAGAIN && !(fd_ready_now(r->download_pipe_write, POLLOUT) & POLLOUT)) {
            /* Pipe D is full: wait for the client to read. */
            r->download = DOWNLOAD_WAIT_PIPE;
            return;
        }
        if ((err == 0 || err == EAGAIN) && relay_download_at_urgent_mark(r)) {
            n = relay_download_step_over_urgent_mark(r);
            err = n < 0 ? errno : 0;
            if (n > 0 || err == EAGAIN) {
                continue;
            }
        }
        if (err == EAGAIN) {
            /* The socket is empty. */
            r->download = DOWNLOAD_WAIT_SOCKET;
            return;
        }
        if (err == 0) {
            /* Peer FIN: the client reads everything in pipe D, then EOF. */
            relay_end_download(r, 0);
            return;
        }
        if (err == EPIPE && (fd_ready_now(r->download_pipe_write, POLLOUT) & POLLERR)) {
            /* The client closed its input stream: stop receiving. */
            if (!r->receive_shut) {
                (void)shutdown(r->sock, SHUT_RD);
                r->receive_shut = true;
            }
            relay_end_download(r, 0);
            return;
        }
        relay_connection_failed(r, -err);
        return;
    }
}

/* The upload direction failed with errno err: a dropped relay resets the
 * connection (bytes the client wrote are lost), a live one reports it. */
static void relay_upload_failed(relay *r, int err) {
    if (r->dropped) {
        relay_finish_drop(r, false);
    } else {
        relay_connection_failed(r, -err);
    }
}

/* Takes bytes the client wrote into the staging pipe, as many as it has
 * room for and the byte limit allows; creates the pipe on first use, so
 * a connection that never uploads never holds it. Returns the splice
 * result (0: the client closed its output and everything was taken), or
 * -1 with errno set; EAGAIN means nothing to take now. */
static ssize_t relay_fill_staging_pipe(relay *r) {
    size_t len = r->staging_capacity - r->staged;

    if (r->upload_limited && len > r->upload_remaining) {
        len = r->upload_remaining;
    }
    if (len == 0) {
        errno = EAGAIN;
        return -1;
    }
    if (r->staging_pipe[0] < 0 && pipe2(r->staging_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        return -1;
    }
    ssize_t n = splice(r->upload_source, NULL, r->staging_pipe[1], NULL, len,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n <= 0) {
        return n;
    }
    r->staged += (size_t)n;
    if (r->upload_limited) {
        r->upload_remaining -= (size_t)n;
    } else if ((size_t)n == r->staging_capacity) {
        /* A whole pipe's worth in one call: bulk data, enlarge once. */
        r->staging_capacity = relay_enlarge_pipe(r, r->staging_pipe[1], &r->staging_pipe_sized,
                                                 r->staging_capacity, RELAY_UPLOAD_PIPE_BYTES);
    }
    return n;
}

/* Moves the client's output -> staging pipe -> socket, honouring the byte
 * limit of shutdown_send/drop, until the client's output is empty, the
 * socket is full, the upload completes, or the per-wakeup budget is spent;
 * records where to wait next. */
static void relay_pump_upload(relay *r) {
    for (int i = 0; i < RELAY_SPLICES_PER_WAKEUP; i++) {
        bool source_empty = false, source_closed = false;

        if (r->upload == UPLOAD_ENDED) {
            return;
        }
        ssize_t n = relay_fill_staging_pipe(r);
        if (n == 0) {
            source_closed = true;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            /* Nothing to take; or, with bytes staged, possibly the staging
             * pipe out of buffers (one per fragment, however short), which
             * draining it resolves. */
            source_empty = true;
        } else if (n < 0) {
            relay_upload_failed(r, errno);
            return;
        }
        if (r->staged > 0) {
            n = splice(r->staging_pipe[0], NULL, r->sock, NULL, r->staged,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n > 0) {
                r->staged -= (size_t)n;
                if (r->staged > 0 || !(source_empty || source_closed)) {
                    continue;
                }
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                /* The socket's send buffer is full. */
                r->upload = UPLOAD_WAIT_SOCKET;
                return;
            } else {
                relay_upload_failed(r, n < 0 ? errno : EPIPE);
                return;
            }
        }
        /* Nothing staged. */
        if (source_closed || (r->upload_limited && r->upload_remaining == 0)) {
            relay_complete_upload(r);
            return;
        }
        if (source_empty) {
            r->upload = UPLOAD_WAIT_CLIENT;
            return;
        }
    }
    /* Budget spent with work left: wait where it continues, which is ready
     * now (level-triggered), so the loop brings us back at once. */
    r->upload = r->staged > 0 ? UPLOAD_WAIT_SOCKET : UPLOAD_WAIT_CLIENT;
}

/* Changes one descriptor's watch to match `events`. A failure to watch
 * (no memory for the epoll entry) would leave that direction waiting
 * forever, so it fails the connection instead. */
static bool relay_set_poll(relay *r, relay_watch *w, int *current, int events) {
    if (events == *current) {
        return true;
    }
    int err = relay_watch_set(w, events);
    if (err < 0) {
        *current = 0;
        relay_connection_failed(r, err);
        return false;
    }
    *current = events;
    return true;
}

/* Derives every watch interest from the two direction states. */
static void relay_update_polls(relay *r) {
    if (r->finished) {
        return;
    }
    int sock_events = 0;
    if (r->download == DOWNLOAD_WAIT_SOCKET) {
        sock_events |= UV_READABLE;
    }
    if (r->upload == UPLOAD_WAIT_SOCKET) {
        sock_events |= UV_WRITABLE;
    }
    if (!relay_set_poll(r, &r->sock_watch, &r->sock_events, sock_events)) {
        relay_update_polls(r); /* both directions ended: stop the rest */
        return;
    }
    if (r->download_pipe_write >= 0 &&
        !relay_set_poll(r, &r->download_pipe_watch, &r->download_pipe_events,
                        r->download == DOWNLOAD_WAIT_PIPE ? UV_WRITABLE : 0)) {
        relay_update_polls(r);
        return;
    }
    if (r->upload_source >= 0 &&
        !relay_set_poll(r, &r->upload_source_watch, &r->upload_source_events,
                        r->upload == UPLOAD_WAIT_CLIENT ? UV_READABLE : 0)) {
        relay_update_polls(r);
    }
}

/* A negative status means the watch saw EPOLLERR and stopped; the splice
 * calls then report the real error (reset, EPIPE), so it is handled like
 * readiness of everything the descriptor was watched for. */
static void relay_on_sock_event(relay *r, int status, int events) {
    int watched = r->sock_events;

    if (status < 0) {
        r->sock_events = 0;
        events = watched;
    }
    if ((events & UV_READABLE) && r->download == DOWNLOAD_WAIT_SOCKET) {
        relay_pump_download(r);
    }
    if ((events & UV_WRITABLE) && r->upload == UPLOAD_WAIT_SOCKET) {
        relay_pump_upload(r);
    }
    relay_update_polls(r);
}

static void relay_on_download_pipe_event(relay *r, int status, int events) {
    (void)events;
    if (status < 0) {
        r->download_pipe_events = 0;
    }
    if (r->download == DOWNLOAD_WAIT_PIPE) {
        relay_pump_download(r);
    }
    relay_update_polls(r);
}

static void relay_on_upload_source_event(relay *r, int status, int events) {
    (void)events;
    if (status < 0) {
        r->upload_source_events = 0;
    }
    if (r->upload == UPLOAD_WAIT_CLIENT) {
        relay_pump_upload(r);
    }
    relay_update_polls(r);
}

static void relay_on_linger_timeout(uv_timer_t *timer) {
    relay *r = timer->data;

    relay_finish_drop(r, false);
}

/* Creates the client's output and the relay's end of it: a pipe (U), or a
 * stream socket pair whose relay end is shut for writing, so a client
 * reading its output stream sees EOF instead of waiting forever. fds[0]
 * is the relay's (reads), fds[1] the client's (writes); both non-blocking
 * and close-on-exec. Returns 0 or a negative errno, creating nothing. */
static int relay_create_client_output(relay_output_kind kind, int fds[2]) {
    if (kind == RELAY_OUTPUT_PIPE) {
        return pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0 ? -errno : 0;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
        return -errno;
    }
    (void)shutdown(fds[0], SHUT_WR);
    return 0;
}

int relay_new(uv_loop_t *loop, int sock, relay_output_kind output_kind, relay_end_cb end_cb,
              void *cb_data, relay **out, int *client_input, int *client_output) {
    int download_pipe[2]; /* pipe D: [0] client reads, [1] relay writes */
    int upload[2];        /* the client's output: [0] relay reads, [1] client writes */
    relay *r;
    int err;

    /* O_NONBLOCK on both ends: the client's ends share their file status
     * flags with the client process after SCM_RIGHTS. */
    if (pipe2(download_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        return -errno;
    }
    err = relay_create_client_output(output_kind, upload);
    if (err < 0) {
        close(download_pipe[0]);
        close(download_pipe[1]);
        return err;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        err = -ENOMEM;
        goto fail_pipes;
    }
    r->sock = sock;
    r->download_pipe_write = download_pipe[1];
    r->upload_source = upload[0];
    r->staging_pipe[0] = -1;
    r->staging_pipe[1] = -1;
    r->end_cb = end_cb;
    r->cb_data = cb_data;
    r->staging_capacity = RELAY_SPLICE_CHUNK;
    r->download_chunk = RELAY_SPLICE_CHUNK;

    relay_watch_init(&r->sock_watch, r, sock, relay_on_sock_event);
    relay_watch_init(&r->download_pipe_watch, r, r->download_pipe_write,
                     relay_on_download_pipe_event);
    relay_watch_init(&r->upload_source_watch, r, r->upload_source, relay_on_upload_source_event);

    /* Both directions start waiting for bytes: the socket and the client's output. */
    err = relay_watch_start(loop);
    if (err == 0) {
        err = relay_watch_set(&r->sock_watch, UV_READABLE);
    }
    if (err == 0) {
        err = relay_watch_set(&r->upload_source_watch, UV_READABLE);
        if (err < 0) {
            /* sock stays the caller's and open: it must leave the set. */
            (void)epoll_ctl(relay_watcher.epoll_fd, EPOLL_CTL_DEL, sock, NULL);
        }
    }
    if (err < 0) {
        free(r);
        goto fail_pipes;
    }
    r->sock_events = UV_READABLE;
    r->upload_source_events = UV_READABLE;
    uv_timer_init(loop, &r->report_timer);
    r->report_timer.data = r;
    uv_timer_init(loop, &r->linger_timer);
    r->linger_timer.data = r;
    r->open_handles = 2;

    r->download = DOWNLOAD_WAIT_SOCKET;
    r->upload = UPLOAD_WAIT_CLIENT;
    r->counted = true;
    if (live_relay_count++ == 0) {
        /* Live relays keep the loop alive, as their own handles would. */
        uv_ref((uv_handle_t *)&relay_watcher.poll);
    }

    *out = r;
    *client_input = download_pipe[0];
    *client_output = upload[1];
    return 0;

fail_pipes:
    close(download_pipe[0]);
    close(download_pipe[1]);
    close(upload[0]);
    close(upload[1]);
    return err;
}

void relay_shutdown_receive(relay *r) {
    if (!r->receive_shut) {
        (void)shutdown(r->sock, SHUT_RD);
        r->receive_shut = true;
    }
    relay_end_download(r, 0);
    relay_update_polls(r);
}

/* Bytes the client wrote that the relay has not taken yet (FIONREAD serves
 * a pipe and a stream socket alike). */
static size_t relay_untaken_upload_bytes(relay *r) {
    int queued = 0;

    if (ioctl(r->upload_source, FIONREAD, &queued) < 0 || queued < 0) {
        return 0;
    }
    return (size_t)queued;
}

void relay_shutdown_send(relay *r) {
    if (r->upload == UPLOAD_ENDED || r->upload_limited) {
        return;
    }
    r->upload_limited = true;
    r->upload_remaining = relay_untaken_upload_bytes(r);
    relay_pump_upload(r);
    relay_update_polls(r);
}

void relay_drop(relay *r) {
    r->dropped = true;
    r->report_pending[0] = false;
    r->report_pending[1] = false;
    uv_timer_stop(&r->report_timer);

    r->download = DOWNLOAD_ENDED;
    relay_close_watched_fd(&r->download_pipe_watch, &r->download_pipe_write,
                           &r->download_pipe_events);
    if (r->upload == UPLOAD_ENDED) {
        relay_finish_drop(r, true);
        return;
    }
    size_t untaken = relay_untaken_upload_bytes(r);
    if (!r->upload_limited || untaken < r->upload_remaining) {
        r->upload_remaining = untaken;
    }
    r->upload_limited = true;
    relay_pump_upload(r);
    if (r->finished) {
        return;
    }
    uv_timer_start(&r->linger_timer, relay_on_linger_timeout, RELAY_LINGER_MS, 0);
    relay_update_polls(r);
}

unsigned relay_count(void) {
    return live_relay_count;
}
