/* unixsock.h — the daemon's listening Unix sockets on the file system: the
 * client socket (server.c) and the control socket (control.c) are created
 * the same way: stale files replaced, live ones left alone, the mode set
 * without a window in which the socket is more open than intended, and the
 * file removed at exit only if it is still ours.
 */
#ifndef WASOCKD_UNIXSOCK_H
#define WASOCKD_UNIXSOCK_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/* A socket file the daemon created. */
typedef struct unixsock_file {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool owned; /* we created it and unlink it when done */
    dev_t dev;  /* identity of the file we created, so we never */
    ino_t ino;  /* unlink a successor daemon's socket */
} unixsock_file;

/* Creates, binds (with `mode`) and listens on the Unix stream socket `path`
 * (non-blocking, close-on-exec). A stale socket file (nobody accepts on it)
 * is removed first; a live one gives -EADDRINUSE, a non-socket file -EEXIST
 * (never removed), a path too long for sockaddr_un -ENAMETOOLONG. Each
 * failure is logged naming `what` ("client socket", "control socket").
 * Returns the descriptor (the caller's) and fills *file, or a negative
 * errno. */
int unixsock_listen(const char *path, mode_t mode, int backlog, const char *what,
                    unixsock_file *file);

/* Removes the socket file if we created it and it is still the same file.
 * Idempotent. */
void unixsock_unlink(unixsock_file *file);

#endif
