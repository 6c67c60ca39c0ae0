/* lookup.h — name lookup for sessions (RESOLVE), the tenants' name bindings
 * and the answer filter.
 *
 * A lookup runs getaddrinfo on libuv's thread pool, so the loop never
 * blocks; its answers are filtered (IPv4-mapped to IPv4, duplicates, and
 * addresses a guard would refuse), remembered as name bindings of the tenant
 * (hostbind.h), and sent as events. authz.c asks here for the names an
 * address is bound to when it decides a connect or a send.
 */
#ifndef WASOCKD_LOOKUP_H
#define WASOCKD_LOOKUP_H

#include <stddef.h>

#include "proto.h"
#include "session.h"

struct hostbind_entry;
struct tenant_dns;

/* Addresses one lookup returns at most: far more than any real name has
 * (large round-robin sets list a dozen), and it bounds the events and the
 * bindings one lookup can create. */
#define LOOKUP_MAX_ADDRESSES 64

/* Lookups of one tenant in flight at once. getaddrinfo can block a pool
 * thread for the resolver's whole timeout (seconds); this keeps one tenant
 * from holding more than a quarter of LOOKUP_THREAD_POOL_SIZE. Beyond it a
 * lookup fails at once with temporary-resolver-failure. */
#define LOOKUP_MAX_IN_FLIGHT_PER_TENANT 4

/* Lookups in flight in the whole daemon: bounds the memory of queued pool
 * work whatever the number of tenants. Beyond it: temporary-resolver-failure. */
#define LOOKUP_MAX_IN_FLIGHT 256

/* libuv's thread pool size, set before the pool starts unless the operator
 * set UV_THREADPOOL_SIZE: lookups are the daemon's only pool work, and
 * libuv's default of 4 would let one slow resolver stall everyone. */
#define LOOKUP_THREAD_POOL_SIZE 16

/* getaddrinfo reports no record lifetimes: a binding lives this long, then
 * clamped to the policy's [dns.min_ttl, dns.max_ttl]. One minute is the
 * common TTL of names that move (CDNs, failover records). */
#define LOOKUP_FALLBACK_TTL_S 60

/* Sets UV_THREADPOOL_SIZE to LOOKUP_THREAD_POOL_SIZE unless it is set.
 * Call before the loop runs any pool work (at start-up). */
void lookup_configure_thread_pool(void);

/* Handles RESOLVE and RESOLVE_DROP of a session past HELLO. Always queues
 * exactly one reply; the events of a lookup follow its reply. */
void lookup_handle_request(session *s, const proto_msg *req);

/* The live name bindings of remote's address (port ignored) that session s
 * may use (dns.pin_scope), latest expiry first, at most max. Borrowed for
 * the current callback (pin to keep). */
size_t lookup_bound_names(session *s, const proto_addr *remote, struct hostbind_entry **out,
                          size_t max);

/* Frees a tenant's lookup state (tenant_usage.dns). NULL is allowed. */
void lookup_tenant_dns_free(struct tenant_dns *d);

#endif
