/* yamltree.c — turns policy YAML text into a small tree of scalars,
 * sequences and mappings with their positions, using libyaml's event API.
 *
 * Trusts nothing: the text may be any bytes. Nesting depth, node count and
 * scalar length are capped here (libyaml has no nesting limit), aliases
 * and anchors are refused (no "billion laughs" expansion), explicit tags
 * are refused, and only one document is accepted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "policy-internal.h"

/* One collection being filled while its events arrive. */
typedef struct build_frame {
    ynode *node;
    ynode **items; /* malloc'd while open, copied to the arena at the end */
    size_t count, cap;
} build_frame;

typedef struct tree_builder {
    pol_arena *arena;
    pol_diag *diag;
    build_frame stack[POLICY_MAX_DEPTH];
    size_t depth;
    size_t nodes;
    ynode *root;
    unsigned documents;
} tree_builder;

static unsigned mark_line(const yaml_mark_t *m) {
    return (unsigned)m->line + 1;
}

static unsigned mark_column(const yaml_mark_t *m) {
    return (unsigned)m->column + 1;
}

/* Hands a finished node to the collection being built (or makes it the
 * root). Returns 0 or -ENOMEM. */
static int builder_attach(tree_builder *b, ynode *node) {
    if (b->depth == 0) {
        b->root = node;
        return 0;
    }
    build_frame *f = &b->stack[b->depth - 1];
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        ynode **grown = realloc(f->items, cap * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        f->items = grown;
        f->cap = cap;
    }
    f->items[f->count++] = node;
    return 0;
}

/* Checks what every node event shares: anchors, tags and the node cap.
 * Returns 0, or -EINVAL after reporting. */
static int builder_check_node(tree_builder *b, const yaml_event_t *ev, const yaml_char_t *anchor,
                              const yaml_char_t *tag, bool tag_implicit) {
    unsigned line = mark_line(&ev->start_mark), col = mark_column(&ev->start_mark);
    if (anchor != NULL) {
        pol_diag_error(b->diag, line, col, "anchors and aliases are not supported");
        return -EINVAL;
    }
    if (tag != NULL && !tag_implicit) {
        pol_diag_error(b->diag, line, col, "explicit tags are not supported");
        return -EINVAL;
    }
    if (++b->nodes > POLICY_MAX_NODES) {
        pol_diag_error(b->diag, line, col, "too many YAML nodes (the limit is %u)",
                       POLICY_MAX_NODES);
        return -EINVAL;
    }
    return 0;
}

static ynode *builder_new_node(tree_builder *b, ynode_kind kind, const yaml_event_t *ev) {
    ynode *n = pol_arena_alloc(b->arena, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->kind = kind;
    n->line = mark_line(&ev->start_mark);
    n->column = mark_column(&ev->start_mark);
    return n;
}

static int builder_scalar(tree_builder *b, const yaml_event_t *ev) {
    const yaml_char_t *tag = ev->data.scalar.tag;
    bool implicit = ev->data.scalar.plain_implicit || ev->data.scalar.quoted_implicit;
    int r = builder_check_node(b, ev, ev->data.scalar.anchor, tag, implicit);
    if (r < 0)
        return r;
    size_t len = ev->data.scalar.length;
    const char *value = (const char *)ev->data.scalar.value;
    if (len > POLICY_MAX_SCALAR_BYTES) {
        pol_diag_error(b->diag, mark_line(&ev->start_mark), mark_column(&ev->start_mark),
                       "text longer than %u bytes", POLICY_MAX_SCALAR_BYTES);
        return -EINVAL;
    }
    if (memchr(value, '\0', len) != NULL) {
        pol_diag_error(b->diag, mark_line(&ev->start_mark), mark_column(&ev->start_mark),
                       "text contains a NUL byte");
        return -EINVAL;
    }
    ynode *n = builder_new_node(b, YNODE_SCALAR, ev);
    if (n == NULL)
        return -ENOMEM;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->text = pol_arena_strndup(b->arena, value, len);
    if (n->text == NULL)
        return -ENOMEM;
    n->len = len;
    return builder_attach(b, n);
}

static int builder_open(tree_builder *b, const yaml_event_t *ev, ynode_kind kind) {
    const yaml_char_t *anchor, *tag;
    bool implicit;
    if (kind == YNODE_SEQUENCE) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        implicit = ev->data.sequence_start.implicit;
    } else {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        implicit = ev->data.mapping_start.implicit;
    }
    int r = builder_check_node(b, ev, anchor, tag, implicit);
    if (r < 0)
        return r;
    if (b->depth == POLICY_MAX_DEPTH) {
        pol_diag_error(b->diag, mark_line(&ev->start_mark), mark_column(&ev->start_mark),
                       "nesting deeper than %u levels", POLICY_MAX_DEPTH);
        return -EINVAL;
    }
    ynode *n = builder_new_node(b, kind, ev);
    if (n == NULL)
        return -ENOMEM;
    b->stack[b->depth++] = (build_frame){.node = n};
    return 0;
}

static int builder_close(tree_builder *b) {
    build_frame f = b->stack[--b->depth];
    int r = 0;
    f.node->count = f.count;
    if (f.count > 0) {
        f.node->items = pol_arena_alloc(b->arena, f.count * sizeof(*f.node->items));
        if (f.node->items == NULL)
            r = -ENOMEM;
        else
            memcpy(f.node->items, f.items, f.count * sizeof(*f.node->items));
    }
    free(f.items);
    if (r < 0)
        return r;
    if (f.node->kind == YNODE_MAPPING) {
        for (size_t i = 0; i < f.count; i += 2) {
            if (f.node->items[i]->kind != YNODE_SCALAR) {
                pol_diag_error(b->diag, f.node->items[i]->line, f.node->items[i]->column,
                               "mapping keys must be plain names");
                return -EINVAL;
            }
        }
    }
    return builder_attach(b, f.node);
}

static void builder_release_frames(tree_builder *b) {
    while (b->depth > 0)
        free(b->stack[--b->depth].items);
}

/* Handles one event: returns 1 at the end of the stream, 0 to go on, or a
 * negative errno. */
static int builder_event(tree_builder *b, const yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_END_EVENT:
    case YAML_NO_EVENT:
        return 0;
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1) {
            pol_diag_error(b->diag, mark_line(&ev->start_mark), mark_column(&ev->start_mark),
                           "only one YAML document is allowed in a policy file");
            return -EINVAL;
        }
        return 0;
    case YAML_ALIAS_EVENT:
        pol_diag_error(b->diag, mark_line(&ev->start_mark), mark_column(&ev->start_mark),
                       "anchors and aliases are not supported");
        return -EINVAL;
    case YAML_SCALAR_EVENT:
        return builder_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return builder_open(b, ev, YNODE_SEQUENCE);
    case YAML_MAPPING_START_EVENT:
        return builder_open(b, ev, YNODE_MAPPING);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return builder_close(b);
    }
    return 0;
}

int pol_yaml_parse(const char *text, size_t len, pol_arena *arena, pol_diag *diag, ynode **root) {
    yaml_parser_t parser;
    tree_builder b = {.arena = arena, .diag = diag};
    int r = 0;

    if (!yaml_parser_initialize(&parser))
        return -ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.error == YAML_MEMORY_ERROR) {
                r = -ENOMEM;
            } else if (parser.error == YAML_READER_ERROR) {
                /* Reader errors (bad UTF-8, control bytes) carry a byte
                 * offset rather than a mark. */
                unsigned line = 1, col = 1;
                for (size_t i = 0; i < parser.problem_offset && i < len; i++) {
                    if (text[i] == '\n') {
                        line++;
                        col = 1;
                    } else {
                        col++;
                    }
                }
                pol_diag_error(diag, line, col, "unreadable text: %s",
                               parser.problem ? parser.problem : "invalid bytes");
                r = -EINVAL;
            } else {
                const char *problem = parser.problem ? parser.problem : "malformed YAML";
                const char *context = parser.context;
                if (context != NULL)
                    pol_diag_error(diag, mark_line(&parser.problem_mark),
                                   mark_column(&parser.problem_mark), "YAML syntax error: %s %s",
                                   context, problem);
                else
                    pol_diag_error(diag, mark_line(&parser.problem_mark),
                                   mark_column(&parser.problem_mark), "YAML syntax error: %s",
                                   problem);
                r = -EINVAL;
            }
            break;
        }
        r = builder_event(&b, &ev);
        yaml_event_delete(&ev);
        if (r != 0)
            break;
    }
    yaml_parser_delete(&parser);
    builder_release_frames(&b);
    if (r < 0)
        return r;
    *root = b.root;
    return 0;
}
