/*
 * RqResult: the one result interface for every target that computes rows
 * itself (the gateway's local answers now; plugins and the catalog later).
 * Columns carry Postgres type OIDs; values are held in text form and turned
 * into binary by pgtypes when the client asks for binary, so a target never
 * needs to know which format the client wants.  The session owns results and
 * is the only thing that encodes them (RowDescription, DataRow, the command
 * tag), which keeps portals and row limits in one place.
 */
#ifndef RIFFQ_RESULT_H
#define RIFFQ_RESULT_H

#include <stddef.h>
#include <stdint.h>
#include "riffq/buf.h"
#include "riffq/error.h"

typedef struct RqColumn {
    char *name;             /* owned */
    uint32_t type_oid;
    int16_t type_len;
    int32_t type_mod;
    uint32_t table_oid;     /* non-zero only when the column really is a table's */
    int16_t column;
} RqColumn;

typedef struct RqResult {
    int returns_rows;       /* 0: a command with no row description (NoData) */
    RqColumn *cols;         /* owned */
    size_t n_cols;
    char **vals;            /* n_rows * n_cols, NULL = SQL NULL; owned */
    size_t n_rows, cap_rows;
    char *tag;              /* command tag; for row results "SELECT" is completed with the count */
} RqResult;

void rq_result_init(RqResult *r);
void rq_result_free(RqResult *r);
void rq_result_add_column(RqResult *r, const char *name, uint32_t type_oid);
/* Append a row of n_cols text values (copied; NULL pointers are SQL NULLs). */
void rq_result_add_row(RqResult *r, const char *const *vals);
void rq_result_set_tag(RqResult *r, const char *tag);

/* RowDescription for the result with per-column format codes (n_formats per
 * Bind's 0/1/n rule; formats may be NULL for all text). */
void rq_result_describe(const RqResult *r, const uint8_t *formats, uint16_t n_formats, Buf *out);
/* DataRows for rows [from, from+count).  Returns 0, or -1 when a value
 * cannot be converted to binary (err set). */
int rq_result_rows(const RqResult *r, size_t from, size_t count,
                   const uint8_t *formats, uint16_t n_formats, Buf *out, RqError *err);
/* Check up front that every column can be sent in the requested formats. */
int rq_result_check_formats(const RqResult *r, const uint8_t *formats, uint16_t n_formats,
                            RqError *err);

#endif
