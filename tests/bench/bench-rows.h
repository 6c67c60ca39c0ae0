/* bench-rows.h — the rows of wasock-bench. Each row function opens its
 * group(s) in the result store, measures bench_cfg.reps repetitions of each
 * series, and records errors in its group instead of stopping the run.
 * Rows that talk to the shared daemon receive it; rows that need a fresh
 * daemon (memory) start their own.
 */
#ifndef WASOCK_BENCH_ROWS_H
#define WASOCK_BENCH_ROWS_H

#include "bench.h"

typedef void bench_row_fn(bench_daemon *d);

bench_row_fn bench_row_round_trip; /* bench-control.c */
bench_row_fn bench_row_pipelined;  /* bench-control.c */
bench_row_fn bench_row_connect;    /* bench-tcp.c */
bench_row_fn bench_row_accept;     /* bench-tcp.c */
bench_row_fn bench_row_bulk;       /* bench-tcp.c */
bench_row_fn bench_row_handoff;    /* bench-tcp.c */
bench_row_fn bench_row_exchange;   /* bench-tcp.c */
bench_row_fn bench_row_udp;        /* bench-udp.c */
bench_row_fn bench_row_lookup;     /* bench-lookup.c */
bench_row_fn bench_row_decide;     /* bench-decide.c */
bench_row_fn bench_row_memory;     /* bench-memory.c */

#endif
