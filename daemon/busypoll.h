/* busypoll.h — runs the daemon's event loop, looking for new events for a
 * short while after each burst before it sleeps in the kernel.
 *
 * Why: a runtime's next request usually follows our reply within
 * microseconds (create, then start-connect; finish, then drop), and so does
 * the next chunk of a busy relay. A loop that sleeps at once must be woken
 * for each of them, and on a virtual machine waking a processor that went
 * idle is a round trip through the hypervisor, which costs more than the
 * request itself. Measured with wasock-bench on a 2-processor VM (medians of
 * five, the same run): no-op round trip 0.32x -> 0.14x of a bare Unix-socket
 * ping-pong, brokered connect 0.31x -> 0.41x of a direct connect, relay
 * download 1.45x -> 1.81x of direct TCP, one getter in flight 45,000 ->
 * 150,000 per second; the rest within the VM's noise (64 getters in flight
 * from 64 threads, where the spinning daemon shares two processors with
 * them: 441,000 against 461,000 per second, medians of four runs).
 *
 * Cost: after the last event of a burst the loop keeps one processor busy
 * for at most the busy-poll time, yielding it (sched_yield) to any other
 * runnable thread between looks. An idle daemon uses no processor time; one
 * that sees an event every millisecond spends at most busy_poll_us/1000 of a
 * processor on looking. libwasock waits for replies the same way.
 */
#ifndef WASOCKD_BUSYPOLL_H
#define WASOCKD_BUSYPOLL_H

#include <uv.h>

/* Default of wasockd --busy-poll, in microseconds: about ten round trips. */
#define BUSYPOLL_DEFAULT_US 50u

/* Largest --busy-poll: beyond a millisecond looking costs more than any
 * wake-up it could save. */
#define BUSYPOLL_MAX_US 1000u

/* Runs `loop` until it has no active handles or requests left, as
 * uv_run(UV_RUN_DEFAULT) does. After every turn that ran callbacks it keeps
 * looking for I/O and due timers for `busy_poll_us` microseconds (the window
 * restarts whenever something was found), then blocks in the kernel as
 * usual. busy_poll_us 0 is exactly UV_RUN_DEFAULT. uv_stop() ends the
 * current turn only (the daemon stops by closing its handles). */
void busypoll_run(uv_loop_t *loop, unsigned busy_poll_us);

#endif
