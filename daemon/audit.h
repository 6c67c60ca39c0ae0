/* audit.h — wasockd's audit log: one hash-chained JSON line per decision.
 *
 * The module has no libuv and no sockets: the daemon calls it from its loop
 * (each audit_write is one blocking write(2) to a local file), and the unit
 * tests drive it directly. It is not thread-safe; one audit_log belongs to
 * one thread.
 *
 * Record format (one line, printable ASCII only, at most AUDIT_LINE_MAX
 * bytes including the newline; keys always in this order):
 *
 *   {"ts":"2026-11-21T20:30:01.123456Z","seq":42,"prev_hash":"<64 hex>",
 *    "tenant":"shop","session":7,"peer":{"uid":2001,"gid":2001,"pid":4242},
 *    "op":"tcp.connect","family":"ipv4","local":null,
 *    "remote":"192.0.2.10:443","host":"api.example.com","decision":"deny",
 *    "decided_by":"guard:no-internal","shadow":null,"latency_us":12,
 *    "error_returned":"access-denied","hash":"<64 hex>"}
 *
 * (wrapped here; in the file it is one line without spaces.)
 *
 * - ts: UTC, RFC 3339 with microseconds (truncated, not rounded).
 * - seq: +1 per record, continued across restarts of the daemon.
 * - tenant, op, family, local, remote, host, decision, decided_by, shadow,
 *   error_returned: JSON strings or null. Every string the caller passes is
 *   untrusted text (a guest chooses host names): it is encoded so the output
 *   is printable ASCII: `"` and `\` are escaped, control characters and DEL
 *   become \u00XX, every non-ASCII code point becomes \uXXXX (a surrogate
 *   pair above U+FFFF), and each byte that is not part of well-formed UTF-8
 *   becomes \ufffd. A string whose encoding exceeds AUDIT_STRING_MAX
 *   characters is cut at a character boundary and ends in
 *   AUDIT_TRUNCATED_MARKER. Nothing a caller passes can add a line, a key,
 *   or a terminal escape.
 * - session, latency_us: unsigned 64-bit integers; peer uid/gid unsigned,
 *   pid signed (0 when unknown).
 * - prev_hash: lowercase hex SHA-256 of the previous record's whole line
 *   without its newline; 64 zeros for the first record of a chain.
 * - hash: lowercase hex SHA-256 of this line from its first byte up to, not
 *   including, the final `,"hash":` — so every byte of the record, including
 *   prev_hash, is covered, and the next record's prev_hash covers this hash.
 * - With `hash_chain: none` both prev_hash and hash are null.
 *
 * Chain restart record (written when an existing file cannot be continued,
 * e.g. its last line was cut short by a crash, or a write was cut short):
 *
 *   {"ts":"...","seq":43,"prev_hash":"<64 zeros>","op":"audit.chain_restart",
 *    "reason":"the last line of the file is incomplete (37 bytes without a
 *    newline)","hash":"<64 hex>"}
 *
 * It starts a new chain segment and says why; when the line before it was
 * incomplete, the restart record is preceded by a newline so that fragment
 * stays a line of its own.
 */
#ifndef WASOCKD_AUDIT_H
#define WASOCKD_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

/* Longest record line, newline included. 4 KiB keeps every record one
 * write(2) far below any buffer limit and lets readers use a fixed line
 * buffer; the per-string cap below guarantees a record always fits. */
#define AUDIT_LINE_MAX 4096

/* Longest encoded string value (between its quotes). A DNS name is at most
 * 253 characters, addresses are shorter; ten string fields of this size
 * plus the fixed keys stay below AUDIT_LINE_MAX (checked at compile time). */
#define AUDIT_STRING_MAX 320

/* Appended to a string cut at AUDIT_STRING_MAX. A guest can write this text
 * itself; all it can claim is that its own string was longer. */
#define AUDIT_TRUNCATED_MARKER "...[truncated]"

/* Length of a SHA-256 in lowercase hex, without a terminating NUL. */
#define AUDIT_HASH_HEX_LEN 64

/* The `op` of a chain restart record. */
#define AUDIT_OP_CHAIN_RESTART "audit.chain_restart"

/* Where records go (policy `audit.sink`). */
typedef enum audit_sink {
    AUDIT_SINK_FILE = 0, /* the file only */
    AUDIT_SINK_JOURNAL,  /* journal_fd only, each line prefixed "audit: " */
    AUDIT_SINK_BOTH      /* the file and journal_fd */
} audit_sink;

/* Reads the current time; returns 0 or a negative errno. */
typedef int (*audit_clock_fn)(struct timespec *now, void *data);

typedef struct audit_options {
    audit_sink sink;
    bool hash_chain;       /* policy `hash_chain: sha256`; false writes null hashes */
    bool redact_hostnames; /* policy `redact_hostnames`: host is always null */
    int journal_fd;        /* borrowed; the journal sink, normally STDERR_FILENO */
    audit_clock_fn clock;  /* NULL: clock_gettime(CLOCK_REALTIME) */
    void *clock_data;      /* passed to clock */
} audit_options;

/* Fills *opts with the defaults: file sink, SHA-256 chain, no redaction,
 * journal on stderr, the real-time clock. Start from these and change what
 * the policy says. */
void audit_options_init(audit_options *opts);

/* One decision. Every string may be NULL (written as null) and is copied
 * into the line, never kept. */
typedef struct audit_record {
    const struct timespec *time; /* NULL: read the log's clock */
    const char *tenant;
    uint64_t session;
    uid_t peer_uid;
    gid_t peer_gid;
    pid_t peer_pid;
    const char *op;             /* "tcp.connect", "lookup", ... */
    const char *family;         /* "ipv4", "ipv6" or NULL */
    const char *local;          /* "127.0.0.1:80", "[::1]:80" or NULL */
    const char *remote;         /* same form, or NULL */
    const char *host;           /* the name bound to remote, or NULL */
    const char *decision;       /* "allow", "deny", "prompt-allow", ... */
    const char *decided_by;     /* "guard:<id>", "rule:<id>", "default", ... */
    const char *shadow;         /* what a shadow rule would have done, or NULL */
    uint64_t latency_us;        /* from request to decision */
    const char *error_returned; /* WASI error name, or NULL */
} audit_record;

typedef struct audit_log audit_log;

/* Opens the log with `opts` (NULL: the defaults of audit_options_init;
 * copied, not kept). For the file and both sinks, `path` is opened with
 * O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, mode 0640, and locked with
 * flock(LOCK_EX|LOCK_NB) so two writers never interleave one chain (close
 * the old log before reopening the same path). An existing file is
 * continued: its last line gives the next seq and prev_hash. If that line is
 * incomplete, too long, not a record, or does not verify, a chain restart
 * record naming the reason is written at once (see audit_restart_reason).
 * For the journal sink, `path` is ignored and may be NULL; the chain starts
 * anew with a chain restart record at seq 1 (audit_restart_reason stays
 * NULL: nothing is wrong). Returns 0 and *out (free with audit_close), or a negative
 * errno with a one-line message in err (if errlen > 0): -EBUSY when another
 * open file description holds the lock, -EINVAL for a path that is not a
 * regular file or invalid options. */
int audit_open(const char *path, const audit_options *opts, audit_log **out, char *err,
               size_t errlen);

/* Formats `rec` as one line and writes it with one write(2) call per sink
 * (O_APPEND makes each line atomic with respect to other appenders). The
 * chain advances only when the line reached the file (or, for the journal
 * sink, the journal). A short write to the file returns -EIO and makes the
 * next audit_write terminate the fragment and write a chain restart record
 * first. Returns 0 or a negative errno: -EINVAL for a NULL argument or a
 * time that cannot be formatted, the errno of write(2) otherwise. With the
 * both sink, an error of the journal copy is returned although the record
 * reached the file and the chain advanced. */
int audit_write(audit_log *log, const audit_record *rec);

/* Closes the file and frees the log. Accepts NULL. journal_fd stays open. */
void audit_close(audit_log *log);

/* NULL when audit_open continued the chain or started a new file; else the
 * reason of the chain restart record it wrote. Valid until audit_close. */
const char *audit_restart_reason(const audit_log *log);

/* The seq of the last record in the chain (0 before the first) and the
 * chain head: the hex SHA-256 of that record's whole line, which the next
 * record carries as prev_hash and audit_verify_file prints as "chain head"
 * (64 zeros when there is none). After audit_open these describe the file's
 * last record (or the restart record). Copy the head elsewhere (another
 * host, a ticket) to anchor the chain. head_hex needs AUDIT_HASH_HEX_LEN + 1
 * bytes; either pointer may be NULL. */
void audit_last_record(const audit_log *log, uint64_t *seq, char *head_hex);

/* Writes an IP socket address as the record's local/remote text into buf:
 * "127.0.0.1:80", "[::1]:80", "[fe80::1%2]:80" (numeric scope id). Returns
 * 0, -EAFNOSUPPORT for other families or a short `len`, or -ENOSPC if buf
 * is too small (64 bytes always suffice). */
int audit_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

/* Checks a whole audit file: every line must be a well-formed record whose
 * hash matches, whose prev_hash is the hash of the line before, and whose
 * seq is one more than the line before's; a new chain may start only on the
 * first line or with a chain restart record. Problems are written to
 * `report` (may be NULL) as "path:LINE: reason", at most
 * AUDIT_VERIFY_MAX_REPORTS of them; notes (a chain restart, a first record
 * that continues an earlier file) as "path:LINE: note: text"; and last one
 * summary line "path: OK|FAILED: ..." with the counts, the last seq and
 * the chain head (see audit_last_record).
 * Returns 0 when every line verifies, 1 otherwise, or a negative errno when
 * the file cannot be read. The file is only read; it is not trusted. */
int audit_verify_file(const char *path, FILE *report);

/* Problem lines audit_verify_file writes before it only counts the rest. */
#define AUDIT_VERIFY_MAX_REPORTS 100

#endif
