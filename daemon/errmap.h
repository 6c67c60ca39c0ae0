/* errmap.h — Linux errno values to WASI error codes (wasi-semantics.md).
 *
 * Pure: no system calls. Used for every kernel result the daemon reports to
 * a client, so the mapping lives in exactly one table.
 */
#ifndef WASOCKD_ERRMAP_H
#define WASOCKD_ERRMAP_H

#include "proto.h"

/* Context that changes a mapping. */
enum errmap_flags {
    /* The failing call was given an address (bind, connect): EAFNOSUPPORT
     * then means the address had the wrong family, which WASI calls
     * invalid-argument, not not-supported. */
    ERRMAP_ADDRESS_GIVEN = 1u << 0,
    /* The session speaks the WASI 0.3 shape, whose error set has no
     * would-block: EAGAIN falls through to unknown. */
    ERRMAP_WASI_0_3 = 1u << 1,
};

/* Maps an errno value (positive, or negative as our internal functions
 * return it) to a proto_err. 0 maps to PROTO_OK; an unlisted value to
 * PROTO_E_UNKNOWN. */
proto_err errmap_errno(int err, unsigned flags);

/* The flags a session of WASI shape `wasi` (enum proto_wasi_shape) adds to
 * every mapping. */
static inline unsigned errmap_wasi_flags(uint8_t wasi) {
    return wasi == PROTO_WASI_0_3 ? ERRMAP_WASI_0_3 : 0;
}

#endif
