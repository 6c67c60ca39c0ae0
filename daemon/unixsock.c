/* unixsock.c — creating and removing the daemon's listening Unix socket
 * files (see unixsock.h).
 *
 * Input: paths from the operator (command line); the files found there are
 * examined, never trusted: only a socket nobody accepts on is replaced.
 */
#include "unixsock.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int fill_sockaddr(const char *path, struct sockaddr_un *sun) {
    size_t len = strlen(path);

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (len == 0 || len >= sizeof(sun->sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sun->sun_path, path, len + 1);
    return 0;
}

/* Decides what to do with an existing file at `path`: returns 0 when the
 * path is free (absent, or a stale socket we removed), -EADDRINUSE when a
 * daemon accepts on it, -EEXIST for a file that is not a socket, or
 * another negative errno. */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sun) {
    struct stat st;
    int probe, r;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        r = -errno;
        log_error("cannot examine %s: %s", path, strerror(errno));
        return r;
    }
    if (!S_ISSOCK(st.st_mode)) {
        log_error("%s exists and is not a socket; refusing to replace it", path);
        return -EEXIST;
    }
    /* A socket file outlives its daemon. Only a refused connection proves
     * nobody listens on it; the probe is non-blocking so a full backlog of
     * a live daemon counts as live instead of hanging us. */
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        r = -errno;
        log_error("cannot create a probe socket: %s", strerror(errno));
        return r;
    }
    r = connect(probe, (const struct sockaddr *)sun, sizeof(*sun));
    r = r == 0 ? 0 : errno;
    close(probe);
    switch (r) {
    case 0:
    case EAGAIN:
    case EINPROGRESS:
        log_error("another daemon is already listening on %s", path);
        return -EADDRINUSE;
    case ECONNREFUSED:
        if (unlink(path) < 0 && errno != ENOENT) {
            r = -errno;
            log_error("cannot remove the stale socket %s: %s", path, strerror(errno));
            return r;
        }
        log_info("removed stale socket file %s", path);
        return 0;
    case ENOENT:
        return 0; /* it vanished meanwhile */
    default:
        log_error("cannot probe the existing socket %s: %s", path, strerror(r));
        return -r;
    }
}

int unixsock_listen(const char *path, mode_t mode, int backlog, const char *what,
                    unixsock_file *file) {
    struct sockaddr_un sun;
    struct stat st;
    mode_t old_umask;
    int fd, r;

    memset(file, 0, sizeof(*file));
    r = fill_sockaddr(path, &sun);
    if (r < 0) {
        log_error("%s path \"%s\" is empty or longer than %zu bytes", what, path,
                  sizeof(sun.sun_path) - 1);
        return r;
    }
    r = clear_stale_socket(path, &sun);
    if (r < 0) {
        return r;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        log_error("cannot create the %s: %s", what, strerror(errno));
        return r;
    }
    /* The file is created with the umask applied: binding under a umask
     * that leaves exactly `mode` means there is no moment in which the
     * socket is more open than intended. */
    old_umask = umask(0777 & ~mode);
    r = bind(fd, (const struct sockaddr *)&sun, sizeof(sun));
    r = r < 0 ? -errno : 0;
    umask(old_umask);
    if (r < 0) {
        log_error("cannot bind the %s %s: %s", what, path, strerror(-r));
        close(fd);
        return r;
    }
    if (listen(fd, backlog) < 0) {
        r = -errno;
        log_error("cannot listen on %s: %s", path, strerror(errno));
        unlink(path);
        close(fd);
        return r;
    }
    if (stat(path, &st) == 0) {
        file->dev = st.st_dev;
        file->ino = st.st_ino;
    }
    memcpy(file->path, sun.sun_path, sizeof(file->path));
    file->owned = true;
    return fd;
}

void unixsock_unlink(unixsock_file *file) {
    struct stat st;

    if (!file->owned) {
        return;
    }
    file->owned = false;
    if (lstat(file->path, &st) == 0 && st.st_dev == file->dev && st.st_ino == file->ino) {
        unlink(file->path);
    }
}
