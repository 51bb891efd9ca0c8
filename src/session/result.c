/* RqResult: see include/riffq/result.h. */
#include <stdlib.h>
#include <string.h>
#include "riffq/pgtypes.h"
#include "riffq/result.h"
#include "riffq/wire.h"

void rq_result_init(RqResult *r)
{
    memset(r, 0, sizeof *r);
}

void rq_result_free(RqResult *r)
{
    for (size_t i = 0; i < r->n_cols; i++) free(r->cols[i].name);
    free(r->cols);
    for (size_t i = 0; i < r->n_rows * r->n_cols; i++) free(r->vals[i]);
    free(r->vals);
    free(r->tag);
    memset(r, 0, sizeof *r);
}

void rq_result_add_column(RqResult *r, const char *name, uint32_t type_oid)
{
    const PgType *t = pgt_by_oid(type_oid);
    r->cols = xrealloc(r->cols, (r->n_cols + 1) * sizeof *r->cols);
    RqColumn *c = &r->cols[r->n_cols++];
    memset(c, 0, sizeof *c);
    c->name = xstrdup(name);
    c->type_oid = type_oid;
    c->type_len = t ? t->len : -1;
    c->type_mod = -1;
    r->returns_rows = 1;
}

void rq_result_add_row(RqResult *r, const char *const *vals)
{
    if (r->n_rows == r->cap_rows) {
        r->cap_rows = r->cap_rows ? r->cap_rows * 2 : 4;
        r->vals = xrealloc(r->vals, r->cap_rows * r->n_cols * sizeof *r->vals);
    }
    char **row = r->vals + r->n_rows * r->n_cols;
    for (size_t i = 0; i < r->n_cols; i++) row[i] = vals[i] ? xstrdup(vals[i]) : NULL;
    r->n_rows++;
}

void rq_result_set_tag(RqResult *r, const char *tag)
{
    free(r->tag);
    r->tag = tag ? xstrdup(tag) : NULL;
}

void rq_result_describe(const RqResult *r, const uint8_t *formats, uint16_t n_formats, Buf *out)
{
    WireField fs[r->n_cols ? r->n_cols : 1];
    for (size_t i = 0; i < r->n_cols; i++) {
        const RqColumn *c = &r->cols[i];
        fs[i] = (WireField){
            .name = c->name, .table_oid = c->table_oid, .column = c->column,
            .type_oid = c->type_oid, .type_len = c->type_len, .type_mod = c->type_mod,
            .format = formats ? wire_format_at(formats, n_formats, i) : 0,
        };
    }
    wire_row_description(out, fs, r->n_cols);
}

int rq_result_check_formats(const RqResult *r, const uint8_t *formats, uint16_t n_formats,
                            RqError *err)
{
    for (size_t i = 0; i < r->n_cols && formats; i++) {
        if (wire_format_at(formats, n_formats, i) == 1 && !pgt_has_binary(r->cols[i].type_oid)) {
            const PgType *t = pgt_by_oid(r->cols[i].type_oid);
            rq_error_set(err, "0A000", "binary output is not supported for type %s",
                         t ? t->name : "unknown");
            return -1;
        }
    }
    return 0;
}

int rq_result_rows(const RqResult *r, size_t from, size_t count,
                   const uint8_t *formats, uint16_t n_formats, Buf *out, RqError *err)
{
    Buf bin;
    buf_init(&bin);
    for (size_t row = from; row < from + count && row < r->n_rows; row++) {
        size_t m = wire_row_begin(out, (uint16_t)r->n_cols);
        char **vals = r->vals + row * r->n_cols;
        for (size_t i = 0; i < r->n_cols; i++) {
            if (!vals[i]) {
                wire_row_value(out, NULL, -1);
            } else if (formats && wire_format_at(formats, n_formats, i) == 1) {
                buf_reset(&bin);
                if (pgt_text_to_binary(r->cols[i].type_oid, vals[i], strlen(vals[i]), &bin, err) < 0) {
                    out->len = m - 1;   /* drop the half-built DataRow */
                    buf_free(&bin);
                    return -1;
                }
                wire_row_value(out, bin.data, (int32_t)bin.len);
            } else {
                wire_row_value(out, vals[i], (int32_t)strlen(vals[i]));
            }
        }
        wire_end(out, m);
    }
    buf_free(&bin);
    return 0;
}
