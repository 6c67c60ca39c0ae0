/* util.c — the policy library's arena allocator and load diagnostics.
 *
 * Trusts nothing it is given: message arguments may hold text from the
 * policy file, which pol_quote() escapes before it reaches a message.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

/* Size of one arena chunk: large enough that a 10,000-rule policy needs a
 * few hundred chunks, small enough that the built-in default stays tiny. */
#define ARENA_CHUNK_BYTES (64u * 1024u)

/* Every allocation is aligned for any scalar type we store. */
#define ARENA_ALIGN 16u

struct pol_arena_chunk {
    pol_arena_chunk *next;
    size_t used;
    size_t size;
    _Alignas(16) unsigned char data[];
};

void *pol_arena_alloc(pol_arena *a, size_t size) {
    size_t rounded;
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX / 2)
        return NULL;
    rounded = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (a->head == NULL || a->head->size - a->head->used < rounded) {
        size_t chunk_size = rounded > ARENA_CHUNK_BYTES ? rounded : ARENA_CHUNK_BYTES;
        pol_arena_chunk *c = malloc(sizeof(*c) + chunk_size);
        if (c == NULL)
            return NULL;
        c->size = chunk_size;
        c->used = 0;
        /* A big allocation gets its own chunk behind the current one, so
         * the free space of the current chunk is not wasted. */
        if (a->head != NULL && rounded > ARENA_CHUNK_BYTES / 2) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        c->used = rounded;
        memset(c->data, 0, rounded);
        return c->data;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += rounded;
    memset(p, 0, rounded);
    return p;
}

char *pol_arena_strndup(pol_arena *a, const char *s, size_t len) {
    if (len == SIZE_MAX)
        return NULL;
    char *copy = pol_arena_alloc(a, len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *pol_arena_printf(pol_arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *out = pol_arena_alloc(a, (size_t)n + 1);
    if (out == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

void pol_arena_release(pol_arena *a) {
    pol_arena_chunk *c = a->head;
    while (c != NULL) {
        pol_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

/* Copies at most max_input bytes of s, escaped, into out. */
static void quote_bounded(const char *s, size_t len, size_t max_input, char *out, size_t out_len) {
    size_t o = 0;
    if (out_len == 0)
        return;
    for (size_t i = 0; i < len && i < max_input; i++) {
        unsigned char ch = (unsigned char)s[i];
        char piece[5];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            piece[0] = (char)ch;
            piece[1] = '\0';
        } else {
            snprintf(piece, sizeof(piece), "\\x%02x", ch);
        }
        size_t plen = strlen(piece);
        if (o + plen + 4 >= out_len)
            break;
        memcpy(out + o, piece, plen);
        o += plen;
    }
    if (len > max_input && o + 4 < out_len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

void pol_quote(const char *s, size_t len, char *out, size_t out_len) {
    /* Enough to recognise a value, short enough to keep a message on a line. */
    static const size_t quote_max_input = 48;
    quote_bounded(s, len, quote_max_input, out, out_len);
}

void pol_diag_error(pol_diag *d, unsigned line, unsigned column, const char *fmt, ...) {
    if (d->count >= POLICY_MAX_DIAGNOSTICS) {
        d->truncated = true;
        return;
    }
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        pol_diag_entry *grown = realloc(d->entries, cap * sizeof(*grown));
        if (grown == NULL) {
            d->out_of_memory = true;
            return;
        }
        d->entries = grown;
        d->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        d->out_of_memory = true;
        return;
    }
    char *msg = malloc((size_t)n + 1);
    if (msg == NULL) {
        d->out_of_memory = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    d->entries[d->count] =
        (pol_diag_entry){.line = line, .column = column, .seq = (unsigned)d->count, .message = msg};
    d->count++;
}

static int diag_entry_compare(const void *a, const void *b) {
    const pol_diag_entry *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

char *pol_diag_render(const pol_diag *d) {
    /* File names are the operator's, but may hold any bytes: escaped, not cut. */
    char file[4096 * 4 + 8];
    quote_bounded(d->file, strlen(d->file), 4096, file, sizeof(file));
    /* Position-sorted output reads like the file; entries is ours to sort. */
    if (d->count > 1)
        qsort(d->entries, d->count, sizeof(*d->entries), diag_entry_compare);
    size_t total = 1;
    for (size_t i = 0; i < d->count; i++)
        total += strlen(file) + strlen(d->entries[i].message) + 32;
    total += strlen(file) + 96;
    char *out = malloc(total);
    if (out == NULL)
        return NULL;
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < d->count; i++) {
        int n = snprintf(out + used, total - used, "%s:%u:%u: %s\n", file, d->entries[i].line,
                         d->entries[i].column, d->entries[i].message);
        if (n < 0 || (size_t)n >= total - used)
            break;
        used += (size_t)n;
    }
    if (d->truncated)
        snprintf(out + used, total - used, "%s: too many errors, stopped after %u\n", file,
                 POLICY_MAX_DIAGNOSTICS);
    else if (d->out_of_memory)
        snprintf(out + used, total - used, "%s: out of memory while reporting errors\n", file);
    return out;
}

void pol_diag_release(pol_diag *d) {
    for (size_t i = 0; i < d->count; i++)
        free(d->entries[i].message);
    free(d->entries);
    d->entries = NULL;
    d->count = d->cap = 0;
}

void pol_quote_path(const char *s, char *out, size_t out_len) {
    quote_bounded(s, strlen(s), 4096, out, out_len);
}
