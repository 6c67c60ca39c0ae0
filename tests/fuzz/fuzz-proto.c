/* fuzz-proto.c — libFuzzer harness for the frame decoder (proto/proto.c).
 *
 * The input is untrusted bytes, exactly as a peer could send them. Checked
 * properties: proto_frame_ready() and proto_decode() return only documented
 * codes; a frame that decodes is whole; and re-encoding a decoded message
 * gives back the same bytes (the wire form is canonical). Seed corpus: the
 * hex files of tests/data/proto/ converted to binary.
 *
 * Build (not part of the meson build, it needs clang's libFuzzer):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iproto \
 *       proto/proto.c tests/fuzz/fuzz-proto.c -o fuzz-proto
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t again[PROTO_MAX_FRAME];
    size_t frame_len = 0;
    proto_msg m;
    int ready = proto_frame_ready(data, size, &frame_len);
    int rc = proto_decode(data, size, &m);

    if (ready != 0 && ready != 1 && ready != -EPROTO && ready != -EMSGSIZE) {
        abort();
    }
    if (rc != 0 && rc != -EPROTO && rc != -ENOMSG && rc != -EMSGSIZE) {
        abort();
    }
    if (rc == 0) {
        if (ready != 1 || frame_len != size) {
            abort();
        }
        ssize_t n = proto_encode(&m, again, sizeof(again));
        if (n != (ssize_t)size || memcmp(again, data, size) != 0) {
            abort();
        }
    }
    /* A stream may hold a whole frame followed by more bytes: decoding just
     * the frame must behave like decoding it alone. */
    if (ready == 1 && frame_len < size) {
        rc = proto_decode(data, frame_len, &m);
        if (rc != 0 && rc != -EPROTO && rc != -ENOMSG && rc != -EMSGSIZE) {
            abort();
        }
    }
    return 0;
}
