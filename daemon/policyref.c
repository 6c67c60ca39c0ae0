/* policyref.c — reference counting of compiled policies (see policyref.h).
 *
 * Input: policies the daemon loaded itself; nothing here is untrusted.
 */
#include "policyref.h"

#include <stdlib.h>

#include "log.h"

struct policy_ref {
    policy *p;
    unsigned refs;
};

policy_ref *policy_ref_new(policy *p) {
    policy_ref *r = malloc(sizeof(*r));

    if (r == NULL) {
        policy_free(p);
        return NULL;
    }
    r->p = p;
    r->refs = 1;
    return r;
}

policy_ref *policy_ref_get(policy_ref *r) {
    r->refs++;
    return r;
}

void policy_ref_put(policy_ref *r) {
    if (r == NULL) {
        return;
    }
    if (r->refs == 0) {
        log_error("policy reference released more often than taken");
        abort(); /* our own bug: continuing would free a policy in use */
    }
    if (--r->refs == 0) {
        policy_free(r->p);
        free(r);
    }
}

const policy *policy_ref_policy(const policy_ref *r) {
    return r->p;
}
