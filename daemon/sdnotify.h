/* sdnotify.h — the systemd service protocol, without libsystemd: readiness
 * notifications (Type=notify) and socket activation (LISTEN_FDS).
 */
#ifndef WASOCKD_SDNOTIFY_H
#define WASOCKD_SDNOTIFY_H

/* Sends one notification ("READY=1", "RELOADING=1", "STOPPING=1", ...) to
 * $NOTIFY_SOCKET. Returns 1 when sent, 0 when not running under a service
 * manager, or a negative errno. */
int sd_notify_send(const char *state);

/* The first socket passed by socket activation, if LISTEN_PID is us and
 * LISTEN_FDS >= 1: returns its descriptor (owned by the caller) and unsets
 * the variables so children never see them. Returns -1 when the daemon was
 * not socket-activated; extra descriptors are closed. */
int sd_listen_fd(void);

#endif
