/* main.c — wasockd: command line, policy loading, signals and systemd glue;
 * then hands over to the libuv loop (server.c).
 *
 * Input: the command line, environment and policy file come from the
 * operator (trusted, but still checked and reported with file:line:col).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "lookup.h"
#include "policy.h"
#include "sdnotify.h"
#include "server.h"
#include "wasock-config.h"

typedef struct options {
    const char *socket_path;
    const char *policy_path;  /* NULL: built-in default policy */
    const char *check_policy; /* --check-policy FILE */
    log_level level;
} options;

/* Everything the signal handlers need. */
typedef struct daemon_state {
    options opts;
    server *srv;
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
            "  -l, --log-level LEVEL    error, warn, info (default) or debug\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Signals: SIGINT/SIGTERM stop (sessions are closed, the socket file removed);\n"
            "SIGHUP reloads the --policy file (a broken file is refused and the running\n"
            "policy kept).\n"
            "systemd: Type=notify readiness via $NOTIFY_SOCKET; socket activation via\n"
            "$LISTEN_FDS (the activated socket replaces --socket).\n",
            WASOCK_DEFAULT_SOCKET);
}

/* Parses the command line. Returns 0 to run, 1 when main should exit with
 * *exit_code (help, version, usage errors). */
static int parse_options(int argc, char **argv, options *o, int *exit_code) {
    static const struct option long_opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"policy", required_argument, NULL, 'p'},
        {"check-policy", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *env_socket = getenv("WASOCK_SOCKET");
    int c;

    memset(o, 0, sizeof(*o));
    o->socket_path =
        env_socket != NULL && env_socket[0] != '\0' ? env_socket : WASOCK_DEFAULT_SOCKET;
    o->level = LOG_LEVEL_INFO;
    while ((c = getopt_long(argc, argv, "s:p:c:l:Vh", long_opts, NULL)) != -1) {
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

static void reload_policy(daemon_state *d) {
    policy *p = NULL;
    char *errors = NULL;
    char msg[64];
    struct timespec ts;

    if (d->opts.policy_path == NULL) {
        log_info("SIGHUP: no --policy file to reload; keeping the built-in default policy");
        return;
    }
    /* systemd (Type=notify-reload) wants the reload start time with it. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u);
    notify(msg);
    if (policy_load_file(d->opts.policy_path, &p, &errors) != 0) {
        log_error("policy reload from %s failed; keeping the running policy:", d->opts.policy_path);
        log_policy_errors(errors);
    } else {
        server_set_policy(d->srv, p);
        log_info("policy reloaded from %s", d->opts.policy_path);
    }
    free(errors);
    notify("READY=1");
}

static void stop_daemon(daemon_state *d, const char *why) {
    if (d->stopping) {
        return;
    }
    d->stopping = true;
    log_info("%s: stopping", why);
    notify("STOPPING=1");
    server_stop(d->srv);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
    daemon_state *d = h->data;

    if (signum == SIGHUP) {
        reload_policy(d);
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
    activated_fd = sd_listen_fd();
    r = activated_fd >= 0 ? server_listen_fd(d.srv, activated_fd)
                          : server_listen_path(d.srv, d.opts.socket_path);
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
        uv_walk(&loop, close_if_open, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
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

    uv_run(&loop, UV_RUN_DEFAULT);

    server_free(d.srv);
    if (uv_loop_close(&loop) != 0) {
        log_debug("event loop closed with handles still open");
    }
    log_info("stopped");
    return exit_code;
}
