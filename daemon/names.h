/* names.h — what a guest may ask to resolve: IP literals and DNS names.
 *
 * Pure (no libuv, no system calls beyond libidn2's computation): the rules
 * of wasi-semantics.md "Name lookup" and RFC 6761's special names, unit
 * tested in tests/unit/check-names.c. The daemon re-checks every name a
 * client sends with these functions; libwasock checks only the length.
 */
#ifndef WASOCKD_NAMES_H
#define WASOCKD_NAMES_H

#include <stdbool.h>

#include "proto.h"

/* Longest DNS name in its ASCII form, without the final dot (RFC 1035:
 * 255 octets on the wire, 253 characters as text). */
#define NAMES_MAX 253

/* Longest label (RFC 1035). */
#define NAMES_LABEL_MAX 63

enum names_kind { NAMES_DNS = 0, NAMES_LITERAL = 1 };

/* Parses `input` (UTF-8, NUL-terminated).
 * - An IPv4 literal (dotted quad), or an IPv6 literal with or without
 *   brackets: returns NAMES_LITERAL and *literal (port 0; an IPv4-mapped IPv6
 *   literal is returned as the IPv4 address it carries).
 * - A DNS name: returns NAMES_DNS and its normalised form in out: Unicode
 *   labels converted to A-labels with IDNA (libidn2, UTS #46
 *   non-transitional processing), ASCII lower case, one final dot
 *   removed. Labels are 1..63 letters, digits, '-' or '_'; 253 bytes in all.
 * - Anything else (empty, spaces or control characters, a port, a scheme, a
 *   path, a label or name too long, a last label that is all digits, which
 *   would be a malformed IPv4 literal, a name IDNA refuses): -EINVAL.
 * Writes out and *literal only on the matching success. */
int names_parse(const char *input, char out[NAMES_MAX + 1], proto_addr *literal);

/* True for a normalised name RFC 6761 reserves as never resolving:
 * "invalid" and every name under it. */
bool names_is_reserved_invalid(const char *name);

#endif
