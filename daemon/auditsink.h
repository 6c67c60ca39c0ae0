/* auditsink.h — where the daemon's audit records go, as the policy's
 * `audit` settings say: the file (relative to the logs directory), the
 * journal (stderr), or both. Opened at start-up and reopened by a reload
 * that changes the settings.
 *
 * The audit file is locked by its writer (audit.h), so a reload that keeps
 * the file but changes another setting closes the old log before it opens
 * the new one, and reopens the old settings if the new ones fail: a reload
 * never leaves the daemon without the audit log it had.
 */
#ifndef WASOCKD_AUDITSINK_H
#define WASOCKD_AUDITSINK_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "audit.h"
#include "policy.h"

/* Longest audit file path: the logs directory plus the policy's relative
 * file name. */
#define AUDITSINK_PATH_MAX PATH_MAX

/* The settings that decide how the log is opened. */
typedef struct auditsink_config {
    audit_sink sink;
    char path[AUDITSINK_PATH_MAX]; /* "" for the journal sink */
    bool hash_chain;
    bool redact_hostnames;
} auditsink_config;

typedef struct auditsink {
    audit_log *log; /* NULL: not open */
    auditsink_config config;
} auditsink;

/* The configuration `settings` ask for, file names resolved against
 * logs_dir. journal_only forces the journal sink (the built-in default
 * policy, for which the operator configured nothing). Returns 0 or
 * -ENAMETOOLONG with a message in err. */
int auditsink_config_from_settings(const policy_settings *settings, const char *logs_dir,
                                   bool journal_only, auditsink_config *out, char *err,
                                   size_t errlen);

/* Makes the sink write as `config` says. Unchanged settings keep the open
 * log. On failure the sink keeps (or gets back) its previous log and a
 * one-line reason is in err. Returns 0 or a negative errno. */
int auditsink_apply(auditsink *sink, const auditsink_config *config, char *err, size_t errlen);

/* Closes the log. */
void auditsink_close(auditsink *sink);

/* "file", "journal" or "both". */
const char *auditsink_name(audit_sink sink);

#endif
