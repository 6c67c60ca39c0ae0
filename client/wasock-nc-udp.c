/* wasock-nc-udp.c — wasock-nc's UDP mode (-u) and lookup mode (-L).
 *
 * Lets an operator try datagrams and name lookups as a guest of a tenant
 * would. Trusts its command line (the operator's) and libwasock; the bytes
 * of stdin and of datagrams are copied, never interpreted.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wasock-nc.h"

/* One line of stdin is one datagram: the largest UDP payload, plus its
 * newline. */
#define NC_LINE_MAX (WASOCK_DATAGRAM_MAX + 1)

/* Datagrams taken per receive call. */
#define NC_RECEIVE_BATCH 16

/* Room for the received payloads of one call (at least the largest). */
#define NC_RECEIVE_BUFFER (2 * WASOCK_DATAGRAM_MAX)

/* Addresses one lookup prints at most (the daemon sends at most 64). */
#define NC_LOOKUP_MAX 64

static int64_t monotonic_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int udp_failure(const struct nc_udp_options *o, const char *operation, wasock_err err) {
    fprintf(stderr, "wasock-nc: %s %s: %s\n", operation, o->address_text, wasock_err_name(err));
    return err == WASOCK_E_DAEMON ? NC_EXIT_DAEMON : NC_EXIT_SOCKET_ERROR;
}

static bool is_loopback(const wasock_addr *a) {
    if (a->ip.family == WASOCK_IPV4)
        return a->ip.addr.v4[0] == 127;
    for (int i = 0; i < 7; i++)
        if (a->ip.addr.v6[i] != 0)
            return false;
    return a->ip.addr.v6[7] == 1;
}

/* 0.2 start-bind + finish-bind, or the 0.3 bind. */
static wasock_err bind_socket(const struct nc_udp_options *o, wasock_udp *u,
                              const wasock_addr *local) {
    wasock_err err;

    if (o->shape_0_3)
        return wasock_udp_bind(u, local);
    err = wasock_udp_start_bind(u, local);
    return err == WASOCK_OK ? wasock_udp_finish_bind(u) : err;
}

/* Sets the socket up: bound (and, without -l, associated with the peer). */
static wasock_err set_up(const struct nc_udp_options *o, wasock_udp *u) {
    wasock_addr local;
    wasock_err err;

    if (o->listen) {
        err = bind_socket(o, u, &o->address);
        if (err == WASOCK_OK && !o->shape_0_3)
            err = wasock_udp_stream(u, NULL);
        return err;
    }
    if (o->shape_0_3)
        return wasock_udp_connect(u, &o->address); /* binds implicitly */
    /* 0.2 streams need a bound socket: a loopback peer gets a loopback
     * address (what a loopback-only policy allows), others the wildcard. */
    memset(&local, 0, sizeof(local));
    local.ip.family = o->address.ip.family;
    if (is_loopback(&o->address)) {
        local = o->address;
        local.port = 0;
    }
    err = bind_socket(o, u, &local);
    return err == WASOCK_OK ? wasock_udp_stream(u, &o->address) : err;
}

/* Sends one line as a datagram to `to` (NULL: the associated peer). */
static wasock_err send_line(const struct nc_udp_options *o, wasock_udp *u, const char *line,
                            size_t len, const wasock_addr *to) {
    wasock_datagram d = {.data = (const uint8_t *)line, .len = len, .has_remote = to != NULL};
    uint64_t permits = 0, sent = 0;
    wasock_err err;

    if (to)
        d.remote = *to;
    if (!o->shape_0_3) {
        /* check-send first; a full channel waits until it drains. */
        for (;;) {
            err = wasock_udp_check_send(u, &permits);
            if (err != WASOCK_OK || permits > 0)
                break;
            struct pollfd p = {.fd = wasock_udp_fd(u), .events = POLLOUT};
            poll(&p, 1, -1);
        }
        if (err != WASOCK_OK)
            return err;
    }
    err = wasock_udp_send(u, &d, 1, &sent);
    if (err == WASOCK_OK && sent == 0)
        err = WASOCK_E_WOULD_BLOCK;
    return err;
}

/* Prints what is waiting; remembers the last source in *last. Returns 0
 * or an exit status. */
static int print_received(const struct nc_udp_options *o, wasock_udp *u, wasock_addr *last,
                          bool *have_last) {
    static uint8_t buf[NC_RECEIVE_BUFFER];
    wasock_datagram got[NC_RECEIVE_BATCH];
    size_t n = 0;
    wasock_err err = wasock_udp_receive(u, NC_RECEIVE_BATCH, got, buf, sizeof(buf), &n);

    if (err != WASOCK_OK)
        return udp_failure(o, "receive on", err);
    for (size_t i = 0; i < n; i++) {
        if (o->verbose) {
            char text[WASOCK_ADDR_STRLEN];
            if (wasock_addr_format(&got[i].remote, text, sizeof(text)) >= 0)
                fprintf(stderr, "wasock-nc: %zu bytes from %s\n", got[i].len, text);
        }
        if (fwrite(got[i].data, 1, got[i].len, stdout) != got[i].len || putchar('\n') == EOF)
            return NC_EXIT_LOCAL_IO;
        *last = got[i].remote;
        *have_last = true;
    }
    if (fflush(stdout) != 0)
        return NC_EXIT_LOCAL_IO;
    return 0;
}

/* Sends every complete line of buf[0, *len) and keeps the rest; at the end
 * of input (or with a full buffer) the rest is one more datagram. With -l
 * the lines go to `peer` (NULL: nobody has sent yet, the lines are
 * dropped). Returns 0 or an exit status. */
static int send_lines(const struct nc_udp_options *o, wasock_udp *u, char *buf, size_t *len,
                      bool at_end, const wasock_addr *peer) {
    size_t start = 0;

    for (size_t i = 0; i < *len; i++) {
        if (buf[i] != '\n')
            continue;
        if (o->listen && !peer) {
            fprintf(stderr, "wasock-nc: no peer has sent anything yet: line dropped\n");
        } else {
            wasock_err err = send_line(o, u, buf + start, i - start, o->listen ? peer : NULL);
            if (err != WASOCK_OK)
                return udp_failure(o, "send to", err);
        }
        start = i + 1;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
    if (*len > 0 && (at_end || *len == NC_LINE_MAX)) {
        if (o->listen && !peer)
            return 0;
        wasock_err err = send_line(o, u, buf, *len, o->listen ? peer : NULL);
        *len = 0;
        if (err != WASOCK_OK)
            return udp_failure(o, "send to", err);
    }
    return 0;
}

int nc_run_udp(const struct nc_udp_options *o, wasock_client *c) {
    static char line[NC_LINE_MAX];
    size_t line_len = 0;
    bool stdin_open = true, have_last = false;
    int64_t stop_at = -1;
    wasock_addr last;
    wasock_udp *u;
    wasock_err err;
    int status = NC_EXIT_OK;

    err = wasock_udp_create(c, o->address.ip.family, &u);
    if (err != WASOCK_OK)
        return udp_failure(o, "create UDP socket for", err);
    err = set_up(o, u);
    if (err != WASOCK_OK) {
        wasock_udp_drop(u);
        return udp_failure(o, o->listen ? "bind" : "connect", err);
    }
    if (o->verbose) {
        char text[WASOCK_ADDR_STRLEN];
        wasock_addr local;
        if (wasock_udp_local_address(u, &local) == WASOCK_OK &&
            wasock_addr_format(&local, text, sizeof(text)) >= 0)
            fprintf(stderr, "wasock-nc: UDP socket at %s\n", text);
    }
    while (status == NC_EXIT_OK) {
        struct pollfd p[3] = {
            {.fd = wasock_udp_fd(u), .events = POLLIN},
            {.fd = wasock_client_fd(c), .events = POLLIN},
            {.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN},
        };
        int timeout = -1;

        if (!stdin_open) {
            if (stop_at < 0)
                break;
            timeout = (int)(stop_at - monotonic_ms());
            if (timeout <= 0)
                break;
        }
        if (poll(p, 3, timeout) < 0 && errno != EINTR) {
            status = NC_EXIT_LOCAL_IO;
            break;
        }
        if (p[1].revents && wasock_client_dispatch(c) != WASOCK_OK) {
            status = udp_failure(o, "session for", WASOCK_E_DAEMON);
            break;
        }
        if (p[0].revents) {
            status = print_received(o, u, &last, &have_last);
            if (status != NC_EXIT_OK)
                break;
        }
        if (!(p[2].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = read(STDIN_FILENO, line + line_len, NC_LINE_MAX - line_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            stdin_open = false;
            stop_at = o->wait_seconds > 0 ? monotonic_ms() + o->wait_seconds * 1000LL : -1;
        } else {
            line_len += (size_t)n;
        }
        status = send_lines(o, u, line, &line_len, !stdin_open, have_last ? &last : NULL);
    }
    wasock_udp_drop(u);
    return status;
}

static void print_ip(const wasock_ip *ip) {
    wasock_addr a;
    char text[WASOCK_ADDR_STRLEN];

    memset(&a, 0, sizeof(a));
    a.ip = *ip;
    a.port = 1;
    if (wasock_addr_format(&a, text, sizeof(text)) < 0)
        return;
    /* Drop the ":1" (and the brackets of IPv6) the address format needs. */
    char *colon = strrchr(text, ':');
    if (colon)
        *colon = '\0';
    if (text[0] == '[') {
        size_t len = strlen(text);
        text[len - 1] = '\0';
        puts(text + 1);
    } else {
        puts(text);
    }
}

int nc_run_lookup(const char *name, bool verbose, wasock_client *c) {
    wasock_ip ips[NC_LOOKUP_MAX];
    size_t n = 0;
    wasock_err err;

    if (wasock_client_wasi_version(c) == 3) {
        err = wasock_resolve_addresses_list(c, name, ips, NC_LOOKUP_MAX, &n);
    } else {
        wasock_resolve *r = NULL;
        bool done = false;
        wasock_ip ip;

        err = wasock_resolve_addresses(c, name, &r);
        while (err == WASOCK_OK) {
            err = wasock_resolve_next_address(r, &ip, &done);
            if (err == WASOCK_E_WOULD_BLOCK) {
                /* The 0.2 way: wait on the daemon's connection. */
                err = wasock_client_wait(c, -1);
                continue;
            }
            if (err != WASOCK_OK || done)
                break;
            if (n < NC_LOOKUP_MAX)
                ips[n++] = ip;
        }
        wasock_resolve_drop(r);
    }
    if (err != WASOCK_OK) {
        fprintf(stderr, "wasock-nc: look up %s: %s\n", name, wasock_err_name(err));
        return err == WASOCK_E_DAEMON ? NC_EXIT_DAEMON : NC_EXIT_SOCKET_ERROR;
    }
    if (verbose)
        fprintf(stderr, "wasock-nc: %s: %zu addresses\n", name, n);
    for (size_t i = 0; i < n; i++)
        print_ip(&ips[i]);
    return fflush(stdout) == 0 ? NC_EXIT_OK : NC_EXIT_LOCAL_IO;
}
