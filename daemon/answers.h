/* answers.h — remembered prompt answers: the daemon's store behind the
 * policy's remembered-answer hook (evaluation step 5,
 * policy_decide_with_answers).
 *
 * When a prompt agent answers with a scope other than `once`, the daemon
 * remembers "requests shaped like this one, of this tenant (and session),
 * get this action". The shape (answer_shape) keeps what identifies the
 * request for a person: the destination of a connect, the address and
 * port of a bind or listen, the peer address of an accept (not its
 * ephemeral port). The store only matches shapes; whether the policy would
 * still send the request to the same prompt is checked by the caller (the
 * prompt broker), so an answer never outlives, or widens, the rule that
 * asked.
 *
 * Pure: no libuv, no clock, no I/O; times are monotonic milliseconds the
 * caller passes in. Unit-tested in tests/unit/check-answers.c.
 */
#ifndef WASOCKD_ANSWERS_H
#define WASOCKD_ANSWERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "proto.h"

/* Answers one tenant may have remembered at once. An agent that answers
 * "remember" for every request of a busy guest must not grow the daemon
 * without bound; 256 distinct destinations is far more than a person
 * answers by hand. The oldest answer of the tenant makes room. */
#define ANSWERS_MAX_PER_TENANT 256

/* Room for a decider ("rule:<id>", "default:tenant"): the size of
 * policy_verdict.decided_by. */
#define ANSWERS_DECIDER_MAX 160

/* Room for a host name: 253 bytes of DNS name plus the NUL. */
#define ANSWERS_HOST_MAX 254

typedef struct answer {
    uint64_t id;          /* the prompt that created it: decided_by "answer:<id>" */
    uint64_t session;     /* 0: every session of the tenant */
    uint64_t expires_ms;  /* monotonic ms; 0: never */
    policy_action action; /* POLICY_ALLOW or POLICY_DENY */
    char tenant[PROTO_TENANT_MAX + 1];
    char decided_by[ANSWERS_DECIDER_MAX]; /* the prompt's decider */
    /* The request's shape (see answer_shape). */
    policy_op op;
    bool implicit;
    policy_endpoint local, remote;
    bool has_host;
    char host[ANSWERS_HOST_MAX];
    struct answer *next; /* newer to older */
} answer;

typedef struct answer_store {
    answer *newest;
    size_t count;
} answer_store;

#define ANSWER_STORE_INIT                                                                          \
    { NULL, 0 }

/* Remembers `action` for requests shaped like `req`, prompted by
 * `decided_by`, for one session (session != 0) or the whole tenant, until
 * expires_ms (0: no expiry). The store copies everything. When the tenant
 * already has ANSWERS_MAX_PER_TENANT answers its oldest is forgotten; an
 * older answer of exactly the same shape and session is replaced. Returns 0
 * or -ENOMEM (-EINVAL for a tenant or host too long, or a bad action). */
int answer_store_add(answer_store *st, const policy_request *req, const char *decided_by,
                     policy_action action, uint64_t session, uint64_t expires_ms, uint64_t id);

/* The newest answer covering `req` for `session` (answers of the whole
 * tenant cover every session) that has not expired at now_ms; expired
 * answers met on the way are forgotten. NULL when none. Borrowed until the
 * store changes. */
const answer *answer_store_find(answer_store *st, const policy_request *req, uint64_t session,
                                uint64_t now_ms);

/* Forgets every answer of `session` (it closed). Returns how many. */
size_t answer_store_drop_session(answer_store *st, uint64_t session);

/* Forgets the answers `keep` says no to (a reload removed their rule).
 * Returns how many. */
size_t answer_store_prune(answer_store *st, bool (*keep)(void *opaque, const answer *a),
                          void *opaque);

/* Forgets everything. */
void answer_store_clear(answer_store *st);

/* True when two requests have the same shape (what an answer covers). */
bool answer_shape_equal(const policy_request *a, const policy_request *b);

#endif
