/* ctlproto.h — text helpers of the control socket protocol (proto/AGENT.md):
 * checking and splitting command lines, escaping values shown to people,
 * durations, and parsing a prompt agent's answer.
 *
 * Pure: no libuv, no sockets. Unit-tested in tests/unit/check-ctlproto.c.
 */
#ifndef WASOCKD_CTLPROTO_H
#define WASOCKD_CTLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* Longest line either side sends, without its newline. A prompt line with
 * a 512-byte note escaped (up to 4 bytes per byte), two addresses, a host
 * name and the rest fits; a command line is far shorter. */
#define CTL_LINE_MAX 4096

/* Most words in one command line ("explain TENANT OP ADDRESS local=..
 * host=.. implicit" has seven). */
#define CTL_ARGS_MAX 12

/* True when the line (without its newline) is text a person could type:
 * printable ASCII, spaces and tabs, and a trailing carriage return (socat
 * and telnet send CRLF). Anything else is garbage. */
bool ctl_line_is_text(const char *line, size_t len);

/* Splits `line` in place at runs of spaces and tabs (a trailing CR is
 * dropped). Returns the number of words (0 for a blank line), or -E2BIG
 * when there are more than max. */
int ctl_split(char *line, char **argv, int max);

/* Appends `text` to buf (cap bytes, *len used, always NUL-terminated).
 * Returns 0 or -ENOSPC (buf then holds what fitted). */
int ctl_append(char *buf, size_t cap, size_t *len, const char *text);

/* Appends " key=value". A value made only of letters, digits and
 * ._:/@[]%+-,* is written as it is; anything else (empty, spaces, quotes,
 * control characters, escape sequences, non-ASCII) is written in double
 * quotes with \" \\ and \xHH for every byte outside printable ASCII, so
 * nothing a guest controls can reach a terminal as anything but text.
 * NULL is written as "-". Returns 0 or -ENOSPC. */
int ctl_append_value(char *buf, size_t cap, size_t *len, const char *key, const char *value);

/* Durations as the policy writes them: a number with a unit s, m, h or d,
 * possibly summed ("1h30m"). Returns 0 with *seconds, or -EINVAL (also for
 * 0 and for more than a year). */
int ctl_parse_duration(const char *text, uint32_t *seconds);

/* The shortest exact spelling: 3600 -> "1h", 5400 -> "90m", 45 -> "45s". */
void ctl_format_duration(uint32_t seconds, char *buf, size_t len);

/* A decimal number without sign or leading zeros: 0 or -EINVAL. */
int ctl_parse_u64(const char *text, uint64_t *out);

/* How long an agent's answer is remembered. */
typedef enum ctl_scope {
    CTL_SCOPE_ONCE = 0, /* this request (and those merged with it) only */
    CTL_SCOPE_SESSION,  /* the requesting sessions, while they last */
    CTL_SCOPE_TENANT,   /* the tenant, until a reload drops the rule */
    CTL_SCOPE_DURATION, /* the tenant, for `seconds` */
    CTL_SCOPE_PERSIST,  /* across restarts: refused for now */
} ctl_scope;

typedef struct ctl_answer {
    uint64_t id;
    policy_action action; /* POLICY_ALLOW or POLICY_DENY */
    ctl_scope scope;
    uint32_t seconds; /* CTL_SCOPE_DURATION */
} ctl_answer;

/* Parses the words after "answer": ID allow|deny [once|session|tenant|
 * persist|DURATION]. Returns 0, or -EINVAL with *why (a static message). */
int ctl_parse_answer(int argc, char *const *argv, ctl_answer *out, const char **why);

/* "once", "session", ...; "duration" for CTL_SCOPE_DURATION. */
const char *ctl_scope_name(ctl_scope scope);

#endif
