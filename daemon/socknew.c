/* socknew.c — opening the kernel socket of a TCP_CREATE or UDP_CREATE.
 *
 * Input: a decoded create request from an untrusted client (its family is
 * range-checked by the codec) and the operator's policy.
 */
#include "socknew.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "errmap.h"
#include "server.h"
#include "sockopt.h"
#include "sockrules.h"

int socknew_open(session *s, const proto_msg *req, policy_protocol kind) {
    const char *tenant = session_tenant(s);
    const policy *p = server_policy(session_server(s));
    policy_limits limits = policy_tenant_limits(p, tenant);
    unsigned flags = errmap_wasi_flags(session_wasi(s));
    bool tcp = kind == POLICY_PROTO_TCP;
    int af = sockrules_af(req->family);
    int fd, r;

    if (!(policy_protocols(p, tenant) & kind)) {
        session_reply_error(s, req, PROTO_E_ACCESS_DENIED,
                            "the policy allows no %s sockets for tenant \"%s\"",
                            tcp ? "TCP" : "UDP", tenant);
        return -1;
    }
    if (limits.sockets != 0 && session_usage(s)->sockets >= limits.sockets) {
        session_reply_error(s, req, PROTO_E_NEW_SOCKET_LIMIT,
                            "tenant \"%s\" has reached its limit of %u sockets", tenant,
                            (unsigned)limits.sockets);
        return -1;
    }
    if (session_resource_count(s) >= SESSION_MAX_RESOURCES) {
        session_reply_error(s, req, PROTO_E_NEW_SOCKET_LIMIT, "this connection holds %d resources",
                            SESSION_MAX_RESOURCES);
        return -1;
    }
    if (af < 0) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "unknown address family");
        return -1;
    }
    fd = socket(af, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC,
                tcp ? IPPROTO_TCP : IPPROTO_UDP);
    if (fd < 0) {
        r = errno;
        session_reply_error(s, req, errmap_errno(r, flags), "socket: %s", strerror(r));
        return -1;
    }
    /* v6 sockets are v6-only from the start: IPv4 peers must never reach a
     * v6 socket through mapped addresses around the policy's IPv4 rules. */
    if (af == AF_INET6 && (r = sockopt_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1)) < 0) {
        close(fd);
        session_reply_error(s, req, errmap_errno(r, flags), "IPV6_V6ONLY: %s", strerror(-r));
        return -1;
    }
    return fd;
}
