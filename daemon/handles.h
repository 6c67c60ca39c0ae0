/* handles.h — a session's resource table: handle number -> object.
 *
 * Pure data structure (no libuv, no system calls): an open-addressing hash
 * map with linear probing and backward-shift deletion, so lookups stay O(1)
 * however handles are created and dropped. Handles are never 0. The table
 * stores borrowed pointers; it never frees what they point to.
 */
#ifndef WASOCKD_HANDLES_H
#define WASOCKD_HANDLES_H

#include <stddef.h>
#include <stdint.h>

typedef struct handle_table {
    struct handle_slot {
        uint32_t handle; /* 0: empty slot */
        void *object;
    } * slots;
    size_t capacity; /* a power of two, or 0 before the first insert */
    size_t count;
} handle_table;

#define HANDLE_TABLE_INIT                                                                          \
    { NULL, 0, 0 }

/* Adds handle -> object. Returns 0, -EINVAL (handle 0 or object NULL),
 * -EEXIST (handle present) or -ENOMEM. */
int handle_table_insert(handle_table *t, uint32_t handle, void *object);

/* The object of a handle, or NULL. The pointer is borrowed. */
void *handle_table_find(const handle_table *t, uint32_t handle);

/* Removes a handle and returns its object (the caller now owns what the
 * table pointed to), or NULL if it was not there. */
void *handle_table_remove(handle_table *t, uint32_t handle);

/* Calls fn(object, data) for every entry, in no particular order. fn must
 * not modify the table. */
void handle_table_foreach(const handle_table *t, void (*fn)(void *object, void *data), void *data);

/* Frees the table's own memory (not the objects) and empties it. */
void handle_table_clear(handle_table *t);

#endif
