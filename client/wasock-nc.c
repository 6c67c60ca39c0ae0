/* wasock-nc.c — a small netcat over libwasock.
 *
 * Lets an operator check what a tenant may do: connect to an address, or
 * listen and accept connections, exactly as a WebAssembly guest of that
 * tenant would through wasockd, and copy stdin to the connection and the
 * connection to stdout. It trusts its command line (the operator's) and
 * libwasock; the bytes it copies are never interpreted.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wasock-config.h"
#include "wasock-nc.h"
#include "wasock/wasock.h"

/* Bytes copied per direction at a time: the default capacity of the pipe the
 * daemon's relay gives us, so one write can fill it. */
#define NC_COPY_BUFFER_SIZE 65536

/* Longest -w: one day. A connect that takes longer has failed anyway. */
#define NC_WAIT_SECONDS_MAX 86400

/* Room for the daemon's reason when it refuses the session. */
#define NC_OPEN_ERROR_MAX 256

struct nc_options {
    const char *socket_path;
    const char *tenant;
    const char *token;
    bool listen;
    bool keep_listening;
    bool shape_0_3;
    bool verbose;
    bool udp;                /* -u */
    const char *lookup_name; /* -L NAME */
    int wait_seconds; /* -1: no connect timeout */
    const char *address_text;
    wasock_addr address;
};

/* One direction of the copy: bytes read from a source, waiting for a sink. */
struct nc_direction {
    char buffer[NC_COPY_BUFFER_SIZE];
    size_t start, end; /* bytes [start, end) wait to be written */
    bool source_ended; /* read returned 0 (or the source failed) */
    bool finished;     /* everything was written and the end passed on */
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: wasock-nc [options] ADDR:PORT        connect and copy stdin/stdout\n"
            "       wasock-nc -l [-k] [options] ADDR:PORT  listen, accept and copy\n"
            "       wasock-nc -u [-l] [options] ADDR:PORT  UDP: stdin lines as datagrams\n"
            "       wasock-nc -L NAME [options]            look NAME up, one address a line\n"
            "\n"
            "ADDR:PORT is 127.0.0.1:8080 or [::1]:8080. Every operation goes through\n"
            "wasockd and is subject to its policy for the tenant.\n"
            "\n"
            "options:\n"
            "  -l          listen on ADDR:PORT and accept one connection\n"
            "  -k          with -l: accept further connections one after another\n"
            "  -u          UDP: send each line of stdin as one datagram and print each\n"
            "              datagram received as one line; with -l, bind to ADDR:PORT\n"
            "              and answer the last sender\n"
            "  -L NAME     look NAME up through the daemon and print its addresses\n"
            "  -S PATH     daemon socket (default: $WASOCK_SOCKET, then %s)\n"
            "  -t TENANT   act for TENANT (default: the daemon's default tenant)\n"
            "  -T TOKEN    tenant token\n"
            "  -3          use the WASI 0.3 shape (bind/connect/listen, send/receive)\n"
            "              instead of 0.2 (start-*/finish-*, stream descriptors)\n"
            "  -v          verbose: print addresses and each error's WASI name\n"
            "  -w SECONDS  give up connecting after SECONDS; with -u, keep receiving\n"
            "              for SECONDS after stdin ends\n"
            "  -h          this help\n"
            "\n"
            "exit status:\n"
            "  %d  success\n"
            "  %d  a socket operation failed (e.g. access-denied, connection-refused)\n"
            "  %d  usage error\n"
            "  %d  the daemon cannot be reached or went away\n"
            "  %d  the daemon refused the session (tenant or token)\n"
            "  %d  reading stdin or writing stdout failed\n",
            WASOCK_DEFAULT_SOCKET, NC_EXIT_OK, NC_EXIT_SOCKET_ERROR, NC_EXIT_USAGE, NC_EXIT_DAEMON,
            NC_EXIT_REFUSED, NC_EXIT_LOCAL_IO);
}

/* Parses the command line into *o. Returns 0, or an exit status. */
static int parse_options(int argc, char **argv, struct nc_options *o) {
    int opt;

    memset(o, 0, sizeof(*o));
    o->wait_seconds = -1;
    while ((opt = getopt(argc, argv, "lkS:t:T:3vw:huL:")) != -1) {
        switch (opt) {
        case 'l':
            o->listen = true;
            break;
        case 'k':
            o->keep_listening = true;
            break;
        case 'u':
            o->udp = true;
            break;
        case 'L':
            o->lookup_name = optarg;
            break;
        case 'S':
            o->socket_path = optarg;
            break;
        case 't':
            o->tenant = optarg;
            break;
        case 'T':
            o->token = optarg;
            break;
        case '3':
            o->shape_0_3 = true;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'w': {
            char *end;
            unsigned long v;

            errno = 0;
            v = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-' || v == 0 ||
                v > NC_WAIT_SECONDS_MAX) {
                fprintf(stderr, "wasock-nc: -w wants whole seconds from 1 to %d\n",
                        NC_WAIT_SECONDS_MAX);
                return NC_EXIT_USAGE;
            }
            o->wait_seconds = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            exit(NC_EXIT_OK);
        default:
            usage(stderr);
            return NC_EXIT_USAGE;
        }
    }
    if (o->lookup_name != NULL) {
        if (optind != argc || o->listen || o->udp) {
            usage(stderr);
            return NC_EXIT_USAGE;
        }
        return 0;
    }
    if (o->udp && o->keep_listening) {
        fprintf(stderr, "wasock-nc: -k is for TCP listeners\n");
        return NC_EXIT_USAGE;
    }
    if (optind != argc - 1) {
        usage(stderr);
        return NC_EXIT_USAGE;
    }
    if (o->keep_listening && !o->listen) {
        fprintf(stderr, "wasock-nc: -k needs -l\n");
        return NC_EXIT_USAGE;
    }
    o->address_text = argv[optind];
    if (wasock_addr_parse(o->address_text, &o->address) < 0) {
        fprintf(stderr, "wasock-nc: not an ADDR:PORT: %s (IPv6 needs brackets: [::1]:80)\n",
                o->address_text);
        return NC_EXIT_USAGE;
    }
    return 0;
}

/* Reports a failed operation and returns the exit status it deserves. */
static int report_failure(const struct nc_options *o, const char *operation, wasock_err err) {
    fprintf(stderr, "wasock-nc: %s %s: %s\n", operation, o->address_text, wasock_err_name(err));
    return err == WASOCK_E_DAEMON ? NC_EXIT_DAEMON : NC_EXIT_SOCKET_ERROR;
}

static void print_address(const struct nc_options *o, const char *what, wasock_tcp *s,
                          bool remote) {
    char text[WASOCK_ADDR_STRLEN];
    wasock_addr a;
    wasock_err err;

    if (!o->verbose)
        return;
    err = remote ? wasock_tcp_remote_address(s, &a) : wasock_tcp_local_address(s, &a);
    if (err != WASOCK_OK)
        fprintf(stderr, "wasock-nc: %s: (%s)\n", what, wasock_err_name(err));
    else if (wasock_addr_format(&a, text, sizeof(text)) >= 0)
        fprintf(stderr, "wasock-nc: %s %s\n", what, text);
}

static int64_t monotonic_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds until deadline: -1 for none (wait forever), 0 once passed. */
static int milliseconds_left(int64_t deadline) {
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - monotonic_ms();
    return left <= 0 ? 0 : (int)left;
}

/* Waits until s's pollable is ready, or until deadline (monotonic ms, -1
 * none): OK, TIMEOUT, or DAEMON. */
static wasock_err wait_ready(wasock_client *c, wasock_tcp *s, int64_t deadline) {
    while (!wasock_tcp_ready(s)) {
        int timeout = milliseconds_left(deadline);
        wasock_err err;

        if (timeout == 0)
            return WASOCK_E_TIMEOUT;
        err = wasock_client_wait(c, timeout);
        if (err != WASOCK_OK && err != WASOCK_E_TIMEOUT)
            return err;
    }
    return WASOCK_OK;
}

typedef wasock_err finish_fn(wasock_tcp *s, int *input_fd, int *output_fd);

static wasock_err finish_bind(wasock_tcp *s, int *input_fd, int *output_fd) {
    (void)input_fd;
    (void)output_fd;
    return wasock_tcp_finish_bind(s);
}

static wasock_err finish_listen(wasock_tcp *s, int *input_fd, int *output_fd) {
    (void)input_fd;
    (void)output_fd;
    return wasock_tcp_finish_listen(s);
}

/* The 0.2 way to complete a started operation: wait for the pollable, then
 * finish; a finish that still says would-block (a pending permission
 * prompt) waits for more news from the daemon. */
static wasock_err finish_when_ready(wasock_client *c, wasock_tcp *s, finish_fn *finish,
                                    int64_t deadline, int *input_fd, int *output_fd) {
    for (;;) {
        wasock_err err = wait_ready(c, s, deadline);

        if (err != WASOCK_OK)
            return err;
        err = finish(s, input_fd, output_fd);
        if (err != WASOCK_E_WOULD_BLOCK)
            return err;
        err = wasock_client_wait(c, milliseconds_left(deadline));
        if (err != WASOCK_OK && err != WASOCK_E_TIMEOUT)
            return err;
        if (deadline >= 0 && milliseconds_left(deadline) == 0)
            return WASOCK_E_TIMEOUT;
    }
}

/* In the 0.3 shape the streams are taken with send/receive; in 0.2 they came
 * with finish-connect / accept. On failure returns an exit status. */
static int take_streams(const struct nc_options *o, wasock_tcp *s, int *input_fd, int *output_fd) {
    wasock_err err;

    if (!o->shape_0_3)
        return 0;
    err = wasock_tcp_receive(s, input_fd);
    if (err != WASOCK_OK)
        return report_failure(o, "receive", err);
    err = wasock_tcp_send(s, output_fd);
    if (err != WASOCK_OK) {
        close(*input_fd);
        *input_fd = -1;
        return report_failure(o, "send", err);
    }
    return 0;
}

/* Writes what the direction holds to fd. Returns 0, or -errno when the sink
 * is gone (EAGAIN is not an error: poll again). */
static int direction_flush(struct nc_direction *d, int fd) {
    while (d->start < d->end) {
        ssize_t n = write(fd, d->buffer + d->start, d->end - d->start);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        d->start += (size_t)n;
    }
    d->start = d->end = 0;
    return 0;
}

/* Reads once from fd into an empty direction. Returns 0, or -errno. */
static int direction_fill(struct nc_direction *d, int fd) {
    ssize_t n;

    do {
        n = read(fd, d->buffer, sizeof(d->buffer));
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
    if (n == 0)
        d->source_ended = true;
    d->start = 0;
    d->end = (size_t)n;
    return 0;
}

/* Ends the send direction once stdin ended and everything was written: the
 * 0.2 shape shuts the socket down for sending, the 0.3 shape closes the
 * output stream; either way the peer sees a FIN after our last byte. */
static void end_send_direction(const struct nc_options *o, wasock_tcp *s, int *output_fd) {
    wasock_err err;

    if (o->shape_0_3) {
        close(*output_fd);
        *output_fd = -1;
        return;
    }
    err = wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_SEND);
    if (err != WASOCK_OK && o->verbose)
        fprintf(stderr, "wasock-nc: shutdown %s: %s\n", o->address_text, wasock_err_name(err));
}

/* Why the receive stream ended: the daemon reports a connection error
 * before the stream's EOF, so dispatch first to be sure to have seen it. */
static int check_stream_end(const struct nc_options *o, wasock_client *c, wasock_tcp *s) {
    wasock_err err;

    if (wasock_client_dispatch(c) != WASOCK_OK)
        return report_failure(o, "receive", WASOCK_E_DAEMON);
    err = wasock_tcp_stream_error(s);
    if (err != WASOCK_OK)
        return report_failure(o, "receive", err);
    if (o->verbose)
        fprintf(stderr, "wasock-nc: the peer closed the connection\n");
    return NC_EXIT_OK;
}

enum { POLL_STDIN, POLL_STDOUT, POLL_INPUT, POLL_OUTPUT, POLL_DAEMON, POLL_COUNT };

/* Copies stdin -> connection and connection -> stdout until both directions
 * have ended. input_fd/output_fd: in the 0.3 shape they are ours and closed
 * here; in the 0.2 shape they belong to s. Returns an exit status. */
static int copy_streams(const struct nc_options *o, wasock_client *c, wasock_tcp *s, int input_fd,
                        int output_fd) {
    static struct nc_direction up, down; /* stdin -> connection, connection -> stdout */
    int status = NC_EXIT_OK;

    memset(&up, 0, sizeof(up));
    memset(&down, 0, sizeof(down));
    while (!up.finished || !down.finished) {
        struct pollfd fds[POLL_COUNT];
        int r;

        for (int i = 0; i < POLL_COUNT; i++)
            fds[i] = (struct pollfd){.fd = -1};
        if (!up.finished && up.end == 0 && !up.source_ended)
            fds[POLL_STDIN] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
        if (!up.finished && up.end > 0)
            fds[POLL_OUTPUT] = (struct pollfd){.fd = output_fd, .events = POLLOUT};
        if (!down.finished && down.end == 0 && !down.source_ended)
            fds[POLL_INPUT] = (struct pollfd){.fd = input_fd, .events = POLLIN};
        if (!down.finished && down.end > 0)
            fds[POLL_STDOUT] = (struct pollfd){.fd = STDOUT_FILENO, .events = POLLOUT};
        fds[POLL_DAEMON] = (struct pollfd){.fd = wasock_client_fd(c), .events = POLLIN};

        if (poll(fds, POLL_COUNT, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("wasock-nc: poll");
            status = NC_EXIT_LOCAL_IO;
            break;
        }
        if (fds[POLL_DAEMON].revents && wasock_client_dispatch(c) != WASOCK_OK) {
            status = report_failure(o, "copy", WASOCK_E_DAEMON);
            break;
        }
        if (fds[POLL_STDIN].revents) {
            r = direction_fill(&up, STDIN_FILENO);
            if (r < 0) {
                fprintf(stderr, "wasock-nc: read stdin: %s\n", strerror(-r));
                status = NC_EXIT_LOCAL_IO;
                up.source_ended = true;
            }
        }
        if (fds[POLL_OUTPUT].revents) {
            r = direction_flush(&up, output_fd);
            if (r < 0) {
                /* The daemon closed the send stream: the connection is gone. */
                wasock_err err = wasock_tcp_stream_error(s);

                if (err != WASOCK_OK)
                    status = report_failure(o, "send", err);
                else if (o->verbose)
                    fprintf(stderr, "wasock-nc: send %s: stream closed\n", o->address_text);
                up.start = up.end = 0;
                up.source_ended = true;
            }
        }
        if (fds[POLL_INPUT].revents) {
            r = direction_fill(&down, input_fd);
            if (r < 0) {
                fprintf(stderr, "wasock-nc: receive %s: %s\n", o->address_text, strerror(-r));
                status = NC_EXIT_SOCKET_ERROR;
                down.source_ended = true;
            } else if (down.source_ended) {
                r = check_stream_end(o, c, s);
                if (r != NC_EXIT_OK) {
                    /* The connection failed: nothing more can be sent, so
                     * do not wait for stdin to end. */
                    status = r;
                    up.start = up.end = 0;
                    up.finished = true;
                }
            }
        }
        if (fds[POLL_STDOUT].revents) {
            r = direction_flush(&down, STDOUT_FILENO);
            if (r < 0) {
                fprintf(stderr, "wasock-nc: write stdout: %s\n", strerror(-r));
                status = NC_EXIT_LOCAL_IO;
                down.start = down.end = 0;
                down.source_ended = true;
            }
        }
        if (!up.finished && up.source_ended && up.end == 0) {
            end_send_direction(o, s, &output_fd);
            up.finished = true;
        }
        if (!down.finished && down.source_ended && down.end == 0)
            down.finished = true;
    }
    if (o->shape_0_3) {
        close(input_fd);
        if (output_fd >= 0)
            close(output_fd);
    }
    return status;
}

static int run_connect(const struct nc_options *o, wasock_client *c) {
    int64_t deadline = o->wait_seconds < 0 ? -1 : monotonic_ms() + o->wait_seconds * 1000LL;
    int input_fd = -1, output_fd = -1;
    wasock_tcp *s;
    wasock_err err;
    int status;

    err = wasock_tcp_create(c, o->address.ip.family, &s);
    if (err != WASOCK_OK)
        return report_failure(o, "create socket for", err);
    if (o->shape_0_3 && deadline < 0) {
        err = wasock_tcp_connect(s, &o->address);
    } else {
        /* Also in the 0.3 shape when a timeout is wanted: connect has none. */
        err = wasock_tcp_start_connect(s, &o->address);
        if (err == WASOCK_OK)
            err =
                finish_when_ready(c, s, wasock_tcp_finish_connect, deadline, &input_fd, &output_fd);
    }
    if (err != WASOCK_OK) {
        wasock_tcp_drop(s);
        return report_failure(o, "connect", err);
    }
    print_address(o, "connected from", s, false);
    print_address(o, "connected to", s, true);
    status = take_streams(o, s, &input_fd, &output_fd);
    if (status == NC_EXIT_OK)
        status = copy_streams(o, c, s, input_fd, output_fd);
    wasock_tcp_drop(s);
    return status;
}

/* Binds and listens, in the shape asked for. */
static wasock_err start_listening(const struct nc_options *o, wasock_client *c, wasock_tcp *l,
                                  const char **failed) {
    wasock_err err;

    *failed = "bind";
    if (o->shape_0_3) {
        err = wasock_tcp_bind(l, &o->address);
        if (err != WASOCK_OK)
            return err;
        *failed = "listen";
        return wasock_tcp_listen(l);
    }
    err = wasock_tcp_start_bind(l, &o->address);
    if (err == WASOCK_OK)
        err = finish_when_ready(c, l, finish_bind, -1, NULL, NULL);
    if (err != WASOCK_OK)
        return err;
    *failed = "listen";
    err = wasock_tcp_start_listen(l);
    if (err == WASOCK_OK)
        err = finish_when_ready(c, l, finish_listen, -1, NULL, NULL);
    return err;
}

/* Takes the next connection, waiting for one as long as it takes. */
static wasock_err accept_next(wasock_client *c, wasock_tcp *l, wasock_tcp **conn, int *input_fd,
                              int *output_fd) {
    for (;;) {
        wasock_err err = wasock_tcp_accept(l, conn, input_fd, output_fd);

        if (err != WASOCK_E_WOULD_BLOCK)
            return err;
        err = wait_ready(c, l, -1);
        if (err != WASOCK_OK)
            return err;
    }
}

static int run_listen(const struct nc_options *o, wasock_client *c) {
    const char *failed;
    wasock_tcp *l;
    wasock_err err;
    int status = NC_EXIT_OK;

    err = wasock_tcp_create(c, o->address.ip.family, &l);
    if (err != WASOCK_OK)
        return report_failure(o, "create socket for", err);
    err = start_listening(o, c, l, &failed);
    if (err != WASOCK_OK) {
        wasock_tcp_drop(l);
        return report_failure(o, failed, err);
    }
    print_address(o, "listening on", l, false);
    do {
        int input_fd = -1, output_fd = -1;
        wasock_tcp *conn;

        err = accept_next(c, l, &conn, &input_fd, &output_fd);
        if (err != WASOCK_OK) {
            status = report_failure(o, "accept on", err);
            break;
        }
        print_address(o, "connection from", conn, true);
        status = take_streams(o, conn, &input_fd, &output_fd);
        if (status == NC_EXIT_OK)
            status = copy_streams(o, c, conn, input_fd, output_fd);
        wasock_tcp_drop(conn);
    } while (o->keep_listening && status != NC_EXIT_DAEMON);
    wasock_tcp_drop(l);
    return status;
}

int main(int argc, char **argv) {
    char open_error[NC_OPEN_ERROR_MAX] = "";
    struct nc_options o;
    wasock_client_opts opts;
    wasock_client *c;
    wasock_err err;
    int status;

    status = parse_options(argc, argv, &o);
    if (status != 0)
        return status;
    /* Writing to a stream the daemon closed must be an error, not death. */
    signal(SIGPIPE, SIG_IGN);

    wasock_client_opts_init(&opts);
    opts.socket_path = o.socket_path;
    opts.tenant = o.tenant;
    opts.token = o.token;
    opts.wasi_version = o.shape_0_3 ? 3 : 2;
    opts.error = open_error;
    opts.error_len = sizeof(open_error);
    err = wasock_client_open(&opts, &c);
    if (err != WASOCK_OK) {
        fprintf(stderr, "wasock-nc: open session: %s%s%s\n", wasock_err_name(err),
                open_error[0] ? ": " : "", open_error);
        if (err == WASOCK_E_ACCESS_DENIED)
            return NC_EXIT_REFUSED;
        return err == WASOCK_E_INVALID_ARGUMENT ? NC_EXIT_USAGE : NC_EXIT_DAEMON;
    }
    if (o.lookup_name != NULL) {
        status = nc_run_lookup(o.lookup_name, o.verbose, c);
    } else if (o.udp) {
        struct nc_udp_options u = {o.listen,       o.shape_0_3,   o.verbose,
                                   o.wait_seconds, o.address_text, o.address};
        status = nc_run_udp(&u, c);
    } else {
        status = o.listen ? run_listen(&o, c) : run_connect(&o, c);
    }
    wasock_client_close(c);
    return status;
}
