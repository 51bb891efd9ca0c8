/*
 * Postgres built-in types as the gateway needs them: name <-> OID lookup, and
 * conversion between the text and binary wire formats for the common types.
 * Rows computed by the gateway (local answers, plugins, the catalog) are held
 * in text form and turned into binary only when a client asks for binary
 * results; binary Bind parameters are turned into text the same way back.
 *
 * Text forms follow Postgres' output functions exactly (bool "t"/"f", float8
 * shortest round-trip digits with "Infinity"/"NaN", bytea "\x..." hex,
 * timestamps "YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]", ...), because clients parse
 * them.
 *
 * They are the forms of a session at Postgres' default settings (DateStyle
 * ISO, IntervalStyle postgres, extra_float_digits 1, bytea_output hex) with
 * TimeZone UTC: timestamptz and timetz text is printed in UTC ("+00"), and
 * one written without an offset is read as UTC.  A caller that honours the
 * session's TimeZone converts the text afterwards.
 *
 * All three conversions append to out; on error out is left as it was.
 */
#ifndef RIFFQ_PGTYPES_H
#define RIFFQ_PGTYPES_H

#include <stddef.h>
#include <stdint.h>
#include "riffq/buf.h"
#include "riffq/error.h"

enum {
    PGT_BOOL = 16, PGT_BYTEA = 17, PGT_CHAR = 18, PGT_NAME = 19, PGT_INT8 = 20,
    PGT_INT2 = 21, PGT_INT4 = 23, PGT_REGPROC = 24, PGT_TEXT = 25, PGT_OID = 26,
    PGT_JSON = 114, PGT_XML = 142, PGT_FLOAT4 = 700, PGT_FLOAT8 = 701,
    PGT_UNKNOWN = 705, PGT_BPCHAR = 1042, PGT_VARCHAR = 1043, PGT_DATE = 1082,
    PGT_TIME = 1083, PGT_TIMESTAMP = 1114, PGT_TIMESTAMPTZ = 1184,
    PGT_INTERVAL = 1186, PGT_TIMETZ = 1266, PGT_NUMERIC = 1700,
    PGT_REGCLASS = 2205, PGT_REGTYPE = 2206, PGT_UUID = 2950, PGT_JSONB = 3802,
    PGT_INT2_ARRAY = 1005, PGT_INT4_ARRAY = 1007, PGT_TEXT_ARRAY = 1009,
    PGT_INT8_ARRAY = 1016, PGT_OID_ARRAY = 1028, PGT_NAME_ARRAY = 1003,
    PGT_FLOAT8_ARRAY = 1022, PGT_BOOL_ARRAY = 1000, PGT_VARCHAR_ARRAY = 1015,
    PGT_CHAR_ARRAY = 1002
};

typedef struct PgType {
    uint32_t oid;
    const char *name;       /* canonical name as in pg_type.typname */
    int16_t len;            /* typlen: -1 varlena, -2 cstring, else bytes */
    uint32_t elem;          /* element type for arrays, else 0 */
    uint32_t array;         /* array type of this type, or 0 */
    char category;          /* pg_type.typcategory: B, N, S, D, U, A, ... */
} PgType;

/* Lookup by OID, or by name: canonical names ("int4"), SQL spellings
 * ("integer", "bigint", "double precision", "character varying",
 * "timestamp with time zone", "boolean", "decimal", "int", ...), and array
 * spellings ("int4[]", "_int4", "text[]").  Case-insensitive.  NULL if
 * unknown. */
const PgType *pgt_by_oid(uint32_t oid);
const PgType *pgt_by_name(const char *name);

/* Check and normalize a text value for a type, as the type's input function
 * followed by its output function would (e.g. int4 " 42" -> "42", bool "yes"
 * -> "t", numeric "2.50" stays "2.50", float8 "1e3" -> "1000", date
 * "2024-1-2" -> "2024-01-02", uuid upper-case -> lower-case).  On bad input:
 * -1 with err set to 22P02 `invalid input syntax for type integer: "abc"`
 * (or 22003 for out of range, 22008 for bad dates), as Postgres words it.
 * Types it has no input function for are passed through unchanged. */
int pgt_text_normalize(uint32_t oid, const char *in, size_t len, Buf *out, RqError *err);

/* Text form -> binary form (the type's send function).  Supported: bool,
 * int2, int4, int8, oid, float4, float8, numeric, text/varchar/bpchar/name/
 * json/unknown (raw bytes), jsonb (version byte 1 + text), bytea (text is
 * the hex "\x.." or escape form), date, time, timestamp, timestamptz (text
 * with offset, converted to UTC microseconds), interval, uuid, and
 * one-dimensional arrays of those.  Returns 0, or -1 with err (22P02 / 0A000
 * for a type with no binary support: name the type). */
int pgt_text_to_binary(uint32_t oid, const char *text, size_t len, Buf *out, RqError *err);

/* Binary form -> text form (the type's receive then output function), for
 * binary Bind parameters.  Same set of types.  Malformed input (wrong
 * length, ...) gives 22P03 `incorrect binary data format`. */
int pgt_binary_to_text(uint32_t oid, const uint8_t *data, size_t len, Buf *out, RqError *err);

/* Whether pgt_text_to_binary supports the type (so Describe can fall back). */
int pgt_has_binary(uint32_t oid);

#endif
