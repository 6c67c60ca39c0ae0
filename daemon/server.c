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
#include <limits.h>
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
#include "unixsock.h"

struct server {
    uv_loop_t *loop;
    policy_ref *pol;
    prompt_broker *broker;
    auditsink audit;

    char policy_path[PATH_MAX]; /* "" for the built-in default policy */
    char logs_dir[PATH_MAX];
    unsigned reloads_ok, reloads_failed;
    uint64_t policy_generation; /* counts policy installs (decision caches) */

    int listen_fd;
    uv_poll_t listen_poll;
    bool listen_poll_open;
    uv_timer_t backoff_timer; /* resumes accepting after descriptor exhaustion */
    bool backoff_timer_open;
    bool stopping;

    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    unixsock_file file; /* the socket file, when we created it */

    struct session **sessions;
    size_t nsessions, sessions_cap;
    unsigned max_sessions_per_uid; /* SERVER_MAX_SESSIONS_PER_UID unless configured */
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
    s->pol = policy_ref_new(initial_policy);
    if (s->pol == NULL || prompt_broker_new(loop, s->pol, &s->broker) < 0) {
        policy_ref_put(s->pol);
        free(s);
        return -ENOMEM;
    }
    s->loop = loop;
    s->listen_fd = -1;
    s->next_session_id = 1;
    s->max_sessions_per_uid = SERVER_MAX_SESSIONS_PER_UID;
    *out = s;
    return 0;
}

uv_loop_t *server_loop(const server *s) {
    return s->loop;
}

const policy *server_policy(const server *s) {
    return policy_ref_policy(s->pol);
}

policy_ref *server_policy_ref(const server *s) {
    return s->pol;
}

uint64_t server_policy_generation(const server *s) {
    return s->policy_generation;
}

prompt_broker *server_broker(const server *s) {
    return s->broker;
}

audit_log *server_audit_log(const server *s) {
    return s->audit.log;
}

const auditsink_config *server_audit_config(const server *s) {
    return &s->audit.config;
}

const char *server_policy_path(const server *s) {
    return s->policy_path;
}

void server_reload_counts(const server *s, unsigned *succeeded, unsigned *failed) {
    *succeeded = s->reloads_ok;
    *failed = s->reloads_failed;
}

/* Swaps in a new policy reference (taking over the caller's reference):
 * the broker follows, and the old policy is freed once nothing pending
 * refers to it. */
static void install_policy_ref(server *s, policy_ref *fresh) {
    policy_ref *old = s->pol;

    s->pol = fresh;
    s->policy_generation++;
    prompt_broker_set_policy(s->broker, fresh);
    policy_ref_put(old);
}

void server_set_policy(server *s, policy *p) {
    policy_ref *fresh = policy_ref_new(p);

    if (fresh == NULL) {
        log_error("out of memory installing a new policy; keeping the running one");
        return;
    }
    install_policy_ref(s, fresh);
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

static int copy_path(char *dst, size_t cap, const char *src) {
    size_t len = strlen(src);

    if (len >= cap) {
        return -ENAMETOOLONG;
    }
    memcpy(dst, src, len + 1);
    return 0;
}

int server_configure(server *s, const char *policy_path, const char *logs_dir, char *err,
                     size_t errlen) {
    auditsink_config config;
    int r;

    if (copy_path(s->policy_path, sizeof(s->policy_path), policy_path ? policy_path : "") < 0 ||
        copy_path(s->logs_dir, sizeof(s->logs_dir), logs_dir) < 0) {
        snprintf(err, errlen, "the policy or logs directory path is too long");
        return -ENAMETOOLONG;
    }
    r = auditsink_config_from_settings(policy_get_settings(server_policy(s)), s->logs_dir,
                                       policy_path == NULL, &config, err, errlen);
    if (r == 0) {
        r = auditsink_apply(&s->audit, &config, err, errlen);
    }
    return r;
}

/* Appends one line to a malloc'd report (NULL stays NULL when out of
 * memory: the log has every message anyway). */
static void report_line(char **report, const char *line) {
    size_t old, add = strlen(line);
    char *grown;

    if (report == NULL) {
        return;
    }
    old = *report != NULL ? strlen(*report) : 0;
    grown = realloc(*report, old + add + 2);
    if (grown == NULL) {
        return;
    }
    memcpy(grown + old, line, add);
    grown[old + add] = '\n';
    grown[old + add + 1] = '\0';
    *report = grown;
}

int server_reload_policy(server *s, char **report) {
    policy *p = NULL;
    policy_ref *fresh;
    char *errors = NULL, why[512];
    auditsink_config config;
    int r;

    if (report != NULL) {
        *report = NULL;
    }
    if (s->policy_path[0] == '\0') {
        log_info("reload: no --policy file to reload; keeping the built-in default policy");
        report_line(report, "no --policy file to reload: the built-in default policy stays");
        s->reloads_failed++;
        return -ENOENT;
    }
    if (policy_load_file(s->policy_path, &p, &errors) != 0) {
        log_error("policy reload from %s failed; keeping the running policy:", s->policy_path);
        for (const char *line = errors; line != NULL && *line != '\0';) {
            const char *end = strchr(line, '\n');
            size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
            if (len >= sizeof(why)) {
                len = sizeof(why) - 1; /* a message that long is cut, not lost */
            }
            if (len > 0) {
                memcpy(why, line, len);
                why[len] = '\0';
                log_error("%s", why);
                report_line(report, why);
            }
            line = end != NULL ? end + 1 : NULL;
        }
        if (errors == NULL || errors[0] == '\0') {
            snprintf(why, sizeof(why), "%.400s: cannot load the policy", s->policy_path);
            log_error("%s", why);
            report_line(report, why);
        }
        free(errors);
        s->reloads_failed++;
        return -EINVAL;
    }
    free(errors);
    r = auditsink_config_from_settings(policy_get_settings(p), s->logs_dir, false, &config, why,
                                       sizeof(why));
    if (r == 0) {
        r = auditsink_apply(&s->audit, &config, why, sizeof(why));
    }
    if (r < 0) {
        log_error("policy reload from %s refused; keeping the running policy: %s", s->policy_path,
                  why);
        report_line(report, why);
        policy_free(p);
        s->reloads_failed++;
        return r;
    }
    fresh = policy_ref_new(p);
    if (fresh == NULL) {
        log_error("policy reload from %s: out of memory; keeping the running policy",
                  s->policy_path);
        report_line(report, "out of memory");
        s->reloads_failed++;
        return -ENOMEM;
    }
    install_policy_ref(s, fresh);
    s->reloads_ok++;
    log_info("policy reloaded from %s", s->policy_path);
    return 0;
}

/* --- creating the socket ------------------------------------------------------ */

int server_listen_path(server *s, const char *path) {
    int fd =
        unixsock_listen(path, SERVER_SOCKET_MODE, SERVER_LISTEN_BACKLOG, "client socket", &s->file);

    if (fd < 0) {
        return fd;
    }
    memcpy(s->path, s->file.path, sizeof(s->path));
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
    if (sessions_of_uid(s, peer.uid) >= s->max_sessions_per_uid) {
        log_write_ratelimited(&accept_log, LOG_LEVEL_WARN,
                              "refusing a connection from pid %ld uid %ld: that uid has %u "
                              "sessions open",
                              (long)peer.pid, (long)peer.uid, s->max_sessions_per_uid);
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

size_t server_session_count(const server *s) {
    return s->nsessions;
}

struct session *server_session_at(const server *s, size_t i) {
    return i < s->nsessions ? s->sessions[i] : NULL;
}

const tenant_usage *server_tenant_usages(const server *s) {
    return s->tenants;
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
    unixsock_unlink(&s->file);
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
    unixsock_unlink(&s->file);
    while (s->tenants != NULL) {
        tenant_usage *next = s->tenants->next;
        lookup_tenant_dns_free(s->tenants->dns);
        free(s->tenants);
        s->tenants = next;
    }
    free(s->sessions);
    prompt_broker_free(s->broker);
    auditsink_close(&s->audit);
    policy_ref_put(s->pol);
    free(s);
}

int server_set_max_sessions_per_uid(server *s, unsigned max) {
    if (max == 0 || max > SERVER_MAX_SESSIONS) {
        return -ERANGE;
    }
    s->max_sessions_per_uid = max;
    return 0;
}
