/* prompt.h — the prompt broker: permission prompts shown to prompt agents.
 *
 * When the policy answers `prompt`, the operation stays in progress while
 * the broker asks the prompt agents connected to the control socket
 * (control.c; protocol in proto/AGENT.md) that may answer for the tenant.
 * The broker
 * - merges identical pending requests (same tenant, operation, addresses,
 *   host and deciding rule) into one prompt with several waiters;
 * - applies the rule's on_no_agent at once when no agent may answer, or when
 *   the tenant already has defaults.prompt.max_pending_per_tenant prompts;
 * - applies on_timeout to the waiting requests only when nobody answers in
 *   time;
 * - withdraws a prompt when every waiting request was cancelled (its socket
 *   dropped, its session closed), and applies on_no_agent when the last
 *   agent that could answer disconnects;
 * - remembers answers given with a scope (session, tenant, a duration) in an
 *   answer store (answers.h) that the policy consults through
 *   prompt_remembered, and drops those whose rule vanished on reload.
 *
 * A prompt keeps a reference to the policy it was asked under (its prompt
 * settings live there), so a reload never pulls them away.
 *
 * Callbacks (prompt_done_fn) run only from the broker's own loop callbacks
 * (an answer read from an agent, a timer, an agent that went away), never
 * from inside prompt_ask, prompt_cancel or prompt_broker_set_policy, so a
 * caller is never re-entered while it asks. Single-threaded (the loop).
 */
#ifndef WASOCKD_PROMPT_H
#define WASOCKD_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "ctlproto.h"
#include "policy.h"
#include "policyref.h"

/* Prompts pending at once across all tenants: each holds a timer and a
 * copy of its request; tenants' own caps (max_pending_per_tenant, default
 * 16) normally stop far below. Beyond it, requests get on_no_agent. */
#define PROMPT_MAX_PENDING 1024

/* Agents attached at once. The control socket caps its connections too;
 * this keeps the broadcast of one prompt bounded on its own. */
#define PROMPT_MAX_AGENTS 64

typedef struct prompt_broker prompt_broker;
typedef struct prompt_waiter prompt_waiter;
typedef struct prompt_agent prompt_agent;

/* How a request's prompt ended. */
typedef enum prompt_outcome {
    PROMPT_ANSWERED,  /* an agent answered */
    PROMPT_TIMED_OUT, /* nobody answered in time: on_timeout */
    PROMPT_NO_AGENT,  /* no agent may answer for the tenant: on_no_agent */
    PROMPT_OVER_CAP,  /* too many prompts pending for the tenant: on_no_agent */
} prompt_outcome;

/* "answered", "timeout", "no-agent", "over-cap". */
const char *prompt_outcome_name(prompt_outcome o);

typedef struct prompt_result {
    policy_action action; /* POLICY_ALLOW or POLICY_DENY */
    prompt_outcome outcome;
    uint64_t prompt_id; /* 0 when no prompt was shown */
    const char *agent;  /* PROMPT_ANSWERED: the agent's name; valid during the call */
    ctl_scope scope;    /* PROMPT_ANSWERED: how long the answer is remembered */
} prompt_result;

/* Called once when the prompt a waiter waits for ends; the waiter is freed
 * by the broker right after (forget the pointer). */
typedef void (*prompt_done_fn)(void *opaque, const prompt_result *r);

/* One question. Everything is copied; the verdict must come from the
 * broker's current policy (its prompt settings are kept by reference). */
typedef struct prompt_question {
    const policy_request *req;
    const policy_verdict *verdict; /* action POLICY_PROMPT */
    uint64_t session;
    pid_t pid;
    uid_t uid;
    gid_t gid;
} prompt_question;

/* Creates a broker using `current` (takes a reference of its own).
 * Returns 0 or -ENOMEM. */
int prompt_broker_new(uv_loop_t *loop, policy_ref *current, prompt_broker **out);

/* The policy was reloaded: new prompts use `current` (a reference of its
 * own is taken); remembered answers whose rule vanished (or all, with
 * reload.keep_remembered_answers: never) are forgotten. Returns how many. */
size_t prompt_broker_set_policy(prompt_broker *b, policy_ref *current);

/* Frees the broker. Every waiter must have been cancelled and every agent
 * detached, and the loop must have run the close callbacks since (the
 * prompts' timers). NULL allowed. */
void prompt_broker_free(prompt_broker *b);

/* Asks q. Returns true when the request waits: *out is its waiter (cancel
 * it with prompt_cancel, or forget it once `done` ran). Returns false when
 * it is decided at once (no agent, tenant over its cap): *now says how. */
bool prompt_ask(prompt_broker *b, const prompt_question *q, prompt_done_fn done, void *opaque,
                prompt_waiter **out, prompt_result *now);

/* Withdraws a waiting request (done is not called). When it was the last
 * waiter of its prompt, the agents are told the prompt is withdrawn. */
void prompt_cancel(prompt_waiter *w);

/* The remembered-answer hook: true with *out (out->id points into idbuf)
 * when an answer covers `req` for `session` (0: no session, as for
 * explain) and policy `p` would still send `req` to the same prompt. */
bool prompt_remembered(prompt_broker *b, const policy *p, uint64_t session,
                       const policy_request *req, policy_answer *out, char *idbuf, size_t idlen);

/* A session closed: its session-scoped answers are forgotten. */
void prompt_session_closed(prompt_broker *b, uint64_t session);

/* Counts, for status output. */
typedef struct prompt_stats {
    size_t pending, agents, remembered;
    uint64_t asked, answered, timed_out, fallbacks;
} prompt_stats;
void prompt_broker_stats(const prompt_broker *b, prompt_stats *out);

/* --- agents ----------------------------------------------------------------- */

/* Queues one line (without newline) to the agent's connection. Must not
 * detach the agent or re-enter the broker; a connection that cannot take
 * more output closes itself later. */
typedef void (*prompt_agent_send_fn)(void *conn, const char *line);

/* Makes a control connection of peer `uid` a prompt agent, named `name`
 * (NULL: unnamed, shown as "uid-<uid>"). The uid must be listed under the
 * current policy's prompt_agents (under that name, if given). The agent is
 * sent every pending prompt it may answer. Returns 0 and *out, or -EPERM /
 * -ENOSPC / -ENOMEM with a one-line reason in err. */
int prompt_agent_attach(prompt_broker *b, uid_t uid, const char *name, prompt_agent_send_fn send,
                        void *conn, prompt_agent **out, char *err, size_t errlen);

/* The agent's connection is gone: prompts no other agent may answer get
 * their on_no_agent now. Frees the agent. */
void prompt_agent_detach(prompt_agent *a);

/* The agent's name as audit records show it ("ops-console", "uid-1000"). */
const char *prompt_agent_name(const prompt_agent *a);

/* An answer from the agent. The reply line ("answered ...", or "error:
 * ..." when the prompt is unknown to this agent or the scope is not
 * offered) is sent to the agent before the prompt resolves. */
void prompt_agent_answer(prompt_agent *a, const ctl_answer *ans);

/* Sends the agent a "prompt ..." line for every prompt pending for it
 * (the `pending` command of an agent). Returns how many. */
size_t prompt_agent_resend(prompt_agent *a);

#endif
