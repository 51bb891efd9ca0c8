/*
 * Arrow results through the Arrow C data interface and its C stream
 * interface (arrow.apache.org/docs/format/CDataInterface.html and
 * CStreamInterface.html), without any Arrow library: the ABI is three small
 * structs with release callbacks, declared here exactly as the spec does
 * (including its include guards, so that a header of a real Arrow library
 * included later declares nothing twice).
 *
 * arrow.c consumes streams that handlers return (pyarrow, DuckDB, Polars,
 * riffq.helpers.to_arrow, or a bare "arrow_array_stream" PyCapsule) and
 * produces them for riffq.helpers.to_arrow (the riffq._ArrowBatch type);
 * its entry points are declared in plugin_internal.h.
 */
#ifndef RIFFQ_PLUGIN_ARROW_H
#define RIFFQ_PLUGIN_ARROW_H

#include <stdint.h>

#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

#endif /* ARROW_C_DATA_INTERFACE */

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

#endif /* ARROW_C_STREAM_INTERFACE */

#endif
