/* bench-control.c — wasock-bench rows for the control path: the cost of one
 * request/reply through the daemon against a bare Unix-socket ping-pong,
 * and how many control operations per second one shared client reaches
 * when 1, 16 or 64 threads keep requests in flight.
 *
 * Trusts libwasock and the daemon it started; every loop stops at a count
 * or at the per-sample time budget.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench-rows.h"

/* Bytes of each ping-pong message of the direct baseline: the size of a
 * small control frame. */
#define CONTROL_PING_BYTES 64

/* Most calls in one sample, whatever the time budget: keeps a loop bounded
 * even if the clock misbehaved. */
#define CONTROL_MAX_CALLS 5000000ul

/* Threads sharing one client in the pipelined row (requests in flight). */
static const unsigned control_in_flight[] = {1, 16, 64};
#define CONTROL_IN_FLIGHT_COUNT (sizeof(control_in_flight) / sizeof(control_in_flight[0]))
#define CONTROL_MAX_THREADS     64

/* ------------------------------------------------------------------ round trip */

/* Echoes CONTROL_PING_BYTES messages on fd until EOF. */
static void *echo_thread(void *arg) {
    int fd = *(int *)arg;
    char buf[CONTROL_PING_BYTES];
    int64_t deadline = bench_now_ns() + (int64_t)BENCH_ECHO_LIFETIME_MS * 1000000;
    while (bench_read_exact(fd, buf, sizeof(buf), deadline) == 0 &&
           bench_write_all(fd, buf, sizeof(buf), deadline) == 0) {
    }
    return NULL;
}

/* One sample of the bare AF_UNIX ping-pong: microseconds per round trip,
 * or a negative errno. */
static double unix_ping_pong_us(void) {
    int sv[2];
    pthread_t echo;
    char buf[CONTROL_PING_BYTES];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        return -errno;
    }
    memset(buf, 'p', sizeof(buf));
    if (pthread_create(&echo, NULL, echo_thread, &sv[1]) != 0) {
        close(sv[0]);
        close(sv[1]);
        return -EAGAIN;
    }
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    int64_t deadline = start + (int64_t)BENCH_WAIT_MS * 1000000;
    unsigned long calls = 0;
    int r = 0;
    while (calls < CONTROL_MAX_CALLS && r == 0) {
        r = bench_write_all(sv[0], buf, sizeof(buf), deadline);
        if (r == 0) {
            r = bench_read_exact(sv[0], buf, sizeof(buf), deadline);
        }
        calls++;
        if (calls % BENCH_CLOCK_EVERY == 0 && bench_now_ns() >= stop) {
            break;
        }
    }
    int64_t end = bench_now_ns();
    shutdown(sv[0], SHUT_RDWR);
    pthread_join(echo, NULL);
    close(sv[0]);
    close(sv[1]);
    if (r < 0) {
        return r;
    }
    return (double)(end - start) / 1e3 / (double)calls;
}

/* One sample of the cheapest libwasock call: microseconds per call. */
static double getter_round_trip_us(wasock_tcp *s, wasock_err *err) {
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    unsigned long calls = 0;
    bool on;
    *err = WASOCK_OK;
    while (calls < CONTROL_MAX_CALLS) {
        *err = wasock_tcp_keep_alive_enabled(s, &on);
        if (*err != WASOCK_OK) {
            return -1;
        }
        calls++;
        if (calls % BENCH_CLOCK_EVERY == 0 && bench_now_ns() >= stop) {
            break;
        }
    }
    return (double)(bench_now_ns() - start) / 1e3 / (double)calls;
}

void bench_row_round_trip(bench_daemon *d) {
    bench_group *g = bench_group_open("round_trip", "no-op round trip", "us per round trip",
                                      BENCH_LOWER_IS_BETTER);
    bench_group_note(g, "libwasock has no public no-op: measured its cheapest call, "
                        "wasock_tcp_keep_alive_enabled (one request, one reply, one "
                        "getsockopt in the daemon), in one thread");
    bench_series *wasockd = bench_series_add(g, "wasockd", "keep-alive getter via libwasock");
    bench_series *direct = bench_series_add(g, "direct", "AF_UNIX ping-pong, 64 B, 2 threads");
    bench_compare(g, wasockd, direct, (bench_target){BENCH_TARGET_AT_MOST, 1.5, "<= 1.5x"});

    wasock_client *c = NULL;
    wasock_tcp *s = NULL;
    wasock_err e = bench_client_open(d, &c);
    if (e == WASOCK_OK) {
        e = wasock_tcp_create(c, WASOCK_IPV4, &s);
    }
    if (e != WASOCK_OK) {
        bench_group_error(g, "cannot open a client and a socket: %s", wasock_err_name(e));
        wasock_client_close(c);
        return;
    }
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        double us = getter_round_trip_us(s, &e);
        if (e != WASOCK_OK) {
            bench_group_error(g, "wasock_tcp_keep_alive_enabled: %s", wasock_err_name(e));
            break;
        }
        bench_series_sample(wasockd, us);
        double direct_us = unix_ping_pong_us();
        if (direct_us < 0) {
            bench_group_error(g, "unix ping-pong: %s", strerror((int)-direct_us));
            break;
        }
        bench_series_sample(direct, direct_us);
    }
    wasock_tcp_drop(s);
    wasock_client_close(c);
}

/* ------------------------------------------------------------------ pipelined */

typedef struct pipeline_run {
    pthread_mutex_t lock;
    pthread_cond_t go_changed;
    bool go; /* guarded by lock: the workers start together */
    atomic_bool stop;
    atomic_ulong calls;
    atomic_int failure; /* first wasock_err seen, WASOCK_OK when none */
} pipeline_run;

typedef struct pipeline_worker {
    pipeline_run *run;
    wasock_tcp *socket; /* one per thread: a resource is not shared by threads */
    pthread_t thread;
} pipeline_worker;

static void *pipeline_thread(void *arg) {
    pipeline_worker *w = arg;
    unsigned long calls = 0;
    bool on;
    pthread_mutex_lock(&w->run->lock);
    while (!w->run->go) {
        pthread_cond_wait(&w->run->go_changed, &w->run->lock);
    }
    pthread_mutex_unlock(&w->run->lock);
    while (!atomic_load_explicit(&w->run->stop, memory_order_relaxed) &&
           calls < CONTROL_MAX_CALLS) {
        wasock_err e = wasock_tcp_keep_alive_enabled(w->socket, &on);
        if (e != WASOCK_OK) {
            int none = WASOCK_OK;
            atomic_compare_exchange_strong(&w->run->failure, &none, (int)e);
            break;
        }
        calls++;
    }
    atomic_fetch_add(&w->run->calls, calls);
    return NULL;
}

/* One sample with `threads` threads, each on its own socket of one shared
 * client: operations per second, or -1 with *err set. */
static double pipelined_ops(wasock_tcp **sockets, unsigned threads, wasock_err *err) {
    pipeline_run run = {.go = false};
    pipeline_worker workers[CONTROL_MAX_THREADS];
    unsigned started = 0;

    *err = WASOCK_OK;
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.go_changed, NULL);
    atomic_init(&run.stop, false);
    atomic_init(&run.calls, 0);
    atomic_init(&run.failure, WASOCK_OK);
    for (; started < threads; started++) {
        workers[started].run = &run;
        workers[started].socket = sockets[started];
        if (pthread_create(&workers[started].thread, NULL, pipeline_thread, &workers[started]) !=
            0) {
            /* Release the threads already waiting and report. */
            atomic_store(&run.stop, true);
            *err = WASOCK_E_OUT_OF_MEMORY;
            break;
        }
    }
    pthread_mutex_lock(&run.lock);
    run.go = true;
    pthread_cond_broadcast(&run.go_changed);
    pthread_mutex_unlock(&run.lock);
    int64_t start = bench_now_ns();
    if (*err == WASOCK_OK) {
        bench_sleep_ms(bench_loop_ms());
    }
    atomic_store(&run.stop, true);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
    }
    int64_t end = bench_now_ns();
    pthread_cond_destroy(&run.go_changed);
    pthread_mutex_destroy(&run.lock);
    if (*err != WASOCK_OK) {
        return -1;
    }
    if (atomic_load(&run.failure) != WASOCK_OK) {
        *err = (wasock_err)atomic_load(&run.failure);
        return -1;
    }
    return (double)atomic_load(&run.calls) / ((double)(end - start) / 1e9);
}

/* One sample of getsockopt(SO_KEEPALIVE) in one thread: calls per second. */
static double direct_getsockopt_ops(int fd) {
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    unsigned long calls = 0;
    while (calls < CONTROL_MAX_CALLS * 4) {
        int on;
        socklen_t len = sizeof(on);
        if (getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len) < 0) {
            return -errno;
        }
        calls++;
        /* A getsockopt costs far less than a round trip: read the clock less. */
        if (calls % (4 * BENCH_CLOCK_EVERY) == 0 && bench_now_ns() >= stop) {
            break;
        }
    }
    return (double)calls / ((double)(bench_now_ns() - start) / 1e9);
}

void bench_row_pipelined(bench_daemon *d) {
    bench_group *g = bench_group_open("pipelined", "pipelined control operations", "ops/s",
                                      BENCH_HIGHER_IS_BETTER);
    bench_group_note(g, "N threads share one client (libwasock pipelines by request id), "
                        "each calling wasock_tcp_keep_alive_enabled on its own socket");
    bench_series *series[CONTROL_IN_FLIGHT_COUNT];
    for (size_t i = 0; i < CONTROL_IN_FLIGHT_COUNT; i++) {
        char key[32], label[64];
        snprintf(key, sizeof(key), "wasockd-%u", control_in_flight[i]);
        snprintf(label, sizeof(label), "keep-alive getter, %u in flight", control_in_flight[i]);
        series[i] = bench_series_add(g, key, label);
    }
    bench_series *direct = bench_series_add(g, "direct", "getsockopt(SO_KEEPALIVE), 1 thread");
    bench_compare(g, series[CONTROL_IN_FLIGHT_COUNT - 1], NULL,
                  (bench_target){BENCH_TARGET_AT_LEAST, 500000, ">= 500,000 ops/s"});
    bench_compare(g, series[CONTROL_IN_FLIGHT_COUNT - 1], direct, (bench_target){0});

    wasock_client *c = NULL;
    wasock_tcp *sockets[CONTROL_MAX_THREADS] = {0};
    unsigned created = 0;
    int fd = -1;
    wasock_err e = bench_client_open(d, &c);
    for (; e == WASOCK_OK && created < CONTROL_MAX_THREADS; created++) {
        e = wasock_tcp_create(c, WASOCK_IPV4, &sockets[created]);
    }
    if (e != WASOCK_OK) {
        bench_group_error(g, "cannot open a client with %d sockets: %s", CONTROL_MAX_THREADS,
                          wasock_err_name(e));
        goto out;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bench_group_error(g, "socket: %s", strerror(errno));
        goto out;
    }
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        for (size_t i = 0; i < CONTROL_IN_FLIGHT_COUNT; i++) {
            double ops = pipelined_ops(sockets, control_in_flight[i], &e);
            if (e != WASOCK_OK) {
                bench_group_error(g, "%u threads: %s", control_in_flight[i], wasock_err_name(e));
                goto out;
            }
            bench_series_sample(series[i], ops);
        }
        double ops = direct_getsockopt_ops(fd);
        if (ops < 0) {
            bench_group_error(g, "getsockopt: %s", strerror((int)-ops));
            goto out;
        }
        bench_series_sample(direct, ops);
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    for (unsigned i = 0; i < CONTROL_MAX_THREADS; i++) {
        wasock_tcp_drop(sockets[i]);
    }
    wasock_client_close(c);
}
