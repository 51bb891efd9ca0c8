/*
 * Type conversions on client data: binary Bind parameters and text values
 * of any type.  The first two bytes pick a type OID from the table of types
 * with converters; the rest is the value.  A value that is accepted must
 * round-trip: text -> binary -> text gives the normalized text again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/pgtypes.h"

static const uint32_t oids[] = {
    PGT_BOOL, PGT_BYTEA, PGT_CHAR, PGT_NAME, PGT_INT8, PGT_INT2, PGT_INT4, PGT_TEXT, PGT_OID,
    PGT_JSON, PGT_FLOAT4, PGT_FLOAT8, PGT_BPCHAR, PGT_VARCHAR, PGT_DATE, PGT_TIME,
    PGT_TIMESTAMP, PGT_TIMESTAMPTZ, PGT_INTERVAL, PGT_TIMETZ, PGT_NUMERIC, PGT_UUID, PGT_JSONB,
    PGT_INT4_ARRAY, PGT_TEXT_ARRAY, PGT_INT8_ARRAY, PGT_FLOAT8_ARRAY, PGT_BOOL_ARRAY,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint32_t oid = oids[data[0] % (sizeof oids / sizeof oids[0])];
    int binary = data[1] & 1;
    data += 2;
    size -= 2;
    Buf a, b, c;
    RqError err = {0};
    buf_init(&a);
    buf_init(&b);
    buf_init(&c);
    int rc = binary ? pgt_binary_to_text(oid, data, size, &a, &err)
                    : pgt_text_normalize(oid, (const char *)data, size, &a, &err);
    if (rc < 0 && strlen(err.sqlstate) != 5) abort();
    if (rc == 0 && pgt_has_binary(oid) && memchr(a.data ? a.data : "", 0, a.len) == NULL) {
        if (pgt_text_to_binary(oid, a.data ? a.data : "", a.len, &b, &err) == 0 &&
            pgt_binary_to_text(oid, (const uint8_t *)(b.data ? b.data : ""), b.len, &c, &err) == 0) {
            /* the normalized text survives the trip through the send form */
            if (oid != PGT_FLOAT4 && oid != PGT_FLOAT8 && oid != PGT_JSONB &&
                oid != PGT_FLOAT8_ARRAY &&
                (c.len != a.len || (a.len && memcmp(a.data, c.data, a.len) != 0)))
                abort();
        }
    }
    rq_error_free(&err);
    buf_free(&a);
    buf_free(&b);
    buf_free(&c);
    return 0;
}
