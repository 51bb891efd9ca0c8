/*
 * SCRAM-SHA-256 exchanges driven by arbitrary client messages: the input is
 * split at the first 0xFF byte into a client-first and a client-final
 * message, and the mechanism is chosen by the first byte.  Both halves come
 * from the network before authentication, so nothing here may crash, leak
 * or read out of bounds, and every failure must carry a SQLSTATE.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/auth.h"

static AuthVerifier verifier;
static int ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        static const uint8_t salt[16] = "riffq-fuzz-salt!";
        auth_verifier_scram_from_plain("pencil", 4096, salt, sizeof salt, &verifier);
        ready = 1;
    }
    if (size == 0) return 0;
    static const uint8_t cbind[32] = { 1, 2, 3 };
    int plus = data[0] & 1, unknown_user = data[0] & 2;
    data++;
    size--;
    const uint8_t *sep = memchr(data, 0xFF, size);
    size_t first_len = sep ? (size_t)(sep - data) : size;
    AuthScram *s = auth_scram_new(unknown_user ? NULL : &verifier, "user",
                                  plus ? cbind : NULL, plus ? sizeof cbind : 0);
    Buf out;
    RqError err = {0};
    buf_init(&out);
    int rc = auth_scram_client_first(s, plus ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256",
                                     (const char *)data, first_len, &out, &err);
    if (rc < 0 && strlen(err.sqlstate) != 5) abort();
    if (rc == 0 && sep) {
        buf_reset(&out);
        rc = auth_scram_client_final(s, (const char *)sep + 1, size - first_len - 1, &out, &err);
        if (rc < 0 && strlen(err.sqlstate) != 5) abort();
    }
    rq_error_free(&err);
    buf_free(&out);
    auth_scram_free(s);
    return 0;
}
