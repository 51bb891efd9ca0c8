/*
 * COPY ... TO STDOUT over plugins (src/session/copyout.c): the statement
 * text and options come from the client.  The input is a statement, then
 * after the first NUL the bytes handed to the DataRow-to-CopyData
 * conversion.  Whatever the input, the statement is refused with an error
 * or converted; nothing is read out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "riffq/route.h"
#include "session/session_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t sql_len = nul ? (size_t)(nul - data) : size;
    char *sql = malloc(sql_len + 1);
    memcpy(sql, data, sql_len);
    sql[sql_len] = '\0';
    RouteParse p;
    RqError err = {0};
    if (route_parse(sql, &p, &err) == 0) {
        for (size_t i = 0; i < p.n; i++) {
            if (p.stmts[i].kind != STMT_COPY) continue;
            char *inner = NULL;
            CopyOut *co = NULL;
            RqError e2 = {0};
            if (copyout_prepare(&p.stmts[i], &inner, &co, &e2) == 0) {
                RqResult cols;
                rq_result_init(&cols);
                cols.returns_rows = 1;
                rq_result_add_column(&cols, "a", 25);
                rq_result_add_column(&cols, "b", 23);
                Buf out;
                buf_init(&out);
                copyout_begin(co, &cols, &out);
                if (nul) copyout_rows(co, nul + 1, size - sql_len - 1, &out);
                copyout_end(co, &out);
                buf_free(&out);
                rq_result_free(&cols);
                copyout_free(co);
                free(inner);
            }
            rq_error_free(&e2);
        }
        route_parse_free(&p);
    }
    rq_error_free(&err);
    free(sql);
    return 0;
}
