/* bench-decide.c — wasock-bench row for policy decisions: decisions per
 * second of policy_decide() with 10, 1,000 and 10,000 rules in one tenant.
 *
 * The policy text is generated here, in memory, and loaded with
 * policy_load_buffer; requests are a fixed pseudo-random mix that hits
 * rules anywhere in the file or misses them all. Trusts only itself.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-rows.h"
#include "policy.h"

/* Rule counts of the row (the three sizes). */
static const unsigned decide_rule_counts[] = {10, 1000, 10000};
#define DECIDE_SIZES (sizeof(decide_rule_counts) / sizeof(decide_rule_counts[0]))

/* Distinct requests cycled through: more than any cache line trick could
 * remember, few enough to build at once. */
#define DECIDE_REQUESTS 8192

/* Decisions between two clock readings. */
#define DECIDE_BATCH 512

/* Most decisions in one sample, whatever the time budget. */
#define DECIDE_MAX_DECISIONS 100000000ul

/* A growing text buffer for the generated YAML. */
typedef struct yaml_text {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory: the text is incomplete */
} yaml_text;

static void yaml_add(yaml_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void yaml_add(yaml_text *t, const char *fmt, ...) {
    while (!t->failed) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->data != NULL ? t->data + t->len : NULL,
                          t->data != NULL ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->data != NULL && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *grown = realloc(t->data, cap);
        if (grown == NULL) {
            t->failed = true;
            return;
        }
        t->data = grown;
        t->cap = cap;
    }
}

/* Rule k of a tenant: four shapes that the compiler files under different
 * keys (remote prefix, host suffix, local port, IPv6 prefix with ports). */
static void add_rule(yaml_text *t, unsigned k) {
    const char *action = k % 5 == 4 ? "deny" : "allow";
    switch (k % 4) {
    case 0:
        yaml_add(t,
                 "      - id: conn-%u\n        ops: [ tcp.connect ]\n"
                 "        remote: [ \"10.%u.%u.0/24\" ]\n        ports: [ %u ]\n"
                 "        action: %s\n",
                 k, (k >> 8) & 255, k & 255, 1024 + k % 20000, action);
        break;
    case 1:
        yaml_add(t,
                 "      - id: name-%u\n        ops: [ tcp.connect ]\n"
                 "        host: [ \"api%u.bench.example\" ]\n        ports: [ 443 ]\n"
                 "        action: %s\n",
                 k, k, action);
        break;
    case 2:
        yaml_add(t,
                 "      - id: serve-%u\n        ops: [ tcp.listen ]\n"
                 "        local: [ \"127.0.0.0/8\" ]\n        local_ports: [ %u ]\n"
                 "        action: %s\n",
                 k, 20000 + k % 40000, action);
        break;
    default:
        yaml_add(t,
                 "      - id: dgram-%u\n        ops: [ udp.send ]\n"
                 "        remote: [ \"2001:db8:%x::/48\" ]\n        ports: [ \"%u-%u\" ]\n"
                 "        action: %s\n",
                 k, k, 5000 + k % 1000, 5010 + k % 1000, action);
        break;
    }
}

/* Loads a policy with `rules` rules; NULL on failure (reason on stderr). */
static policy *decide_policy(unsigned rules, double *load_ms) {
    yaml_text t = {0};
    yaml_add(&t, "version: 1\ntenants:\n  bench:\n    match: { uids: [ 0 ] }\n"
                 "    default: deny\n    rules:\n");
    for (unsigned k = 0; k < rules; k++) {
        add_rule(&t, k);
    }
    if (t.failed) {
        free(t.data);
        fprintf(stderr, "wasock-bench: out of memory building a policy\n");
        return NULL;
    }
    policy *p = NULL;
    char *errors = NULL;
    double start = bench_now_s();
    if (policy_load_buffer("bench.yaml", t.data, t.len, &p, &errors) < 0) {
        fprintf(stderr, "wasock-bench: generated policy refused:\n%s\n",
                errors != NULL ? errors : "");
        p = NULL;
    }
    *load_ms = (bench_now_s() - start) * 1e3;
    free(errors);
    free(t.data);
    return p;
}

typedef struct decide_request {
    policy_request req;
    char host[64];
} decide_request;

/* xorshift: a fixed sequence, so every run asks the same questions. */
static uint32_t decide_random(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t)(*state >> 16);
}

/* A request aimed at a random rule of `rules`; one in four misses it. */
static void make_request(decide_request *r, unsigned rules, uint64_t *rng) {
    unsigned k = decide_random(rng) % rules;
    bool miss = decide_random(rng) % 4 == 0;
    char text[80];
    memset(&r->req, 0, sizeof(r->req));
    r->req.tenant = "bench";
    switch (k % 4) {
    case 0:
        r->req.op = POLICY_OP_TCP_CONNECT;
        snprintf(text, sizeof(text), "10.%u.%u.%u:%u", (k >> 8) & 255, k & 255, 1 + k % 250,
                 miss ? 1023 : 1024 + k % 20000);
        policy_endpoint_parse(text, &r->req.remote);
        break;
    case 1:
        r->req.op = POLICY_OP_TCP_CONNECT;
        snprintf(r->host, sizeof(r->host), miss ? "api%u.other.example" : "api%u.bench.example", k);
        r->req.host = r->host;
        policy_endpoint_parse("198.51.100.7:443", &r->req.remote);
        break;
    case 2:
        r->req.op = POLICY_OP_TCP_LISTEN;
        snprintf(text, sizeof(text), "127.0.0.1:%u", miss ? 19999 : 20000 + k % 40000);
        policy_endpoint_parse(text, &r->req.local);
        break;
    default:
        r->req.op = POLICY_OP_UDP_SEND;
        snprintf(text, sizeof(text), "[2001:db8:%x::9]:%u", k, miss ? 4999 : 5005 + k % 1000);
        policy_endpoint_parse(text, &r->req.remote);
        break;
    }
}

/* One sample: decisions per second over the request mix. */
static double decisions_per_second(const policy *p, const decide_request *requests) {
    unsigned long done = 0, allowed = 0;
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    int64_t now;
    do {
        for (unsigned i = 0; i < DECIDE_BATCH; i++, done++) {
            policy_verdict v;
            policy_decide(p, &requests[done % DECIDE_REQUESTS].req, &v);
            allowed += v.action == POLICY_ALLOW;
        }
        now = bench_now_ns();
    } while (now < stop && done < DECIDE_MAX_DECISIONS);
    /* Using the verdicts keeps the compiler from dropping the calls. */
    if (allowed > done) {
        return -1;
    }
    return (double)done / ((double)(now - start) / 1e9);
}

void bench_row_decide(bench_daemon *d) {
    (void)d;
    bench_group *g = bench_group_open("policy", "policy decisions (policy_decide, one thread)",
                                      "decisions/s", BENCH_HIGHER_IS_BETTER);
    bench_series *series[DECIDE_SIZES];
    policy *policies[DECIDE_SIZES] = {0};
    decide_request *requests[DECIDE_SIZES] = {0};
    double load_ms[DECIDE_SIZES] = {0};
    char key[32], label[64];

    for (size_t i = 0; i < DECIDE_SIZES; i++) {
        snprintf(key, sizeof(key), "rules-%u", decide_rule_counts[i]);
        snprintf(label, sizeof(label), "%u rules, 3/4 hits, 1/4 misses", decide_rule_counts[i]);
        series[i] = bench_series_add(g, key, label);
    }
    bench_compare(g, series[DECIDE_SIZES - 1], NULL,
                  (bench_target){BENCH_TARGET_AT_LEAST, 1e6, ">= 1,000,000/s (<= 1 us)"});
    bench_compare(g, series[DECIDE_SIZES - 1], series[0], (bench_target){0});

    for (size_t i = 0; i < DECIDE_SIZES; i++) {
        policies[i] = decide_policy(decide_rule_counts[i], &load_ms[i]);
        requests[i] = calloc(DECIDE_REQUESTS, sizeof(decide_request));
        if (policies[i] == NULL || requests[i] == NULL) {
            bench_group_error(g, "cannot build the %u-rule policy", decide_rule_counts[i]);
            goto out;
        }
        uint64_t rng = 0x9e3779b97f4a7c15ull ^ decide_rule_counts[i];
        for (unsigned k = 0; k < DECIDE_REQUESTS; k++) {
            make_request(&requests[i][k], decide_rule_counts[i], &rng);
        }
    }
    bench_group_note(g,
                     "rules of four shapes (remote /24+port, host name, listen port, IPv6 "
                     "/48+port range); policy_load_buffer took %.1f / %.1f / %.1f ms",
                     load_ms[0], load_ms[1], load_ms[2]);
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        for (size_t i = 0; i < DECIDE_SIZES; i++) {
            double rate = decisions_per_second(policies[i], requests[i]);
            if (rate < 0) {
                bench_group_error(g, "impossible verdict count");
                goto out;
            }
            bench_series_sample(series[i], rate);
        }
    }
out:
    for (size_t i = 0; i < DECIDE_SIZES; i++) {
        policy_free(policies[i]);
        free(requests[i]);
    }
}
