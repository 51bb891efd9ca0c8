/*
 * The Postgres v3 protocol codec, server side.  No I/O and no policy: it turns
 * bytes into message structs and structs into bytes.  Everything from the
 * network passes through a WireReader, a bounds-checked cursor (in the spirit
 * of Postgres' pqformat.c): reading past the end sets r->err instead of
 * reading out of bounds, and wire_reader_end() fails if bytes are left over.
 *
 * Decoded messages point into the caller's buffer (no copies); they are valid
 * as long as that buffer is.
 */
#ifndef RIFFQ_WIRE_H
#define RIFFQ_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include "riffq/buf.h"
#include "riffq/error.h"

#define WIRE_PROTO_30         196608      /* 3 << 16 */
#define WIRE_CANCEL_CODE      80877102
#define WIRE_SSL_CODE         80877103
#define WIRE_GSSENC_CODE      80877104
#define WIRE_MAX_STARTUP      10000       /* same limit Postgres applies */
#define WIRE_MAX_PARAMS       65535

typedef struct WireReader {
    const uint8_t *p;
    size_t len;
    size_t pos;
    int err;            /* set once anything was read out of bounds or malformed */
} WireReader;

void wire_reader_init(WireReader *r, const void *data, size_t len);
uint8_t wire_get_u8(WireReader *r);
int16_t wire_get_i16(WireReader *r);
int32_t wire_get_i32(WireReader *r);
const char *wire_get_str(WireReader *r);                /* NUL-terminated in bounds */
const uint8_t *wire_get_bytes(WireReader *r, size_t n);
int wire_reader_end(const WireReader *r);               /* 0 = fully and cleanly consumed */

/* Framing.  Regular messages: type byte + int32 length (including itself).
 * Returns 1 with type, body, body_len and total set when a whole message is
 * in data, 0 when more bytes are needed, -1 (err: 08P01) when the header is
 * invalid or the length exceeds max. */
int wire_frame(const uint8_t *data, size_t len, size_t max,
               uint8_t *type, const uint8_t **body, size_t *body_len,
               size_t *total, RqError *err);
/* Startup-phase framing: int32 length then body (no type byte). */
int wire_frame_startup(const uint8_t *data, size_t len,
                       const uint8_t **body, size_t *body_len,
                       size_t *total, RqError *err);

typedef struct WireStartup {
    int32_t code;               /* protocol version or special request code */
    /* StartupMessage: */
    size_t n_params;
    const char *keys[64];
    const char *vals[64];
    /* CancelRequest: */
    int32_t cancel_pid;
    int32_t cancel_key;
} WireStartup;
int wire_decode_startup(const uint8_t *body, size_t len, WireStartup *out, RqError *err);

typedef struct WireParse {
    const char *name;
    const char *query;
    uint16_t n_types;
    const uint8_t *types;       /* n_types big-endian int32 OIDs; read with wire_oid_at */
} WireParse;
int wire_decode_parse(const uint8_t *body, size_t len, WireParse *out, RqError *err);
uint32_t wire_oid_at(const uint8_t *p, size_t i);

typedef struct WireBind {
    const char *portal;
    const char *stmt;
    uint16_t n_formats;
    const uint8_t *formats;     /* n_formats int16 */
    uint16_t n_params;
    const uint8_t *params;      /* start of the parameter values block */
    size_t params_len;          /* its length in bytes */
    uint16_t n_result_formats;
    const uint8_t *result_formats;
} WireBind;
int wire_decode_bind(const uint8_t *body, size_t len, WireBind *out, RqError *err);
/* Walk the parameter values of a decoded Bind in order: each call yields the
 * next value's pointer and length (-1 = NULL).  Values are length-prefixed
 * and contiguous, so there is no random access. */
typedef struct WireParamIter { WireReader r; } WireParamIter;
void wire_bind_params_begin(const WireBind *b, WireParamIter *it);
int wire_bind_param_next(WireParamIter *it, const uint8_t **v, int32_t *len);
int16_t wire_format_at(const uint8_t *formats, uint16_t n, size_t i);  /* applies the 0/1/n rule */

typedef struct WireDescribe { uint8_t kind; const char *name; } WireDescribe;   /* 'S' or 'P' */
int wire_decode_describe(const uint8_t *body, size_t len, WireDescribe *out, RqError *err);
typedef WireDescribe WireClose;
int wire_decode_close(const uint8_t *body, size_t len, WireClose *out, RqError *err);

typedef struct WireExecute { const char *portal; int32_t max_rows; } WireExecute;
int wire_decode_execute(const uint8_t *body, size_t len, WireExecute *out, RqError *err);

int wire_decode_query(const uint8_t *body, size_t len, const char **sql, RqError *err);

/* SASLInitialResponse: mechanism + int32 length + data (-1 = none). */
int wire_decode_sasl_initial(const uint8_t *body, size_t len, const char **mech,
                             const uint8_t **data, size_t *data_len, RqError *err);

/* ---- encoding (server -> client) ---- */

/* Start a message; returns the offset to hand to wire_end. */
size_t wire_begin(Buf *b, uint8_t type);
void wire_end(Buf *b, size_t off);

void wire_auth(Buf *b, uint32_t code, const void *extra, size_t extra_len);
void wire_parameter_status(Buf *b, const char *name, const char *value);
void wire_backend_key(Buf *b, int32_t pid, int32_t key);
void wire_ready(Buf *b, char status);
void wire_error(Buf *b, const RqError *e);              /* ErrorResponse */
void wire_notice(Buf *b, const RqError *e);             /* NoticeResponse, severity NOTICE/WARNING */
void wire_command_complete(Buf *b, const char *tag);
void wire_simple(Buf *b, uint8_t type);                 /* empty-bodied: '1' '2' '3' 'n' 's' 'I' */
void wire_parameter_description(Buf *b, const uint32_t *oids, size_t n);
/* newest: the newest protocol version (major << 16 | minor) the server speaks */
void wire_negotiate_protocol(Buf *b, int32_t newest, const char *const *opts, size_t n);

typedef struct WireField {
    const char *name;
    uint32_t table_oid;
    int16_t column;
    uint32_t type_oid;
    int16_t type_len;
    int32_t type_mod;
    int16_t format;
} WireField;
void wire_row_description(Buf *b, const WireField *f, size_t n);

/* DataRow: begin, then one wire_row_value per column, then wire_end. */
size_t wire_row_begin(Buf *b, uint16_t ncols);
void wire_row_value(Buf *b, const void *v, int32_t len);   /* len -1 = NULL */

#endif
