/*
 * Internals of src/auth/ that tests need but the rest of the gateway must
 * not use.  The server nonce is random in production, which makes a
 * published test vector (RFC 7677 section 3) impossible to replay; this hook
 * fixes the server's half of the nonce so the test can check the exact bytes
 * of server-first-message and server-final-message.  Nothing outside
 * tests/unit/ should include this file: a fixed nonce would let an attacker
 * replay a captured exchange.
 */
#ifndef RIFFQ_AUTH_INTERNAL_H
#define RIFFQ_AUTH_INTERNAL_H

#include "riffq/auth.h"

/* Like auth_scram_new, but the server nonce appended to the client's is
 * server_nonce (printable, copied) instead of 18 random bytes in base64. */
AuthScram *auth_scram_new_with_nonce(const AuthVerifier *v, const char *user,
                                     const uint8_t *cbind, size_t cbind_len,
                                     const char *server_nonce);

#endif
