/* check-policy.c — unit tests of the policy library: the loader corpus
 * (tests/data/policy), the shipped examples, and table-driven decisions of
 * the matcher (CIDR and port edges, families, mapped addresses, ordering,
 * guards, exemptions, shadow rules, host patterns, implicit binds, the
 * built-in default), explain, admission, and a randomised comparison of
 * the indexed matcher with the rule-by-rule explain path.
 *
 * Trusts the corpus files only to exist; everything else is asserted.
 * DATA_DIR points at tests/data (set by tests/unit/meson.build).
 * Debugging: CK_FORK=no CK_RUN_CASE=<tcase> ./check-policy
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Most corpus files of one kind the suite registers. */
#define CORPUS_MAX_FILES 256

static char *corpus_valid[CORPUS_MAX_FILES];
static size_t corpus_valid_count;
static char *corpus_invalid[CORPUS_MAX_FILES];
static size_t corpus_invalid_count;

static const char *data_dir(void) {
    const char *dir = getenv("DATA_DIR");
    return dir ? dir : "tests/data";
}

/* ---- Helpers ---- */

static policy *load_text(const char *yaml) {
    policy *p = NULL;
    char *errors = NULL;
    int r = policy_load_buffer("test.yaml", yaml, strlen(yaml), &p, &errors);
    ck_assert_msg(r == 0, "policy did not load:\n%s", errors ? errors : "(no message)");
    ck_assert_ptr_nonnull(p);
    free(errors);
    return p;
}

/* Loads text that must fail and returns the diagnostics (caller frees). */
static char *load_errors(const char *yaml, size_t len) {
    policy *p = NULL;
    char *errors = NULL;
    int r = policy_load_buffer("test.yaml", yaml, len, &p, &errors);
    ck_assert_int_eq(r, -1);
    ck_assert_ptr_null(p);
    ck_assert_ptr_nonnull(errors);
    return errors;
}

static policy_endpoint endpoint(const char *text) {
    policy_endpoint ep = {0};
    if (text != NULL)
        ck_assert_msg(policy_endpoint_parse(text, &ep) == 0, "bad endpoint '%s'", text);
    return ep;
}

/* One decision of a table. */
typedef struct decision_case {
    const char *tenant;
    const char *op;
    const char *local;  /* "addr:port" or NULL */
    const char *remote; /* "addr:port" or NULL */
    const char *host;
    bool implicit;
    bool local_ephemeral;
    policy_action action;
    const char *decided_by;
} decision_case;

static policy_request make_request(const decision_case *c) {
    policy_request req = {.tenant = c->tenant, .implicit = c->implicit, .host = c->host};
    ck_assert_msg(policy_op_from_name(c->op, &req.op) == 0, "bad op %s", c->op);
    req.local = endpoint(c->local);
    req.local.port_ephemeral = c->local_ephemeral;
    req.remote = endpoint(c->remote);
    return req;
}

/* Decides a case with policy_decide and policy_explain and checks both
 * against the expected action and decider. */
static void check_case(const policy *p, const decision_case *c, size_t index) {
    policy_request req = make_request(c);
    policy_verdict v, e;
    policy_decide(p, &req, &v);
    policy_explain(p, &req, NULL, NULL, NULL, NULL, &e);
    ck_assert_msg(v.action == c->action && strcmp(v.decided_by, c->decided_by) == 0,
                  "case %zu (%s %s local=%s remote=%s host=%s): got %s by %s, want %s by %s", index,
                  c->tenant, c->op, c->local ? c->local : "-", c->remote ? c->remote : "-",
                  c->host ? c->host : "-", policy_action_name(v.action), v.decided_by,
                  policy_action_name(c->action), c->decided_by);
    ck_assert_msg(e.action == v.action && strcmp(e.decided_by, v.decided_by) == 0,
                  "case %zu: explain says %s by %s", index, policy_action_name(e.action),
                  e.decided_by);
}

#define DENY   POLICY_DENY
#define ALLOW  POLICY_ALLOW
#define PROMPT POLICY_PROMPT

/* ---- Corpus ---- */

static void corpus_scan(const char *kind, char **out, size_t *count) {
    char dir_path[4096];
    snprintf(dir_path, sizeof(dir_path), "%s/policy/%s", data_dir(), kind);
    DIR *dir = opendir(dir_path);
    if (dir == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL && *count < CORPUS_MAX_FILES) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".yaml") != 0)
            continue;
        size_t need = strlen(dir_path) + len + 2;
        char *path = malloc(need);
        if (path == NULL)
            break;
        snprintf(path, need, "%s/%s", dir_path, de->d_name);
        out[(*count)++] = path;
    }
    closedir(dir);
}

START_TEST(test_corpus_present) {
    /* Guards against a wrong DATA_DIR turning the corpus tests into none. */
    ck_assert_uint_ge(corpus_valid_count, 5);
    ck_assert_uint_ge(corpus_invalid_count, 30);
}
END_TEST

START_TEST(test_corpus_valid) {
    const char *path = corpus_valid[_i];
    policy *p = NULL;
    char *errors = NULL;
    int r = policy_load_file(path, &p, &errors);
    ck_assert_msg(r == 0, "%s did not load:\n%s", path, errors ? errors : "");
    ck_assert_ptr_null(errors);
    policy_free(p);
}
END_TEST

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "re");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *buf = calloc(1, 65536);
    ck_assert_ptr_nonnull(buf);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

START_TEST(test_corpus_invalid) {
    const char *path = corpus_invalid[_i];
    policy *p = NULL;
    char *errors = NULL;
    ck_assert_int_eq(policy_load_file(path, &p, &errors), -1);
    ck_assert_ptr_null(p);
    ck_assert_ptr_nonnull(errors);

    /* foo.yaml -> foo.expected */
    char expected_path[4096];
    size_t stem = strlen(path) - strlen(".yaml");
    ck_assert_uint_lt(stem + sizeof(".expected"), sizeof(expected_path));
    memcpy(expected_path, path, stem);
    memcpy(expected_path + stem, ".expected", sizeof(".expected"));
    char *expected = read_text_file(expected_path);

    /* Split the diagnostics into lines without the "<path>:" prefix. */
    char *diag_lines[128];
    size_t diag_count = 0;
    size_t prefix = strlen(path) + 1;
    for (char *line = strtok(errors, "\n"); line && diag_count < 128; line = strtok(NULL, "\n")) {
        ck_assert_msg(strncmp(line, path, strlen(path)) == 0 && line[strlen(path)] == ':',
                      "diagnostic without the file name: %s", line);
        diag_lines[diag_count++] = line + prefix;
    }
    size_t expected_count = 0;
    char *save = NULL;
    for (char *want = strtok_r(expected, "\n", &save); want; want = strtok_r(NULL, "\n", &save)) {
        bool substring = strncmp(want, "~ ", 2) == 0;
        bool found = false;
        for (size_t i = 0; i < diag_count && !found; i++)
            found = substring ? strstr(diag_lines[i], want + 2) != NULL
                              : strcmp(diag_lines[i], want) == 0;
        ck_assert_msg(found, "%s: expected diagnostic not found: %s\ngot:\n%s%s", path, want,
                      diag_count ? diag_lines[0] : "(none)", diag_count > 1 ? "\n..." : "");
        expected_count++;
    }
    ck_assert_msg(expected_count > 0, "%s is empty", expected_path);
    ck_assert_msg(diag_count == expected_count, "%s: %zu diagnostics, %zu expected (first: %s)",
                  path, diag_count, expected_count, diag_count ? diag_lines[0] : "-");
    free(expected);
    free(errors);
}
END_TEST

/* ---- Examples and the built-in default ---- */

static policy *load_example(const char *name) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/../../policy/examples/%s", data_dir(), name);
    policy *p = NULL;
    char *errors = NULL;
    int r = policy_load_file(path, &p, &errors);
    ck_assert_msg(r == 0, "%s did not load:\n%s", path, errors ? errors : "");
    return p;
}

START_TEST(test_examples_load) {
    static const char *const names[] = {"default.yaml", "multi-tenant.yaml", "workstation.yaml"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        policy_free(load_example(names[i]));
}
END_TEST

static const decision_case builtin_cases[] = {
    {"default", "tcp.bind", "127.0.0.1:8080", NULL, NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.bind", "[::1]:8080", NULL, NULL, false, false, ALLOW, "rule:default-loopback"},
    {"default", "tcp.bind", "0.0.0.0:8080", NULL, NULL, false, false, DENY, "default:tenant"},
    {"default", "tcp.bind", "0.0.0.0:0", NULL, NULL, true, false, ALLOW, "default:implicit-bind"},
    {"default", "tcp.listen", "127.0.0.1:8080", NULL, NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.listen", "192.0.2.1:8080", NULL, NULL, false, false, DENY, "default:tenant"},
    {"default", "tcp.accept", "127.0.0.1:8080", "127.0.0.1:50000", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.accept", "127.0.0.1:8080", "192.0.2.1:50000", NULL, false, false, DENY,
     "default:tenant"},
    {"default", "tcp.connect", NULL, "127.0.0.1:80", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.connect", NULL, "127.255.255.255:80", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.connect", NULL, "[::1]:80", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.connect", NULL, "[::ffff:127.0.0.1]:80", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "tcp.connect", NULL, "128.0.0.1:80", NULL, false, false, DENY, "default:tenant"},
    {"default", "tcp.connect", NULL, "[::2]:80", NULL, false, false, DENY, "default:tenant"},
    {"default", "udp.bind", "127.0.0.1:5353", NULL, NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "udp.send", NULL, "127.0.0.53:53", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "udp.send", NULL, "192.0.2.53:53", NULL, false, false, DENY, "default:tenant"},
    {"default", "udp.connect", NULL, "[::1]:53", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "udp.receive", "127.0.0.1:53", "127.0.0.1:5353", NULL, false, false, ALLOW,
     "rule:default-loopback"},
    {"default", "udp.receive", "127.0.0.1:53", "192.0.2.9:5353", NULL, false, false, DENY,
     "default:tenant"},
    {"default", "lookup", NULL, NULL, "localhost", false, false, ALLOW, "rule:default-localhost"},
    {"default", "lookup", NULL, NULL, "LocalHost.", false, false, ALLOW, "rule:default-localhost"},
    {"default", "lookup", NULL, NULL, "example.com", false, false, DENY, "default:tenant"},
    {"default", "lookup", NULL, NULL, "localhost.example.com", false, false, DENY,
     "default:tenant"},
    {"other", "tcp.connect", NULL, "127.0.0.1:80", NULL, false, false, DENY, "tenant:unknown"},
};

START_TEST(test_builtin_default) {
    policy *p = policy_new_builtin_default(1000);
    ck_assert_ptr_nonnull(p);
    check_case(p, &builtin_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

START_TEST(test_builtin_matches_example) {
    /* examples/default.yaml is the built-in default written out (uid 1000). */
    policy *builtin = policy_new_builtin_default(1000);
    policy *file = load_example("default.yaml");
    for (size_t i = 0; i < ARRAY_SIZE(builtin_cases); i++) {
        policy_request req = make_request(&builtin_cases[i]);
        policy_verdict a, b;
        policy_decide(builtin, &req, &a);
        policy_decide(file, &req, &b);
        ck_assert_int_eq(a.action, b.action);
        ck_assert_str_eq(a.decided_by, b.decided_by);
        ck_assert_int_eq(a.error, b.error);
        ck_assert_int_eq(a.audit, b.audit);
    }
    char reason[128];
    for (uint32_t uid = 0; uid < 1002; uid += 1000) {
        int want = uid == 0 || uid == 1000 ? 0 : -1;
        ck_assert_int_eq(policy_admit(builtin, "default", uid, 5, NULL, reason, sizeof(reason)),
                         want);
        ck_assert_int_eq(policy_admit(file, "default", uid, 5, NULL, reason, sizeof(reason)), want);
    }
    ck_assert_int_eq(policy_admit(builtin, "default", 1001, 1001, NULL, reason, sizeof(reason)),
                     -1);
    ck_assert_uint_eq(policy_protocols(builtin, "default"), POLICY_PROTO_TCP | POLICY_PROTO_UDP);
    policy_free(builtin);
    policy_free(file);
}
END_TEST

START_TEST(test_builtin_root) {
    policy *p = policy_new_builtin_default(0);
    char reason[128];
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(policy_admit(p, "default", 0, 0, NULL, reason, sizeof(reason)), 0);
    ck_assert_int_eq(policy_admit(p, "default", 1000, 1000, NULL, reason, sizeof(reason)), -1);
    policy_free(p);
}
END_TEST

/* ---- CIDR edges and mapped addresses ---- */

static const char cidr_policy[] = "version: 1\n"
                                  "tenants:\n"
                                  "  t:\n"
                                  "    match: { uids: [ 1 ] }\n"
                                  "    rules:\n"
                                  "      - id: v4-host\n"
                                  "        ops: [ tcp.connect ]\n"
                                  "        remote: [ 198.51.100.7/32 ]\n"
                                  "        action: allow\n"
                                  "      - id: v6-host\n"
                                  "        ops: [ tcp.connect ]\n"
                                  "        remote: [ \"2001:db8::7/128\" ]\n"
                                  "        action: allow\n"
                                  "      - id: v4-net\n"
                                  "        ops: [ tcp.connect ]\n"
                                  "        remote: [ 198.51.100.0/24 ]\n"
                                  "        action: prompt\n"
                                  "      - id: mapped-spelling\n"
                                  "        ops: [ tcp.connect ]\n"
                                  "        remote: [ \"::ffff:203.0.113.0/120\" ]\n"
                                  "        action: allow\n"
                                  "      - id: v4-all\n"
                                  "        ops: [ udp.send ]\n"
                                  "        remote: [ 0.0.0.0/0 ]\n"
                                  "        action: allow\n"
                                  "      - id: v6-all\n"
                                  "        ops: [ udp.send ]\n"
                                  "        remote: [ \"::/0\" ]\n"
                                  "        action: prompt\n"
                                  "      - id: v6-half\n"
                                  "        ops: [ udp.connect ]\n"
                                  "        remote: [ \"2001:db8:8000::/33\" ]\n"
                                  "        action: allow\n";

static const decision_case cidr_cases[] = {
    {"t", "tcp.connect", NULL, "198.51.100.7:443", NULL, false, false, ALLOW, "rule:v4-host"},
    {"t", "tcp.connect", NULL, "198.51.100.6:443", NULL, false, false, PROMPT, "rule:v4-net"},
    {"t", "tcp.connect", NULL, "198.51.100.8:443", NULL, false, false, PROMPT, "rule:v4-net"},
    {"t", "tcp.connect", NULL, "198.51.100.0:443", NULL, false, false, PROMPT, "rule:v4-net"},
    {"t", "tcp.connect", NULL, "198.51.100.255:443", NULL, false, false, PROMPT, "rule:v4-net"},
    {"t", "tcp.connect", NULL, "198.51.101.0:443", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "198.51.99.255:443", NULL, false, false, DENY, "default:global"},
    /* IPv4-mapped spellings are the IPv4 address they carry. */
    {"t", "tcp.connect", NULL, "[::ffff:198.51.100.7]:443", NULL, false, false, ALLOW,
     "rule:v4-host"},
    {"t", "tcp.connect", NULL, "[::ffff:c633:6401]:443", NULL, false, false, PROMPT, "rule:v4-net"},
    {"t", "tcp.connect", NULL, "203.0.113.9:443", NULL, false, false, ALLOW,
     "rule:mapped-spelling"},
    {"t", "tcp.connect", NULL, "[::ffff:203.0.113.9]:443", NULL, false, false, ALLOW,
     "rule:mapped-spelling"},
    /* IPv4-compatible (deprecated) is a plain IPv6 address. */
    {"t", "tcp.connect", NULL, "[::198.51.100.7]:443", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "[2001:db8::7]:443", NULL, false, false, ALLOW, "rule:v6-host"},
    {"t", "tcp.connect", NULL, "[2001:db8::6]:443", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "[2001:db8::7:0]:443", NULL, false, false, DENY, "default:global"},
    /* /0 edges; an IPv6 /0 does not cover IPv4 (mapped or not). */
    {"t", "udp.send", NULL, "0.0.0.0:53", NULL, false, false, ALLOW, "rule:v4-all"},
    {"t", "udp.send", NULL, "255.255.255.255:53", NULL, false, false, ALLOW, "rule:v4-all"},
    {"t", "udp.send", NULL, "[::ffff:8.8.8.8]:53", NULL, false, false, ALLOW, "rule:v4-all"},
    {"t", "udp.send", NULL, "[::]:53", NULL, false, false, PROMPT, "rule:v6-all"},
    {"t", "udp.send", NULL, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:53", NULL, false, false,
     PROMPT, "rule:v6-all"},
    /* A /33: the half of 2001:db8::/32 with the high bit of the third word. */
    {"t", "udp.connect", NULL, "[2001:db8:8000::]:53", NULL, false, false, ALLOW, "rule:v6-half"},
    {"t", "udp.connect", NULL, "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:53", NULL, false, false,
     ALLOW, "rule:v6-half"},
    {"t", "udp.connect", NULL, "[2001:db8:7fff:ffff:ffff:ffff:ffff:ffff]:53", NULL, false, false,
     DENY, "default:global"},
    {"t", "udp.connect", NULL, "[2001:db9::]:53", NULL, false, false, DENY, "default:global"},
};

START_TEST(test_cidr_edges) {
    policy *p = load_text(cidr_policy);
    check_case(p, &cidr_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

/* ---- Ports ---- */

static const char ports_policy[] = "version: 1\n"
                                   "tenants:\n"
                                   "  t:\n"
                                   "    match: { uids: [ 1 ] }\n"
                                   "    rules:\n"
                                   "      - id: low-edge\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ 1 ]\n"
                                   "        action: allow\n"
                                   "      - id: range\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ \"1000-1999\" ]\n"
                                   "        action: allow\n"
                                   "      - id: high-edge\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ 65535 ]\n"
                                   "        action: allow\n"
                                   "      - id: wide\n"
                                   "        ops: [ udp.send ]\n"
                                   "        ports: [ \"1-65535\" ]\n"
                                   "        action: allow\n"
                                   "      - id: bind-ephemeral\n"
                                   "        ops: [ tcp.bind ]\n"
                                   "        local: [ \"@any\" ]\n"
                                   "        local_ports: [ ephemeral ]\n"
                                   "        action: allow\n"
                                   "      - id: bind-range\n"
                                   "        ops: [ tcp.bind, tcp.listen ]\n"
                                   "        local: [ \"@loopback\" ]\n"
                                   "        local_ports: [ \"8000-8099\" ]\n"
                                   "        action: allow\n"
                                   "      - id: listen-ephemeral\n"
                                   "        ops: [ tcp.listen ]\n"
                                   "        local_ports: [ ephemeral ]\n"
                                   "        action: prompt\n";

static const decision_case ports_cases[] = {
    {"t", "tcp.connect", NULL, "192.0.2.1:1", NULL, false, false, ALLOW, "rule:low-edge"},
    {"t", "tcp.connect", NULL, "192.0.2.1:2", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "192.0.2.1:999", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "192.0.2.1:1000", NULL, false, false, ALLOW, "rule:range"},
    {"t", "tcp.connect", NULL, "192.0.2.1:1500", NULL, false, false, ALLOW, "rule:range"},
    {"t", "tcp.connect", NULL, "192.0.2.1:1999", NULL, false, false, ALLOW, "rule:range"},
    {"t", "tcp.connect", NULL, "192.0.2.1:2000", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "192.0.2.1:65534", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "192.0.2.1:65535", NULL, false, false, ALLOW, "rule:high-edge"},
    {"t", "tcp.connect", NULL, "[2001:db8::1]:65535", NULL, false, false, ALLOW, "rule:high-edge"},
    {"t", "udp.send", NULL, "192.0.2.1:1", NULL, false, false, ALLOW, "rule:wide"},
    {"t", "udp.send", NULL, "192.0.2.1:65535", NULL, false, false, ALLOW, "rule:wide"},
    {"t", "udp.send", NULL, "192.0.2.1:0", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.bind", "0.0.0.0:0", NULL, NULL, false, false, ALLOW, "rule:bind-ephemeral"},
    {"t", "tcp.bind", "[::]:0", NULL, NULL, false, false, ALLOW, "rule:bind-ephemeral"},
    {"t", "tcp.bind", "127.0.0.1:7999", NULL, NULL, false, false, DENY, "default:global"},
    {"t", "tcp.bind", "127.0.0.1:8000", NULL, NULL, false, false, ALLOW, "rule:bind-range"},
    {"t", "tcp.bind", "127.0.0.1:8099", NULL, NULL, false, false, ALLOW, "rule:bind-range"},
    {"t", "tcp.bind", "127.0.0.1:8100", NULL, NULL, false, false, DENY, "default:global"},
    {"t", "tcp.bind", "192.0.2.1:8000", NULL, NULL, false, false, DENY, "default:global"},
    {"t", "tcp.listen", "127.0.0.1:8050", NULL, NULL, false, false, ALLOW, "rule:bind-range"},
    {"t", "tcp.listen", "0.0.0.0:41000", NULL, NULL, false, true, PROMPT, "rule:listen-ephemeral"},
    {"t", "tcp.listen", "0.0.0.0:41000", NULL, NULL, false, false, DENY, "default:global"},
};

START_TEST(test_port_edges) {
    policy *p = load_text(ports_policy);
    check_case(p, &ports_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

/* ---- Family ---- */

static const char family_policy[] = "version: 1\n"
                                    "tenants:\n"
                                    "  t:\n"
                                    "    match: { uids: [ 1 ] }\n"
                                    "    rules:\n"
                                    "      - id: v6-connect\n"
                                    "        ops: [ tcp.connect ]\n"
                                    "        family: ipv6\n"
                                    "        action: allow\n"
                                    "      - id: v4-bind\n"
                                    "        ops: [ udp.bind ]\n"
                                    "        family: ipv4\n"
                                    "        action: allow\n"
                                    "      - id: no-v6\n"
                                    "        ops: [ any ]\n"
                                    "        family: ipv6\n"
                                    "        action: deny\n"
                                    "      - id: lookups\n"
                                    "        ops: [ lookup ]\n"
                                    "        action: allow\n";

static const decision_case family_cases[] = {
    {"t", "tcp.connect", NULL, "[2001:db8::1]:80", NULL, false, false, ALLOW, "rule:v6-connect"},
    {"t", "tcp.connect", NULL, "192.0.2.1:80", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "[::ffff:192.0.2.1]:80", NULL, false, false, DENY, "default:global"},
    {"t", "udp.bind", "0.0.0.0:0", NULL, NULL, false, false, ALLOW, "rule:v4-bind"},
    {"t", "udp.bind", "[::]:0", NULL, NULL, false, false, DENY, "rule:no-v6"},
    {"t", "udp.send", NULL, "[2001:db8::1]:53", NULL, false, false, DENY, "rule:no-v6"},
    {"t", "udp.send", NULL, "192.0.2.1:53", NULL, false, false, DENY, "default:global"},
    /* family does not apply to lookup, so no-v6 skips it */
    {"t", "lookup", NULL, NULL, "example.com", false, false, ALLOW, "rule:lookups"},
};

START_TEST(test_family) {
    policy *p = load_text(family_policy);
    check_case(p, &family_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

/* ---- Ordering: guards, exemptions, log guards, shadow rules, first match ---- */

static const char order_policy[] = "version: 1\n"
                                   "defaults: { action: deny }\n"
                                   "guards:\n"
                                   "  - id: no-metadata\n"
                                   "    remote: [ \"@metadata\" ]\n"
                                   "    deny: { delay: 1s }\n"
                                   "  - id: no-private\n"
                                   "    remote: [ \"@private\" ]\n"
                                   "    exempt_tenants: [ trusted ]\n"
                                   "  - id: watch-smtp\n"
                                   "    ops: [ tcp.connect ]\n"
                                   "    ports: [ 25 ]\n"
                                   "    action: log\n"
                                   "tenants:\n"
                                   "  plain:\n"
                                   "    match: { uids: [ 1000 ] }\n"
                                   "    default: prompt\n"
                                   "    rules:\n"
                                   "      - id: shadow-deny-web\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ 80 ]\n"
                                   "        action: deny\n"
                                   "        shadow: true\n"
                                   "      - id: first\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        remote: [ \"@any\" ]\n"
                                   "        ports: [ 80, 25 ]\n"
                                   "        action: allow\n"
                                   "      - id: second\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ 80 ]\n"
                                   "        action: deny\n"
                                   "      - id: everything-private\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        remote: [ \"@private\", \"@metadata\" ]\n"
                                   "        action: allow\n"
                                   "  trusted:\n"
                                   "    match: { uids: [ 1001 ] }\n"
                                   "    rules:\n"
                                   "      - id: trusted-private\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        remote: [ \"@private\", \"@metadata\" ]\n"
                                   "        action: allow\n";

static const decision_case order_cases[] = {
    {"plain", "tcp.connect", NULL, "192.0.2.1:80", NULL, false, false, ALLOW, "rule:first"},
    {"plain", "tcp.connect", NULL, "192.0.2.1:443", NULL, false, false, PROMPT, "default:tenant"},
    {"plain", "tcp.connect", NULL, "10.1.2.3:80", NULL, false, false, DENY, "guard:no-private"},
    {"plain", "tcp.connect", NULL, "[::ffff:10.1.2.3]:80", NULL, false, false, DENY,
     "guard:no-private"},
    {"plain", "tcp.connect", NULL, "[fd12::1]:80", NULL, false, false, DENY, "guard:no-private"},
    {"plain", "tcp.connect", NULL, "169.254.169.254:80", NULL, false, false, DENY,
     "guard:no-metadata"},
    {"plain", "tcp.connect", NULL, "[::ffff:169.254.169.254]:80", NULL, false, false, DENY,
     "guard:no-metadata"},
    {"plain", "tcp.connect", NULL, "[fd00:ec2::254]:80", NULL, false, false, DENY,
     "guard:no-metadata"},
    {"plain", "tcp.connect", NULL, "192.0.2.1:25", NULL, false, false, ALLOW, "rule:first"},
    {"plain", "lookup", NULL, NULL, "example.com", false, false, PROMPT, "default:tenant"},
    {"plain", "udp.send", NULL, "10.0.0.1:53", NULL, false, false, DENY, "guard:no-private"},
    {"trusted", "tcp.connect", NULL, "10.1.2.3:80", NULL, false, false, ALLOW,
     "rule:trusted-private"},
    {"trusted", "tcp.connect", NULL, "169.254.169.254:80", NULL, false, false, DENY,
     "guard:no-metadata"},
    {"trusted", "tcp.connect", NULL, "192.0.2.1:80", NULL, false, false, DENY, "default:global"},
    {"nobody", "tcp.connect", NULL, "192.0.2.1:80", NULL, false, false, DENY, "tenant:unknown"},
};

START_TEST(test_order) {
    policy *p = load_text(order_policy);
    check_case(p, &order_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

START_TEST(test_shadow_and_log_guard) {
    policy *p = load_text(order_policy);
    policy_request req = {.tenant = "plain", .op = POLICY_OP_TCP_CONNECT};
    policy_verdict v;

    req.remote = endpoint("192.0.2.1:80");
    policy_decide(p, &req, &v);
    ck_assert_str_eq(v.decided_by, "rule:first");
    ck_assert_ptr_nonnull(v.shadow_by);
    ck_assert_str_eq(v.shadow_by, "rule:shadow-deny-web");
    ck_assert_int_eq(v.shadow_action, POLICY_DENY);
    ck_assert(v.audit); /* a shadow match is recorded even for an allow */
    ck_assert_ptr_null(v.logged_by);

    req.remote = endpoint("192.0.2.1:25");
    policy_decide(p, &req, &v);
    ck_assert_str_eq(v.decided_by, "rule:first");
    ck_assert_ptr_nonnull(v.logged_by);
    ck_assert_str_eq(v.logged_by, "guard:watch-smtp");
    ck_assert_ptr_null(v.shadow_by);
    ck_assert(v.audit);

    req.remote = endpoint("192.0.2.1:443");
    policy_decide(p, &req, &v);
    ck_assert_ptr_null(v.shadow_by);
    ck_assert_ptr_null(v.logged_by);
    ck_assert(v.audit); /* prompts are recorded by default */

    req.remote = endpoint("169.254.169.254:80");
    policy_decide(p, &req, &v);
    ck_assert_uint_eq(v.deny_delay_ms, 1000);
    ck_assert_uint_eq(v.error, 2);
    ck_assert_str_eq(v.rule_id, "no-metadata");
    policy_free(p);
}
END_TEST

/* Rules filed under different index keys still decide in file order. */
static const char merge_policy[] = "version: 1\n"
                                   "tenants:\n"
                                   "  t:\n"
                                   "    match: { uids: [ 1 ] }\n"
                                   "    rules:\n"
                                   "      - id: by-port\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ 8080 ]\n"
                                   "        action: prompt\n"
                                   "      - id: by-address\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        remote: [ 192.0.2.10/32 ]\n"
                                   "        action: allow\n"
                                   "      - id: by-wide\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        remote: [ 128.0.0.0/1 ]\n"
                                   "        action: deny\n"
                                   "      - id: by-host\n"
                                   "        ops: [ tcp.connect, lookup ]\n"
                                   "        host: [ api.example.com, \"*.example.org\" ]\n"
                                   "        action: allow\n"
                                   "      - id: late-port\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        ports: [ 9090 ]\n"
                                   "        action: prompt\n"
                                   "      - id: catch-all\n"
                                   "        ops: [ any ]\n"
                                   "        action: deny\n"
                                   "      - id: never-reached\n"
                                   "        ops: [ tcp.connect ]\n"
                                   "        remote: [ 10.0.0.1/32 ]\n"
                                   "        action: allow\n";

static const decision_case merge_cases[] = {
    {"t", "tcp.connect", NULL, "192.0.2.10:8080", NULL, false, false, PROMPT, "rule:by-port"},
    {"t", "tcp.connect", NULL, "192.0.2.10:9090", NULL, false, false, ALLOW, "rule:by-address"},
    {"t", "tcp.connect", NULL, "192.0.2.11:9090", NULL, false, false, DENY, "rule:by-wide"},
    {"t", "tcp.connect", NULL, "10.0.0.1:9090", "api.example.com", false, false, ALLOW,
     "rule:by-host"},
    {"t", "tcp.connect", NULL, "10.0.0.1:9090", "a.b.example.org", false, false, ALLOW,
     "rule:by-host"},
    {"t", "tcp.connect", NULL, "10.0.0.1:9090", NULL, false, false, PROMPT, "rule:late-port"},
    {"t", "tcp.connect", NULL, "10.0.0.1:9091", NULL, false, false, DENY, "rule:catch-all"},
    {"t", "lookup", NULL, NULL, "api.example.com", false, false, ALLOW, "rule:by-host"},
    {"t", "lookup", NULL, NULL, "example.org", false, false, DENY, "rule:catch-all"},
};

START_TEST(test_merge_order) {
    policy *p = load_text(merge_policy);
    check_case(p, &merge_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

/* ---- Host patterns ---- */

static const char host_policy[] = "version: 1\n"
                                  "tenants:\n"
                                  "  t:\n"
                                  "    match: { uids: [ 1 ] }\n"
                                  "    rules:\n"
                                  "      - id: exact\n"
                                  "        ops: [ lookup ]\n"
                                  "        host: api.example.com\n"
                                  "        action: allow\n"
                                  "      - id: suffix\n"
                                  "        ops: [ lookup, tcp.connect ]\n"
                                  "        host: \"*.cdn.example.net\"\n"
                                  "        ports: [ 443 ]\n"
                                  "        action: allow\n"
                                  "      - id: normalised\n"
                                  "        ops: [ lookup ]\n"
                                  "        host: \"Mixed.Example.ORG.\"\n"
                                  "        action: prompt\n"
                                  "      - id: any-name\n"
                                  "        ops: [ lookup ]\n"
                                  "        host: \"*\"\n"
                                  "        action: deny\n"
                                  "        deny: { error: permanent-resolver-failure }\n";

static const decision_case host_cases[] = {
    {"t", "lookup", NULL, NULL, "api.example.com", false, false, ALLOW, "rule:exact"},
    {"t", "lookup", NULL, NULL, "API.Example.com.", false, false, ALLOW, "rule:exact"},
    {"t", "lookup", NULL, NULL, "x.api.example.com", false, false, DENY, "rule:any-name"},
    {"t", "lookup", NULL, NULL, "cdn.example.net", false, false, DENY, "rule:any-name"},
    {"t", "lookup", NULL, NULL, "a.cdn.example.net", false, false, ALLOW, "rule:suffix"},
    {"t", "lookup", NULL, NULL, "a.b.cdn.example.net", false, false, ALLOW, "rule:suffix"},
    {"t", "lookup", NULL, NULL, "xcdn.example.net", false, false, DENY, "rule:any-name"},
    {"t", "lookup", NULL, NULL, "mixed.example.org", false, false, PROMPT, "rule:normalised"},
    {"t", "lookup", NULL, NULL, "bad name!", false, false, DENY, "default:global"},
    {"t", "lookup", NULL, NULL, "a..b", false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "192.0.2.1:443", "a.cdn.example.net", false, false, ALLOW,
     "rule:suffix"},
    {"t", "tcp.connect", NULL, "192.0.2.1:443", "A.CDN.example.net.", false, false, ALLOW,
     "rule:suffix"},
    {"t", "tcp.connect", NULL, "192.0.2.1:80", "a.cdn.example.net", false, false, DENY,
     "default:global"},
    /* A literal-IP connect has no host and never matches a host rule. */
    {"t", "tcp.connect", NULL, "192.0.2.1:443", NULL, false, false, DENY, "default:global"},
};

START_TEST(test_hosts) {
    policy *p = load_text(host_policy);
    check_case(p, &host_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

START_TEST(test_lookup_errors) {
    policy *p = load_text(host_policy);
    policy_request req = {.tenant = "t", .op = POLICY_OP_LOOKUP, .host = "x.example.com"};
    policy_verdict v;
    policy_decide(p, &req, &v);
    ck_assert_uint_eq(v.error, 21); /* the rule's permanent-resolver-failure */
    req.host = "bad name!";
    policy_decide(p, &req, &v);
    ck_assert_uint_eq(v.error, 2); /* default errors.lookup: access-denied */
    policy_free(p);

    p = load_text("version: 1\n"
                  "defaults: { errors: { lookup: name-unresolvable, inbound: drop } }\n"
                  "tenants:\n"
                  "  t:\n"
                  "    match: { uids: [ 1 ] }\n"
                  "    rules:\n"
                  "      - id: refuse\n"
                  "        ops: [ tcp.connect ]\n"
                  "        ports: [ 80 ]\n"
                  "        action: deny\n"
                  "        deny: { error: connection-refused }\n");
    req.host = "example.com";
    policy_decide(p, &req, &v);
    ck_assert_uint_eq(v.error, 19);
    req = (policy_request){.tenant = "t", .op = POLICY_OP_TCP_CONNECT};
    req.remote = endpoint("192.0.2.1:80");
    policy_decide(p, &req, &v);
    ck_assert_uint_eq(v.error, 15);
    req.remote = endpoint("192.0.2.1:81");
    policy_decide(p, &req, &v);
    ck_assert_uint_eq(v.error, 2);
    ck_assert_int_eq(policy_get_settings(p)->inbound, POLICY_INBOUND_DROP);
    policy_free(p);
}
END_TEST

/* ---- Implicit binds ---- */

static const char implicit_follow_policy[] = "version: 1\n"
                                             "guards:\n"
                                             "  - id: no-metadata\n"
                                             "    ops: [ tcp.client, udp.client ]\n"
                                             "    remote: [ \"@metadata\" ]\n"
                                             "  - id: no-v6-binds\n"
                                             "    ops: [ tcp.bind ]\n"
                                             "    family: ipv6\n"
                                             "tenants:\n"
                                             "  t:\n"
                                             "    match: { uids: [ 1 ] }\n"
                                             "    rules:\n"
                                             "      - id: web\n"
                                             "        ops: [ tcp.connect ]\n"
                                             "        ports: [ 443 ]\n"
                                             "        action: allow\n";

static const char implicit_check_policy[] = "version: 1\n"
                                            "defaults: { implicit_bind: check }\n"
                                            "tenants:\n"
                                            "  t:\n"
                                            "    match: { uids: [ 1 ] }\n"
                                            "    rules:\n"
                                            "      - id: no-lan\n"
                                            "        ops: [ tcp.client ]\n"
                                            "        remote: [ 10.0.0.0/8 ]\n"
                                            "        action: deny\n"
                                            "      - id: ask-lan\n"
                                            "        ops: [ udp.client ]\n"
                                            "        remote: [ 10.0.0.0/8 ]\n"
                                            "        action: prompt\n"
                                            "      - id: client\n"
                                            "        ops: [ tcp.client ]\n"
                                            "        remote: [ 192.0.2.0/24 ]\n"
                                            "        family: ipv4\n"
                                            "        action: allow\n"
                                            "      - id: udp-client\n"
                                            "        ops: [ udp.client ]\n"
                                            "        remote: [ \"2001:db8::/32\" ]\n"
                                            "        action: allow\n";

static const decision_case implicit_follow_cases[] = {
    {"t", "tcp.bind", "0.0.0.0:0", NULL, NULL, true, false, ALLOW, "default:implicit-bind"},
    {"t", "udp.bind", "[::]:0", NULL, NULL, true, false, ALLOW, "default:implicit-bind"},
    {"t", "tcp.bind", "0.0.0.0:0", NULL, NULL, false, false, DENY, "default:global"},
    /* Guards come before the implicit-bind pass. */
    {"t", "tcp.bind", "[::]:0", NULL, NULL, true, false, DENY, "guard:no-v6-binds"},
    {"t", "tcp.connect", NULL, "192.0.2.1:443", NULL, false, false, ALLOW, "rule:web"},
    {"t", "tcp.connect", NULL, "169.254.169.254:443", NULL, false, false, DENY,
     "guard:no-metadata"},
};

static const decision_case implicit_check_cases[] = {
    {"t", "tcp.bind", "0.0.0.0:0", NULL, NULL, true, false, ALLOW, "rule:client"},
    {"t", "tcp.bind", "[::]:0", NULL, NULL, true, false, DENY, "default:global"},
    {"t", "tcp.bind", "0.0.0.0:0", NULL, NULL, false, false, DENY, "default:global"},
    {"t", "tcp.bind", "0.0.0.0:5000", NULL, NULL, true, false, DENY, "default:global"},
    {"t", "udp.bind", "[::]:0", NULL, NULL, true, false, ALLOW, "rule:udp-client"},
    {"t", "udp.bind", "0.0.0.0:0", NULL, NULL, true, false, ALLOW, "rule:udp-client"},
    {"t", "udp.bind", "0.0.0.0:0", NULL, NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "192.0.2.5:80", NULL, false, false, ALLOW, "rule:client"},
    {"t", "tcp.connect", NULL, "198.51.100.5:80", NULL, false, false, DENY, "default:global"},
    {"t", "tcp.connect", NULL, "10.0.0.1:80", NULL, false, false, DENY, "rule:no-lan"},
    {"t", "udp.send", NULL, "10.0.0.1:53", NULL, false, false, PROMPT, "rule:ask-lan"},
    {"t", "udp.receive", "[::]:40000", "[2001:db8::1]:53", NULL, false, false, ALLOW,
     "rule:udp-client"},
};

START_TEST(test_implicit_follow) {
    policy *p = load_text(implicit_follow_policy);
    check_case(p, &implicit_follow_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

START_TEST(test_implicit_check) {
    policy *p = load_text(implicit_check_policy);
    check_case(p, &implicit_check_cases[_i], (size_t)_i);
    policy_free(p);
}
END_TEST

/* ---- Protocols, admission, accessors ---- */

static const char tenants_policy[] =
    "version: 1\n"
    "prompt_agents:\n"
    "  - name: console\n"
    "    uids: [ 0 ]\n"
    "    tenants: [ \"*\" ]\n"
    "  - name: dev-terminal\n"
    "    uids: [ 1000 ]\n"
    "    tenants: [ dev ]\n"
    "tenants:\n"
    "  dev:\n"
    "    match: { uids: [ 1000 ], gids: [ 500 ], token: none }\n"
    "    protocols: [ tcp ]\n"
    "    default: prompt\n"
    "    limits: { sockets: 10, listeners: 2, pending_ops: 3, buffered_bytes: 8MiB,\n"
    "              connect_rate: 50/s burst 100, lookup_rate: 600/min }\n"
    "    allow_narrowing: false\n"
    "    rules:\n"
    "      - id: lan\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@private\" ]\n"
    "        action: prompt\n"
    "        prompt: { timeout: 5s, on_timeout: allow, remember: [ once, 2h ],\n"
    "                  agents: [ console ], note: \"LAN access\" }\n"
    "  ci:\n"
    "    match: { uids: [ 2000 ], token: required }\n"
    "  opt:\n"
    "    match: { uids: [ 2001 ], token: optional }\n";

START_TEST(test_protocols_and_admission) {
    policy *p = load_text(tenants_policy);
    char reason[160];
    ck_assert_uint_eq(policy_protocols(p, "dev"), POLICY_PROTO_TCP);
    ck_assert_uint_eq(policy_protocols(p, "ci"), POLICY_PROTO_TCP | POLICY_PROTO_UDP);
    ck_assert_uint_eq(policy_protocols(p, "nobody"), 0);

    policy_request req = {.tenant = "dev", .op = POLICY_OP_UDP_SEND};
    req.remote = endpoint("192.0.2.1:53");
    policy_verdict v;
    policy_decide(p, &req, &v);
    ck_assert_int_eq(v.action, POLICY_DENY);
    ck_assert_str_eq(v.decided_by, "tenant:protocols");

    ck_assert_int_eq(policy_admit(p, "dev", 1000, 1000, NULL, reason, sizeof(reason)), 0);
    ck_assert_int_eq(policy_admit(p, "dev", 1234, 500, NULL, reason, sizeof(reason)), 0);
    ck_assert_int_eq(policy_admit(p, "dev", 1234, 501, NULL, reason, sizeof(reason)), -1);
    ck_assert_str_eq(reason, "uid 1234 gid 501 may not act for tenant 'dev'");
    ck_assert_int_eq(policy_admit(p, "nobody", 0, 0, NULL, reason, sizeof(reason)), -1);
    ck_assert_str_eq(reason, "unknown tenant 'nobody'");
    ck_assert_int_eq(policy_admit(p, "bad\x1b[31m", 0, 0, NULL, reason, sizeof(reason)), -1);
    ck_assert_str_eq(reason, "unknown tenant 'bad\\x1b[31m'");
    ck_assert_int_eq(policy_admit(p, "ci", 2000, 2000, NULL, reason, sizeof(reason)), -1);
    ck_assert_str_eq(reason, "tenant 'ci' requires a token, but tokens are not supported yet");
    ck_assert_int_eq(policy_admit(p, "opt", 2001, 2001, NULL, reason, sizeof(reason)), 0);
    ck_assert_int_eq(policy_admit(p, "opt", 2001, 2001, "abc", reason, sizeof(reason)), -1);
    /* A token sent to a tenant that uses none is ignored. */
    ck_assert_int_eq(policy_admit(p, "dev", 1000, 1000, "abc", reason, sizeof(reason)), 0);
    /* A short reason buffer is truncated, never overrun. */
    char tiny[8];
    ck_assert_int_eq(policy_admit(p, "nobody", 0, 0, NULL, tiny, sizeof(tiny)), -1);
    ck_assert_str_eq(tiny, "unknown");
    policy_free(p);
}
END_TEST

START_TEST(test_accessors) {
    policy *p = load_text(tenants_policy);
    policy_limits l = policy_tenant_limits(p, "dev");
    ck_assert_uint_eq(l.sockets, 10);
    ck_assert_uint_eq(l.listeners, 2);
    ck_assert_uint_eq(l.pending_ops, 3);
    ck_assert_uint_eq(l.buffered_bytes, 8u << 20);
    ck_assert_uint_eq(l.connect_rate.count, 50);
    ck_assert_uint_eq(l.connect_rate.interval_ms, 1000);
    ck_assert_uint_eq(l.connect_rate.burst, 100);
    ck_assert_uint_eq(l.lookup_rate.count, 600);
    ck_assert_uint_eq(l.lookup_rate.interval_ms, 60000);
    ck_assert_uint_eq(l.lookup_rate.burst, 600);
    l = policy_tenant_limits(p, "ci");
    ck_assert_uint_eq(l.sockets, 0);
    l = policy_tenant_limits(p, "nobody");
    ck_assert_uint_eq(l.sockets, 0);
    ck_assert(!policy_tenant_allows_narrowing(p, "dev"));
    ck_assert(policy_tenant_allows_narrowing(p, "ci"));
    ck_assert_uint_eq(policy_tenant_count(p), 3);
    ck_assert_str_eq(policy_tenant_name(p, 0), "ci");
    ck_assert_str_eq(policy_tenant_name(p, 2), "opt");
    ck_assert_ptr_null(policy_tenant_name(p, 3));
    ck_assert(policy_rule_exists(p, "dev", "lan"));
    ck_assert(!policy_rule_exists(p, "ci", "lan"));
    ck_assert(!policy_rule_exists(p, "dev", "gone"));

    const policy_settings *s = policy_get_settings(p);
    ck_assert_int_eq(s->default_action, POLICY_DENY);
    ck_assert_int_eq(s->implicit_bind, POLICY_IMPLICIT_FOLLOW_CONNECT);
    ck_assert_uint_eq(s->lookup_error, 2);
    ck_assert_uint_eq(s->prompt.timeout_ms, 30000);
    ck_assert_uint_eq(s->audit.record, 1u << POLICY_DENY | 1u << POLICY_PROMPT);
    ck_assert_str_eq(s->audit.file, "audit.jsonl");
    ck_assert(s->audit.hash_chain);

    /* Prompt settings: the rule's overrides over the defaults. */
    policy_request req = {.tenant = "dev", .op = POLICY_OP_TCP_CONNECT};
    req.remote = endpoint("10.0.0.1:22");
    policy_verdict v;
    policy_decide(p, &req, &v);
    ck_assert_int_eq(v.action, POLICY_PROMPT);
    ck_assert_str_eq(v.decided_by, "rule:lan");
    ck_assert_uint_eq(v.prompt_timeout_ms, 5000);
    ck_assert_int_eq(v.prompt_on_timeout, POLICY_ALLOW);
    ck_assert_int_eq(v.prompt_on_no_agent, POLICY_DENY);
    ck_assert_str_eq(v.prompt_note, "LAN access");
    ck_assert_ptr_nonnull(v.prompt);
    ck_assert_uint_eq(v.prompt->remember, POLICY_REMEMBER_ONCE);
    ck_assert_uint_eq(v.prompt->remember_seconds_count, 1);
    ck_assert_uint_eq(v.prompt->remember_seconds[0], 7200);
    ck_assert_uint_eq(v.error, 2);
    /* Agents: console (uid 0) may answer; dev-terminal is not listed on the rule. */
    ck_assert(policy_agent_known(p, 0));
    ck_assert(policy_agent_known(p, 1000));
    ck_assert(!policy_agent_known(p, 1001));
    ck_assert(policy_agent_may_answer(p, 0, "dev", v.prompt));
    ck_assert(!policy_agent_may_answer(p, 1000, "dev", v.prompt));

    /* The tenant default prompt uses defaults.prompt. */
    req.remote = endpoint("192.0.2.1:22");
    policy_decide(p, &req, &v);
    ck_assert_str_eq(v.decided_by, "default:tenant");
    ck_assert_int_eq(v.action, POLICY_PROMPT);
    ck_assert_uint_eq(v.prompt_timeout_ms, 30000);
    ck_assert(policy_agent_may_answer(p, 1000, "dev", v.prompt));
    ck_assert(!policy_agent_may_answer(p, 1000, "ci", v.prompt));
    ck_assert(policy_agent_may_answer(p, 0, "ci", v.prompt));
    policy_free(p);
}
END_TEST

START_TEST(test_verdict_options) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/policy/valid/every-key.yaml", data_dir());
    policy *p = NULL;
    ck_assert_int_eq(policy_load_file(path, &p, NULL), 0);
    const policy_settings *s = policy_get_settings(p);
    ck_assert_int_eq(s->default_action, POLICY_PROMPT);
    ck_assert_int_eq(s->implicit_bind, POLICY_IMPLICIT_CHECK);
    ck_assert_uint_eq(s->lookup_error, 21);
    ck_assert_uint_eq(s->prompt.remember, POLICY_REMEMBER_ONCE | POLICY_REMEMBER_SESSION |
                                              POLICY_REMEMBER_TENANT | POLICY_REMEMBER_PERSIST);
    ck_assert_uint_eq(s->prompt.remember_seconds_count, 2);
    ck_assert_uint_eq(s->prompt.remember_seconds[1], 86400);
    ck_assert_uint_eq(s->prompt.max_pending_per_tenant, 4);
    ck_assert(!s->dns.system_resolver);
    ck_assert_uint_eq(s->dns.resolver_count, 2);
    ck_assert_uint_eq(s->dns.resolvers[0].port, 53);
    ck_assert_uint_eq(s->dns.resolvers[1].port, 5353);
    ck_assert_int_eq(s->dns.pin_scope, POLICY_DNS_SCOPE_SESSION);
    ck_assert_uint_eq(s->dns.min_ttl_s, 5);
    ck_assert_uint_eq(s->dns.max_ttl_s, 3600);
    ck_assert(!s->dns.keep_while_open);
    ck_assert(!s->dns.filter_answers);
    ck_assert_int_eq(s->audit.sink, POLICY_AUDIT_JOURNAL);
    ck_assert_str_eq(s->audit.file, "wasockd/audit.jsonl");
    ck_assert(!s->audit.hash_chain);
    ck_assert_uint_eq(s->audit.record, 1u << POLICY_ALLOW);
    ck_assert(s->audit.redact_hostnames);
    ck_assert_int_eq(s->reload.revalidate_open_sockets, POLICY_REVALIDATE_ALL);
    ck_assert(!s->reload.keep_answers_if_rule_exists);

    policy_request req = {
        .tenant = "everything", .op = POLICY_OP_TCP_CONNECT, .host = "api.example.com"};
    policy_verdict v;
    req.remote = endpoint("192.0.2.1:443");
    policy_decide(p, &req, &v);
    ck_assert_str_eq(v.decided_by, "rule:everything-connect");
    ck_assert(v.tls_require);
    ck_assert_str_eq(v.tls_server_name, "api.example.com");
    ck_assert_int_eq(v.data_path, POLICY_DATA_RELAY);
    ck_assert(v.audit);              /* log: all */
    ck_assert_ptr_null(v.shadow_by); /* the shadow rule comes after the decision */
    policy_free(p);
}
END_TEST

/* ---- Explain ---- */

typedef struct step_log {
    char text[4096];
    size_t used;
    unsigned steps;
} step_log;

static void collect_step(void *opaque, const policy_explain_step *step) {
    static const char *const outcomes[] = {"no-match", "exempt", "logged", "shadow", "decided"};
    step_log *log = opaque;
    int n = snprintf(log->text + log->used, sizeof(log->text) - log->used, "%s %s: %s\n",
                     step->decider, outcomes[step->outcome], step->reason);
    if (n > 0 && (size_t)n < sizeof(log->text) - log->used)
        log->used += (size_t)n;
    log->steps++;
}

START_TEST(test_explain_steps) {
    policy *p = load_text(order_policy);
    policy_request req = {.tenant = "trusted", .op = POLICY_OP_TCP_CONNECT};
    req.remote = endpoint("10.1.2.3:80");
    step_log log = {0};
    policy_verdict v;
    policy_explain(p, &req, NULL, NULL, collect_step, &log, &v);
    ck_assert_str_eq(log.text, "guard:no-metadata no-match: remote 10.1.2.3 is not in [@metadata]\n"
                               "guard:no-private exempt: matched, but the tenant is listed in "
                               "exempt_tenants\n"
                               "guard:watch-smtp no-match: remote port 80 is not in [25]\n"
                               "rule:trusted-private decided: matched\n");
    ck_assert_str_eq(v.decided_by, "rule:trusted-private");

    memset(&log, 0, sizeof(log));
    req.tenant = "plain";
    req.remote = endpoint("192.0.2.1:443");
    policy_explain(p, &req, NULL, NULL, collect_step, &log, &v);
    ck_assert_str_eq(log.text,
                     "guard:no-metadata no-match: remote 192.0.2.1 is not in [@metadata]\n"
                     "guard:no-private no-match: remote 192.0.2.1 is not in [@private]\n"
                     "guard:watch-smtp no-match: remote port 443 is not in [25]\n"
                     "rule:shadow-deny-web no-match: remote port 443 is not in [80]\n"
                     "rule:first no-match: remote port 443 is not in [80, 25]\n"
                     "rule:second no-match: remote port 443 is not in [80]\n"
                     "rule:everything-private no-match: remote 192.0.2.1 is not in [@private, "
                     "@metadata]\n"
                     "default:tenant decided: no rule matched; tenant default is prompt\n");

    memset(&log, 0, sizeof(log));
    req.op = POLICY_OP_LOOKUP;
    req.host = "example.com";
    req.remote = (policy_endpoint){0};
    policy_explain(p, &req, NULL, NULL, collect_step, &log, &v);
    ck_assert_ptr_nonnull(strstr(log.text, "rule:first no-match: lookup is not among its "
                                           "operations\n"));
    ck_assert_ptr_nonnull(strstr(log.text, "guard:no-metadata no-match: its keys do not apply "
                                           "to lookup\n"));
    policy_free(p);

    p = load_text(host_policy);
    memset(&log, 0, sizeof(log));
    req = (policy_request){.tenant = "t", .op = POLICY_OP_TCP_CONNECT};
    req.remote = endpoint("192.0.2.1:443");
    policy_explain(p, &req, NULL, NULL, collect_step, &log, &v);
    ck_assert_ptr_nonnull(
        strstr(log.text, "rule:suffix no-match: host: the address was not obtained by a lookup"));
    ck_assert_str_eq(v.decided_by, "default:global");
    policy_free(p);
}
END_TEST

/* ---- Remembered answers ---- */

static bool answer_lan_allow(void *opaque, const policy_request *req, policy_answer *answer) {
    unsigned *calls = opaque;
    (*calls)++;
    if (req->op != POLICY_OP_TCP_CONNECT || req->remote.port != 22)
        return false;
    answer->action = POLICY_ALLOW;
    answer->id = "42";
    return true;
}

START_TEST(test_answers_hook) {
    policy *p = load_text(order_policy);
    unsigned calls = 0;
    policy_request req = {.tenant = "plain", .op = POLICY_OP_TCP_CONNECT};
    policy_verdict v;
    req.remote = endpoint("192.0.2.1:22");
    policy_decide_with_answers(p, &req, answer_lan_allow, &calls, &v);
    ck_assert_int_eq(v.action, POLICY_ALLOW);
    ck_assert_str_eq(v.decided_by, "answer:42");
    ck_assert_uint_eq(calls, 1);
    /* Guards come first: no answer can widen past them. */
    req.remote = endpoint("10.0.0.1:22");
    policy_decide_with_answers(p, &req, answer_lan_allow, &calls, &v);
    ck_assert_str_eq(v.decided_by, "guard:no-private");
    ck_assert_uint_eq(calls, 1);
    /* No answer: the rules decide. */
    req.remote = endpoint("192.0.2.1:80");
    policy_decide_with_answers(p, &req, answer_lan_allow, &calls, &v);
    ck_assert_str_eq(v.decided_by, "rule:first");
    ck_assert_uint_eq(calls, 2);
    policy_verdict e;
    req.remote = endpoint("192.0.2.1:22");
    policy_explain(p, &req, answer_lan_allow, &calls, NULL, NULL, &e);
    ck_assert_str_eq(e.decided_by, "answer:42");
    policy_free(p);
}
END_TEST

/* ---- Addresses ---- */

START_TEST(test_endpoint_text) {
    static const struct {
        const char *in, *out;
    } good[] = {
        {"192.0.2.1", "192.0.2.1:0"},
        {"192.0.2.1:80", "192.0.2.1:80"},
        {"0.0.0.0:65535", "0.0.0.0:65535"},
        {"::", "[::]:0"},
        {"::1", "[::1]:0"},
        {"[2001:db8::1]:443", "[2001:db8::1]:443"},
        {"2001:0db8:0000:0000:0000:0000:0000:0001", "[2001:db8::1]:0"},
        {"2001:db8:0:0:1:0:0:1", "[2001:db8::1:0:0:1]:0"},
        {"2001:db8::1:0:0:0:1", "[2001:db8:0:1::1]:0"},
        {"[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.1]:1"},
        {"1:2:3:4:5:6:7:8", "[1:2:3:4:5:6:7:8]:0"},
        {"1::", "[1::]:0"},
        {"fe80::1:2", "[fe80::1:2]:0"},
    };
    static const char *const bad[] = {
        "",         "1.2.3",        "1.2.3.4.5",     "256.1.1.1", "01.2.3.4",
        "1.2.3.4:", "1.2.3.4:x",    "1.2.3.4:65536", ":::",       "1:2:3:4:5:6:7:8:9",
        "1::2::3",  "[1.2.3.4]:80", "[::1",          "::1]:80",   "12345::",
        "1:",       "fe80::1%eth0", "::ffff:1.2.3",  "1.2.3.4 ",  "[::1]x",
    };
    char buf[80];
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        policy_endpoint ep;
        ck_assert_msg(policy_endpoint_parse(good[i].in, &ep) == 0, "%s", good[i].in);
        policy_endpoint_format(&ep, true, buf, sizeof(buf));
        ck_assert_str_eq(buf, good[i].out);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        policy_endpoint ep;
        ck_assert_msg(policy_endpoint_parse(bad[i], &ep) == -EINVAL, "accepted '%s'", bad[i]);
    }
    policy_endpoint none = {0};
    policy_endpoint_format(&none, true, buf, sizeof(buf));
    ck_assert_str_eq(buf, "-");
    policy_op op;
    ck_assert_int_eq(policy_op_from_name("udp.receive", &op), 0);
    ck_assert_int_eq(op, POLICY_OP_UDP_RECEIVE);
    ck_assert_int_eq(policy_op_from_name("tcp.client", &op), -EINVAL);
    ck_assert_str_eq(policy_op_name(POLICY_OP_LOOKUP), "lookup");
    ck_assert_ptr_null(policy_op_name(POLICY_OP_COUNT));
    ck_assert_str_eq(policy_action_name(POLICY_PROMPT), "prompt");
}
END_TEST

/* ---- Caps on hostile input ---- */

START_TEST(test_caps) {
    /* Nesting. */
    char deep[512] = "version: 1\nx: ";
    size_t at = strlen(deep);
    for (int i = 0; i < 100; i++)
        deep[at++] = '[';
    for (int i = 0; i < 100; i++)
        deep[at++] = ']';
    deep[at++] = '\n';
    deep[at] = '\0';
    char *errors = load_errors(deep, at);
    ck_assert_ptr_nonnull(strstr(errors, "test.yaml:2:27: nesting deeper than 24 levels"));
    free(errors);

    /* Node count: a flat list of 1,000,001 scalars. */
    size_t nodes = 1000001, len = 0;
    char *big = malloc(nodes * 2 + 64);
    ck_assert_ptr_nonnull(big);
    len += (size_t)snprintf(big, 64, "version: 1\nx: [");
    for (size_t i = 0; i < nodes; i++) {
        big[len++] = '1';
        big[len++] = ',';
    }
    big[len++] = ']';
    errors = load_errors(big, len);
    ck_assert_ptr_nonnull(strstr(errors, "too many YAML nodes (the limit is 1000000)"));
    free(errors);
    free(big);

    /* File size. */
    size_t size = 8u * 1024 * 1024 + 1;
    char *huge = malloc(size);
    ck_assert_ptr_nonnull(huge);
    memset(huge, '#', size);
    errors = load_errors(huge, size);
    ck_assert_str_eq(errors, "test.yaml: the policy is larger than 8388608 bytes\n");
    free(errors);
    free(huge);

    /* One long scalar. */
    char *long_text = malloc(6000);
    ck_assert_ptr_nonnull(long_text);
    len = (size_t)snprintf(long_text, 64, "version: 1\nx: ");
    memset(long_text + len, 'a', 5000);
    len += 5000;
    errors = load_errors(long_text, len);
    ck_assert_ptr_nonnull(strstr(errors, "test.yaml:2:4: text longer than 4096 bytes"));
    free(errors);
    free(long_text);

    /* NUL inside a quoted scalar. */
    static const char nul_text[] = "version: 1\nx: \"a\\0b\"\n";
    errors = load_errors(nul_text, sizeof(nul_text) - 1);
    ck_assert_ptr_nonnull(strstr(errors, "test.yaml:2:4: text contains a NUL byte"));
    free(errors);

    /* Many errors: reporting stops after 50. */
    char *many = malloc(200 * 32 + 64);
    ck_assert_ptr_nonnull(many);
    len = (size_t)snprintf(many, 64, "version: 1\n");
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(many + len, 32, "k%d: 1\n", i);
    errors = load_errors(many, len);
    size_t lines = 0;
    for (const char *c = errors; *c; c++)
        lines += *c == '\n';
    ck_assert_uint_eq(lines, 51);
    ck_assert_ptr_nonnull(strstr(errors, "test.yaml: too many errors, stopped after 50\n"));
    free(errors);
    free(many);
}
END_TEST

START_TEST(test_set_blowup) {
    /* 600 sets naming one set of 4,000 addresses would flatten into 2.4
     * million entries: refused. Naming a set many times in one list counts
     * once. */
    size_t cap = 1u << 20, used = 0;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    used += (size_t)snprintf(text + used, cap - used, "version: 1\nsets:\n  base: [");
    for (unsigned i = 0; i < 4000; i++)
        used += (size_t)snprintf(text + used, cap - used, "%s10.%u.%u.1", i ? ", " : " ", i / 256,
                                 i % 256);
    used += (size_t)snprintf(text + used, cap - used, " ]\n  repeated: [");
    for (unsigned i = 0; i < 1000; i++)
        used += (size_t)snprintf(text + used, cap - used, "%s\"@base\"", i ? ", " : " ");
    used += (size_t)snprintf(text + used, cap - used, " ]\n");
    policy *p = NULL;
    char *errors = NULL;
    ck_assert_msg(policy_load_buffer("test.yaml", text, used, &p, &errors) == 0, "%s", errors);
    policy_free(p);
    for (unsigned i = 0; i < 600; i++)
        used += (size_t)snprintf(text + used, cap - used, "  copy%u: [ \"@base\" ]\n", i);
    errors = load_errors(text, used);
    ck_assert_ptr_nonnull(strstr(errors, "address sets hold more than 2000000 entries in all"));
    free(errors);
    free(text);
}
END_TEST

START_TEST(test_load_file_errors) {
    policy *p = NULL;
    char *errors = NULL;
    ck_assert_int_eq(policy_load_file("/nonexistent/policy.yaml", &p, &errors), -1);
    ck_assert_ptr_null(p);
    ck_assert_str_eq(errors, "/nonexistent/policy.yaml: cannot open: No such file or directory\n");
    free(errors);
    ck_assert_int_eq(policy_load_file(data_dir(), &p, &errors), -1);
    ck_assert_ptr_nonnull(strstr(errors, ": not a regular file\n"));
    free(errors);
    /* errors may be NULL. */
    ck_assert_int_eq(policy_load_file("/nonexistent/policy.yaml", &p, NULL), -1);
    policy_free(NULL);
}
END_TEST

/* ---- The index against the rule-by-rule path ---- */

/* A small deterministic generator (xorshift) so failures reproduce. */
static uint64_t rng_state;
static uint32_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static const char *pick(const char *const *list, size_t count) {
    return list[rng() % count];
}
#define PICK(list) pick((list), ARRAY_SIZE(list))

static const char *const random_cidrs[] = {
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.0.2.0/24",
    "192.0.2.128/25",
    "0.0.0.0/0",
    "\"2001:db8::/32\"",
    "\"2001:db8::1\"",
    "\"::/0\"",
    "\"@private\"",
    "\"@loopback\"",
    "\"::ffff:10.1.0.0/112\"",
    "128.0.0.0/1",
    "\"@metadata\"",
    "\"2001:db8:1::/48\"",
};
static const char *const random_ports[] = {
    "1", "22", "80", "443", "\"8000-8010\"", "\"1-1024\"", "65535", "\"1000-2000\""};
static const char *const random_local_ports[] = {"ephemeral", "80", "\"8000-8010\"", "53",
                                                 "\"1-65535\""};
static const char *const random_hosts[] = {"api.example.com", "\"*.example.com\"", "example.org",
                                           "\"*.cdn.example.net\"", "a.b.example.com"};
static const char *const random_remote_ops[] = {
    "tcp.connect", "udp.send",   "udp.connect", "tcp.accept", "udp.receive",
    "tcp.client",  "udp.client", "any",         "tcp.server", "udp.server"};
static const char *const random_local_ops[] = {
    "tcp.bind", "tcp.listen", "udp.bind", "tcp.server", "udp.server", "any", "tcp.accept"};
static const char *const random_actions[] = {"allow", "deny", "prompt"};

static size_t append(char *buf, size_t used, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t append(char *buf, size_t used, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
    ck_assert(n >= 0 && (size_t)n < cap - used);
    return used + (size_t)n;
}

/* Appends one random rule (or guard) that is valid by construction. Guards
 * sit in a top-level list, rules in a tenant's list: the indentation
 * differs. */
static size_t random_rule(char *buf, size_t used, size_t cap, unsigned index, bool guard) {
    const char *dash = guard ? "  " : "      ";
    const char *key = guard ? "    " : "        ";
    unsigned kind = rng() % 20;
    used = append(buf, used, cap, "%s- id: r%u\n", dash, index);
    if (kind < 8) {
        used = append(buf, used, cap, "%sops: [ %s ]\n", key, PICK(random_remote_ops));
        used = append(buf, used, cap, "%sremote: [ %s", key, PICK(random_cidrs));
        if (rng() % 3 == 0)
            used = append(buf, used, cap, ", %s", PICK(random_cidrs));
        used = append(buf, used, cap, " ]\n");
        if (rng() % 2)
            used = append(buf, used, cap, "%sports: [ %s ]\n", key, PICK(random_ports));
    } else if (kind < 13) {
        used = append(buf, used, cap, "%sops: [ %s ]\n", key, PICK(random_local_ops));
        used = append(buf, used, cap, "%slocal: [ %s ]\n", key, PICK(random_cidrs));
        if (rng() % 2)
            used = append(buf, used, cap, "%slocal_ports: [ %s ]\n", key, PICK(random_local_ports));
    } else if (kind < 17 && !guard) {
        bool lookup = rng() % 2;
        used = append(buf, used, cap, "%sops: [ %s%s ]\n", key, lookup ? "lookup, " : "",
                      rng() % 2 ? "tcp.connect, udp.send" : "tcp.client");
        if (lookup && rng() % 4 == 0)
            used = append(buf, used, cap, "%shost: \"*\"\n", key);
        else
            used = append(buf, used, cap, "%shost: [ %s, %s ]\n", key, PICK(random_hosts),
                          PICK(random_hosts));
        if (rng() % 2)
            used = append(buf, used, cap, "%sports: [ %s ]\n", key, PICK(random_ports));
    } else if (kind < 19) {
        used = append(buf, used, cap, "%sops: [ %s ]\n", key, PICK(random_remote_ops));
        used = append(buf, used, cap, "%sfamily: %s\n", key, rng() % 2 ? "ipv4" : "ipv6");
        if (rng() % 2)
            used = append(buf, used, cap, "%sports: [ %s ]\n", key, PICK(random_ports));
    } else {
        used = append(buf, used, cap, "%sops: [ %s ]\n", key, PICK(random_remote_ops));
    }
    if (guard) {
        used = append(buf, used, cap, "%saction: %s\n", key, rng() % 4 ? "deny" : "log");
        if (rng() % 3 == 0)
            used = append(buf, used, cap, "%sexempt_tenants: [ t%u ]\n", key, rng() % 2);
    } else {
        used = append(buf, used, cap, "%saction: %s\n", key, PICK(random_actions));
        if (rng() % 8 == 0)
            used = append(buf, used, cap, "%sshadow: true\n", key);
    }
    return used;
}

static const char *const random_addresses[] = {
    "10.1.2.3",    "10.1.2.4",        "10.200.0.1",      "192.0.2.1",
    "192.0.2.200", "198.51.100.1",    "127.0.0.1",       "169.254.169.254",
    "0.0.0.0",     "255.255.255.255", "::ffff:10.1.2.3", "::ffff:192.0.2.129",
    "2001:db8::1", "2001:db8::2",     "2001:db8:1::5",   "::1",
    "::",          "fd00:ec2::254",   "fe80::1",         "2001:db9::1"};
static const char *const random_names[] = {"api.example.com",
                                           "x.example.com",
                                           "a.b.example.com",
                                           "example.com",
                                           "example.org",
                                           "www.cdn.example.net",
                                           "cdn.example.net",
                                           "EXAMPLE.ORG.",
                                           "bad name",
                                           NULL,
                                           NULL};
static const uint16_t random_port_values[] = {0, 1, 22, 53, 80, 443, 1000, 1500, 8005, 65535, 4444};

static void random_endpoint(policy_endpoint *ep) {
    char text[80];
    snprintf(text, sizeof(text), "%s", PICK(random_addresses));
    ck_assert_int_eq(policy_endpoint_parse(text, ep), 0);
    ep->port = random_port_values[rng() % ARRAY_SIZE(random_port_values)];
    ep->port_ephemeral = rng() % 8 == 0;
}

START_TEST(test_index_matches_scan) {
    enum { RULES = 300, GUARDS = 12, REQUESTS = 4000 };
    size_t cap = 400000, used = 0;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)_i * 7919;
    used = append(text, used, cap, "version: 1\ndefaults: { implicit_bind: %s }\nguards:\n",
                  _i % 2 ? "check" : "follow-connect");
    for (unsigned i = 0; i < GUARDS; i++)
        used = random_rule(text, used, cap, 10000 + i, true);
    used = append(text, used, cap, "tenants:\n");
    for (unsigned t = 0; t < 2; t++) {
        used = append(text, used, cap, "  t%u:\n    match: { uids: [ %u ] }\n    rules:\n", t, t);
        for (unsigned i = 0; i < RULES; i++)
            used = random_rule(text, used, cap, t * RULES + i, false);
    }
    policy *p = load_text(text);
    unsigned decided_by_rule = 0;
    for (unsigned i = 0; i < REQUESTS; i++) {
        policy_request req = {.tenant = rng() % 2 ? "t0" : "t1",
                              .op = (policy_op)(rng() % POLICY_OP_COUNT)};
        if (req.op == POLICY_OP_LOOKUP) {
            req.host = PICK(random_names);
        } else {
            if (req.op != POLICY_OP_TCP_CONNECT && req.op != POLICY_OP_UDP_CONNECT &&
                req.op != POLICY_OP_UDP_SEND)
                random_endpoint(&req.local);
            if (req.op == POLICY_OP_TCP_CONNECT || req.op == POLICY_OP_UDP_CONNECT ||
                req.op == POLICY_OP_UDP_SEND || req.op == POLICY_OP_TCP_ACCEPT ||
                req.op == POLICY_OP_UDP_RECEIVE) {
                random_endpoint(&req.remote);
                req.host = PICK(random_names);
            }
            if ((req.op == POLICY_OP_TCP_BIND || req.op == POLICY_OP_UDP_BIND) && rng() % 3 == 0) {
                req.implicit = true;
                req.local = endpoint(rng() % 2 ? "0.0.0.0" : "::");
            }
        }
        policy_verdict fast, slow;
        policy_decide(p, &req, &fast);
        policy_explain(p, &req, NULL, NULL, NULL, NULL, &slow);
        ck_assert_msg(strcmp(fast.decided_by, slow.decided_by) == 0 && fast.action == slow.action,
                      "request %u (%s): index says %s, scan says %s", i, policy_op_name(req.op),
                      fast.decided_by, slow.decided_by);
        ck_assert_msg((fast.shadow_by == NULL) == (slow.shadow_by == NULL), "shadow differs");
        if (fast.shadow_by != NULL)
            ck_assert_str_eq(fast.shadow_by, slow.shadow_by);
        ck_assert_msg((fast.logged_by == NULL) == (slow.logged_by == NULL), "logged differs");
        ck_assert_int_eq(fast.audit, slow.audit);
        ck_assert_int_eq(fast.error, slow.error);
        decided_by_rule += strncmp(fast.decided_by, "rule:", 5) == 0;
    }
    /* The generator must exercise the rules, not only the defaults. */
    ck_assert_uint_gt(decided_by_rule, REQUESTS / 4);
    policy_free(p);
    free(text);
}
END_TEST

/* ---- Mutated files: load cleanly or fail cleanly ---- */

static const char mutation_bytes[] = ":-[]{}\"'@*#&!|>,\n\t 0123456789./xyz\\\x80\xff";

START_TEST(test_mutations) {
    /* Every valid file, edited at random: the loader must either accept it
     * (and then decide without trouble) or report positioned errors. */
    const char *path = corpus_valid[_i];
    char *original = read_text_file(path);
    size_t len = strlen(original);
    char *text = malloc(len + 8);
    ck_assert_ptr_nonnull(text);
    rng_state = 0x2545f4914f6cdd1dull + (uint64_t)_i;
    for (unsigned round = 0; round < 300; round++) {
        size_t n = len;
        memcpy(text, original, len);
        unsigned edits = 1 + rng() % 4;
        for (unsigned e = 0; e < edits && n > 0; e++) {
            size_t at = rng() % n;
            switch (rng() % 5) {
            case 0: /* replace with a character YAML cares about */
                text[at] = mutation_bytes[rng() % (sizeof(mutation_bytes) - 1)];
                break;
            case 1: /* replace with any byte, NUL included */
                text[at] = (char)(rng() & 0xff);
                break;
            case 2: /* delete */
                memmove(text + at, text + at + 1, n - at - 1);
                n--;
                break;
            case 3: /* duplicate */
                if (n < len + 7) {
                    memmove(text + at + 1, text + at, n - at);
                    n++;
                }
                break;
            default: /* truncate */
                n = at;
                break;
            }
        }
        policy *p = NULL;
        char *errors = NULL;
        if (policy_load_buffer("mut.yaml", text, n, &p, &errors) == 0) {
            ck_assert_ptr_null(errors);
            policy_request req = {.tenant = "t", .op = POLICY_OP_TCP_CONNECT};
            policy_verdict v;
            req.remote = endpoint("10.1.2.3:443");
            policy_decide(p, &req, &v);
            ck_assert(v.decided_by[0] != '\0');
            policy_free(p);
            continue;
        }
        ck_assert_ptr_nonnull(errors);
        ck_assert_msg(strncmp(errors, "mut.yaml:", 9) == 0, "odd diagnostics: %s", errors);
        ck_assert(errors[strlen(errors) - 1] == '\n');
        free(errors);
    }
    free(text);
    free(original);
}
END_TEST

/* ---- Suite ---- */

static Suite *policy_suite(void) {
    Suite *s = suite_create("policy");
    TCase *tc;

    corpus_scan("valid", corpus_valid, &corpus_valid_count);
    corpus_scan("invalid", corpus_invalid, &corpus_invalid_count);

    tc = tcase_create("corpus");
    tcase_add_test(tc, test_corpus_present);
    tcase_add_loop_test(tc, test_corpus_valid, 0, (int)corpus_valid_count);
    tcase_add_loop_test(tc, test_corpus_invalid, 0, (int)corpus_invalid_count);
    suite_add_tcase(s, tc);

    tc = tcase_create("examples");
    tcase_add_test(tc, test_examples_load);
    suite_add_tcase(s, tc);

    tc = tcase_create("builtin");
    tcase_add_loop_test(tc, test_builtin_default, 0, ARRAY_SIZE(builtin_cases));
    tcase_add_test(tc, test_builtin_matches_example);
    tcase_add_test(tc, test_builtin_root);
    suite_add_tcase(s, tc);

    tc = tcase_create("cidr");
    tcase_add_loop_test(tc, test_cidr_edges, 0, ARRAY_SIZE(cidr_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("ports");
    tcase_add_loop_test(tc, test_port_edges, 0, ARRAY_SIZE(ports_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("family");
    tcase_add_loop_test(tc, test_family, 0, ARRAY_SIZE(family_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("order");
    tcase_add_loop_test(tc, test_order, 0, ARRAY_SIZE(order_cases));
    tcase_add_test(tc, test_shadow_and_log_guard);
    tcase_add_loop_test(tc, test_merge_order, 0, ARRAY_SIZE(merge_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("hosts");
    tcase_add_loop_test(tc, test_hosts, 0, ARRAY_SIZE(host_cases));
    tcase_add_test(tc, test_lookup_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("implicit");
    tcase_add_loop_test(tc, test_implicit_follow, 0, ARRAY_SIZE(implicit_follow_cases));
    tcase_add_loop_test(tc, test_implicit_check, 0, ARRAY_SIZE(implicit_check_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("tenants");
    tcase_add_test(tc, test_protocols_and_admission);
    tcase_add_test(tc, test_accessors);
    tcase_add_test(tc, test_verdict_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("explain");
    tcase_add_test(tc, test_explain_steps);
    tcase_add_test(tc, test_answers_hook);
    suite_add_tcase(s, tc);

    tc = tcase_create("addresses");
    tcase_add_test(tc, test_endpoint_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("caps");
    tcase_add_test(tc, test_caps);
    tcase_add_test(tc, test_set_blowup);
    tcase_add_test(tc, test_load_file_errors);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("mutations");
    tcase_add_loop_test(tc, test_mutations, 0, (int)corpus_valid_count);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("index");
    tcase_add_loop_test(tc, test_index_matches_scan, 0, 4);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(policy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (size_t i = 0; i < corpus_valid_count; i++)
        free(corpus_valid[i]);
    for (size_t i = 0; i < corpus_invalid_count; i++)
        free(corpus_invalid[i]);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
