/* audit.c — wasockd's hash-chained JSON audit log: writer and verifier.
 *
 * Trusts its caller for the options and the record's numbers; every string
 * in a record is untrusted text (guests choose host names) and goes through
 * the strict JSON encoder below. The verifier and audit_open's look at the
 * end of an existing file trust nothing in the file: every line is checked
 * against AUDIT_LINE_MAX, a strict JSON grammar and the fixed record layout
 * before any value is used.
 */
#include "audit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>

/* Bytes of a SHA-256 digest. */
#define AUDIT_HASH_LEN 32

/* "2026-11-21T20:30:01.123456Z": the only timestamp form written or read. */
#define AUDIT_TS_LEN 27

/* Bytes read from the end of an existing file at open: the last line and
 * the one before it (needed when the last one is an incomplete fragment)
 * both fit, whatever their length within AUDIT_LINE_MAX. */
#define AUDIT_TAIL_WINDOW (2 * AUDIT_LINE_MAX)

/* Read buffer of the verifier: large reads, independent of line length. */
#define AUDIT_VERIFY_READ_CHUNK (64 * 1024)

/* Nesting of JSON values the verifier accepts. Records nest two levels
 * (the record and "peer"); the margin costs nothing and the cap keeps a
 * hostile line from recursing deeply. */
#define AUDIT_JSON_MAX_DEPTH 8

/* Attempts to finish a partial write to the journal before giving up. A
 * blocking stream to journald takes one; the bound only stops a loop on a
 * descriptor that keeps accepting single bytes. */
#define AUDIT_JOURNAL_WRITE_ATTEMPTS 16

/* Text of a chain restart reason: our own sentences (the longest, about 120
 * bytes, quotes a verifier message); the record caps it at AUDIT_STRING_MAX. */
#define AUDIT_REASON_MAX 256

/* Reason of the restart record that opens each chain on the journal sink. */
#define AUDIT_JOURNAL_START_REASON "the journal sink starts a new chain each time the log is opened"

/* Prefix of each line on the journal sink, so records stand out among the
 * daemon's other stderr lines. */
#define AUDIT_JOURNAL_PREFIX "audit: "

#define AUDIT_HASH_HEX_ZERO "0000000000000000000000000000000000000000000000000000000000000000"

/* The longest decision record with every string field empty: its length
 * plus ten maximal strings (with quotes) must fit AUDIT_LINE_MAX. */
#define AUDIT_RECORD_SKELETON                                                                      \
    "{\"ts\":\"2026-11-21T20:30:01.123456Z\",\"seq\":18446744073709551615,\"prev_hash\":"          \
    "\"" AUDIT_HASH_HEX_ZERO "\",\"tenant\":,\"session\":18446744073709551615,\"peer\":{\"uid\":"  \
    "4294967295,\"gid\":4294967295,\"pid\":-2147483648},\"op\":,\"family\":,\"local\":,"           \
    "\"remote\":,\"host\":,\"decision\":,\"decided_by\":,\"shadow\":,\"latency_us\":"              \
    "18446744073709551615,\"error_returned\":,\"hash\":\"" AUDIT_HASH_HEX_ZERO "\"}\n"
#define AUDIT_RECORD_STRING_FIELDS 10
_Static_assert(sizeof(AUDIT_RECORD_SKELETON) - 1 +
                       AUDIT_RECORD_STRING_FIELDS * (AUDIT_STRING_MAX + 2) <=
                   AUDIT_LINE_MAX,
               "a record with every string at AUDIT_STRING_MAX must fit AUDIT_LINE_MAX");
_Static_assert(sizeof(AUDIT_TRUNCATED_MARKER) - 1 < AUDIT_STRING_MAX / 2,
               "the truncation marker must leave room for the text it follows");
_Static_assert(sizeof(pid_t) <= 4 && sizeof(uid_t) <= 4 && sizeof(gid_t) <= 4,
               "the skeleton assumes 32-bit ids");

/* The suffix that ends every chained record, up to the hash digits. */
static const char hash_key[] = ",\"hash\":";

struct audit_log {
    int fd;         /* the file, or -1 for the journal sink */
    int journal_fd; /* borrowed */
    audit_sink sink;
    bool hash_chain;
    bool redact_hostnames;
    audit_clock_fn clock;
    void *clock_data;
    uint64_t last_seq;                  /* seq of the last record written; 0: none */
    unsigned char head[AUDIT_HASH_LEN]; /* SHA-256 of the last line; zeros: none */
    bool file_ends_in_fragment;         /* the next file write starts with "\n" */
    bool restart_pending;               /* write a chain restart record first */
    char pending_reason[AUDIT_REASON_MAX];
    char open_restart_reason[AUDIT_REASON_MAX]; /* "" when open continued the chain */
};

/* ---- helpers: hashing, hex, digits ---- */

static int sha256(const void *data, size_t len, unsigned char out[AUDIT_HASH_LEN]) {
    unsigned int out_len = 0;

    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1 ||
        out_len != AUDIT_HASH_LEN) {
        return -EIO;
    }
    return 0;
}

static void hex_encode(const unsigned char *bytes, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1; /* uppercase is not our format */
}

/* Decodes exactly 2*len lowercase hex digits; false on anything else. */
static bool hex_decode(const char *text, size_t len, unsigned char *out) {
    for (size_t i = 0; i < len; i++) {
        int high = hex_value(text[2 * i]);
        int low = hex_value(text[2 * i + 1]);

        if (high < 0 || low < 0) {
            return false;
        }
        out[i] = (unsigned char)(high << 4 | low);
    }
    return true;
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

static bool bytes_all_zero(const unsigned char *bytes, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (bytes[i] != 0) {
            return false;
        }
    }
    return true;
}

/* ---- line builder ---- */

/* Appends into a fixed buffer; once anything does not fit, `overflow`
 * stays set and the line is discarded by its writer. */
typedef struct line_builder {
    char *buf;
    size_t len;
    size_t cap;
    bool overflow;
} line_builder;

static void builder_put(line_builder *b, const char *text, size_t len) {
    if (b->overflow || len > b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->buf + b->len, text, len);
    b->len += len;
}

static void builder_puts(line_builder *b, const char *text) {
    builder_put(b, text, strlen(text));
}

static void builder_printf(line_builder *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void builder_printf(line_builder *b, const char *fmt, ...) {
    va_list ap;
    int n;

    if (b->overflow) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->overflow = true;
        return;
    }
    b->len += (size_t)n;
}

/* ---- strict JSON string encoding of untrusted text ---- */

/* Decodes one well-formed UTF-8 sequence (Unicode Table 3-7: no overlong
 * forms, no surrogates, nothing above U+10FFFF) at s. Returns its length
 * and *cp, or 0 when s[0] does not start one. s is NUL-terminated and a NUL
 * is never a continuation byte, so this never reads past the string. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp) {
    unsigned char c = s[0];
    unsigned char low = 0x80, high = 0xbf;
    size_t len;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        *cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        *cp = c & 0x0fu;
        low = c == 0xe0 ? 0xa0 : 0x80;
        high = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        *cp = c & 0x07u;
        low = c == 0xf0 ? 0x90 : 0x80;
        high = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        unsigned char next = s[i];

        if (next < low || next > high) {
            return 0;
        }
        low = 0x80;
        high = 0xbf;
        *cp = *cp << 6 | (next & 0x3fu);
    }
    return len;
}

/* Writes "\\uXXXX" (lowercase hex) for one UTF-16 code unit: 6 bytes. */
static void json_put_unicode_escape(unsigned unit, char *out) {
    static const char digits[] = "0123456789abcdef";

    out[0] = '\\';
    out[1] = 'u';
    out[2] = digits[(unit >> 12) & 0xf];
    out[3] = digits[(unit >> 8) & 0xf];
    out[4] = digits[(unit >> 4) & 0xf];
    out[5] = digits[unit & 0xf];
}

/* Writes the JSON text of one code point (at most U+10FFFF) into out (at
 * least 12 bytes) and returns its length. Only printable ASCII comes out. */
static size_t json_escape_code_point(uint32_t cp, char *out) {
    if (cp == '"' || cp == '\\') {
        out[0] = '\\';
        out[1] = (char)cp;
        return 2;
    }
    if (cp >= 0x20 && cp < 0x7f) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp <= 0xffff) {
        json_put_unicode_escape(cp, out);
        return 6;
    }
    cp -= 0x10000;
    json_put_unicode_escape(0xd800 + (cp >> 10), out);
    json_put_unicode_escape(0xdc00 + (cp & 0x3ff), out + 6);
    return 12;
}

/* Appends `text` as a JSON string (or null for NULL). The encoded content
 * is at most AUDIT_STRING_MAX characters: a longer one is cut after the
 * last whole character that leaves room for AUDIT_TRUNCATED_MARKER. */
static void builder_put_json_string(line_builder *b, const char *text) {
    const size_t marker_len = sizeof(AUDIT_TRUNCATED_MARKER) - 1;
    const unsigned char *s = (const unsigned char *)text;
    size_t start, fit_len = 0;

    if (text == NULL) {
        builder_puts(b, "null");
        return;
    }
    builder_put(b, "\"", 1);
    start = b->len;
    while (*s != '\0' && !b->overflow) {
        char piece[12];
        uint32_t cp = 0;
        size_t consumed = utf8_decode(s, &cp);
        size_t piece_len;
        size_t content_len = b->len - start;

        if (consumed == 0) {
            cp = 0xfffd; /* one replacement per byte that is not well-formed */
            consumed = 1;
        }
        piece_len = json_escape_code_point(cp, piece);
        if (content_len + piece_len > AUDIT_STRING_MAX) {
            b->len = start + fit_len;
            builder_put(b, AUDIT_TRUNCATED_MARKER, marker_len);
            break;
        }
        builder_put(b, piece, piece_len);
        if (content_len + piece_len <= AUDIT_STRING_MAX - marker_len) {
            fit_len = content_len + piece_len;
        }
        s += consumed;
    }
    builder_put(b, "\"", 1);
}

/* ---- timestamps ---- */

static int format_timestamp(const struct timespec *ts, char out[AUDIT_TS_LEN + 1]) {
    struct tm tm;
    int n;

    if (ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L || gmtime_r(&ts->tv_sec, &tm) == NULL) {
        return -EINVAL;
    }
    if (tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
        return -EINVAL; /* RFC 3339 has four-digit years */
    }
    n = snprintf(out, AUDIT_TS_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000L);
    return n == AUDIT_TS_LEN ? 0 : -EINVAL;
}

/* Pattern "DDDD-DD-DDTDD:DD:DD.DDDDDDZ", digits where D stands. */
static bool timestamp_well_formed(const char *text) {
    static const char pattern[] = "DDDD-DD-DDTDD:DD:DD.DDDDDDZ";

    for (size_t i = 0; i < AUDIT_TS_LEN; i++) {
        if (pattern[i] == 'D' ? !is_digit(text[i]) : text[i] != pattern[i]) {
            return false;
        }
    }
    return true;
}

static int default_clock(struct timespec *now, void *data) {
    (void)data;
    return clock_gettime(CLOCK_REALTIME, now) == 0 ? 0 : -errno;
}

/* ---- strict JSON validation of a line (verifier side) ---- */

typedef struct json_cursor {
    const char *p;
    const char *end;
} json_cursor;

static void json_skip_space(json_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n')) {
        c->p++;
    }
}

static bool json_take(json_cursor *c, char expected) {
    if (c->p < c->end && *c->p == expected) {
        c->p++;
        return true;
    }
    return false;
}

/* Four hex digits of a \u escape (either case, as JSON allows). */
static bool json_hex4(json_cursor *c, unsigned *value) {
    *value = 0;
    if (c->end - c->p < 4) {
        return false;
    }
    for (int i = 0; i < 4; i++) {
        char ch = c->p[i];
        int digit = hex_value(ch >= 'A' && ch <= 'F' ? (char)(ch - 'A' + 'a') : ch);

        if (digit < 0) {
            return false;
        }
        *value = *value << 4 | (unsigned)digit;
    }
    c->p += 4;
    return true;
}

/* A string: escapes must be valid and surrogates paired. The caller has
 * checked that the line is printable ASCII, so no raw control bytes or
 * UTF-8 need to be considered here. */
static bool json_string(json_cursor *c) {
    if (!json_take(c, '"')) {
        return false;
    }
    while (c->p < c->end) {
        char ch = *c->p++;
        unsigned unit, low;

        if (ch == '"') {
            return true;
        }
        if (ch != '\\') {
            continue;
        }
        if (c->p >= c->end) {
            return false;
        }
        ch = *c->p++;
        if (strchr("\"\\/bfnrt", ch) != NULL && ch != '\0') {
            continue;
        }
        if (ch != 'u' || !json_hex4(c, &unit)) {
            return false;
        }
        if (unit >= 0xdc00 && unit <= 0xdfff) {
            return false; /* a low surrogate alone */
        }
        if (unit >= 0xd800 && unit <= 0xdbff) {
            if (!json_take(c, '\\') || !json_take(c, 'u') || !json_hex4(c, &low) || low < 0xdc00 ||
                low > 0xdfff) {
                return false;
            }
        }
    }
    return false;
}

static bool json_number(json_cursor *c) {
    json_take(c, '-');
    if (json_take(c, '0')) {
        /* no leading zeros */
    } else if (c->p < c->end && *c->p >= '1' && *c->p <= '9') {
        while (c->p < c->end && is_digit(*c->p)) {
            c->p++;
        }
    } else {
        return false;
    }
    if (json_take(c, '.')) {
        if (c->p >= c->end || !is_digit(*c->p)) {
            return false;
        }
        while (c->p < c->end && is_digit(*c->p)) {
            c->p++;
        }
    }
    if (json_take(c, 'e') || json_take(c, 'E')) {
        if (!json_take(c, '+')) {
            json_take(c, '-');
        }
        if (c->p >= c->end || !is_digit(*c->p)) {
            return false;
        }
        while (c->p < c->end && is_digit(*c->p)) {
            c->p++;
        }
    }
    return true;
}

static bool json_literal(json_cursor *c, const char *word) {
    size_t len = strlen(word);

    if ((size_t)(c->end - c->p) < len || memcmp(c->p, word, len) != 0) {
        return false;
    }
    c->p += len;
    return true;
}

static bool json_value(json_cursor *c, unsigned depth);

/* Members or elements between `open` and `close`; objects have keys. */
static bool json_container(json_cursor *c, unsigned depth, char open, char close) {
    if (depth >= AUDIT_JSON_MAX_DEPTH || !json_take(c, open)) {
        return false;
    }
    json_skip_space(c);
    if (json_take(c, close)) {
        return true;
    }
    for (;;) {
        if (open == '{') {
            json_skip_space(c);
            if (!json_string(c)) {
                return false;
            }
            json_skip_space(c);
            if (!json_take(c, ':')) {
                return false;
            }
        }
        if (!json_value(c, depth + 1)) {
            return false;
        }
        json_skip_space(c);
        if (json_take(c, close)) {
            return true;
        }
        if (!json_take(c, ',')) {
            return false;
        }
    }
}

static bool json_value(json_cursor *c, unsigned depth) {
    json_skip_space(c);
    if (c->p >= c->end) {
        return false;
    }
    switch (*c->p) {
    case '{':
        return json_container(c, depth, '{', '}');
    case '[':
        return json_container(c, depth, '[', ']');
    case '"':
        return json_string(c);
    case 't':
        return json_literal(c, "true");
    case 'f':
        return json_literal(c, "false");
    case 'n':
        return json_literal(c, "null");
    default:
        return json_number(c);
    }
}

/* True when line[0..len) is exactly one JSON object. */
static bool json_line_is_object(const char *line, size_t len) {
    json_cursor c = {line, line + len};

    json_skip_space(&c);
    if (c.p >= c.end || *c.p != '{' || !json_value(&c, 0)) {
        return false;
    }
    json_skip_space(&c);
    return c.p == c.end;
}

/* ---- parsing and checking one record line ---- */

/* What check_record_line learned about a line. */
typedef struct record_info {
    bool seq_known; /* seq parsed, even if a later check failed */
    uint64_t seq;
    bool chained; /* prev_hash and hash are hex, not null */
    unsigned char prev_hash[AUDIT_HASH_LEN];
    bool is_restart;
    const char *reason; /* restart records: the JSON text of "reason", not NUL-terminated */
    size_t reason_len;
} record_info;

/* Consumes `literal` at *p if it is there. */
static bool take_literal(const char **p, const char *end, const char *literal) {
    size_t len = strlen(literal);

    if ((size_t)(end - *p) < len || memcmp(*p, literal, len) != 0) {
        return false;
    }
    *p += len;
    return true;
}

/* Parses an unsigned decimal without leading zeros that fits 64 bits. */
static bool take_u64(const char **p, const char *end, uint64_t *value) {
    const char *q = *p;

    *value = 0;
    if (q >= end || !is_digit(*q) || (*q == '0' && q + 1 < end && is_digit(q[1]))) {
        return false;
    }
    while (q < end && is_digit(*q)) {
        unsigned digit = (unsigned)(*q - '0');

        if (*value > (UINT64_MAX - digit) / 10) {
            return false;
        }
        *value = *value * 10 + digit;
        q++;
    }
    *p = q;
    return true;
}

/* Checks one line (without its newline) against the record format and its
 * own hash. Returns true, or false with *why set to a static sentence. */
static bool check_record_line(const char *line, size_t len, record_info *info, const char **why) {
    const size_t key_len = sizeof(hash_key) - 1;
    const size_t hex_suffix_len = key_len + 1 + AUDIT_HASH_HEX_LEN + 2; /* ,"hash":"<hex>"} */
    const size_t null_suffix_len = key_len + 5;                         /* ,"hash":null} */
    const char *p = line, *end = line + len;
    const char *hashed_end;
    bool suffix_hex;

    memset(info, 0, sizeof(*info));
    if (len == 0) {
        *why = "empty line";
        return false;
    }
    if (len >= AUDIT_LINE_MAX) {
        *why = "line is longer than a record can be";
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e) {
            *why = "line contains a byte that is not printable ASCII";
            return false;
        }
    }
    if (line[len - 1] != '}') {
        *why = "line is not a complete record (it does not end with \"}\"; a write cut short?)";
        return false;
    }
    /* The head: ts, seq, prev_hash, always in this order and form. */
    if (!take_literal(&p, end, "{\"ts\":\"") || end - p < AUDIT_TS_LEN ||
        !timestamp_well_formed(p)) {
        *why = "line does not start with a record timestamp";
        return false;
    }
    p += AUDIT_TS_LEN;
    if (!take_literal(&p, end, "\",\"seq\":") || !take_u64(&p, end, &info->seq)) {
        *why = "record has no valid seq";
        return false;
    }
    info->seq_known = true;
    if (take_literal(&p, end, ",\"prev_hash\":null,")) {
        info->chained = false;
    } else if (take_literal(&p, end, ",\"prev_hash\":\"") && end - p > AUDIT_HASH_HEX_LEN &&
               hex_decode(p, AUDIT_HASH_LEN, info->prev_hash) && p[AUDIT_HASH_HEX_LEN] == '"') {
        p += AUDIT_HASH_HEX_LEN + 1;
        if (!take_literal(&p, end, ",")) {
            *why = "record has no valid prev_hash";
            return false;
        }
        info->chained = true;
    } else {
        *why = "record has no valid prev_hash";
        return false;
    }
    /* The kind: a decision record or a chain restart. */
    if (take_literal(&p, end, "\"op\":\"" AUDIT_OP_CHAIN_RESTART "\",\"reason\":\"")) {
        info->is_restart = true;
        info->reason = p;
        while (p < end && *p != '"') {
            p += (*p == '\\' && p + 1 < end) ? 2 : 1;
        }
        info->reason_len = (size_t)(p - info->reason);
    } else if (!take_literal(&p, end, "\"tenant\":")) {
        *why = "record is neither a decision nor a chain restart";
        return false;
    }
    /* The tail: ,"hash":"<hex>"} or ,"hash":null}. */
    suffix_hex = len > hex_suffix_len && memcmp(end - hex_suffix_len, hash_key, key_len) == 0 &&
                 *(end - hex_suffix_len + key_len) == '"' && memcmp(end - 2, "\"}", 2) == 0;
    if (suffix_hex) {
        hashed_end = end - hex_suffix_len;
    } else if (len > null_suffix_len && memcmp(end - null_suffix_len, hash_key, key_len) == 0 &&
               memcmp(end - 5, "null}", 5) == 0) {
        hashed_end = end - null_suffix_len;
    } else {
        *why = "line is not a complete record (it does not end with its hash)";
        return false;
    }
    if (hashed_end < p) {
        *why = "line is not a complete record (it does not end with its hash)";
        return false;
    }
    if (suffix_hex) {
        unsigned char stated[AUDIT_HASH_LEN], actual[AUDIT_HASH_LEN];

        if (!hex_decode(hashed_end + key_len + 1, AUDIT_HASH_LEN, stated)) {
            *why = "record's hash is not lowercase hex";
            return false;
        }
        if (sha256(line, (size_t)(hashed_end - line), actual) < 0) {
            *why = "SHA-256 is not available";
            return false;
        }
        if (memcmp(stated, actual, AUDIT_HASH_LEN) != 0) {
            *why = "record's hash does not match its content: the line was altered";
            return false;
        }
    }
    /* Checked after the hash, so that a changed byte is reported as such. */
    if (!json_line_is_object(line, len)) {
        *why = "record is not valid JSON";
        return false;
    }
    if (suffix_hex != info->chained) {
        *why = "record has a prev_hash or a hash but not both";
        return false;
    }
    return true;
}

/* ---- options, formatting, writing ---- */

void audit_options_init(audit_options *opts) {
    memset(opts, 0, sizeof(*opts));
    opts->sink = AUDIT_SINK_FILE;
    opts->hash_chain = true;
    opts->redact_hostnames = false;
    opts->journal_fd = STDERR_FILENO;
    opts->clock = NULL;
    opts->clock_data = NULL;
}

/* The common head of every record: ts, seq, prev_hash. */
static int builder_put_head(line_builder *b, const audit_log *log, const struct timespec *when,
                            uint64_t seq) {
    char ts[AUDIT_TS_LEN + 1];
    char prev_hex[AUDIT_HASH_HEX_LEN + 1];
    struct timespec now;
    int rc;

    if (when == NULL) {
        rc = log->clock(&now, log->clock_data);
        if (rc < 0) {
            return rc;
        }
        when = &now;
    }
    rc = format_timestamp(when, ts);
    if (rc < 0) {
        return rc;
    }
    builder_printf(b, "{\"ts\":\"%s\",\"seq\":%llu,\"prev_hash\":", ts, (unsigned long long)seq);
    if (log->hash_chain) {
        hex_encode(log->head, AUDIT_HASH_LEN, prev_hex);
        builder_printf(b, "\"%s\",", prev_hex);
    } else {
        builder_puts(b, "null,");
    }
    return 0;
}

/* Ends a record: the hash of everything so far, the newline. */
static int builder_put_tail(line_builder *b, const audit_log *log) {
    unsigned char digest[AUDIT_HASH_LEN];
    char hex[AUDIT_HASH_HEX_LEN + 1];
    int rc;

    if (b->overflow) {
        return -E2BIG;
    }
    if (!log->hash_chain) {
        builder_puts(b, ",\"hash\":null}\n");
        return b->overflow ? -E2BIG : 0;
    }
    rc = sha256(b->buf, b->len, digest);
    if (rc < 0) {
        return rc;
    }
    hex_encode(digest, AUDIT_HASH_LEN, hex);
    builder_printf(b, "%s\"%s\"}\n", hash_key, hex);
    return b->overflow ? -E2BIG : 0;
}

static int format_decision_record(const audit_log *log, const audit_record *rec, uint64_t seq,
                                  line_builder *b) {
    int rc = builder_put_head(b, log, rec->time, seq);

    if (rc < 0) {
        return rc;
    }
    builder_puts(b, "\"tenant\":");
    builder_put_json_string(b, rec->tenant);
    builder_printf(b, ",\"session\":%llu,\"peer\":{\"uid\":%lu,\"gid\":%lu,\"pid\":%ld},\"op\":",
                   (unsigned long long)rec->session, (unsigned long)rec->peer_uid,
                   (unsigned long)rec->peer_gid, (long)rec->peer_pid);
    builder_put_json_string(b, rec->op);
    builder_puts(b, ",\"family\":");
    builder_put_json_string(b, rec->family);
    builder_puts(b, ",\"local\":");
    builder_put_json_string(b, rec->local);
    builder_puts(b, ",\"remote\":");
    builder_put_json_string(b, rec->remote);
    builder_puts(b, ",\"host\":");
    builder_put_json_string(b, log->redact_hostnames ? NULL : rec->host);
    builder_puts(b, ",\"decision\":");
    builder_put_json_string(b, rec->decision);
    builder_puts(b, ",\"decided_by\":");
    builder_put_json_string(b, rec->decided_by);
    builder_puts(b, ",\"shadow\":");
    builder_put_json_string(b, rec->shadow);
    builder_printf(b,
                   ",\"latency_us\":%llu,\"error_returned\":", (unsigned long long)rec->latency_us);
    builder_put_json_string(b, rec->error_returned);
    return builder_put_tail(b, log);
}

static int format_restart_record(const audit_log *log, const char *reason, uint64_t seq,
                                 line_builder *b) {
    int rc = builder_put_head(b, log, NULL, seq);

    if (rc < 0) {
        return rc;
    }
    builder_puts(b, "\"op\":\"" AUDIT_OP_CHAIN_RESTART "\",\"reason\":");
    builder_put_json_string(b, reason);
    return builder_put_tail(b, log);
}

/* One write(2) of line[0..len) to the file. Returns 0, a negative errno
 * (nothing was written), or -EIO after a short write, which leaves a
 * fragment the next write must terminate. */
static int write_file_line(audit_log *log, const char *line, size_t len) {
    ssize_t n;

    do {
        n = write(log->fd, line, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    if ((size_t)n != len) {
        log->file_ends_in_fragment = n > 0 || log->file_ends_in_fragment;
        return -EIO;
    }
    log->file_ends_in_fragment = false;
    return 0;
}

/* "audit: " + line to the journal, finishing partial writes (a stream to
 * journald keeps order, and nothing else writes the record). */
static int write_journal_line(const audit_log *log, const char *line, size_t len) {
    const size_t prefix_len = sizeof(AUDIT_JOURNAL_PREFIX) - 1;
    size_t total = prefix_len + len, done = 0;

    for (int attempt = 0; attempt < AUDIT_JOURNAL_WRITE_ATTEMPTS && done < total; attempt++) {
        struct iovec iov[2];
        int count = 0;
        ssize_t n;

        if (done < prefix_len) {
            iov[count].iov_base = (char *)AUDIT_JOURNAL_PREFIX + done;
            iov[count++].iov_len = prefix_len - done;
            iov[count].iov_base = (char *)line;
            iov[count++].iov_len = len;
        } else {
            iov[count].iov_base = (char *)line + (done - prefix_len);
            iov[count++].iov_len = total - done;
        }
        n = writev(log->journal_fd, iov, count);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        done += (size_t)n;
    }
    return done == total ? 0 : -EIO;
}

/* Sends one formatted line (ending in "\n", with one spare byte before
 * `line` for the fragment terminator) to the sinks and advances the chain
 * when the primary sink (the file, or the journal without a file) took it.
 * Returns the primary sink's result; *journal_rc gets the journal copy's
 * (0 when there is none), which does not decide whether the chain moved. */
static int emit_line(audit_log *log, char *line, size_t len, uint64_t seq, int *journal_rc) {
    int primary_rc = 0;

    *journal_rc = 0;

    if (log->fd >= 0) {
        if (log->file_ends_in_fragment) {
            line[-1] = '\n';
            primary_rc = write_file_line(log, line - 1, len + 1);
        } else {
            primary_rc = write_file_line(log, line, len);
        }
    }
    if (log->sink != AUDIT_SINK_FILE) {
        *journal_rc = write_journal_line(log, line, len);
        if (log->fd < 0) {
            primary_rc = *journal_rc;
        }
    }
    if (primary_rc == 0) {
        int rc = sha256(line, len - 1, log->head);

        if (rc < 0) {
            return rc;
        }
        log->last_seq = seq;
    }
    return primary_rc;
}

/* Writes the chain restart record that starts a new segment. Returns the
 * primary sink's result: a lost journal copy of this marker is not worth
 * refusing to log at all. */
static int write_restart(audit_log *log, const char *reason) {
    char buf[1 + AUDIT_LINE_MAX];
    line_builder b = {buf + 1, 0, AUDIT_LINE_MAX, false};
    uint64_t seq = log->last_seq + 1;
    int journal_rc, rc;

    if (log->hash_chain) {
        memset(log->head, 0, sizeof(log->head));
    }
    rc = format_restart_record(log, reason, seq, &b);
    if (rc < 0) {
        return rc;
    }
    return emit_line(log, b.buf, b.len, seq, &journal_rc);
}

int audit_write(audit_log *log, const audit_record *rec) {
    char buf[1 + AUDIT_LINE_MAX];
    line_builder b = {buf + 1, 0, AUDIT_LINE_MAX, false};
    uint64_t seq;
    int journal_rc, rc;

    if (log == NULL || rec == NULL) {
        return -EINVAL;
    }
    if (log->restart_pending) {
        rc = write_restart(log, log->pending_reason);
        if (rc < 0) {
            return rc;
        }
        log->restart_pending = false;
    }
    seq = log->last_seq + 1;
    rc = format_decision_record(log, rec, seq, &b);
    if (rc < 0) {
        return rc;
    }
    rc = emit_line(log, b.buf, b.len, seq, &journal_rc);
    if (rc == -EIO && log->file_ends_in_fragment && !log->restart_pending) {
        /* The fragment carries this seq; the restart record takes the next. */
        log->last_seq = seq;
        log->restart_pending = true;
        snprintf(log->pending_reason, sizeof(log->pending_reason),
                 "the write of record %llu was cut short", (unsigned long long)seq);
    }
    return rc < 0 ? rc : journal_rc;
}

/* ---- opening: continuing an existing chain ---- */

/* Reads up to AUDIT_TAIL_WINDOW bytes ending at `size` into buf. */
static int read_tail(int fd, off_t size, char *buf, size_t *len, off_t *window_start) {
    size_t want = size < (off_t)AUDIT_TAIL_WINDOW ? (size_t)size : AUDIT_TAIL_WINDOW;
    size_t got = 0;

    *window_start = size - (off_t)want;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, *window_start + (off_t)got);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            break; /* the file shrank meanwhile: use what there is */
        }
        got += (size_t)n;
    }
    *len = got;
    return 0;
}

/* Finds the line that ends just before buf[line_end] ('\n' or the end of
 * the window). Returns false when its start is not within the window. */
static bool find_line_start(const char *buf, size_t line_end, bool window_at_file_start,
                            size_t *line_start) {
    const char *newline = NULL;

    for (size_t i = line_end; i > 0; i--) {
        if (buf[i - 1] == '\n') {
            newline = buf + i - 1;
            break;
        }
    }
    if (newline != NULL) {
        *line_start = (size_t)(newline - buf) + 1;
        return true;
    }
    *line_start = 0;
    return window_at_file_start;
}

/* Looks at the end of the existing file and either continues its chain
 * (seq, head) or fills `reason` for a chain restart. */
static int recover_chain(audit_log *log, const char *path, char *reason, size_t reason_len) {
    char *buf;
    size_t len = 0, line_start = 0, line_end;
    off_t window_start = 0;
    struct stat st;
    record_info info;
    const char *why = NULL;
    bool have_line, line_ok;
    int rfd, rc;

    reason[0] = '\0';
    rfd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (rfd < 0) {
        return -errno;
    }
    if (fstat(rfd, &st) < 0) {
        rc = -errno;
        close(rfd);
        return rc;
    }
    if (st.st_size == 0) {
        close(rfd);
        return 0;
    }
    buf = malloc(AUDIT_TAIL_WINDOW);
    if (buf == NULL) {
        close(rfd);
        return -ENOMEM;
    }
    rc = read_tail(rfd, st.st_size, buf, &len, &window_start);
    close(rfd);
    if (rc < 0 || len == 0) {
        free(buf);
        return rc;
    }

    if (buf[len - 1] != '\n') {
        /* A crash or a full disk cut the last write short. The fragment is
         * ended by a newline before the restart record, so the complete
         * line before it still gives the seq. */
        size_t fragment_start = 0;
        bool fragment_bounded = find_line_start(buf, len, window_start == 0, &fragment_start);

        log->file_ends_in_fragment = true;
        if (fragment_bounded) {
            snprintf(reason, reason_len,
                     "the last line of the file is incomplete (%zu bytes without a newline)",
                     len - fragment_start);
        } else {
            snprintf(reason, reason_len,
                     "the last line of the file is incomplete and longer than a record");
        }
        have_line = fragment_bounded && fragment_start > 0 &&
                    find_line_start(buf, fragment_start - 1, window_start == 0, &line_start);
        line_end = fragment_start > 0 ? fragment_start - 1 : 0;
        if (have_line && check_record_line(buf + line_start, line_end - line_start, &info, &why)) {
            log->last_seq = info.seq;
        }
        free(buf);
        return 0;
    }

    line_end = len - 1;
    if (!find_line_start(buf, line_end, window_start == 0, &line_start)) {
        snprintf(reason, reason_len, "the last line of the file is longer than a record");
        free(buf);
        return 0;
    }
    line_ok = check_record_line(buf + line_start, line_end - line_start, &info, &why);
    if (info.seq_known) {
        log->last_seq = info.seq; /* the best guess, even for a line that fails */
    }
    if (!line_ok) {
        snprintf(reason, reason_len, "the last record does not verify: %s", why);
    } else if (log->hash_chain && !info.chained) {
        snprintf(reason, reason_len, "the last record is not hash-chained");
    } else {
        rc = sha256(buf + line_start, line_end - line_start, log->head);
        if (rc < 0) {
            free(buf);
            return rc;
        }
    }
    free(buf);
    return 0;
}

static void set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int audit_open(const char *path, const audit_options *opts, audit_log **out, char *err,
               size_t errlen) {
    audit_options defaults;
    audit_log *log;
    struct stat st;
    int rc;

    set_error(err, errlen, "%s", "");
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    if (opts == NULL) {
        audit_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->sink != AUDIT_SINK_FILE && opts->sink != AUDIT_SINK_JOURNAL &&
        opts->sink != AUDIT_SINK_BOTH) {
        set_error(err, errlen, "audit: unknown sink %d", (int)opts->sink);
        return -EINVAL;
    }
    if (opts->sink != AUDIT_SINK_FILE && opts->journal_fd < 0) {
        set_error(err, errlen, "audit: the journal sink needs a descriptor");
        return -EINVAL;
    }
    if (opts->sink != AUDIT_SINK_JOURNAL && (path == NULL || path[0] == '\0')) {
        set_error(err, errlen, "audit: the file sink needs a path");
        return -EINVAL;
    }
    log = calloc(1, sizeof(*log));
    if (log == NULL) {
        set_error(err, errlen, "audit: out of memory");
        return -ENOMEM;
    }
    log->fd = -1;
    log->journal_fd = opts->journal_fd;
    log->sink = opts->sink;
    log->hash_chain = opts->hash_chain;
    log->redact_hostnames = opts->redact_hostnames;
    log->clock = opts->clock != NULL ? opts->clock : default_clock;
    log->clock_data = opts->clock_data;

    if (opts->sink == AUDIT_SINK_JOURNAL) {
        /* The journal cannot be read back, so each start begins a chain;
         * marking it lets an extract spanning restarts verify. A failed
         * write is retried before the first record. */
        snprintf(log->pending_reason, sizeof(log->pending_reason), "%s",
                 AUDIT_JOURNAL_START_REASON);
        log->restart_pending = write_restart(log, log->pending_reason) < 0;
        *out = log;
        return 0;
    }
    log->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (log->fd < 0) {
        rc = -errno;
        set_error(err, errlen, "%s: cannot open the audit log: %s", path, strerror(-rc));
        goto fail;
    }
    if (fstat(log->fd, &st) < 0) {
        rc = -errno;
        set_error(err, errlen, "%s: %s", path, strerror(-rc));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        set_error(err, errlen, "%s: the audit log must be a regular file", path);
        goto fail;
    }
    /* Two writers appending to one file would interleave two chains. */
    if (flock(log->fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        set_error(err, errlen, "%s: the audit log is in use by another writer", path);
        goto fail;
    }
    rc = recover_chain(log, path, log->open_restart_reason, sizeof(log->open_restart_reason));
    if (rc < 0) {
        set_error(err, errlen, "%s: cannot read the end of the audit log: %s", path, strerror(-rc));
        goto fail;
    }
    if (log->open_restart_reason[0] != '\0') {
        rc = write_restart(log, log->open_restart_reason);
        if (rc < 0) {
            set_error(err, errlen, "%s: cannot write the chain restart record: %s", path,
                      strerror(-rc));
            goto fail;
        }
    }
    *out = log;
    return 0;

fail:
    audit_close(log);
    return rc;
}

void audit_close(audit_log *log) {
    if (log == NULL) {
        return;
    }
    if (log->fd >= 0) {
        close(log->fd);
    }
    free(log);
}

const char *audit_restart_reason(const audit_log *log) {
    return log->open_restart_reason[0] != '\0' ? log->open_restart_reason : NULL;
}

void audit_last_record(const audit_log *log, uint64_t *seq, char *head_hex) {
    if (seq != NULL) {
        *seq = log->last_seq;
    }
    if (head_hex != NULL) {
        hex_encode(log->head, AUDIT_HASH_LEN, head_hex);
    }
}

int audit_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen) {
    char text[INET6_ADDRSTRLEN];
    int n;

    if (sa == NULL || buf == NULL) {
        return -EINVAL;
    }
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;

        memcpy(&in, sa, sizeof(in));
        if (inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text)) == NULL) {
            return -errno;
        }
        n = snprintf(buf, buflen, "%s:%u", text, (unsigned)ntohs(in.sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;

        memcpy(&in6, sa, sizeof(in6));
        if (inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text)) == NULL) {
            return -errno;
        }
        if (in6.sin6_scope_id != 0) {
            n = snprintf(buf, buflen, "[%s%%%lu]:%u", text, (unsigned long)in6.sin6_scope_id,
                         (unsigned)ntohs(in6.sin6_port));
        } else {
            n = snprintf(buf, buflen, "[%s]:%u", text, (unsigned)ntohs(in6.sin6_port));
        }
    } else {
        return -EAFNOSUPPORT;
    }
    return n >= 0 && (size_t)n < buflen ? 0 : -ENOSPC;
}

/* ---- verification ---- */

typedef struct verify_state {
    const char *path;
    FILE *report;
    uint64_t line_no;
    uint64_t records;  /* lines that verified */
    uint64_t segments; /* chains started: first line, restarts, continuations */
    uint64_t problems;
    bool prev_is_record; /* the line before verified as a chained record */
    bool prev_broken;    /* the line before failed: its follower's link is not judged */
    unsigned char prev_line_hash[AUDIT_HASH_LEN];
    uint64_t prev_seq;
    uint64_t last_good_seq; /* of the last line that verified */
    unsigned char last_good_head[AUDIT_HASH_LEN];
} verify_state;

static void verify_problem(verify_state *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void verify_problem(verify_state *v, const char *fmt, ...) {
    va_list ap;

    v->problems++;
    if (v->report == NULL || v->problems > AUDIT_VERIFY_MAX_REPORTS) {
        return;
    }
    fprintf(v->report, "%s:%llu: ", v->path, (unsigned long long)v->line_no);
    va_start(ap, fmt);
    vfprintf(v->report, fmt, ap);
    va_end(ap);
    fputc('\n', v->report);
}

static void verify_note(verify_state *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void verify_note(verify_state *v, const char *fmt, ...) {
    va_list ap;

    if (v->report == NULL || v->problems >= AUDIT_VERIFY_MAX_REPORTS) {
        return;
    }
    fprintf(v->report, "%s:%llu: note: ", v->path, (unsigned long long)v->line_no);
    va_start(ap, fmt);
    vfprintf(v->report, fmt, ap);
    va_end(ap);
    fputc('\n', v->report);
}

static void verify_mark_broken(verify_state *v) {
    v->prev_is_record = false;
    v->prev_broken = true;
}

/* Judges one complete line (without its newline). */
static void verify_line(verify_state *v, const char *line, size_t len) {
    record_info info;
    const char *why = NULL;
    unsigned char line_hash[AUDIT_HASH_LEN];
    bool link_known = v->prev_is_record && !v->prev_broken;

    if (!check_record_line(line, len, &info, &why)) {
        verify_problem(v, "%s", why);
        verify_mark_broken(v);
        return;
    }
    if (!info.chained) {
        verify_problem(v, "record is not hash-chained (written with hash_chain: none)");
        verify_mark_broken(v);
        return;
    }
    if (info.is_restart) {
        if (!bytes_all_zero(info.prev_hash, AUDIT_HASH_LEN)) {
            verify_problem(v, "chain restart record with a non-zero prev_hash");
            verify_mark_broken(v);
            return;
        }
        v->segments++;
        verify_note(v, "a new chain segment starts at seq %llu: %.*s", (unsigned long long)info.seq,
                    (int)info.reason_len, info.reason);
    } else if (bytes_all_zero(info.prev_hash, AUDIT_HASH_LEN)) {
        if (v->line_no == 1) {
            v->segments++;
        } else if (!v->prev_broken) {
            verify_problem(v, "a new chain starts without a chain restart record "
                              "(the records before it are unlinked)");
            verify_mark_broken(v);
            return;
        } else {
            v->segments++;
        }
    } else if (v->line_no == 1) {
        v->segments++;
        verify_note(v, "the chain continues from an earlier file; its last line must hash to "
                       "this record's prev_hash");
    } else if (link_known) {
        if (memcmp(info.prev_hash, v->prev_line_hash, AUDIT_HASH_LEN) != 0) {
            verify_problem(v,
                           "prev_hash does not match line %llu: a record was removed, "
                           "inserted or reordered",
                           (unsigned long long)(v->line_no - 1));
            verify_mark_broken(v);
            return;
        }
        if (v->prev_seq == UINT64_MAX || info.seq != v->prev_seq + 1) {
            verify_problem(v, "seq %llu does not follow seq %llu", (unsigned long long)info.seq,
                           (unsigned long long)v->prev_seq);
            verify_mark_broken(v);
            return;
        }
    }
    if (sha256(line, len, line_hash) < 0) {
        verify_problem(v, "SHA-256 is not available");
        verify_mark_broken(v);
        return;
    }
    memcpy(v->prev_line_hash, line_hash, AUDIT_HASH_LEN);
    v->prev_seq = info.seq;
    v->prev_is_record = true;
    v->prev_broken = false;
    v->records++;
    v->last_good_seq = info.seq;
    memcpy(v->last_good_head, line_hash, AUDIT_HASH_LEN);
}

int audit_verify_file(const char *path, FILE *report) {
    verify_state v = {.path = path, .report = report};
    char *chunk, *line;
    size_t line_len = 0;
    bool line_too_long = false;
    int fd, rc = 0;

    if (path == NULL) {
        return -EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        return -errno;
    }
    chunk = malloc(AUDIT_VERIFY_READ_CHUNK);
    line = malloc(AUDIT_LINE_MAX);
    if (chunk == NULL || line == NULL) {
        free(chunk);
        free(line);
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, AUDIT_VERIFY_READ_CHUNK);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = -errno; /* EISDIR for a directory, EIO for a bad disk */
            break;
        }
        if (n == 0) {
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] != '\n') {
                if (line_len < AUDIT_LINE_MAX) {
                    line[line_len++] = chunk[i];
                } else {
                    line_too_long = true;
                }
                continue;
            }
            v.line_no++;
            if (line_too_long) {
                verify_problem(&v, "line is longer than a record can be (%d bytes)",
                               AUDIT_LINE_MAX);
                verify_mark_broken(&v);
            } else {
                verify_line(&v, line, line_len);
            }
            line_len = 0;
            line_too_long = false;
        }
    }
    close(fd);
    if (rc == 0 && (line_len > 0 || line_too_long)) {
        v.line_no++;
        verify_problem(&v, "the file does not end with a newline: the last write was cut short");
    }
    free(chunk);
    free(line);
    if (rc < 0) {
        return rc;
    }
    if (report != NULL) {
        char head_hex[AUDIT_HASH_HEX_LEN + 1] = AUDIT_HASH_HEX_ZERO;

        if (v.problems > AUDIT_VERIFY_MAX_REPORTS) {
            fprintf(report, "%s: %llu more problems not shown\n", path,
                    (unsigned long long)(v.problems - AUDIT_VERIFY_MAX_REPORTS));
        }
        if (v.records > 0) {
            hex_encode(v.last_good_head, AUDIT_HASH_LEN, head_hex);
        }
        fprintf(report,
                "%s: %s: lines %llu, records verified %llu, chain segments %llu, problems %llu, "
                "last verified seq %llu, chain head %s\n",
                path, v.problems == 0 ? "OK" : "FAILED", (unsigned long long)v.line_no,
                (unsigned long long)v.records, (unsigned long long)v.segments,
                (unsigned long long)v.problems, (unsigned long long)v.last_good_seq, head_hex);
    }
    return v.problems == 0 ? 0 : 1;
}
