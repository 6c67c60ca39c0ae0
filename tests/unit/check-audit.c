/* check-audit.c — unit tests for the audit log (daemon/audit.c): record
 * format, the SHA-256 chain and its verifier, continuing a chain across
 * restarts, hostile strings, incomplete lines, the journal sink and errors.
 *
 * Every test works in its own mkdtemp directory. The expected hashes are
 * computed here with OpenSSL, and lines are parsed by this file's own small
 * JSON reader, so the tests do not trust the code they test.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>

#include "audit.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Test files stay small: a few hundred records of at most 4 KiB. */
#define TEST_FILE_MAX  (2 * 1024 * 1024)
#define TEST_LINES_MAX 1024

/* Expected report lines: a path and a sentence. */
#define NEEDLE_MAX (PATH_MAX + 256)

/* 2026-11-21T20:30:01Z, the example time of the format description. */
#define TEST_EPOCH 1795293001

#define AUDIT_ZERO_HEAD "0000000000000000000000000000000000000000000000000000000000000000"
static const char zero_hash[] = AUDIT_ZERO_HEAD;

/* ---- fixture: a temporary directory ---- */

static char test_dir[PATH_MAX];

/* Checked fixture: runs in the test's own process, before each test. */
static void make_test_dir(void) {
    snprintf(test_dir, sizeof(test_dir), "/tmp/check-audit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
}

/* Checked fixture: removes the test's files (a test makes a handful). */
static void remove_test_dir(void) {
    DIR *dir = opendir(test_dir);
    struct dirent *entry;

    ck_assert_ptr_nonnull(dir);
    for (int i = 0; i < 64 && (entry = readdir(dir)) != NULL; i++) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
            ck_assert_int_eq(unlinkat(dirfd(dir), entry->d_name, 0), 0);
        }
    }
    closedir(dir);
    ck_assert_int_eq(rmdir(test_dir), 0);
}

static void test_path(char *out, size_t len, const char *name) {
    int n = snprintf(out, len, "%s/%s", test_dir, name);

    ck_assert(n > 0 && (size_t)n < len);
}

/* ---- a clock that advances one second per reading ---- */

typedef struct test_clock {
    long readings;
} test_clock;

static int read_test_clock(struct timespec *now, void *data) {
    test_clock *clock = data;

    now->tv_sec = TEST_EPOCH + clock->readings;
    now->tv_nsec = 123456789;
    clock->readings++;
    return 0;
}

static test_clock the_clock;

static audit_options test_options(void) {
    audit_options opts;

    audit_options_init(&opts);
    the_clock.readings = 0;
    opts.clock = read_test_clock;
    opts.clock_data = &the_clock;
    return opts;
}

static audit_record sample_record(void) {
    audit_record rec;

    memset(&rec, 0, sizeof(rec));
    rec.tenant = "shop";
    rec.session = 7;
    rec.peer_uid = 2001;
    rec.peer_gid = 2002;
    rec.peer_pid = 4242;
    rec.op = "tcp.connect";
    rec.family = "ipv4";
    rec.local = NULL;
    rec.remote = "192.0.2.10:443";
    rec.host = "api.example.com";
    rec.decision = "deny";
    rec.decided_by = "guard:no-internal";
    rec.shadow = NULL;
    rec.latency_us = 12;
    rec.error_returned = "access-denied";
    return rec;
}

/* ---- files and lines ---- */

typedef struct file_lines {
    char *data; /* the whole file, NUL-terminated */
    size_t size;
    char *line[TEST_LINES_MAX]; /* into data; newlines replaced by NUL */
    size_t len[TEST_LINES_MAX];
    size_t count;
    bool ends_with_newline;
} file_lines;

static char *read_whole_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    char *data = malloc(TEST_FILE_MAX + 1);
    size_t n;

    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(data);
    n = fread(data, 1, TEST_FILE_MAX, f);
    ck_assert(n < TEST_FILE_MAX);
    fclose(f);
    data[n] = '\0';
    *size = n;
    return data;
}

static void write_whole_file(const char *path, const char *data, size_t size) {
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

static void append_to_file(const char *path, const char *data, size_t size) {
    FILE *f = fopen(path, "ab");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

static void split_lines(file_lines *fl, const char *path) {
    char *p;

    memset(fl, 0, sizeof(*fl));
    fl->data = read_whole_file(path, &fl->size);
    fl->ends_with_newline = fl->size > 0 && fl->data[fl->size - 1] == '\n';
    p = fl->data;
    while (p < fl->data + fl->size) {
        char *nl = memchr(p, '\n', (size_t)(fl->data + fl->size - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(fl->data + fl->size - p);

        ck_assert_uint_lt(fl->count, TEST_LINES_MAX);
        fl->line[fl->count] = p;
        fl->len[fl->count] = len;
        fl->count++;
        p[len] = '\0'; /* the newline, or the terminating NUL */
        p += len + 1;
    }
}

static void free_lines(file_lines *fl) {
    free(fl->data);
}

/* Writes the file back from its lines, leaving out line `skip` (1-based,
 * 0: none) and moving line `swap` after `swap + 1` (0: none). */
static void rewrite_lines(const file_lines *fl, const char *path, size_t skip, size_t swap) {
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < fl->count; i++) {
        size_t pick = i;

        if (i + 1 == skip) {
            continue;
        }
        if (swap != 0 && i + 1 == swap) {
            pick = i + 1;
        } else if (swap != 0 && i == swap) {
            pick = i - 1;
        }
        fwrite(fl->line[pick], 1, fl->len[pick], f);
        fputc('\n', f);
    }
    ck_assert_int_eq(fclose(f), 0);
}

static void sha256_hex(const char *data, size_t len, char out[AUDIT_HASH_HEX_LEN + 1]) {
    unsigned char digest[32];
    unsigned int digest_len = 0;

    ck_assert_int_eq(EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL), 1);
    ck_assert_uint_eq(digest_len, 32);
    for (size_t i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
}

/* ---- a small independent JSON reader ---- */

/* Appends the UTF-8 of cp to out (cap bytes, NUL kept). */
static bool put_utf8(char *out, size_t cap, size_t *len, unsigned long cp) {
    unsigned char bytes[4];
    size_t n;

    if (cp < 0x80) {
        bytes[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        bytes[0] = (unsigned char)(0xc0 | (cp >> 6));
        bytes[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        bytes[0] = (unsigned char)(0xe0 | (cp >> 12));
        bytes[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        bytes[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        bytes[0] = (unsigned char)(0xf0 | (cp >> 18));
        bytes[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        bytes[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        bytes[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (out == NULL) {
        *len += n;
        return true;
    }
    if (*len + n >= cap) {
        return false;
    }
    memcpy(out + *len, bytes, n);
    *len += n;
    out[*len] = '\0';
    return true;
}

static bool read_hex4(const char **p, unsigned long *value) {
    *value = 0;
    for (int i = 0; i < 4; i++) {
        char c = (*p)[i];
        unsigned long digit;

        if (c >= '0' && c <= '9') {
            digit = (unsigned long)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            digit = (unsigned long)(c - 'a' + 10);
        } else {
            return false; /* the writer uses lowercase only */
        }
        *value = *value << 4 | digit;
    }
    *p += 4;
    return true;
}

/* Reads a JSON string at *p, decoding it into out (may be NULL). */
static bool tj_string(const char **p, char *out, size_t cap) {
    const char *s = *p;
    size_t len = 0;

    if (out != NULL && cap > 0) {
        out[0] = '\0';
    }
    if (*s++ != '"') {
        return false;
    }
    for (;;) {
        unsigned char c = (unsigned char)*s++;
        unsigned long cp;

        if (c == '"') {
            break;
        }
        if (c < 0x20 || c > 0x7e) {
            return false; /* the writer emits printable ASCII only */
        }
        if (c != '\\') {
            cp = c;
        } else {
            c = (unsigned char)*s++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                cp = c;
                break;
            case 'u':
                if (!read_hex4(&s, &cp)) {
                    return false;
                }
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return false;
                }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned long low;

                    if (s[0] != '\\' || s[1] != 'u') {
                        return false;
                    }
                    s += 2;
                    if (!read_hex4(&s, &low) || low < 0xdc00 || low > 0xdfff) {
                        return false;
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                }
                break;
            default:
                return false; /* \n, \t, ... are valid JSON but not what the writer emits */
            }
        }
        if (!put_utf8(out, cap, &len, cp)) {
            return false;
        }
    }
    *p = s;
    return true;
}

static bool tj_value(const char **p, int depth);

static bool tj_object(const char **p, int depth) {
    const char *s = *p;

    if (depth > 4 || *s++ != '{') {
        return false;
    }
    if (*s == '}') {
        *p = s + 1;
        return true;
    }
    for (;;) {
        if (!tj_string(&s, NULL, 0) || *s++ != ':' || !tj_value(&s, depth + 1)) {
            return false;
        }
        if (*s == '}') {
            *p = s + 1;
            return true;
        }
        if (*s++ != ',') {
            return false;
        }
    }
}

static bool tj_value(const char **p, int depth) {
    const char *s = *p;

    if (*s == '{') {
        return tj_object(p, depth);
    }
    if (*s == '"') {
        return tj_string(p, NULL, 0);
    }
    if (strncmp(s, "null", 4) == 0) {
        *p = s + 4;
        return true;
    }
    if (*s == '-') {
        s++;
    }
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) {
        return false;
    }
    while (*s >= '0' && *s <= '9') {
        s++;
    }
    *p = s;
    return true;
}

/* True when the NUL-terminated line is exactly one JSON object, written
 * without whitespace. */
static bool tj_valid_line(const char *line) {
    const char *p = line;

    return tj_object(&p, 0) && *p == '\0';
}

/* Looks up a top-level key of a valid line. Returns 's' (decoded into out),
 * 'n' (null), 'v' (another value, its raw text into out), or 0 if absent. */
static int tj_get(const char *line, const char *key, char *out, size_t cap) {
    const char *p = line + 1;
    char name[64];

    ck_assert(tj_valid_line(line));
    while (*p != '}') {
        const char *value;

        ck_assert(tj_string(&p, name, sizeof(name)));
        ck_assert_int_eq(*p++, ':');
        value = p;
        ck_assert(tj_value(&p, 1));
        if (strcmp(name, key) == 0) {
            if (*value == '"') {
                ck_assert(tj_string(&value, out, cap));
                return 's';
            }
            if (strncmp(value, "null", 4) == 0) {
                return 'n';
            }
            ck_assert_uint_lt((size_t)(p - value), cap);
            memcpy(out, value, (size_t)(p - value));
            out[p - value] = '\0';
            return 'v';
        }
        if (*p == ',') {
            p++;
        }
    }
    return 0;
}

static unsigned long long tj_get_u64(const char *line, const char *key) {
    char text[32];
    char *end;
    unsigned long long value;

    ck_assert_int_eq(tj_get(line, key, text, sizeof(text)), 'v');
    errno = 0;
    value = strtoull(text, &end, 10);
    ck_assert_int_eq(errno, 0);
    ck_assert(*end == '\0');
    return value;
}

static void assert_printable_ascii(const char *line, size_t len) {
    for (size_t i = 0; i < len; i++) {
        ck_assert_msg((unsigned char)line[i] >= 0x20 && (unsigned char)line[i] <= 0x7e,
                      "byte 0x%02x at %zu", (unsigned char)line[i], i);
    }
}

/* ---- the verifier's report ---- */

typedef struct verify_result {
    int rc;
    char *text; /* the whole report */
} verify_result;

static verify_result run_verify(const char *path) {
    verify_result r = {0, NULL};
    size_t size = 0;
    FILE *f = open_memstream(&r.text, &size);

    ck_assert_ptr_nonnull(f);
    r.rc = audit_verify_file(path, f);
    ck_assert_int_eq(fclose(f), 0);
    return r;
}

/* Only the verdict; the report is dropped. */
static int verify_rc(const char *path) {
    verify_result r = run_verify(path);

    free(r.text);
    return r.rc;
}

/* The 1-based line number of the report's first line "path:N: ..." that is
 * not a note; 0 if there is none. */
static unsigned long first_problem_line(const verify_result *r, const char *path) {
    size_t path_len = strlen(path);
    const char *p = r->text;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, path, path_len) == 0 && p[path_len] == ':' && p[path_len + 1] >= '0' &&
            p[path_len + 1] <= '9') {
            char *end;
            unsigned long line = strtoul(p + path_len + 1, &end, 10);

            if (strncmp(end, ": note:", 7) != 0) {
                return line;
            }
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return 0;
}

static void write_records(const char *path, audit_options opts, size_t count) {
    audit_log *log = NULL;
    char err[256];
    audit_record rec = sample_record();

    ck_assert_int_eq(audit_open(path, &opts, &log, err, sizeof(err)), 0);
    for (size_t i = 0; i < count; i++) {
        rec.session = i;
        ck_assert_int_eq(audit_write(log, &rec), 0);
    }
    audit_close(log);
}

/* ---- format ---- */

START_TEST(test_format_exact_line) {
    char path[PATH_MAX], expected[2048], hash[AUDIT_HASH_HEX_LEN + 1];
    audit_options opts = test_options();
    file_lines fl;
    int n;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, opts, 1);
    n = snprintf(expected, sizeof(expected),
                 "{\"ts\":\"2026-11-21T20:30:01.123456Z\",\"seq\":1,\"prev_hash\":\"%s\","
                 "\"tenant\":\"shop\",\"session\":0,\"peer\":{\"uid\":2001,\"gid\":2002,"
                 "\"pid\":4242},\"op\":\"tcp.connect\",\"family\":\"ipv4\",\"local\":null,"
                 "\"remote\":\"192.0.2.10:443\",\"host\":\"api.example.com\","
                 "\"decision\":\"deny\",\"decided_by\":\"guard:no-internal\",\"shadow\":null,"
                 "\"latency_us\":12,\"error_returned\":\"access-denied\"",
                 zero_hash);
    ck_assert(n > 0 && (size_t)n < sizeof(expected));
    sha256_hex(expected, (size_t)n, hash);
    snprintf(expected + n, sizeof(expected) - (size_t)n, ",\"hash\":\"%s\"}", hash);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 1);
    ck_assert(fl.ends_with_newline);
    ck_assert_str_eq(fl.line[0], expected);
    free_lines(&fl);
}
END_TEST

START_TEST(test_format_time) {
    char path[PATH_MAX], text[64];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    struct timespec when = {TEST_EPOCH, 999999999};
    struct timespec bad = {TEST_EPOCH, 1000000000};
    struct timespec epoch = {0, 0};
    file_lines fl;

    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    rec.time = &when;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec.time = &bad;
    ck_assert_int_eq(audit_write(log, &rec), -EINVAL);
    rec.time = &epoch;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec.time = NULL; /* the injected clock */
    ck_assert_int_eq(audit_write(log, &rec), 0);
    audit_close(log);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 3);
    ck_assert_int_eq(tj_get(fl.line[0], "ts", text, sizeof(text)), 's');
    ck_assert_str_eq(text, "2026-11-21T20:30:01.999999Z"); /* truncated, not rounded */
    ck_assert_int_eq(tj_get(fl.line[1], "ts", text, sizeof(text)), 's');
    ck_assert_str_eq(text, "1970-01-01T00:00:00.000000Z");
    ck_assert_int_eq(tj_get(fl.line[2], "ts", text, sizeof(text)), 's');
    ck_assert_str_eq(text, "2026-11-21T20:30:01.123456Z");
    /* The refused record took no seq. */
    ck_assert_uint_eq(tj_get_u64(fl.line[1], "seq"), 2);
    ck_assert_uint_eq(tj_get_u64(fl.line[2], "seq"), 3);
    free_lines(&fl);
}
END_TEST

START_TEST(test_format_nulls_and_peer) {
    char path[PATH_MAX], text[64];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec;
    file_lines fl;
    static const char *const string_keys[] = {
        "tenant", "op",       "family",     "local",  "remote",
        "host",   "decision", "decided_by", "shadow", "error_returned"};

    test_path(path, sizeof(path), "audit.jsonl");
    memset(&rec, 0, sizeof(rec));
    rec.peer_uid = 4294967294u;
    rec.peer_gid = 0;
    rec.peer_pid = -1;
    rec.session = UINT64_MAX;
    rec.latency_us = UINT64_MAX;
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_int_eq(audit_write(log, &rec), 0);
    audit_close(log);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 1);
    for (size_t i = 0; i < ARRAY_SIZE(string_keys); i++) {
        ck_assert_msg(tj_get(fl.line[0], string_keys[i], text, sizeof(text)) == 'n', "%s",
                      string_keys[i]);
    }
    ck_assert_int_eq(tj_get(fl.line[0], "peer", text, sizeof(text)), 'v');
    ck_assert_str_eq(text, "{\"uid\":4294967294,\"gid\":0,\"pid\":-1}");
    ck_assert_uint_eq(tj_get_u64(fl.line[0], "session"), UINT64_MAX);
    ck_assert_uint_eq(tj_get_u64(fl.line[0], "latency_us"), UINT64_MAX);
    free_lines(&fl);
    ck_assert_int_eq(verify_rc(path), 0);
}
END_TEST

START_TEST(test_format_address) {
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr_in6 unix_like;
    char text[64], tiny[8];

    memset(&unix_like, 0, sizeof(unix_like));
    unix_like.sin6_family = AF_UNIX;
    memset(&in4, 0, sizeof(in4));
    in4.sin_family = AF_INET;
    in4.sin_port = htons(80);
    in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(audit_format_address((struct sockaddr *)&in4, sizeof(in4), text, sizeof(text)),
                     0);
    ck_assert_str_eq(text, "127.0.0.1:80");
    ck_assert_int_eq(audit_format_address((struct sockaddr *)&in4, sizeof(in4), tiny, sizeof(tiny)),
                     -ENOSPC);
    ck_assert_int_eq(audit_format_address((struct sockaddr *)&in4, 4, text, sizeof(text)),
                     -EAFNOSUPPORT);

    memset(&in6, 0, sizeof(in6));
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(65535);
    in6.sin6_addr = in6addr_loopback;
    ck_assert_int_eq(audit_format_address((struct sockaddr *)&in6, sizeof(in6), text, sizeof(text)),
                     0);
    ck_assert_str_eq(text, "[::1]:65535");
    ck_assert_int_eq(inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr), 1);
    in6.sin6_scope_id = 2;
    in6.sin6_port = htons(8080);
    ck_assert_int_eq(audit_format_address((struct sockaddr *)&in6, sizeof(in6), text, sizeof(text)),
                     0);
    ck_assert_str_eq(text, "[fe80::1%2]:8080");

    ck_assert_int_eq(
        audit_format_address((struct sockaddr *)&unix_like, sizeof(unix_like), text, sizeof(text)),
        -EAFNOSUPPORT);
}
END_TEST

/* ---- the chain ---- */

#define CHAIN_RECORDS 64

START_TEST(test_chain_links_every_record) {
    char path[PATH_MAX], text[128], hash[AUDIT_HASH_HEX_LEN + 1], head[AUDIT_HASH_HEX_LEN + 1];
    char needle[NEEDLE_MAX];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    uint64_t last_seq = 1;
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_ptr_null(audit_restart_reason(log));
    audit_last_record(log, &last_seq, head);
    ck_assert_uint_eq(last_seq, 0);
    ck_assert_str_eq(head, zero_hash);
    for (unsigned i = 0; i < CHAIN_RECORDS; i++) {
        rec.session = i;
        rec.latency_us = i * 3u;
        ck_assert_int_eq(audit_write(log, &rec), 0);
    }
    audit_last_record(log, &last_seq, head);
    audit_close(log);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, CHAIN_RECORDS);
    for (size_t i = 0; i < fl.count; i++) {
        char *hash_key = strstr(fl.line[i], ",\"hash\":\"");

        assert_printable_ascii(fl.line[i], fl.len[i]);
        ck_assert_uint_lt(fl.len[i], AUDIT_LINE_MAX);
        ck_assert_uint_eq(tj_get_u64(fl.line[i], "seq"), i + 1);
        ck_assert_uint_eq(tj_get_u64(fl.line[i], "session"), i);
        ck_assert_int_eq(tj_get(fl.line[i], "prev_hash", text, sizeof(text)), 's');
        if (i == 0) {
            ck_assert_str_eq(text, zero_hash);
        } else {
            sha256_hex(fl.line[i - 1], fl.len[i - 1], hash);
            ck_assert_str_eq(text, hash);
        }
        /* hash: SHA-256 of the line up to ,"hash": */
        ck_assert_ptr_nonnull(hash_key);
        sha256_hex(fl.line[i], (size_t)(hash_key - fl.line[i]), hash);
        ck_assert_int_eq(tj_get(fl.line[i], "hash", text, sizeof(text)), 's');
        ck_assert_str_eq(text, hash);
    }
    ck_assert_uint_eq(last_seq, CHAIN_RECORDS);
    sha256_hex(fl.line[fl.count - 1], fl.len[fl.count - 1], hash);
    ck_assert_str_eq(head, hash);

    r = run_verify(path);
    ck_assert_int_eq(r.rc, 0);
    snprintf(needle, sizeof(needle),
             "%s: OK: lines %d, records verified %d, chain segments 1, problems 0, "
             "last verified seq %d, chain head %s\n",
             path, CHAIN_RECORDS, CHAIN_RECORDS, CHAIN_RECORDS, head);
    ck_assert_str_eq(r.text, needle);
    free(r.text);
    free_lines(&fl);
}
END_TEST

/* One byte of one line changed; the verifier must name that line. */
typedef struct tamper_case {
    size_t line;            /* 1-based, of TAMPER_RECORDS */
    const char *after;      /* change the byte right after the first occurrence of this */
    unsigned char xor_with; /* 0: replace a hex digit by another one */
    const char *why;        /* expected in the report */
} tamper_case;

#define ALTERED "record's hash does not match its content: the line was altered"

#define TAMPER_RECORDS 10

static const tamper_case tamper_cases[] = {
    {1, "\"ts\":\"", 0x01, ALTERED},                    /* first record, its time */
    {5, "\"host\":\"", 0x20, ALTERED},                  /* middle record, its host name */
    {TAMPER_RECORDS, "\"decision\":\"", 0x01, ALTERED}, /* last record, its decision */
    {5, "\"hash\":\"", 0x00, ALTERED},                  /* inside a record's own hash */
    {7, "\"prev_hash\":\"", 0x00, ALTERED},             /* inside prev_hash */
    {TAMPER_RECORDS, "\"hash\":\"", 0x00, ALTERED},     /* the last record's hash */
    {3, "\"latency_us\":", 0x01, ALTERED},              /* a number: 12 -> 02, invalid JSON too */
    {4, "\"tenant\":\"", 0x80, "line contains a byte that is not printable ASCII"},
    {2, "{", 0x28, "line is not a complete record"}, /* '"' -> newline: splits the line */
};

START_TEST(test_chain_detects_changed_byte) {
    const tamper_case *tc = &tamper_cases[_i];
    char path[PATH_MAX];
    file_lines fl;
    verify_result r;
    char *at;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, test_options(), TAMPER_RECORDS);
    ck_assert_int_eq(verify_rc(path), 0);

    split_lines(&fl, path);
    at = strstr(fl.line[tc->line - 1], tc->after);
    ck_assert_ptr_nonnull(at);
    at += strlen(tc->after);
    if (tc->xor_with == 0) {
        ck_assert_ptr_nonnull(strchr("0123456789abcdef", *at));
        *at = *at == '0' ? '1' : '0';
    } else {
        *at = (char)(*at ^ tc->xor_with);
    }
    rewrite_lines(&fl, path, 0, 0);
    free_lines(&fl);

    r = run_verify(path);
    ck_assert_msg(r.rc == 1, "rc %d, report:\n%s", r.rc, r.text);
    ck_assert_msg(first_problem_line(&r, path) == tc->line, "report:\n%s", r.text);
    ck_assert_msg(strstr(r.text, tc->why) != NULL, "report:\n%s", r.text);
    free(r.text);
}
END_TEST

START_TEST(test_chain_detects_removed_or_moved_line) {
    char path[PATH_MAX], needle[NEEDLE_MAX];
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, test_options(), TAMPER_RECORDS);
    split_lines(&fl, path);

    /* A middle line removed: the line after it no longer links. */
    rewrite_lines(&fl, path, 5, 0);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_uint_eq(first_problem_line(&r, path), 5);
    snprintf(needle, sizeof(needle), "%s:5: prev_hash does not match line 4", path);
    ck_assert_msg(strstr(r.text, needle) != NULL, "report:\n%s", r.text);
    free(r.text);

    /* Two lines swapped. */
    rewrite_lines(&fl, path, 0, 3);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_uint_eq(first_problem_line(&r, path), 3);
    free(r.text);

    /* A line repeated: written back with the fourth line twice. */
    rewrite_lines(&fl, path, 0, 0);
    append_to_file(path, fl.line[3], fl.len[3]);
    append_to_file(path, "\n", 1);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_uint_eq(first_problem_line(&r, path), TAMPER_RECORDS + 1);
    free(r.text);
    free_lines(&fl);
}
END_TEST

/* What the chain cannot show by itself: records cut from either end. The
 * first record then names an earlier file, and the chain head (anchored
 * elsewhere) no longer matches. */
START_TEST(test_chain_ends_need_an_anchor) {
    char path[PATH_MAX], head[AUDIT_HASH_HEX_LEN + 1];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    for (int i = 0; i < TAMPER_RECORDS; i++) {
        ck_assert_int_eq(audit_write(log, &rec), 0);
    }
    audit_last_record(log, NULL, head);
    audit_close(log);
    split_lines(&fl, path);

    rewrite_lines(&fl, path, TAMPER_RECORDS, 0);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_ptr_null(strstr(r.text, head)); /* the anchored head is gone */
    free(r.text);

    rewrite_lines(&fl, path, 1, 0);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_msg(strstr(r.text, ":1: note: the chain continues from an earlier file") != NULL,
                  "report:\n%s", r.text);
    ck_assert_ptr_nonnull(strstr(r.text, head));
    free(r.text);
    free_lines(&fl);
}
END_TEST

/* ---- continuing across restarts ---- */

START_TEST(test_continue_after_reopen) {
    char path[PATH_MAX], text[128], hash[AUDIT_HASH_HEX_LEN + 1];
    audit_options opts = test_options();
    audit_log *log = NULL;
    uint64_t seq = 0;
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, opts, 5);
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_ptr_null(audit_restart_reason(log));
    audit_last_record(log, &seq, NULL);
    ck_assert_uint_eq(seq, 5);
    audit_close(log);
    write_records(path, opts, 5);
    write_records(path, opts, 1);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 11);
    for (size_t i = 0; i < fl.count; i++) {
        ck_assert_uint_eq(tj_get_u64(fl.line[i], "seq"), i + 1);
    }
    sha256_hex(fl.line[4], fl.len[4], hash);
    ck_assert_int_eq(tj_get(fl.line[5], "prev_hash", text, sizeof(text)), 's');
    ck_assert_str_eq(text, hash);
    free_lines(&fl);

    r = run_verify(path);
    ck_assert_msg(r.rc == 0, "report:\n%s", r.text);
    ck_assert_ptr_nonnull(
        strstr(r.text, "lines 11, records verified 11, chain segments 1, problems 0"));
    free(r.text);
}
END_TEST

/* The mode of a created file, and the lock against a second writer. */
START_TEST(test_open_mode_and_lock) {
    char path[PATH_MAX], err[256];
    audit_options opts = test_options();
    audit_log *log = NULL, *second = NULL;
    struct stat st;
    mode_t old_mask = umask(0);

    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, err, sizeof(err)), 0);
    umask(old_mask);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    ck_assert_int_eq(audit_open(path, &opts, &second, err, sizeof(err)), -EBUSY);
    ck_assert_ptr_null(second);
    ck_assert_ptr_nonnull(strstr(err, "in use"));
    audit_close(log);
    ck_assert_int_eq(audit_open(path, &opts, &second, err, sizeof(err)), 0);
    audit_close(second);
    audit_close(NULL);
}
END_TEST

/* ---- hostile strings ---- */

typedef struct escape_case {
    const char *input;
    const char *decoded; /* what a JSON reader gets back */
} escape_case;

#define FFFD "\xef\xbf\xbd"

static const escape_case escape_cases[] = {
    {"quote\"back\\slash/", "quote\"back\\slash/"},
    {"new\nline\rtab\t", "new\nline\rtab\t"},
    {"\",\"decision\":\"allow", "\",\"decision\":\"allow"},
    {"\x1b[31mred\x1b[0m\x07", "\x1b[31mred\x1b[0m\x07"},
    {"del\x7f", "del\x7f"},
    {"bad\xff\xfe", "bad" FFFD FFFD},
    {"cut\xc3", "cut" FFFD},
    {"overlong\xc0\xaf", "overlong" FFFD FFFD},
    {"surrogate\xed\xa0\x80", "surrogate" FFFD FFFD FFFD},
    {"beyond\xf4\x90\x80\x80", "beyond" FFFD FFFD FFFD FFFD},
    {"caf\xc3\xa9", "caf\xc3\xa9"},
    {"\xf0\x9f\x98\x80 emoji", "\xf0\x9f\x98\x80 emoji"},
    {"ls\xe2\x80\xa8 csi\xc2\x9b bidi\xe2\x80\xae", "ls\xe2\x80\xa8 csi\xc2\x9b bidi\xe2\x80\xae"},
    {"", ""},
};

START_TEST(test_escape_hostile_strings) {
    const escape_case *ec = &escape_cases[_i];
    static const char *const keys[] = {
        "tenant", "op",       "family",     "local",  "remote",
        "host",   "decision", "decided_by", "shadow", "error_returned"};
    char path[PATH_MAX], text[1024];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec;
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    rec = sample_record();
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec.tenant = rec.op = rec.family = rec.local = rec.remote = rec.host = ec->input;
    rec.decision = rec.decided_by = rec.shadow = rec.error_returned = ec->input;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec = sample_record();
    ck_assert_int_eq(audit_write(log, &rec), 0);
    audit_close(log);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 3); /* nothing added a line */
    assert_printable_ascii(fl.line[1], fl.len[1]);
    ck_assert(tj_valid_line(fl.line[1]));
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        ck_assert_int_eq(tj_get(fl.line[1], keys[i], text, sizeof(text)), 's');
        ck_assert_msg(strcmp(text, ec->decoded) == 0, "%s: got \"%s\"", keys[i], text);
    }
    ck_assert_int_eq(tj_get(fl.line[1], "decision", text, sizeof(text)), 's');
    ck_assert_int_eq(tj_get(fl.line[2], "decision", text, sizeof(text)), 's');
    ck_assert_str_eq(text, "deny");
    free_lines(&fl);

    r = run_verify(path);
    ck_assert_msg(r.rc == 0, "report:\n%s", r.text);
    free(r.text);
}
END_TEST

/* Over-long strings are cut at a character boundary with the marker, and
 * the line stays within AUDIT_LINE_MAX. */
START_TEST(test_escape_truncates_long_strings) {
    const size_t marker_len = strlen(AUDIT_TRUNCATED_MARKER);
    char path[PATH_MAX], text[2048];
    char *long_ascii = malloc(10001), *long_control = malloc(5001), *long_invalid = malloc(5001);
    char exact[AUDIT_STRING_MAX + 1];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    file_lines fl;
    verify_result r;
    size_t len;

    ck_assert(long_ascii != NULL && long_control != NULL && long_invalid != NULL);
    memset(long_ascii, 'a', 10000);
    long_ascii[10000] = '\0';
    memset(long_control, 0x01, 5000);
    long_control[5000] = '\0';
    memset(long_invalid, 0xff, 5000);
    long_invalid[5000] = '\0';
    memset(exact, 'b', AUDIT_STRING_MAX);
    exact[AUDIT_STRING_MAX] = '\0';

    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    rec.host = long_ascii;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec.host = long_control;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec.host = exact;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    rec.tenant = rec.op = rec.family = rec.local = rec.remote = rec.host = long_invalid;
    rec.decision = rec.decided_by = rec.shadow = rec.error_returned = long_invalid;
    ck_assert_int_eq(audit_write(log, &rec), 0);
    audit_close(log);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 4);
    for (size_t i = 0; i < fl.count; i++) {
        ck_assert_uint_le(fl.len[i] + 1, AUDIT_LINE_MAX);
        assert_printable_ascii(fl.line[i], fl.len[i]);
    }
    /* ASCII: exactly AUDIT_STRING_MAX characters with the marker. */
    ck_assert_int_eq(tj_get(fl.line[0], "host", text, sizeof(text)), 's');
    len = strlen(text);
    ck_assert_uint_eq(len, AUDIT_STRING_MAX);
    ck_assert_str_eq(text + len - marker_len, AUDIT_TRUNCATED_MARKER);
    ck_assert_uint_eq(strspn(text, "a"), AUDIT_STRING_MAX - marker_len);
    /* Control characters: whole \u0001 escapes only, then the marker. */
    ck_assert_int_eq(tj_get(fl.line[1], "host", text, sizeof(text)), 's');
    len = strlen(text);
    ck_assert_str_eq(text + len - marker_len, AUDIT_TRUNCATED_MARKER);
    ck_assert_uint_eq(strspn(text, "\x01"), (AUDIT_STRING_MAX - marker_len) / 6);
    ck_assert_uint_eq(len, (AUDIT_STRING_MAX - marker_len) / 6 + marker_len);
    /* Exactly the cap: kept whole. */
    ck_assert_int_eq(tj_get(fl.line[2], "host", text, sizeof(text)), 's');
    ck_assert_str_eq(text, exact);
    /* Every field at its longest still fits and verifies. */
    ck_assert_int_eq(tj_get(fl.line[3], "error_returned", text, sizeof(text)), 's');
    ck_assert_str_eq(text + strlen(text) - marker_len, AUDIT_TRUNCATED_MARKER);
    free_lines(&fl);

    r = run_verify(path);
    ck_assert_msg(r.rc == 0, "report:\n%s", r.text);
    free(r.text);
    free(long_ascii);
    free(long_control);
    free(long_invalid);
}
END_TEST

/* ---- incomplete lines and restarts ---- */

START_TEST(test_restart_after_incomplete_line) {
    char path[PATH_MAX], text[256], hash[AUDIT_HASH_HEX_LEN + 1], needle[NEEDLE_MAX];
    char reason[256];
    audit_options opts = test_options();
    audit_log *log = NULL;
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, opts, 3);
    split_lines(&fl, path);
    append_to_file(path, fl.line[2], 40); /* a crash in the middle of a write */
    free_lines(&fl);

    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_ptr_nonnull(audit_restart_reason(log));
    snprintf(reason, sizeof(reason), "%s", audit_restart_reason(log));
    ck_assert_str_eq(reason,
                     "the last line of the file is incomplete (40 bytes without a newline)");
    audit_close(log);
    write_records(path, opts, 2);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 7);
    ck_assert_uint_eq(fl.len[3], 40);
    ck_assert_int_eq(tj_get(fl.line[4], "op", text, sizeof(text)), 's');
    ck_assert_str_eq(text, AUDIT_OP_CHAIN_RESTART);
    ck_assert_int_eq(tj_get(fl.line[4], "reason", text, sizeof(text)), 's');
    ck_assert_str_eq(text, reason);
    ck_assert_uint_eq(tj_get_u64(fl.line[4], "seq"), 4);
    ck_assert_int_eq(tj_get(fl.line[4], "prev_hash", text, sizeof(text)), 's');
    ck_assert_str_eq(text, zero_hash);
    ck_assert_uint_eq(tj_get_u64(fl.line[5], "seq"), 5);
    ck_assert_uint_eq(tj_get_u64(fl.line[6], "seq"), 6);
    sha256_hex(fl.line[4], fl.len[4], hash);
    ck_assert_int_eq(tj_get(fl.line[5], "prev_hash", text, sizeof(text)), 's');
    ck_assert_str_eq(text, hash);
    free_lines(&fl);

    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_msg(first_problem_line(&r, path) == 4, "report:\n%s", r.text);
    snprintf(needle, sizeof(needle), "%s:5: note: a new chain segment starts at seq 4: ", path);
    ck_assert_msg(strstr(r.text, needle) != NULL, "report:\n%s", r.text);
    ck_assert_msg(
        strstr(r.text,
               "lines 7, records verified 6, chain segments 2, problems 1, last verified seq 6") !=
            NULL,
        "report:\n%s", r.text);
    free(r.text);
}
END_TEST

START_TEST(test_restart_after_altered_last_record) {
    char path[PATH_MAX];
    audit_options opts = test_options();
    audit_log *log = NULL;
    file_lines fl;
    verify_result r;
    char *at;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, opts, 4);
    split_lines(&fl, path);
    at = strstr(fl.line[3], "\"deny\"");
    ck_assert_ptr_nonnull(at);
    memcpy(at, "\"DENY\"", 6);
    rewrite_lines(&fl, path, 0, 0);
    free_lines(&fl);

    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_ptr_nonnull(audit_restart_reason(log));
    ck_assert_str_eq(audit_restart_reason(log),
                     "the last record does not verify: record's hash does not match its "
                     "content: the line was altered");
    audit_close(log);
    write_records(path, opts, 1);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 6);
    ck_assert_uint_eq(tj_get_u64(fl.line[4], "seq"), 5); /* the altered line's seq + 1 */
    ck_assert_uint_eq(tj_get_u64(fl.line[5], "seq"), 6);
    free_lines(&fl);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_uint_eq(first_problem_line(&r, path), 4);
    ck_assert_ptr_nonnull(strstr(r.text, ":5: note: a new chain segment"));
    free(r.text);
}
END_TEST

/* A write the kernel cuts short (here: RLIMIT_FSIZE) leaves a fragment; the
 * next write ends it and starts a new segment. */
START_TEST(test_restart_after_short_write) {
    char path[PATH_MAX], text[256];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    struct rlimit old_limit, small;
    struct stat st;
    file_lines fl;
    verify_result r;

    signal(SIGXFSZ, SIG_IGN);
    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_int_eq(audit_write(log, &rec), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    small = old_limit;
    small.rlim_cur = (rlim_t)st.st_size + 100;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    ck_assert_int_eq(audit_write(log, &rec), -EIO);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
    ck_assert_int_eq(audit_write(log, &rec), 0);
    audit_close(log);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 4);
    ck_assert_uint_eq(fl.len[1], 100);
    ck_assert_int_eq(tj_get(fl.line[2], "reason", text, sizeof(text)), 's');
    ck_assert_str_eq(text, "the write of record 2 was cut short");
    ck_assert_uint_eq(tj_get_u64(fl.line[2], "seq"), 3);
    ck_assert_uint_eq(tj_get_u64(fl.line[3], "seq"), 4);
    free_lines(&fl);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_uint_eq(first_problem_line(&r, path), 2);
    ck_assert_ptr_nonnull(strstr(
        r.text, "lines 4, records verified 3, chain segments 2, problems 1, last verified seq 4"));
    free(r.text);
}
END_TEST

/* The file ends without a newline: reported, nothing crashes. */
START_TEST(test_verify_incomplete_last_line) {
    char path[PATH_MAX], needle[NEEDLE_MAX];
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, test_options(), 3);
    split_lines(&fl, path);
    rewrite_lines(&fl, path, 0, 0);
    append_to_file(path, fl.line[0], 17);
    free_lines(&fl);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    snprintf(needle, sizeof(needle),
             "%s:4: the file does not end with a newline: the last write was cut short\n", path);
    ck_assert_msg(strncmp(r.text, needle, strlen(needle)) == 0, "report:\n%s", r.text);
    free(r.text);
}
END_TEST

/* Lines no writer produces: the verifier reports and goes on. */
START_TEST(test_verify_hostile_file) {
    char path[PATH_MAX];
    char *big = malloc(3 * AUDIT_LINE_MAX);
    verify_result r;
    static const char garbage[] =
        "\n"
        "not json at all\n"
        "{\"ts\":\"2026-11-21T20:30:01.123456Z\",\"seq\":99999999999999999999,\"prev_hash\":null}\n"
        "{\"ts\":\"2026-11-21T20:30:01.123456Z\",\"seq\":1,\"prev_hash\":null,\"tenant\":"
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[,\"hash\":null}\n"
        "{\"ts\":\"2026-11-21T20:30:01.123456Z\",\"seq\":1,\"prev_hash\":\"00\",\"hash\":\"\"}\n"
        "\0\0\0\n";

    ck_assert_ptr_nonnull(big);
    test_path(path, sizeof(path), "garbage.jsonl");
    write_whole_file(path, garbage, sizeof(garbage) - 1);
    memset(big, 'x', 3 * AUDIT_LINE_MAX);
    big[3 * AUDIT_LINE_MAX - 1] = '\n';
    append_to_file(path, big, 3 * AUDIT_LINE_MAX);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_uint_eq(first_problem_line(&r, path), 1);
    ck_assert_msg(strstr(r.text, ":7: line is longer than a record can be") != NULL, "report:\n%s",
                  r.text);
    ck_assert_ptr_nonnull(strstr(
        r.text, "lines 7, records verified 0, chain segments 0, problems 7, last verified seq 0, "
                "chain head " AUDIT_ZERO_HEAD));
    free(r.text);

    /* The writer refuses to continue it but opens it. */
    {
        audit_options opts = test_options();
        audit_log *log = NULL;

        ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
        ck_assert_ptr_nonnull(audit_restart_reason(log));
        audit_close(log);
    }
    free(big);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_errors) {
    char path[PATH_MAX], err[512];
    audit_options opts = test_options();
    audit_log *log = NULL;

    test_path(path, sizeof(path), "missing/audit.jsonl");
    ck_assert_int_eq(audit_verify_file(path, NULL), -ENOENT);
    ck_assert_int_eq(audit_open(path, &opts, &log, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(log);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_int_eq(audit_verify_file(test_dir, NULL), -EISDIR);
    ck_assert_int_eq(audit_open(test_dir, &opts, &log, err, sizeof(err)), -EISDIR);
    ck_assert_int_eq(audit_open("/dev/null", &opts, &log, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "regular file"));
    ck_assert_int_eq(audit_open(NULL, &opts, &log, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(audit_write(NULL, NULL), -EINVAL);

    test_path(path, sizeof(path), "audit.jsonl");
    write_records(path, opts, 1);
    if (geteuid() != 0) { /* root reads anything */
        ck_assert_int_eq(chmod(path, 0), 0);
        ck_assert_int_eq(audit_verify_file(path, NULL), -EACCES);
        ck_assert_int_eq(audit_open(path, &opts, &log, err, sizeof(err)), -EACCES);
    }
    ck_assert_int_eq(audit_verify_file(NULL, NULL), -EINVAL);
}
END_TEST

/* ---- sinks and options ---- */

static size_t read_pipe(int fd, char *buf, size_t cap) {
    size_t got = 0;

    for (int i = 0; i < 64 && got + 1 < cap; i++) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);

        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

START_TEST(test_journal_and_both) {
    char path[PATH_MAX], journal[8 * AUDIT_LINE_MAX], text[128], hash[AUDIT_HASH_HEX_LEN + 1];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    int fds[2];
    char *p;
    file_lines fl;
    FILE *extract;

    /* Two daemon starts on the journal sink, two records each. */
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    opts.sink = AUDIT_SINK_JOURNAL;
    opts.journal_fd = fds[1];
    for (int start = 0; start < 2; start++) {
        ck_assert_int_eq(audit_open(NULL, &opts, &log, NULL, 0), 0);
        ck_assert_ptr_null(audit_restart_reason(log));
        ck_assert_int_eq(audit_write(log, &rec), 0);
        ck_assert_int_eq(audit_write(log, &rec), 0);
        audit_close(log);
    }
    close(fds[1]);
    read_pipe(fds[0], journal, sizeof(journal));
    close(fds[0]);

    /* Every line is "audit: " + a record; without the prefix, the lines
     * form a file that verifies, one chain segment per start. */
    test_path(path, sizeof(path), "journal.jsonl");
    extract = fopen(path, "wb");
    ck_assert_ptr_nonnull(extract);
    p = journal;
    for (int i = 0; i < 6; i++) {
        char *nl = strchr(p, '\n');

        ck_assert_ptr_nonnull(nl);
        ck_assert_int_eq(strncmp(p, "audit: {", 8), 0);
        fwrite(p + 7, 1, (size_t)(nl + 1 - (p + 7)), extract);
        p = nl + 1;
    }
    ck_assert_str_eq(p, "");
    ck_assert_int_eq(fclose(extract), 0);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 6);
    for (size_t i = 0; i < 6; i += 3) {
        ck_assert_int_eq(tj_get(fl.line[i], "op", text, sizeof(text)), 's');
        ck_assert_str_eq(text, AUDIT_OP_CHAIN_RESTART);
        ck_assert_uint_eq(tj_get_u64(fl.line[i], "seq"), 1);
        ck_assert_uint_eq(tj_get_u64(fl.line[i + 2], "seq"), 3);
    }
    sha256_hex(fl.line[1], fl.len[1], hash);
    ck_assert_int_eq(tj_get(fl.line[2], "prev_hash", text, sizeof(text)), 's');
    ck_assert_str_eq(text, hash);
    free_lines(&fl);
    {
        verify_result r = run_verify(path);

        ck_assert_msg(r.rc == 0, "report:\n%s", r.text);
        ck_assert_ptr_nonnull(strstr(r.text, "records verified 6, chain segments 2, problems 0"));
        free(r.text);
    }

    /* Both: the same line in the file and on the journal. */
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    opts = test_options();
    opts.sink = AUDIT_SINK_BOTH;
    opts.journal_fd = fds[1];
    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_int_eq(audit_write(log, &rec), 0);
    audit_close(log);
    close(fds[1]);
    read_pipe(fds[0], journal, sizeof(journal));
    close(fds[0]);
    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 1);
    ck_assert_int_eq(strncmp(journal, "audit: ", 7), 0);
    ck_assert_uint_eq(strlen(journal), 7 + fl.len[0] + 1);
    ck_assert_int_eq(memcmp(journal + 7, fl.line[0], fl.len[0]), 0);
    free_lines(&fl);
}
END_TEST

/* With the both sink, a broken journal does not stop the file's chain. */
START_TEST(test_both_with_broken_journal) {
    char path[PATH_MAX];
    audit_options opts = test_options();
    audit_log *log = NULL;
    audit_record rec = sample_record();
    uint64_t seq = 0;
    int fds[2];
    file_lines fl;

    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    close(fds[0]); /* every journal write now fails with EPIPE */
    opts.sink = AUDIT_SINK_BOTH;
    opts.journal_fd = fds[1];
    test_path(path, sizeof(path), "audit.jsonl");
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_int_eq(audit_write(log, &rec), -EPIPE);
    ck_assert_int_eq(audit_write(log, &rec), -EPIPE);
    audit_last_record(log, &seq, NULL);
    ck_assert_uint_eq(seq, 2);
    audit_close(log);
    close(fds[1]);

    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 2);
    free_lines(&fl);
    ck_assert_int_eq(verify_rc(path), 0);

    /* The journal alone: a failed write does not advance the chain. */
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    close(fds[0]);
    opts = test_options();
    opts.sink = AUDIT_SINK_JOURNAL;
    opts.journal_fd = fds[1];
    ck_assert_int_eq(audit_open(NULL, &opts, &log, NULL, 0), 0);
    ck_assert_int_eq(audit_write(log, &rec), -EPIPE);
    audit_last_record(log, &seq, NULL);
    ck_assert_uint_eq(seq, 0);
    audit_close(log);
    close(fds[1]);
}
END_TEST

START_TEST(test_no_chain_and_redaction) {
    char path[PATH_MAX], text[128];
    audit_options opts = test_options();
    audit_log *log = NULL;
    file_lines fl;
    verify_result r;

    test_path(path, sizeof(path), "audit.jsonl");
    opts.hash_chain = false;
    opts.redact_hostnames = true;
    write_records(path, opts, 2);
    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 2);
    ck_assert_int_eq(tj_get(fl.line[1], "prev_hash", text, sizeof(text)), 'n');
    ck_assert_int_eq(tj_get(fl.line[1], "hash", text, sizeof(text)), 'n');
    ck_assert_int_eq(tj_get(fl.line[1], "host", text, sizeof(text)), 'n');
    ck_assert_int_eq(tj_get(fl.line[1], "remote", text, sizeof(text)), 's');
    ck_assert_uint_eq(tj_get_u64(fl.line[1], "seq"), 2);
    free_lines(&fl);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_ptr_nonnull(strstr(r.text, ":1: record is not hash-chained"));
    free(r.text);

    /* Turning the chain on later: a marked restart, then a verified chain. */
    opts.hash_chain = true;
    ck_assert_int_eq(audit_open(path, &opts, &log, NULL, 0), 0);
    ck_assert_str_eq(audit_restart_reason(log), "the last record is not hash-chained");
    audit_close(log);
    write_records(path, opts, 2);
    split_lines(&fl, path);
    ck_assert_uint_eq(fl.count, 5);
    ck_assert_uint_eq(tj_get_u64(fl.line[2], "seq"), 3);
    ck_assert_uint_eq(tj_get_u64(fl.line[4], "seq"), 5);
    free_lines(&fl);
    r = run_verify(path);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_ptr_nonnull(strstr(
        r.text, "lines 5, records verified 3, chain segments 1, problems 2, last verified seq 5"));
    free(r.text);
}
END_TEST

static Suite *audit_suite(void) {
    Suite *s = suite_create("audit");
    TCase *tc;

    tc = tcase_create("format");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_test(tc, test_format_exact_line);
    tcase_add_test(tc, test_format_time);
    tcase_add_test(tc, test_format_nulls_and_peer);
    tcase_add_test(tc, test_format_address);
    suite_add_tcase(s, tc);

    tc = tcase_create("chain");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_test(tc, test_chain_links_every_record);
    tcase_add_loop_test(tc, test_chain_detects_changed_byte, 0, (int)ARRAY_SIZE(tamper_cases));
    tcase_add_test(tc, test_chain_detects_removed_or_moved_line);
    tcase_add_test(tc, test_chain_ends_need_an_anchor);
    suite_add_tcase(s, tc);

    tc = tcase_create("continue");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_test(tc, test_continue_after_reopen);
    tcase_add_test(tc, test_open_mode_and_lock);
    suite_add_tcase(s, tc);

    tc = tcase_create("escape");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_loop_test(tc, test_escape_hostile_strings, 0, (int)ARRAY_SIZE(escape_cases));
    tcase_add_test(tc, test_escape_truncates_long_strings);
    suite_add_tcase(s, tc);

    tc = tcase_create("restart");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_test(tc, test_restart_after_incomplete_line);
    tcase_add_test(tc, test_restart_after_altered_last_record);
    tcase_add_test(tc, test_restart_after_short_write);
    tcase_add_test(tc, test_verify_incomplete_last_line);
    tcase_add_test(tc, test_verify_hostile_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("sinks");
    tcase_add_checked_fixture(tc, make_test_dir, remove_test_dir);
    tcase_add_test(tc, test_journal_and_both);
    tcase_add_test(tc, test_both_with_broken_journal);
    tcase_add_test(tc, test_no_chain_and_redaction);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(audit_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
