/* server.h — the daemon's listening Unix socket, its sessions and shared
 * state (the current policy, per-tenant usage counters).
 *
 * One server per daemon. It accepts client connections, identifies each
 * peer with SO_PEERCRED, enforces the session caps below and hands every
 * connection to a new session (session.h). Everything runs on one libuv
 * loop; nothing here blocks.
 */
#ifndef WASOCKD_SERVER_H
#define WASOCKD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "auditsink.h"
#include "policy.h"
#include "policyref.h"
#include "prompt.h"
#include "proto.h"

/* Sessions the daemon serves at once. Each session costs a descriptor, a
 * read buffer of a few frames and its sockets; a host runs a handful of
 * runtimes, each with a few connections, so 1024 is generous while keeping
 * a runaway client far from the descriptor limit. */
#define SERVER_MAX_SESSIONS 1024

/* Sessions one uid may hold at once: a quarter of the total, so one local
 * user (or one compromised runtime) cannot lock every other user out. */
#define SERVER_MAX_SESSIONS_PER_UID 256

/* Connections accepted per wakeup of the listening socket before the loop
 * serves other sessions again (fairness under a connection storm). */
#define SERVER_ACCEPT_BATCH 32

/* How long accepting pauses when the daemon is out of descriptors or
 * memory: the listening socket stays readable, so accepting again at once
 * would spin the loop without making progress. */
#define SERVER_ACCEPT_BACKOFF_MS 200

/* listen(2) backlog of the control socket: clients connect in bursts when
 * a host starts many runtimes at once. */
#define SERVER_LISTEN_BACKLOG 128

/* Permissions of the control socket: owner and group may connect. The
 * operator grants access through the socket's group. */
#define SERVER_SOCKET_MODE 0660

typedef struct server server;
struct session;
struct tenant_dns;

/* Usage counters of one tenant, shared by all its sessions: the tenant's
 * policy limits (policy_tenant_limits) apply across sessions. */
typedef struct tenant_usage {
    char name[PROTO_TENANT_MAX + 1];
    unsigned refs;        /* sessions acting for this tenant */
    unsigned sockets;     /* open sockets of every kind */
    unsigned listeners;   /* sockets listening or starting to listen */
    unsigned pending_ops; /* operations still in progress: kernel connects, prompts, delays */

    /* Name bindings and lookups in flight (lookup.h); NULL until the first
     * lookup. Freed with the counters. */
    struct tenant_dns *dns;
    struct tenant_usage *next;
} tenant_usage;

/* Creates the server; takes ownership of `initial_policy` (never NULL).
 * Returns 0 and *out (free with server_free), or -ENOMEM (policy freed). */
int server_new(uv_loop_t *loop, policy *initial_policy, server **out);

/* Says where the policy came from (policy_path; NULL for the built-in
 * default) and where relative audit files go (logs_dir), and opens the
 * audit log the policy asks for (the built-in default audits to the
 * journal only). Returns 0, or a negative errno with a one-line reason in
 * err: the daemon must not run without the audit log its policy names. */
int server_configure(server *s, const char *policy_path, const char *logs_dir, char *err,
                     size_t errlen);

/* Loads the policy file anew (SIGHUP, the control socket's `reload`). On
 * success the new policy is in force for every decision from now on, the
 * audit log follows its settings and remembered answers whose rule vanished
 * are forgotten. On failure (file:line:column errors, an audit log that
 * cannot be opened, no file to reload) the running policy stays. *report
 * (may be NULL) receives the messages, one per line, malloc'd (caller
 * frees; NULL when out of memory). Returns 0 or a negative errno. */
int server_reload_policy(server *s, char **report);

/* Creates, binds (mode SERVER_SOCKET_MODE) and listens on the Unix socket
 * `path`. A stale socket file (nobody accepts on it) is removed first; a
 * live one (another daemon) gives -EADDRINUSE, a non-socket file -EEXIST
 * (never removed), a path too long for sockaddr_un -ENAMETOOLONG. Each
 * failure is logged with its reason. The server unlinks the file when it
 * stops. */
int server_listen_path(server *s, const char *path);

/* Uses an already listening AF_UNIX stream socket (systemd socket
 * activation). Takes ownership of fd on success and on failure. The socket
 * file belongs to the service manager and is never unlinked. */
int server_listen_fd(server *s, int fd);

/* Starts accepting connections. */
int server_start(server *s);

/* Changes the cap of sessions one uid may hold (default
 * SERVER_MAX_SESSIONS_PER_UID), within [1, SERVER_MAX_SESSIONS]: for hosts
 * where one runtime user legitimately opens many sessions. Returns 0 or
 * -ERANGE. */
int server_set_max_sessions_per_uid(server *s, unsigned max);

/* The socket path (for the startup message) and its permission bits as
 * the file system shows them (-1 if unknown). */
const char *server_socket_path(const server *s);
int server_socket_mode(const server *s);

/* Replaces the policy: takes ownership of p and frees the previous one.
 * Sessions see the new policy from their next decision on. */
void server_set_policy(server *s, policy *p);

/* The current policy, borrowed until the next server_set_policy: use it
 * within one loop callback, never keep it. */
const policy *server_policy(const server *s);

/* The current policy's reference: take one (policy_ref_get) to keep it
 * across a reload. */
policy_ref *server_policy_ref(const server *s);

/* The prompt broker (prompt.h), owned by the server. */
prompt_broker *server_broker(const server *s);

/* The audit log, or NULL when none is open. Borrowed for one callback. */
audit_log *server_audit_log(const server *s);

/* How the audit log is configured (for status output). */
const auditsink_config *server_audit_config(const server *s);

/* The policy file ("" for the built-in default), and how many reloads
 * succeeded and failed. */
const char *server_policy_path(const server *s);
void server_reload_counts(const server *s, unsigned *succeeded, unsigned *failed);

/* The sessions, for listing: valid until the loop runs again. */
size_t server_session_count(const server *s);
struct session *server_session_at(const server *s, size_t i);

/* The tenants with at least one session (a list linked by `next`). */
const tenant_usage *server_tenant_usages(const server *s);

/* A number that changes whenever server_set_policy installs a policy: a
 * cache of policy decisions compares it to know when it is stale (a freed
 * policy's address may be reused by the next one). */
uint64_t server_policy_generation(const server *s);

uv_loop_t *server_loop(const server *s);

/* Stops accepting, closes every session (their sockets, relays, pending
 * operations and prompts) and unlinks the socket file. Handles close
 * asynchronously: run the loop until it ends, then call server_free.
 * Idempotent. */
void server_stop(server *s);

/* Frees the server, its policy, prompt broker and audit log. Call after
 * server_stop (and after every prompt agent detached) and after the loop
 * has run every close callback. NULL is allowed. */
void server_free(server *s);

/* --- for sessions ---------------------------------------------------------- */

/* A new session registers itself; the server counts it against the caps.
 * Returns 0 or -ENOMEM. */
int server_add_session(server *s, struct session *sess);

/* A session that has been freed unregisters itself. */
void server_remove_session(server *s, struct session *sess);

/* The usage counters of `tenant`, created on first use; the caller holds a
 * reference until server_tenant_usage_release. NULL when out of memory. */
tenant_usage *server_tenant_usage_acquire(server *s, const char *tenant);
void server_tenant_usage_release(server *s, tenant_usage *u);

#endif
