/* bench-policy.c — shows that a policy decision costs about the same with
 * 10, 1,000 or 10,000 rules: builds a tenant with that many rules of mixed
 * shapes (remote addresses, host names, local ports, address sets), then
 * times policy_decide() over a fixed mix of requests that hit rules
 * anywhere in the file or miss them all, and, for comparison, the
 * rule-by-rule path that policy_explain() takes.
 *
 * Trusts nothing from outside: it generates its own input. Not a test
 * (timings depend on the machine); run <builddir>/policy/wasock-policy-bench.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy.h"

/* Distinct requests cycled through while timing: enough to defeat any
 * accidental caching of one request, few enough to build quickly. */
#define BENCH_REQUESTS 4096

/* How long each measurement runs (seconds of CPU time). */
#define BENCH_SECONDS 0.4

/* Linear scans at 10,000 rules are slow; this caps their iterations. */
#define BENCH_SCAN_MAX_DECISIONS 20000

typedef struct text_buffer {
    char *data;
    size_t len, cap;
} text_buffer;

static void append(text_buffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(text_buffer *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            fprintf(stderr, "bench: format error\n");
            exit(1);
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *grown = realloc(b->data, cap);
        if (grown == NULL) {
            fprintf(stderr, "bench: out of memory\n");
            exit(1);
        }
        b->data = grown;
        b->cap = cap;
    }
}

/* Rule i of n, one of four shapes. */
static void append_rule(text_buffer *b, unsigned i) {
    static const char *const actions[] = {"allow", "deny", "prompt"};
    const char *action = actions[i % 3];
    switch (i % 4) {
    case 0: /* one remote host and port */
        append(b,
               "      - id: r%u\n        ops: [ tcp.connect ]\n"
               "        remote: [ 10.%u.%u.%u/32 ]\n        ports: [ %u ]\n"
               "        action: %s\n",
               i, (i >> 16) & 255, (i >> 8) & 255, i & 255, 1000 + i % 5000, action);
        break;
    case 1: /* a host name for lookup and connect */
        append(b,
               "      - id: r%u\n        ops: [ lookup, tcp.connect ]\n"
               "        host: [ \"svc%u.example.com\", \"*.zone%u.example.net\" ]\n"
               "        ports: [ 443 ]\n        action: %s\n",
               i, i, i, action);
        break;
    case 2: /* local servers sharing one address, told apart by port */
        append(b,
               "      - id: r%u\n        ops: [ tcp.server ]\n"
               "        local: [ \"@loopback\" ]\n        local_ports: [ %u ]\n"
               "        action: %s\n",
               i, 2000 + i % 60000, action);
        break;
    default: /* a remote network with a port range */
        append(b,
               "      - id: r%u\n        ops: [ udp.client ]\n"
               "        remote: [ \"172.%u.%u.0/24\", \"2001:db8:%x::/48\" ]\n"
               "        ports: [ \"%u-%u\" ]\n        action: %s\n",
               i, 16 + (i >> 8) % 16, i & 255, i, 3000 + i % 1000, 3005 + i % 1000, action);
        break;
    }
}

static policy *build_policy(unsigned rules, double *load_seconds) {
    text_buffer b = {.data = malloc(4096), .cap = 4096};
    if (b.data == NULL)
        exit(1);
    append(&b, "version: 1\nguards:\n  - id: no-metadata\n    remote: [ \"@metadata\" ]\n"
               "  - id: no-special\n    remote: [ \"@special\" ]\n    ports: [ 25 ]\n"
               "tenants:\n  bench:\n    match: { uids: [ 1000 ] }\n    default: deny\n"
               "    rules:\n");
    for (unsigned i = 0; i < rules; i++)
        append_rule(&b, i);
    clock_t start = clock();
    policy *p = NULL;
    char *errors = NULL;
    if (policy_load_buffer("bench.yaml", b.data, b.len, &p, &errors) < 0) {
        fprintf(stderr, "bench: policy did not load:\n%s", errors ? errors : "");
        exit(1);
    }
    *load_seconds = (double)(clock() - start) / CLOCKS_PER_SEC;
    free(errors);
    free(b.data);
    return p;
}

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* A request aimed at rule i (of any position), or, one time in four, at
 * nothing (decided by the default after every candidate failed). */
static void make_request(policy_request *req, char *host, size_t host_len, unsigned rules) {
    unsigned i = rng() % rules;
    bool miss = rng() % 4 == 0;
    char text[64];
    memset(req, 0, sizeof(*req));
    req->tenant = "bench";
    switch (i % 4) {
    case 0:
        req->op = POLICY_OP_TCP_CONNECT;
        snprintf(text, sizeof(text), "10.%u.%u.%u:%u", (i >> 16) & 255, (i >> 8) & 255, i & 255,
                 miss ? 999 : 1000 + i % 5000);
        policy_endpoint_parse(text, &req->remote);
        break;
    case 1:
        req->op = rng() % 2 ? POLICY_OP_LOOKUP : POLICY_OP_TCP_CONNECT;
        snprintf(host, host_len, miss ? "svc%u.example.org" : "a.zone%u.example.net", i);
        req->host = host;
        policy_endpoint_parse("192.0.2.10:443", &req->remote);
        if (req->op == POLICY_OP_LOOKUP)
            req->remote = (policy_endpoint){0};
        break;
    case 2:
        req->op = POLICY_OP_TCP_LISTEN;
        snprintf(text, sizeof(text), "127.0.0.1:%u", miss ? 1 : 2000 + i % 60000);
        policy_endpoint_parse(text, &req->local);
        break;
    default:
        req->op = POLICY_OP_UDP_SEND;
        snprintf(text, sizeof(text), "172.%u.%u.9:%u", 16 + (i >> 8) % 16, i & 255,
                 miss ? 2999 : 3002 + i % 1000);
        policy_endpoint_parse(text, &req->remote);
        break;
    }
}

typedef struct bench_request {
    policy_request req;
    char host[64];
} bench_request;

static double measure(const policy *p, const bench_request *requests, bool scan,
                      unsigned long max_decisions, unsigned *allowed) {
    unsigned long done = 0;
    clock_t start = clock(), now;
    *allowed = 0;
    do {
        /* Batches keep clock() out of the measured loop. */
        for (unsigned k = 0; k < 256 && done < max_decisions; k++, done++) {
            policy_verdict v;
            const policy_request *req = &requests[done % BENCH_REQUESTS].req;
            if (scan)
                policy_explain(p, req, NULL, NULL, NULL, NULL, &v);
            else
                policy_decide(p, req, &v);
            *allowed += v.action == POLICY_ALLOW;
        }
        now = clock();
    } while ((double)(now - start) / CLOCKS_PER_SEC < BENCH_SECONDS && done < max_decisions);
    double seconds = (double)(now - start) / CLOCKS_PER_SEC;
    return seconds > 0 ? (double)done / seconds : 0;
}

int main(void) {
    static const unsigned sizes[] = {10, 1000, 10000};
    bench_request *requests = calloc(BENCH_REQUESTS, sizeof(*requests));
    if (requests == NULL)
        return 1;
    printf("%8s %10s %18s %14s %18s\n", "rules", "load ms", "decisions/s", "us/decision",
           "scan decisions/s");
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        double load_seconds;
        policy *p = build_policy(sizes[s], &load_seconds);
        for (unsigned i = 0; i < BENCH_REQUESTS; i++) {
            make_request(&requests[i].req, requests[i].host, sizeof(requests[i].host), sizes[s]);
        }
        unsigned allowed, allowed_scan;
        double rate = measure(p, requests, false, (unsigned long)-1, &allowed);
        double scan_rate = measure(p, requests, true, BENCH_SCAN_MAX_DECISIONS, &allowed_scan);
        printf("%8u %10.1f %18.0f %14.2f %18.0f\n", sizes[s], load_seconds * 1000, rate,
               rate > 0 ? 1e6 / rate : 0, scan_rate);
        policy_free(p);
    }
    free(requests);
    return 0;
}
