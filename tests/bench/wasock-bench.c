/* wasock-bench.c — measures wasockd against the direct system calls, side
 * by side in one run: starts its own daemon (built-in default policy) on a
 * temporary socket and its own peers on 127.0.0.1, runs every row of the
 * catalogue below a number of times, prints a table (median, min, max, the
 * ratio to the direct baseline and the target) and writes the
 * figures as JSON (and TSV on request).
 *
 * Trusts its command line and environment (WASOCKD, the daemon to start).
 * Not a test: its exit status says only whether every row ran without
 * error, never whether a target was met.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench-rows.h"

/* The daemon built next to this tool, passed by meson; used when neither
 * --wasockd nor $WASOCKD names one. */
#ifndef WASOCK_BENCH_WASOCKD
#define WASOCK_BENCH_WASOCKD "wasockd"
#endif

#define BENCH_DEFAULT_JSON "wasock-bench.json"

/* The whole run's hard limit. libwasock calls wait for the daemon without a
 * deadline, so a daemon that hangs would hang the tool: past this the tool
 * exits with an error (the daemon and socat die with it). Full: three times
 * its 10-minute budget; quick: just under the smoke test's 180 s timeout, so
 * the tool, not meson, says what happened. */
#define BENCH_WATCHDOG_S_FULL  1800
#define BENCH_WATCHDOG_S_QUICK 170

/* Exit statuses. */
#define BENCH_EXIT_OK    0
#define BENCH_EXIT_ERROR 1 /* a row failed, the daemon misbehaved, or a file was not written */
#define BENCH_EXIT_USAGE 2

/* One row of the catalogue. A row without a function is listed under "not
 * measured yet": adding a row means writing the function and filling it in
 * here. */
typedef struct bench_row {
    const char *key;  /* for --only */
    const char *what; /* what the row measures */
    bench_row_fn *run;
    bool needs_shared_daemon; /* false: the row starts its own daemons (or none) */
} bench_row;

static const bench_row catalogue[] = {
    {"round_trip", "no-op round trip vs a bare Unix-socket ping-pong", bench_row_round_trip, true},
    {"pipelined", "pipelined control operations with 1, 16 and 64 in flight", bench_row_pipelined,
     true},
    {"connect", "TCP create+connect+stream fds vs direct connect", bench_row_connect, true},
    {"accept", "TCP accept rate vs direct accept", bench_row_accept, true},
    {"bulk", "TCP bulk throughput through the relay vs direct and socat", bench_row_bulk, true},
    {"handoff", "TCP bulk throughput with handoff vs direct", bench_row_handoff, false},
    {"exchange", "small request/response exchanges, relayed vs direct", bench_row_exchange, true},
    {"udp", "UDP datagrams/s (64 and 1400 bytes) through the daemon vs direct", bench_row_udp,
     true},
    {"lookup", "name lookup of a literal and of localhost vs getaddrinfo", bench_row_lookup,
     true},
    {"policy", "policy decisions/s with 10, 1,000 and 10,000 rules", bench_row_decide, false},
    {"memory", "daemon RSS per relayed TCP connection and per idle session", bench_row_memory,
     false},
};
#define CATALOGUE_SIZE (sizeof(catalogue) / sizeof(catalogue[0]))

typedef struct options {
    const char *json_path;
    const char *tsv_path; /* NULL: no TSV */
    const char *only;     /* comma-separated row keys, NULL: all */
} options;

static void print_usage(FILE *out) {
    fprintf(out,
            "Usage: wasock-bench [OPTION]...\n"
            "Measure wasockd against the direct system calls on this machine: starts its own\n"
            "daemon (built-in default policy) and loopback peers, prints a table, writes JSON.\n"
            "\n"
            "  -q, --quick          fewer repetitions and smaller counts (under a minute)\n"
            "  -r, --reps N         repetitions of every figure (default %d, quick %d, max %d)\n"
            "  -j, --json FILE      write the figures as JSON (default ./%s)\n"
            "  -t, --tsv FILE       also write them as TSV\n"
            "  -d, --wasockd PATH   the daemon to start (default: $WASOCKD, else the one built\n"
            "                       with this tool)\n"
            "  -s, --socat PATH     socat for the relay comparison (default: found in $PATH)\n"
            "  -o, --only LIST      run only these rows (comma-separated; see --list)\n"
            "  -l, --list           list the rows and exit\n"
            "  -v, --verbose        progress on stderr\n"
            "  -h, --help           print this help and exit\n"
            "\n"
            "Exit status: 0 when every row ran, 1 when one failed (targets do not count),\n"
            "2 for a usage error.\n",
            BENCH_REPS_FULL, BENCH_REPS_QUICK, BENCH_REPS_MAX, BENCH_DEFAULT_JSON);
}

/* The first executable `name` in $PATH, copied to buf; NULL if none. */
static const char *find_in_path(const char *name, char *buf, size_t len) {
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0') {
        path = "/usr/local/bin:/usr/bin:/bin";
    }
    while (*path != '\0') {
        const char *end = strchr(path, ':');
        size_t dir_len = end != NULL ? (size_t)(end - path) : strlen(path);
        if (dir_len > 0) {
            int n = snprintf(buf, len, "%.*s/%s", (int)dir_len, path, name);
            if (n > 0 && (size_t)n < len && access(buf, X_OK) == 0) {
                return buf;
            }
        }
        path += dir_len + (end != NULL ? 1 : 0);
    }
    return NULL;
}

/* True when `key` is listed in the comma-separated `list`. */
static bool listed(const char *list, const char *key) {
    size_t key_len = strlen(key);
    const char *p = list;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == key_len && strncmp(p, key, len) == 0) {
            return true;
        }
        p += len + (end != NULL ? 1 : 0);
    }
    return false;
}

/* Every name in --only must be a row. */
static bool only_is_valid(const char *list) {
    const char *p = list;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        bool known = false;
        for (size_t i = 0; i < CATALOGUE_SIZE && !known; i++) {
            known = strlen(catalogue[i].key) == len && strncmp(p, catalogue[i].key, len) == 0;
        }
        if (!known) {
            fprintf(stderr, "wasock-bench: unknown row \"%.*s\" (see --list)\n", (int)len, p);
            return false;
        }
        p += len + (end != NULL ? 1 : 0);
    }
    return true;
}

/* Parses the command line into bench_cfg and o. Returns -1 to go on, or an
 * exit status. */
static int parse_options(int argc, char **argv, options *o) {
    static const struct option long_opts[] = {
        {"quick", no_argument, NULL, 'q'},
        {"reps", required_argument, NULL, 'r'},
        {"json", required_argument, NULL, 'j'},
        {"tsv", required_argument, NULL, 't'},
        {"wasockd", required_argument, NULL, 'd'},
        {"socat", required_argument, NULL, 's'},
        {"only", required_argument, NULL, 'o'},
        {"list", no_argument, NULL, 'l'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char socat_found[PATH_MAX];
    unsigned long reps = 0;
    bool socat_given = false;
    int c;

    memset(o, 0, sizeof(*o));
    o->json_path = BENCH_DEFAULT_JSON;
    const char *env = getenv("WASOCKD");
    bench_cfg.wasockd = env != NULL && env[0] != '\0' ? env : WASOCK_BENCH_WASOCKD;
    while ((c = getopt_long(argc, argv, "qr:j:t:d:s:o:lvh", long_opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            bench_cfg.quick = true;
            break;
        case 'r': {
            char *end;
            errno = 0;
            reps = strtoul(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || reps < 1 || reps > BENCH_REPS_MAX) {
                fprintf(stderr, "wasock-bench: --reps wants 1 to %d\n", BENCH_REPS_MAX);
                return BENCH_EXIT_USAGE;
            }
            break;
        }
        case 'j':
            o->json_path = optarg;
            break;
        case 't':
            o->tsv_path = optarg;
            break;
        case 'd':
            bench_cfg.wasockd = optarg;
            break;
        case 's':
            bench_cfg.socat = optarg;
            socat_given = true;
            break;
        case 'o':
            o->only = optarg;
            break;
        case 'l':
            for (size_t i = 0; i < CATALOGUE_SIZE; i++) {
                printf("%-12s %s%s\n", catalogue[i].key, catalogue[i].what,
                       catalogue[i].run == NULL ? " (not measured yet)" : "");
            }
            return BENCH_EXIT_OK;
        case 'v':
            bench_cfg.verbose = true;
            break;
        case 'h':
            print_usage(stdout);
            return BENCH_EXIT_OK;
        default:
            fprintf(stderr, "Try 'wasock-bench --help' for more information.\n");
            return BENCH_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wasock-bench: unexpected argument \"%s\"\n", argv[optind]);
        return BENCH_EXIT_USAGE;
    }
    if (o->only != NULL && !only_is_valid(o->only)) {
        return BENCH_EXIT_USAGE;
    }
    bench_cfg.reps =
        reps != 0 ? (unsigned)reps : (unsigned)BENCH_PICK(BENCH_REPS_FULL, BENCH_REPS_QUICK);
    if (!socat_given) {
        bench_cfg.socat = find_in_path("socat", socat_found, sizeof(socat_found));
    } else if (access(bench_cfg.socat, X_OK) != 0) {
        fprintf(stderr, "wasock-bench: %s: %s; the socat comparison is skipped\n", bench_cfg.socat,
                strerror(errno));
        bench_cfg.socat = NULL;
    }
    return -1;
}

static void on_watchdog(int sig) {
    static const char msg[] = "wasock-bench: the run exceeded its time limit; stopped\n";
    (void)sig;
    /* Only async-signal-safe calls here. */
    bench_daemon_emergency_stop();
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
        _exit(BENCH_EXIT_ERROR);
    }
    _exit(BENCH_EXIT_ERROR);
}

int main(int argc, char **argv) {
    options o;
    int status = parse_options(argc, argv, &o);
    if (status >= 0) {
        return status;
    }
    /* Writes to a relay pipe whose reader is gone must fail with EPIPE, not
     * kill the tool. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_watchdog);
    alarm(BENCH_PICK(BENCH_WATCHDOG_S_FULL, BENCH_WATCHDOG_S_QUICK));
    if (access(bench_cfg.wasockd, X_OK) != 0) {
        fprintf(stderr, "wasock-bench: cannot run the daemon %s: %s (use --wasockd or $WASOCKD)\n",
                bench_cfg.wasockd, strerror(errno));
        return BENCH_EXIT_ERROR;
    }
    bench_report_set_header(bench_cfg.wasockd, bench_cfg.reps, bench_cfg.quick);

    bool need_daemon = false;
    for (size_t i = 0; i < CATALOGUE_SIZE; i++) {
        bool selected = o.only == NULL || listed(o.only, catalogue[i].key);
        need_daemon |= selected && catalogue[i].run != NULL && catalogue[i].needs_shared_daemon;
    }
    bench_daemon daemon = {0};
    bool daemon_failed = false;
    if (need_daemon) {
        int r = bench_daemon_start(&daemon);
        if (r < 0) {
            fprintf(stderr, "wasock-bench: cannot start %s: %s\n", bench_cfg.wasockd, strerror(-r));
            daemon_failed = true;
        }
    }
    for (size_t i = 0; i < CATALOGUE_SIZE; i++) {
        const bench_row *row = &catalogue[i];
        if (o.only != NULL && !listed(o.only, row->key)) {
            continue;
        }
        if (row->run == NULL) {
            bench_not_measured(row->what);
            continue;
        }
        if (row->needs_shared_daemon && daemon_failed) {
            bench_group *g = bench_group_open(row->key, row->what, "-", BENCH_LOWER_IS_BETTER);
            bench_group_error(g, "not run: the daemon did not start");
            continue;
        }
        bench_progress("%s: %s", row->key, row->what);
        double started = bench_now_s();
        row->run(&daemon);
        bench_progress("%s: %.1f s", row->key, bench_now_s() - started);
    }
    if (need_daemon && !daemon_failed && bench_daemon_stop(&daemon) < 0) {
        daemon_failed = true;
    }

    bench_report_print();
    status = bench_any_error() || daemon_failed ? BENCH_EXIT_ERROR : BENCH_EXIT_OK;
    int r = bench_report_write_json(o.json_path);
    if (r < 0) {
        fprintf(stderr, "wasock-bench: cannot write %s: %s\n", o.json_path, strerror(-r));
        status = BENCH_EXIT_ERROR;
    }
    if (o.tsv_path != NULL) {
        r = bench_report_write_tsv(o.tsv_path);
        if (r < 0) {
            fprintf(stderr, "wasock-bench: cannot write %s: %s\n", o.tsv_path, strerror(-r));
            status = BENCH_EXIT_ERROR;
        }
    }
    if (daemon_failed) {
        fprintf(stderr, "wasock-bench: the daemon failed; see the messages above\n");
    }
    return status;
}
