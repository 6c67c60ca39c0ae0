/* bench-lookup.c — wasock-bench row for name lookup: lookups per second of
 * an IP literal and of "localhost" through the daemon (0.2 stream shape:
 * resolve_addresses, wait until ready, read every address, drop) against
 * getaddrinfo of the same name in this process.
 *
 * Lookups are issued one at a time: the daemon caps a tenant's lookups in
 * flight. Trusts libwasock, the daemon it started and the local resolver
 * configuration; every loop stops at a count or a time budget.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "bench-rows.h"

/* Most lookups one sample makes through the daemon, whatever the time
 * budget. */
#define LOOKUP_COUNT_FULL  2000ul
#define LOOKUP_COUNT_QUICK 500ul

/* The same for getaddrinfo in process: a literal takes well under a
 * microsecond, so the daemon's count would end the sample within a fraction
 * of a millisecond, too short to time; this keeps it near the time budget. */
#define LOOKUP_DIRECT_COUNT_FULL  1000000ul
#define LOOKUP_DIRECT_COUNT_QUICK 200000ul

/* Addresses read from one answer before it counts as malformed: far above
 * what a literal or localhost resolves to. */
#define LOOKUP_MAX_ADDRESSES 64

/* How often a lookup refused for the in-flight cap (a previous lookup's
 * resolver thread not yet released) is retried, with BENCH_RETRY_MS
 * between tries, before it counts as an error. */
#define LOOKUP_CAP_RETRIES 1000

static unsigned long lookup_sample_count(void) {
    return BENCH_PICK(LOOKUP_COUNT_FULL, LOOKUP_COUNT_QUICK);
}

/* One lookup of name through the daemon, waiting for its answer and
 * reading every address. WASOCK_OK or the first error. */
static wasock_err wasockd_lookup_once(wasock_client *c, const char *name) {
    wasock_resolve *r = NULL;
    wasock_err e = WASOCK_E_TEMPORARY_RESOLVER_FAILURE;
    for (int tries = 0; tries < LOOKUP_CAP_RETRIES && e == WASOCK_E_TEMPORARY_RESOLVER_FAILURE;
         tries++) {
        if (tries > 0) {
            bench_sleep_ms(BENCH_RETRY_MS);
        }
        e = wasock_resolve_addresses(c, name, &r);
    }
    if (e != WASOCK_OK) {
        return e;
    }
    int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
    while (!wasock_resolve_ready(r) && e == WASOCK_OK) {
        int64_t left = (deadline - bench_now_ns()) / 1000000;
        e = left > 0 ? wasock_client_wait(c, (int)left) : WASOCK_E_TIMEOUT;
    }
    bool done = false;
    unsigned addresses = 0;
    while (e == WASOCK_OK && !done) {
        wasock_ip ip;
        e = wasock_resolve_next_address(r, &ip, &done);
        if (e == WASOCK_OK && !done && ++addresses > LOOKUP_MAX_ADDRESSES) {
            e = WASOCK_E_UNKNOWN;
        }
    }
    if (e == WASOCK_OK && addresses == 0) {
        e = WASOCK_E_NAME_UNRESOLVABLE;
    }
    wasock_resolve_drop(r);
    return e;
}

/* One sample through the daemon: lookups per second, or -1 with *err. */
static double wasockd_lookup_rate(wasock_client *c, const char *name, wasock_err *err) {
    unsigned long total = lookup_sample_count(), done = 0;
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    while (done < total && bench_now_ns() < stop) {
        *err = wasockd_lookup_once(c, name);
        if (*err != WASOCK_OK) {
            return -1;
        }
        done++;
    }
    return (double)done / ((double)(bench_now_ns() - start) / 1e9);
}

/* One sample of getaddrinfo (both families, one socket type so each
 * address is listed once, as the daemon answers): lookups per second, or
 * -1 with *gai_err set. */
static double direct_lookup_rate(const char *name, int *gai_err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    unsigned long total = BENCH_PICK(LOOKUP_DIRECT_COUNT_FULL, LOOKUP_DIRECT_COUNT_QUICK);
    unsigned long done = 0;
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    while (done < total && bench_now_ns() < stop) {
        struct addrinfo *res = NULL;
        *gai_err = getaddrinfo(name, NULL, &hints, &res);
        if (*gai_err != 0) {
            return -1;
        }
        freeaddrinfo(res);
        done++;
    }
    return (double)done / ((double)(bench_now_ns() - start) / 1e9);
}

/* Measures one name: its own group, both series, every repetition. */
static void lookup_measure_name(wasock_client *c, const char *key, const char *name) {
    char title[BENCH_TEXT_MAX];
    snprintf(title, sizeof(title), "name lookup of \"%s\", one at a time", name);
    bench_group *g = bench_group_open(key, title, "lookups/s", BENCH_HIGHER_IS_BETTER);
    bench_group_note(
        g,
        "at most %lu per sample (direct %lu); wasockd: resolve_addresses, wait "
        "ready, read every address, drop (0.2 stream); direct: getaddrinfo + "
        "freeaddrinfo in process, which needs no round trip at all",
        lookup_sample_count(),
        (unsigned long)BENCH_PICK(LOOKUP_DIRECT_COUNT_FULL, LOOKUP_DIRECT_COUNT_QUICK));
    bench_series *wasockd = bench_series_add(g, "wasockd", "0.2 resolve stream");
    bench_series *direct = bench_series_add(g, "direct", "getaddrinfo");
    bench_compare(g, wasockd, direct, (bench_target){0});

    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        wasock_err e = WASOCK_OK;
        double rate = wasockd_lookup_rate(c, name, &e);
        if (rate < 0) {
            bench_group_error(g, "wasockd lookup of %s: %s", name, wasock_err_name(e));
            break;
        }
        bench_series_sample(wasockd, rate);
        int gai_err = 0;
        rate = direct_lookup_rate(name, &gai_err);
        if (rate < 0) {
            bench_group_error(g, "getaddrinfo of %s: %s", name, gai_strerror(gai_err));
            break;
        }
        bench_series_sample(direct, rate);
    }
}

void bench_row_lookup(bench_daemon *d) {
    wasock_client *c = NULL;
    wasock_err e = bench_client_open(d, &c);
    if (e != WASOCK_OK) {
        bench_group *g =
            bench_group_open("lookup", "name lookup", "lookups/s", BENCH_HIGHER_IS_BETTER);
        bench_group_error(g, "client: %s", wasock_err_name(e));
        return;
    }
    lookup_measure_name(c, "lookup_literal", "127.0.0.1");
    lookup_measure_name(c, "lookup_localhost", "localhost");
    wasock_client_close(c);
}
