/* main.c — wasockd: command line, policy loading, signals and systemd glue;
 * then hands over to the libuv loop (server.c).
 *
 * Input: the command line, environment and policy file come from the
 * operator (trusted, but still checked and reported with file:line:col).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "busypoll.h"
#include "control.h"
#include "log.h"
#include "lookup.h"
#include "policy.h"
#include "relay.h"
#include "sdnotify.h"
#include "server.h"
#include "wasock-config.h"

/* Where relative audit files go when neither --logs-dir nor systemd's
 * $LOGS_DIRECTORY says (the unit's LogsDirectory=wasockd). */
#define DEFAULT_LOGS_DIR "/var/log/wasockd"

/* The control socket's file name next to the client socket. */
#define CONTROL_SOCKET_NAME "control.sock"

typedef struct options {
    const char *socket_path;
    const char *policy_path;  /* NULL: built-in default policy */
    const char *check_policy; /* --check-policy FILE */
    const char *control_path; /* NULL: next to the client socket */
    bool no_control_socket;   /* --no-control-socket */
    const char *logs_dir;
    unsigned max_sessions_per_uid; /* --max-sessions-per-uid; 0: the default */
    unsigned busy_poll_us;         /* --busy-poll */
    log_level level;
} options;

/* Everything the signal handlers need. */
typedef struct daemon_state {
    options opts;
    server *srv;
    control *ctl;
    uv_signal_t sigint, sigterm, sighup;
    bool stopping;
} daemon_state;

static void print_usage(FILE *out) {
    fprintf(out,
            "Usage: wasockd [OPTION]...\n"
            "Perform WASI socket operations for WebAssembly runtimes (libwasock clients),\n"
            "as the operator's policy allows.\n"
            "\n"
            "  -s, --socket PATH        listen on this Unix socket (default: $WASOCK_SOCKET,\n"
            "                           else %s); a stale socket file is\n"
            "                           replaced, a live one is an error\n"
            "  -p, --policy FILE        load the YAML policy from FILE; SIGHUP reloads it\n"
            "                           (without it: a built-in default allowing the\n"
            "                           invoking user and root, loopback only)\n"
            "  -c, --check-policy FILE  check FILE, print its errors or \"FILE: OK\", and\n"
            "                           exit (0 valid, 1 invalid)\n"
            "  -C, --control-socket PATH\n"
            "                           the control socket for wasockctl and prompt agents\n"
            "                           (default: %s in the client socket's directory;\n"
            "                           mode 0660; see proto/AGENT.md)\n"
            "      --no-control-socket  run without a control socket (no prompt agents:\n"
            "                           prompts apply their on_no_agent)\n"
            "  -L, --logs-dir DIR       where the policy's audit file goes (default:\n"
            "                           $LOGS_DIRECTORY, else %s); the built-in\n"
            "                           default policy audits to stderr only\n"
            "      --max-sessions-per-uid N\n"
            "                           sessions one uid may hold at once (default %d,\n"
            "                           at most %d)\n"
            "      --busy-poll USEC     after a burst of events, keep looking for more for\n"
            "                           USEC microseconds before sleeping (default %u,\n"
            "                           at most %u, 0: sleep at once); saves a costly\n"
            "                           wake-up per request on virtual machines, costs\n"
            "                           processor time only while clients are busy\n"
            "  -l, --log-level LEVEL    error, warn, info (default) or debug\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Signals: SIGINT/SIGTERM stop (sessions are closed, the socket file removed);\n"
            "SIGHUP (or `wasockctl reload`) reloads the --policy file (a broken file is\n"
            "refused and the running policy kept).\n"
            "systemd: Type=notify readiness via $NOTIFY_SOCKET; socket activation via\n"
            "$LISTEN_FDS (the activated socket replaces --socket).\n",
            WASOCK_DEFAULT_SOCKET, CONTROL_SOCKET_NAME, DEFAULT_LOGS_DIR,
            SERVER_MAX_SESSIONS_PER_UID, SERVER_MAX_SESSIONS, BUSYPOLL_DEFAULT_US, BUSYPOLL_MAX_US);
}

/* getopt codes of the long-only options. */
#define OPT_MAX_SESSIONS_PER_UID 0x100
#define OPT_BUSY_POLL            0x101

/* A decimal number in [min, max] (no sign, nothing after it): 0 with *out
 * set, or -EINVAL. Serves the numeric options. */
static int parse_unsigned_in_range(const char *text, unsigned long min, unsigned long max,
                                   unsigned *out) {
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max) {
        return -EINVAL;
    }
    *out = (unsigned)v;
    return 0;
}

/* Parses the command line. Returns 0 to run, 1 when main should exit with
 * *exit_code (help, version, usage errors). */
static int parse_options(int argc, char **argv, options *o, int *exit_code) {
    static const struct option long_opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"policy", required_argument, NULL, 'p'},
        {"check-policy", required_argument, NULL, 'c'},
        {"control-socket", required_argument, NULL, 'C'},
        {"no-control-socket", no_argument, NULL, 'N'},
        {"logs-dir", required_argument, NULL, 'L'},
        {"log-level", required_argument, NULL, 'l'},
        {"max-sessions-per-uid", required_argument, NULL, OPT_MAX_SESSIONS_PER_UID},
        {"busy-poll", required_argument, NULL, OPT_BUSY_POLL},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *env_socket = getenv("WASOCK_SOCKET");
    const char *env_logs = getenv("LOGS_DIRECTORY");
    int c;

    memset(o, 0, sizeof(*o));
    o->socket_path =
        env_socket != NULL && env_socket[0] != '\0' ? env_socket : WASOCK_DEFAULT_SOCKET;
    o->level = LOG_LEVEL_INFO;
    o->busy_poll_us = BUSYPOLL_DEFAULT_US;
    /* systemd may list several directories, separated by ':'; ours is the
     * only one the unit names. */
    o->logs_dir = env_logs != NULL && env_logs[0] != '\0' && strchr(env_logs, ':') == NULL
                      ? env_logs
                      : DEFAULT_LOGS_DIR;
    while ((c = getopt_long(argc, argv, "s:p:c:C:L:l:Vh", long_opts, NULL)) != -1) {
        switch (c) {
        case 's':
            o->socket_path = optarg;
            break;
        case 'p':
            o->policy_path = optarg;
            break;
        case 'c':
            o->check_policy = optarg;
            break;
        case 'C':
            o->control_path = optarg;
            break;
        case 'N':
            o->no_control_socket = true;
            break;
        case 'L':
            o->logs_dir = optarg;
            break;
        case OPT_MAX_SESSIONS_PER_UID:
            if (parse_unsigned_in_range(optarg, 1, SERVER_MAX_SESSIONS, &o->max_sessions_per_uid) <
                0) {
                fprintf(stderr, "wasockd: --max-sessions-per-uid takes a number from 1 to %d\n",
                        SERVER_MAX_SESSIONS);
                *exit_code = 2;
                return 1;
            }
            break;
        case OPT_BUSY_POLL:
            if (parse_unsigned_in_range(optarg, 0, BUSYPOLL_MAX_US, &o->busy_poll_us) < 0) {
                fprintf(stderr, "wasockd: --busy-poll takes microseconds from 0 to %u\n",
                        BUSYPOLL_MAX_US);
                *exit_code = 2;
                return 1;
            }
            break;
        case 'l':
            if (log_level_parse(optarg, &o->level) < 0) {
                fprintf(stderr, "wasockd: unknown log level \"%s\" (error, warn, info, debug)\n",
                        optarg);
                *exit_code = 2;
                return 1;
            }
            break;
        case 'V':
            printf("wasockd %s\n", WASOCK_VERSION);
            *exit_code = 0;
            return 1;
        case 'h':
            print_usage(stdout);
            *exit_code = 0;
            return 1;
        default:
            fprintf(stderr, "Try 'wasockd --help' for more information.\n");
            *exit_code = 2;
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wasockd: unexpected argument \"%s\"\n", argv[optind]);
        fprintf(stderr, "Try 'wasockd --help' for more information.\n");
        *exit_code = 2;
        return 1;
    }
    return 0;
}

/* Logs each line of a policy loader's diagnostics (newline-separated). */
static void log_policy_errors(const char *errors) {
    const char *line = errors;

    while (line != NULL && *line != '\0') {
        const char *end = strchr(line, '\n');
        int len = end != NULL ? (int)(end - line) : (int)strlen(line);
        if (len > 0) {
            log_error("%.*s", len, line);
        }
        line = end != NULL ? end + 1 : NULL;
    }
}

static int check_policy_file(const char *path) {
    policy *p = NULL;
    char *errors = NULL;

    if (policy_load_file(path, &p, &errors) != 0) {
        if (errors != NULL && errors[0] != '\0') {
            fputs(errors, stderr);
            if (errors[strlen(errors) - 1] != '\n') {
                fputc('\n', stderr);
            }
        } else {
            fprintf(stderr, "%s: invalid policy\n", path);
        }
        free(errors);
        return 1;
    }
    free(errors);
    policy_free(p);
    printf("%s: OK\n", path);
    return 0;
}

static policy *load_initial_policy(const options *o) {
    policy *p = NULL;
    char *errors = NULL;

    if (o->policy_path == NULL) {
        uid_t uid = getuid();
        p = policy_new_builtin_default((uint32_t)uid);
        if (p == NULL) {
            log_error("out of memory building the default policy");
            return NULL;
        }
        log_info("no --policy given: using the built-in default policy: tenant \"default\" "
                 "for uid %ld and root, loopback only",
                 (long)uid);
        return p;
    }
    if (policy_load_file(o->policy_path, &p, &errors) != 0) {
        log_error("cannot load the policy %s:", o->policy_path);
        log_policy_errors(errors);
        free(errors);
        return NULL;
    }
    free(errors);
    log_info("policy loaded from %s", o->policy_path);
    return p;
}

/* More descriptors help a daemon that holds up to five per connection; the
 * hard limit is the operator's choice, so raise the soft limit to it. */
static void raise_descriptor_limit(void) {
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_debug("cannot raise the descriptor limit: %s", strerror(errno));
        }
    }
}

static void notify(const char *state) {
    int r = sd_notify_send(state);

    if (r < 0) {
        log_warn("cannot notify the service manager (%s): %s", state, strerror(-r));
    }
}

/* Reloads the policy (SIGHUP, the control socket's `reload`), telling the
 * service manager; *report gets the messages (see server_reload_policy). */
static int reload_policy(void *opaque, char **report) {
    daemon_state *d = opaque;
    char msg[64];
    struct timespec ts;
    int r;

    /* systemd (Type=notify-reload) wants the reload start time with it. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u);
    notify(msg);
    r = server_reload_policy(d->srv, report);
    notify("READY=1");
    return r;
}

static void stop_daemon(daemon_state *d, const char *why) {
    if (d->stopping) {
        return;
    }
    d->stopping = true;
    log_info("%s: stopping", why);
    notify("STOPPING=1");
    /* Sessions first: their prompts are withdrawn while the agents can
     * still be told. */
    server_stop(d->srv);
    control_stop(d->ctl);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
    daemon_state *d = h->data;

    if (signum == SIGHUP) {
        char *report = NULL;
        reload_policy(d, &report);
        free(report); /* the log has every message */
    } else {
        stop_daemon(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
    }
}

static int start_signals(daemon_state *d, uv_loop_t *loop) {
    uv_signal_t *handles[] = {&d->sigint, &d->sigterm, &d->sighup};
    int signums[] = {SIGINT, SIGTERM, SIGHUP};

    for (int i = 0; i < 3; i++) {
        uv_signal_init(loop, handles[i]);
        handles[i]->data = d;
        if (uv_signal_start(handles[i], on_signal, signums[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The control socket's default path: control.sock in the directory of the
 * client socket. Returns 0, or -EINVAL when there is no such place (an
 * activated socket without a path, or a client socket of that very name). */
static int default_control_path(const char *client_path, char *out, size_t len) {
    const char *slash = strrchr(client_path, '/');
    int n;

    if (client_path[0] == '(') {
        return -EINVAL; /* "(abstract or unnamed socket)" */
    }
    n = slash == NULL ? snprintf(out, len, "%s", CONTROL_SOCKET_NAME)
                      : snprintf(out, len, "%.*s/%s", (int)(slash - client_path), client_path,
                                 CONTROL_SOCKET_NAME);
    if (n < 0 || (size_t)n >= len || strcmp(out, client_path) == 0) {
        return -EINVAL;
    }
    return 0;
}

static int start_control_socket(daemon_state *d, uv_loop_t *loop, const char *client_path) {
    char path[PATH_MAX];
    const char *chosen = d->opts.control_path;
    int r;

    if (d->opts.no_control_socket) {
        log_info("no control socket (--no-control-socket): prompts apply their on_no_agent");
        return 0;
    }
    if (chosen == NULL) {
        if (default_control_path(client_path, path, sizeof(path)) < 0) {
            log_error("no place for the control socket next to %s: give --control-socket PATH "
                      "(or --no-control-socket)",
                      client_path);
            return -EINVAL;
        }
        chosen = path;
    }
    r = control_start(loop, d->srv, chosen, reload_policy, d, &d->ctl);
    if (r == 0) {
        log_info("control socket %s (mode %04o)", control_path(d->ctl),
                 (unsigned)CONTROL_SOCKET_MODE);
    }
    return r;
}

/* For startup failures: close whatever handles were created. */
static void close_if_open(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

int main(int argc, char **argv) {
    daemon_state d;
    uv_loop_t loop;
    policy *pol;
    char why[512];
    int exit_code = 0, activated_fd, r;

    log_init();
    /* Peers vanish at any time; a write to them must fail with EPIPE, not
     * kill the daemon (the relay and libuv rely on this too). */
    signal(SIGPIPE, SIG_IGN);

    memset(&d, 0, sizeof(d));
    if (parse_options(argc, argv, &d.opts, &exit_code) != 0) {
        return exit_code;
    }
    log_set_level(d.opts.level);
    if (d.opts.check_policy != NULL) {
        return check_policy_file(d.opts.check_policy);
    }
    raise_descriptor_limit();
    lookup_configure_thread_pool();

    pol = load_initial_policy(&d.opts);
    if (pol == NULL) {
        return 1;
    }
    if (uv_loop_init(&loop) < 0) {
        log_error("cannot create the event loop");
        policy_free(pol);
        return 1;
    }
    if (server_new(&loop, pol, &d.srv) < 0) {
        log_error("out of memory");
        uv_loop_close(&loop);
        return 1;
    }
    if (d.opts.max_sessions_per_uid != 0) {
        (void)server_set_max_sessions_per_uid(d.srv, d.opts.max_sessions_per_uid);
    }
    r = server_configure(d.srv, d.opts.policy_path, d.opts.logs_dir, why, sizeof(why));
    if (r < 0) {
        log_error("%s", why);
        if (r == -EACCES || r == -ENOENT) {
            log_error("give a writable directory with --logs-dir (now %s)", d.opts.logs_dir);
        }
    }
    activated_fd = r == 0 ? sd_listen_fd() : -1;
    if (r == 0 && activated_fd >= 0) {
        r = server_listen_fd(d.srv, activated_fd);
    }
    /* The control socket is ready before the client socket accepts, so a
     * client that sees the daemon can reach its agents too. */
    if (r == 0) {
        r = start_control_socket(
            &d, &loop, activated_fd >= 0 ? server_socket_path(d.srv) : d.opts.socket_path);
    }
    if (r == 0 && activated_fd < 0) {
        r = server_listen_path(d.srv, d.opts.socket_path);
    }
    if (r == 0 && (r = relay_watch_start(&loop)) < 0) {
        log_error("cannot watch relay descriptors: %s", strerror(-r));
    }
    if (r == 0) {
        r = server_start(d.srv);
    }
    if (r == 0 && start_signals(&d, &loop) < 0) {
        log_error("cannot install signal handlers");
        r = -1;
    }
    if (r < 0) {
        d.stopping = true;
        server_stop(d.srv);
        control_stop(d.ctl);
        relay_watch_stop();
        uv_walk(&loop, close_if_open, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        control_free(d.ctl);
        server_free(d.srv);
        uv_loop_close(&loop);
        return 1;
    }

    if (activated_fd >= 0) {
        log_always("wasockd %s listening on %s (socket from the service manager)", WASOCK_VERSION,
                   server_socket_path(d.srv));
    } else {
        log_always("wasockd %s listening on %s (mode %04o)", WASOCK_VERSION,
                   server_socket_path(d.srv), (unsigned)server_socket_mode(d.srv));
    }
    notify("READY=1\nSTATUS=serving");

    busypoll_run(&loop, d.opts.busy_poll_us);
    /* Every relay is gone once the loop has nothing left to do. */
    relay_watch_stop();
    uv_run(&loop, UV_RUN_NOWAIT);

    control_free(d.ctl);
    server_free(d.srv);
    if (uv_loop_close(&loop) != 0) {
        log_debug("event loop closed with handles still open");
    }
    log_info("stopped");
    return exit_code;
}
