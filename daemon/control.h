/* control.h — the control socket: operators' commands and prompt agents.
 *
 * A Unix stream socket (default: control.sock next to the client socket,
 * mode 0660) speaking the line protocol of proto/AGENT.md, so `wasockctl`
 * and even socat can use it:
 * - admin commands (`status`, `sessions`, `reload`, `explain`) for root and
 *   the daemon's own uid;
 * - `agent [NAME]` turns the connection into a prompt agent (prompt.h) for
 *   peers listed under the policy's prompt_agents.
 * Peers are identified by SO_PEERCRED when they connect; a peer that is
 * neither is refused at once. Lines are bounded (CTL_LINE_MAX), as is the
 * output a connection may leave unread; a peer that sends anything but text
 * lines, or does not read, is dropped without disturbing anything else.
 */
#ifndef WASOCKD_CONTROL_H
#define WASOCKD_CONTROL_H

#include <uv.h>

#include "server.h"

/* Permissions of the control socket file: owner and group. Access is
 * decided per command by the peer's uid; the mode only keeps other users
 * from connecting at all. */
#define CONTROL_SOCKET_MODE 0660

/* Connections at once: a few operators and agents. Each costs a descriptor
 * and up to CONTROL_OUTPUT_MAX of buffered output. */
#define CONTROL_MAX_CONNECTIONS 64

/* Output one connection may leave unread: thousands of prompt lines. An
 * agent that reads nothing for that long is dropped (its prompts go to
 * other agents or their on_no_agent) instead of growing the daemon. */
#define CONTROL_OUTPUT_MAX (256u * 1024u)

/* listen(2) backlog: operators and agents connect one at a time. */
#define CONTROL_LISTEN_BACKLOG 16

typedef struct control control;

/* Reloads the policy for the `reload` command (the daemon's own reload,
 * which also tells the service manager). Returns 0 or a negative errno;
 * *report as server_reload_policy gives it (caller frees). */
typedef int (*control_reload_fn)(void *opaque, char **report);

/* Creates the control socket at `path` (stale files replaced, live ones
 * refused, like the client socket) for server srv and starts accepting.
 * Returns 0 and *out, or a negative errno (logged). */
int control_start(uv_loop_t *loop, server *srv, const char *path, control_reload_fn reload,
                  void *reload_opaque, control **out);

/* The socket path. */
const char *control_path(const control *c);

/* Stops accepting, closes every connection (agents detach from the
 * broker) and removes the socket file. Handles close asynchronously: run
 * the loop, then control_free. Idempotent. */
void control_stop(control *c);

/* Frees the control socket after control_stop and the loop's close
 * callbacks. NULL allowed. */
void control_free(control *c);

#endif
