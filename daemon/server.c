/* server.c — wasockd's control socket: creation (stale-file handling, mode),
 * accepting, peer credentials, session caps, and state shared by sessions.
 *
 * Trust: the socket path and an activated descriptor come from the operator
 * (command line, service manager). Connecting peers are untrusted; their
 * identity is what SO_PEERCRED reports, and the caps below bound how many
 * sessions they can open.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "lookup.h"
#include "session.h"

struct server {
    uv_loop_t *loop;
    policy *pol;
    uint64_t policy_generation; /* counts server_set_policy calls */

    int listen_fd;
    uv_poll_t listen_poll;
    bool listen_poll_open;
    uv_timer_t backoff_timer; /* resumes accepting after descriptor exhaustion */
    bool backoff_timer_open;
    bool stopping;

    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool owns_path; /* we created the file and unlink it when stopping */
    dev_t path_dev; /* identity of the file we created, so we never */
    ino_t path_ino; /* unlink a successor daemon's socket */

    struct session **sessions;
    size_t nsessions, sessions_cap;
    uint64_t next_session_id;

    tenant_usage *tenants;
};

/* A full session table is logged at most this often. */
static log_ratelimit accept_log = LOG_RATELIMIT_INIT(10000, 5);

int server_new(uv_loop_t *loop, policy *initial_policy, server **out) {
    server *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        policy_free(initial_policy);
        return -ENOMEM;
    }
    s->loop = loop;
    s->pol = initial_policy;
    s->listen_fd = -1;
    s->next_session_id = 1;
    *out = s;
    return 0;
}

uv_loop_t *server_loop(const server *s) {
    return s->loop;
}

const policy *server_policy(const server *s) {
    return s->pol;
}

uint64_t server_policy_generation(const server *s) {
    return s->policy_generation;
}

void server_set_policy(server *s, policy *p) {
    policy *old = s->pol;

    s->pol = p;
    s->policy_generation++;
    policy_free(old);
}

const char *server_socket_path(const server *s) {
    return s->path;
}

int server_socket_mode(const server *s) {
    struct stat st;

    if (s->path[0] == '\0' || stat(s->path, &st) < 0) {
        return -1;
    }
    return (int)(st.st_mode & 07777);
}

/* --- creating the socket ------------------------------------------------------ */

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

int server_listen_path(server *s, const char *path) {
    struct sockaddr_un sun;
    struct stat st;
    mode_t old_umask;
    int fd, r;

    r = fill_sockaddr(path, &sun);
    if (r < 0) {
        log_error("socket path \"%s\" is empty or longer than %zu bytes", path,
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
        log_error("cannot create the control socket: %s", strerror(errno));
        return r;
    }
    /* The file is created with the umask applied: binding under a umask
     * that leaves exactly SERVER_SOCKET_MODE means there is no moment in
     * which the socket is more open than intended. */
    old_umask = umask(0777 & ~SERVER_SOCKET_MODE);
    r = bind(fd, (const struct sockaddr *)&sun, sizeof(sun));
    r = r < 0 ? -errno : 0;
    umask(old_umask);
    if (r < 0) {
        log_error("cannot bind the control socket %s: %s", path, strerror(-r));
        close(fd);
        return r;
    }
    if (listen(fd, SERVER_LISTEN_BACKLOG) < 0) {
        r = -errno;
        log_error("cannot listen on %s: %s", path, strerror(errno));
        unlink(path);
        close(fd);
        return r;
    }
    if (stat(path, &st) == 0) {
        s->path_dev = st.st_dev;
        s->path_ino = st.st_ino;
    }
    memcpy(s->path, sun.sun_path, sizeof(s->path));
    s->owns_path = true;
    s->listen_fd = fd;
    return 0;
}

int server_listen_fd(server *s, int fd) {
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    int type = 0, listening = 0;
    socklen_t optlen = sizeof(int);
    int flags;

    memset(&sun, 0, sizeof(sun));
    if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0 || sun.sun_family != AF_UNIX ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) < 0 || type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) < 0 || !listening) {
        log_error("descriptor %d from the service manager is not a listening Unix stream "
                  "socket",
                  fd);
        close(fd);
        return -ENOTSOCK;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int r = -errno;
        log_error("cannot configure the activated socket: %s", strerror(errno));
        close(fd);
        return r;
    }
    if (len > offsetof(struct sockaddr_un, sun_path) && sun.sun_path[0] != '\0') {
        memcpy(s->path, sun.sun_path, sizeof(s->path));
        s->path[sizeof(s->path) - 1] = '\0';
    } else {
        snprintf(s->path, sizeof(s->path), "(abstract or unnamed socket)");
    }
    s->owns_path = false;
    s->listen_fd = fd;
    return 0;
}

/* --- accepting ---------------------------------------------------------------- */

static unsigned sessions_of_uid(const server *s, uid_t uid);
static void on_listen_readable(uv_poll_t *h, int status, int events);

static void on_backoff_over(uv_timer_t *t) {
    server *s = t->data;

    if (!s->stopping && s->listen_poll_open) {
        uv_poll_start(&s->listen_poll, UV_READABLE, on_listen_readable);
    }
}

/* Out of descriptors or memory: stop accepting for a moment instead of
 * spinning on a listening socket that stays readable. */
static void accept_backoff(server *s, int err) {
    log_write_ratelimited(&accept_log, LOG_LEVEL_WARN,
                          "cannot accept a connection: %s; pausing for %d ms", strerror(err),
                          SERVER_ACCEPT_BACKOFF_MS);
    uv_poll_stop(&s->listen_poll);
    uv_timer_start(&s->backoff_timer, on_backoff_over, SERVER_ACCEPT_BACKOFF_MS, 0);
}

static void accept_one(server *s, int fd) {
    struct ucred peer;
    socklen_t len = sizeof(peer);
    struct session *sess;
    int r;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 || len != sizeof(peer)) {
        log_write_ratelimited(&accept_log, LOG_LEVEL_WARN,
                              "cannot read the credentials of a new connection: %s",
                              strerror(errno));
        close(fd);
        return;
    }
    if (s->nsessions >= SERVER_MAX_SESSIONS) {
        log_write_ratelimited(&accept_log, LOG_LEVEL_WARN,
                              "refusing a connection from pid %ld uid %ld: %d sessions open",
                              (long)peer.pid, (long)peer.uid, SERVER_MAX_SESSIONS);
        close(fd);
        return;
    }
    if (sessions_of_uid(s, peer.uid) >= SERVER_MAX_SESSIONS_PER_UID) {
        log_write_ratelimited(&accept_log, LOG_LEVEL_WARN,
                              "refusing a connection from pid %ld uid %ld: that uid has %d "
                              "sessions open",
                              (long)peer.pid, (long)peer.uid, SERVER_MAX_SESSIONS_PER_UID);
        close(fd);
        return;
    }
    r = session_new(s, fd, &peer, s->next_session_id++, &sess);
    if (r < 0) {
        log_write_ratelimited(&accept_log, LOG_LEVEL_WARN, "cannot start a session for pid %ld: %s",
                              (long)peer.pid, strerror(-r));
    }
}

static void on_listen_readable(uv_poll_t *h, int status, int events) {
    server *s = h->data;

    (void)events;
    if (status < 0) {
        log_error("polling the control socket failed: %s", uv_strerror(status));
        return;
    }
    for (int i = 0; i < SERVER_ACCEPT_BATCH && !s->stopping; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            switch (errno) {
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
                continue; /* that client gave up; try the next */
            case EAGAIN:
                return;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                accept_backoff(s, errno);
                return;
            default:
                log_write_ratelimited(&accept_log, LOG_LEVEL_ERROR, "accept failed: %s",
                                      strerror(errno));
                return;
            }
        }
        accept_one(s, fd);
    }
}

int server_start(server *s) {
    int r;

    if (s->listen_fd < 0) {
        return -EBADF;
    }
    r = uv_poll_init(s->loop, &s->listen_poll, s->listen_fd);
    if (r < 0) {
        log_error("cannot watch the control socket: %s", uv_strerror(r));
        return r;
    }
    s->listen_poll.data = s;
    s->listen_poll_open = true;
    uv_timer_init(s->loop, &s->backoff_timer);
    s->backoff_timer.data = s;
    s->backoff_timer_open = true;
    r = uv_poll_start(&s->listen_poll, UV_READABLE, on_listen_readable);
    if (r < 0) {
        log_error("cannot watch the control socket: %s", uv_strerror(r));
        return r;
    }
    return 0;
}

/* --- sessions ------------------------------------------------------------------- */

static unsigned sessions_of_uid(const server *s, uid_t uid) {
    unsigned n = 0;

    for (size_t i = 0; i < s->nsessions; i++) {
        if (session_peer(s->sessions[i])->uid == uid) {
            n++;
        }
    }
    return n;
}

int server_add_session(server *s, struct session *sess) {
    if (s->nsessions == s->sessions_cap) {
        size_t cap = s->sessions_cap == 0 ? 16 : s->sessions_cap * 2;
        struct session **grown = realloc(s->sessions, cap * sizeof(*grown));
        if (grown == NULL) {
            return -ENOMEM;
        }
        s->sessions = grown;
        s->sessions_cap = cap;
    }
    s->sessions[s->nsessions++] = sess;
    return 0;
}

void server_remove_session(server *s, struct session *sess) {
    for (size_t i = 0; i < s->nsessions; i++) {
        if (s->sessions[i] == sess) {
            s->sessions[i] = s->sessions[--s->nsessions];
            return;
        }
    }
}

tenant_usage *server_tenant_usage_acquire(server *s, const char *tenant) {
    tenant_usage *u;

    for (u = s->tenants; u != NULL; u = u->next) {
        if (strcmp(u->name, tenant) == 0) {
            u->refs++;
            return u;
        }
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        return NULL;
    }
    snprintf(u->name, sizeof(u->name), "%s", tenant);
    u->refs = 1;
    u->next = s->tenants;
    s->tenants = u;
    return u;
}

void server_tenant_usage_release(server *s, tenant_usage *u) {
    if (--u->refs > 0) {
        return;
    }
    for (tenant_usage **p = &s->tenants; *p != NULL; p = &(*p)->next) {
        if (*p == u) {
            *p = u->next;
            break;
        }
    }
    lookup_tenant_dns_free(u->dns);
    free(u);
}

/* --- stopping --------------------------------------------------------------------- */

/* Removes the socket file if it is still the one we created (a successor
 * daemon may already have replaced it). */
static void unlink_own_socket(server *s) {
    struct stat st;

    if (!s->owns_path) {
        return;
    }
    s->owns_path = false;
    if (lstat(s->path, &st) == 0 && st.st_dev == s->path_dev && st.st_ino == s->path_ino) {
        unlink(s->path);
    }
}

void server_stop(server *s) {
    if (s->stopping) {
        return;
    }
    s->stopping = true;
    if (s->listen_poll_open) {
        uv_close((uv_handle_t *)&s->listen_poll, NULL);
        s->listen_poll_open = false;
    }
    if (s->backoff_timer_open) {
        uv_close((uv_handle_t *)&s->backoff_timer, NULL);
        s->backoff_timer_open = false;
    }
    /* The poll handle is stopped synchronously by uv_close, so the
     * descriptor can go now. */
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    unlink_own_socket(s);
    /* session_close never frees synchronously, so the array stays intact
     * while we walk it. */
    for (size_t i = 0; i < s->nsessions; i++) {
        session_close(s->sessions[i], "daemon stopping");
    }
}

void server_free(server *s) {
    if (s == NULL) {
        return;
    }
    if (s->nsessions > 0) {
        log_warn("%zu sessions still open at exit", s->nsessions);
    }
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
    }
    unlink_own_socket(s);
    while (s->tenants != NULL) {
        tenant_usage *next = s->tenants->next;
        lookup_tenant_dns_free(s->tenants->dns);
        free(s->tenants);
        s->tenants = next;
    }
    free(s->sessions);
    policy_free(s->pol);
    free(s);
}
