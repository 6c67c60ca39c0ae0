/* audit-verify.c — wasockd-audit-verify: checks the hash chain of audit logs.
 *
 * Usage: wasockd-audit-verify [-q] FILE...
 *
 * Reads each file with audit_verify_file and prints its report (problems as
 * "file:line: reason", then one summary line with the chain head to compare
 * against a copy anchored elsewhere). Trusts its command line; the files are
 * untrusted input. Exit status: 0 when every file verifies, 1 when a file
 * has a problem, 2 for a usage error or a file that cannot be read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"

#define EXIT_BROKEN  1
#define EXIT_TROUBLE 2

static void print_usage(FILE *out) {
    fputs("usage: wasockd-audit-verify [-q] FILE...\n"
          "Verifies the SHA-256 chain of wasockd audit logs.\n"
          "  -q  print nothing; only the exit status tells\n"
          "Exit status: 0 all files verify, 1 a file has a problem, 2 usage or read error.\n",
          out);
}

int main(int argc, char **argv) {
    bool quiet = false;
    int status = EXIT_SUCCESS;
    int opt;

    while ((opt = getopt(argc, argv, "qh")) != -1) {
        switch (opt) {
        case 'q':
            quiet = true;
            break;
        case 'h':
            print_usage(stdout);
            return EXIT_SUCCESS;
        default:
            print_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (optind >= argc) {
        print_usage(stderr);
        return EXIT_TROUBLE;
    }
    for (int i = optind; i < argc; i++) {
        int rc = audit_verify_file(argv[i], quiet ? NULL : stdout);

        if (rc < 0) {
            if (!quiet) {
                fprintf(stderr, "%s: cannot read: %s\n", argv[i], strerror(-rc));
            }
            status = EXIT_TROUBLE;
        } else if (rc > 0 && status == EXIT_SUCCESS) {
            status = EXIT_BROKEN;
        }
    }
    if (fflush(stdout) != 0) {
        return EXIT_TROUBLE;
    }
    return status;
}
