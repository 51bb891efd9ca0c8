/*
 * Password authentication, server side: verifiers (plain, MD5, SCRAM-SHA-256
 * as Postgres stores them in pg_authid), the MD5 and cleartext checks, and the
 * SCRAM-SHA-256 / SCRAM-SHA-256-PLUS exchange (RFC 5802, RFC 7677, channel
 * binding type tls-server-end-point, RFC 5929).
 *
 * Pure code: no sockets, no event loop.  The server layer feeds it the
 * client's SASLInitialResponse / SASLResponse payloads and sends back what it
 * produces.  Failures carry SQLSTATE 28P01 (wrong password) or 08P01 (a
 * malformed exchange) in an RqError.
 */
#ifndef RIFFQ_AUTH_H
#define RIFFQ_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include "riffq/buf.h"
#include "riffq/error.h"

#define AUTH_SCRAM_KEY_LEN 32
#define AUTH_SCRAM_DEFAULT_ITERATIONS 4096

typedef enum { VERIFIER_PLAIN = 0, VERIFIER_MD5, VERIFIER_SCRAM } AuthVerifierKind;

typedef struct AuthVerifier {
    AuthVerifierKind kind;
    char *plain;                    /* VERIFIER_PLAIN: the password (owned) */
    char md5[36];                   /* VERIFIER_MD5: "md5" + 32 hex + NUL */
    int iterations;                 /* VERIFIER_SCRAM */
    uint8_t salt[64];
    size_t salt_len;
    uint8_t stored_key[AUTH_SCRAM_KEY_LEN];
    uint8_t server_key[AUTH_SCRAM_KEY_LEN];
} AuthVerifier;

/* Parse a secret as written in a route file: "md5" + 32 hex digits,
 * "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>", or else a
 * plain password.  Returns 0, or -1 with *errmsg (malloc'd) for a secret that
 * looks like a verifier but is malformed. */
int auth_verifier_parse(const char *secret, AuthVerifier *out, char **errmsg);
/* Derive a SCRAM verifier from a plain password (salt from the CSPRNG when
 * salt is NULL). */
int auth_verifier_scram_from_plain(const char *password, int iterations,
                                   const uint8_t *salt, size_t salt_len,
                                   AuthVerifier *out);
/* Format as Postgres does: "SCRAM-SHA-256$4096:salt$StoredKey:ServerKey" (malloc'd). */
char *auth_verifier_scram_string(const AuthVerifier *v);
void auth_verifier_free(AuthVerifier *v);

/* "md5" + md5hex(password || user), as Postgres stores it.  out: 36 bytes. */
void auth_md5_encrypt(const char *password, const char *user, char out[36]);
/* Check an MD5 PasswordMessage ("md5" + md5hex(md5hex(password||user) || salt)).
 * Works for plain and MD5 verifiers; SCRAM verifiers cannot answer MD5. */
int auth_md5_check(const AuthVerifier *v, const char *user,
                   const uint8_t salt[4], const char *response);
/* Check a cleartext password against any verifier kind. 1 = ok, 0 = wrong. */
int auth_password_check(const AuthVerifier *v, const char *user, const char *password);

/* One SCRAM exchange.  v may be NULL for an unknown user: the exchange then
 * runs against a made-up verifier and fails at the end exactly like a wrong
 * password, so a client cannot probe which users exist. */
typedef struct AuthScram AuthScram;

/* cbind: the tls-server-end-point hash of the server certificate when the
 * connection uses TLS (enables SCRAM-SHA-256-PLUS), else NULL. */
AuthScram *auth_scram_new(const AuthVerifier *v, const char *user,
                          const uint8_t *cbind, size_t cbind_len);
void auth_scram_free(AuthScram *s);
/* Mechanism names for AuthenticationSASL, each NUL-terminated, then a final
 * NUL; includes -PLUS only when channel binding data was given. */
void auth_scram_mechanisms(const AuthScram *s, Buf *out);
/* SASLInitialResponse: mechanism name + client-first-message.  On success
 * appends server-first-message to out and returns 0. */
int auth_scram_client_first(AuthScram *s, const char *mechanism,
                            const char *msg, size_t len, Buf *out, RqError *err);
/* SASLResponse: client-final-message.  On success appends
 * server-final-message ("v=...") to out and returns 0; a wrong password
 * returns -1 with 28P01. */
int auth_scram_client_final(AuthScram *s, const char *msg, size_t len,
                            Buf *out, RqError *err);

/* tls-server-end-point channel binding data for a PEM/DER certificate
 * (X509 *): the certificate hashed with its signature digest, SHA-256 when
 * that is MD5 or SHA-1.  Returns length written to out (<= 64) or -1. */
int auth_tls_server_end_point(void *x509_cert, uint8_t out[64]);

/* base64 helpers shared by SCRAM and tests */
char *auth_b64_encode(const uint8_t *data, size_t len);           /* malloc'd */
int auth_b64_decode(const char *s, size_t slen, uint8_t *out, size_t outcap); /* -1 bad */

#endif
