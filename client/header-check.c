/* header-check.c — compiled, never run: proves that <wasock/wasock.h>
 * compiles on its own as strict ISO C99 (see client/meson.build). */
#include "wasock/wasock.h"

const char *header_check_c99(void);

const char *header_check_c99(void) {
    wasock_addr a = {{WASOCK_IPV4, {{127, 0, 0, 1}}}, 80, 0, 0};

    return a.port == 80 ? wasock_err_name(WASOCK_E_DAEMON) : "";
}
