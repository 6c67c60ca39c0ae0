/* errmap.c — Linux errno values to WASI error codes.
 *
 * Input: errno values from our own system calls (trusted). The table follows
 * wasi-semantics.md ("errno -> error-code"), which in turn follows the
 * reference implementation's mapping; keep them in step.
 */
#include "errmap.h"

#include <errno.h>

proto_err errmap_errno(int err, unsigned flags) {
    if (err < 0) {
        err = -err;
    }
    switch (err) {
    case 0:
        return PROTO_OK;
    case EACCES:
    case EPERM:
        return PROTO_E_ACCESS_DENIED;
    case EADDRINUSE:
        return PROTO_E_ADDRESS_IN_USE;
    case EADDRNOTAVAIL:
        return PROTO_E_ADDRESS_NOT_BINDABLE;
    case ETIMEDOUT:
        return PROTO_E_TIMEOUT;
    case ECONNREFUSED:
        return PROTO_E_CONNECTION_REFUSED;
    case ECONNRESET:
    case EPIPE:
        return PROTO_E_CONNECTION_RESET;
    case ECONNABORTED:
        return PROTO_E_CONNECTION_ABORTED;
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENONET:
        return PROTO_E_REMOTE_UNREACHABLE;
    case EMSGSIZE:
        return PROTO_E_DATAGRAM_TOO_LARGE;
    case ENOMEM:
    case ENOBUFS:
        return PROTO_E_OUT_OF_MEMORY;
    case EMFILE:
    case ENFILE:
        return PROTO_E_NEW_SOCKET_LIMIT;
    case EALREADY:
        return PROTO_E_CONCURRENCY_CONFLICT;
    case EAGAIN: /* == EWOULDBLOCK on Linux */
        return (flags & ERRMAP_WASI_0_3) ? PROTO_E_UNKNOWN : PROTO_E_WOULD_BLOCK;
    case EISCONN:
    case ENOTCONN:
    case EDESTADDRREQ:
        return PROTO_E_INVALID_STATE;
    case EINVAL:
        return PROTO_E_INVALID_ARGUMENT;
    case EAFNOSUPPORT:
        return (flags & ERRMAP_ADDRESS_GIVEN) ? PROTO_E_INVALID_ARGUMENT : PROTO_E_NOT_SUPPORTED;
    case EOPNOTSUPP: /* == ENOTSUP on Linux */
    case ENOPROTOOPT:
    case EPFNOSUPPORT:
    case EPROTONOSUPPORT:
    case EPROTOTYPE:
    case ESOCKTNOSUPPORT:
        return PROTO_E_NOT_SUPPORTED;
    default:
        return PROTO_E_UNKNOWN;
    }
}
