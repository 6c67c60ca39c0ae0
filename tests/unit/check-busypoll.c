/* check-busypoll.c — unit tests of the daemon's loop runner
 * (daemon/busypoll.c) on a real libuv loop.
 *
 * What must hold in both modes (busy-poll off and on): the runner returns
 * when the loop has nothing left, runs every callback its events call for,
 * and runs due timers. With busy-poll on, the loop thread must not sleep
 * between events that follow each other closely; that is observed through
 * the thread's voluntary context switches (a thread that only yields
 * counts involuntary ones), with generous margins and retries because the
 * events come from another thread that a loaded machine may delay.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "busypoll.h"

/* Check's per-test timeout: every loop here ends in well under a second. */
#define TEST_TIMEOUT_S 30

/* Bytes the writer thread sends, one per write. */
#define EVENT_COUNT 200

/* Pause between two writes: well inside the busy-poll window below. */
#define EVENT_GAP_US 100

/* The busy-poll window of the "on" runs: the longest allowed. */
#define WINDOW_US BUSYPOLL_MAX_US

/* Sleeps the loop thread may take in an "on" run (a writer delayed past the
 * window by the machine), and attempts before the property counts as lost. */
#define ON_SLEEPS_MAX (EVENT_COUNT / 4)
#define ON_ATTEMPTS   3

/* Chained timers of the timer test. */
#define TIMER_CHAIN 20

/* ---- a writer thread and a reading poll handle ------------------------- */

typedef struct events {
    int fds[2]; /* [0] read by the loop, [1] written by the thread */
    uv_poll_t poll;
    pthread_t writer;
    unsigned received;
} events;

static void *writer_thread(void *arg) {
    events *e = arg;
    struct timespec gap = {.tv_sec = 0, .tv_nsec = EVENT_GAP_US * 1000L};

    for (unsigned i = 0; i < EVENT_COUNT; i++) {
        char byte = (char)i;
        while (write(e->fds[1], &byte, 1) < 0 && errno == EINTR) {
        }
        nanosleep(&gap, NULL);
    }
    shutdown(e->fds[1], SHUT_WR); /* EOF ends the reader, and the loop */
    return NULL;
}

static void on_poll_closed(uv_handle_t *h) {
    (void)h;
}

static void on_readable(uv_poll_t *h, int status, int ready) {
    events *e = h->data;
    char buf[64];
    ssize_t n;

    (void)ready;
    ck_assert_int_eq(status, 0);
    n = read(e->fds[0], buf, sizeof(buf));
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++) {
            /* in order, none lost or repeated */
            ck_assert_int_eq((unsigned char)buf[i], (unsigned char)(e->received + (unsigned)i));
        }
        e->received += (unsigned)n;
    } else if (n == 0) {
        uv_close((uv_handle_t *)h, on_poll_closed);
    }
}

static long voluntary_switches(void) {
    struct rusage ru;

    ck_assert_int_eq(getrusage(RUSAGE_THREAD, &ru), 0);
    return ru.ru_nvcsw;
}

/* Runs the loop over EVENT_COUNT bytes from a writer thread with the given
 * busy-poll; returns the loop thread's voluntary context switches. */
static long run_events(unsigned busy_poll_us) {
    uv_loop_t loop;
    events e;
    long before, sleeps;

    memset(&e, 0, sizeof(e));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, e.fds), 0);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(uv_poll_init(&loop, &e.poll, e.fds[0]), 0);
    e.poll.data = &e;
    ck_assert_int_eq(uv_poll_start(&e.poll, UV_READABLE, on_readable), 0);
    before = voluntary_switches();
    ck_assert_int_eq(pthread_create(&e.writer, NULL, writer_thread, &e), 0);
    busypoll_run(&loop, busy_poll_us);
    sleeps = voluntary_switches() - before;
    ck_assert_int_eq(pthread_join(e.writer, NULL), 0);
    ck_assert_uint_eq(e.received, EVENT_COUNT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    close(e.fds[0]);
    close(e.fds[1]);
    return sleeps;
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(test_empty_loop_returns) {
    static const unsigned windows[] = {0, BUSYPOLL_DEFAULT_US, BUSYPOLL_MAX_US};

    for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
        uv_loop_t loop;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        busypoll_run(&loop, windows[i]);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
    }
}
END_TEST

/* Every byte is read in order and the runner returns once the handle is
 * closed, with the loop sleeping between events when busy-poll is off. */
START_TEST(test_events_without_busy_poll) {
    long sleeps = run_events(0);

    /* With 100 us between writes a loop that blocks at once sleeps for
     * nearly every byte; half is a wide margin. */
    ck_assert_msg(sleeps >= EVENT_COUNT / 2, "the loop slept %ld times for %d events", sleeps,
                  EVENT_COUNT);
}
END_TEST

/* The same with busy-poll on: every byte, and (in one of a few attempts)
 * hardly a sleep, because each byte arrives inside the window. */
START_TEST(test_events_with_busy_poll) {
    long sleeps = 0;

    for (int attempt = 0; attempt < ON_ATTEMPTS; attempt++) {
        sleeps = run_events(WINDOW_US);
        if (sleeps <= ON_SLEEPS_MAX) {
            break;
        }
    }
    ck_assert_msg(sleeps <= ON_SLEEPS_MAX, "the loop slept %ld times for %d events", sleeps,
                  EVENT_COUNT);
}
END_TEST

typedef struct timer_chain {
    uv_timer_t timer;
    unsigned fired;
} timer_chain;

static void on_timer_closed(uv_handle_t *h) {
    (void)h;
}

static void on_chain_timer(uv_timer_t *t) {
    timer_chain *c = t->data;

    if (++c->fired < TIMER_CHAIN) {
        ck_assert_int_eq(uv_timer_start(t, on_chain_timer, 1, 0), 0);
    } else {
        uv_close((uv_handle_t *)t, on_timer_closed);
    }
}

/* Timers that fall due while the runner looks are run, in both modes, and
 * the runner returns after the last one closed its handle. */
START_TEST(test_timers_fire) {
    static const unsigned windows[] = {0, BUSYPOLL_MAX_US};

    for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
        uv_loop_t loop;
        timer_chain c = {.fired = 0};

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(uv_timer_init(&loop, &c.timer), 0);
        c.timer.data = &c;
        ck_assert_int_eq(uv_timer_start(&c.timer, on_chain_timer, 1, 0), 0);
        busypoll_run(&loop, windows[i]);
        ck_assert_uint_eq(c.fired, TIMER_CHAIN);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
    }
}
END_TEST

static Suite *busypoll_suite(void) {
    Suite *s = suite_create("busypoll");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_test(tc, test_empty_loop_returns);
    tcase_add_test(tc, test_events_without_busy_poll);
    tcase_add_test(tc, test_events_with_busy_poll);
    tcase_add_test(tc, test_timers_fire);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(busypoll_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
