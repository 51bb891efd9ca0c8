/*
 * Postgres built-in types: the pg_type rows the gateway needs, and the text
 * and binary wire forms of the common types (see include/riffq/pgtypes.h).
 *
 * Every supported type is one Codec: a parser for its text form (what the
 * type's input function accepts), a printer for its text form (what its
 * output function prints), and the binary send/receive pair.  Both directions
 * go through one in-memory value (Val), so normalizing, text -> binary and
 * binary -> text are each just two codec calls, and an array is a loop over
 * its element type's codec.
 *
 * The rules are Postgres 15's, checked against a real server (the unit tests
 * hold the bytes and strings it produced): same accepted spellings, same
 * output text, byte-exact binary forms, same SQLSTATEs and messages.  The
 * session settings that change Postgres' output are assumed at their
 * defaults: DateStyle ISO, IntervalStyle postgres, extra_float_digits 1,
 * bytea_output hex, and TimeZone UTC.  So timestamptz text is printed in UTC
 * ("+00"); a caller that honours the session's TimeZone converts afterwards.
 * A timestamptz or timetz written without an offset is read as UTC for the
 * same reason.
 *
 * Deliberately not supported (each reported with a clear error): date/time
 * words that depend on the clock ("now", "today"), time zone names and
 * abbreviations other than UTC/GMT/Z (numeric offsets are fine), and binary
 * arrays of more than one dimension (the text form of those is handled).
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "riffq/pgtypes.h"

/* ------------------------------------------------------------------------
 * The type table.  Rows are pg_type's (oid, typname, typlen, typelem,
 * typarray, typcategory) for every built-in base, pseudo, range and
 * multirange type of Postgres 15, generated from a real server with
 *   SELECT oid, typname, typlen, typelem, typarray, typcategory
 *   FROM pg_type WHERE typnamespace = 11 ...
 * so clients that compare them with their own tables see no difference.
 * Note that pg_type gives "name" typelem 18 (it is subscriptable as chars)
 * and int2vector/oidvector are category 'A' without being ordinary arrays;
 * array handling below only treats "_"-named varlena types as arrays.
 * Kept sorted by OID for bsearch.
 * ------------------------------------------------------------------------ */
static const PgType pg_types[] = {
    { 16, "bool", 1, 0, 1000, 'B' },
    { 17, "bytea", -1, 0, 1001, 'U' },
    { 18, "char", 1, 0, 1002, 'Z' },
    { 19, "name", 64, 18, 1003, 'S' },
    { 20, "int8", 8, 0, 1016, 'N' },
    { 21, "int2", 2, 0, 1005, 'N' },
    { 22, "int2vector", -1, 21, 1006, 'A' },
    { 23, "int4", 4, 0, 1007, 'N' },
    { 24, "regproc", 4, 0, 1008, 'N' },
    { 25, "text", -1, 0, 1009, 'S' },
    { 26, "oid", 4, 0, 1028, 'N' },
    { 27, "tid", 6, 0, 1010, 'U' },
    { 28, "xid", 4, 0, 1011, 'U' },
    { 29, "cid", 4, 0, 1012, 'U' },
    { 30, "oidvector", -1, 26, 1013, 'A' },
    { 114, "json", -1, 0, 199, 'U' },
    { 142, "xml", -1, 0, 143, 'U' },
    { 143, "_xml", -1, 142, 0, 'A' },
    { 194, "pg_node_tree", -1, 0, 0, 'Z' },
    { 199, "_json", -1, 114, 0, 'A' },
    { 269, "table_am_handler", 4, 0, 0, 'P' },
    { 271, "_xid8", -1, 5069, 0, 'A' },
    { 325, "index_am_handler", 4, 0, 0, 'P' },
    { 600, "point", 16, 701, 1017, 'G' },
    { 601, "lseg", 32, 600, 1018, 'G' },
    { 602, "path", -1, 0, 1019, 'G' },
    { 603, "box", 32, 600, 1020, 'G' },
    { 604, "polygon", -1, 0, 1027, 'G' },
    { 628, "line", 24, 701, 629, 'G' },
    { 629, "_line", -1, 628, 0, 'A' },
    { 650, "cidr", -1, 0, 651, 'I' },
    { 651, "_cidr", -1, 650, 0, 'A' },
    { 700, "float4", 4, 0, 1021, 'N' },
    { 701, "float8", 8, 0, 1022, 'N' },
    { 705, "unknown", -2, 0, 0, 'X' },
    { 718, "circle", 24, 0, 719, 'G' },
    { 719, "_circle", -1, 718, 0, 'A' },
    { 774, "macaddr8", 8, 0, 775, 'U' },
    { 775, "_macaddr8", -1, 774, 0, 'A' },
    { 790, "money", 8, 0, 791, 'N' },
    { 791, "_money", -1, 790, 0, 'A' },
    { 829, "macaddr", 6, 0, 1040, 'U' },
    { 869, "inet", -1, 0, 1041, 'I' },
    { 1000, "_bool", -1, 16, 0, 'A' },
    { 1001, "_bytea", -1, 17, 0, 'A' },
    { 1002, "_char", -1, 18, 0, 'A' },
    { 1003, "_name", -1, 19, 0, 'A' },
    { 1005, "_int2", -1, 21, 0, 'A' },
    { 1006, "_int2vector", -1, 22, 0, 'A' },
    { 1007, "_int4", -1, 23, 0, 'A' },
    { 1008, "_regproc", -1, 24, 0, 'A' },
    { 1009, "_text", -1, 25, 0, 'A' },
    { 1010, "_tid", -1, 27, 0, 'A' },
    { 1011, "_xid", -1, 28, 0, 'A' },
    { 1012, "_cid", -1, 29, 0, 'A' },
    { 1013, "_oidvector", -1, 30, 0, 'A' },
    { 1014, "_bpchar", -1, 1042, 0, 'A' },
    { 1015, "_varchar", -1, 1043, 0, 'A' },
    { 1016, "_int8", -1, 20, 0, 'A' },
    { 1017, "_point", -1, 600, 0, 'A' },
    { 1018, "_lseg", -1, 601, 0, 'A' },
    { 1019, "_path", -1, 602, 0, 'A' },
    { 1020, "_box", -1, 603, 0, 'A' },
    { 1021, "_float4", -1, 700, 0, 'A' },
    { 1022, "_float8", -1, 701, 0, 'A' },
    { 1027, "_polygon", -1, 604, 0, 'A' },
    { 1028, "_oid", -1, 26, 0, 'A' },
    { 1033, "aclitem", 12, 0, 1034, 'U' },
    { 1034, "_aclitem", -1, 1033, 0, 'A' },
    { 1040, "_macaddr", -1, 829, 0, 'A' },
    { 1041, "_inet", -1, 869, 0, 'A' },
    { 1042, "bpchar", -1, 0, 1014, 'S' },
    { 1043, "varchar", -1, 0, 1015, 'S' },
    { 1082, "date", 4, 0, 1182, 'D' },
    { 1083, "time", 8, 0, 1183, 'D' },
    { 1114, "timestamp", 8, 0, 1115, 'D' },
    { 1115, "_timestamp", -1, 1114, 0, 'A' },
    { 1182, "_date", -1, 1082, 0, 'A' },
    { 1183, "_time", -1, 1083, 0, 'A' },
    { 1184, "timestamptz", 8, 0, 1185, 'D' },
    { 1185, "_timestamptz", -1, 1184, 0, 'A' },
    { 1186, "interval", 16, 0, 1187, 'T' },
    { 1187, "_interval", -1, 1186, 0, 'A' },
    { 1231, "_numeric", -1, 1700, 0, 'A' },
    { 1263, "_cstring", -1, 2275, 0, 'A' },
    { 1266, "timetz", 12, 0, 1270, 'D' },
    { 1270, "_timetz", -1, 1266, 0, 'A' },
    { 1560, "bit", -1, 0, 1561, 'V' },
    { 1561, "_bit", -1, 1560, 0, 'A' },
    { 1562, "varbit", -1, 0, 1563, 'V' },
    { 1563, "_varbit", -1, 1562, 0, 'A' },
    { 1700, "numeric", -1, 0, 1231, 'N' },
    { 1790, "refcursor", -1, 0, 2201, 'U' },
    { 2201, "_refcursor", -1, 1790, 0, 'A' },
    { 2202, "regprocedure", 4, 0, 2207, 'N' },
    { 2203, "regoper", 4, 0, 2208, 'N' },
    { 2204, "regoperator", 4, 0, 2209, 'N' },
    { 2205, "regclass", 4, 0, 2210, 'N' },
    { 2206, "regtype", 4, 0, 2211, 'N' },
    { 2207, "_regprocedure", -1, 2202, 0, 'A' },
    { 2208, "_regoper", -1, 2203, 0, 'A' },
    { 2209, "_regoperator", -1, 2204, 0, 'A' },
    { 2210, "_regclass", -1, 2205, 0, 'A' },
    { 2211, "_regtype", -1, 2206, 0, 'A' },
    { 2249, "record", -1, 0, 2287, 'P' },
    { 2275, "cstring", -2, 0, 1263, 'P' },
    { 2276, "any", 4, 0, 0, 'P' },
    { 2277, "anyarray", -1, 0, 0, 'P' },
    { 2278, "void", 4, 0, 0, 'P' },
    { 2279, "trigger", 4, 0, 0, 'P' },
    { 2280, "language_handler", 4, 0, 0, 'P' },
    { 2281, "internal", 8, 0, 0, 'P' },
    { 2283, "anyelement", 4, 0, 0, 'P' },
    { 2287, "_record", -1, 2249, 0, 'P' },
    { 2776, "anynonarray", 4, 0, 0, 'P' },
    { 2949, "_txid_snapshot", -1, 2970, 0, 'A' },
    { 2950, "uuid", 16, 0, 2951, 'U' },
    { 2951, "_uuid", -1, 2950, 0, 'A' },
    { 2970, "txid_snapshot", -1, 0, 2949, 'U' },
    { 3115, "fdw_handler", 4, 0, 0, 'P' },
    { 3220, "pg_lsn", 8, 0, 3221, 'U' },
    { 3221, "_pg_lsn", -1, 3220, 0, 'A' },
    { 3310, "tsm_handler", 4, 0, 0, 'P' },
    { 3361, "pg_ndistinct", -1, 0, 0, 'Z' },
    { 3402, "pg_dependencies", -1, 0, 0, 'Z' },
    { 3500, "anyenum", 4, 0, 0, 'P' },
    { 3614, "tsvector", -1, 0, 3643, 'U' },
    { 3615, "tsquery", -1, 0, 3645, 'U' },
    { 3642, "gtsvector", -1, 0, 3644, 'U' },
    { 3643, "_tsvector", -1, 3614, 0, 'A' },
    { 3644, "_gtsvector", -1, 3642, 0, 'A' },
    { 3645, "_tsquery", -1, 3615, 0, 'A' },
    { 3734, "regconfig", 4, 0, 3735, 'N' },
    { 3735, "_regconfig", -1, 3734, 0, 'A' },
    { 3769, "regdictionary", 4, 0, 3770, 'N' },
    { 3770, "_regdictionary", -1, 3769, 0, 'A' },
    { 3802, "jsonb", -1, 0, 3807, 'U' },
    { 3807, "_jsonb", -1, 3802, 0, 'A' },
    { 3831, "anyrange", -1, 0, 0, 'P' },
    { 3838, "event_trigger", 4, 0, 0, 'P' },
    { 3904, "int4range", -1, 0, 3905, 'R' },
    { 3905, "_int4range", -1, 3904, 0, 'A' },
    { 3906, "numrange", -1, 0, 3907, 'R' },
    { 3907, "_numrange", -1, 3906, 0, 'A' },
    { 3908, "tsrange", -1, 0, 3909, 'R' },
    { 3909, "_tsrange", -1, 3908, 0, 'A' },
    { 3910, "tstzrange", -1, 0, 3911, 'R' },
    { 3911, "_tstzrange", -1, 3910, 0, 'A' },
    { 3912, "daterange", -1, 0, 3913, 'R' },
    { 3913, "_daterange", -1, 3912, 0, 'A' },
    { 3926, "int8range", -1, 0, 3927, 'R' },
    { 3927, "_int8range", -1, 3926, 0, 'A' },
    { 4072, "jsonpath", -1, 0, 4073, 'U' },
    { 4073, "_jsonpath", -1, 4072, 0, 'A' },
    { 4089, "regnamespace", 4, 0, 4090, 'N' },
    { 4090, "_regnamespace", -1, 4089, 0, 'A' },
    { 4096, "regrole", 4, 0, 4097, 'N' },
    { 4097, "_regrole", -1, 4096, 0, 'A' },
    { 4191, "regcollation", 4, 0, 4192, 'N' },
    { 4192, "_regcollation", -1, 4191, 0, 'A' },
    { 4451, "int4multirange", -1, 0, 6150, 'R' },
    { 4532, "nummultirange", -1, 0, 6151, 'R' },
    { 4533, "tsmultirange", -1, 0, 6152, 'R' },
    { 4534, "tstzmultirange", -1, 0, 6153, 'R' },
    { 4535, "datemultirange", -1, 0, 6155, 'R' },
    { 4536, "int8multirange", -1, 0, 6157, 'R' },
    { 4537, "anymultirange", -1, 0, 0, 'P' },
    { 4538, "anycompatiblemultirange", -1, 0, 0, 'P' },
    { 4600, "pg_brin_bloom_summary", -1, 0, 0, 'Z' },
    { 4601, "pg_brin_minmax_multi_summary", -1, 0, 0, 'Z' },
    { 5017, "pg_mcv_list", -1, 0, 0, 'Z' },
    { 5038, "pg_snapshot", -1, 0, 5039, 'U' },
    { 5039, "_pg_snapshot", -1, 5038, 0, 'A' },
    { 5069, "xid8", 8, 0, 271, 'U' },
    { 5077, "anycompatible", 4, 0, 0, 'P' },
    { 5078, "anycompatiblearray", -1, 0, 0, 'P' },
    { 5079, "anycompatiblenonarray", 4, 0, 0, 'P' },
    { 5080, "anycompatiblerange", -1, 0, 0, 'P' },
    { 6150, "_int4multirange", -1, 4451, 0, 'A' },
    { 6151, "_nummultirange", -1, 4532, 0, 'A' },
    { 6152, "_tsmultirange", -1, 4533, 0, 'A' },
    { 6153, "_tstzmultirange", -1, 4534, 0, 'A' },
    { 6155, "_datemultirange", -1, 4535, 0, 'A' },
    { 6157, "_int8multirange", -1, 4536, 0, 'A' },
};

#define N_TYPES (sizeof pg_types / sizeof pg_types[0])

static int cmp_type_oid(const void *key, const void *elem)
{
    uint32_t k = *(const uint32_t *)key, o = ((const PgType *)elem)->oid;
    return k < o ? -1 : k > o;
}

const PgType *pgt_by_oid(uint32_t oid)
{
    return bsearch(&oid, pg_types, N_TYPES, sizeof pg_types[0], cmp_type_oid);
}

/* SQL spellings of types, as the grammar or users write them.  "char"
 * itself is left to the table (it is the one-byte type, which is what a
 * parse tree's quoted "char" means; the grammar turns SQL CHAR into bpchar). */
static const struct { const char *alias; uint32_t oid; } type_aliases[] = {
    { "boolean", PGT_BOOL },
    { "smallint", PGT_INT2 },
    { "integer", PGT_INT4 }, { "int", PGT_INT4 },
    { "bigint", PGT_INT8 },
    { "real", PGT_FLOAT4 },
    { "double precision", PGT_FLOAT8 }, { "float", PGT_FLOAT8 },
    { "decimal", PGT_NUMERIC },
    { "character varying", PGT_VARCHAR }, { "char varying", PGT_VARCHAR },
    { "character", PGT_BPCHAR },
    { "timestamp without time zone", PGT_TIMESTAMP },
    { "timestamp with time zone", PGT_TIMESTAMPTZ },
    { "time without time zone", PGT_TIME },
    { "time with time zone", PGT_TIMETZ },
    { "bit varying", 1562 },
};

const PgType *pgt_by_name(const char *name)
{
    char buf[96];
    size_t n = 0;
    int array = 0;

    if (!name) return NULL;
    /* lower-case and collapse runs of blanks, so "Double  Precision" matches */
    for (const char *p = name; *p; p++) {
        if (isspace((unsigned char)*p)) {
            if (n > 0 && buf[n - 1] != ' ') buf[n++] = ' ';
        } else {
            buf[n++] = (char)tolower((unsigned char)*p);
        }
        if (n >= sizeof buf - 1) return NULL;
    }
    while (n > 0 && buf[n - 1] == ' ') n--;
    buf[n] = 0;
    /* "int4[]" and "int4 []" name the array type */
    if (n >= 2 && strcmp(buf + n - 2, "[]") == 0) {
        array = 1;
        n -= 2;
        while (n > 0 && buf[n - 1] == ' ') n--;
        buf[n] = 0;
    }
    if (n == 0) return NULL;

    const PgType *t = NULL;
    for (size_t i = 0; i < N_TYPES && !t; i++)
        if (strcmp(pg_types[i].name, buf) == 0) t = &pg_types[i];
    for (size_t i = 0; i < sizeof type_aliases / sizeof type_aliases[0] && !t; i++)
        if (strcmp(type_aliases[i].alias, buf) == 0) t = pgt_by_oid(type_aliases[i].oid);
    if (t && array) t = t->array ? pgt_by_oid(t->array) : NULL;
    return t;
}

/* An ordinary array type (the "_foo" varlena ones), as opposed to
 * int2vector/oidvector, which share category 'A' but not the format. */
static const PgType *array_elem_type(uint32_t oid)
{
    const PgType *t = pgt_by_oid(oid);
    if (!t || t->category != 'A' || t->len != -1 || t->name[0] != '_' || !t->elem)
        return NULL;
    return pgt_by_oid(t->elem);
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/* Postgres' scanner-independent isspace(): the C locale's six blanks. */
static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int bad_syntax(RqError *err, const char *type, const char *s)
{
    rq_error_set(err, "22P02", "invalid input syntax for type %s: \"%s\"", type, s);
    return -1;
}

static int out_of_range(RqError *err, const char *type, const char *s)
{
    rq_error_set(err, "22003", "value \"%s\" is out of range for type %s", s, type);
    return -1;
}

/* Binary input that does not hold what the type's receive function reads.
 * Postgres says "incorrect binary data format in bind parameter N" (22P03)
 * when bytes are left over and "insufficient data left in message" (08P01)
 * when they run out; both are the parameter's fault rather than a framing
 * error, so both are 22P03 here, with the type and sizes named.  The session
 * adds which parameter it was. */
static int bad_binary_len(RqError *err, const char *type, size_t want, size_t got)
{
    rq_error_set(err, "22P03",
                 "incorrect binary data format: type %s needs %zu bytes, got %zu",
                 type, want, got);
    return -1;
}

static int bad_binary(RqError *err, const char *msg)
{
    rq_error_set(err, "22P03", "%s", msg);
    return -1;
}

/* big-endian readers over exactly-sized input */
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) << 32 | get_u32(p + 4); }

/* Length of a valid UTF-8 character at p (n bytes available), or 0 if the
 * bytes there are not one.  Same acceptance as Postgres' pg_utf8_islegal:
 * no overlong forms, no surrogates, nothing past U+10FFFF, no NUL. */
static size_t utf8_char_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (len == 0 || len > n) return 0;
    switch (len) {
    case 4:
        if (p[3] < 0x80 || p[3] > 0xBF) return 0;
        /* fall through */
    case 3:
        if (p[2] < 0x80 || p[2] > 0xBF) return 0;
        /* fall through */
    case 2:
        switch (c) {
        case 0xE0: if (p[1] < 0xA0 || p[1] > 0xBF) return 0; break;
        case 0xED: if (p[1] < 0x80 || p[1] > 0x9F) return 0; break;
        case 0xF0: if (p[1] < 0x90 || p[1] > 0xBF) return 0; break;
        case 0xF4: if (p[1] < 0x80 || p[1] > 0x8F) return 0; break;
        default: if (p[1] < 0x80 || p[1] > 0xBF) return 0; break;
        }
        if (c < 0xC2 || c > 0xF4) return 0;
    }
    return len;
}

/* Check that text received in binary form is valid UTF-8 (the only server
 * encoding the gateway speaks), with Postgres' error: the bytes of the bad
 * character, as many as its first byte announces. */
static int check_utf8(const uint8_t *p, size_t n, RqError *err)
{
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_char_len(p + i, n - i);
        if (l == 0) {
            uint8_t c = p[i];
            size_t want = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC0 && c < 0xE0 ? 2 : 1;
            if (want > n - i) want = n - i;
            Buf m;
            buf_init(&m);
            for (size_t j = 0; j < want; j++)
                buf_printf(&m, "%s0x%02x", j ? " " : "", p[i + j]);
            buf_append_byte(&m, 0);
            rq_error_set(err, "22021", "invalid byte sequence for encoding \"UTF8\": %s", m.data);
            buf_free(&m);
            return -1;
        }
        i += l;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Values and codecs
 * ------------------------------------------------------------------------ */

/* A numeric in Postgres' external layout: base-10000 digits, weight of the
 * first one, display scale, and the sign word (which also marks NaN and the
 * infinities). */
#define NUM_POS  0x0000
#define NUM_NEG  0x4000
#define NUM_NAN  0xC000
#define NUM_PINF 0xD000
#define NUM_NINF 0xF000
#define NUM_DSCALE_MAX 0x3FFF

typedef struct Num {
    uint16_t sign;
    int weight;
    int dscale;
    int ndigits;
    int16_t *digits;        /* owned, ndigits long */
} Num;

/* One decoded value of any supported type; which fields mean something
 * depends on the codec.  val_free releases what it owns. */
typedef struct Val {
    int64_t i;              /* integers, bool, char, oid, date, time, timestamps, interval time */
    int32_t day, month;     /* interval */
    int32_t zone;           /* timetz: seconds west of UTC, as Postgres stores it */
    double f;               /* float8, and float4 widened exactly */
    uint8_t uuid[16];
    Num num;
    Buf bytes;              /* text-like types, bytea, json, normalized jsonb */
} Val;

static void val_init(Val *v) { memset(v, 0, sizeof *v); buf_init(&v->bytes); }
static void val_free(Val *v) { free(v->num.digits); buf_free(&v->bytes); }

typedef struct Codec Codec;
struct Codec {
    uint32_t oid;
    const char *sqlname;    /* the type as format_type() spells it in messages */
    int binlen;             /* fixed binary length, or -1 */
    /* s is NUL-terminated and n long (text types keep embedded bytes) */
    int (*in)(const Codec *c, const char *s, size_t n, Val *v, RqError *err);
    void (*out)(const Codec *c, const Val *v, Buf *b);
    void (*send)(const Codec *c, const Val *v, Buf *b);
    /* called with n == binlen for fixed-length types */
    int (*recv)(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err);
};

/* ------------------------------------------------------------------------
 * bool: boolin/boolout/boolsend/boolrecv
 * ------------------------------------------------------------------------ */

/* Any prefix of the word, case-insensitively (what parse_bool_with_len
 * accepts: "t", "tr", "TRUE", "ye" all mean true). */
static int is_prefix_of(const char *s, size_t len, const char *word, size_t minlen)
{
    return len >= minlen && len <= strlen(word) && strncasecmp(s, word, len) == 0;
}

static int bool_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n;
    const char *p = s;
    while (is_space((unsigned char)*p)) p++;
    size_t len = strlen(p);
    while (len > 0 && is_space((unsigned char)p[len - 1])) len--;
    int r = -1;
    switch (tolower((unsigned char)*p)) {
    case 't': if (is_prefix_of(p, len, "true", 1)) r = 1; break;
    case 'f': if (is_prefix_of(p, len, "false", 1)) r = 0; break;
    case 'y': if (is_prefix_of(p, len, "yes", 1)) r = 1; break;
    case 'n': if (is_prefix_of(p, len, "no", 1)) r = 0; break;
    case 'o':   /* a lone "o" could be on or off */
        if (is_prefix_of(p, len, "on", 2)) r = 1;
        else if (is_prefix_of(p, len, "off", 2)) r = 0;
        break;
    case '1': if (len == 1) r = 1; break;
    case '0': if (len == 1) r = 0; break;
    }
    if (r < 0) return bad_syntax(err, "boolean", s);
    v->i = r;
    return 0;
}

static void bool_out(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append_byte(b, v->i ? 't' : 'f'); }
static void bool_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append_byte(b, v->i ? 1 : 0); }
static int bool_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n; (void)err;
    v->i = d[0] != 0;       /* boolrecv takes any nonzero byte as true */
    return 0;
}

/* ------------------------------------------------------------------------
 * int2, int4, int8: pg_strtoint16/32/64 — blanks around, optional sign, at
 * least one digit, nothing else.  Overflow is reported as soon as it is
 * seen, before trailing junk, as Postgres does.
 * ------------------------------------------------------------------------ */

static int int_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)n;
    int64_t lo = c->binlen == 2 ? INT16_MIN : c->binlen == 4 ? INT32_MIN : INT64_MIN;
    int64_t hi = c->binlen == 2 ? INT16_MAX : c->binlen == 4 ? INT32_MAX : INT64_MAX;
    const char *p = s;
    int neg = 0;
    while (is_space((unsigned char)*p)) p++;
    if (*p == '-') { neg = 1; p++; }
    else if (*p == '+') p++;
    if (!isdigit((unsigned char)*p)) return bad_syntax(err, c->sqlname, s);
    /* accumulate as a negative number so INT64_MIN fits */
    int64_t acc = 0;
    for (; isdigit((unsigned char)*p); p++) {
        int d = *p - '0';
        if (acc < (INT64_MIN + d) / 10) return out_of_range(err, c->sqlname, s);
        acc = acc * 10 - d;
    }
    if (!neg) {
        if (acc < -hi) return out_of_range(err, c->sqlname, s);
        acc = -acc;
    } else if (acc < lo) {
        return out_of_range(err, c->sqlname, s);
    }
    while (is_space((unsigned char)*p)) p++;
    if (*p) return bad_syntax(err, c->sqlname, s);
    v->i = acc;
    return 0;
}

static void int_out(const Codec *c, const Val *v, Buf *b) { (void)c; buf_printf(b, "%lld", (long long)v->i); }

static void int_send(const Codec *c, const Val *v, Buf *b)
{
    if (c->binlen == 2) buf_append_u16(b, (uint16_t)v->i);
    else if (c->binlen == 4) buf_append_u32(b, (uint32_t)v->i);
    else buf_append_u64(b, (uint64_t)v->i);
}

static int int_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)n; (void)err;
    if (c->binlen == 2) v->i = (int16_t)get_u16(d);
    else if (c->binlen == 4) v->i = (int32_t)get_u32(d);
    else v->i = (int64_t)get_u64(d);
    return 0;
}

/* oid: strtoul as oidin does, which also takes "-1" (as 4294967295); any
 * value fitting either uint32 or int32 is accepted. */
static int oid_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)n;
    char *end;
    errno = 0;
    unsigned long cvt = strtoul(s, &end, 10);
    if (errno && errno != ERANGE && errno != EINVAL) return bad_syntax(err, c->sqlname, s);
    if (end == s) return bad_syntax(err, c->sqlname, s);
    if (errno == ERANGE) return out_of_range(err, c->sqlname, s);
    while (is_space((unsigned char)*end)) end++;
    if (*end) return bad_syntax(err, c->sqlname, s);
    uint32_t r = (uint32_t)cvt;
    if (cvt != (unsigned long)r && cvt != (unsigned long)(long)(int32_t)r)
        return out_of_range(err, c->sqlname, s);
    v->i = r;
    return 0;
}

static void oid_out(const Codec *c, const Val *v, Buf *b) { (void)c; buf_printf(b, "%u", (uint32_t)v->i); }
static void oid_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append_u32(b, (uint32_t)v->i); }
static int oid_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n; (void)err;
    v->i = get_u32(d);
    return 0;
}

/* ------------------------------------------------------------------------
 * "char": one byte.  charin takes the first byte, or a \ooo octal escape;
 * charout prints high-bit bytes as \ooo and the zero byte as "".
 * ------------------------------------------------------------------------ */

static int is_octal(int ch) { return ch >= '0' && ch <= '7'; }

static int char_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n; (void)err;
    if (strlen(s) == 4 && s[0] == '\\' && is_octal(s[1]) && is_octal(s[2]) && is_octal(s[3]))
        v->i = (uint8_t)(((s[1] - '0') << 6) + ((s[2] - '0') << 3) + (s[3] - '0'));
    else
        v->i = (uint8_t)s[0];
    return 0;
}

static void char_out(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    uint8_t ch = (uint8_t)v->i;
    if (ch & 0x80) buf_printf(b, "\\%03o", ch);
    else if (ch) buf_append_byte(b, ch);
}

static void char_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append_byte(b, (uint8_t)v->i); }
static int char_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n; (void)err;
    v->i = d[0];
    return 0;
}

/* ------------------------------------------------------------------------
 * Text-like types (text, varchar, bpchar without length, unknown, xml, json
 * in binary): the bytes as they are.  Received text must be valid UTF-8.
 * ------------------------------------------------------------------------ */

static int text_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c; (void)err;
    buf_append(&v->bytes, s, n);
    return 0;
}

static void bytes_out(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append(b, v->bytes.data, v->bytes.len); }

static int text_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c;
    if (check_utf8(d, n, err) < 0) return -1;
    buf_append(&v->bytes, d, n);
    return 0;
}

/* name: namein silently cuts the value to NAMEDATALEN-1 = 63 bytes, without
 * splitting a character; namerecv rejects a long one instead. */
#define NAME_MAX_BYTES 63

static int name_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c; (void)err;
    size_t len = strlen(s);
    (void)n;
    if (len > NAME_MAX_BYTES) {
        size_t keep = 0;
        while (keep < len) {
            size_t l = utf8_char_len((const uint8_t *)s + keep, len - keep);
            if (l == 0) l = 1;
            if (keep + l > NAME_MAX_BYTES) break;
            keep += l;
        }
        len = keep;
    }
    buf_append(&v->bytes, s, len);
    return 0;
}

static int name_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    if (text_recv(c, d, n, v, err) < 0) return -1;
    if (n > NAME_MAX_BYTES) {
        rq_error_set(err, "42622", "identifier too long");
        rq_error_detail(err, "Identifier must be less than %d characters.", NAME_MAX_BYTES + 1);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * bytea: text is "\x" + hex (blanks allowed between byte pairs) or the
 * traditional escape form (\\ and \ooo); output is always hex.
 * ------------------------------------------------------------------------ */

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int bad_hex_digit(RqError *err, const char *p, const char *end)
{
    size_t l = utf8_char_len((const uint8_t *)p, (size_t)(end - p));
    if (l == 0) l = 1;
    rq_error_set(err, "22023", "invalid hexadecimal digit: \"%.*s\"", (int)l, p);
    return -1;
}

static int bytea_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c;
    const char *end = s + strlen(s);
    (void)n;
    if (s[0] == '\\' && s[1] == 'x') {
        for (const char *p = s + 2; p < end;) {
            if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') { p++; continue; }
            int hi = hex_val((unsigned char)*p);
            if (hi < 0) return bad_hex_digit(err, p, end);
            if (++p >= end) {
                rq_error_set(err, "22023", "invalid hexadecimal data: odd number of digits");
                return -1;
            }
            int lo = hex_val((unsigned char)*p);
            if (lo < 0) return bad_hex_digit(err, p, end);
            p++;
            buf_append_byte(&v->bytes, (uint8_t)(hi << 4 | lo));
        }
        return 0;
    }
    for (const char *p = s; p < end;) {
        if (p[0] != '\\') {
            buf_append_byte(&v->bytes, (uint8_t)*p++);
        } else if (p[1] >= '0' && p[1] <= '3' && is_octal(p[2]) && is_octal(p[3])) {
            buf_append_byte(&v->bytes, (uint8_t)(((p[1] - '0') << 6) | ((p[2] - '0') << 3) | (p[3] - '0')));
            p += 4;
        } else if (p[1] == '\\') {
            buf_append_byte(&v->bytes, '\\');
            p += 2;
        } else {
            rq_error_set(err, "22P02", "invalid input syntax for type bytea");
            return -1;
        }
    }
    return 0;
}

static void bytea_out(const Codec *c, const Val *v, Buf *b)
{
    static const char hexd[] = "0123456789abcdef";
    (void)c;
    buf_reserve(b, 2 + v->bytes.len * 2);
    buf_append(b, "\\x", 2);
    for (size_t i = 0; i < v->bytes.len; i++) {
        uint8_t x = (uint8_t)v->bytes.data[i];
        char two[2] = { hexd[x >> 4], hexd[x & 15] };
        buf_append(b, two, 2);
    }
}

static int bytea_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)err;
    buf_append(&v->bytes, d, n);
    return 0;
}

/* ------------------------------------------------------------------------
 * uuid: 32 hex digits, optionally in braces, with a hyphen allowed after
 * any group of four; no blanks.  Output is the lower-case 8-4-4-4-12 form.
 * ------------------------------------------------------------------------ */

static int uuid_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)n;
    const char *p = s;
    int braces = 0;
    if (*p == '{') { p++; braces = 1; }
    for (int i = 0; i < 16; i++) {
        int hi = p[0] ? hex_val((unsigned char)p[0]) : -1;
        int lo = hi >= 0 && p[1] ? hex_val((unsigned char)p[1]) : -1;
        if (hi < 0 || lo < 0) return bad_syntax(err, c->sqlname, s);
        v->uuid[i] = (uint8_t)(hi << 4 | lo);
        p += 2;
        if (*p == '-' && i % 2 == 1 && i < 15) p++;
    }
    if (braces) {
        if (*p != '}') return bad_syntax(err, c->sqlname, s);
        p++;
    }
    if (*p) return bad_syntax(err, c->sqlname, s);
    return 0;
}

static void uuid_out(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    const uint8_t *u = v->uuid;
    buf_printf(b, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
               u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
               u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

static void uuid_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append(b, v->uuid, 16); }
static int uuid_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n; (void)err;
    memcpy(v->uuid, d, 16);
    return 0;
}

/* ------------------------------------------------------------------------
 * float4, float8
 *
 * Input is strtod/strtof, as float8in/float4in use them, with Postgres'
 * own spellings of NaN and the infinities, and "out of range" only for
 * overflow and for underflow to zero (denormals are accepted).
 *
 * Output is what Postgres 12+ prints with extra_float_digits = 1: the
 * shortest decimal that reads back as the same value (Ryu), in fixed
 * notation when the decimal exponent is in [-4, 15) for float8 or [-4, 6)
 * for float4, else as d.ddde+XX.  The shortest digits are found here by
 * asking printf for 1, 2, ... significant digits, each correctly rounded,
 * and taking the first that round-trips; when the correctly rounded string
 * just misses, its neighbour in the last digit can still be inside the
 * rounding interval (near powers of two), so that one is tried too.
 * ------------------------------------------------------------------------ */

static int float_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)n;
    int is4 = c->binlen == 4;
    const char *num = s;
    char *end;
    double val;
    while (is_space((unsigned char)*num)) num++;
    if (!*num) return bad_syntax(err, c->sqlname, s);
    errno = 0;
    val = is4 ? (double)strtof(num, &end) : strtod(num, &end);
    if (end == num || errno != 0) {
        int save = errno;
        static const struct { const char *w; size_t l; int kind; } specials[] = {
            { "NaN", 3, 0 }, { "Infinity", 8, 1 }, { "+Infinity", 9, 1 }, { "-Infinity", 9, -1 },
            { "inf", 3, 1 }, { "+inf", 4, 1 }, { "-inf", 4, -1 },
        };
        size_t i;
        for (i = 0; i < sizeof specials / sizeof specials[0]; i++)
            if (strncasecmp(num, specials[i].w, specials[i].l) == 0) break;
        if (i < sizeof specials / sizeof specials[0]) {
            val = specials[i].kind == 0 ? NAN : specials[i].kind > 0 ? INFINITY : -INFINITY;
            end = (char *)num + specials[i].l;
        } else if (save == ERANGE) {
            if (val == 0.0 || isinf(val)) {
                rq_error_set(err, "22003", "\"%.*s\" is out of range for type %s",
                             (int)(end - num), num, c->sqlname);
                return -1;
            }
        } else {
            return bad_syntax(err, c->sqlname, s);
        }
    }
    while (is_space((unsigned char)*end)) end++;
    if (*end) return bad_syntax(err, c->sqlname, s);
    v->f = val;
    return 0;
}

/* Just enough unsigned bignum to compare a short decimal with a binary
 * fraction exactly: numbers up to 80 * 32 bits, multiplied by small
 * factors and shifted left. */
typedef struct Big {
    uint32_t d[80];         /* little-endian limbs */
    int n;
} Big;

static void big_set(Big *b, uint64_t v)
{
    b->n = 0;
    while (v) { b->d[b->n++] = (uint32_t)v; v >>= 32; }
}

static void big_mul(Big *b, uint32_t m)
{
    uint64_t carry = 0;
    for (int i = 0; i < b->n; i++) {
        uint64_t x = (uint64_t)b->d[i] * m + carry;
        b->d[i] = (uint32_t)x;
        carry = x >> 32;
    }
    if (carry) b->d[b->n++] = (uint32_t)carry;
}

static void big_shl(Big *b, int bits)
{
    int limbs = bits / 32, r = bits % 32;
    if (b->n == 0) return;
    if (r) {
        uint32_t carry = 0;
        for (int i = 0; i < b->n; i++) {
            uint32_t x = b->d[i];
            b->d[i] = x << r | carry;
            carry = x >> (32 - r);
        }
        if (carry) b->d[b->n++] = carry;
    }
    if (limbs) {
        memmove(b->d + limbs, b->d, (size_t)b->n * sizeof b->d[0]);
        memset(b->d, 0, (size_t)limbs * sizeof b->d[0]);
        b->n += limbs;
    }
}

static int big_eq(const Big *a, const Big *b)
{
    return a->n == b->n && memcmp(a->d, b->d, (size_t)a->n * sizeof a->d[0]) == 0;
}

/* x = m * 2^e exactly, for finite x >= 0 */
static void split_double(double x, uint64_t *m, int *e)
{
    int ex;
    double f = frexp(x, &ex);
    *m = (uint64_t)ldexp(f, 53);
    *e = ex - 53;
}

/* Whether the decimal txt ("d.ddde+x", sign ignored) is exactly halfway
 * between the non-negative doubles a and b. */
static int is_midpoint(const char *txt, double a, double b)
{
    uint64_t ma, mb, D = 0;
    int ea, eb, nd = 0, k;
    const char *p = txt;
    for (; *p && *p != 'e'; p++)
        if (isdigit((unsigned char)*p)) { D = D * 10 + (uint64_t)(*p - '0'); nd++; }
    k = (*p ? atoi(p + 1) : 0) - (nd - 1);      /* txt = D * 10^k */

    split_double(a, &ma, &ea);
    split_double(b, &mb, &eb);
    int E = ea < eb ? ea : eb;
    if (ma == 0) E = eb;
    if (mb == 0) E = ea;
    /* midpoint = (ma * 2^(ea-E) + mb * 2^(eb-E)) * 2^(E-1); the shifts are
     * at most a couple of bits since a and b are neighbours */
    uint64_t K = (ma ? ma << (ea - E) : 0) + (mb ? mb << (eb - E) : 0);
    int F = E - 1;

    /* D * 5^k * 2^k == K * 2^F, with the factors moved to whichever side
     * keeps the exponents non-negative */
    Big l, r;
    big_set(&l, D);
    big_set(&r, K);
    for (int i = 0; i < (k < 0 ? -k : k); i++) big_mul(k >= 0 ? &l : &r, 5);
    if (k - F >= 0) big_shl(&l, k - F);
    else big_shl(&r, F - k);
    return big_eq(&l, &r);
}

/* Reads back as v, and is not exactly halfway to a neighbour: Postgres'
 * Ryu treats the rounding interval as open, so a decimal that only reads
 * back as v because ties go to even does not count (1e23 prints as
 * 9.999999999999999e+22). */
static int roundtrips(const char *txt, double v, int is4)
{
    double up, down;
    if (is4) {
        float f = (float)v;
        if (strtof(txt, NULL) != f) return 0;
        up = nextafterf(f, INFINITY);
        down = nextafterf(f, -INFINITY);
    } else {
        if (strtod(txt, NULL) != v) return 0;
        up = nextafter(v, INFINITY);
        down = nextafter(v, -INFINITY);
    }
    if (!isinf(up) && is_midpoint(txt, fabs(v), fabs(up))) return 0;
    if (!isinf(down) && is_midpoint(txt, fabs(v), fabs(down))) return 0;
    return 1;
}

/* Add delta (+1/-1) to the last mantissa digit of a "%.*e" string. */
static int bump_last_digit(const char *in, int delta, char *out, size_t outsz)
{
    /* split into sign, digits, exponent */
    char digs[40];
    int nd = 0, neg = in[0] == '-';
    const char *p = in + neg;
    for (; *p && *p != 'e'; p++)
        if (isdigit((unsigned char)*p)) digs[nd++] = *p;
    if (*p != 'e' || nd == 0) return -1;
    int exp10 = atoi(p + 1);
    int i = nd - 1;
    if (delta > 0) {
        while (i >= 0 && digs[i] == '9') digs[i--] = '0';
        if (i < 0) {                    /* 99..9 + 1 = 100..0: one more exponent */
            digs[0] = '1';
            for (int k = 1; k < nd; k++) digs[k] = '0';
            exp10++;
        } else {
            digs[i]++;
        }
    } else {
        while (i >= 0 && digs[i] == '0') digs[i--] = '9';
        if (i < 0) return -1;
        digs[i]--;
        if (digs[0] == '0') {           /* 10..0 - 1 = 9..9 one exponent lower */
            for (int k = 0; k < nd; k++) digs[k] = '9';
            exp10--;
        }
    }
    snprintf(out, outsz, "%s%c%s%.*se%d", neg ? "-" : "", digs[0], nd > 1 ? "." : "",
             nd - 1, digs + 1, exp10);
    return 0;
}

static void float_out_value(double v, int is4, Buf *b)
{
    if (isnan(v)) { buf_append_str(b, "NaN"); return; }
    if (isinf(v)) { buf_append_str(b, v > 0 ? "Infinity" : "-Infinity"); return; }
    if (v == 0) { buf_append_str(b, signbit(v) ? "-0" : "0"); return; }

    char txt[64] = "", alt[64];
    int maxdig = is4 ? 9 : 17;
    for (int prec = 1; prec <= maxdig; prec++) {
        snprintf(txt, sizeof txt, "%.*e", prec - 1, v);
        if (roundtrips(txt, v, is4)) break;
        if ((bump_last_digit(txt, +1, alt, sizeof alt) == 0 && roundtrips(alt, v, is4)) ||
            (bump_last_digit(txt, -1, alt, sizeof alt) == 0 && roundtrips(alt, v, is4))) {
            memcpy(txt, alt, sizeof txt);
            break;
        }
    }
    /* txt is [-]d[.ddd]e[+-]x; take its digits without trailing zeros */
    char digs[40];
    int nd = 0, neg = txt[0] == '-';
    const char *p = txt + neg;
    for (; *p && *p != 'e'; p++)
        if (isdigit((unsigned char)*p)) digs[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digs[nd - 1] == '0') nd--;

    if (neg) buf_append_byte(b, '-');
    if (exp10 >= -4 && exp10 < (is4 ? 6 : 15)) {
        if (exp10 < 0) {
            buf_append_str(b, "0.");
            for (int k = 0; k < -exp10 - 1; k++) buf_append_byte(b, '0');
            buf_append(b, digs, (size_t)nd);
        } else if (exp10 + 1 >= nd) {
            buf_append(b, digs, (size_t)nd);
            for (int k = nd; k < exp10 + 1; k++) buf_append_byte(b, '0');
        } else {
            buf_append(b, digs, (size_t)exp10 + 1);
            buf_append_byte(b, '.');
            buf_append(b, digs + exp10 + 1, (size_t)(nd - exp10 - 1));
        }
    } else {
        buf_append_byte(b, (uint8_t)digs[0]);
        if (nd > 1) {
            buf_append_byte(b, '.');
            buf_append(b, digs + 1, (size_t)nd - 1);
        }
        buf_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
}

static void float_out(const Codec *c, const Val *v, Buf *b) { float_out_value(v->f, c->binlen == 4, b); }

static void float_send(const Codec *c, const Val *v, Buf *b)
{
    if (c->binlen == 4) {
        float f = (float)v->f;
        uint32_t u;
        memcpy(&u, &f, 4);
        buf_append_u32(b, u);
    } else {
        uint64_t u;
        memcpy(&u, &v->f, 8);
        buf_append_u64(b, u);
    }
}

static int float_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)n; (void)err;
    if (c->binlen == 4) {
        uint32_t u = get_u32(d);
        float f;
        memcpy(&f, &u, 4);
        v->f = f;
    } else {
        uint64_t u = get_u64(d);
        memcpy(&v->f, &u, 8);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * numeric
 *
 * Text: optional blanks and sign, digits with at most one point (".5" and
 * "5." are fine), optional exponent, blanks; or NaN / [+-]Infinity / [+-]inf
 * in any case.  The display scale is the number of digits written after the
 * point minus the exponent (so "2.50" keeps scale 2 and "1.5e-3" is 0.0015),
 * never below zero.  Binary (numeric_send): int16 ndigits, int16 weight,
 * uint16 sign, uint16 dscale, then the base-10000 digits, with leading and
 * trailing zero digits stripped and zero sent as ndigits 0, weight 0.
 * ------------------------------------------------------------------------ */

static const int pow10_4[4] = { 1, 10, 100, 1000 };

static int floor_div4(int e) { return e >= 0 ? e / 4 : -((-e + 3) / 4); }

static void num_set_zero(Num *n)
{
    free(n->digits);
    n->digits = NULL;
    n->ndigits = 0;
    n->weight = 0;
    n->sign = NUM_POS;
}

/* Drop leading and trailing zero base-10000 digits; zero becomes canonical. */
static void num_strip(Num *n)
{
    int lead = 0, nd = n->ndigits;
    while (lead < nd && n->digits[lead] == 0) lead++;
    while (nd > lead && n->digits[nd - 1] == 0) nd--;
    if (lead == nd) { num_set_zero(n); return; }
    if (lead) memmove(n->digits, n->digits + lead, (size_t)(nd - lead) * sizeof *n->digits);
    n->ndigits = nd - lead;
    n->weight -= lead;
}

/* Keep at most rscale decimal digits after the point (trunc_var). */
static void num_trunc(Num *n, int rscale)
{
    int di = (n->weight + 1) * 4 + rscale;
    if (di <= 0) {
        num_set_zero(n);
        return;
    }
    int nd = (di + 3) / 4;
    if (nd <= n->ndigits) {
        n->ndigits = nd;
        if (di % 4) n->digits[nd - 1] -= (int16_t)(n->digits[nd - 1] % pow10_4[4 - di % 4]);
    }
    num_strip(n);
}

/* dec[0..k-1] are decimal digits ('0'..'9'), dec[0] standing for
 * 10^dweight. */
static void num_from_decimal(Num *n, const char *dec, int k, int dweight)
{
    int i0 = 0, i1 = k;
    while (i0 < i1 && dec[i0] == '0') { i0++; dweight--; }
    while (i1 > i0 && dec[i1 - 1] == '0') i1--;
    free(n->digits);
    n->digits = NULL;
    if (i0 == i1) { num_set_zero(n); return; }
    int last = dweight - (i1 - i0 - 1);
    n->weight = floor_div4(dweight);
    n->ndigits = n->weight - floor_div4(last) + 1;
    n->digits = xcalloc((size_t)n->ndigits, sizeof *n->digits);
    for (int j = i0; j < i1; j++) {
        int e = dweight - (j - i0), w = floor_div4(e);
        n->digits[n->weight - w] += (int16_t)((dec[j] - '0') * pow10_4[e - 4 * w]);
    }
}

static int num_overflow(RqError *err)
{
    rq_error_set(err, "22003", "value overflows numeric format");
    return -1;
}

/* make_result's limits: the weight must fit int16, the scale 14 bits. */
static int num_check_limits(const Num *n, RqError *err)
{
    if (n->weight > INT16_MAX || n->weight < INT16_MIN || n->dscale > NUM_DSCALE_MAX)
        return num_overflow(err);
    return 0;
}

static int numeric_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n;
    Num *num = &v->num;
    const char *p = s;
    while (is_space((unsigned char)*p)) p++;

    static const struct { const char *w; size_t l; uint16_t sign; } specials[] = {
        { "NaN", 3, NUM_NAN }, { "Infinity", 8, NUM_PINF }, { "+Infinity", 9, NUM_PINF },
        { "-Infinity", 9, NUM_NINF }, { "inf", 3, NUM_PINF }, { "+inf", 4, NUM_PINF },
        { "-inf", 4, NUM_NINF },
    };
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        if (strncasecmp(p, specials[i].w, specials[i].l) == 0) {
            p += specials[i].l;
            while (is_space((unsigned char)*p)) p++;
            if (*p) return bad_syntax(err, "numeric", s);
            num_set_zero(num);
            num->sign = specials[i].sign;
            num->dscale = 0;
            return 0;
        }
    }

    uint16_t sign = NUM_POS;
    if (*p == '+') p++;
    else if (*p == '-') { sign = NUM_NEG; p++; }
    int have_point = 0;
    if (*p == '.') { have_point = 1; p++; }
    if (!isdigit((unsigned char)*p)) return bad_syntax(err, "numeric", s);

    Buf dec;
    buf_init(&dec);
    int int_digits = 0, frac_digits = 0;
    for (;; p++) {
        if (isdigit((unsigned char)*p)) {
            buf_append_byte(&dec, (uint8_t)*p);
            if (have_point) frac_digits++;
            else int_digits++;
        } else if (*p == '.') {
            if (have_point) { buf_free(&dec); return bad_syntax(err, "numeric", s); }
            have_point = 1;
        } else {
            break;
        }
    }
    long dweight = int_digits - 1, dscale = frac_digits;
    if (*p == 'e' || *p == 'E') {
        char *end;
        p++;
        /* strtol, as numeric_in uses: blanks and a sign may follow the "e" */
        long exp10 = strtol(p, &end, 10);
        if (end == p) { buf_free(&dec); return bad_syntax(err, "numeric", s); }
        p = end;
        if (exp10 >= INT_MAX / 2 || exp10 <= -(INT_MAX / 2)) { buf_free(&dec); return num_overflow(err); }
        dweight += exp10;
        dscale -= exp10;
        if (dscale < 0) dscale = 0;
    }
    while (is_space((unsigned char)*p)) p++;
    if (*p) { buf_free(&dec); return bad_syntax(err, "numeric", s); }

    num_from_decimal(num, dec.data, (int)dec.len, (int)dweight);
    buf_free(&dec);
    if (num->ndigits) num->sign = sign;
    num->dscale = (int)dscale;
    return num_check_limits(num, err);
}

static void numeric_out_num(const Num *num, Buf *b)
{
    switch (num->sign) {
    case NUM_NAN: buf_append_str(b, "NaN"); return;
    case NUM_PINF: buf_append_str(b, "Infinity"); return;
    case NUM_NINF: buf_append_str(b, "-Infinity"); return;
    }
    if (num->sign == NUM_NEG) buf_append_byte(b, '-');
    if (num->weight < 0) {
        buf_append_byte(b, '0');
    } else {
        for (int d = 0; d <= num->weight; d++) {
            int dig = d < num->ndigits ? num->digits[d] : 0;
            if (d == 0) buf_printf(b, "%d", dig);
            else buf_printf(b, "%04d", dig);
        }
    }
    if (num->dscale > 0) {
        buf_append_byte(b, '.');
        for (int i = 1; i <= num->dscale; i++) {
            int w = floor_div4(-i), idx = num->weight - w;
            int dig = idx >= 0 && idx < num->ndigits ? num->digits[idx] / pow10_4[-i - 4 * w] % 10 : 0;
            buf_append_byte(b, (uint8_t)('0' + dig));
        }
    }
}

static void numeric_out(const Codec *c, const Val *v, Buf *b) { (void)c; numeric_out_num(&v->num, b); }

static void numeric_send(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    const Num *num = &v->num;
    int special = num->sign == NUM_NAN || num->sign == NUM_PINF || num->sign == NUM_NINF;
    buf_append_u16(b, (uint16_t)num->ndigits);
    buf_append_u16(b, (uint16_t)(int16_t)num->weight);
    buf_append_u16(b, num->sign);
    /* Postgres sends the infinities with dscale 32: it reads the display
     * scale bits of their short header, where the special-value flag
     * happens to land.  Clients see that, so do the same. */
    buf_append_u16(b, special ? (num->sign == NUM_NAN ? 0 : 32) : (uint16_t)num->dscale);
    for (int i = 0; i < num->ndigits; i++) buf_append_u16(b, (uint16_t)num->digits[i]);
}

static int numeric_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    Num *num = &v->num;
    if (n < 8) return bad_binary_len(err, c->sqlname, 8, n);
    int nd = get_u16(d);
    if (nd > 3000)  /* NUMERIC_MAX_PRECISION + NUMERIC_MAX_RESULT_SCALE */
        return bad_binary(err, "invalid length in external \"numeric\" value");
    if (n != 8 + 2 * (size_t)nd) return bad_binary_len(err, c->sqlname, 8 + 2 * (size_t)nd, n);
    int weight = (int16_t)get_u16(d + 2);
    uint16_t sign = get_u16(d + 4), dscale = get_u16(d + 6);
    if (sign != NUM_POS && sign != NUM_NEG && sign != NUM_NAN && sign != NUM_PINF && sign != NUM_NINF)
        return bad_binary(err, "invalid sign in external \"numeric\" value");
    if ((dscale & NUM_DSCALE_MAX) != dscale)
        return bad_binary(err, "invalid scale in external \"numeric\" value");
    free(num->digits);
    num->digits = xcalloc(nd ? (size_t)nd : 1, sizeof *num->digits);
    for (int i = 0; i < nd; i++) {
        uint16_t dig = get_u16(d + 8 + 2 * i);
        if (dig >= 10000) return bad_binary(err, "invalid digit in external \"numeric\" value");
        num->digits[i] = (int16_t)dig;
    }
    num->ndigits = nd;
    num->weight = weight;
    num->sign = sign;
    num->dscale = dscale;
    if (sign == NUM_POS || sign == NUM_NEG) {
        /* digits hidden by the scale are dropped, as numeric_recv does */
        num_trunc(num, dscale);
        num->dscale = dscale;
        return num_check_limits(num, err);
    }
    num_set_zero(num);
    num->sign = sign;
    num->dscale = 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * Dates and times
 *
 * Binary forms count from 2000-01-01 00:00:00 (Postgres' epoch): date is
 * int32 days, time int64 microseconds since midnight, timestamp and
 * timestamptz int64 microseconds (timestamptz in UTC), timetz the time plus
 * int32 zone in seconds *west* of UTC, interval int64 microseconds + int32
 * days + int32 months.  +-infinity are the extreme integers.
 *
 * Text input follows Postgres' datetime parser in structure: the string is
 * cut into fields (number, date, time, word, signed number), then the
 * fields are interpreted.  The accepted forms are the ISO ones and their
 * usual variants: 2024-01-02, 2024/01/02, 20240102, 01/02/2024 (DateStyle
 * MDY), month names (Jan 2 2024, 2 January 24, 2024-Jan-02), "T" or blank
 * between date and time, hh:mm[:ss[.f]], hhmmss, AM/PM, numeric offsets
 * (+hh, +hhmm, +hh:mm[:ss]) and the fixed-offset abbreviations of Postgres'
 * default set (UTC, Z, EST, CET, ...), AD/BC, and the words infinity,
 * -infinity, epoch, allballs.
 * ------------------------------------------------------------------------ */

#define USECS_PER_SEC    INT64_C(1000000)
#define USECS_PER_MINUTE INT64_C(60000000)
#define USECS_PER_HOUR   INT64_C(3600000000)
#define USECS_PER_DAY    INT64_C(86400000000)
#define DAYS_1970_TO_2000 10957
/* first and one-past-last valid days and timestamps (4714-11-24 BC and
 * 5874898-01-01 / 294277-01-01) */
#define MIN_DATE   (-2451545)
#define END_DATE   INT64_C(2145031949)
#define MIN_TIMESTAMP INT64_C(-211813488000000000)
#define END_TIMESTAMP INT64_C(9223371331200000000)
#define TZDISP_LIMIT (16 * 3600)

/* days since 2000-01-01 of a proleptic Gregorian date (astronomical year
 * numbering: 1 BC is year 0) */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468 - DAYS_1970_TO_2000;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468 + DAYS_1970_TO_2000;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m)
{
    static const int dm[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

static int64_t floor_div64(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* ---- output ---- */

/* Seconds with the fraction Postgres prints: none when zero, else up to six
 * digits without trailing zeros (AppendSeconds). */
static void put_seconds(Buf *b, int64_t sec, int64_t usec)
{
    buf_printf(b, "%02lld", (long long)(sec < 0 ? -sec : sec));
    if (usec) {
        char frac[24];
        snprintf(frac, sizeof frac, "%06lld", (long long)(usec < 0 ? -usec : usec));
        int n = 6;
        while (n > 0 && frac[n - 1] == '0') n--;
        buf_append_byte(b, '.');
        buf_append(b, frac, (size_t)n);
    }
}

/* year as EncodeDateOnly prints it: at least four digits, BC years
 * counted from 1 with the " BC" suffix added by the caller */
static void put_date(Buf *b, int64_t days, int *bc)
{
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    *bc = y <= 0;
    buf_printf(b, "%04lld-%02d-%02d", (long long)(y > 0 ? y : -(y - 1)), m, d);
}

/* offset in seconds west of UTC, printed east-positive (EncodeTimezone) */
static void put_zone(Buf *b, int32_t zone)
{
    int sec = zone < 0 ? -zone : zone;
    int min = sec / 60;
    sec -= min * 60;
    int hour = min / 60;
    min -= hour * 60;
    buf_printf(b, "%c%02d", zone <= 0 ? '+' : '-', hour);
    if (sec) buf_printf(b, ":%02d:%02d", min, sec);
    else if (min) buf_printf(b, ":%02d", min);
}

static void put_time_of_day(Buf *b, int64_t t)
{
    int64_t hour = t / USECS_PER_HOUR;
    t -= hour * USECS_PER_HOUR;
    int64_t min = t / USECS_PER_MINUTE;
    t -= min * USECS_PER_MINUTE;
    int64_t sec = t / USECS_PER_SEC;
    buf_printf(b, "%02lld:%02lld:", (long long)hour, (long long)min);
    put_seconds(b, sec, t - sec * USECS_PER_SEC);
}

static void timestamp_out_value(int64_t ts, int with_zone, Buf *b)
{
    if (ts == INT64_MIN) { buf_append_str(b, "-infinity"); return; }
    if (ts == INT64_MAX) { buf_append_str(b, "infinity"); return; }
    int64_t days = floor_div64(ts, USECS_PER_DAY);
    int bc;
    put_date(b, days, &bc);
    buf_append_byte(b, ' ');
    put_time_of_day(b, ts - days * USECS_PER_DAY);
    if (with_zone) buf_append_str(b, "+00");
    if (bc) buf_append_str(b, " BC");
}

/* ---- input: fields ---- */

enum { F_NUMBER, F_DATE, F_TIME, F_STRING, F_TZ, F_SPECIAL };

#define MAX_FIELDS 25

typedef struct Fields {
    int n;
    char *f[MAX_FIELDS];
    int type[MAX_FIELDS];
    char work[256];
} Fields;

/* DTERR_* of Postgres: which error a bad date/time string gets */
enum {
    DT_BAD_FORMAT = -1,         /* 22007 invalid input syntax */
    DT_FIELD_OVERFLOW = -2,     /* 22008 field value out of range */
    DT_MD_FIELD_OVERFLOW = -3,  /* same, with the DateStyle hint */
    DT_INTERVAL_OVERFLOW = -4,  /* 22015 */
    DT_TZDISP_OVERFLOW = -5,    /* 22009 */
    DT_NOT_SUPPORTED = -6,      /* 0A000: a form riffq does not read */
    DT_BAD_ZONE = -7,           /* 0A000: a zone name riffq does not know */
};

/* Words of Postgres' date token table that may be followed directly by a
 * digit without making the field a time zone name ("t" in 2024-01-02T03:04). */
static const char *const dt_keywords[] = {
    "t", "ad", "bc", "am", "pm", "allballs", "epoch", "infinity", "now", "today",
    "tomorrow", "yesterday", "z", "zulu", "utc", "gmt", "ut", "d", "h", "j", "m",
    "mm", "s", "y", "on",
};

static int is_dt_keyword(const char *w)
{
    for (size_t i = 0; i < sizeof dt_keywords / sizeof dt_keywords[0]; i++)
        if (strcmp(w, dt_keywords[i]) == 0) return 1;
    return 0;
}

/* Cut s into fields the way ParseDateTime does (lower-casing words). */
static int dt_fields(const char *s, Fields *fl, size_t worklen)
{
    const char *cp = s;
    char *bp = fl->work, *bend = fl->work + (worklen < sizeof fl->work ? worklen : sizeof fl->work);
#define PUT(ch) do { if (bp + 1 >= bend) return DT_BAD_FORMAT; *bp++ = (char)(ch); } while (0)
    fl->n = 0;
    while (*cp) {
        if (is_space((unsigned char)*cp)) { cp++; continue; }
        if (fl->n >= MAX_FIELDS) return DT_BAD_FORMAT;
        int nf = fl->n;
        fl->f[nf] = bp;
        if (isdigit((unsigned char)*cp)) {
            while (isdigit((unsigned char)*cp)) PUT(*cp++);
            if (*cp == ':') {
                fl->type[nf] = F_TIME;
                PUT(*cp++);
                while (isdigit((unsigned char)*cp) || *cp == ':' || *cp == '.') PUT(*cp++);
            } else if (*cp == '-' || *cp == '/' || *cp == '.') {
                char delim = *cp;
                PUT(*cp++);
                if (isdigit((unsigned char)*cp)) {
                    fl->type[nf] = delim == '.' ? F_NUMBER : F_DATE;
                    while (isdigit((unsigned char)*cp)) PUT(*cp++);
                    if (*cp == delim) {
                        fl->type[nf] = F_DATE;
                        PUT(*cp++);
                        while (isdigit((unsigned char)*cp) || *cp == delim) PUT(*cp++);
                    }
                } else {
                    fl->type[nf] = F_DATE;
                    while (isalnum((unsigned char)*cp) || *cp == delim) PUT(tolower((unsigned char)*cp++));
                }
            } else {
                fl->type[nf] = F_NUMBER;
            }
        } else if (*cp == '.') {
            PUT(*cp++);
            while (isdigit((unsigned char)*cp)) PUT(*cp++);
            fl->type[nf] = F_NUMBER;
        } else if (isalpha((unsigned char)*cp)) {
            fl->type[nf] = F_STRING;
            while (isalpha((unsigned char)*cp)) PUT(tolower((unsigned char)*cp++));
            int is_date = 0;
            if (*cp == '-' || *cp == '/' || *cp == '.') {
                is_date = 1;
            } else if (*cp == '+' || isdigit((unsigned char)*cp)) {
                *bp = 0;
                is_date = !is_dt_keyword(fl->f[nf]);
            }
            if (is_date) {
                fl->type[nf] = F_DATE;
                do PUT(tolower((unsigned char)*cp++));
                while (*cp == '+' || *cp == '-' || *cp == '/' || *cp == '_' || *cp == '.' ||
                       *cp == ':' || isalnum((unsigned char)*cp));
            }
        } else if (*cp == '+' || *cp == '-') {
            PUT(*cp++);
            while (is_space((unsigned char)*cp)) cp++;
            if (isdigit((unsigned char)*cp)) {
                fl->type[nf] = F_TZ;
                PUT(*cp++);
                while (isdigit((unsigned char)*cp) || *cp == ':' || *cp == '.' || *cp == '-') PUT(*cp++);
            } else if (isalpha((unsigned char)*cp)) {
                fl->type[nf] = F_SPECIAL;
                while (isalpha((unsigned char)*cp)) PUT(tolower((unsigned char)*cp++));
            } else {
                return DT_BAD_FORMAT;
            }
        } else if (ispunct((unsigned char)*cp)) {
            cp++;           /* other punctuation only separates fields */
            continue;
        } else {
            return DT_BAD_FORMAT;
        }
        PUT(0);
        fl->n++;
    }
#undef PUT
    return 0;
}

/* ".123" -> microseconds, rounded as ParseFractionalSecond does */
static int parse_fraction(const char *cp, double *frac)
{
    if (cp[1] == 0) { *frac = 0; return 0; }
    char *end;
    errno = 0;
    *frac = strtod(cp, &end);
    if (*end || errno) return DT_BAD_FORMAT;
    return 0;
}

/* hh:mm, hh:mm:ss[.f], or mm:ss.f (DecodeTime); the hour is not checked */
static int decode_time(const char *str, int64_t *hour, int *min, int *sec, int64_t *fsec)
{
    char *cp;
    double frac;
    errno = 0;
    *hour = strtoll(str, &cp, 10);
    if (errno == ERANGE) return DT_FIELD_OVERFLOW;
    if (*cp != ':') return DT_BAD_FORMAT;
    errno = 0;
    long m = strtol(cp + 1, &cp, 10), s = 0;
    if (errno == ERANGE || m > INT_MAX) return DT_FIELD_OVERFLOW;
    *fsec = 0;
    if (*cp == 0) {
        s = 0;
    } else if (*cp == '.') {
        /* two fields and a fraction: minutes and seconds */
        if (parse_fraction(cp, &frac)) return DT_BAD_FORMAT;
        *fsec = (int64_t)rint(frac * 1000000);
        s = m;
        m = *hour;
        *hour = 0;
    } else if (*cp == ':') {
        errno = 0;
        s = strtol(cp + 1, &cp, 10);
        if (errno == ERANGE || s > INT_MAX) return DT_FIELD_OVERFLOW;
        if (*cp == '.') {
            if (parse_fraction(cp, &frac)) return DT_BAD_FORMAT;
            *fsec = (int64_t)rint(frac * 1000000);
        } else if (*cp) {
            return DT_BAD_FORMAT;
        }
    } else {
        return DT_BAD_FORMAT;
    }
    if (*hour < 0 || m < 0 || m > 59 || s < 0 || s > 60 || *fsec < 0 || *fsec > USECS_PER_SEC)
        return DT_FIELD_OVERFLOW;
    *min = (int)m;
    *sec = (int)s;
    return 0;
}

/* +hh, +hhmm, +hh:mm, +hh:mm:ss -> seconds west of UTC (DecodeTimezone) */
static int decode_zone(const char *str, int32_t *west)
{
    char *cp;
    long hr, min = 0, sec = 0;
    if (*str != '+' && *str != '-') return DT_BAD_FORMAT;
    errno = 0;
    hr = strtol(str + 1, &cp, 10);
    if (errno == ERANGE) return DT_TZDISP_OVERFLOW;
    if (*cp == ':') {
        min = strtol(cp + 1, &cp, 10);
        if (*cp == ':') sec = strtol(cp + 1, &cp, 10);
    } else if (*cp == 0 && strlen(str) > 3) {
        min = hr % 100;
        hr /= 100;
    }
    if (hr < 0 || hr > 15 || min < 0 || min >= 60 || sec < 0 || sec >= 60) return DT_TZDISP_OVERFLOW;
    long tz = (hr * 60 + min) * 60 + sec;
    if (*str == '-') tz = -tz;
    *west = (int32_t)-tz;
    return *cp ? DT_BAD_FORMAT : 0;
}

/* ---- input: date, time, timestamp ---- */

typedef struct DtIn {
    int64_t year;
    int mon, mday;
    int have_year, have_mon, have_mday, text_month, is2digits, bc;
    int64_t hour;
    int min, sec;
    int64_t fsec;
    int have_time;
    int32_t zone;           /* seconds west */
    int have_zone;
    int mer;                /* 0 = 24-hour clock, 1 = AM, 2 = PM */
    int special;            /* SP_* below */
    int weekday;            /* a day name was given (and ignored) */
    int64_t pend[3];        /* bare numbers waiting to be day or year, next to a month name */
    int pend_len[3];
    int npend;
} DtIn;

enum { SP_NONE, SP_INFINITY, SP_NINFINITY, SP_EPOCH, SP_ALLBALLS };

static const struct { const char *name; int mon; } month_names[] = {
    { "jan", 1 }, { "january", 1 }, { "feb", 2 }, { "february", 2 }, { "mar", 3 },
    { "march", 3 }, { "apr", 4 }, { "april", 4 }, { "may", 5 }, { "jun", 6 },
    { "june", 6 }, { "jul", 7 }, { "july", 7 }, { "aug", 8 }, { "august", 8 },
    { "sep", 9 }, { "sept", 9 }, { "september", 9 }, { "oct", 10 }, { "october", 10 },
    { "nov", 11 }, { "november", 11 }, { "dec", 12 }, { "december", 12 },
};

static const char *const weekday_names[] = {
    "sun", "sunday", "mon", "monday", "tue", "tues", "tuesday", "wed", "wednesday",
    "thu", "thur", "thurs", "thursday", "fri", "friday", "sat", "saturday",
};

/* The fixed-offset zone abbreviations of Postgres' Default set
 * (share/timezonesets/Default), in seconds east of UTC.  The ones that
 * follow a zone's history (MSK, SGT, ...) need the tz database and are not
 * here. */
static const struct { const char *name; int east; } zone_abbrevs[] = {
    { "acst", 34200 }, { "aedt", 39600 }, { "aest", 36000 }, { "akdt", -28800 },
    { "akst", -32400 }, { "awst", 28800 }, { "bst", 3600 }, { "cdt", -18000 },
    { "cest", 7200 }, { "cet", 3600 }, { "cst", -21600 }, { "edt", -14400 },
    { "eest", 10800 }, { "eet", 7200 }, { "est", -18000 }, { "gmt", 0 }, { "hkt", 28800 },
    { "hst", -36000 }, { "ist", 7200 }, { "jst", 32400 }, { "kst", 32400 },
    { "mdt", -21600 }, { "mest", 7200 }, { "met", 3600 }, { "mst", -25200 },
    { "nzdt", 46800 }, { "nzst", 43200 }, { "pdt", -25200 }, { "pst", -28800 },
    { "ut", 0 }, { "utc", 0 }, { "wet", 0 }, { "z", 0 }, { "zulu", 0 },
};

static int parse_int_field(const char *s, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno == ERANGE || x > INT_MAX) return DT_FIELD_OVERFLOW;
    if (*end) return DT_BAD_FORMAT;
    *v = x;
    return 0;
}

/* y-m-d, y/m/d, y.m.d with a 3+ digit year first; else m-d-y */
static int decode_numeric_date(char *f, DtIn *r)
{
    char *parts[3];
    int np = 0;
    char delim = 0;
    for (char *p = f; *p; p++)
        if (!isdigit((unsigned char)*p)) { delim = *p; break; }
    if (!delim) return DT_BAD_FORMAT;
    for (char *p = f;;) {
        if (np == 3) return DT_BAD_FORMAT;
        parts[np++] = p;
        char *q = strchr(p, delim);
        if (!q) break;
        *q = 0;
        p = q + 1;
    }
    if (np != 3 || !*parts[0] || !*parts[1] || !*parts[2]) return DT_BAD_FORMAT;
    int64_t a, b, c;
    int rc;
    if ((rc = parse_int_field(parts[0], &a)) || (rc = parse_int_field(parts[1], &b)) ||
        (rc = parse_int_field(parts[2], &c)))
        return rc;
    if (strlen(parts[0]) >= 3) {
        r->year = a; r->mon = (int)b; r->mday = (int)c;
    } else {
        r->mon = (int)a; r->mday = (int)b; r->year = c;
        r->is2digits = strlen(parts[2]) <= 2;
    }
    r->have_year = r->have_mon = r->have_mday = 1;
    return 0;
}

/* A run of digits: yyyymmdd, hhmmss[.f] or hhmm as a time (after "T", after
 * a complete date, or for the time types), or else a day or year to be
 * placed next to a month name once all fields are seen. */
static int decode_number_run(const char *f, DtIn *r, int after_t, int time_only)
{
    size_t len = strcspn(f, ".");
    int64_t v;
    char digits[24];
    if (len >= sizeof digits) return DT_BAD_FORMAT;
    memcpy(digits, f, len);
    digits[len] = 0;
    int have_date = r->have_year && r->have_mon && r->have_mday;
    if (!after_t && !r->have_year && !r->have_mon && !r->have_mday && !r->npend && len == 8 && !f[len]) {
        parse_int_field(digits, &v);
        r->year = v / 10000; r->mon = (int)(v / 100 % 100); r->mday = (int)(v % 100);
        r->have_year = r->have_mon = r->have_mday = 1;
        return 0;
    }
    if (!r->have_time && (after_t || have_date || time_only) && (len == 6 || (len == 4 && !f[len]))) {
        parse_int_field(digits, &v);
        if (len == 6) {
            r->hour = v / 10000; r->min = (int)(v / 100 % 100); r->sec = (int)(v % 100);
        } else {
            r->hour = v / 100; r->min = (int)(v % 100); r->sec = 0;
        }
        r->fsec = 0;
        if (f[len]) {
            double frac;
            if (parse_fraction(f + len, &frac)) return DT_BAD_FORMAT;
            r->fsec = (int64_t)rint(frac * 1000000);
        }
        r->have_time = 1;
        return 0;
    }
    if (f[len] || after_t || have_date || r->npend == 3) return DT_BAD_FORMAT;
    int rc = parse_int_field(digits, &v);
    if (rc) return rc;
    r->pend[r->npend] = v;
    r->pend_len[r->npend++] = (int)len;
    return 0;
}

/* Day and year beside a month name: a number of three or more digits is the
 * year, otherwise the first is the day and the next the year. */
static int place_pending(DtIn *r)
{
    if (!r->npend) return 0;
    if (!r->text_month) return DT_BAD_FORMAT;
    for (int i = 0; i < r->npend; i++) {
        if (r->pend_len[i] >= 3 || (r->have_mday && !r->have_year)) {
            if (r->have_year) return DT_BAD_FORMAT;
            r->year = r->pend[i];
            r->have_year = 1;
            r->is2digits = r->pend_len[i] <= 2;
        } else if (!r->have_mday) {
            r->mday = (int)r->pend[i];
            r->have_mday = 1;
        } else {
            return DT_BAD_FORMAT;
        }
    }
    return 0;
}

static int month_by_name(const char *w)
{
    for (size_t k = 0; k < sizeof month_names / sizeof month_names[0]; k++)
        if (!strcmp(w, month_names[k].name)) return month_names[k].mon;
    return 0;
}

/* A date field with a month name in it: jan-02-2024, 2024-jan-02. */
static int decode_text_date(char *f, DtIn *r)
{
    char delim = 0;
    for (char *p = f; *p; p++)
        if (!isalnum((unsigned char)*p)) { delim = *p; break; }
    if (delim != '-' && delim != '/' && delim != '.') return DT_BAD_FORMAT;
    for (char *p = f; p;) {
        char *q = strchr(p, delim);
        if (q) *q = 0;
        if (*p && strspn(p, "0123456789") == strlen(p)) {
            int rc = decode_number_run(p, r, 0, 0);
            if (rc) return rc;
        } else {
            int m = month_by_name(p);
            if (!m || r->have_mon) return DT_BAD_FORMAT;
            r->mon = m;
            r->have_mon = r->text_month = 1;
        }
        p = q ? q + 1 : NULL;
    }
    return 0;
}

/* Interpret fields as a date and/or time (DecodeDateTime and
 * DecodeTimeOnly, for the forms listed above). */
static int decode_datetime(Fields *fl, DtIn *r, int time_only)
{
    int after_t = 0;
    memset(r, 0, sizeof *r);
    for (int i = 0; i < fl->n; i++) {
        char *f = fl->f[i];
        int rc;
        if (after_t && fl->type[i] != F_TIME && fl->type[i] != F_NUMBER) return DT_BAD_FORMAT;
        switch (fl->type[i]) {
        case F_DATE:
            if (!isdigit((unsigned char)f[0]) || strpbrk(f, "abcdefghijklmnopqrstuvwxyz")) {
                /* "America/New_York" and friends: zone names after a date or time */
                if (strchr(f, '/') && (r->have_mon || r->have_time)) return DT_BAD_ZONE;
                if ((rc = decode_text_date(f, r))) return rc;
                break;
            }
            if (r->have_year || r->have_mon || r->have_mday || r->npend) return DT_BAD_FORMAT;
            if ((rc = decode_numeric_date(f, r))) return rc;
            break;
        case F_NUMBER:
            if ((rc = decode_number_run(f, r, after_t, time_only))) return rc;
            after_t = 0;
            break;
        case F_TIME:
            if (r->have_time) return DT_BAD_FORMAT;
            if ((rc = decode_time(f, &r->hour, &r->min, &r->sec, &r->fsec))) return rc;
            r->have_time = 1;
            after_t = 0;
            break;
        case F_TZ:
            if (r->have_zone) return DT_BAD_FORMAT;
            if ((rc = decode_zone(f, &r->zone))) return rc;
            r->have_zone = 1;
            break;
        case F_SPECIAL:
        case F_STRING: {
            size_t k;
            if (strcmp(f, "t") == 0) { after_t = 1; break; }
            for (k = 0; k < sizeof zone_abbrevs / sizeof zone_abbrevs[0]; k++)
                if (!strcmp(f, zone_abbrevs[k].name)) break;
            if (k < sizeof zone_abbrevs / sizeof zone_abbrevs[0]) {
                if (r->have_zone) return DT_BAD_FORMAT;
                r->zone = -zone_abbrevs[k].east;
                r->have_zone = 1;
                break;
            }
            if (!strcmp(f, "ad")) break;
            if (!strcmp(f, "bc")) { r->bc = 1; break; }
            if (!strcmp(f, "am") || !strcmp(f, "pm")) {
                if (r->mer) return DT_BAD_FORMAT;
                r->mer = f[0] == 'a' ? 1 : 2;
                break;
            }
            if (!strcmp(f, "infinity") || !strcmp(f, "-infinity") ||
                !strcmp(f, "epoch") || !strcmp(f, "allballs")) {
                if (fl->n != 1) return DT_BAD_FORMAT;
                r->special = f[0] == '-' ? SP_NINFINITY : f[0] == 'e' ? SP_EPOCH
                           : f[0] == 'a' ? SP_ALLBALLS : SP_INFINITY;
                break;
            }
            if (!strcmp(f, "now") || !strcmp(f, "today") || !strcmp(f, "tomorrow") ||
                !strcmp(f, "yesterday"))
                return DT_NOT_SUPPORTED;
            if (month_by_name(f)) {
                if (r->have_mon) return DT_BAD_FORMAT;
                r->mon = month_by_name(f);
                r->have_mon = r->text_month = 1;
                break;
            }
            for (k = 0; k < sizeof weekday_names / sizeof weekday_names[0]; k++)
                if (!strcmp(f, weekday_names[k])) break;
            if (k < sizeof weekday_names / sizeof weekday_names[0]) {
                r->weekday = 1;
                break;
            }
            return DT_BAD_FORMAT;
        }
        }
    }
    if (after_t) return DT_BAD_FORMAT;
    /* Postgres takes a day name only in the spelled-out style ("Tue Jan 2 2024") */
    if (r->weekday && !r->text_month) return DT_BAD_FORMAT;
    return place_pending(r);
}

/* ValidateDate and the time checks of DecodeDateTime */
static int validate_datetime(DtIn *r, int need_date)
{
    if (r->special) return 0;
    if (need_date && !(r->have_year && r->have_mon && r->have_mday)) return DT_BAD_FORMAT;
    if (r->have_year) {
        if (r->bc) {
            if (r->year <= 0) return DT_FIELD_OVERFLOW;
            r->year = -(r->year - 1);
        } else if (r->is2digits) {
            if (r->year < 70) r->year += 2000;
            else if (r->year < 100) r->year += 1900;
        } else if (r->year <= 0) {
            return DT_FIELD_OVERFLOW;
        }
    }
    if (r->have_mon && (r->mon < 1 || r->mon > 12)) return DT_MD_FIELD_OVERFLOW;
    if (r->have_mday && (r->mday < 1 || r->mday > 31)) return DT_MD_FIELD_OVERFLOW;
    if (r->have_year && r->have_mon && r->have_mday && r->mday > days_in_month(r->year, r->mon))
        return DT_FIELD_OVERFLOW;
    if (r->mer) {
        if (r->hour > 12) return DT_FIELD_OVERFLOW;
        if (r->mer == 1 && r->hour == 12) r->hour = 0;
        else if (r->mer == 2 && r->hour != 12) r->hour += 12;
    }
    if (r->hour > 24 || (r->hour == 24 && (r->min > 0 || r->sec > 0 || r->fsec > 0)))
        return DT_FIELD_OVERFLOW;
    return 0;
}

static int dt_error(RqError *err, int code, const char *type, const char *s)
{
    switch (code) {
    case DT_FIELD_OVERFLOW:
        rq_error_set(err, "22008", "date/time field value out of range: \"%s\"", s);
        break;
    case DT_MD_FIELD_OVERFLOW:
        rq_error_set(err, "22008", "date/time field value out of range: \"%s\"", s);
        rq_error_hint(err, "Perhaps you need a different \"datestyle\" setting.");
        break;
    case DT_INTERVAL_OVERFLOW:
        rq_error_set(err, "22015", "interval field value out of range: \"%s\"", s);
        break;
    case DT_TZDISP_OVERFLOW:
        rq_error_set(err, "22009", "time zone displacement out of range: \"%s\"", s);
        break;
    case DT_NOT_SUPPORTED:
        rq_error_set(err, "0A000", "%s input \"%s\" is not supported by riffq", type, s);
        rq_error_hint(err, "Values that depend on the current time are computed by a database; "
                           "write the date and time out.");
        break;
    case DT_BAD_ZONE:
        rq_error_set(err, "0A000", "time zone in %s input \"%s\" is not supported by riffq", type, s);
        rq_error_hint(err, "Use UTC or a numeric offset such as +02 or -05:30.");
        break;
    default:
        rq_error_set(err, "22007", "invalid input syntax for type %s: \"%s\"", type, s);
        break;
    }
    return -1;
}

/* Parse a date/time string into fields and interpret them. */
static int parse_datetime(const char *s, const char *type, int need_date, DtIn *r, RqError *err)
{
    Fields fl;
    int rc = dt_fields(s, &fl, 128 + MAX_FIELDS);
    if (!rc) rc = decode_datetime(&fl, r, !need_date);
    if (!rc) rc = validate_datetime(r, need_date);
    return rc ? dt_error(err, rc, type, s) : 0;
}

static int64_t time_of(const DtIn *r)
{
    return ((r->hour * 60 + r->min) * 60 + r->sec) * USECS_PER_SEC + r->fsec;
}

static int date_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    DtIn r;
    (void)n;
    if (parse_datetime(s, c->sqlname, 1, &r, err) < 0) return -1;
    switch (r.special) {
    case SP_INFINITY: v->i = INT32_MAX; return 0;
    case SP_NINFINITY: v->i = INT32_MIN; return 0;
    case SP_EPOCH: v->i = -DAYS_1970_TO_2000; return 0;
    case SP_ALLBALLS: return dt_error(err, DT_BAD_FORMAT, c->sqlname, s);
    }
    int64_t days = r.year > 6000000 || r.year < -5000 ? INT64_MAX : days_from_civil(r.year, r.mon, r.mday);
    if (days < MIN_DATE || days >= END_DATE) {
        rq_error_set(err, "22008", "date out of range: \"%s\"", s);
        return -1;
    }
    v->i = days;
    return 0;
}

static void date_out(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    int bc;
    if (v->i == INT32_MIN) { buf_append_str(b, "-infinity"); return; }
    if (v->i == INT32_MAX) { buf_append_str(b, "infinity"); return; }
    put_date(b, v->i, &bc);
    if (bc) buf_append_str(b, " BC");
}

static void date_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append_u32(b, (uint32_t)(int32_t)v->i); }

static int date_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n;
    int32_t x = (int32_t)get_u32(d);
    if (x != INT32_MIN && x != INT32_MAX && (x < MIN_DATE || x >= END_DATE)) {
        rq_error_set(err, "22008", "date out of range");
        return -1;
    }
    v->i = x;
    return 0;
}

static int timestamp_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    DtIn r;
    (void)n;
    if (parse_datetime(s, c->sqlname, 1, &r, err) < 0) return -1;
    switch (r.special) {
    case SP_INFINITY: v->i = INT64_MAX; return 0;
    case SP_NINFINITY: v->i = INT64_MIN; return 0;
    case SP_EPOCH: v->i = -(int64_t)DAYS_1970_TO_2000 * USECS_PER_DAY; return 0;
    case SP_ALLBALLS: return dt_error(err, DT_BAD_FORMAT, c->sqlname, s);
    }
    int64_t ts = INT64_MAX;
    /* years far outside the valid range would overflow the arithmetic */
    if (r.year >= -4713 && r.year <= 294277) {
        ts = days_from_civil(r.year, r.mon, r.mday) * USECS_PER_DAY + time_of(&r);
        /* timestamp ignores a written offset, timestamptz applies it */
        if (c->oid == PGT_TIMESTAMPTZ && r.have_zone) ts += (int64_t)r.zone * USECS_PER_SEC;
    }
    if (ts < MIN_TIMESTAMP || ts >= END_TIMESTAMP) {
        rq_error_set(err, "22008", "timestamp out of range: \"%s\"", s);
        return -1;
    }
    v->i = ts;
    return 0;
}

static void timestamp_out(const Codec *c, const Val *v, Buf *b)
{
    timestamp_out_value(v->i, c->oid == PGT_TIMESTAMPTZ, b);
}

static void int64_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append_u64(b, (uint64_t)v->i); }

static int timestamp_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n;
    int64_t x = (int64_t)get_u64(d);
    if (x != INT64_MIN && x != INT64_MAX && (x < MIN_TIMESTAMP || x >= END_TIMESTAMP)) {
        rq_error_set(err, "22008", "timestamp out of range");
        return -1;
    }
    v->i = x;
    return 0;
}

static int time_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    DtIn r;
    (void)n;
    if (parse_datetime(s, c->sqlname, 0, &r, err) < 0) return -1;
    if (r.special == SP_ALLBALLS) {
        v->i = 0;
        v->zone = 0;
        return 0;
    }
    if (r.special || !r.have_time) return dt_error(err, DT_BAD_FORMAT, c->sqlname, s);
    v->i = time_of(&r);
    v->zone = r.have_zone ? r.zone : 0;     /* no offset: the session's zone, UTC */
    return 0;
}

static void time_out(const Codec *c, const Val *v, Buf *b)
{
    put_time_of_day(b, v->i);
    if (c->oid == PGT_TIMETZ) put_zone(b, v->zone);
}

static void time_send(const Codec *c, const Val *v, Buf *b)
{
    buf_append_u64(b, (uint64_t)v->i);
    if (c->oid == PGT_TIMETZ) buf_append_u32(b, (uint32_t)v->zone);
}

static int time_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)n;
    int64_t t = (int64_t)get_u64(d);
    if (t < 0 || t > USECS_PER_DAY) {
        rq_error_set(err, "22008", "time out of range");
        return -1;
    }
    v->i = t;
    if (c->oid == PGT_TIMETZ) {
        int32_t z = (int32_t)get_u32(d + 8);
        if (z <= -TZDISP_LIMIT || z >= TZDISP_LIMIT) {
            rq_error_set(err, "22009", "time zone displacement out of range");
            return -1;
        }
        v->zone = z;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * interval
 *
 * Input follows DecodeInterval: fields are read right to left so that a
 * unit word applies to the number before it; a number without a unit is
 * seconds, or days when an hh:mm:ss follows; each unit may appear once;
 * "ago" at the end negates; fractions spill into the next smaller unit
 * (1.5 months = 1 mon 15 days, 1.5 days = 1 day 12:00:00).  If that fails,
 * the ISO 8601 forms P1Y2M3DT4H5M6S and P0001-02-03T04:05:06 are tried.
 * Output is IntervalStyle postgres: "1 year 2 mons 3 days 04:05:06.5".
 * ------------------------------------------------------------------------ */

typedef struct ItmIn {          /* pg_itm_in: fields before folding into months */
    int64_t usec;
    int32_t mday, mon, year;
} ItmIn;

enum { U_NONE, U_MICRO, U_MILLI, U_SECOND, U_MINUTE, U_HOUR, U_DAY, U_WEEK, U_MONTH,
       U_YEAR, U_DECADE, U_CENTURY, U_MILLENNIUM, U_AGO, U_BAD };

/* one bit per unit for spotting repeats; an hh:mm:ss field claims hours,
 * minutes and all kinds of seconds */
#define UM(u) (1 << (u))
#define UM_ALL_SECS (UM(U_SECOND) | UM(U_MILLI) | UM(U_MICRO))
#define UM_TIME (UM(U_HOUR) | UM(U_MINUTE) | UM_ALL_SECS)

/* Postgres' interval unit table; words are compared on their first ten
 * letters (TOKMAXLEN), so "microseconds" matches "microsecon". */
static const struct { const char *w; int unit; } interval_units[] = {
    { "ago", U_AGO }, { "c", U_CENTURY }, { "cent", U_CENTURY }, { "centuries", U_CENTURY },
    { "century", U_CENTURY }, { "d", U_DAY }, { "day", U_DAY }, { "days", U_DAY },
    { "dec", U_DECADE }, { "decade", U_DECADE }, { "decades", U_DECADE }, { "decs", U_DECADE },
    { "h", U_HOUR }, { "hour", U_HOUR }, { "hours", U_HOUR }, { "hr", U_HOUR }, { "hrs", U_HOUR },
    { "m", U_MINUTE }, { "microsecon", U_MICRO }, { "mil", U_MILLENNIUM },
    { "millennia", U_MILLENNIUM }, { "millennium", U_MILLENNIUM }, { "millisecon", U_MILLI },
    { "mils", U_MILLENNIUM }, { "min", U_MINUTE }, { "mins", U_MINUTE }, { "minute", U_MINUTE },
    { "minutes", U_MINUTE }, { "mon", U_MONTH }, { "mons", U_MONTH }, { "month", U_MONTH },
    { "months", U_MONTH }, { "ms", U_MILLI }, { "msec", U_MILLI }, { "msecond", U_MILLI },
    { "mseconds", U_MILLI }, { "msecs", U_MILLI }, { "qtr", U_BAD }, { "quarter", U_BAD },
    { "s", U_SECOND }, { "sec", U_SECOND }, { "second", U_SECOND }, { "seconds", U_SECOND },
    { "secs", U_SECOND }, { "timezone", U_BAD }, { "timezone_h", U_BAD }, { "timezone_m", U_BAD },
    { "us", U_MICRO }, { "usec", U_MICRO }, { "usecond", U_MICRO }, { "useconds", U_MICRO },
    { "usecs", U_MICRO }, { "w", U_WEEK }, { "week", U_WEEK }, { "weeks", U_WEEK },
    { "y", U_YEAR }, { "year", U_YEAR }, { "years", U_YEAR }, { "yr", U_YEAR }, { "yrs", U_YEAR },
};

static int interval_unit(const char *w)
{
    for (size_t i = 0; i < sizeof interval_units / sizeof interval_units[0]; i++)
        if (strncmp(w, interval_units[i].w, 10) == 0) return interval_units[i].unit;
    return -1;
}

static int add_i64(int64_t a, int64_t b, int64_t *r) { return __builtin_add_overflow(a, b, r); }
static int mul_add_i64(int64_t v, int64_t scale, int64_t *acc)
{
    int64_t p;
    return __builtin_mul_overflow(v, scale, &p) || __builtin_add_overflow(*acc, p, acc);
}

/* frac * scale microseconds, rounded to the nearest (AdjustFractMicroseconds) */
static int adjust_fract_usec(double frac, int64_t scale, ItmIn *it)
{
    if (frac == 0) return 0;
    frac *= (double)scale;
    int64_t usec = (int64_t)frac;
    frac -= (double)usec;
    if (frac > 0.5) usec++;
    else if (frac < -0.5) usec--;
    return add_i64(it->usec, usec, &it->usec);
}

static int adjust_fract_days(double frac, int scale, ItmIn *it)
{
    if (frac == 0) return 0;
    frac *= scale;
    int extra = (int)frac;
    if (__builtin_add_overflow(it->mday, extra, &it->mday)) return 1;
    return adjust_fract_usec(frac - extra, USECS_PER_DAY, it);
}

static int adjust_fract_years(double frac, int scale, ItmIn *it)
{
    int extra = (int)rint(frac * scale * 12);
    return __builtin_add_overflow(it->mon, extra, &it->mon);
}

static int adjust_usec(int64_t val, double fval, int64_t scale, ItmIn *it)
{
    return mul_add_i64(val, scale, &it->usec) || adjust_fract_usec(fval, scale, it);
}

static int adjust_days(int64_t val, int scale, ItmIn *it)
{
    int32_t d;
    if (val < INT_MIN || val > INT_MAX) return 1;
    return __builtin_mul_overflow((int32_t)val, scale, &d) || __builtin_add_overflow(it->mday, d, &it->mday);
}

static int adjust_months(int64_t val, ItmIn *it)
{
    if (val < INT_MIN || val > INT_MAX) return 1;
    return __builtin_add_overflow(it->mon, (int32_t)val, &it->mon);
}

static int adjust_years(int64_t val, int scale, ItmIn *it)
{
    int32_t y;
    if (val < INT_MIN || val > INT_MAX) return 1;
    return __builtin_mul_overflow((int32_t)val, scale, &y) || __builtin_add_overflow(it->year, y, &it->year);
}

/* hh:mm[:ss[.f]] of an interval; replaces the microseconds gathered so far,
 * as DecodeTimeForInterval does */
static int interval_time(const char *f, ItmIn *it)
{
    int64_t hour, fsec;
    int min, sec;
    int rc = decode_time(f, &hour, &min, &sec, &fsec);
    if (rc) return rc;
    it->usec = fsec;
    if (mul_add_i64(hour, USECS_PER_HOUR, &it->usec) || mul_add_i64(min, USECS_PER_MINUTE, &it->usec) ||
        mul_add_i64(sec, USECS_PER_SEC, &it->usec))
        return DT_FIELD_OVERFLOW;
    return 0;
}

static int decode_interval(Fields *fl, ItmIn *it)
{
    int fmask = 0, tmask, type = U_NONE, parsing_unit = 0, is_before = 0;
    memset(it, 0, sizeof *it);
    for (int i = fl->n - 1; i >= 0; i--) {
        char *f = fl->f[i];
        int rc;
        switch (fl->type[i]) {
        case F_TIME:
            if ((rc = interval_time(f, it))) return rc;
            tmask = UM_TIME;
            type = U_DAY;
            parsing_unit = 0;
            break;
        case F_TZ:
            /* a signed hh:mm[:ss] */
            if (strchr(f + 1, ':') && interval_time(f + 1, it) == 0) {
                if (*f == '-') it->usec = -it->usec;
                tmask = UM_TIME;
                type = U_DAY;
                parsing_unit = 0;
                break;
            }
            /* not a time: a signed number, handled below */
            /* fall through */
        case F_DATE:
        case F_NUMBER: {
            int64_t val;
            double fval = 0;
            char *cp;
            if (type == U_NONE) type = U_SECOND;
            errno = 0;
            val = strtoll(f, &cp, 10);
            if (errno == ERANGE) return DT_FIELD_OVERFLOW;
            if (*cp == '-') {
                /* SQL year-month: "1-2" */
                errno = 0;
                long v2 = strtol(cp + 1, &cp, 10);
                if (errno == ERANGE || v2 < 0 || v2 >= 12) return DT_FIELD_OVERFLOW;
                if (*cp) return DT_BAD_FORMAT;
                type = U_MONTH;
                if (*f == '-') v2 = -v2;
                if (__builtin_mul_overflow(val, 12, &val) || add_i64(val, v2, &val)) return DT_FIELD_OVERFLOW;
            } else if (*cp == '.') {
                if (parse_fraction(cp, &fval)) return DT_BAD_FORMAT;
                if (*f == '-') fval = -fval;
            } else if (*cp) {
                return DT_BAD_FORMAT;
            }
            int ovf = 0;
            switch (type) {
            case U_MICRO: ovf = adjust_usec(val, fval, 1, it); tmask = UM(U_MICRO); break;
            case U_MILLI: ovf = adjust_usec(val, fval, 1000, it); tmask = UM(U_MILLI); break;
            case U_SECOND:
                ovf = adjust_usec(val, fval, USECS_PER_SEC, it);
                tmask = fval == 0 ? UM(U_SECOND) : UM_ALL_SECS;
                break;
            case U_MINUTE: ovf = adjust_usec(val, fval, USECS_PER_MINUTE, it); tmask = UM(U_MINUTE); break;
            case U_HOUR:
                ovf = adjust_usec(val, fval, USECS_PER_HOUR, it);
                tmask = UM(U_HOUR);
                type = U_DAY;
                break;
            case U_DAY:
                ovf = adjust_days(val, 1, it) || adjust_fract_usec(fval, USECS_PER_DAY, it);
                tmask = UM(U_DAY);
                break;
            case U_WEEK:
                ovf = adjust_days(val, 7, it) || adjust_fract_days(fval, 7, it);
                tmask = UM(U_WEEK);
                break;
            case U_MONTH:
                ovf = adjust_months(val, it) || adjust_fract_days(fval, 30, it);
                tmask = UM(U_MONTH);
                break;
            case U_YEAR:
                ovf = adjust_years(val, 1, it) || adjust_fract_years(fval, 1, it);
                tmask = UM(U_YEAR);
                break;
            case U_DECADE:
                ovf = adjust_years(val, 10, it) || adjust_fract_years(fval, 10, it);
                tmask = UM(U_DECADE);
                break;
            case U_CENTURY:
                ovf = adjust_years(val, 100, it) || adjust_fract_years(fval, 100, it);
                tmask = UM(U_CENTURY);
                break;
            case U_MILLENNIUM:
                ovf = adjust_years(val, 1000, it) || adjust_fract_years(fval, 1000, it);
                tmask = UM(U_MILLENNIUM);
                break;
            default:
                return DT_BAD_FORMAT;
            }
            if (ovf) return DT_FIELD_OVERFLOW;
            parsing_unit = 0;
            break;
        }
        case F_STRING:
        case F_SPECIAL: {
            if (parsing_unit) return DT_BAD_FORMAT;
            int u = interval_unit(f);
            tmask = 0;
            if (u == U_AGO) {
                if (i != fl->n - 1) return DT_BAD_FORMAT;
                is_before = 1;
                type = U_BAD;
            } else if (u > 0 && u != U_BAD) {
                type = u;
                parsing_unit = 1;
            } else {
                return DT_BAD_FORMAT;
            }
            break;
        }
        default:
            return DT_BAD_FORMAT;
        }
        if (tmask & fmask) return DT_BAD_FORMAT;
        fmask |= tmask;
    }
    if (fmask == 0 || parsing_unit) return DT_BAD_FORMAT;
    if (is_before) {
        if (it->usec == INT64_MIN || it->mday == INT_MIN || it->mon == INT_MIN || it->year == INT_MIN)
            return DT_FIELD_OVERFLOW;
        it->usec = -it->usec;
        it->mday = -it->mday;
        it->mon = -it->mon;
        it->year = -it->year;
    }
    return 0;
}

/* ISO 8601 numbers may be fractions and use strtod's syntax; the integer
 * part is kept exact by limiting the magnitude (ParseISO8601Number). */
static int iso_number(const char *str, char **end, int64_t *ipart, double *fpart)
{
    if (!(isdigit((unsigned char)*str) || *str == '-' || *str == '.')) return DT_BAD_FORMAT;
    errno = 0;
    double val = strtod(str, end);
    if (*end == str || errno) return DT_BAD_FORMAT;
    if (isnan(val) || val < -1.0e15 || val > 1.0e15) return DT_FIELD_OVERFLOW;
    *ipart = val >= 0 ? (int64_t)floor(val) : -(int64_t)floor(-val);
    *fpart = val - (double)*ipart;
    return 0;
}

static int iso_int_width(const char *p)
{
    if (*p == '-') p++;
    return (int)strspn(p, "0123456789");
}

static int decode_iso_interval(const char *s, ItmIn *it)
{
    int datepart = 1, havefield = 0, rc;
    char *str = (char *)s;
    memset(it, 0, sizeof *it);
    if (strlen(str) < 2 || str[0] != 'P') return DT_BAD_FORMAT;
    str++;
    while (*str) {
        int64_t val;
        double fval;
        if (*str == 'T') {
            datepart = 0;
            havefield = 0;
            str++;
            continue;
        }
        char *fieldstart = str;
        if ((rc = iso_number(str, &str, &val, &fval))) return rc;
        char unit = *str++;
        if (datepart) {
            switch (unit) {
            case 'Y':
                if (adjust_years(val, 1, it) || adjust_fract_years(fval, 1, it)) return DT_FIELD_OVERFLOW;
                break;
            case 'M':
                if (adjust_months(val, it) || adjust_fract_days(fval, 30, it)) return DT_FIELD_OVERFLOW;
                break;
            case 'W':
                if (adjust_days(val, 7, it) || adjust_fract_days(fval, 7, it)) return DT_FIELD_OVERFLOW;
                break;
            case 'D':
                if (adjust_days(val, 1, it) || adjust_fract_usec(fval, USECS_PER_DAY, it)) return DT_FIELD_OVERFLOW;
                break;
            case 'T':
            case '\0':
                if (iso_int_width(fieldstart) == 8 && !havefield) {
                    /* basic alternative format: YYYYMMDD */
                    if (adjust_years(val / 10000, 1, it) || adjust_months((val / 100) % 100, it) ||
                        adjust_days(val % 100, 1, it) || adjust_fract_usec(fval, USECS_PER_DAY, it))
                        return DT_FIELD_OVERFLOW;
                    if (unit == '\0') return 0;
                    datepart = 0;
                    havefield = 0;
                    continue;
                }
                /* fall through */
            case '-':
                /* extended alternative format: YYYY-MM-DD */
                if (havefield) return DT_BAD_FORMAT;
                if (adjust_years(val, 1, it) || adjust_fract_years(fval, 1, it)) return DT_FIELD_OVERFLOW;
                if (unit == '\0') return 0;
                if (unit == 'T') { datepart = 0; havefield = 0; continue; }
                if ((rc = iso_number(str, &str, &val, &fval))) return rc;
                if (adjust_months(val, it) || adjust_fract_days(fval, 30, it)) return DT_FIELD_OVERFLOW;
                if (*str == '\0') return 0;
                if (*str == 'T') { datepart = 0; havefield = 0; str++; continue; }
                if (*str != '-') return DT_BAD_FORMAT;
                str++;
                if ((rc = iso_number(str, &str, &val, &fval))) return rc;
                if (adjust_days(val, 1, it) || adjust_fract_usec(fval, USECS_PER_DAY, it)) return DT_FIELD_OVERFLOW;
                if (*str == '\0') return 0;
                if (*str == 'T') { datepart = 0; havefield = 0; str++; continue; }
                return DT_BAD_FORMAT;
            default:
                return DT_BAD_FORMAT;
            }
        } else {
            switch (unit) {
            case 'H':
                if (adjust_usec(val, fval, USECS_PER_HOUR, it)) return DT_FIELD_OVERFLOW;
                break;
            case 'M':
                if (adjust_usec(val, fval, USECS_PER_MINUTE, it)) return DT_FIELD_OVERFLOW;
                break;
            case 'S':
                if (adjust_usec(val, fval, USECS_PER_SEC, it)) return DT_FIELD_OVERFLOW;
                break;
            case '\0':
                if (iso_int_width(fieldstart) == 6 && !havefield) {
                    /* basic alternative format: hhmmss */
                    if (adjust_usec(val / 10000, 0, USECS_PER_HOUR, it) ||
                        adjust_usec((val / 100) % 100, 0, USECS_PER_MINUTE, it) ||
                        adjust_usec(val % 100, 0, USECS_PER_SEC, it) || adjust_fract_usec(fval, 1, it))
                        return DT_FIELD_OVERFLOW;
                    return 0;
                }
                /* fall through */
            case ':':
                /* extended alternative format: hh:mm:ss */
                if (havefield) return DT_BAD_FORMAT;
                if (adjust_usec(val, fval, USECS_PER_HOUR, it)) return DT_FIELD_OVERFLOW;
                if (unit == '\0') return 0;
                if ((rc = iso_number(str, &str, &val, &fval))) return rc;
                if (adjust_usec(val, fval, USECS_PER_MINUTE, it)) return DT_FIELD_OVERFLOW;
                if (*str == '\0') return 0;
                if (*str != ':') return DT_BAD_FORMAT;
                str++;
                if ((rc = iso_number(str, &str, &val, &fval))) return rc;
                if (adjust_usec(val, fval, USECS_PER_SEC, it)) return DT_FIELD_OVERFLOW;
                if (*str == '\0') return 0;
                return DT_BAD_FORMAT;
            default:
                return DT_BAD_FORMAT;
            }
        }
        havefield = 1;
    }
    return 0;
}

static int interval_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    Fields fl;
    ItmIn it;
    (void)n;
    int rc = dt_fields(s, &fl, sizeof fl.work);
    if (!rc) rc = decode_interval(&fl, &it);
    if (rc == DT_BAD_FORMAT) rc = decode_iso_interval(s, &it);
    if (rc == DT_FIELD_OVERFLOW) rc = DT_INTERVAL_OVERFLOW;
    if (rc) return dt_error(err, rc, c->sqlname, s);
    int64_t months = (int64_t)it.year * 12 + it.mon;
    if (months > INT_MAX || months < INT_MIN) {
        rq_error_set(err, "22008", "interval out of range");
        return -1;
    }
    v->month = (int32_t)months;
    v->day = it.mday;
    v->i = it.usec;
    return 0;
}

/* one "N unit(s)" part; a sign is forced on a positive part that follows a
 * negative one (AddPostgresIntPart) */
static void put_interval_part(Buf *b, int64_t value, const char *unit, int *is_zero, int *is_before)
{
    if (value == 0) return;
    buf_printf(b, "%s%s%lld %s%s", *is_zero ? "" : " ", *is_before && value > 0 ? "+" : "",
               (long long)value, unit, value != 1 ? "s" : "");
    *is_before = value < 0;
    *is_zero = 0;
}

static void interval_out(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    int is_zero = 1, is_before = 0;
    int64_t t = v->i;
    /* C division truncates, so every part carries the sign of the whole */
    int64_t hour = t / USECS_PER_HOUR;
    t -= hour * USECS_PER_HOUR;
    int64_t min = t / USECS_PER_MINUTE;
    t -= min * USECS_PER_MINUTE;
    int64_t sec = t / USECS_PER_SEC;
    int64_t usec = t - sec * USECS_PER_SEC;

    put_interval_part(b, v->month / 12, "year", &is_zero, &is_before);
    put_interval_part(b, v->month % 12, "mon", &is_zero, &is_before);
    put_interval_part(b, v->day, "day", &is_zero, &is_before);
    if (is_zero || hour || min || sec || usec) {
        int minus = hour < 0 || min < 0 || sec < 0 || usec < 0;
        buf_printf(b, "%s%s%02llu:%02lld:", is_zero ? "" : " ", minus ? "-" : is_before ? "+" : "",
                   (unsigned long long)(hour < 0 ? -(uint64_t)hour : (uint64_t)hour),
                   (long long)(min < 0 ? -min : min));
        put_seconds(b, sec, usec);
    }
}

static void interval_send(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    buf_append_u64(b, (uint64_t)v->i);
    buf_append_u32(b, (uint32_t)v->day);
    buf_append_u32(b, (uint32_t)v->month);
}

static int interval_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    (void)c; (void)n; (void)err;
    v->i = (int64_t)get_u64(d);
    v->day = (int32_t)get_u32(d + 8);
    v->month = (int32_t)get_u32(d + 12);
    return 0;
}

/* ------------------------------------------------------------------------
 * json and jsonb
 *
 * json keeps its text exactly as written once it parses.  jsonb prints the
 * value back the way jsonb_out does: ", " and ": " separators, object keys
 * sorted by length then bytes with the last of duplicate keys winning,
 * escapes decoded (and re-escaped only where needed), numbers as numeric
 * prints them.  jsonb's binary form is a version byte 1 and that text.
 * ------------------------------------------------------------------------ */

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct JNode JNode;
struct JNode {
    int kind;
    char *str;              /* J_STR: decoded UTF-8; J_NUM: the number as numeric prints it */
    size_t len;
    JNode **kids;           /* J_ARR: elements; J_OBJ: key, value, key, value... */
    size_t n, cap;
    size_t order;           /* position among the object's keys, to keep the last duplicate */
};

typedef struct JParser {
    const char *s, *end, *p;
    int build;              /* jsonb: build nodes and decode strings */
    int depth;
    RqError *err;
} JParser;

/* Nesting is parsed recursively; Postgres' own limit depends on its
 * max_stack_depth, riffq's keeps the stack of a worker thread safe. */
#define JSON_MAX_DEPTH 1000

static void jnode_free(JNode *j)
{
    if (!j) return;
    for (size_t i = 0; i < j->n; i++) jnode_free(j->kids[i]);
    free(j->kids);
    free(j->str);
    free(j);
}

static void jnode_push(JNode *parent, JNode *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->kids = xrealloc(parent->kids, parent->cap * sizeof *parent->kids);
    }
    parent->kids[parent->n++] = kid;
}

static int json_is_alnum(unsigned char ch)
{
    return isalnum(ch) || ch == '_' || ch >= 0x80;
}

static void json_skip_ws(JParser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int json_fail(JParser *jp, const char *fmt, const char *tok, size_t toklen)
{
    rq_error_set(jp->err, "22P02", "invalid input syntax for type json");
    if (fmt) {
        char *t = xstrndup(tok, toklen);
        rq_error_detail(jp->err, fmt, t);
        free(t);
    }
    return -1;
}

/* The token at p, as Postgres quotes it in "Expected ..., but found" */
static size_t json_token_len(JParser *jp)
{
    const char *q = jp->p;
    if (q >= jp->end) return 0;
    if (strchr("{}[],:", *q)) return 1;
    if (*q == '"') {
        for (q++; q < jp->end && *q != '"'; q++)
            if (*q == '\\' && q + 1 < jp->end) q++;
        return (size_t)(q - jp->p) + (q < jp->end);
    }
    while (q < jp->end && json_is_alnum((unsigned char)*q)) q++;
    if (q == jp->p) {
        size_t l = utf8_char_len((const uint8_t *)q, (size_t)(jp->end - q));
        return l ? l : 1;
    }
    return (size_t)(q - jp->p);
}

static int json_string(JParser *jp, Buf *out);
static int json_number(JParser *jp, size_t *len);

/* Postgres lexes the next token before the grammar looks at it, so a
 * malformed token is reported as such rather than as unexpected. */
static int json_check_token(JParser *jp)
{
    const char *save = jp->p;
    size_t len;
    int rc = 0;
    char ch = *jp->p;
    if (ch == '"') {
        rc = json_string(jp, NULL);
    } else if (ch == '-' || isdigit((unsigned char)ch)) {
        rc = json_number(jp, &len);
    } else if (!strchr("{}[],:", ch)) {
        len = json_token_len(jp);
        if (!((len == 4 && memcmp(jp->p, "true", 4) == 0) || (len == 5 && memcmp(jp->p, "false", 5) == 0) ||
              (len == 4 && memcmp(jp->p, "null", 4) == 0)))
            rc = json_fail(jp, "Token \"%s\" is invalid.", jp->p, len);
    }
    jp->p = save;
    return rc;
}

static int json_expected(JParser *jp, const char *what)
{
    if (jp->p >= jp->end) return json_fail(jp, "The input string ended unexpectedly.", "", 0);
    if (json_check_token(jp) < 0) return -1;
    char fmt[96];
    snprintf(fmt, sizeof fmt, "Expected %s, but found \"%%s\".", what);
    return json_fail(jp, fmt, jp->p, json_token_len(jp));
}

static void put_utf8(Buf *b, uint32_t cp)
{
    if (cp < 0x80) {
        buf_append_byte(b, (uint8_t)cp);
    } else if (cp < 0x800) {
        buf_append_byte(b, (uint8_t)(0xC0 | cp >> 6));
        buf_append_byte(b, (uint8_t)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        buf_append_byte(b, (uint8_t)(0xE0 | cp >> 12));
        buf_append_byte(b, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        buf_append_byte(b, (uint8_t)(0x80 | (cp & 0x3F)));
    } else {
        buf_append_byte(b, (uint8_t)(0xF0 | cp >> 18));
        buf_append_byte(b, (uint8_t)(0x80 | ((cp >> 12) & 0x3F)));
        buf_append_byte(b, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        buf_append_byte(b, (uint8_t)(0x80 | (cp & 0x3F)));
    }
}

/* A string at p (which is '"'); decoded into out when building. */
static int json_string(JParser *jp, Buf *out)
{
    const char *start = jp->p;
    uint32_t high = 0;      /* pending high surrogate */
    jp->p++;
    for (;;) {
        if (jp->p >= jp->end)
            return json_fail(jp, "Token \"%s\" is invalid.", start, (size_t)(jp->end - start));
        unsigned char ch = (unsigned char)*jp->p;
        if (ch == '"') break;
        if (ch < 0x20) {
            char tok[8];
            snprintf(tok, sizeof tok, "0x%02x", ch);
            return json_fail(jp, "Character with value %s must be escaped.", tok, strlen(tok));
        }
        if (ch != '\\') {
            if (high) return json_fail(jp, "Unicode low surrogate must follow a high surrogate.", "", 0);
            if (out) buf_append_byte(out, ch);
            jp->p++;
            continue;
        }
        jp->p++;
        if (jp->p >= jp->end)
            return json_fail(jp, "Token \"%s\" is invalid.", start, (size_t)(jp->end - start));
        char e = *jp->p++;
        if (e == 'u') {
            uint32_t cp = 0;
            for (int k = 0; k < 4; k++) {
                int h = jp->p < jp->end ? hex_val((unsigned char)*jp->p) : -1;
                if (h < 0) return json_fail(jp, "\"\\u\" must be followed by four hexadecimal digits.", "", 0);
                cp = cp << 4 | (uint32_t)h;
                jp->p++;
            }
            if (!out) continue;     /* json only checks the four digits */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (high) return json_fail(jp, "Unicode high surrogate must not follow a high surrogate.", "", 0);
                high = cp;
                continue;
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                if (!high) return json_fail(jp, "Unicode low surrogate must follow a high surrogate.", "", 0);
                cp = 0x10000 + ((high - 0xD800) << 10) + (cp - 0xDC00);
                high = 0;
            } else if (high) {
                return json_fail(jp, "Unicode low surrogate must follow a high surrogate.", "", 0);
            }
            if (out) {
                if (cp == 0) {
                    rq_error_set(jp->err, "22P05", "unsupported Unicode escape sequence");
                    rq_error_detail(jp->err, "\\u0000 cannot be converted to text.");
                    return -1;
                }
                put_utf8(out, cp);
            }
            continue;
        }
        if (high) return json_fail(jp, "Unicode low surrogate must follow a high surrogate.", "", 0);
        char dec;
        switch (e) {
        case '"': dec = '"'; break;
        case '\\': dec = '\\'; break;
        case '/': dec = '/'; break;
        case 'b': dec = '\b'; break;
        case 'f': dec = '\f'; break;
        case 'n': dec = '\n'; break;
        case 'r': dec = '\r'; break;
        case 't': dec = '\t'; break;
        default: {
            size_t l = utf8_char_len((const uint8_t *)jp->p - 1, (size_t)(jp->end - jp->p + 1));
            return json_fail(jp, "Escape sequence \"\\%s\" is invalid.", jp->p - 1, l ? l : 1);
        }
        }
        if (out) buf_append_byte(out, (uint8_t)dec);
    }
    if (high) return json_fail(jp, "Unicode low surrogate must follow a high surrogate.", "", 0);
    jp->p++;
    return 0;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? not followed by a letter */
static int json_number(JParser *jp, size_t *len)
{
    const char *q = jp->p;
    int ok = 1;
    if (q < jp->end && *q == '-') q++;
    if (q < jp->end && *q == '0') q++;
    else if (q < jp->end && *q >= '1' && *q <= '9') while (q < jp->end && isdigit((unsigned char)*q)) q++;
    else ok = 0;
    if (ok && q < jp->end && *q == '.') {
        q++;
        if (q < jp->end && isdigit((unsigned char)*q)) while (q < jp->end && isdigit((unsigned char)*q)) q++;
        else ok = 0;
    }
    if (ok && q < jp->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < jp->end && (*q == '+' || *q == '-')) q++;
        if (q < jp->end && isdigit((unsigned char)*q)) while (q < jp->end && isdigit((unsigned char)*q)) q++;
        else ok = 0;
    }
    if (!ok || (q < jp->end && json_is_alnum((unsigned char)*q))) {
        while (q < jp->end && (json_is_alnum((unsigned char)*q) || *q == '.' || *q == '+' || *q == '-')) q++;
        return json_fail(jp, "Token \"%s\" is invalid.", jp->p, (size_t)(q - jp->p));
    }
    *len = (size_t)(q - jp->p);
    return 0;
}

static int json_value(JParser *jp, JNode **out);

static JNode *jnode_new(int kind)
{
    JNode *j = xcalloc(1, sizeof *j);
    j->kind = kind;
    return j;
}

static int json_container(JParser *jp, JNode **out)
{
    int is_obj = *jp->p == '{';
    size_t count = 0;
    JNode *node = jp->build ? jnode_new(is_obj ? J_OBJ : J_ARR) : NULL;
    if (++jp->depth > JSON_MAX_DEPTH) {
        jnode_free(node);
        rq_error_set(jp->err, "54001", "stack depth limit exceeded");
        rq_error_detail(jp->err, "riffq reads JSON nested at most %d levels deep.", JSON_MAX_DEPTH);
        return -1;
    }
    jp->p++;
    json_skip_ws(jp);
    if (jp->p < jp->end && *jp->p == (is_obj ? '}' : ']')) {
        jp->p++;
        goto done;
    }
    for (;;) {
        JNode *kid = NULL;
        if (is_obj) {
            if (jp->p >= jp->end || *jp->p != '"') {
                jnode_free(node);
                return json_expected(jp, count ? "string" : "string or \"}\"");
            }
            Buf key;
            buf_init(&key);
            if (json_string(jp, jp->build ? &key : NULL) < 0) { buf_free(&key); jnode_free(node); return -1; }
            if (node) {
                JNode *k = jnode_new(J_STR);
                k->len = key.len;
                k->str = xmalloc(key.len + 1);
                if (key.len) memcpy(k->str, key.data, key.len);
                k->str[key.len] = 0;
                k->order = node->n / 2;
                jnode_push(node, k);
            }
            buf_free(&key);
            json_skip_ws(jp);
            if (jp->p >= jp->end || *jp->p != ':') { jnode_free(node); return json_expected(jp, "\":\""); }
            jp->p++;
        }
        if (json_value(jp, node ? &kid : NULL) < 0) { jnode_free(node); return -1; }
        count++;
        if (node) jnode_push(node, kid);
        json_skip_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            json_skip_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == (is_obj ? '}' : ']')) {
            jp->p++;
            break;
        }
        jnode_free(node);
        return json_expected(jp, is_obj ? "\",\" or \"}\"" : "\",\" or \"]\"");
    }
done:
    jp->depth--;
    if (out) *out = node;
    return 0;
}

static int json_value(JParser *jp, JNode **out)
{
    json_skip_ws(jp);
    if (jp->p >= jp->end) return json_fail(jp, "The input string ended unexpectedly.", "", 0);
    char ch = *jp->p;
    if (ch == '{' || ch == '[') return json_container(jp, out);
    if (ch == '"') {
        Buf s;
        buf_init(&s);
        if (json_string(jp, jp->build ? &s : NULL) < 0) { buf_free(&s); return -1; }
        if (out) {
            JNode *j = jnode_new(J_STR);
            j->len = s.len;
            j->str = xmalloc(s.len + 1);
            if (s.len) memcpy(j->str, s.data, s.len);
            j->str[s.len] = 0;
            *out = j;
        }
        buf_free(&s);
        return 0;
    }
    if (ch == '-' || isdigit((unsigned char)ch)) {
        size_t len;
        if (json_number(jp, &len) < 0) return -1;
        if (out) {
            /* jsonb stores numbers as numeric, so they print as numeric does */
            char *txt = xstrndup(jp->p, len);
            Val v;
            val_init(&v);
            int rc = numeric_in(NULL, txt, len, &v, jp->err);
            free(txt);
            if (rc < 0) { val_free(&v); return -1; }
            Buf b;
            buf_init(&b);
            numeric_out_num(&v.num, &b);
            val_free(&v);
            JNode *j = jnode_new(J_NUM);
            buf_append_byte(&b, 0);
            j->str = xstrdup(b.data);
            j->len = b.len - 1;
            buf_free(&b);
            *out = j;
        }
        jp->p += len;
        return 0;
    }
    if (ch == '}' || ch == ']' || ch == ',' || ch == ':')
        return json_fail(jp, "Expected JSON value, but found \"%s\".", jp->p, 1);
    size_t l = json_token_len(jp);
    int kind = -1;
    if (l == 4 && memcmp(jp->p, "true", 4) == 0) kind = J_TRUE;
    else if (l == 5 && memcmp(jp->p, "false", 5) == 0) kind = J_FALSE;
    else if (l == 4 && memcmp(jp->p, "null", 4) == 0) kind = J_NULL;
    if (kind < 0) return json_fail(jp, "Token \"%s\" is invalid.", jp->p, l);
    jp->p += l;
    if (out) *out = jnode_new(kind);
    return 0;
}

static int json_parse(const char *s, size_t n, int build, JNode **out, RqError *err)
{
    JParser jp = { s, s + n, s, build, 0, err };
    JNode *root = NULL;
    if (json_value(&jp, build ? &root : NULL) < 0) return -1;
    json_skip_ws(&jp);
    if (jp.p < jp.end) {
        jnode_free(root);
        return json_expected(&jp, "end of input");
    }
    if (out) *out = root;
    return 0;
}

/* jsonb key order: shorter first, then bytewise; equal keys by their
 * position, later first, so that deduplication keeps the last one */
static int cmp_jkeys(const void *a, const void *b)
{
    const JNode *x = *(JNode *const *)a, *y = *(JNode *const *)b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    int c = memcmp(x->str, y->str, x->len);
    if (c) return c;
    return x->order > y->order ? -1 : 1;
}

static void jsonb_put_string(Buf *b, const char *s, size_t n)
{
    buf_append_byte(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '\b': buf_append_str(b, "\\b"); break;
        case '\f': buf_append_str(b, "\\f"); break;
        case '\n': buf_append_str(b, "\\n"); break;
        case '\r': buf_append_str(b, "\\r"); break;
        case '\t': buf_append_str(b, "\\t"); break;
        case '"': buf_append_str(b, "\\\""); break;
        case '\\': buf_append_str(b, "\\\\"); break;
        default:
            if (ch < ' ') buf_printf(b, "\\u%04x", ch);
            else buf_append_byte(b, ch);
        }
    }
    buf_append_byte(b, '"');
}

static void jsonb_print(const JNode *j, Buf *b)
{
    switch (j->kind) {
    case J_NULL: buf_append_str(b, "null"); break;
    case J_FALSE: buf_append_str(b, "false"); break;
    case J_TRUE: buf_append_str(b, "true"); break;
    case J_NUM: buf_append(b, j->str, j->len); break;
    case J_STR: jsonb_put_string(b, j->str, j->len); break;
    case J_ARR:
        buf_append_byte(b, '[');
        for (size_t i = 0; i < j->n; i++) {
            if (i) buf_append_str(b, ", ");
            jsonb_print(j->kids[i], b);
        }
        buf_append_byte(b, ']');
        break;
    case J_OBJ: {
        /* sort (key, value) pairs through an index of keys */
        size_t np = j->n / 2;
        JNode **keys = xmalloc((np ? np : 1) * sizeof *keys);
        for (size_t i = 0; i < np; i++) keys[i] = j->kids[2 * i];
        qsort(keys, np, sizeof *keys, cmp_jkeys);
        buf_append_byte(b, '{');
        int first = 1;
        for (size_t i = 0; i < np; i++) {
            if (i > 0 && keys[i]->len == keys[i - 1]->len &&
                memcmp(keys[i]->str, keys[i - 1]->str, keys[i]->len) == 0)
                continue;   /* an earlier duplicate of the key just printed */
            if (!first) buf_append_str(b, ", ");
            first = 0;
            jsonb_put_string(b, keys[i]->str, keys[i]->len);
            buf_append_str(b, ": ");
            jsonb_print(j->kids[2 * keys[i]->order + 1], b);
        }
        buf_append_byte(b, '}');
        free(keys);
        break;
    }
    }
}

static int json_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    if (json_parse(s, n, 0, NULL, err) < 0) return -1;
    return text_in(c, s, n, v, err);
}

static int json_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    if (check_utf8(d, n, err) < 0) return -1;
    return json_in(c, (const char *)d, n, v, err);
}

static int jsonb_in(const Codec *c, const char *s, size_t n, Val *v, RqError *err)
{
    (void)c;
    JNode *root = NULL;
    if (json_parse(s, n, 1, &root, err) < 0) return -1;
    jsonb_print(root, &v->bytes);
    jnode_free(root);
    return 0;
}

static void jsonb_send(const Codec *c, const Val *v, Buf *b)
{
    (void)c;
    buf_append_byte(b, 1);
    buf_append(b, v->bytes.data, v->bytes.len);
}

static int jsonb_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, RqError *err)
{
    if (n < 1 || d[0] != 1) {
        rq_error_set(err, "22P03", "unsupported jsonb version number %d", n < 1 ? -1 : d[0]);
        return -1;
    }
    if (check_utf8(d + 1, n - 1, err) < 0) return -1;
    return jsonb_in(c, (const char *)d + 1, n - 1, v, err);
}

static void text_send(const Codec *c, const Val *v, Buf *b) { (void)c; buf_append(b, v->bytes.data, v->bytes.len); }

/* ------------------------------------------------------------------------
 * The codec table
 * ------------------------------------------------------------------------ */

static const Codec codecs[] = {
    { PGT_BOOL, "boolean", 1, bool_in, bool_out, bool_send, bool_recv },
    { PGT_BYTEA, "bytea", -1, bytea_in, bytea_out, text_send, bytea_recv },
    { PGT_CHAR, "\"char\"", 1, char_in, char_out, char_send, char_recv },
    { PGT_NAME, "name", -1, name_in, bytes_out, text_send, name_recv },
    { PGT_INT8, "bigint", 8, int_in, int_out, int_send, int_recv },
    { PGT_INT2, "smallint", 2, int_in, int_out, int_send, int_recv },
    { PGT_INT4, "integer", 4, int_in, int_out, int_send, int_recv },
    { PGT_TEXT, "text", -1, text_in, bytes_out, text_send, text_recv },
    { PGT_OID, "oid", 4, oid_in, oid_out, oid_send, oid_recv },
    { PGT_JSON, "json", -1, json_in, bytes_out, text_send, json_recv },
    { PGT_FLOAT4, "real", 4, float_in, float_out, float_send, float_recv },
    { PGT_FLOAT8, "double precision", 8, float_in, float_out, float_send, float_recv },
    { PGT_UNKNOWN, "unknown", -1, text_in, bytes_out, text_send, text_recv },
    { PGT_BPCHAR, "character", -1, text_in, bytes_out, text_send, text_recv },
    { PGT_VARCHAR, "character varying", -1, text_in, bytes_out, text_send, text_recv },
    { PGT_DATE, "date", 4, date_in, date_out, date_send, date_recv },
    { PGT_TIME, "time", 8, time_in, time_out, time_send, time_recv },
    { PGT_TIMESTAMP, "timestamp", 8, timestamp_in, timestamp_out, int64_send, timestamp_recv },
    { PGT_TIMESTAMPTZ, "timestamp with time zone", 8, timestamp_in, timestamp_out, int64_send, timestamp_recv },
    { PGT_INTERVAL, "interval", 16, interval_in, interval_out, interval_send, interval_recv },
    { PGT_TIMETZ, "time with time zone", 12, time_in, time_out, time_send, time_recv },
    { PGT_NUMERIC, "numeric", -1, numeric_in, numeric_out, numeric_send, numeric_recv },
    { PGT_UUID, "uuid", 16, uuid_in, uuid_out, uuid_send, uuid_recv },
    { PGT_JSONB, "jsonb", -1, jsonb_in, bytes_out, jsonb_send, jsonb_recv },
};

static const Codec *codec_for(uint32_t oid)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (codecs[i].oid == oid) return &codecs[i];
    return NULL;
}

/* The type as format_type() names it in a message: the codec names are
 * that spelling, except where the datetime messages use the short one. */
static const char *type_display_name(uint32_t oid)
{
    const Codec *c = codec_for(oid);
    const PgType *t = pgt_by_oid(oid);
    if (oid == PGT_TIME) return "time without time zone";
    if (oid == PGT_TIMESTAMP) return "timestamp without time zone";
    if (c) return c->sqlname;
    return t ? t->name : "???";
}

static int codec_in(const Codec *c, const char *in, size_t len, Val *v, RqError *err)
{
    /* input functions take C strings; text types keep all len bytes */
    char *s = xmalloc(len + 1);
    if (len) memcpy(s, in, len);
    s[len] = 0;
    int rc = c->in(c, s, len, v, err);
    free(s);
    return rc;
}

/* Receive with the length check fixed-size types need.  elem_no > 0 means
 * an array element, which Postgres words differently. */
static int codec_recv(const Codec *c, const uint8_t *d, size_t n, Val *v, int elem_no, RqError *err)
{
    if (c->binlen >= 0 && n != (size_t)c->binlen) {
        if (elem_no > 0) {
            rq_error_set(err, "22P03", "improper binary format in array element %d", elem_no);
            return -1;
        }
        return bad_binary_len(err, c->sqlname, (size_t)c->binlen, n);
    }
    return c->recv(c, d, n, v, err);
}

/* ------------------------------------------------------------------------
 * Arrays
 *
 * Text: {a,b,...}, nested for more dimensions, optionally preceded by
 * explicit bounds "[0:2]=".  Elements are bare (backslash escapes any
 * character, blanks at either end dropped) or double-quoted; an unquoted
 * NULL in any case is the null value.  On output an element is quoted when
 * it is empty, is NULL in any case, or holds a quote, backslash, brace,
 * comma or blank, with quotes and backslashes escaped.  Binary: int32 ndim,
 * int32 has-nulls flag, element OID, (int32 size, int32 lower bound) per
 * dimension, then each element as int32 length (-1 for null) and bytes.
 * ------------------------------------------------------------------------ */

#define MAXDIM 6

typedef struct ArrText {
    int ndim;
    int dims[MAXDIM];
    int lbound[MAXDIM];
    char **elems;           /* NULL entries are SQL nulls; strings owned */
    size_t n, cap;
} ArrText;

typedef struct ArrParser {
    const char *s, *p;
    ArrText *a;
    int dims_seen[MAXDIM];  /* element count per level, -1 until known */
    int leaf_level;         /* level holding elements, -1 until known */
    RqError *err;
} ArrParser;

static void arr_free(ArrText *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->elems[i]);
    free(a->elems);
    memset(a, 0, sizeof *a);
}

static void arr_push(ArrText *a, char *e)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->elems = xrealloc(a->elems, a->cap * sizeof *a->elems);
    }
    a->elems[a->n++] = e;
}

static int arr_fail(ArrParser *ap, const char *detail, int ch)
{
    rq_error_set(ap->err, "22P02", "malformed array literal: \"%s\"", ap->s);
    if (ch) rq_error_detail(ap->err, detail, ch);
    else rq_error_detail(ap->err, "%s", detail);
    return -1;
}

static int arr_unexpected(ArrParser *ap)
{
    if (!*ap->p) return arr_fail(ap, "Unexpected end of input.", 0);
    return arr_fail(ap, "Unexpected \"%c\" character.", (unsigned char)*ap->p);
}

/* One element at ap->p, up to (not including) the ',' or '}' after it. */
static int arr_element(ArrParser *ap, char **out)
{
    Buf e;
    buf_init(&e);
    const char *p = ap->p;
    int quoted = 0, escaped_any = 0;
    size_t keep = 0;        /* length without trailing unescaped blanks */
    if (*p == '"') {
        quoted = 1;
        for (p++; *p != '"'; p++) {
            if (!*p) { ap->p = p; buf_free(&e); return arr_unexpected(ap); }
            if (*p == '\\') {
                p++;
                if (!*p) { ap->p = p; buf_free(&e); return arr_unexpected(ap); }
            }
            buf_append_byte(&e, (uint8_t)*p);
        }
        p++;
        while (is_space((unsigned char)*p)) p++;
        if (*p != ',' && *p != '}') {
            ap->p = p;
            buf_free(&e);
            return *p ? arr_fail(ap, "Unexpected array element.", 0) : arr_unexpected(ap);
        }
        keep = e.len;
    } else {
        for (; *p != ',' && *p != '}'; p++) {
            if (!*p) { ap->p = p; buf_free(&e); return arr_unexpected(ap); }
            if (*p == '"') { ap->p = p; buf_free(&e); return arr_fail(ap, "Unexpected array element.", 0); }
            if (*p == '{') { ap->p = p; buf_free(&e); return arr_unexpected(ap); }
            if (*p == '\\') {
                p++;
                if (!*p) { ap->p = p; buf_free(&e); return arr_unexpected(ap); }
                buf_append_byte(&e, (uint8_t)*p);
                escaped_any = 1;
                keep = e.len;
                continue;
            }
            buf_append_byte(&e, (uint8_t)*p);
            if (!is_space((unsigned char)*p)) keep = e.len;
        }
    }
    ap->p = p;
    e.len = keep;
    if (!quoted && !escaped_any && keep == 4 && strncasecmp(e.data, "NULL", 4) == 0) {
        buf_free(&e);
        *out = NULL;
        return 0;
    }
    buf_append_byte(&e, 0);
    *out = e.data;          /* the Buf's memory becomes the element */
    return 0;
}

/* A brace level at ap->p (which is '{'). */
static int arr_level(ArrParser *ap, int level)
{
    int count = 0, has_sub = 0, has_elem = 0;
    ap->p++;
    while (is_space((unsigned char)*ap->p)) ap->p++;
    if (*ap->p == '}') {
        /* only a whole array may be empty: "{}" */
        if (level > 0) return arr_unexpected(ap);
        ap->p++;
        return 0;
    }
    for (;;) {
        while (is_space((unsigned char)*ap->p)) ap->p++;
        if (*ap->p == '{') {
            if (has_elem || (ap->leaf_level >= 0 && level >= ap->leaf_level)) return arr_unexpected(ap);
            if (level + 1 >= MAXDIM) {
                rq_error_set(ap->err, "54000", "number of array dimensions (%d) exceeds the maximum allowed (%d)",
                             level + 2, MAXDIM);
                return -1;
            }
            if (arr_level(ap, level + 1) < 0) return -1;
            has_sub = 1;
        } else if (*ap->p == ',' || *ap->p == '}' || !*ap->p) {
            return arr_unexpected(ap);
        } else {
            if (has_sub || (ap->leaf_level >= 0 && ap->leaf_level != level))
                return arr_fail(ap, "Unexpected array element.", 0);
            ap->leaf_level = level;
            char *e = NULL;
            if (arr_element(ap, &e) < 0) return -1;
            arr_push(ap->a, e);
            has_elem = 1;
        }
        count++;
        while (is_space((unsigned char)*ap->p)) ap->p++;
        if (*ap->p == ',') { ap->p++; continue; }
        if (*ap->p == '}') { ap->p++; break; }
        return *ap->p ? arr_fail(ap, "Unexpected array element.", 0) : arr_unexpected(ap);
    }
    if (ap->dims_seen[level] < 0) {
        ap->dims_seen[level] = count;
    } else if (ap->dims_seen[level] != count) {
        return arr_fail(ap, "Multidimensional arrays must have sub-arrays with matching dimensions.", 0);
    }
    return 0;
}

static int arr_parse(const char *s, ArrText *a, RqError *err)
{
    ArrParser ap = { s, s, a, { -1, -1, -1, -1, -1, -1 }, -1, err };
    int ndim = 0, dims[MAXDIM], lb[MAXDIM];
    memset(a, 0, sizeof *a);
    for (;;) {
        while (is_space((unsigned char)*ap.p)) ap.p++;
        if (*ap.p != '[') break;
        ap.p++;
        if (ndim >= MAXDIM) {
            rq_error_set(err, "54000", "number of array dimensions (%d) exceeds the maximum allowed (%d)",
                         ndim + 1, MAXDIM);
            return -1;
        }
        const char *q = ap.p;
        while (isdigit((unsigned char)*q) || *q == '-' || *q == '+') q++;
        if (q == ap.p) return arr_fail(&ap, "\"[\" must introduce explicitly-specified array dimensions.", 0);
        if (*q == ':') {
            lb[ndim] = atoi(ap.p);
            ap.p = q + 1;
            for (q = ap.p; isdigit((unsigned char)*q) || *q == '-' || *q == '+'; q++) ;
            if (q == ap.p) return arr_fail(&ap, "Missing array dimension value.", 0);
        } else {
            lb[ndim] = 1;
        }
        if (*q != ']') return arr_fail(&ap, "Missing \"]\" after array dimensions.", 0);
        int ub = atoi(ap.p);
        ap.p = q + 1;
        if (ub < lb[ndim]) {
            rq_error_set(err, "2202E", "upper bound cannot be less than lower bound");
            return -1;
        }
        dims[ndim] = ub - lb[ndim] + 1;
        ndim++;
    }
    if (ndim > 0) {
        if (*ap.p != '=') return arr_fail(&ap, "Missing \"=\" after array dimensions.", 0);
        ap.p++;
        while (is_space((unsigned char)*ap.p)) ap.p++;
        if (*ap.p != '{') return arr_fail(&ap, "Array contents must start with \"{\".", 0);
    } else if (*ap.p != '{') {
        return arr_fail(&ap, "Array value must start with \"{\" or dimension information.", 0);
    }
    if (arr_level(&ap, 0) < 0) { arr_free(a); return -1; }
    while (is_space((unsigned char)*ap.p)) ap.p++;
    if (*ap.p) { arr_free(a); return arr_fail(&ap, "Junk after closing right brace.", 0); }

    int found = 0;
    while (found < MAXDIM && ap.dims_seen[found] >= 0) found++;
    if (a->n == 0) found = 0;
    if (ndim > 0) {
        int match = found == ndim;
        for (int i = 0; match && i < ndim; i++) match = dims[i] == ap.dims_seen[i];
        if (!match) { arr_free(a); return arr_fail(&ap, "Specified array dimensions do not match array contents.", 0); }
    }
    a->ndim = found;
    for (int i = 0; i < found; i++) {
        a->dims[i] = ap.dims_seen[i];
        a->lbound[i] = ndim ? lb[i] : 1;
    }
    return 0;
}

static int arr_needs_quotes(const char *s, size_t n)
{
    if (n == 0 || (n == 4 && strncasecmp(s, "NULL", 4) == 0)) return 1;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '\\' || s[i] == '{' || s[i] == '}' || s[i] == ',' || is_space((unsigned char)s[i]))
            return 1;
    return 0;
}

static void arr_put_element(Buf *b, const char *s, size_t n)
{
    if (!arr_needs_quotes(s, n)) { buf_append(b, s, n); return; }
    buf_append_byte(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') buf_append_byte(b, '\\');
        buf_append_byte(b, (uint8_t)s[i]);
    }
    buf_append_byte(b, '"');
}

/* Print an array whose elements are already in output text form (NULL for
 * nulls), as array_out does: bounds first if any lower bound is not 1. */
static void arr_print(Buf *b, int ndim, const int *dims, const int *lbound, char *const *texts)
{
    if (ndim == 0) { buf_append_str(b, "{}"); return; }
    int need_bounds = 0;
    for (int i = 0; i < ndim; i++) need_bounds |= lbound[i] != 1;
    if (need_bounds) {
        for (int i = 0; i < ndim; i++)
            buf_printf(b, "[%d:%d]", lbound[i], lbound[i] + dims[i] - 1);
        buf_append_byte(b, '=');
    }
    size_t total = 1;
    for (int i = 0; i < ndim; i++) total *= (size_t)dims[i];
    int idx[MAXDIM] = { 0 };
    for (int i = 0; i < ndim; i++) buf_append_byte(b, '{');
    for (size_t k = 0; k < total; k++) {
        if (texts[k]) arr_put_element(b, texts[k], strlen(texts[k]));
        else buf_append_str(b, "NULL");
        /* advance the index odometer, closing and opening braces */
        int d = ndim - 1;
        while (d >= 0 && ++idx[d] == dims[d]) {
            idx[d] = 0;
            buf_append_byte(b, '}');
            d--;
        }
        if (d < 0) break;
        buf_append_byte(b, ',');
        for (int j = d + 1; j < ndim; j++) buf_append_byte(b, '{');
    }
}

static void free_texts(char **texts, size_t n)
{
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
}

/* text -> text: every element through its type's input and output */
static int array_normalize(const Codec *ec, const char *in, size_t len, Buf *out, RqError *err)
{
    ArrText a;
    char *s = xstrndup(in, len);
    int rc = arr_parse(s, &a, err);
    free(s);
    if (rc < 0) return -1;
    char **texts = xcalloc(a.n ? a.n : 1, sizeof *texts);
    for (size_t i = 0; i < a.n && rc == 0; i++) {
        if (!a.elems[i]) continue;
        Val v;
        val_init(&v);
        rc = codec_in(ec, a.elems[i], strlen(a.elems[i]), &v, err);
        if (rc == 0) {
            Buf t;
            buf_init(&t);
            ec->out(ec, &v, &t);
            buf_append_byte(&t, 0);
            texts[i] = t.data;
        }
        val_free(&v);
    }
    if (rc == 0) arr_print(out, a.ndim, a.dims, a.lbound, texts);
    free_texts(texts, a.n);
    arr_free(&a);
    return rc;
}

static int array_to_binary(const Codec *ec, const PgType *at, const char *in, size_t len, Buf *out, RqError *err)
{
    ArrText a;
    char *s = xstrndup(in, len);
    int rc = arr_parse(s, &a, err);
    free(s);
    if (rc < 0) return -1;
    if (a.ndim > 1) {
        rq_error_set(err, "0A000", "binary output of %s values with %d dimensions is not supported by riffq",
                     at->name, a.ndim);
        rq_error_hint(err, "Request this column in text format, or use a one-dimensional array.");
        arr_free(&a);
        return -1;
    }
    int has_null = 0;
    for (size_t i = 0; i < a.n; i++) has_null |= a.elems[i] == NULL;
    buf_append_u32(out, (uint32_t)a.ndim);
    buf_append_u32(out, (uint32_t)has_null);
    buf_append_u32(out, ec->oid);
    if (a.ndim == 1) {
        buf_append_u32(out, (uint32_t)a.dims[0]);
        buf_append_u32(out, (uint32_t)a.lbound[0]);
    }
    for (size_t i = 0; i < a.n && rc == 0; i++) {
        if (!a.elems[i]) {
            buf_append_u32(out, UINT32_MAX);
            continue;
        }
        Val v;
        val_init(&v);
        rc = codec_in(ec, a.elems[i], strlen(a.elems[i]), &v, err);
        if (rc == 0) {
            size_t at_len = out->len;
            buf_append_u32(out, 0);
            ec->send(ec, &v, out);
            buf_put_u32_at(out, at_len, (uint32_t)(out->len - at_len - 4));
        }
        val_free(&v);
    }
    arr_free(&a);
    return rc;
}

static int array_from_binary(const Codec *ec, const PgType *at, const uint8_t *d, size_t n, Buf *out, RqError *err)
{
    if (n < 12) return bad_binary(err, "insufficient data left in message");
    int32_t ndim = (int32_t)get_u32(d), flags = (int32_t)get_u32(d + 4);
    uint32_t elemtype = get_u32(d + 8);
    if (ndim < 0) {
        rq_error_set(err, "22P03", "invalid number of dimensions: %d", ndim);
        return -1;
    }
    if (ndim > MAXDIM) {
        rq_error_set(err, "54000", "number of array dimensions (%d) exceeds the maximum allowed (%d)", ndim, MAXDIM);
        return -1;
    }
    if (flags != 0 && flags != 1) return bad_binary(err, "invalid array flags");
    if (elemtype != ec->oid) {
        rq_error_set(err, "42804", "binary data has array element type %u (%s) instead of expected %u (%s)",
                     elemtype, type_display_name(elemtype), ec->oid, type_display_name(ec->oid));
        return -1;
    }
    if (ndim > 1) {
        rq_error_set(err, "0A000", "binary input of %s values with %d dimensions is not supported by riffq",
                     at->name, ndim);
        rq_error_hint(err, "Send this parameter in text format.");
        return -1;
    }
    size_t pos = 12, nitems = 0;
    int dim = 0, lb = 1;
    if (ndim == 1) {
        if (n < 20) return bad_binary(err, "insufficient data left in message");
        dim = (int32_t)get_u32(d + 12);
        lb = (int32_t)get_u32(d + 16);
        pos = 20;
        if (dim < 0 || dim > 134217727) {
            rq_error_set(err, "54000", "array size exceeds the maximum allowed (%d)", 134217727);
            return -1;
        }
        if ((int64_t)lb + dim - 1 > INT32_MAX) {
            rq_error_set(err, "54000", "array lower bound is too large: %d", lb);
            return -1;
        }
        nitems = (size_t)dim;
    }
    char **texts = xcalloc(nitems ? nitems : 1, sizeof *texts);
    int rc = 0;
    for (size_t i = 0; i < nitems && rc == 0; i++) {
        if (n - pos < 4) { rc = bad_binary(err, "insufficient data left in message"); break; }
        int32_t ilen = (int32_t)get_u32(d + pos);
        pos += 4;
        if (ilen == -1) continue;
        if (ilen < -1 || (size_t)ilen > n - pos) { rc = bad_binary(err, "insufficient data left in message"); break; }
        Val v;
        val_init(&v);
        rc = codec_recv(ec, d + pos, (size_t)ilen, &v, (int)i + 1, err);
        if (rc == 0) {
            Buf t;
            buf_init(&t);
            ec->out(ec, &v, &t);
            buf_append_byte(&t, 0);
            texts[i] = t.data;
        }
        val_free(&v);
        pos += (size_t)ilen;
    }
    if (rc == 0 && pos != n) {
        rq_error_set(err, "22P03", "incorrect binary data format: %zu bytes left over after the %s value",
                     n - pos, at->name);
        rc = -1;
    }
    if (rc == 0) {
        /* an array of no elements prints as {} whatever its declared bounds */
        int nd = nitems ? 1 : 0;
        arr_print(out, nd, &dim, &lb, texts);
    }
    free_texts(texts, nitems);
    return rc;
}

/* ------------------------------------------------------------------------
 * Public entry points
 * ------------------------------------------------------------------------ */

static const Codec *array_codec(uint32_t oid, const PgType **at)
{
    const PgType *et = array_elem_type(oid);
    if (!et) return NULL;
    *at = pgt_by_oid(oid);
    return codec_for(et->oid);
}

static void unsupported_binary(RqError *err, uint32_t oid, const char *dir, const char *hint)
{
    const PgType *t = pgt_by_oid(oid);
    if (t) rq_error_set(err, "0A000", "binary %s of type %s is not supported by riffq", dir, t->name);
    else rq_error_set(err, "0A000", "binary %s of type with OID %u is not supported by riffq", dir, oid);
    rq_error_hint(err, "%s", hint);
}

int pgt_text_normalize(uint32_t oid, const char *in, size_t len, Buf *out, RqError *err)
{
    size_t mark = out->len;
    const PgType *at;
    const Codec *c;
    int rc;
    if ((c = array_codec(oid, &at))) {
        rc = array_normalize(c, in, len, out, err);
    } else if ((c = codec_for(oid))) {
        Val v;
        val_init(&v);
        rc = codec_in(c, in, len, &v, err);
        if (rc == 0) c->out(c, &v, out);
        val_free(&v);
    } else {
        buf_append(out, in, len);   /* no input function here: leave it to whoever reads it */
        rc = 0;
    }
    if (rc < 0) out->len = mark;
    return rc;
}

int pgt_text_to_binary(uint32_t oid, const char *text, size_t len, Buf *out, RqError *err)
{
    size_t mark = out->len;
    const PgType *at;
    const Codec *c;
    int rc;
    if ((c = array_codec(oid, &at))) {
        rc = array_to_binary(c, at, text, len, out, err);
    } else if ((c = codec_for(oid))) {
        Val v;
        val_init(&v);
        rc = codec_in(c, text, len, &v, err);
        if (rc == 0) c->send(c, &v, out);
        val_free(&v);
    } else {
        unsupported_binary(err, oid, "output", "Request this column in text format.");
        rc = -1;
    }
    if (rc < 0) out->len = mark;
    return rc;
}

int pgt_binary_to_text(uint32_t oid, const uint8_t *data, size_t len, Buf *out, RqError *err)
{
    size_t mark = out->len;
    const PgType *at;
    const Codec *c;
    int rc;
    if ((c = array_codec(oid, &at))) {
        rc = array_from_binary(c, at, data, len, out, err);
    } else if ((c = codec_for(oid))) {
        Val v;
        val_init(&v);
        rc = codec_recv(c, data, len, &v, 0, err);
        if (rc == 0) c->out(c, &v, out);
        val_free(&v);
    } else {
        unsupported_binary(err, oid, "input", "Send this parameter in text format.");
        rc = -1;
    }
    if (rc < 0) out->len = mark;
    return rc;
}

int pgt_has_binary(uint32_t oid)
{
    const PgType *at;
    return codec_for(oid) != NULL || array_codec(oid, &at) != NULL;
}
