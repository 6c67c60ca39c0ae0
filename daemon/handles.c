/* handles.c — open-addressing handle table of a session.
 *
 * Input: handle numbers from client frames (untrusted: any u32) for lookups,
 * and from the session's own counter for inserts. A made-up handle simply
 * finds nothing.
 */
#include "handles.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* First allocation: a session usually holds a few sockets. */
#define HANDLE_TABLE_MIN_CAPACITY 16

/* Fibonacci hashing spreads the consecutive handle numbers a session
 * allocates over the table. */
static size_t slot_of(const handle_table *t, uint32_t handle) {
    return (size_t)((handle * 2654435769u) & (uint32_t)(t->capacity - 1));
}

static int grow(handle_table *t) {
    size_t new_capacity = t->capacity == 0 ? HANDLE_TABLE_MIN_CAPACITY : t->capacity * 2;
    struct handle_slot *old = t->slots;
    size_t old_capacity = t->capacity;
    struct handle_slot *slots;

    if (new_capacity > SIZE_MAX / 2 / sizeof(*slots) || new_capacity > UINT32_MAX) {
        return -ENOMEM;
    }
    slots = calloc(new_capacity, sizeof(*slots));
    if (slots == NULL) {
        return -ENOMEM;
    }
    t->slots = slots;
    t->capacity = new_capacity;
    for (size_t i = 0; i < old_capacity; i++) {
        if (old[i].handle != 0) {
            size_t j = slot_of(t, old[i].handle);
            while (slots[j].handle != 0) {
                j = (j + 1) & (new_capacity - 1);
            }
            slots[j] = old[i];
        }
    }
    free(old);
    return 0;
}

int handle_table_insert(handle_table *t, uint32_t handle, void *object) {
    size_t i;

    if (handle == 0 || object == NULL) {
        return -EINVAL;
    }
    if (handle_table_find(t, handle) != NULL) {
        return -EEXIST;
    }
    /* Keep the load at most 1/2 so probe sequences stay short. */
    if ((t->count + 1) * 2 > t->capacity) {
        int r = grow(t);
        if (r < 0) {
            return r;
        }
    }
    i = slot_of(t, handle);
    while (t->slots[i].handle != 0) {
        i = (i + 1) & (t->capacity - 1);
    }
    t->slots[i].handle = handle;
    t->slots[i].object = object;
    t->count++;
    return 0;
}

/* Index of handle's slot, or capacity when absent. */
static size_t find_index(const handle_table *t, uint32_t handle) {
    size_t i;

    if (handle == 0 || t->capacity == 0) {
        return t->capacity;
    }
    i = slot_of(t, handle);
    /* The load factor guarantees an empty slot, so this ends. */
    while (t->slots[i].handle != 0) {
        if (t->slots[i].handle == handle) {
            return i;
        }
        i = (i + 1) & (t->capacity - 1);
    }
    return t->capacity;
}

void *handle_table_find(const handle_table *t, uint32_t handle) {
    size_t i = find_index(t, handle);

    return i == t->capacity ? NULL : t->slots[i].object;
}

/* True when home slot h lies cyclically in (gap, i]: then the entry at i may
 * not move back to the gap without becoming unreachable. */
static bool home_between(size_t gap, size_t h, size_t i) {
    if (gap <= i) {
        return gap < h && h <= i;
    }
    return gap < h || h <= i;
}

void *handle_table_remove(handle_table *t, uint32_t handle) {
    size_t gap = find_index(t, handle);
    size_t mask = t->capacity - 1;
    void *object;

    if (gap == t->capacity) {
        return NULL;
    }
    object = t->slots[gap].object;
    /* Backward-shift deletion: move later entries of the probe run into the
     * gap when that keeps them reachable; no tombstones accumulate. */
    for (size_t i = (gap + 1) & mask; t->slots[i].handle != 0; i = (i + 1) & mask) {
        size_t home = slot_of(t, t->slots[i].handle);
        if (!home_between(gap, home, i)) {
            t->slots[gap] = t->slots[i];
            gap = i;
        }
    }
    t->slots[gap].handle = 0;
    t->slots[gap].object = NULL;
    t->count--;
    return object;
}

void handle_table_foreach(const handle_table *t, void (*fn)(void *object, void *data), void *data) {
    for (size_t i = 0; i < t->capacity; i++) {
        if (t->slots[i].handle != 0) {
            fn(t->slots[i].object, data);
        }
    }
}

void handle_table_clear(handle_table *t) {
    free(t->slots);
    t->slots = NULL;
    t->capacity = 0;
    t->count = 0;
}
