/* header-check.cpp — compiled, never run: proves that <wasock/wasock.h>
 * compiles on its own as C++ (see client/meson.build). */
#include "wasock/wasock.h"

const char *header_check_cxx();

const char *header_check_cxx() {
    wasock_client_opts opts;

    wasock_client_opts_init(&opts);
    return opts.wasi_version == 2 ? wasock_err_name(WASOCK_E_TRAP) : "";
}
