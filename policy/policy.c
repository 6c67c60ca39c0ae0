/* policy.c — the public face of the policy library: loading files and
 * buffers, the built-in default, tenant admission and the accessors the
 * daemon and tools use.
 *
 * Trusts nothing it reads from files or buffers (they go through the YAML
 * tree builder and the validating loader); tenant names and tokens passed
 * to policy_admit() come from an unauthenticated client and are only
 * compared and quoted, never interpreted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy-internal.h"

const char *policy_action_name(policy_action a) {
    switch (a) {
    case POLICY_DENY:
        return "deny";
    case POLICY_ALLOW:
        return "allow";
    case POLICY_PROMPT:
        return "prompt";
    }
    return NULL;
}

/* Hands diagnostics to the caller (or drops them). */
static void give_errors(pol_diag *d, char **errors) {
    if (errors != NULL)
        *errors = pol_diag_render(d);
}

/* A one-line error without a position (the file could not be read). */
static char *plain_error(const char *file, const char *message) {
    char quoted[4096 * 4 + 8];
    pol_quote_path(file, quoted, sizeof(quoted));
    size_t len = strlen(quoted) + strlen(message) + 4;
    char *out = malloc(len);
    if (out != NULL)
        snprintf(out, len, "%s: %s\n", quoted, message);
    return out;
}

int policy_load_buffer(const char *name, const char *text, size_t len, policy **out,
                       char **errors) {
    pol_diag diag = {.file = name ? name : "(policy)"};
    pol_arena tree_arena = {0};
    ynode *root = NULL;
    policy *p = NULL;
    int r;

    if (errors != NULL)
        *errors = NULL;
    if (len > POLICY_MAX_FILE_BYTES) {
        char message[96];
        snprintf(message, sizeof(message), "the policy is larger than %u bytes",
                 POLICY_MAX_FILE_BYTES);
        if (errors != NULL)
            *errors = plain_error(diag.file, message);
        return -1;
    }
    r = pol_yaml_parse(text, len, &tree_arena, &diag, &root);
    if (r == 0)
        r = pol_load_tree(root, &diag, &p);
    pol_arena_release(&tree_arena);
    if (r < 0) {
        if (r == -ENOMEM && diag.count == 0)
            pol_diag_error(&diag, 1, 1, "out of memory while loading the policy");
        give_errors(&diag, errors);
        pol_diag_release(&diag);
        return -1;
    }
    pol_diag_release(&diag);
    *out = p;
    return 0;
}

int policy_load_file(const char *path, policy **out, char **errors) {
    char message[160];
    if (errors != NULL)
        *errors = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(message, sizeof(message), "cannot open: %s", strerror(errno));
        if (errors != NULL)
            *errors = plain_error(path, message);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        if (errors != NULL)
            *errors = plain_error(path, "not a regular file");
        return -1;
    }
    /* Read at most one byte more than the cap, so a file that grows while
     * we read is still refused rather than cut. */
    size_t cap = POLICY_MAX_FILE_BYTES + 1;
    size_t want = st.st_size > 0 && (uint64_t)st.st_size < cap ? (size_t)st.st_size + 1 : cap;
    char *buf = malloc(want);
    if (buf == NULL) {
        close(fd);
        if (errors != NULL)
            *errors = plain_error(path, "out of memory");
        return -1;
    }
    size_t used = 0;
    for (;;) {
        if (used == want) {
            if (want == cap)
                break;
            size_t next = want * 2 < cap ? want * 2 : cap;
            char *grown = realloc(buf, next);
            if (grown == NULL) {
                free(buf);
                close(fd);
                if (errors != NULL)
                    *errors = plain_error(path, "out of memory");
                return -1;
            }
            buf = grown;
            want = next;
        }
        ssize_t n = read(fd, buf + used, want - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(message, sizeof(message), "cannot read: %s", strerror(errno));
            free(buf);
            close(fd);
            if (errors != NULL)
                *errors = plain_error(path, message);
            return -1;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    int r = policy_load_buffer(path, buf, used, out, errors);
    free(buf);
    return r;
}

/* The built-in default, written in the policy language itself so that it
 * is validated like any file and documented by policy/examples/default.yaml
 * (the tests check that both decide alike). */
policy *policy_new_builtin_default(uint32_t uid) {
    static const char builtin_format[] = "version: 1\n"
                                         "defaults:\n"
                                         "  action: deny\n"
                                         "  implicit_bind: follow-connect\n"
                                         "tenants:\n"
                                         "  default:\n"
                                         "    match: { uids: [ %s ], token: none }\n"
                                         "    protocols: [ tcp, udp ]\n"
                                         "    default: deny\n"
                                         "    rules:\n"
                                         "      - id: default-loopback\n"
                                         "        ops: [ any ]\n"
                                         "        local: [ \"@loopback\" ]\n"
                                         "        remote: [ \"@loopback\" ]\n"
                                         "        action: allow\n"
                                         "      - id: default-localhost\n"
                                         "        ops: [ lookup ]\n"
                                         "        host: localhost\n"
                                         "        action: allow\n";
    char uids[32], text[sizeof(builtin_format) + 32];
    if (uid == 0)
        snprintf(uids, sizeof(uids), "0");
    else
        snprintf(uids, sizeof(uids), "%u, 0", uid);
    int n = snprintf(text, sizeof(text), builtin_format, uids);
    if (n < 0 || (size_t)n >= sizeof(text))
        return NULL;
    policy *p = NULL;
    if (policy_load_buffer("(built-in default)", text, (size_t)n, &p, NULL) < 0)
        return NULL;
    return p;
}

void policy_free(policy *p) {
    if (p == NULL)
        return;
    pol_arena_release(&p->arena);
    free(p);
}

static bool id_listed(const uint32_t *ids, size_t count, uint32_t id) {
    for (size_t i = 0; i < count; i++) {
        if (ids[i] == id)
            return true;
    }
    return false;
}

int policy_admit(const policy *p, const char *tenant, uint32_t uid, uint32_t gid, const char *token,
                 char *reason, size_t reason_len) {
    char name[200];
    pol_quote(tenant ? tenant : "", tenant ? strlen(tenant) : 0, name, sizeof(name));
    long t = pol_tenant_find(p, tenant);
    if (t < 0) {
        if (reason_len > 0)
            snprintf(reason, reason_len, "unknown tenant '%s'", name);
        return -1;
    }
    const pol_tenant *ten = &p->tenants[t];
    /* Either a listed uid or a listed (primary) gid admits the peer. */
    if (!id_listed(ten->uids, ten->uid_count, uid) && !id_listed(ten->gids, ten->gid_count, gid)) {
        if (reason_len > 0)
            snprintf(reason, reason_len, "uid %u gid %u may not act for tenant '%s'", uid, gid,
                     name);
        return -1;
    }
    bool has_token = token != NULL && token[0] != '\0';
    if (ten->token == POL_TOKEN_REQUIRED || (ten->token == POL_TOKEN_OPTIONAL && has_token)) {
        /* Token verification (HMAC-SHA256) is not implemented yet; a tenant
         * that relies on tokens is refused rather than admitted unchecked. */
        if (reason_len > 0)
            snprintf(reason, reason_len, "tenant '%s' %s a token, but tokens are not supported yet",
                     name, ten->token == POL_TOKEN_REQUIRED ? "requires" : "was sent");
        return -1;
    }
    return 0;
}

unsigned policy_protocols(const policy *p, const char *tenant) {
    long t = pol_tenant_find(p, tenant);
    return t < 0 ? 0 : p->tenants[t].protocols;
}

policy_limits policy_tenant_limits(const policy *p, const char *tenant) {
    long t = pol_tenant_find(p, tenant);
    if (t < 0)
        return (policy_limits){0};
    return p->tenants[t].limits;
}

const policy_settings *policy_get_settings(const policy *p) {
    return &p->settings;
}

size_t policy_tenant_count(const policy *p) {
    return p->tenant_count;
}

const char *policy_tenant_name(const policy *p, size_t index) {
    return index < p->tenant_count ? p->tenants[index].name : NULL;
}

bool policy_tenant_allows_narrowing(const policy *p, const char *tenant) {
    long t = pol_tenant_find(p, tenant);
    return t >= 0 && p->tenants[t].allow_narrowing;
}

bool policy_rule_exists(const policy *p, const char *tenant, const char *rule_id) {
    long t = pol_tenant_find(p, tenant);
    if (t < 0 || rule_id == NULL)
        return false;
    const pol_ruleset *set = &p->tenants[t].rules;
    for (size_t i = 0; i < set->count; i++) {
        if (strcmp(set->rules[i]->id, rule_id) == 0)
            return true;
    }
    return false;
}

bool policy_agent_known(const policy *p, uint32_t uid) {
    for (size_t i = 0; i < p->agent_count; i++) {
        if (id_listed(p->agents[i].uids, p->agents[i].uid_count, uid))
            return true;
    }
    return false;
}

bool policy_agent_may_answer(const policy *p, uint32_t uid, const char *tenant,
                             const policy_prompt_settings *prompt) {
    if (tenant == NULL)
        return false;
    for (size_t i = 0; i < p->agent_count; i++) {
        const pol_agent *a = &p->agents[i];
        if (!id_listed(a->uids, a->uid_count, uid))
            continue;
        bool tenant_ok = false;
        for (size_t k = 0; k < a->tenant_count && !tenant_ok; k++)
            tenant_ok = strcmp(a->tenants[k], "*") == 0 || strcmp(a->tenants[k], tenant) == 0;
        if (!tenant_ok)
            continue;
        if (prompt == NULL || prompt->agents == NULL)
            return true;
        for (size_t k = 0; k < prompt->agent_count; k++) {
            if (strcmp(prompt->agents[k], a->name) == 0)
                return true;
        }
    }
    return false;
}
