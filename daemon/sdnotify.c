/* sdnotify.c — minimal systemd notify and socket activation support.
 *
 * Input: environment variables set by the service manager (trusted as much
 * as the manager is; still range-checked). Written here rather than linked
 * from libsystemd so the daemon has no hard dependency on it; the protocol
 * is a documented, stable interface (sd_notify(3), sd_listen_fds(3)).
 */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The first descriptor socket activation passes (SD_LISTEN_FDS_START). */
#define SD_LISTEN_FDS_START 3

/* Most descriptors we accept from socket activation: the daemon uses one,
 * and the rest are closed; the cap only bounds that loop. */
#define SD_LISTEN_FDS_MAX 64

int sd_notify_send(const char *state) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    socklen_t len;
    size_t path_len;
    int fd, r;

    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    path_len = strlen(path);
    /* An absolute path, or '@' for the abstract namespace. */
    if ((path[0] != '/' && path[0] != '@') || path_len >= sizeof(sun.sun_path)) {
        return -EINVAL;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, path_len);
    if (path[0] == '@') {
        sun.sun_path[0] = '\0';
    }
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0 ? -errno
                                                                                         : 1;
    close(fd);
    return r;
}

/* Parses a whole decimal number into [0, max]; -1 otherwise. */
static long parse_count(const char *text, long max) {
    char *end;
    long v;

    if (text == NULL || text[0] < '0' || text[0] > '9') {
        return -1;
    }
    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > max) {
        return -1;
    }
    return v;
}

int sd_listen_fd(void) {
    long pid = parse_count(getenv("LISTEN_PID"), 0x7fffffffL);
    long n = parse_count(getenv("LISTEN_FDS"), SD_LISTEN_FDS_MAX);

    if (pid < 0 || (pid_t)pid != getpid() || n < 1) {
        return -1;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    for (long i = 1; i < n; i++) {
        close(SD_LISTEN_FDS_START + (int)i);
    }
    fcntl(SD_LISTEN_FDS_START, F_SETFD, FD_CLOEXEC);
    return SD_LISTEN_FDS_START;
}
