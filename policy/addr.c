/* addr.c — IP addresses and prefixes for the policy: strict text parsing,
 * canonical formatting, sorted prefix tables, and the built-in sets.
 *
 * Written without the sockets headers (the policy library makes no socket
 * calls). Text comes from the policy file or from tools and is untrusted;
 * addresses in requests come from the daemon and are trusted to be
 * well-formed policy_endpoint values.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Dotted quad, each part 0..255 without leading zeros (which some tools
 * read as octal; refusing them keeps one meaning per spelling). */
static int parse_ipv4(const char *s, size_t len, uint8_t out[4]) {
    size_t pos = 0;
    for (int part = 0; part < 4; part++) {
        unsigned value = 0;
        size_t digits = 0;
        while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
            if (digits == 3)
                return -EINVAL;
            if (digits == 1 && value == 0)
                return -EINVAL;
            value = value * 10 + (unsigned)(s[pos] - '0');
            digits++;
            pos++;
        }
        if (digits == 0 || value > 255)
            return -EINVAL;
        out[part] = (uint8_t)value;
        if (part < 3) {
            if (pos >= len || s[pos] != '.')
                return -EINVAL;
            pos++;
        }
    }
    return pos == len ? 0 : -EINVAL;
}

static int parse_ipv6(const char *s, size_t len, uint8_t out[16]) {
    uint16_t words[8] = {0};
    size_t count = 0, pos = 0;
    long gap = -1; /* where "::" stands */

    if (len >= 2 && s[0] == ':' && s[1] == ':') {
        gap = 0;
        pos = 2;
    } else if (len >= 1 && s[0] == ':') {
        return -EINVAL;
    }
    while (pos < len) {
        if (count == 8)
            return -EINVAL;
        /* An IPv4 tail: a dot before the next colon. */
        size_t end = pos;
        bool dotted = false;
        while (end < len && s[end] != ':') {
            if (s[end] == '.')
                dotted = true;
            end++;
        }
        if (dotted) {
            uint8_t v4[4];
            if (end != len || count > 6 || parse_ipv4(s + pos, len - pos, v4) < 0)
                return -EINVAL;
            words[count++] = (uint16_t)(v4[0] << 8 | v4[1]);
            words[count++] = (uint16_t)(v4[2] << 8 | v4[3]);
            pos = len;
            break;
        }
        unsigned value = 0;
        size_t digits = 0;
        while (pos < len && hex_value(s[pos]) >= 0) {
            if (digits == 4)
                return -EINVAL;
            value = value << 4 | (unsigned)hex_value(s[pos]);
            digits++;
            pos++;
        }
        if (digits == 0)
            return -EINVAL;
        words[count++] = (uint16_t)value;
        if (pos == len)
            break;
        if (s[pos] != ':')
            return -EINVAL;
        pos++;
        if (pos < len && s[pos] == ':') {
            if (gap >= 0)
                return -EINVAL;
            gap = (long)count;
            pos++;
        } else if (pos == len) {
            return -EINVAL; /* a single trailing colon */
        }
    }
    if (gap < 0) {
        if (count != 8)
            return -EINVAL;
    } else {
        if (count > 7)
            return -EINVAL;
        size_t tail = count - (size_t)gap;
        memmove(words + 8 - tail, words + gap, tail * sizeof(words[0]));
        for (size_t i = (size_t)gap; i < 8 - tail; i++)
            words[i] = 0;
    }
    for (int i = 0; i < 8; i++) {
        out[2 * i] = (uint8_t)(words[i] >> 8);
        out[2 * i + 1] = (uint8_t)(words[i] & 0xff);
    }
    return 0;
}

int pol_parse_ip(const char *s, size_t len, uint8_t *family, uint8_t addr[16]) {
    memset(addr, 0, 16);
    if (memchr(s, ':', len) != NULL) {
        if (parse_ipv6(s, len, addr) < 0)
            return -EINVAL;
        *family = 6;
        return 0;
    }
    if (parse_ipv4(s, len, addr) < 0)
        return -EINVAL;
    *family = 4;
    return 0;
}

static bool is_v4_mapped(const uint8_t addr[16]) {
    static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(addr, mapped_prefix, sizeof(mapped_prefix)) == 0;
}

void pol_mask(uint8_t family, uint8_t length, const uint8_t in[16], uint8_t out[16]) {
    size_t bytes = family == 4 ? 4 : 16;
    memset(out, 0, 16);
    for (size_t i = 0; i < bytes; i++) {
        unsigned bit = (unsigned)i * 8;
        if (bit + 8 <= length)
            out[i] = in[i];
        else if (bit < length)
            out[i] = (uint8_t)(in[i] & (0xff00u >> (length - bit)));
    }
}

int pol_parse_cidr(const char *s, size_t len, pol_prefix *out) {
    const char *slash = memchr(s, '/', len);
    size_t addr_len = slash ? (size_t)(slash - s) : len;
    uint8_t family, addr[16];
    if (pol_parse_ip(s, addr_len, &family, addr) < 0)
        return -EINVAL;
    unsigned max = family == 4 ? 32 : 128, length = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t n = len - addr_len - 1;
        if (n == 0 || n > 3 || (n > 1 && p[0] == '0'))
            return -EINVAL;
        length = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -EINVAL;
            length = length * 10 + (unsigned)(p[i] - '0');
        }
        if (length > max)
            return -ERANGE;
    }
    uint8_t masked[16];
    pol_mask(family, (uint8_t)length, addr, masked);
    if (memcmp(masked, addr, 16) != 0)
        return -EDOM;
    /* Mapped IPv6 prefixes describe IPv4 addresses: store them as such so
     * both spellings match the same requests. */
    if (family == 6 && length >= 96 && is_v4_mapped(addr)) {
        uint8_t v4[16] = {0};
        memcpy(v4, addr + 12, 4);
        memcpy(addr, v4, 16);
        family = 4;
        length -= 96;
    }
    out->family = family;
    out->length = (uint8_t)length;
    memcpy(out->addr, addr, 16);
    return 0;
}

void pol_effective_address(const policy_endpoint *ep, uint8_t *family, uint8_t addr[16]) {
    memset(addr, 0, 16);
    if (ep->family == 6 && is_v4_mapped(ep->ip)) {
        *family = 4;
        memcpy(addr, ep->ip + 12, 4);
    } else if (ep->family == 4) {
        *family = 4;
        memcpy(addr, ep->ip, 4);
    } else if (ep->family == 6) {
        *family = 6;
        memcpy(addr, ep->ip, 16);
    } else {
        *family = 0;
    }
}

void pol_format_ip(uint8_t family, const uint8_t addr[16], char *buf, size_t len) {
    if (len == 0)
        return;
    if (family == 4) {
        snprintf(buf, len, "%u.%u.%u.%u", addr[0], addr[1], addr[2], addr[3]);
        return;
    }
    if (family != 6) {
        snprintf(buf, len, "-");
        return;
    }
    if (is_v4_mapped(addr)) {
        snprintf(buf, len, "::ffff:%u.%u.%u.%u", addr[12], addr[13], addr[14], addr[15]);
        return;
    }
    uint16_t words[8];
    for (int i = 0; i < 8; i++)
        words[i] = (uint16_t)(addr[2 * i] << 8 | addr[2 * i + 1]);
    /* RFC 5952: compress the longest run of two or more zero words, the
     * first one on a tie. */
    int best = -1, best_len = 0;
    for (int i = 0; i < 8;) {
        if (words[i] != 0) {
            i++;
            continue;
        }
        int j = i;
        while (j < 8 && words[j] == 0)
            j++;
        if (j - i > best_len && j - i >= 2) {
            best = i;
            best_len = j - i;
        }
        i = j;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < 8; i++) {
        int n;
        if (i == best) {
            n = snprintf(buf + used, len - used, "::");
            i += best_len - 1;
        } else {
            bool after_gap = best >= 0 && i == best + best_len;
            n = snprintf(buf + used, len - used, "%s%x", (i == 0 || after_gap) ? "" : ":",
                         words[i]);
        }
        if (n < 0 || (size_t)n >= len - used)
            return;
        used += (size_t)n;
    }
}

int policy_endpoint_parse(const char *text, policy_endpoint *out) {
    policy_endpoint ep = {0};
    size_t len = strlen(text);
    const char *addr = text, *port = NULL;
    size_t addr_len = len;
    if (len > 0 && text[0] == '[') {
        const char *close = memchr(text, ']', len);
        if (close == NULL)
            return -EINVAL;
        addr = text + 1;
        addr_len = (size_t)(close - addr);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -EINVAL;
        if (memchr(addr, ':', addr_len) == NULL)
            return -EINVAL; /* brackets are for IPv6 only */
    } else {
        const char *colon = memchr(text, ':', len);
        if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - text)) == NULL) {
            addr_len = (size_t)(colon - text);
            port = colon + 1;
        }
    }
    if (pol_parse_ip(addr, addr_len, &ep.family, ep.ip) < 0)
        return -EINVAL;
    if (port != NULL) {
        char *end;
        if (*port < '0' || *port > '9')
            return -EINVAL;
        errno = 0;
        unsigned long v = strtoul(port, &end, 10);
        if (errno != 0 || *end != '\0' || v > 65535)
            return -EINVAL;
        ep.port = (uint16_t)v;
    }
    *out = ep;
    return 0;
}

int policy_endpoint_format(const policy_endpoint *ep, bool with_port, char *buf, size_t len) {
    char ip[64];
    if (ep->family != 4 && ep->family != 6)
        return snprintf(buf, len, "-");
    pol_format_ip(ep->family, ep->ip, ip, sizeof(ip));
    if (!with_port)
        return snprintf(buf, len, "%s", ip);
    if (ep->family == 6)
        return snprintf(buf, len, "[%s]:%u", ip, ep->port);
    return snprintf(buf, len, "%s:%u", ip, ep->port);
}

/* ---- Prefix tables ---- */

static int prefix_entry_compare(const void *a, const void *b) {
    const pol_prefix_entry *x = a, *y = b;
    if (x->prefix.family != y->prefix.family)
        return x->prefix.family < y->prefix.family ? -1 : 1;
    if (x->prefix.length != y->prefix.length)
        return x->prefix.length < y->prefix.length ? -1 : 1;
    int c = memcmp(x->prefix.addr, y->prefix.addr, 16);
    if (c != 0)
        return c;
    return x->value < y->value ? -1 : (x->value > y->value);
}

int pol_prefix_table_build(pol_arena *arena, pol_prefix_entry *entries, size_t count,
                           pol_prefix_table *out) {
    *out = (pol_prefix_table){0};
    if (count == 0)
        return 0;
    qsort(entries, count, sizeof(*entries), prefix_entry_compare);
    size_t kept = 1, groups = 1;
    for (size_t i = 1; i < count; i++) {
        if (prefix_entry_compare(&entries[i], &entries[kept - 1]) == 0)
            continue;
        if (entries[i].prefix.family != entries[kept - 1].prefix.family ||
            entries[i].prefix.length != entries[kept - 1].prefix.length)
            groups++;
        entries[kept++] = entries[i];
    }
    out->groups = pol_arena_alloc(arena, groups * sizeof(*out->groups));
    if (out->groups == NULL)
        return -ENOMEM;
    size_t g = 0;
    for (size_t i = 0; i < kept; i++) {
        if (i == 0 || entries[i].prefix.family != entries[i - 1].prefix.family ||
            entries[i].prefix.length != entries[i - 1].prefix.length) {
            if (i > 0)
                out->groups[g - 1].end = (uint32_t)i;
            out->groups[g++] = (pol_prefix_group){.family = entries[i].prefix.family,
                                                  .length = entries[i].prefix.length,
                                                  .start = (uint32_t)i};
        }
    }
    out->groups[g - 1].end = (uint32_t)kept;
    out->entries = entries;
    out->count = kept;
    out->group_count = groups;
    return 0;
}

size_t pol_prefix_group_lower_bound(const pol_prefix_table *t, const pol_prefix_group *g,
                                    const uint8_t addr[16]) {
    size_t lo = g->start, hi = g->end;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(t->entries[mid].prefix.addr, addr, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool pol_prefix_table_contains(const pol_prefix_table *t, uint8_t family, const uint8_t addr[16]) {
    for (size_t i = 0; i < t->group_count; i++) {
        const pol_prefix_group *g = &t->groups[i];
        if (g->family != family)
            continue;
        uint8_t masked[16];
        pol_mask(family, g->length, addr, masked);
        size_t at = pol_prefix_group_lower_bound(t, g, masked);
        if (at < g->end && memcmp(t->entries[at].prefix.addr, masked, 16) == 0)
            return true;
    }
    return false;
}

/* ---- Built-in sets ---- */

static const char *const set_any[] = {"0.0.0.0/0", "::/0", NULL};
static const char *const set_loopback[] = {"127.0.0.0/8", "::1/128", NULL};
static const char *const set_link_local[] = {"169.254.0.0/16", "fe80::/10", NULL};
static const char *const set_multicast[] = {"224.0.0.0/4", "ff00::/8", NULL};
static const char *const set_unspecified[] = {"0.0.0.0/32", "::/128", NULL};
/* RFC 1918, shared address space (CGNAT, RFC 6598) and unique local. */
static const char *const set_private[] = {"10.0.0.0/8",    "172.16.0.0/12", "192.168.0.0/16",
                                          "100.64.0.0/10", "fc00::/7",      NULL};
/* The IANA special-purpose address registries (IPv4 and IPv6). The
 * IPv4-mapped block ::ffff:0:0/96 is left out on purpose: mapped addresses
 * are matched as the IPv4 address they carry, so that entry would mean
 * "every IPv4 address". */
static const char *const set_special[] = {"0.0.0.0/8",
                                          "10.0.0.0/8",
                                          "100.64.0.0/10",
                                          "127.0.0.0/8",
                                          "169.254.0.0/16",
                                          "172.16.0.0/12",
                                          "192.0.0.0/24",
                                          "192.0.2.0/24",
                                          "192.31.196.0/24",
                                          "192.52.193.0/24",
                                          "192.88.99.0/24",
                                          "192.168.0.0/16",
                                          "192.175.48.0/24",
                                          "198.18.0.0/15",
                                          "198.51.100.0/24",
                                          "203.0.113.0/24",
                                          "240.0.0.0/4",
                                          "255.255.255.255/32",
                                          "::/128",
                                          "::1/128",
                                          "64:ff9b::/96",
                                          "64:ff9b:1::/48",
                                          "100::/64",
                                          "2001::/23",
                                          "2001:db8::/32",
                                          "2002::/16",
                                          "3fff::/20",
                                          "5f00::/16",
                                          "fc00::/7",
                                          "fe80::/10",
                                          NULL};
/* Cloud instance metadata services (AWS, GCP, Azure use 169.254.169.254;
 * AWS also fd00:ec2::254). */
static const char *const set_metadata[] = {"169.254.169.254/32", "fd00:ec2::254/128", NULL};

static const pol_builtin_set builtin_sets[] = {
    {"any", set_any},
    {"loopback", set_loopback},
    {"link-local", set_link_local},
    {"multicast", set_multicast},
    {"unspecified", set_unspecified},
    {"private", set_private},
    {"special", set_special},
    {"metadata", set_metadata},
};

const pol_builtin_set *pol_builtin_set_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof(builtin_sets) / sizeof(builtin_sets[0]); i++) {
        if (strlen(builtin_sets[i].name) == len && memcmp(builtin_sets[i].name, name, len) == 0)
            return &builtin_sets[i];
    }
    return NULL;
}

size_t pol_builtin_set_count(void) {
    return sizeof(builtin_sets) / sizeof(builtin_sets[0]);
}

const pol_builtin_set *pol_builtin_set_at(size_t i) {
    return i < pol_builtin_set_count() ? &builtin_sets[i] : NULL;
}
