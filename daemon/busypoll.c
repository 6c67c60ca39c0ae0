/* busypoll.c — the daemon's event loop with a short busy-poll after each
 * burst of events (see busypoll.h for why and what it costs). */
#include "busypoll.h"

#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

/* True when a uv_run(UV_RUN_NOWAIT) would run something: the backend epoll
 * set has events (relays' own epoll set is nested in it, so theirs count),
 * or a timer is due, or callbacks are pending. */
static bool loop_has_work(uv_loop_t *loop) {
    struct pollfd backend = {.fd = uv_backend_fd(loop), .events = POLLIN};

    uv_update_time(loop); /* uv_backend_timeout compares timers with it */
    if (uv_backend_timeout(loop) == 0) {
        return true;
    }
    return poll(&backend, 1, 0) > 0;
}

void busypoll_run(uv_loop_t *loop, unsigned busy_poll_us) {
    const uint64_t window_ns = (uint64_t)busy_poll_us * 1000u;

    if (busy_poll_us == 0) {
        uv_run(loop, UV_RUN_DEFAULT);
        return;
    }
    for (;;) {
        uint64_t last_work_ns;

        if (uv_run(loop, UV_RUN_ONCE) == 0) {
            return; /* nothing left: the daemon is stopping */
        }
        last_work_ns = uv_hrtime();
        while (uv_hrtime() - last_work_ns < window_ns) {
            if (!loop_has_work(loop)) {
                sched_yield();
                continue;
            }
            if (uv_run(loop, UV_RUN_NOWAIT) == 0) {
                return;
            }
            last_work_ns = uv_hrtime();
        }
    }
}
