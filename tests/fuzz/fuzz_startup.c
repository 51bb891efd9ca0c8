/*
 * libFuzzer target: arbitrary bytes as the first thing a client sends.
 *
 * Follows the server's startup phase: frame a length-prefixed packet, decode
 * it, and after an SSLRequest or GSSENCRequest (answered 'N' when encryption
 * is not on offer) read the next packet from the same stream, as a client
 * that falls back to plaintext sends it.  A StartupMessage, CancelRequest,
 * unsupported version or any error ends the phase.
 *
 * As in fuzz_wire.c, bodies are decoded from exact-size copies so ASan sees
 * any read past the packet, an accepted packet must re-encode to the same
 * bytes, and every failure must carry a SQLSTATE.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/wire.h"

static void require(int ok)
{
    if (!ok) __builtin_trap();
}

/* Returns 1 when the server would read another startup packet. */
static int decode_packet(const uint8_t *body, size_t len)
{
    WireStartup s;
    RqError err = {0};
    int rc = wire_decode_startup(body, len, &s, &err);
    if (rc) {
        require(rc == -1 && rq_error_is_set(&err) && strlen(err.sqlstate) == 5);
        rq_error_free(&err);
        return 0;
    }
    require(!rq_error_is_set(&err));

    Buf re;
    buf_init(&re);
    buf_append_u32(&re, (uint32_t)s.code);
    int again = 0;
    if (s.code == WIRE_CANCEL_CODE) {
        buf_append_u32(&re, (uint32_t)s.cancel_pid);
        buf_append_u32(&re, (uint32_t)s.cancel_key);
    } else if (s.code == WIRE_SSL_CODE || s.code == WIRE_GSSENC_CODE) {
        again = 1;
    } else if ((s.code >> 16) == 3) {
        require(s.n_params <= sizeof s.keys / sizeof s.keys[0]);
        for (size_t i = 0; i < s.n_params; i++) {
            require(s.keys[i][0] != '\0');
            buf_append_cstr(&re, s.keys[i]);
            buf_append_cstr(&re, s.vals[i]);
        }
        buf_append_byte(&re, 0);
    } else {
        /* unsupported version: only the code was read, the caller reports it */
        require(s.n_params == 0);
        buf_free(&re);
        return 0;
    }
    require(re.len == len && memcmp(re.data, body, len) == 0);
    buf_free(&re);
    return again;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *body = NULL;
        size_t blen = 0, total = 0;
        RqError err = {0};
        int rc = wire_frame_startup(data + off, size - off, &body, &blen, &total, &err);
        if (rc == -1) {
            require(rq_error_is_set(&err) && strcmp(err.sqlstate, "08P01") == 0);
            rq_error_free(&err);
            return 0;
        }
        require(!rq_error_is_set(&err));
        if (rc == 0) return 0;
        require(total == blen + 4 && total >= 8 && total <= WIRE_MAX_STARTUP);
        require(total <= size - off && body == data + off + 4);

        uint8_t *copy = malloc(blen);
        memcpy(copy, body, blen);
        int again = decode_packet(copy, blen);
        free(copy);
        if (!again) return 0;
        off += total;
    }
}
