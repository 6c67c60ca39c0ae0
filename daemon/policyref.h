/* policyref.h — a reference-counted compiled policy.
 *
 * A reload replaces the daemon's policy at once, but a prompt that is still
 * pending was asked under the old one: its prompt settings (timeout,
 * remember choices, agents, note) live inside that policy. Each such user
 * holds a reference, so the old policy is freed only when the last of them
 * is done. Single-threaded (the daemon's loop).
 */
#ifndef WASOCKD_POLICYREF_H
#define WASOCKD_POLICYREF_H

#include "policy.h"

typedef struct policy_ref policy_ref;

/* Wraps p with one reference. Takes ownership of p on success and on
 * failure (p freed). Returns NULL only when out of memory. */
policy_ref *policy_ref_new(policy *p);

/* Takes one more reference; returns r. */
policy_ref *policy_ref_get(policy_ref *r);

/* Drops one reference; the last one frees the policy. NULL allowed. */
void policy_ref_put(policy_ref *r);

/* The policy, borrowed for as long as the caller holds its reference. */
const policy *policy_ref_policy(const policy_ref *r);

#endif
