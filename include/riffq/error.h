/*
 * RqError: how an error travels from whatever layer noticed it up to the
 * session, which is the only place that turns it into an ErrorResponse.
 * Every error carries a SQLSTATE because clients branch on it; message,
 * detail and hint are for people.  The struct owns its strings.
 */
#ifndef RIFFQ_ERROR_H
#define RIFFQ_ERROR_H

typedef struct RqError {
    char sqlstate[6];   /* five characters + NUL */
    char *severity;     /* NULL means "ERROR"; "FATAL" closes the connection */
    char *message;
    char *detail;       /* optional */
    char *hint;         /* optional */
    int position;       /* 1-based character position in the statement, 0 = none */
} RqError;

/* Fill err (which must be zeroed or freed) with a formatted message. */
void rq_error_set(RqError *err, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void rq_error_detail(RqError *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void rq_error_hint(RqError *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void rq_error_fatal(RqError *err);      /* mark severity FATAL */
int  rq_error_is_set(const RqError *err);
void rq_error_free(RqError *err);       /* frees strings, zeroes the struct */
void rq_error_move(RqError *dst, RqError *src); /* dst takes src's strings */

#endif
