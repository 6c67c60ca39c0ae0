/* auditsink.c — opening and reopening the audit log as the policy's audit
 * settings say (see auditsink.h).
 *
 * Input: the operator's policy settings (the loader already refused
 * absolute file names and `..`) and logs directory.
 */
#include "auditsink.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

const char *auditsink_name(audit_sink sink) {
    switch (sink) {
    case AUDIT_SINK_FILE:
        return "file";
    case AUDIT_SINK_JOURNAL:
        return "journal";
    case AUDIT_SINK_BOTH:
        return "both";
    }
    return "?";
}

int auditsink_config_from_settings(const policy_settings *settings, const char *logs_dir,
                                   bool journal_only, auditsink_config *out, char *err,
                                   size_t errlen) {
    int n;

    memset(out, 0, sizeof(*out));
    out->hash_chain = settings->audit.hash_chain;
    out->redact_hostnames = settings->audit.redact_hostnames;
    switch (settings->audit.sink) {
    case POLICY_AUDIT_JOURNAL:
        out->sink = AUDIT_SINK_JOURNAL;
        break;
    case POLICY_AUDIT_BOTH:
        out->sink = AUDIT_SINK_BOTH;
        break;
    case POLICY_AUDIT_FILE:
    default:
        out->sink = AUDIT_SINK_FILE;
        break;
    }
    if (journal_only) {
        out->sink = AUDIT_SINK_JOURNAL;
    }
    if (out->sink == AUDIT_SINK_JOURNAL) {
        return 0;
    }
    n = snprintf(out->path, sizeof(out->path), "%s/%s", logs_dir,
                 settings->audit.file != NULL ? settings->audit.file : "audit.jsonl");
    if (n < 0 || (size_t)n >= sizeof(out->path)) {
        snprintf(err, errlen, "the audit file path under %s is too long", logs_dir);
        return -ENAMETOOLONG;
    }
    return 0;
}

static bool config_equal(const auditsink_config *a, const auditsink_config *b) {
    return a->sink == b->sink && strcmp(a->path, b->path) == 0 && a->hash_chain == b->hash_chain &&
           a->redact_hostnames == b->redact_hostnames;
}

static int open_config(const auditsink_config *config, audit_log **out, char *err, size_t errlen) {
    audit_options opts;
    char why[256] = "";
    int r;

    audit_options_init(&opts);
    opts.sink = config->sink;
    opts.hash_chain = config->hash_chain;
    opts.redact_hostnames = config->redact_hostnames;
    opts.journal_fd = STDERR_FILENO;
    r = audit_open(config->sink == AUDIT_SINK_JOURNAL ? NULL : config->path, &opts, out, why,
                   sizeof(why));
    if (r < 0) {
        /* audit_open's message names the file and the reason already. */
        if (why[0] != '\0') {
            snprintf(err, errlen, "%s", why);
        } else {
            snprintf(err, errlen, "%s: cannot open the audit log: %s",
                     config->sink == AUDIT_SINK_JOURNAL ? "(journal)" : config->path,
                     strerror(-r));
        }
        return r;
    }
    if (audit_restart_reason(*out) != NULL) {
        log_warn("audit log %s: started a new hash chain: %s", config->path,
                 audit_restart_reason(*out));
    }
    return 0;
}

int auditsink_apply(auditsink *sink, const auditsink_config *config, char *err, size_t errlen) {
    audit_log *fresh = NULL;
    bool same_file;
    int r;

    if (sink->log != NULL && config_equal(&sink->config, config)) {
        return 0;
    }
    /* The file is locked by the open log: reopening the same path needs
     * the old log closed first. */
    same_file = sink->log != NULL && sink->config.sink != AUDIT_SINK_JOURNAL &&
                config->sink != AUDIT_SINK_JOURNAL && strcmp(sink->config.path, config->path) == 0;
    if (same_file) {
        audit_close(sink->log);
        sink->log = NULL;
    }
    r = open_config(config, &fresh, err, errlen);
    if (r < 0) {
        if (same_file) {
            char again[256];
            if (open_config(&sink->config, &sink->log, again, sizeof(again)) < 0) {
                log_error("%s; the audit log is now closed", again);
            }
        }
        return r;
    }
    audit_close(sink->log);
    sink->log = fresh;
    sink->config = *config;
    return 0;
}

void auditsink_close(auditsink *sink) {
    audit_close(sink->log);
    sink->log = NULL;
}
