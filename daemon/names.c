/* names.c — parsing and normalising the names guests ask to resolve.
 *
 * Input: a string a client sent (untrusted: any bytes but NUL, up to
 * PROTO_NAME_MAX). Every byte is checked before libidn2 sees it, and its
 * output is checked again, so only names the DNS can carry come out.
 */
#include "names.h"

#include <arpa/inet.h>
#include <errno.h>
#include <idn2.h>
#include <stdlib.h>
#include <string.h>

/* Brackets around an IPv6 literal: "[" + the longest text form + "]". */
#define NAMES_LITERAL_TEXT_MAX (INET6_ADDRSTRLEN + 2)

static bool is_label_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Tries the literal forms. Returns 1 with *out, or 0 when input is not one. */
static int parse_literal(const char *input, size_t len, proto_addr *out) {
    char text[NAMES_LITERAL_TEXT_MAX + 1];
    uint8_t ip[16];

    if (len > NAMES_LITERAL_TEXT_MAX) {
        return 0;
    }
    if (inet_pton(AF_INET, input, ip) == 1) {
        proto_addr_set_v4(out, ip, 0);
        return 1;
    }
    if (len >= 2 && input[0] == '[' && input[len - 1] == ']') {
        memcpy(text, input + 1, len - 2);
        text[len - 2] = '\0';
    } else {
        memcpy(text, input, len + 1);
    }
    if (inet_pton(AF_INET6, text, ip) != 1) {
        return 0;
    }
    /* Never hand out an IPv4-mapped address: it is the IPv4 one. */
    static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(ip, mapped_prefix, sizeof(mapped_prefix)) == 0) {
        proto_addr_set_v4(out, ip + 12, 0);
    } else {
        proto_addr_set_v6(out, ip, 0, 0, 0);
    }
    return 1;
}

/* Checks a lower-case ASCII name and copies it without its final dot. */
static int check_ascii_name(const char *name, char out[NAMES_MAX + 1]) {
    size_t len = strlen(name);
    size_t label_start = 0;
    bool last_label_numeric = true;

    if (len > 0 && name[len - 1] == '.') {
        len--;
    }
    if (len == 0 || len > NAMES_MAX) {
        return -EINVAL;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i == len || name[i] == '.') {
            size_t label_len = i - label_start;
            if (label_len == 0 || label_len > NAMES_LABEL_MAX) {
                return -EINVAL;
            }
            if (i < len) {
                label_start = i + 1;
                last_label_numeric = true;
            }
            continue;
        }
        if (!is_label_char((unsigned char)name[i])) {
            return -EINVAL;
        }
        if (name[i] < '0' || name[i] > '9') {
            last_label_numeric = false;
        }
    }
    /* "1.2.3" or "10.0.0.256" would be read as (broken) IPv4 literals by
     * resolvers that accept inet_aton forms: refuse them outright. */
    if (last_label_numeric) {
        return -EINVAL;
    }
    memcpy(out, name, len);
    out[len] = '\0';
    return 0;
}

int names_parse(const char *input, char out[NAMES_MAX + 1], proto_addr *literal) {
    size_t len = strnlen(input, PROTO_NAME_MAX + 1);
    char lowered[PROTO_NAME_MAX + 1];
    bool ascii = true;
    int r;

    if (len == 0 || len > PROTO_NAME_MAX) {
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)input[i];
        /* Control characters and spaces are never part of a name, and
         * must never reach IDNA or a log line. */
        if (c <= 0x20 || c == 0x7f) {
            return -EINVAL;
        }
        if (c >= 0x80) {
            ascii = false;
        }
    }
    if (ascii && parse_literal(input, len, literal) == 1) {
        return NAMES_LITERAL;
    }
    if (ascii) {
        for (size_t i = 0; i <= len; i++) {
            char c = input[i];
            lowered[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        r = check_ascii_name(lowered, out);
        return r < 0 ? r : NAMES_DNS;
    }

    char *converted = NULL;
    /* UTS #46 non-transitional processing (IDNA2008 as browsers apply it):
     * "faß.de" keeps its ß; symbols such as emoji are refused. */
    r = idn2_to_ascii_8z(input, &converted, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (r != IDN2_OK || converted == NULL) {
        idn2_free(converted);
        return -EINVAL;
    }
    size_t clen = strnlen(converted, PROTO_NAME_MAX + 1);
    if (clen > PROTO_NAME_MAX) {
        idn2_free(converted);
        return -EINVAL;
    }
    for (size_t i = 0; i <= clen; i++) {
        char c = converted[i];
        lowered[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    idn2_free(converted);
    r = check_ascii_name(lowered, out);
    return r < 0 ? r : NAMES_DNS;
}

bool names_is_reserved_invalid(const char *name) {
    static const char suffix[] = ".invalid";
    size_t len = strlen(name), slen = sizeof(suffix) - 1;

    return strcmp(name, "invalid") == 0 ||
           (len > slen && memcmp(name + len - slen, suffix, slen) == 0);
}
