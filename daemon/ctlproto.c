/* ctlproto.c — text helpers of the control socket protocol (see ctlproto.h).
 *
 * Input: lines from control socket peers (authenticated by SO_PEERCRED but
 * still untrusted text: every length is checked, every number parsed with
 * range checks) and values that may come from guests (escaped on output).
 */
#include "ctlproto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A year: longer remembered durations are typos, and seconds stay far
 * from uint32_t overflow while summing. */
#define CTL_DURATION_MAX_S (366u * 24u * 3600u)

bool ctl_line_is_text(const char *line, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == '\r' && i + 1 == len) {
            continue;
        }
        if (c != '\t' && (c < 0x20 || c > 0x7e)) {
            return false;
        }
    }
    return true;
}

int ctl_split(char *line, char **argv, int max) {
    int argc = 0;
    char *p = line;
    size_t len = strlen(line);

    if (len > 0 && line[len - 1] == '\r') {
        line[len - 1] = '\0';
    }
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0') {
            return argc;
        }
        if (argc == max) {
            return -E2BIG;
        }
        argv[argc++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t') {
            p++;
        }
        if (*p != '\0') {
            *p++ = '\0';
        }
    }
}

int ctl_append(char *buf, size_t cap, size_t *len, const char *text) {
    size_t n = strlen(text);

    if (*len >= cap) {
        return -ENOSPC;
    }
    if (n >= cap - *len) {
        size_t fit = cap - *len - 1;
        memcpy(buf + *len, text, fit);
        *len += fit;
        buf[*len] = '\0';
        return -ENOSPC;
    }
    memcpy(buf + *len, text, n + 1);
    *len += n;
    return 0;
}

static bool value_is_bare(const char *v) {
    if (*v == '\0') {
        return false;
    }
    for (; *v != '\0'; v++) {
        unsigned char c = (unsigned char)*v;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("._:/@[]%+-,*", c) != NULL;
        if (!ok) {
            return false;
        }
    }
    return true;
}

int ctl_append_value(char *buf, size_t cap, size_t *len, const char *key, const char *value) {
    char piece[8];
    int r;

    r = ctl_append(buf, cap, len, " ");
    if (r == 0) {
        r = ctl_append(buf, cap, len, key);
    }
    if (r == 0) {
        r = ctl_append(buf, cap, len, "=");
    }
    if (r != 0) {
        return r;
    }
    if (value == NULL) {
        return ctl_append(buf, cap, len, "-");
    }
    if (value_is_bare(value)) {
        return ctl_append(buf, cap, len, value);
    }
    r = ctl_append(buf, cap, len, "\"");
    for (const char *p = value; r == 0 && *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            piece[0] = '\\';
            piece[1] = (char)c;
            piece[2] = '\0';
        } else if (c < 0x20 || c > 0x7e) {
            snprintf(piece, sizeof(piece), "\\x%02x", c);
        } else {
            piece[0] = (char)c;
            piece[1] = '\0';
        }
        r = ctl_append(buf, cap, len, piece);
    }
    if (r == 0) {
        r = ctl_append(buf, cap, len, "\"");
    }
    return r;
}

int ctl_parse_u64(const char *text, uint64_t *out) {
    uint64_t v = 0;

    if (text == NULL || *text == '\0' || (text[0] == '0' && text[1] != '\0')) {
        return -EINVAL;
    }
    for (const char *p = text; *p != '\0'; p++) {
        unsigned d;
        if (*p < '0' || *p > '9') {
            return -EINVAL;
        }
        d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -EINVAL;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int ctl_parse_duration(const char *text, uint32_t *seconds) {
    uint64_t total = 0;
    const char *p = text;

    if (text == NULL || *text == '\0') {
        return -EINVAL;
    }
    while (*p != '\0') {
        uint64_t n = 0, unit;
        const char *digits = p;
        while (*p >= '0' && *p <= '9') {
            n = n * 10 + (uint64_t)(*p - '0');
            if (n > CTL_DURATION_MAX_S) {
                return -EINVAL;
            }
            p++;
        }
        if (p == digits) {
            return -EINVAL;
        }
        switch (*p) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return -EINVAL;
        }
        p++;
        total += n * unit;
        if (total > CTL_DURATION_MAX_S) {
            return -EINVAL;
        }
    }
    if (total == 0) {
        return -EINVAL;
    }
    *seconds = (uint32_t)total;
    return 0;
}

void ctl_format_duration(uint32_t seconds, char *buf, size_t len) {
    if (seconds != 0 && seconds % 86400u == 0) {
        snprintf(buf, len, "%ud", (unsigned)(seconds / 86400u));
    } else if (seconds != 0 && seconds % 3600u == 0) {
        snprintf(buf, len, "%uh", (unsigned)(seconds / 3600u));
    } else if (seconds != 0 && seconds % 60u == 0) {
        snprintf(buf, len, "%um", (unsigned)(seconds / 60u));
    } else {
        snprintf(buf, len, "%us", (unsigned)seconds);
    }
}

const char *ctl_scope_name(ctl_scope scope) {
    switch (scope) {
    case CTL_SCOPE_ONCE:
        return "once";
    case CTL_SCOPE_SESSION:
        return "session";
    case CTL_SCOPE_TENANT:
        return "tenant";
    case CTL_SCOPE_DURATION:
        return "duration";
    case CTL_SCOPE_PERSIST:
        return "persist";
    }
    return "?";
}

int ctl_parse_answer(int argc, char *const *argv, ctl_answer *out, const char **why) {
    ctl_answer a;

    memset(&a, 0, sizeof(a));
    if (argc < 2 || argc > 3) {
        *why = "usage: answer ID allow|deny [once|session|tenant|DURATION]";
        return -EINVAL;
    }
    if (ctl_parse_u64(argv[0], &a.id) < 0 || a.id == 0) {
        *why = "the prompt id must be a positive decimal number";
        return -EINVAL;
    }
    if (strcmp(argv[1], "allow") == 0) {
        a.action = POLICY_ALLOW;
    } else if (strcmp(argv[1], "deny") == 0) {
        a.action = POLICY_DENY;
    } else {
        *why = "the answer must be allow or deny";
        return -EINVAL;
    }
    a.scope = CTL_SCOPE_ONCE;
    if (argc == 3) {
        if (strcmp(argv[2], "once") == 0) {
            a.scope = CTL_SCOPE_ONCE;
        } else if (strcmp(argv[2], "session") == 0) {
            a.scope = CTL_SCOPE_SESSION;
        } else if (strcmp(argv[2], "tenant") == 0) {
            a.scope = CTL_SCOPE_TENANT;
        } else if (strcmp(argv[2], "persist") == 0) {
            a.scope = CTL_SCOPE_PERSIST;
        } else if (ctl_parse_duration(argv[2], &a.seconds) == 0) {
            a.scope = CTL_SCOPE_DURATION;
        } else {
            *why = "the scope must be once, session, tenant or a duration such as 1h";
            return -EINVAL;
        }
    }
    *out = a;
    return 0;
}
