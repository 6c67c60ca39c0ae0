/* bench-report.c — wasock-bench's result store and its three outputs: the
 * table a person reads (stdout), a JSON file and a TSV file.
 *
 * Trusts only the benchmark's own rows (labels are program constants; notes
 * and errors are formatted by the rows). Storage is fixed-size (bench.h
 * limits), so recording a sample never allocates.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "wasock-config.h"

/* Width of the label column of the table: the longest series label fits. */
#define REPORT_LABEL_WIDTH 50

/* Notes are wrapped to this many columns (the table's width). */
#define REPORT_WRAP_COLUMNS 92

/* Room for one formatted number ("1,234,567,890.12"). */
#define REPORT_NUMBER_MAX 40

/* Catalogue entries without a measurement (UDP, lookup, handoff, ...). */
#define REPORT_MAX_NOT_MEASURED 16

struct bench_series {
    char key[BENCH_TEXT_MAX];
    char label[BENCH_TEXT_MAX];
    double samples[BENCH_REPS_MAX];
    unsigned nsamples;
    char skipped[BENCH_TEXT_MAX]; /* non-empty: why there are no figures */
};

typedef struct bench_comparison {
    const bench_series *a, *b; /* b NULL: a's median against an absolute target */
    bench_target target;
    char target_text[BENCH_TEXT_MAX];
} bench_comparison;

struct bench_group {
    char key[BENCH_TEXT_MAX];
    char title[BENCH_TEXT_MAX];
    char unit[BENCH_TEXT_MAX];
    bench_better better;
    char notes[BENCH_MAX_NOTES][2 * BENCH_TEXT_MAX];
    unsigned nnotes;
    char error[2 * BENCH_TEXT_MAX]; /* non-empty: the row failed */
    bench_series series[BENCH_MAX_SERIES];
    unsigned nseries;
    bench_comparison comparisons[BENCH_MAX_COMPARISONS];
    unsigned ncomparisons;
};

static bench_group groups[BENCH_MAX_GROUPS];
static unsigned ngroups;
static const char *not_measured[REPORT_MAX_NOT_MEASURED];
static unsigned nnot_measured;

static struct {
    const char *wasockd;
    unsigned reps;
    bool quick;
} header;

/* ------------------------------------------------------------------ store */

static void copy_text(char *dst, size_t cap, const char *src) {
    size_t len = strlen(src);
    if (len >= cap) {
        len = cap - 1;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

bench_group *bench_group_open(const char *key, const char *title, const char *unit,
                              bench_better better) {
    if (ngroups >= BENCH_MAX_GROUPS) {
        fprintf(stderr, "wasock-bench: too many groups (raise BENCH_MAX_GROUPS)\n");
        return NULL;
    }
    bench_group *g = &groups[ngroups++];
    memset(g, 0, sizeof(*g));
    copy_text(g->key, sizeof(g->key), key);
    copy_text(g->title, sizeof(g->title), title);
    copy_text(g->unit, sizeof(g->unit), unit);
    g->better = better;
    return g;
}

void bench_group_note(bench_group *g, const char *fmt, ...) {
    if (g == NULL || g->nnotes >= BENCH_MAX_NOTES) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->notes[g->nnotes++], sizeof(g->notes[0]), fmt, ap);
    va_end(ap);
}

void bench_group_error(bench_group *g, const char *fmt, ...) {
    char text[sizeof(g->error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    fprintf(stderr, "wasock-bench: %s: %s\n", g != NULL ? g->key : "?", text);
    if (g != NULL && g->error[0] == '\0') {
        copy_text(g->error, sizeof(g->error), text);
    }
}

bench_series *bench_series_add(bench_group *g, const char *key, const char *label) {
    if (g == NULL) {
        return NULL;
    }
    if (g->nseries >= BENCH_MAX_SERIES) {
        fprintf(stderr, "wasock-bench: too many series in %s\n", g->key);
        return NULL;
    }
    bench_series *s = &g->series[g->nseries++];
    memset(s, 0, sizeof(*s));
    copy_text(s->key, sizeof(s->key), key);
    copy_text(s->label, sizeof(s->label), label);
    return s;
}

void bench_series_sample(bench_series *s, double value) {
    if (s != NULL && s->nsamples < BENCH_REPS_MAX && isfinite(value)) {
        s->samples[s->nsamples++] = value;
    }
}

void bench_series_skip(bench_series *s, const char *fmt, ...) {
    if (s == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->skipped, sizeof(s->skipped), fmt, ap);
    va_end(ap);
}

void bench_compare(bench_group *g, const bench_series *a, const bench_series *b,
                   bench_target target) {
    if (g == NULL || a == NULL || g->ncomparisons >= BENCH_MAX_COMPARISONS) {
        return;
    }
    bench_comparison *c = &g->comparisons[g->ncomparisons++];
    c->a = a;
    c->b = b;
    c->target = target;
    copy_text(c->target_text, sizeof(c->target_text), target.text != NULL ? target.text : "");
    c->target.text = c->target_text;
}

void bench_not_measured(const char *what) {
    if (nnot_measured < REPORT_MAX_NOT_MEASURED) {
        not_measured[nnot_measured++] = what;
    }
}

bool bench_any_error(void) {
    for (unsigned i = 0; i < ngroups; i++) {
        if (groups[i].error[0] != '\0') {
            return true;
        }
    }
    return false;
}

void bench_report_set_header(const char *wasockd, unsigned reps, bool quick) {
    header.wasockd = wasockd;
    header.reps = reps;
    header.quick = quick;
}

/* ------------------------------------------------------------------ statistics */

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct summary {
    bool valid; /* at least one sample */
    double median, min, max;
} summary;

static summary summarize(const bench_series *s) {
    summary r = {0};
    double sorted[BENCH_REPS_MAX];
    if (s == NULL || s->nsamples == 0) {
        return r;
    }
    memcpy(sorted, s->samples, s->nsamples * sizeof(sorted[0]));
    qsort(sorted, s->nsamples, sizeof(sorted[0]), compare_doubles);
    unsigned n = s->nsamples;
    r.valid = true;
    r.min = sorted[0];
    r.max = sorted[n - 1];
    r.median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    return r;
}

/* The compared quantity of c (a ratio of medians, or a's median); false
 * when a side has no samples. */
static bool comparison_value(const bench_comparison *c, double *value) {
    summary a = summarize(c->a);
    if (!a.valid) {
        return false;
    }
    if (c->b == NULL) {
        *value = a.median;
        return true;
    }
    summary b = summarize(c->b);
    if (!b.valid || b.median == 0) {
        return false;
    }
    *value = a.median / b.median;
    return true;
}

typedef enum verdict { VERDICT_NONE, VERDICT_MET, VERDICT_MISSED, VERDICT_UNKNOWN } verdict;

/* Met or missed, and by what factor it was missed (>= 1). */
static verdict comparison_verdict(const bench_comparison *c, double *miss_factor) {
    double v;
    *miss_factor = 1;
    if (c->target.kind == BENCH_TARGET_NONE) {
        return VERDICT_NONE;
    }
    if (!comparison_value(c, &v)) {
        return VERDICT_UNKNOWN;
    }
    if (c->target.kind == BENCH_TARGET_AT_MOST) {
        if (v <= c->target.bound) {
            return VERDICT_MET;
        }
        *miss_factor = c->target.bound > 0 ? v / c->target.bound : INFINITY;
        return VERDICT_MISSED;
    }
    if (v >= c->target.bound) {
        return VERDICT_MET;
    }
    *miss_factor = v > 0 ? c->target.bound / v : INFINITY;
    return VERDICT_MISSED;
}

static const char *verdict_name(verdict v) {
    switch (v) {
    case VERDICT_MET:
        return "met";
    case VERDICT_MISSED:
        return "missed";
    case VERDICT_UNKNOWN:
        return "unknown";
    default:
        return "";
    }
}

/* ------------------------------------------------------------------ table */

/* A number for a person: thousands separated, decimals by magnitude. */
static const char *format_number(double v, char *buf, size_t len) {
    double mag = fabs(v);
    int decimals = mag >= 1000 ? 0 : mag >= 100 ? 1 : mag >= 1 ? 2 : 3;
    char digits[REPORT_NUMBER_MAX];
    int n = snprintf(digits, sizeof(digits), "%.*f", decimals, v);
    if (n < 0 || (size_t)n >= sizeof(digits)) {
        snprintf(buf, len, "%g", v);
        return buf;
    }
    const char *dot = strchr(digits, '.');
    size_t int_end = dot != NULL ? (size_t)(dot - digits) : (size_t)n;
    size_t int_start = digits[0] == '-' ? 1 : 0;
    size_t out = 0;
    for (size_t i = 0; i < (size_t)n && out + 2 < len; i++) {
        if (i > int_start && i < int_end && (int_end - i) % 3 == 0) {
            buf[out++] = ',';
        }
        buf[out++] = digits[i];
    }
    buf[out] = '\0';
    return buf;
}

/* Prints text after `indent`, broken at spaces into lines of at most
 * REPORT_WRAP_COLUMNS (a longer word stays whole). */
static void print_wrapped(const char *indent, const char *text) {
    size_t room = REPORT_WRAP_COLUMNS - strlen(indent);
    while (*text != '\0') {
        size_t len = strlen(text);
        if (len > room) {
            len = room;
            while (len > 0 && text[len] != ' ') {
                len--;
            }
            if (len == 0) {
                const char *space = strchr(text + room, ' ');
                len = space != NULL ? (size_t)(space - text) : strlen(text);
            }
        }
        printf("%s%.*s\n", indent, (int)len, text);
        text += len;
        while (*text == ' ') {
            text++;
        }
    }
}

static void print_comparison(const bench_group *g, const bench_comparison *c) {
    char label[3 * BENCH_TEXT_MAX], value_text[REPORT_NUMBER_MAX + BENCH_TEXT_MAX];
    char number[REPORT_NUMBER_MAX];
    double v, miss;

    if (c->b != NULL) {
        snprintf(label, sizeof(label), "%s / %s", c->a->key, c->b->key);
    } else {
        snprintf(label, sizeof(label), "%s", c->a->key);
    }
    if (!comparison_value(c, &v)) {
        snprintf(value_text, sizeof(value_text), "n/a");
    } else if (c->b != NULL) {
        /* Two decimals, or three significant digits for a ratio below
         * 0.01 (an in-process call against a round trip), never "0.00x". */
        snprintf(value_text, sizeof(value_text), v >= 0.01 ? "%.2fx" : "%.3gx", v);
    } else {
        snprintf(value_text, sizeof(value_text), "%s %s", format_number(v, number, sizeof(number)),
                 g->unit);
    }
    printf("   => %-*s %12s", REPORT_LABEL_WIDTH - 3, label, value_text);
    verdict vd = comparison_verdict(c, &miss);
    if (vd != VERDICT_NONE) {
        printf("   target %s: %s", c->target.text, verdict_name(vd));
        if (vd == VERDICT_MISSED) {
            /* As a share of the target ("1.00x off" hid a miss of 0.3%):
             * how far below a floor, or above a ceiling, the value is. */
            double off = c->target.kind == BENCH_TARGET_AT_LEAST ? 1.0 - 1.0 / miss : miss - 1.0;
            printf(" (%.1f%% %s)", off * 100.0,
                   c->target.kind == BENCH_TARGET_AT_LEAST ? "short" : "over");
        }
    }
    printf("\n");
}

static void print_group(unsigned index, const bench_group *g) {
    char med[REPORT_NUMBER_MAX], lo[REPORT_NUMBER_MAX], hi[REPORT_NUMBER_MAX];

    printf("\n%u. %s [%s, %s is better]\n", index + 1, g->title, g->unit,
           g->better == BENCH_HIGHER_IS_BETTER ? "higher" : "lower");
    for (unsigned i = 0; i < g->nnotes; i++) {
        print_wrapped("   ", g->notes[i]);
    }
    for (unsigned i = 0; i < g->nseries; i++) {
        const bench_series *s = &g->series[i];
        summary sm = summarize(s);
        char label[3 * BENCH_TEXT_MAX];
        snprintf(label, sizeof(label), "%s: %s", s->key, s->label);
        if (s->skipped[0] != '\0') {
            printf("   %-*.*s  skipped: %s\n", REPORT_LABEL_WIDTH, REPORT_LABEL_WIDTH + 30, label,
                   s->skipped);
        } else if (!sm.valid) {
            printf("   %-*.*s  no samples\n", REPORT_LABEL_WIDTH, REPORT_LABEL_WIDTH + 30, label);
        } else {
            printf("   %-*.*s %12s %12s %12s\n", REPORT_LABEL_WIDTH, REPORT_LABEL_WIDTH + 30, label,
                   format_number(sm.median, med, sizeof(med)),
                   format_number(sm.min, lo, sizeof(lo)), format_number(sm.max, hi, sizeof(hi)));
        }
    }
    for (unsigned i = 0; i < g->ncomparisons; i++) {
        print_comparison(g, &g->comparisons[i]);
    }
    if (g->error[0] != '\0') {
        printf("   ERROR: %s\n", g->error);
    }
}

/* The kernel's TCP congestion control ("?" when unknown): it changes the
 * loopback figures a lot (bbr paces the direct baseline below what cubic
 * reaches, which flatters relay ratios), so every report names it. */
static const char *tcp_congestion_control(void) {
    static char name[32];
    FILE *f;

    if (name[0] != '\0') {
        return name;
    }
    snprintf(name, sizeof(name), "?");
    f = fopen("/proc/sys/net/ipv4/tcp_congestion_control", "re");
    if (f != NULL) {
        if (fgets(name, sizeof(name), f) == NULL) {
            snprintf(name, sizeof(name), "?");
        }
        name[strcspn(name, "\n")] = '\0';
        fclose(f);
    }
    return name;
}

void bench_report_print(void) {
    struct utsname un;
    unsigned met = 0, missed = 0, unknown = 0, errors = 0;

    if (uname(&un) < 0) {
        memset(&un, 0, sizeof(un));
    }
    printf("wasock-bench %s (%s): %s, %u repetitions, %ld CPUs, %s %s, TCP congestion control "
           "%s\n",
           WASOCK_VERSION, header.quick ? "quick" : "full", header.wasockd, header.reps,
           sysconf(_SC_NPROCESSORS_ONLN), un.sysname, un.release, tcp_congestion_control());
    printf("Figures: median, min and max over the repetitions. Ratios (=>) compare the\n"
           "medians of two series measured in this run; targets from the performance issue.\n");
    printf("   %-*s %12s %12s %12s\n", REPORT_LABEL_WIDTH, "", "median", "min", "max");
    for (unsigned i = 0; i < ngroups; i++) {
        const bench_group *g = &groups[i];
        print_group(i, g);
        errors += g->error[0] != '\0';
        for (unsigned k = 0; k < g->ncomparisons; k++) {
            double miss;
            verdict v = comparison_verdict(&g->comparisons[k], &miss);
            met += v == VERDICT_MET;
            missed += v == VERDICT_MISSED;
            unknown += v == VERDICT_UNKNOWN;
        }
    }
    printf("\nTargets: %u met, %u missed, %u not measurable; rows with errors: %u\n", met, missed,
           unknown, errors);
    if (nnot_measured > 0) {
        printf("not measured yet: ");
        for (unsigned i = 0; i < nnot_measured; i++) {
            printf("%s%s", i > 0 ? "; " : "", not_measured[i]);
        }
        printf("\n");
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ files */

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            fprintf(f, "\\%c", ch);
        } else if (ch < 0x20) {
            fprintf(f, "\\u%04x", ch);
        } else {
            fputc(ch, f);
        }
    }
    fputc('"', f);
}

/* JSON has no NaN or infinity: those become null. */
static void json_number(FILE *f, double v) {
    if (isfinite(v)) {
        fprintf(f, "%.6g", v);
    } else {
        fputs("null", f);
    }
}

static void json_series(FILE *f, const bench_series *s) {
    summary sm = summarize(s);
    fputs("{\"key\": ", f);
    json_string(f, s->key);
    fputs(", \"label\": ", f);
    json_string(f, s->label);
    fputs(", \"samples\": [", f);
    for (unsigned i = 0; i < s->nsamples; i++) {
        fputs(i > 0 ? ", " : "", f);
        json_number(f, s->samples[i]);
    }
    fputs("]", f);
    if (sm.valid) {
        fputs(", \"median\": ", f);
        json_number(f, sm.median);
        fputs(", \"min\": ", f);
        json_number(f, sm.min);
        fputs(", \"max\": ", f);
        json_number(f, sm.max);
    }
    if (s->skipped[0] != '\0') {
        fputs(", \"skipped\": ", f);
        json_string(f, s->skipped);
    }
    fputs("}", f);
}

static void json_comparison(FILE *f, const bench_comparison *c) {
    double v, miss;
    fputs("{\"a\": ", f);
    json_string(f, c->a->key);
    fputs(", \"b\": ", f);
    if (c->b != NULL) {
        json_string(f, c->b->key);
    } else {
        fputs("null", f);
    }
    fputs(", \"kind\": ", f);
    json_string(f, c->b != NULL ? "ratio" : "value");
    fputs(", \"value\": ", f);
    if (comparison_value(c, &v)) {
        json_number(f, v);
    } else {
        fputs("null", f);
    }
    if (c->target.kind != BENCH_TARGET_NONE) {
        verdict vd = comparison_verdict(c, &miss);
        fputs(", \"target\": {\"op\": ", f);
        json_string(f, c->target.kind == BENCH_TARGET_AT_MOST ? "<=" : ">=");
        fputs(", \"bound\": ", f);
        json_number(f, c->target.bound);
        fputs(", \"text\": ", f);
        json_string(f, c->target.text);
        fputs("}, \"met\": ", f);
        fputs(vd == VERDICT_MET ? "true" : vd == VERDICT_MISSED ? "false" : "null", f);
    }
    fputs("}", f);
}

int bench_report_write_json(const char *path) {
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        return -errno;
    }
    fputs("{\n  \"tool\": \"wasock-bench\",\n  \"version\": ", f);
    json_string(f, WASOCK_VERSION);
    fprintf(f, ",\n  \"mode\": \"%s\",\n  \"repetitions\": %u,\n  \"cpus\": %ld,\n  \"wasockd\": ",
            header.quick ? "quick" : "full", header.reps, sysconf(_SC_NPROCESSORS_ONLN));
    json_string(f, header.wasockd != NULL ? header.wasockd : "");
    fputs(",\n  \"tcp_congestion_control\": ", f);
    json_string(f, tcp_congestion_control());
    fputs(",\n  \"groups\": [", f);
    for (unsigned i = 0; i < ngroups; i++) {
        const bench_group *g = &groups[i];
        fputs(i > 0 ? ",\n    {" : "\n    {", f);
        fputs("\"key\": ", f);
        json_string(f, g->key);
        fputs(", \"title\": ", f);
        json_string(f, g->title);
        fputs(", \"unit\": ", f);
        json_string(f, g->unit);
        fprintf(f, ", \"better\": \"%s\"",
                g->better == BENCH_HIGHER_IS_BETTER ? "higher" : "lower");
        fputs(",\n     \"notes\": [", f);
        for (unsigned k = 0; k < g->nnotes; k++) {
            fputs(k > 0 ? ", " : "", f);
            json_string(f, g->notes[k]);
        }
        fputs("],\n     \"error\": ", f);
        if (g->error[0] != '\0') {
            json_string(f, g->error);
        } else {
            fputs("null", f);
        }
        fputs(",\n     \"series\": [", f);
        for (unsigned k = 0; k < g->nseries; k++) {
            fputs(k > 0 ? ",\n       " : "\n       ", f);
            json_series(f, &g->series[k]);
        }
        fputs("],\n     \"comparisons\": [", f);
        for (unsigned k = 0; k < g->ncomparisons; k++) {
            fputs(k > 0 ? ",\n       " : "\n       ", f);
            json_comparison(f, &g->comparisons[k]);
        }
        fputs("]}", f);
    }
    fputs("\n  ],\n  \"not_measured\": [", f);
    for (unsigned i = 0; i < nnot_measured; i++) {
        fputs(i > 0 ? ", " : "", f);
        json_string(f, not_measured[i]);
    }
    fputs("]\n}\n", f);
    int err = ferror(f) ? -EIO : 0;
    if (fclose(f) != 0 && err == 0) {
        err = -errno;
    }
    return err;
}

/* TSV cells must not hold tabs or newlines: those become spaces. */
static void tsv_cell(FILE *f, const char *s) {
    for (; *s != '\0'; s++) {
        fputc(*s == '\t' || *s == '\n' ? ' ' : *s, f);
    }
}

int bench_report_write_tsv(const char *path) {
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        return -errno;
    }
    fputs("kind\tgroup\tname\tunit\tvalue\tmin\tmax\tsamples\ttarget\tmet\n", f);
    for (unsigned i = 0; i < ngroups; i++) {
        const bench_group *g = &groups[i];
        for (unsigned k = 0; k < g->nseries; k++) {
            const bench_series *s = &g->series[k];
            summary sm = summarize(s);
            fputs("series\t", f);
            tsv_cell(f, g->key);
            fputc('\t', f);
            tsv_cell(f, s->key);
            fputc('\t', f);
            tsv_cell(f, g->unit);
            if (sm.valid) {
                fprintf(f, "\t%.6g\t%.6g\t%.6g\t%u\t\t\n", sm.median, sm.min, sm.max, s->nsamples);
            } else {
                fputs("\t\t\t\t0\t\t\n", f);
            }
        }
        for (unsigned k = 0; k < g->ncomparisons; k++) {
            const bench_comparison *c = &g->comparisons[k];
            double v, miss;
            verdict vd = comparison_verdict(c, &miss);
            fputs("compare\t", f);
            tsv_cell(f, g->key);
            fputc('\t', f);
            tsv_cell(f, c->a->key);
            if (c->b != NULL) {
                fputc('/', f);
                tsv_cell(f, c->b->key);
            }
            fprintf(f, "\t%s\t", c->b != NULL ? "x" : g->unit);
            if (comparison_value(c, &v)) {
                fprintf(f, "%.6g", v);
            }
            fputs("\t\t\t\t", f);
            tsv_cell(f, c->target.text);
            fprintf(f, "\t%s\n", verdict_name(vd));
        }
    }
    int err = ferror(f) ? -EIO : 0;
    if (fclose(f) != 0 && err == 0) {
        err = -errno;
    }
    return err;
}
