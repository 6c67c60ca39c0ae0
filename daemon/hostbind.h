/* hostbind.h — name bindings: which addresses a daemon lookup returned to a
 * tenant for which name, and until when.
 *
 * A binding is what lets a `host` rule of the policy match a connect or a
 * datagram to a raw address: the address must have been returned for a name
 * matching the pattern, within the lifetime of the answer. Pure data
 * structure (no libuv, no system calls; the caller passes the time), unit
 * tested in tests/unit/check-hostbind.c. One table per tenant; the scope of
 * an entry is the session that looked the name up, so a table serves both
 * dns.pin_scope settings.
 */
#ifndef WASOCKD_HOSTBIND_H
#define WASOCKD_HOSTBIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Longest name kept: a DNS name in its ASCII form without the final dot. */
#define HOSTBIND_NAME_MAX 253

/* Longest "what decided" kept with a binding: the lookup's
 * policy_verdict.decided_by ("rule:<id>", "answer:<id>", "default", ...). */
#define HOSTBIND_RULE_MAX 159

typedef struct hostbind_table hostbind_table;
typedef struct hostbind_entry hostbind_entry;

/* A new empty table, or NULL when out of memory. Free with
 * hostbind_table_free. */
hostbind_table *hostbind_table_new(void);

/* Frees the table and every entry not pinned; pinned entries stay valid
 * until their last hostbind_unpin, which frees them. NULL is allowed. */
void hostbind_table_free(hostbind_table *t);

/* Remembers that `name` resolved to addr's IP (port, flow and scope id are
 * ignored) for `scope` (the session; never 0) until expires_ms, decided by
 * rule `rule_id` (may be NULL). The same (name, address, scope) again
 * refreshes the entry: the later expiry wins, and it becomes the newest.
 * When the table already holds max_entries, expired unpinned entries are
 * freed first, then the oldest unpinned entry. Returns 0, -ENOSPC (every
 * entry is pinned), -EINVAL (empty or over-long name, scope 0, a family
 * that is neither IPv4 nor IPv6) or -ENOMEM. Copies every string. */
int hostbind_add(hostbind_table *t, const char *name, const proto_addr *addr, uint64_t scope,
                 uint64_t expires_ms, const char *rule_id, uint64_t now_ms, size_t max_entries);

/* Fills out[0, max) with the live entries for addr's IP, the latest expiry
 * first, and returns how many there are (at most max; the entries expiring
 * soonest are left out). Live: not expired at now_ms, or
 * pinned when keep_pinned. scope 0 finds entries of every scope, another
 * value only that scope's. The entries are borrowed: valid until the next
 * hostbind_add, hostbind_expire or hostbind_table_free, unless pinned. */
size_t hostbind_find(hostbind_table *t, const proto_addr *addr, uint64_t scope, uint64_t now_ms,
                     bool keep_pinned, hostbind_entry **out, size_t max);

/* Frees every expired entry that is not pinned; returns how many. */
size_t hostbind_expire(hostbind_table *t, uint64_t now_ms);

/* Entries in the table (live or not yet purged). */
size_t hostbind_count(const hostbind_table *t);

const char *hostbind_entry_name(const hostbind_entry *e);
/* The deciding rule's id, "" when none was given. */
const char *hostbind_entry_rule(const hostbind_entry *e);
uint64_t hostbind_entry_expires(const hostbind_entry *e);

/* A pinned entry is never evicted and, for finders that ask for it, stays
 * live after its expiry: a socket using the binding pins it for as long as
 * it is open (dns.keep_while_open). Pins nest. */
void hostbind_pin(hostbind_entry *e);
/* Drops one pin. An entry whose table is gone is freed with its last pin. */
void hostbind_unpin(hostbind_entry *e);

#endif
