/* check-relay.c — unit tests of the splice relay (daemon/relay.c) on a real
 * libuv loop over loopback TCP.
 *
 * Each test builds a connected loopback pair, gives one end to relay_new and
 * plays both other parties itself: the "client" with the returned stream ends
 * and the "peer" with the other socket. The whole suite runs twice, once for
 * each kind of client output (a pipe, one end of a stream socket pair). All descriptors are
 * non-blocking and the loop runs in bounded steps (uv_run(UV_RUN_NOWAIT) plus poll(2) on the loop's
 * backend and the test's descriptors), so a hang fails the test instead of blocking it. Every test
 * ends with no live relay and exactly the descriptors it started with. Trusts nothing but the
 * kernel and libuv.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

/* The kind of client output the suite's relays are created with: set by
 * main before each run (tests run in forked children, which inherit it). */
static relay_output_kind output_under_test = RELAY_OUTPUT_PIPE;

/* Upper bound of one run of the loop in a test: generous for 16 MiB under
 * ASan on a busy machine; reaching it means the relay stalled. */
#define RUN_LIMIT_MS 20000

/* Check's per-test timeout: above RUN_LIMIT_MS, so a stall fails with the
 * assertion that names it, and above the relay's 10 s drop linger. */
#define TEST_TIMEOUT_S 60

/* Longest a step sleeps in poll(2) when nothing is ready, so that timers and
 * state checks are revisited often. */
#define STEP_POLL_MS 10

/* Bytes one test endpoint moves per read/write call. */
#define IO_CHUNK (64 * 1024)

/* The default pipe capacity on Linux: 16 buffers, 64 KiB when written with
 * write(2) (one page per buffer). */
#define PIPE_SLOTS    16
#define PIPE_CAPACITY (64 * 1024)

/* Buffers of pipe D once the relay enlarged it for bulk data (1 MiB). */
#define PIPE_D_MAX_SLOTS 256

#define MIB (1024 * 1024)

/* ---- byte patterns ---------------------------------------------------- */

/* A position-dependent pattern: any lost, duplicated or reordered byte shows
 * up as a mismatch. Different seeds tell the two directions apart. */
static unsigned char pattern_byte(uint64_t seed, size_t offset) {
    uint64_t x = (offset >> 3) + seed * 0x9e3779b97f4a7c15ULL;

    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return (unsigned char)(x >> ((offset & 7) * 8));
}

/* ---- endpoints -------------------------------------------------------- */

enum sender_finish {
    FINISH_NOTHING, /* leave the descriptor open */
    FINISH_CLOSE,   /* close it (client: end the output stream) */
    FINISH_SHUT_WR, /* shutdown(SHUT_WR) (peer: send a FIN) */
};

/* One direction as seen by the test: either it writes `total` pattern bytes
 * to *fd, or it reads from *fd and checks every byte against the pattern. */
struct flow {
    int *fd; /* points at the fixture's field, so closing is visible there */
    bool sending;
    uint64_t seed;
    size_t total;  /* bytes to send, or bytes expected */
    size_t done;   /* bytes sent or received so far */
    bool want_eof; /* receiver: complete only after reading EOF */
    enum sender_finish finish;
    bool eof;           /* receiver saw EOF */
    int error;          /* first errno other than EAGAIN, 0 if none */
    size_t mismatch_at; /* first wrong byte, SIZE_MAX if none */
    bool blocked;       /* last I/O attempt returned EAGAIN */
    bool finished;      /* the finish action ran */
};

static void flow_init_sender(struct flow *fl, int *fd, uint64_t seed, size_t total,
                             enum sender_finish finish) {
    memset(fl, 0, sizeof *fl);
    fl->fd = fd;
    fl->sending = true;
    fl->seed = seed;
    fl->total = total;
    fl->finish = finish;
    fl->mismatch_at = SIZE_MAX;
}

static void flow_init_receiver(struct flow *fl, int *fd, uint64_t seed, size_t total,
                               bool want_eof) {
    memset(fl, 0, sizeof *fl);
    fl->fd = fd;
    fl->seed = seed;
    fl->total = total;
    fl->want_eof = want_eof;
    fl->mismatch_at = SIZE_MAX;
}

static bool flow_complete(const struct flow *fl) {
    if (fl->error != 0) {
        return true;
    }
    if (fl->sending) {
        return fl->done == fl->total && (fl->finish == FINISH_NOTHING || fl->finished);
    }
    return fl->want_eof ? fl->eof : fl->done >= fl->total;
}

static void sender_step(struct flow *fl) {
    unsigned char buf[IO_CHUNK];

    fl->blocked = false;
    while (fl->done < fl->total && fl->error == 0) {
        size_t len = fl->total - fl->done;
        if (len > sizeof buf) {
            len = sizeof buf;
        }
        for (size_t i = 0; i < len; i++) {
            buf[i] = pattern_byte(fl->seed, fl->done + i);
        }
        ssize_t n = write(*fl->fd, buf, len);
        if (n > 0) {
            fl->done += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            fl->blocked = true;
            return;
        } else if (n < 0 && errno != EINTR) {
            fl->error = errno;
            return;
        }
    }
    if (fl->done == fl->total && !fl->finished) {
        fl->finished = true;
        if (fl->finish == FINISH_CLOSE) {
            close(*fl->fd);
            *fl->fd = -1;
        } else if (fl->finish == FINISH_SHUT_WR) {
            ck_assert_int_eq(shutdown(*fl->fd, SHUT_WR), 0);
        }
    }
}

static void receiver_step(struct flow *fl) {
    unsigned char buf[IO_CHUNK];

    fl->blocked = false;
    while (!fl->eof && fl->error == 0) {
        ssize_t n = read(*fl->fd, buf, sizeof buf);
        if (n > 0) {
            for (size_t i = 0; i < (size_t)n; i++) {
                if (fl->mismatch_at == SIZE_MAX && buf[i] != pattern_byte(fl->seed, fl->done + i)) {
                    fl->mismatch_at = fl->done + i;
                }
            }
            fl->done += (size_t)n;
        } else if (n == 0) {
            fl->eof = true;
        } else if (errno == EAGAIN) {
            fl->blocked = true;
            return;
        } else if (errno != EINTR) {
            fl->error = errno;
            return;
        }
    }
}

/* ---- fixture ---------------------------------------------------------- */

struct end_record {
    int calls[2]; /* indexed by `download` */
    int err[2];
};

struct fixture {
    uv_loop_t loop;
    int fds_at_start;
    int daemon_sock;   /* given to the relay; owned by it after relay_drop */
    int peer;          /* the remote end of the connection */
    relay *r;          /* NULL after relay_drop */
    int client_input;  /* pipe D read end */
    int client_output; /* the client's output: pipe U write end or socket pair end */
    struct end_record ends;
};

static int count_open_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    int count = 0;

    ck_assert_ptr_nonnull(dir);
    while (readdir(dir) != NULL) {
        count++;
    }
    closedir(dir);
    return count;
}

static void record_end(void *data, bool download, int err) {
    struct end_record *ends = data;

    ends->calls[download]++;
    ends->err[download] = err;
}

/* A connected loopback pair: *daemon_side and *peer_side, both non-blocking
 * and close-on-exec. */
static void make_tcp_pair(int *daemon_side, int *peer_side) {
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t addr_len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(listener, 0);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(listener, (struct sockaddr *)&addr, sizeof addr), 0);
    ck_assert_int_eq(listen(listener, 1), 0);
    ck_assert_int_eq(getsockname(listener, (struct sockaddr *)&addr, &addr_len), 0);

    *peer_side = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(*peer_side, 0);
    ck_assert_int_eq(connect(*peer_side, (struct sockaddr *)&addr, sizeof addr), 0);
    *daemon_side = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    ck_assert_int_ge(*daemon_side, 0);
    close(listener);
    ck_assert_int_eq(fcntl(*peer_side, F_SETFL, O_NONBLOCK), 0);
}

static void fixture_open(struct fixture *f) {
    memset(f, 0, sizeof *f);
    f->fds_at_start = count_open_fds();
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
    make_tcp_pair(&f->daemon_sock, &f->peer);
    ck_assert_int_eq(relay_new(&f->loop, f->daemon_sock, output_under_test, record_end, &f->ends,
                               &f->r, &f->client_input, &f->client_output),
                     0);
    ck_assert_ptr_nonnull(f->r);
    ck_assert_uint_eq(relay_count(), 1);

    int flags = fcntl(f->client_input, F_GETFL);
    ck_assert(flags & O_NONBLOCK);
    ck_assert(fcntl(f->client_input, F_GETFD) & FD_CLOEXEC);
    flags = fcntl(f->client_output, F_GETFL);
    ck_assert(flags & O_NONBLOCK);
    ck_assert(fcntl(f->client_output, F_GETFD) & FD_CLOEXEC);
}

static double now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Runs the loop and the given flows until every flow is complete and
 * `until` (if any) holds, or RUN_LIMIT_MS passes. Returns whether it
 * completed. */
static bool run_flows(struct fixture *f, struct flow **flows, size_t nflows,
                      bool (*until)(struct fixture *), double limit_ms) {
    double deadline = now_ms() + limit_ms;

    while (now_ms() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        bool all_complete = true;
        for (size_t i = 0; i < nflows; i++) {
            if (!flow_complete(flows[i])) {
                if (flows[i]->sending) {
                    sender_step(flows[i]);
                } else {
                    receiver_step(flows[i]);
                }
            }
            all_complete = all_complete && flow_complete(flows[i]);
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (all_complete && (until == NULL || until(f))) {
            return true;
        }

        struct pollfd pfds[1 + 4];
        nfds_t n = 0;
        pfds[n++] = (struct pollfd){.fd = uv_backend_fd(&f->loop), .events = POLLIN};
        for (size_t i = 0; i < nflows && n < 5; i++) {
            if (!flow_complete(flows[i]) && *flows[i]->fd >= 0) {
                pfds[n++] = (struct pollfd){.fd = *flows[i]->fd,
                                            .events = flows[i]->sending ? POLLOUT : POLLIN};
            }
        }
        int timeout = uv_backend_timeout(&f->loop);
        if (timeout < 0 || timeout > STEP_POLL_MS) {
            timeout = STEP_POLL_MS;
        }
        (void)poll(pfds, n, timeout);
    }
    return false;
}

static bool no_live_relay(struct fixture *f) {
    (void)f;
    return relay_count() == 0;
}

static void close_if_open(int *fd) {
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Drops the relay if the test did not, closes the test's descriptors, lets
 * the dropped relay finish, and checks that nothing leaked. */
static void fixture_close(struct fixture *f) {
    close_if_open(&f->client_input);
    close_if_open(&f->client_output);
    close_if_open(&f->peer);
    if (f->r != NULL) {
        relay_drop(f->r);
        f->r = NULL;
    }
    ck_assert(run_flows(f, NULL, 0, no_live_relay, RUN_LIMIT_MS));
    relay_watch_stop();
    ck_assert_int_eq(uv_run(&f->loop, UV_RUN_NOWAIT), 0);
    ck_assert_int_eq(uv_loop_close(&f->loop), 0);
    ck_assert_uint_eq(relay_count(), 0);
    ck_assert_int_eq(count_open_fds(), f->fds_at_start);
}

static void drop_relay(struct fixture *f) {
    relay_drop(f->r);
    f->r = NULL;
}

static void assert_flow_intact(const struct flow *fl) {
    ck_assert_int_eq(fl->error, 0);
    ck_assert_uint_eq(fl->mismatch_at, SIZE_MAX);
    ck_assert_uint_eq(fl->done, fl->total);
}

/* Reads whatever is available now from a non-blocking descriptor: returns
 * the byte count, 0 at EOF, or -errno (-EAGAIN if nothing is there). */
static ssize_t read_now(int fd, void *buf, size_t len) {
    ssize_t n = read(fd, buf, len);

    return n < 0 ? -errno : n;
}

/* What the client's output holds that the relay has not taken: the bytes
 * in pipe U (FIONREAD on its write end), or for a socket pair end the
 * kernel memory its queued bytes occupy (SIOCOUTQ; not a byte count).
 * Either is 0 exactly when nothing is queued. */
static int client_output_queued(struct fixture *f) {
    int queued = 0;

    ck_assert_int_eq(ioctl(f->client_output,
                           output_under_test == RELAY_OUTPUT_SOCKET ? SIOCOUTQ : FIONREAD, &queued),
                     0);
    return queued;
}

/* The client's output is full. A pipe holds as many bytes as its capacity
 * (read from the pipe, which the relay enlarges once bulk data flows); a
 * socket whose write just failed with EAGAIN holds bytes the relay has
 * not taken. */
static bool upload_output_full(struct fixture *f) {
    if (output_under_test == RELAY_OUTPUT_SOCKET) {
        return client_output_queued(f) > 0;
    }
    int capacity = fcntl(f->client_output, F_GETPIPE_SZ);
    return capacity > 0 && client_output_queued(f) >= capacity;
}

/* Fills the client's output and the socket buffers while the peer reads nothing; returns
 * the bytes written. The socket buffers are made small so this is quick. */
static size_t fill_upload_path(struct fixture *f, uint64_t seed) {
    struct flow client_writes;

    flow_init_sender(&client_writes, &f->client_output, seed, 64 * MIB, FINISH_NOTHING);
    struct flow *flows[] = {&client_writes};
    /* Never completes (64 MiB cannot fit): stop once the pipe stays full. */
    double deadline = now_ms() + RUN_LIMIT_MS;
    while (now_ms() < deadline) {
        (void)run_flows(f, flows, 1, NULL, 50);
        if (client_writes.blocked && upload_output_full(f)) {
            break;
        }
    }
    ck_assert(client_writes.blocked);
    ck_assert_int_eq(client_writes.error, 0);
    return client_writes.done;
}

static void shrink_socket_buffers(struct fixture *f) {
    int small = 16 * 1024;

    ck_assert_int_eq(setsockopt(f->daemon_sock, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(setsockopt(f->peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
}

/* Counts how often the loop had something ready over `rounds` short polls,
 * running it each time: a relay that waits correctly leaves it idle. */
static int count_loop_wakeups(struct fixture *f, int rounds) {
    int wakeups = 0;

    for (int i = 0; i < rounds; i++) {
        struct pollfd pfd = {.fd = uv_backend_fd(&f->loop), .events = POLLIN};
        if (poll(&pfd, 1, STEP_POLL_MS) > 0) {
            wakeups++;
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    return wakeups;
}

/* ---- bulk transfer ---------------------------------------------------- */

static void report_rate(const char *what, size_t bytes, double ms) {
    if (ms > 0) {
        fprintf(stderr, "relay %s: %zu MiB in %.0f ms = %.0f MB/s\n", what, bytes / MIB, ms,
                (double)bytes / 1e6 / (ms / 1e3));
    }
}

START_TEST(download_16_mib) {
    struct fixture f;
    struct flow peer_sends, client_reads;

    fixture_open(&f);
    flow_init_sender(&peer_sends, &f.peer, 1, 16 * MIB, FINISH_SHUT_WR);
    flow_init_receiver(&client_reads, &f.client_input, 1, 16 * MIB, true);
    struct flow *flows[] = {&peer_sends, &client_reads};
    double start = now_ms();
    ck_assert(run_flows(&f, flows, 2, NULL, RUN_LIMIT_MS));
    report_rate("download", 16 * MIB, now_ms() - start);
    assert_flow_intact(&peer_sends);
    assert_flow_intact(&client_reads);
    ck_assert(client_reads.eof);
    fixture_close(&f);
}
END_TEST

START_TEST(upload_16_mib) {
    struct fixture f;
    struct flow client_writes, peer_reads;

    fixture_open(&f);
    flow_init_sender(&client_writes, &f.client_output, 2, 16 * MIB, FINISH_CLOSE);
    flow_init_receiver(&peer_reads, &f.peer, 2, 16 * MIB, true);
    struct flow *flows[] = {&client_writes, &peer_reads};
    double start = now_ms();
    ck_assert(run_flows(&f, flows, 2, NULL, RUN_LIMIT_MS));
    report_rate("upload", 16 * MIB, now_ms() - start);
    assert_flow_intact(&client_writes);
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    fixture_close(&f);
}
END_TEST

START_TEST(both_directions_16_mib) {
    struct fixture f;
    struct flow peer_sends, client_reads, client_writes, peer_reads;

    fixture_open(&f);
    flow_init_sender(&peer_sends, &f.peer, 3, 16 * MIB, FINISH_SHUT_WR);
    flow_init_receiver(&client_reads, &f.client_input, 3, 16 * MIB, true);
    flow_init_sender(&client_writes, &f.client_output, 4, 16 * MIB, FINISH_CLOSE);
    flow_init_receiver(&peer_reads, &f.peer, 4, 16 * MIB, true);
    struct flow *flows[] = {&peer_sends, &client_reads, &client_writes, &peer_reads};
    double start = now_ms();
    ck_assert(run_flows(&f, flows, 4, NULL, RUN_LIMIT_MS));
    report_rate("both directions (each)", 16 * MIB, now_ms() - start);
    assert_flow_intact(&peer_sends);
    assert_flow_intact(&client_reads);
    assert_flow_intact(&client_writes);
    assert_flow_intact(&peer_reads);
    ck_assert(client_reads.eof);
    ck_assert(peer_reads.eof);
    fixture_close(&f);
}
END_TEST

/* ---- orderly ends ----------------------------------------------------- */

static bool download_end_reported(struct fixture *f) {
    return f->ends.calls[1] > 0;
}

static bool upload_end_reported(struct fixture *f) {
    return f->ends.calls[0] > 0;
}

START_TEST(peer_eof_reaches_client_after_all_data) {
    struct fixture f;
    struct flow peer_sends, client_reads;

    fixture_open(&f);
    flow_init_sender(&peer_sends, &f.peer, 5, MIB + 123, FINISH_SHUT_WR);
    flow_init_receiver(&client_reads, &f.client_input, 5, MIB + 123, true);
    struct flow *flows[] = {&peer_sends, &client_reads};
    ck_assert(run_flows(&f, flows, 2, download_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&client_reads);
    ck_assert(client_reads.eof);
    ck_assert_int_eq(f.ends.calls[1], 1);
    ck_assert_int_eq(f.ends.err[1], 0);
    ck_assert_int_eq(f.ends.calls[0], 0);

    /* The upload direction still works after the peer's FIN. */
    struct flow client_writes, peer_reads;
    flow_init_sender(&client_writes, &f.client_output, 6, 5000, FINISH_CLOSE);
    flow_init_receiver(&peer_reads, &f.peer, 6, 5000, true);
    struct flow *upload[] = {&client_writes, &peer_reads};
    ck_assert(run_flows(&f, upload, 2, upload_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    ck_assert_int_eq(f.ends.calls[0], 1);
    ck_assert_int_eq(f.ends.err[0], 0);
    ck_assert_int_eq(f.ends.calls[1], 1);
    fixture_close(&f);
}
END_TEST

START_TEST(client_close_reaches_peer_after_all_data) {
    struct fixture f;
    struct flow client_writes, peer_reads;

    fixture_open(&f);
    flow_init_sender(&client_writes, &f.client_output, 7, MIB + 7, FINISH_CLOSE);
    flow_init_receiver(&peer_reads, &f.peer, 7, MIB + 7, true);
    struct flow *flows[] = {&client_writes, &peer_reads};
    ck_assert(run_flows(&f, flows, 2, upload_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    ck_assert_int_eq(f.ends.calls[0], 1);
    ck_assert_int_eq(f.ends.err[0], 0);
    ck_assert_int_eq(f.ends.calls[1], 0);
    fixture_close(&f);
}
END_TEST

START_TEST(client_closing_input_stops_download) {
    struct fixture f;
    struct flow peer_sends;

    fixture_open(&f);
    close_if_open(&f.client_input);
    flow_init_sender(&peer_sends, &f.peer, 8, 10000, FINISH_NOTHING);
    struct flow *flows[] = {&peer_sends};
    ck_assert(run_flows(&f, flows, 1, download_end_reported, RUN_LIMIT_MS));
    ck_assert_int_eq(f.ends.calls[1], 1);
    ck_assert_int_eq(f.ends.err[1], 0);
    ck_assert_int_eq(f.ends.calls[0], 0);
    fixture_close(&f);
}
END_TEST

START_TEST(client_closing_full_input_stops_download) {
    struct fixture f;
    struct flow peer_sends;

    fixture_open(&f);
    /* More than pipe D (enlarged for bulk data) and the socket buffers
     * hold: the peer sends until it blocks. */
    flow_init_sender(&peer_sends, &f.peer, 19, 64 * MIB, FINISH_NOTHING);
    struct flow *flows[] = {&peer_sends};
    for (int round = 0; round < 200 && !flow_complete(&peer_sends); round++) {
        (void)run_flows(&f, flows, 1, NULL, 50);
        if (peer_sends.blocked) {
            break;
        }
    }
    ck_assert(peer_sends.blocked);
    int queued = 0;
    ck_assert_int_eq(ioctl(f.client_input, FIONREAD, &queued), 0);
    ck_assert_int_gt(queued, 0);
    ck_assert_int_eq(f.ends.calls[1], 0);

    /* The relay now waits for room in pipe D; closing the read end must
     * wake it (POLLERR on the write end) and end the download. */
    close_if_open(&f.client_input);
    ck_assert(run_flows(&f, NULL, 0, download_end_reported, RUN_LIMIT_MS));
    ck_assert_int_eq(f.ends.calls[1], 1);
    ck_assert_int_eq(f.ends.err[1], 0);
    ck_assert_int_eq(f.ends.calls[0], 0);
    fixture_close(&f);
}
END_TEST

/* ---- shutdown --------------------------------------------------------- */

/* Writes pattern bytes straight into the relay's socket until its send
 * buffer is full, so the relay cannot forward anything for now. The peer sees
 * them as the start of the stream (offsets 0..returned-1 of `seed`). */
static size_t fill_socket_directly(struct fixture *f, uint64_t seed) {
    struct flow filler;

    flow_init_sender(&filler, &f->daemon_sock, seed, 64 * MIB, FINISH_NOTHING);
    sender_step(&filler);
    ck_assert(filler.blocked);
    ck_assert_int_eq(filler.error, 0);
    return filler.done;
}

START_TEST(shutdown_send_forwards_exactly_earlier_bytes) {
    struct fixture f;
    struct flow client_writes, later_writes, peer_reads;
    const size_t before = 30000, after = 20000;

    fixture_open(&f);
    shrink_socket_buffers(&f);
    /* With the socket full, the relay must hold the byte count across
     * wakeups while later bytes sit in the same pipe behind them. */
    size_t filler = fill_socket_directly(&f, 9);
    flow_init_sender(&client_writes, &f.client_output, 9, filler + before, FINISH_NOTHING);
    client_writes.done = filler;
    sender_step(&client_writes);
    ck_assert_uint_eq(client_writes.done, filler + before);
    relay_shutdown_send(f.r);
    relay_shutdown_send(f.r); /* idempotent */
    flow_init_sender(&later_writes, &f.client_output, 99, after, FINISH_NOTHING);
    sender_step(&later_writes);
    ck_assert_uint_eq(later_writes.done, after);
    /* The earlier bytes may have moved to the relay's staging pipe; the
     * later ones must stay where the client wrote them. */
    int queued = client_output_queued(&f);
    ck_assert_int_gt(queued, 0);
    if (output_under_test == RELAY_OUTPUT_PIPE) {
        ck_assert_int_ge(queued, (int)after);
        ck_assert_int_le(queued, (int)(before + after));
    }

    flow_init_receiver(&peer_reads, &f.peer, 9, filler + before, true);
    struct flow *flows[] = {&peer_reads};
    ck_assert(run_flows(&f, flows, 1, upload_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    ck_assert_int_eq(f.ends.calls[0], 1);
    ck_assert_int_eq(f.ends.err[0], 0);
    ck_assert_int_eq(f.ends.calls[1], 0);

    /* The relay stopped reading the client's output: the client's writes now fail. */
    char byte = 'x';
    ck_assert_int_eq(write(f.client_output, &byte, 1), -1);
    ck_assert_int_eq(errno, EPIPE);
    fixture_close(&f);
}
END_TEST

START_TEST(shutdown_send_of_bytes_already_forwardable) {
    struct fixture f;
    struct flow client_writes, peer_reads;

    fixture_open(&f);
    flow_init_sender(&client_writes, &f.client_output, 18, 30000, FINISH_NOTHING);
    sender_step(&client_writes);
    ck_assert_uint_eq(client_writes.done, 30000);
    relay_shutdown_send(f.r);
    ck_assert_int_eq(f.ends.calls[0], 0); /* reported from the loop, not inline */
    flow_init_receiver(&peer_reads, &f.peer, 18, 30000, true);
    struct flow *flows[] = {&peer_reads};
    ck_assert(run_flows(&f, flows, 1, upload_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    ck_assert_int_eq(f.ends.calls[0], 1);
    ck_assert_int_eq(f.ends.err[0], 0);
    fixture_close(&f);
}
END_TEST

START_TEST(shutdown_send_with_empty_pipe_sends_fin) {
    struct fixture f;
    struct flow peer_reads;

    fixture_open(&f);
    relay_shutdown_send(f.r);
    ck_assert_int_eq(f.ends.calls[0], 0); /* reported from the loop, not inline */
    flow_init_receiver(&peer_reads, &f.peer, 10, 0, true);
    struct flow *flows[] = {&peer_reads};
    ck_assert(run_flows(&f, flows, 1, upload_end_reported, RUN_LIMIT_MS));
    ck_assert(peer_reads.eof);
    ck_assert_uint_eq(peer_reads.done, 0);
    ck_assert_int_eq(f.ends.calls[0], 1);
    ck_assert_int_eq(f.ends.err[0], 0);
    fixture_close(&f);
}
END_TEST

START_TEST(shutdown_receive_delivers_no_later_data) {
    struct fixture f;
    struct flow peer_sends, client_reads;
    char buf[4096];

    fixture_open(&f);
    flow_init_sender(&peer_sends, &f.peer, 11, 1000, FINISH_NOTHING);
    flow_init_receiver(&client_reads, &f.client_input, 11, 1000, false);
    struct flow *flows[] = {&peer_sends, &client_reads};
    ck_assert(run_flows(&f, flows, 2, NULL, RUN_LIMIT_MS));
    assert_flow_intact(&client_reads);

    relay_shutdown_receive(f.r);
    relay_shutdown_receive(f.r);          /* idempotent */
    ck_assert_int_eq(f.ends.calls[1], 0); /* reported from the loop, not inline */
    memset(buf, 'z', sizeof buf);
    ck_assert_int_eq(write(f.peer, buf, sizeof buf), (ssize_t)sizeof buf);

    ck_assert(run_flows(&f, NULL, 0, download_end_reported, RUN_LIMIT_MS));
    ck_assert_int_eq(f.ends.calls[1], 1);
    ck_assert_int_eq(f.ends.err[1], 0);
    ck_assert_int_eq(read_now(f.client_input, buf, sizeof buf), 0);

    /* Upload is unaffected. */
    struct flow client_writes, peer_reads;
    flow_init_sender(&client_writes, &f.client_output, 12, 3000, FINISH_CLOSE);
    flow_init_receiver(&peer_reads, &f.peer, 12, 3000, true);
    struct flow *upload[] = {&client_writes, &peer_reads};
    ck_assert(run_flows(&f, upload, 2, upload_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert_int_eq(f.ends.err[0], 0);
    ck_assert_int_eq(f.ends.calls[1], 1);
    fixture_close(&f);
}
END_TEST

/* ---- failures --------------------------------------------------------- */

static bool both_ends_reported(struct fixture *f) {
    return f->ends.calls[0] > 0 && f->ends.calls[1] > 0;
}

START_TEST(peer_reset_reports_econnreset) {
    struct fixture f;
    struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
    char buf[16];

    fixture_open(&f);
    ck_assert_int_eq(
        setsockopt(f.peer, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close), 0);
    close_if_open(&f.peer);
    ck_assert(run_flows(&f, NULL, 0, both_ends_reported, RUN_LIMIT_MS));
    ck_assert_int_eq(f.ends.calls[1], 1);
    ck_assert_int_eq(f.ends.err[1], -ECONNRESET);
    ck_assert_int_eq(f.ends.calls[0], 1);
    ck_assert_int_eq(f.ends.err[0], -ECONNRESET);
    /* The client sees its input end and its output refused. */
    ck_assert_int_eq(read_now(f.client_input, buf, sizeof buf), 0);
    ck_assert_int_eq(write(f.client_output, "x", 1), -1);
    ck_assert_int_eq(errno, EPIPE);
    fixture_close(&f);
}
END_TEST

START_TEST(relay_new_fails_cleanly) {
    uv_loop_t loop;
    int client_input = -1, client_output = -1;
    relay *r = NULL;
    int fds_at_start = count_open_fds();
    /* A descriptor epoll refuses (EPERM) stands for any failure to watch. */
    int not_pollable = open("/dev/null", O_RDONLY | O_CLOEXEC);

    ck_assert_int_ge(not_pollable, 0);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(relay_new(&loop, not_pollable, output_under_test, record_end, NULL, &r,
                               &client_input, &client_output),
                     -EPERM);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(client_input, -1);
    ck_assert_int_eq(client_output, -1);
    ck_assert_uint_eq(relay_count(), 0);
    /* The borrowed descriptor is still the caller's. */
    ck_assert_int_ne(fcntl(not_pollable, F_GETFD), -1);
    relay_watch_stop();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    close(not_pollable);
    ck_assert_int_eq(count_open_fds(), fds_at_start);
}
END_TEST

/* ---- drop ------------------------------------------------------------- */

START_TEST(drop_delivers_written_bytes_then_closes) {
    struct fixture f;
    struct flow client_writes, peer_reads;
    const size_t forwarded_early = 40 * 1024, total = 100 * 1024;

    fixture_open(&f);
    flow_init_sender(&client_writes, &f.client_output, 13, forwarded_early, FINISH_NOTHING);
    struct flow *flows[] = {&client_writes};
    ck_assert(run_flows(&f, flows, 1, NULL, RUN_LIMIT_MS));

    /* The rest goes into the client's output without the loop running: drop must find it
     * there and forward it. */
    client_writes.total = total;
    sender_step(&client_writes);
    ck_assert_uint_eq(client_writes.done, total);
    ck_assert_int_gt(client_output_queued(&f), 0);

    drop_relay(&f);
    ck_assert_uint_eq(relay_count(), 1); /* lingers until forwarded */
    close_if_open(&f.client_output);
    close_if_open(&f.client_input);

    flow_init_receiver(&peer_reads, &f.peer, 13, total, true);
    struct flow *peer_flows[] = {&peer_reads};
    ck_assert(run_flows(&f, peer_flows, 1, no_live_relay, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    ck_assert_int_eq(f.ends.calls[0] + f.ends.calls[1], 0);
    fixture_close(&f);
}
END_TEST

START_TEST(drop_with_unread_input_still_delivers) {
    struct fixture f;
    struct flow peer_sends, client_writes, peer_reads;

    fixture_open(&f);
    /* More than pipe D holds, so some stays unread in the socket. */
    flow_init_sender(&peer_sends, &f.peer, 20, 512 * 1024, FINISH_NOTHING);
    struct flow *flows[] = {&peer_sends};
    ck_assert(run_flows(&f, flows, 1, NULL, RUN_LIMIT_MS));
    (void)run_flows(&f, NULL, 0, NULL, 100);
    flow_init_sender(&client_writes, &f.client_output, 21, 10000, FINISH_NOTHING);
    sender_step(&client_writes);
    ck_assert_uint_eq(client_writes.done, 10000);

    /* Unread input at close(2) would make the kernel reset the connection;
     * the peer must get the client's bytes and a clean EOF instead. */
    drop_relay(&f);
    close_if_open(&f.client_output);
    close_if_open(&f.client_input);
    flow_init_receiver(&peer_reads, &f.peer, 21, 10000, true);
    struct flow *peer_flows[] = {&peer_reads};
    ck_assert(run_flows(&f, peer_flows, 1, no_live_relay, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    fixture_close(&f);
}
END_TEST

START_TEST(drop_lingers_until_peer_accepts_bytes) {
    struct fixture f;
    struct flow peer_reads;

    fixture_open(&f);
    shrink_socket_buffers(&f);
    size_t written = fill_upload_path(&f, 14);

    drop_relay(&f);
    close_if_open(&f.client_output);
    close_if_open(&f.client_input);
    /* The peer reads nothing yet: the dropped relay must still be there. */
    (void)run_flows(&f, NULL, 0, no_live_relay, 200);
    ck_assert_uint_eq(relay_count(), 1);

    flow_init_receiver(&peer_reads, &f.peer, 14, written, true);
    struct flow *flows[] = {&peer_reads};
    ck_assert(run_flows(&f, flows, 1, no_live_relay, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    fixture_close(&f);
}
END_TEST

START_TEST(drop_linger_is_bounded) {
    struct fixture f;
    unsigned char buf[IO_CHUNK];
    size_t received = 0;
    ssize_t n;

    fixture_open(&f);
    shrink_socket_buffers(&f);
    size_t written = fill_upload_path(&f, 15);

    drop_relay(&f);
    close_if_open(&f.client_output);
    close_if_open(&f.client_input);
    /* The peer never reads: the relay gives up after its linger time and
     * resets the connection, so the truncated stream cannot pass for a
     * complete one. */
    ck_assert(run_flows(&f, NULL, 0, no_live_relay, RUN_LIMIT_MS));
    ck_assert_uint_eq(relay_count(), 0);
    for (int i = 0; i < 100000; i++) {
        n = read_now(f.peer, buf, sizeof buf);
        if (n <= 0 && n != -EAGAIN) {
            break;
        }
        if (n > 0) {
            received += (size_t)n;
        } else {
            struct pollfd pfd = {.fd = f.peer, .events = POLLIN};
            (void)poll(&pfd, 1, STEP_POLL_MS);
        }
    }
    ck_assert_int_eq(n, -ECONNRESET);
    ck_assert_uint_lt(received, written);
    fixture_close(&f);
}
END_TEST

/* ---- back-pressure ---------------------------------------------------- */

START_TEST(download_back_pressure_stops_relay) {
    struct fixture f;
    struct flow peer_sends, client_reads;
    const size_t total = 8 * MIB;

    fixture_open(&f);
    flow_init_sender(&peer_sends, &f.peer, 16, total, FINISH_SHUT_WR);
    struct flow *flows[] = {&peer_sends};
    /* The peer sends until everything is in kernel buffers or it blocks. */
    for (int round = 0; round < 200 && !flow_complete(&peer_sends); round++) {
        (void)run_flows(&f, flows, 1, NULL, 50);
        if (peer_sends.blocked) {
            break;
        }
    }
    (void)run_flows(&f, NULL, 0, NULL, 100);

    /* The relay filled pipe D and stopped: nothing more is ready on the
     * loop, so it cannot be spinning. Count wakeups over 20 short polls.
     * A pipe holds 16 buffers; spliced from TCP each references a socket
     * buffer fragment (up to 64 KiB), not a 4 KiB page. */
    int queued = 0, queued_before = 0;
    ck_assert_int_eq(ioctl(f.client_input, FIONREAD, &queued_before), 0);
    ck_assert_int_gt(queued_before, 0);
    ck_assert_int_le(queued_before, PIPE_D_MAX_SLOTS * 64 * 1024);
    ck_assert_int_le(count_loop_wakeups(&f, 20), 2);
    ck_assert_int_eq(ioctl(f.client_input, FIONREAD, &queued), 0);
    ck_assert_int_eq(queued, queued_before);

    /* Once the client reads, everything arrives intact. */
    flow_init_receiver(&client_reads, &f.client_input, 16, total, true);
    struct flow *both[] = {&peer_sends, &client_reads};
    ck_assert(run_flows(&f, both, 2, NULL, RUN_LIMIT_MS));
    assert_flow_intact(&peer_sends);
    assert_flow_intact(&client_reads);
    ck_assert(client_reads.eof);
    fixture_close(&f);
}
END_TEST

START_TEST(upload_back_pressure_blocks_client) {
    struct fixture f;
    struct flow peer_reads;

    fixture_open(&f);
    shrink_socket_buffers(&f);
    size_t written = fill_upload_path(&f, 17);
    ck_assert_int_le(count_loop_wakeups(&f, 20), 2);

    close_if_open(&f.client_output);
    flow_init_receiver(&peer_reads, &f.peer, 17, written, true);
    struct flow *flows[] = {&peer_reads};
    ck_assert(run_flows(&f, flows, 1, upload_end_reported, RUN_LIMIT_MS));
    assert_flow_intact(&peer_reads);
    ck_assert(peer_reads.eof);
    fixture_close(&f);
}
END_TEST

/* ---- urgent data ------------------------------------------------------ */

/* Reads from the client's input until `want` bytes or EOF arrived. */
static size_t client_read_until(struct fixture *f, char *buf, size_t len, size_t want, bool *eof) {
    size_t got = 0;
    double deadline = now_ms() + RUN_LIMIT_MS;

    while (got < want && !*eof && now_ms() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        ssize_t n = read_now(f->client_input, buf + got, len - got);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            *eof = true;
        } else {
            ck_assert_int_eq(n, -EAGAIN);
            struct pollfd pfd = {.fd = uv_backend_fd(&f->loop), .events = POLLIN};
            (void)poll(&pfd, 1, STEP_POLL_MS);
        }
    }
    return got;
}

START_TEST(urgent_data_does_not_stall_download) {
    struct fixture f;
    char buf[64];
    bool eof = false;

    fixture_open(&f);
    ck_assert_int_eq(send(f.peer, "abc", 3, 0), 3);
    ck_assert_int_eq(send(f.peer, "X", 1, MSG_OOB), 1);
    ck_assert_int_eq(send(f.peer, "def", 3, 0), 3);

    /* The urgent byte is not part of the stream (SO_OOBINLINE is off). */
    size_t got = client_read_until(&f, buf, sizeof buf, 6, &eof);
    ck_assert(!eof);
    ck_assert_uint_eq(got, 6);
    ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
    ck_assert_int_le(count_loop_wakeups(&f, 20), 2);

    ck_assert_int_eq(shutdown(f.peer, SHUT_WR), 0);
    got = client_read_until(&f, buf, sizeof buf, sizeof buf, &eof);
    ck_assert(eof);
    ck_assert_uint_eq(got, 0);
    fixture_close(&f);
}
END_TEST

START_TEST(urgent_data_before_fin_does_not_end_download) {
    struct fixture f;
    char buf[64];
    bool eof = false;

    fixture_open(&f);
    /* Everything, FIN included, is queued before the relay first runs, so
     * splice reports 0 at the urgent mark although data follows. */
    ck_assert_int_eq(send(f.peer, "abc", 3, 0), 3);
    ck_assert_int_eq(send(f.peer, "X", 1, MSG_OOB), 1);
    ck_assert_int_eq(send(f.peer, "def", 3, 0), 3);
    ck_assert_int_eq(shutdown(f.peer, SHUT_WR), 0);

    size_t got = client_read_until(&f, buf, sizeof buf, sizeof buf, &eof);
    ck_assert(eof);
    ck_assert_uint_eq(got, 6);
    ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
    fixture_close(&f);
}
END_TEST

static Suite *relay_suite(void) {
    Suite *s = suite_create("relay");
    TCase *tc;

    tc = tcase_create("bulk");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, download_16_mib);
    tcase_add_test(tc, upload_16_mib);
    tcase_add_test(tc, both_directions_16_mib);
    suite_add_tcase(s, tc);

    tc = tcase_create("orderly_end");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, peer_eof_reaches_client_after_all_data);
    tcase_add_test(tc, client_close_reaches_peer_after_all_data);
    tcase_add_test(tc, client_closing_input_stops_download);
    tcase_add_test(tc, client_closing_full_input_stops_download);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, shutdown_send_forwards_exactly_earlier_bytes);
    tcase_add_test(tc, shutdown_send_of_bytes_already_forwardable);
    tcase_add_test(tc, shutdown_send_with_empty_pipe_sends_fin);
    tcase_add_test(tc, shutdown_receive_delivers_no_later_data);
    suite_add_tcase(s, tc);

    tc = tcase_create("failure");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, peer_reset_reports_econnreset);
    tcase_add_test(tc, relay_new_fails_cleanly);
    suite_add_tcase(s, tc);

    tc = tcase_create("drop");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, drop_delivers_written_bytes_then_closes);
    tcase_add_test(tc, drop_with_unread_input_still_delivers);
    tcase_add_test(tc, drop_lingers_until_peer_accepts_bytes);
    tcase_add_test(tc, drop_linger_is_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("back_pressure");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, download_back_pressure_stops_relay);
    tcase_add_test(tc, upload_back_pressure_blocks_client);
    suite_add_tcase(s, tc);

    tc = tcase_create("urgent_data");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, urgent_data_does_not_stall_download);
    tcase_add_test(tc, urgent_data_before_fin_does_not_end_download);
    suite_add_tcase(s, tc);

    return s;
}

int main(void) {
    uv_loop_t warm_up;

    /* The relay's contract: the process ignores SIGPIPE and handles EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    /* libuv opens process-wide descriptors with the first loop; open them
     * here so the per-test descriptor counts see only the test's own. */
    if (uv_loop_init(&warm_up) != 0 || uv_loop_close(&warm_up) != 0) {
        return EXIT_FAILURE;
    }

    static const struct {
        relay_output_kind kind;
        const char *name;
    } outputs[] = {{RELAY_OUTPUT_PIPE, "pipe"}, {RELAY_OUTPUT_SOCKET, "socket pair"}};
    int failed = 0;

    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++) {
        output_under_test = outputs[i].kind;
        printf("client output: %s\n", outputs[i].name);
        SRunner *sr = srunner_create(relay_suite());
        srunner_run_all(sr, CK_NORMAL);
        failed += srunner_ntests_failed(sr);
        srunner_free(sr);
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
