/*
 * Unit tests for src/auth/: verifiers, MD5, cleartext and the SCRAM-SHA-256
 * exchange.
 *
 * The expected values never come from the code under test: the RFC 7677
 * exchange is replayed byte for byte, verifiers come from libpq's own
 * PQencryptPasswordConn / PQencryptPassword or were computed with Python's
 * hashlib / md5sum (see the comments beside them), and the SCRAM client
 * below is written directly on OpenSSL, with OpenSSL's base64, so a mistake
 * shared by server and client code cannot cancel itself out.
 *
 * Every message handed to the server is copied into a heap block of exactly
 * its length with no terminating NUL, so an out-of-bounds read shows up under
 * valgrind (CK_FORK=no valgrind --leak-check=full build/tests/test_auth).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/x509.h>

#include "riffq/auth.h"
#include "auth/auth_internal.h"

/* python3: pbkdf2_hmac('sha256', b'secret', bytes(range(16)), 4096) ... */
#define SECRET_SCRAM \
    "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$" \
    "THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:" \
    "7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ="
/* printf 'secretalice' | md5sum */
#define SECRET_ALICE_MD5 "md54a0a68b43b6cd5cf266fa02f196e2371"
/* { printf 4a0a68b43b6cd5cf266fa02f196e2371; printf '\x01\x02\x03\x04'; } | md5sum */
#define SECRET_ALICE_MD5_SALTED "md598a0412b9c31436fc53776e863350083"

static const uint8_t md5_salt[4] = { 1, 2, 3, 4 };

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */

static char *ossl_b64(const uint8_t *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

static int ossl_unb64(const char *s, uint8_t *out)
{
    int len = (int)strlen(s);
    int n = EVP_DecodeBlock(out, (const unsigned char *)s, len);
    /* EVP_DecodeBlock counts padding as zero bytes */
    if (len >= 1 && s[len - 1] == '=') n--;
    if (len >= 2 && s[len - 2] == '=') n--;
    return n;
}

static int call_first(AuthScram *s, const char *mech, const char *msg, size_t len,
                      Buf *out, RqError *err)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, msg, len);
    int rc = auth_scram_client_first(s, mech, copy, len, out, err);
    free(copy);
    return rc;
}

static int call_final(AuthScram *s, const char *msg, size_t len, Buf *out, RqError *err)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, msg, len);
    int rc = auth_scram_client_final(s, copy, len, out, err);
    free(copy);
    return rc;
}

static AuthVerifier scram_verifier(const char *password)
{
    AuthVerifier v;
    ck_assert_int_eq(auth_verifier_scram_from_plain(password, 4096, NULL, 0, &v), 0);
    return v;
}

static AuthVerifier parse_ok(const char *secret)
{
    AuthVerifier v;
    char *msg = NULL;
    int rc = auth_verifier_parse(secret, &v, &msg);
    ck_assert_msg(rc == 0, "parse failed: %s", msg ? msg : "?");
    ck_assert_ptr_null(msg);
    return v;
}

/* A SCRAM client on raw OpenSSL, independent of src/auth. */
typedef struct {
    const char *password;
    const char *gs2;                /* gs2 header sent in client-first */
    const char *cbind_gs2;          /* gs2 header put in c=; NULL = gs2 */
    const uint8_t *cbind;           /* the client's idea of the binding data */
    size_t cbind_len;
    const char *nonce;
    int tamper_nonce;               /* alter the server's nonce, proof still consistent */
    char first[256];
    char server_sig_b64[64];
} Client;

static void client_init(Client *c, const char *password)
{
    memset(c, 0, sizeof *c);
    c->password = password;
    c->gs2 = "n,,";
    c->nonce = "fyko+d2lbbFgONRv9qkxdawL";
}

static void client_first_message(Client *c)
{
    snprintf(c->first, sizeof c->first, "%sn=,r=%s", c->gs2, c->nonce);
}

static char *client_final_message(Client *c, const char *server_first)
{
    const char *r = server_first + 2;
    const char *s_attr = strstr(server_first, ",s=");
    const char *i_attr = strstr(server_first, ",i=");
    uint8_t salt[128], salted[32], client_key[32], stored[32], sig[32], proof[32];
    uint8_t server_key[32], server_sig[32];
    unsigned int mdlen;

    ck_assert(strncmp(server_first, "r=", 2) == 0 && s_attr && i_attr);
    char *nonce = strndup(r, (size_t)(s_attr - r));
    ck_assert_msg(strncmp(nonce, c->nonce, strlen(c->nonce)) == 0,
                  "server nonce does not extend the client's");
    if (c->tamper_nonce)
        nonce[strlen(nonce) - 1] ^= 1;
    char *salt_b64 = strndup(s_attr + 3, (size_t)(i_attr - s_attr - 3));
    int salt_len = ossl_unb64(salt_b64, salt);
    int iterations = atoi(i_attr + 3);
    ck_assert_int_gt(salt_len, 0);
    ck_assert_int_gt(iterations, 0);

    ck_assert_int_eq(PKCS5_PBKDF2_HMAC(c->password, (int)strlen(c->password), salt,
                                       salt_len, iterations, EVP_sha256(), 32, salted), 1);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, client_key, &mdlen);
    EVP_Digest(client_key, 32, stored, &mdlen, EVP_sha256(), NULL);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Server Key", 10, server_key, &mdlen);

    const char *gs2 = c->cbind_gs2 ? c->cbind_gs2 : c->gs2;
    size_t cb_len = strlen(gs2) + c->cbind_len;
    uint8_t *cb = malloc(cb_len);
    memcpy(cb, gs2, strlen(gs2));
    if (c->cbind_len)
        memcpy(cb + strlen(gs2), c->cbind, c->cbind_len);
    char *cb_b64 = ossl_b64(cb, cb_len);

    size_t wlen = strlen(cb_b64) + strlen(nonce) + 8;
    char *without_proof = malloc(wlen);
    snprintf(without_proof, wlen, "c=%s,r=%s", cb_b64, nonce);
    const char *bare = c->first + strlen(c->gs2);
    size_t alen = strlen(bare) + strlen(server_first) + strlen(without_proof) + 3;
    char *auth_message = malloc(alen);
    snprintf(auth_message, alen, "%s,%s,%s", bare, server_first, without_proof);

    HMAC(EVP_sha256(), stored, 32, (uint8_t *)auth_message, strlen(auth_message), sig, &mdlen);
    for (int i = 0; i < 32; i++)
        proof[i] = client_key[i] ^ sig[i];
    HMAC(EVP_sha256(), server_key, 32, (uint8_t *)auth_message, strlen(auth_message),
         server_sig, &mdlen);
    char *sig_b64 = ossl_b64(server_sig, 32);
    snprintf(c->server_sig_b64, sizeof c->server_sig_b64, "%s", sig_b64);
    char *proof_b64 = ossl_b64(proof, 32);

    size_t flen = strlen(without_proof) + strlen(proof_b64) + 4;
    char *final = malloc(flen);
    snprintf(final, flen, "%s,p=%s", without_proof, proof_b64);

    free(nonce);
    free(salt_b64);
    free(cb);
    free(cb_b64);
    free(without_proof);
    free(auth_message);
    free(sig_b64);
    free(proof_b64);
    return final;
}

/* Runs a whole exchange; on success also checks the server's signature. */
static int run_exchange(const AuthVerifier *v, const char *user,
                        const uint8_t *server_cbind, size_t server_cbind_len,
                        const char *mech, Client *c, RqError *err)
{
    AuthScram *s = auth_scram_new(v, user, server_cbind, server_cbind_len);
    Buf out;
    int rc;

    buf_init(&out);
    client_first_message(c);
    rc = call_first(s, mech, c->first, strlen(c->first), &out, err);
    if (rc == 0) {
        char *server_first = strndup(out.data, out.len);
        char *final = client_final_message(c, server_first);
        buf_reset(&out);
        rc = call_final(s, final, strlen(final), &out, err);
        if (rc == 0) {
            ck_assert_uint_eq(out.len, 2 + strlen(c->server_sig_b64));
            ck_assert(memcmp(out.data, "v=", 2) == 0);
            ck_assert(memcmp(out.data + 2, c->server_sig_b64, out.len - 2) == 0);
        }
        free(server_first);
        free(final);
    }
    buf_free(&out);
    auth_scram_free(s);
    return rc;
}

/* The server-first-message of a fresh exchange, malloc'd. */
static char *server_first_for(const AuthVerifier *v, const char *user)
{
    AuthScram *s = auth_scram_new(v, user, NULL, 0);
    RqError err = {0};
    Buf out;
    static const char first[] = "n,,n=,r=abcdef";

    buf_init(&out);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", first, strlen(first), &out, &err), 0);
    char *r = strndup(out.data, out.len);
    buf_free(&out);
    auth_scram_free(s);
    return r;
}

/* Only the ",s=...,i=..." part: the nonce differs every time. */
static const char *salt_part(const char *server_first)
{
    return strstr(server_first, ",s=");
}

static void assert_error(const RqError *err, const char *sqlstate, const char *message)
{
    ck_assert_str_eq(err->sqlstate, sqlstate);
    ck_assert_ptr_nonnull(err->message);
    if (message)
        ck_assert_str_eq(err->message, message);
    ck_assert_ptr_nonnull(err->severity);
    ck_assert_str_eq(err->severity, "FATAL");
}

/* ------------------------------------------------------------------ */
/* base64                                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_b64_known_values)
{
    static const struct { const char *in, *out; } cases[] = {
        { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
        { "n,,", "biws" }, { "y,,", "eSws" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *enc = auth_b64_encode((const uint8_t *)cases[i].in, strlen(cases[i].in));
        ck_assert_str_eq(enc, cases[i].out);
        free(enc);
        uint8_t dec[16];
        int n = auth_b64_decode(cases[i].out, strlen(cases[i].out), dec, sizeof dec);
        ck_assert_int_eq(n, (int)strlen(cases[i].in));
        ck_assert(memcmp(dec, cases[i].in, (size_t)n) == 0);
    }
}
END_TEST

START_TEST(test_b64_rejects_malformed)
{
    static const char *bad[] = {
        "Zm9", "Zm9vY", "Zm=v", "Z===", "====", "Zg==Zg==", "Zm9v!A==", "Zm 9v", "Zm9v\n",
    };
    uint8_t dec[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(auth_b64_decode(bad[i], strlen(bad[i]), dec, sizeof dec) == -1,
                      "accepted %s", bad[i]);
    /* too small an output buffer is an error, not an overflow */
    ck_assert_int_eq(auth_b64_decode("Zm9vYmFy", 8, dec, 5), -1);
    ck_assert_int_eq(auth_b64_decode("Zm9vYmFy", 8, dec, 6), 6);
    /* length-delimited: only the first slen bytes count */
    ck_assert_int_eq(auth_b64_decode("Zm9vYmFy", 4, dec, sizeof dec), 3);
}
END_TEST

/* ------------------------------------------------------------------ */
/* verifiers                                                          */
/* ------------------------------------------------------------------ */

START_TEST(test_verifier_parse_plain)
{
    static const char *plain[] = {
        "hunter2", "", "md5", "md5abc", "md5 is not a hash", "SCRAM-SHA-256 without dollar",
        "md5notahexstring-but-long-enough",
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        AuthVerifier v = parse_ok(plain[i]);
        ck_assert_int_eq(v.kind, VERIFIER_PLAIN);
        ck_assert_str_eq(v.plain, plain[i]);
        auth_verifier_free(&v);
        ck_assert_ptr_null(v.plain);
    }
}
END_TEST

START_TEST(test_verifier_parse_md5)
{
    AuthVerifier v = parse_ok(SECRET_ALICE_MD5);
    ck_assert_int_eq(v.kind, VERIFIER_MD5);
    ck_assert_str_eq(v.md5, SECRET_ALICE_MD5);
    ck_assert_ptr_null(v.plain);
    auth_verifier_free(&v);
}
END_TEST

static void assert_parse_error(const char *secret, const char *fragment)
{
    AuthVerifier v;
    char *msg = NULL;
    ck_assert_msg(auth_verifier_parse(secret, &v, &msg) == -1, "accepted %s", secret);
    ck_assert_ptr_nonnull(msg);
    ck_assert_msg(strstr(msg, fragment) != NULL, "for %s: \"%s\" lacks \"%s\"",
                  secret, msg, fragment);
    /* a verifier is a secret: its key material never reaches the message */
    ck_assert_ptr_null(strstr(msg, "THoPho"));
    ck_assert_ptr_null(strstr(msg, "7YiHMM"));
    ck_assert_ptr_null(strstr(msg, "4a0a68b4"));
    ck_assert_int_eq(v.kind, VERIFIER_PLAIN);
    ck_assert_ptr_null(v.plain);
    free(msg);
}

START_TEST(test_verifier_parse_malformed)
{
    assert_parse_error("md54A0A68B43B6CD5CF266FA02F196E2371", "lowercase");
    assert_parse_error("md54a0a68b43b6cd5cf266fa02f196e237g", "character 35 is not a hex digit");
    assert_parse_error("md54a0a68b43b6cd5cf266fa02f196e237", "expected 32 hex digits");
    assert_parse_error("md54a0a68b43b6cd5cf266fa02f196e23714a0a", "found 36");
    assert_parse_error("SCRAM-SHA-256$", "iteration count");
    assert_parse_error("SCRAM-SHA-256$x:AAAA$a:b", "iteration count");
    assert_parse_error("SCRAM-SHA-256$0:AAECAwQFBgcICQoLDA0ODw==$"
                       "THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:"
                       "7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=", "must be positive");
    assert_parse_error("SCRAM-SHA-256$99999999999:AAAA$a:b", "too large");
    assert_parse_error("SCRAM-SHA-256$4096AAAA", "':' after the iteration count");
    assert_parse_error("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==", "'$' after the salt");
    assert_parse_error("SCRAM-SHA-256$4096:$THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:"
                       "7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=", "salt is empty");
    assert_parse_error("SCRAM-SHA-256$4096:AA!CAw==$x:y", "salt is not valid base64");
    assert_parse_error("SCRAM-SHA-256$4096:"
                       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                       "$x:y", "at most 64");
    assert_parse_error("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$"
                       "THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=", "between StoredKey and ServerKey");
    assert_parse_error("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$"
                       "THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U:"
                       "7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=", "StoredKey");
    assert_parse_error("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$"
                       "THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:"
                       "7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ", "ServerKey");
    assert_parse_error("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$"
                       "THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:"
                       "7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=$", "ServerKey");
    assert_parse_error("SCRAM-SHA-1$4096:AAAA$a:b", "only SCRAM-SHA-256");

    /* a NULL errmsg pointer is allowed */
    AuthVerifier v;
    ck_assert_int_eq(auth_verifier_parse("SCRAM-SHA-256$", &v, NULL), -1);
}
END_TEST

START_TEST(test_verifier_parse_scram)
{
    static const uint8_t salt[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    ck_assert_int_eq(v.kind, VERIFIER_SCRAM);
    ck_assert_int_eq(v.iterations, 4096);
    ck_assert_uint_eq(v.salt_len, 16);
    ck_assert(memcmp(v.salt, salt, 16) == 0);
    ck_assert_uint_eq(v.stored_key[0], 0x4c);       /* "THoP" -> 4c 7a 0f */
    ck_assert_uint_eq(v.stored_key[1], 0x7a);
    ck_assert_uint_eq(v.server_key[0], 0xed);       /* "7YiH" -> ed 88 87 */
    char *s = auth_verifier_scram_string(&v);
    ck_assert_str_eq(s, SECRET_SCRAM);
    free(s);
    ck_assert_int_eq(auth_password_check(&v, "alice", "secret"), 1);
    ck_assert_int_eq(auth_password_check(&v, "alice", "secret "), 0);
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_verifier_scram_from_plain)
{
    static const uint8_t salt[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
    AuthVerifier v, r1, r2;

    ck_assert_int_eq(auth_verifier_scram_from_plain("secret", 4096, salt, 16, &v), 0);
    char *s = auth_verifier_scram_string(&v);
    ck_assert_str_eq(s, SECRET_SCRAM);
    free(s);
    auth_verifier_free(&v);

    r1 = scram_verifier("secret");
    r2 = scram_verifier("secret");
    ck_assert_uint_eq(r1.salt_len, 16);
    ck_assert_int_eq(r1.iterations, 4096);
    ck_assert(memcmp(r1.salt, r2.salt, 16) != 0);       /* fresh random salt each time */
    ck_assert_int_eq(auth_password_check(&r1, "x", "secret"), 1);
    ck_assert_int_eq(auth_password_check(&r2, "x", "secret"), 1);
    ck_assert_int_eq(auth_password_check(&r1, "x", "Secret"), 0);
    auth_verifier_free(&r1);
    auth_verifier_free(&r2);

    ck_assert_int_eq(auth_verifier_scram_from_plain("secret", 0, NULL, 0, &v), -1);
    ck_assert_int_eq(auth_verifier_scram_from_plain(NULL, 4096, NULL, 0, &v), -1);
    uint8_t big[65] = {0};
    ck_assert_int_eq(auth_verifier_scram_from_plain("secret", 4096, big, 65, &v), -1);

    /* only SCRAM verifiers have a SCRAM string */
    AuthVerifier p = parse_ok("plain");
    ck_assert_ptr_null(auth_verifier_scram_string(&p));
    auth_verifier_free(&p);
}
END_TEST

/* libpq's own encoder: the verifiers Postgres stores must parse and verify */
START_TEST(test_libpq_scram_verifier)
{
    /* PQencryptPasswordConn needs a PGconn even for an explicit algorithm
     * (it returns NULL for conn == NULL); one that failed to parse its
     * conninfo is enough and never touches the network. */
    PGconn *conn = PQconnectStart("riffq_no_such_option=1");
    ck_assert_ptr_nonnull(conn);
    char *enc = PQencryptPasswordConn(conn, "secret", "alice", "scram-sha-256");
    ck_assert_msg(enc != NULL, "libpq: %s", PQerrorMessage(conn));
    ck_assert(strncmp(enc, "SCRAM-SHA-256$4096:", 19) == 0);

    AuthVerifier v = parse_ok(enc);
    ck_assert_int_eq(v.kind, VERIFIER_SCRAM);
    ck_assert_int_eq(v.iterations, 4096);
    ck_assert_uint_eq(v.salt_len, 16);
    char *again = auth_verifier_scram_string(&v);
    ck_assert_str_eq(again, enc);
    free(again);
    ck_assert_int_eq(auth_password_check(&v, "alice", "secret"), 1);
    ck_assert_int_eq(auth_password_check(&v, "alice", "secreT"), 0);
    ck_assert_int_eq(auth_password_check(&v, "alice", ""), 0);

    Client c;
    RqError err = {0};
    client_init(&c, "secret");
    ck_assert_int_eq(run_exchange(&v, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), 0);
    client_init(&c, "wrong");
    ck_assert_int_eq(run_exchange(&v, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "28P01", "password authentication failed for user \"alice\"");
    rq_error_free(&err);

    auth_verifier_free(&v);
    PQfreemem(enc);
    PQfinish(conn);
}
END_TEST

START_TEST(test_libpq_md5_verifier)
{
    char *enc = PQencryptPassword("secret", "alice");
    char mine[36];
    auth_md5_encrypt("secret", "alice", mine);
    ck_assert_str_eq(enc, SECRET_ALICE_MD5);
    ck_assert_str_eq(mine, enc);
    AuthVerifier v = parse_ok(enc);
    ck_assert_int_eq(v.kind, VERIFIER_MD5);
    ck_assert_int_eq(auth_password_check(&v, "alice", "secret"), 1);
    auth_verifier_free(&v);
    PQfreemem(enc);
}
END_TEST

/* ------------------------------------------------------------------ */
/* MD5 and cleartext                                                  */
/* ------------------------------------------------------------------ */

static void evp_md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
    uint8_t md[16];
    unsigned int len;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    EVP_DigestUpdate(ctx, a, alen);
    EVP_DigestUpdate(ctx, b, blen);
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

START_TEST(test_md5_known_value)
{
    char inner[33], outer[33], response[36];

    /* computed here with EVP, independently of src/auth */
    evp_md5_hex("secret", 6, "alice", 5, inner);
    evp_md5_hex(inner, 32, md5_salt, 4, outer);
    snprintf(response, sizeof response, "md5%s", outer);
    ck_assert_str_eq(response, SECRET_ALICE_MD5_SALTED);

    AuthVerifier md5 = parse_ok(SECRET_ALICE_MD5);
    AuthVerifier plain = parse_ok("secret");
    AuthVerifier scram = parse_ok(SECRET_SCRAM);

    ck_assert_int_eq(auth_md5_check(&md5, "alice", md5_salt, SECRET_ALICE_MD5_SALTED), 1);
    ck_assert_int_eq(auth_md5_check(&plain, "alice", md5_salt, SECRET_ALICE_MD5_SALTED), 1);
    /* SCRAM verifiers cannot answer MD5, even with the right password */
    ck_assert_int_eq(auth_md5_check(&scram, "alice", md5_salt, SECRET_ALICE_MD5_SALTED), 0);
    ck_assert_int_eq(auth_md5_check(NULL, "alice", md5_salt, SECRET_ALICE_MD5_SALTED), 0);

    static const uint8_t other_salt[4] = { 1, 2, 3, 5 };
    static const char *wrong[] = {
        "md598A0412B9C31436FC53776E863350083",      /* case matters */
        "md598a0412b9c31436fc53776e86335008",       /* truncated */
        "md598a0412b9c31436fc53776e8633500830",     /* one too many */
        "98a0412b9c31436fc53776e863350083",         /* no prefix */
        "",
        SECRET_ALICE_MD5,                           /* the verifier itself is no response */
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        ck_assert_msg(auth_md5_check(&md5, "alice", md5_salt, wrong[i]) == 0, "%s", wrong[i]);
        ck_assert_msg(auth_md5_check(&plain, "alice", md5_salt, wrong[i]) == 0, "%s", wrong[i]);
    }
    ck_assert_int_eq(auth_md5_check(&md5, "alice", other_salt, SECRET_ALICE_MD5_SALTED), 0);
    ck_assert_int_eq(auth_md5_check(&plain, "bob", md5_salt, SECRET_ALICE_MD5_SALTED), 0);

    auth_verifier_free(&md5);
    auth_verifier_free(&plain);
    auth_verifier_free(&scram);
}
END_TEST

START_TEST(test_password_check_all_kinds)
{
    AuthVerifier plain = parse_ok("secret");
    AuthVerifier md5 = parse_ok(SECRET_ALICE_MD5);
    AuthVerifier scram = parse_ok(SECRET_SCRAM);
    const AuthVerifier *all[] = { &plain, &md5, &scram };

    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(auth_password_check(all[i], "alice", "secret"), 1);
        ck_assert_int_eq(auth_password_check(all[i], "alice", "secre"), 0);
        ck_assert_int_eq(auth_password_check(all[i], "alice", "secrett"), 0);
        ck_assert_int_eq(auth_password_check(all[i], "alice", ""), 0);
        ck_assert_int_eq(auth_password_check(all[i], "alice", NULL), 0);
    }
    /* the MD5 verifier is salted with the user name */
    ck_assert_int_eq(auth_password_check(&md5, "bob", "secret"), 0);
    ck_assert_int_eq(auth_password_check(NULL, "alice", "secret"), 0);

    /* a freed verifier accepts nothing */
    auth_verifier_free(&plain);
    ck_assert_int_eq(auth_password_check(&plain, "alice", "secret"), 0);
    ck_assert_int_eq(auth_password_check(&plain, "alice", ""), 0);
    auth_verifier_free(&plain);     /* freeing twice is harmless */
    auth_verifier_free(&md5);
    auth_verifier_free(&scram);
}
END_TEST

/* ------------------------------------------------------------------ */
/* SCRAM exchange                                                     */
/* ------------------------------------------------------------------ */

/* RFC 7677 section 3, byte for byte */
START_TEST(test_scram_rfc7677_vector)
{
    static const char rfc_salt[] = "W22ZaJ0SNY7soEsUEjb6gQ==";
    static const char client_first[] = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    static const char server_first[] =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    static const char client_final[] =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    static const char server_final[] = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    uint8_t salt[16];
    AuthVerifier v;
    RqError err = {0};
    Buf out;

    ck_assert_int_eq(auth_b64_decode(rfc_salt, strlen(rfc_salt), salt, sizeof salt), 16);
    ck_assert_int_eq(auth_verifier_scram_from_plain("pencil", 4096, salt, 16, &v), 0);
    buf_init(&out);

    AuthScram *s = auth_scram_new_with_nonce(&v, "user", NULL, 0,
                                             "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", client_first, strlen(client_first),
                                &out, &err), 0);
    ck_assert_uint_eq(out.len, strlen(server_first));
    ck_assert(memcmp(out.data, server_first, out.len) == 0);
    buf_reset(&out);
    ck_assert_int_eq(call_final(s, client_final, strlen(client_final), &out, &err), 0);
    ck_assert_uint_eq(out.len, strlen(server_final));
    ck_assert(memcmp(out.data, server_final, out.len) == 0);
    ck_assert(!rq_error_is_set(&err));
    auth_scram_free(s);

    /* the same exchange with one proof bit flipped is a wrong password */
    char *bad = strdup(client_final);
    bad[strlen(bad) - 2] = 'U';                     /* 'Q' -> 'U' changes the last byte */
    s = auth_scram_new_with_nonce(&v, "user", NULL, 0, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    buf_reset(&out);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", client_first, strlen(client_first),
                                &out, &err), 0);
    buf_reset(&out);
    ck_assert_int_eq(call_final(s, bad, strlen(bad), &out, &err), -1);
    assert_error(&err, "28P01", "password authentication failed for user \"user\"");
    ck_assert_uint_eq(out.len, 0);
    rq_error_free(&err);
    auth_scram_free(s);
    free(bad);

    buf_free(&out);
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_scram_mechanisms)
{
    static const uint8_t cb[32] = { 1 };
    AuthScram *s = auth_scram_new(NULL, "alice", NULL, 0);
    Buf out;
    buf_init(&out);
    auth_scram_mechanisms(s, &out);
    ck_assert_uint_eq(out.len, sizeof "SCRAM-SHA-256" + 1);
    ck_assert(memcmp(out.data, "SCRAM-SHA-256\0\0", out.len) == 0);
    auth_scram_free(s);

    buf_reset(&out);
    s = auth_scram_new(NULL, "alice", cb, sizeof cb);
    auth_scram_mechanisms(s, &out);
    static const char both[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";   /* + implicit NUL */
    ck_assert_uint_eq(out.len, sizeof both);
    ck_assert(memcmp(out.data, both, sizeof both) == 0);
    auth_scram_free(s);
    buf_free(&out);
}
END_TEST

START_TEST(test_scram_success)
{
    AuthVerifier scram = parse_ok(SECRET_SCRAM);
    AuthVerifier plain = parse_ok("secret");
    Client c;
    RqError err = {0};

    client_init(&c, "secret");
    ck_assert_int_eq(run_exchange(&scram, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), 0);
    ck_assert(!rq_error_is_set(&err));
    /* a plain password in the route file works through SCRAM too */
    client_init(&c, "secret");
    ck_assert_int_eq(run_exchange(&plain, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), 0);
    ck_assert(!rq_error_is_set(&err));
    /* the verifier is copied: the caller may free its own during the exchange */
    AuthVerifier tmp = parse_ok(SECRET_SCRAM);
    AuthScram *s = auth_scram_new(&tmp, "alice", NULL, 0);
    auth_verifier_free(&tmp);
    Buf out;
    buf_init(&out);
    client_init(&c, "secret");
    client_first_message(&c);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c.first, strlen(c.first), &out, &err), 0);
    char *sf = strndup(out.data, out.len);
    char *final = client_final_message(&c, sf);
    buf_reset(&out);
    ck_assert_int_eq(call_final(s, final, strlen(final), &out, &err), 0);
    free(sf);
    free(final);
    buf_free(&out);
    auth_scram_free(s);

    auth_verifier_free(&scram);
    auth_verifier_free(&plain);
}
END_TEST

START_TEST(test_scram_server_first_shape)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    char *a = server_first_for(&v, "alice");
    char *b = server_first_for(&v, "alice");
    /* r=<client nonce><24 base64 chars of 18 random bytes>,s=<salt>,i=<iter> */
    ck_assert(strncmp(a, "r=abcdef", 8) == 0);
    ck_assert_uint_eq((size_t)(salt_part(a) - a), 8 + 24);
    ck_assert_str_eq(salt_part(a), ",s=AAECAwQFBgcICQoLDA0ODw==,i=4096");
    ck_assert(strncmp(a, b, 8 + 24) != 0);          /* fresh server nonce */
    free(a);
    free(b);
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_scram_wrong_password)
{
    AuthVerifier scram = parse_ok(SECRET_SCRAM);
    AuthVerifier plain = parse_ok("secret");
    Client c;
    RqError err = {0};

    client_init(&c, "Secret");
    ck_assert_int_eq(run_exchange(&scram, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "28P01", "password authentication failed for user \"alice\"");
    ck_assert_ptr_null(err.detail);
    rq_error_free(&err);

    client_init(&c, "");
    ck_assert_int_eq(run_exchange(&plain, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "28P01", "password authentication failed for user \"alice\"");
    rq_error_free(&err);
    auth_verifier_free(&scram);
    auth_verifier_free(&plain);
}
END_TEST

START_TEST(test_scram_unknown_user)
{
    Client c;
    RqError err = {0};

    client_init(&c, "secret");
    ck_assert_int_eq(run_exchange(NULL, "mallory", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "28P01", "password authentication failed for user \"mallory\"");
    ck_assert_ptr_null(err.detail);
    rq_error_free(&err);

    /* the made-up salt is stable per name, differs between names, and is
     * what a plain-password user of the same name gets, so probing the
     * server-first-message does not reveal who exists */
    AuthVerifier plain = parse_ok("secret");
    char *m1 = server_first_for(NULL, "mallory");
    char *m2 = server_first_for(NULL, "mallory");
    char *o = server_first_for(NULL, "oscar");
    char *p = server_first_for(&plain, "mallory");
    ck_assert_str_eq(salt_part(m1), salt_part(m2));
    ck_assert_str_ne(salt_part(m1), salt_part(o));
    ck_assert_str_eq(salt_part(m1), salt_part(p));
    ck_assert(strstr(m1, ",i=4096") != NULL);
    ck_assert_uint_eq(strlen(strstr(m1, ",s=") + 3) - strlen(",i=4096"), 24);  /* 16 bytes */
    free(m1);
    free(m2);
    free(o);
    free(p);
    auth_verifier_free(&plain);
}
END_TEST

START_TEST(test_scram_md5_verifier_is_doomed)
{
    /* Postgres cannot do SCRAM for a user with an MD5 verifier either: the
     * right password still fails, indistinguishably from a wrong one. */
    AuthVerifier md5 = parse_ok(SECRET_ALICE_MD5);
    Client c;
    RqError err = {0};
    client_init(&c, "secret");
    ck_assert_int_eq(run_exchange(&md5, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "28P01", "password authentication failed for user \"alice\"");
    rq_error_free(&err);
    auth_verifier_free(&md5);
}
END_TEST

START_TEST(test_scram_tampered_nonce)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    Client c;
    RqError err = {0};
    client_init(&c, "secret");
    c.tamper_nonce = 1;
    ck_assert_int_eq(run_exchange(&v, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "08P01", "invalid SCRAM response");
    ck_assert_str_eq(err.detail, "Nonce does not match.");
    rq_error_free(&err);
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_scram_plus)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    uint8_t cb[32], other[32];
    Client c;
    RqError err = {0};
    for (int i = 0; i < 32; i++) {
        cb[i] = (uint8_t)(i * 7 + 1);
        other[i] = cb[i];
    }
    other[31] ^= 0x80;

    client_init(&c, "secret");
    c.gs2 = "p=tls-server-end-point,,";
    c.cbind = cb;
    c.cbind_len = sizeof cb;
    ck_assert_int_eq(run_exchange(&v, "alice", cb, sizeof cb, "SCRAM-SHA-256-PLUS", &c, &err), 0);

    /* the client saw a different certificate: a man in the middle */
    c.cbind = other;
    ck_assert_int_eq(run_exchange(&v, "alice", cb, sizeof cb, "SCRAM-SHA-256-PLUS", &c, &err), -1);
    assert_error(&err, "28000", "SCRAM channel binding check failed");
    rq_error_free(&err);

    /* -PLUS chosen but the binding data left out of c= */
    c.cbind = NULL;
    c.cbind_len = 0;
    ck_assert_int_eq(run_exchange(&v, "alice", cb, sizeof cb, "SCRAM-SHA-256-PLUS", &c, &err), -1);
    assert_error(&err, "28000", "SCRAM channel binding check failed");
    rq_error_free(&err);

    /* with TLS, a client that does not bind at all ("n") may still log in */
    client_init(&c, "secret");
    ck_assert_int_eq(run_exchange(&v, "alice", cb, sizeof cb, "SCRAM-SHA-256", &c, &err), 0);
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_scram_y_flag)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    static const uint8_t cb[32] = { 9, 9, 9 };
    Client c;
    RqError err = {0};

    /* without TLS "y" is honest and fine; c= then carries "y,," */
    client_init(&c, "secret");
    c.gs2 = "y,,";
    ck_assert_int_eq(run_exchange(&v, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), 0);

    /* we offered -PLUS, so "y" means someone stripped it: downgrade */
    ck_assert_int_eq(run_exchange(&v, "alice", cb, sizeof cb, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "28000", "SCRAM channel binding negotiation error");
    ck_assert_ptr_nonnull(err.detail);
    rq_error_free(&err);

    /* c= must repeat the flag of the first message */
    client_init(&c, "secret");
    c.cbind_gs2 = "y,,";
    ck_assert_int_eq(run_exchange(&v, "alice", NULL, 0, "SCRAM-SHA-256", &c, &err), -1);
    assert_error(&err, "08P01",
                 "unexpected SCRAM channel-binding attribute in client-final-message");
    rq_error_free(&err);
    auth_verifier_free(&v);
}
END_TEST

static void expect_first_error(const AuthVerifier *v, const uint8_t *cb, size_t cb_len,
                               const char *mech, const char *msg, size_t len,
                               const char *sqlstate, const char *message)
{
    AuthScram *s = auth_scram_new(v, "alice", cb, cb_len);
    RqError err = {0};
    Buf out;
    buf_init(&out);
    int rc = call_first(s, mech, msg, len, &out, &err);
    ck_assert_msg(rc == -1, "accepted client-first %.*s", (int)len, msg);
    ck_assert_msg(strcmp(err.sqlstate, sqlstate) == 0, "%.*s: got %s (%s: %s), want %s",
                  (int)len, msg, err.sqlstate, err.message,
                  err.detail ? err.detail : "", sqlstate);
    if (message)
        ck_assert_str_eq(err.message, message);
    ck_assert_str_eq(err.severity, "FATAL");
    ck_assert_uint_eq(out.len, 0);
    /* a failed exchange accepts nothing more */
    rq_error_free(&err);
    ck_assert_int_eq(call_final(s, "c=biws,r=x,p=x", 14, &out, &err), -1);
    ck_assert_str_eq(err.sqlstate, "08P01");
    rq_error_free(&err);
    buf_free(&out);
    auth_scram_free(s);
}

#define FIRST_ERR(mech, lit, state, message) \
    expect_first_error(&v, NULL, 0, (mech), (lit), sizeof(lit) - 1, (state), (message))

START_TEST(test_scram_mechanism_and_flag_mismatch)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    static const uint8_t cb[32] = { 5 };
    static const char plus_first[] = "p=tls-server-end-point,,n=,r=abc";

    /* -PLUS without TLS, unknown mechanisms */
    FIRST_ERR("SCRAM-SHA-256-PLUS", plus_first, "08P01",
              "client selected an invalid SASL authentication mechanism");
    FIRST_ERR("SCRAM-SHA-1", "n,,n=,r=abc", "08P01",
              "client selected an invalid SASL authentication mechanism");
    FIRST_ERR(NULL, "n,,n=,r=abc", "08P01",
              "client selected an invalid SASL authentication mechanism");
    /* "p" under plain SCRAM-SHA-256 */
    expect_first_error(&v, cb, sizeof cb, "SCRAM-SHA-256", plus_first, strlen(plus_first),
                       "08P01", "malformed SCRAM message");
    expect_first_error(&v, NULL, 0, "SCRAM-SHA-256", plus_first, strlen(plus_first),
                       "08P01", "malformed SCRAM message");
    /* -PLUS chosen, then "n" or "y" */
    expect_first_error(&v, cb, sizeof cb, "SCRAM-SHA-256-PLUS", "n,,n=,r=abc", 11,
                       "08P01", "malformed SCRAM message");
    expect_first_error(&v, cb, sizeof cb, "SCRAM-SHA-256-PLUS", "y,,n=,r=abc", 11,
                       "08P01", "malformed SCRAM message");
    /* a binding type we do not do */
    expect_first_error(&v, cb, sizeof cb, "SCRAM-SHA-256-PLUS", "p=tls-unique,,n=,r=abc", 22,
                       "08P01", "unsupported SCRAM channel-binding type");
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_scram_malformed_first)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    const char *M = "malformed SCRAM message";

    FIRST_ERR("SCRAM-SHA-256", "", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "x,,n=,r=abc", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n;,n=,r=abc", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,,", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,,n", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,,n=", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r", "08P01", M);
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r=", "08P01", M);           /* empty nonce */
    FIRST_ERR("SCRAM-SHA-256", "n,,r=abc", "08P01", M);           /* n= missing */
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,x=abc", "08P01", M);        /* r= missing */
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r=abc,1=2", "08P01", M);    /* extension name */
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r=abc,e", "08P01", M);      /* extension without = */
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r=ab\x01" "c", "08P01",
              "non-printable characters in SCRAM nonce");
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r=ab\x80" "c", "08P01",
              "non-printable characters in SCRAM nonce");
    FIRST_ERR("SCRAM-SHA-256", "n,,n=,r=ab\0c", "08P01", M);     /* embedded NUL */
    /* longer than Postgres' PG_MAX_AUTH_TOKEN_LENGTH */
    size_t huge_len = 65536;
    char *huge = malloc(huge_len);
    memcpy(huge, "n,,n=,r=", 8);
    memset(huge + 8, 'a', huge_len - 8);
    expect_first_error(&v, NULL, 0, "SCRAM-SHA-256", huge, huge_len, "08P01", M);
    {
        AuthScram *s = auth_scram_new(&v, "alice", NULL, 0);
        RqError err = {0};
        Buf out;
        buf_init(&out);
        ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", huge, huge_len - 1, &out, &err), 0);
        ck_assert_uint_eq(out.len, 2 + (huge_len - 1 - 8) + 24 + strlen(",s=AAECAwQFBgcICQoLDA0ODw==,i=4096"));
        buf_free(&out);
        auth_scram_free(s);
    }
    free(huge);
    FIRST_ERR("SCRAM-SHA-256", "n,a=bob,n=,r=abc", "0A000",
              "client uses authorization identity, but it is not supported");
    FIRST_ERR("SCRAM-SHA-256", "n,,m=x,n=,r=abc", "0A000",
              "client requires an unsupported SCRAM extension");
    auth_verifier_free(&v);
}
END_TEST

/* Every prefix of a valid client-first: either a (shorter-nonce) success
 * or a clean 08P01, never a read past the given length. */
START_TEST(test_scram_truncated_first)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    static const char full[] = "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL,x=ext";
    const size_t min_ok = strlen("n,,n=,r=f");

    for (size_t len = 0; len <= strlen(full); len++) {
        AuthScram *s = auth_scram_new(&v, "alice", NULL, 0);
        RqError err = {0};
        Buf out;
        buf_init(&out);
        int rc = call_first(s, "SCRAM-SHA-256", full, len, &out, &err);
        int should_pass = len >= min_ok &&
                          (len <= strlen("n,,n=,r=fyko+d2lbbFgONRv9qkxdawL,") ||
                           len == strlen(full) || len >= strlen(full) - 3);
        if (rc == 0) {
            ck_assert_msg(should_pass, "accepted prefix of %zu bytes", len);
            ck_assert(memcmp(out.data, "r=", 2) == 0);
        } else {
            ck_assert_msg(!should_pass, "rejected prefix of %zu bytes: %s", len, err.message);
            ck_assert_str_eq(err.sqlstate, "08P01");
        }
        rq_error_free(&err);
        buf_free(&out);
        auth_scram_free(s);
    }
    auth_verifier_free(&v);
}
END_TEST

/* Drives a valid client-first, then hands the server a final message. */
static int final_after_valid_first(const AuthVerifier *v, Client *c, const char *msg,
                                   size_t len, char **server_first, RqError *err)
{
    AuthScram *s = auth_scram_new(v, "alice", NULL, 0);
    Buf out;
    buf_init(&out);
    client_first_message(c);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c->first, strlen(c->first), &out, err), 0);
    if (server_first)
        *server_first = strndup(out.data, out.len);
    buf_reset(&out);
    int rc = msg ? call_final(s, msg, len, &out, err) : 0;
    buf_free(&out);
    auth_scram_free(s);
    return rc;
}

/* The server nonce is random, so build the valid final for one exchange and
 * then replay its prefixes and variants within that same exchange state. */
START_TEST(test_scram_truncated_and_malformed_final)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    Client c;
    RqError err = {0};
    Buf out;
    char *sf;
    AuthScram *s;

    buf_init(&out);
    client_init(&c, "secret");

    /* one exchange per attempt, with a fixed server nonce so the final
     * message computed once stays valid for every attempt */
    s = auth_scram_new_with_nonce(&v, "alice", NULL, 0, "SERVERNONCE");
    client_first_message(&c);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c.first, strlen(c.first), &out, &err), 0);
    sf = strndup(out.data, out.len);
    auth_scram_free(s);
    char *final = client_final_message(&c, sf);
    size_t flen = strlen(final);

    for (size_t len = 0; len <= flen; len++) {
        s = auth_scram_new_with_nonce(&v, "alice", NULL, 0, "SERVERNONCE");
        buf_reset(&out);
        ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c.first, strlen(c.first), &out, &err), 0);
        buf_reset(&out);
        int rc = call_final(s, final, len, &out, &err);
        if (len == flen) {
            ck_assert_int_eq(rc, 0);
        } else {
            ck_assert_msg(rc == -1, "accepted final prefix of %zu bytes", len);
            ck_assert_str_eq(err.sqlstate, "08P01");
            ck_assert_uint_eq(out.len, 0);
            rq_error_free(&err);
        }
        auth_scram_free(s);
    }

    /* variants of the valid final message */
    const char *proof = strstr(final, ",p=") + 3;
    char *nonce = strndup(final + 9, (size_t)(proof - 3 - (final + 9)));  /* after "c=biws,r=" */
    struct { char *msg; const char *detail; } bad[8];
    int n = 0;
    bad[n].msg = xasprintf("c=biws,r=%s,p=%.40s!!!!", nonce, proof);
    bad[n++].detail = "Malformed proof in client-final-message.";
    bad[n].msg = xasprintf("c=biws,r=%s,p=AAAA", nonce);
    bad[n++].detail = "Malformed proof in client-final-message.";
    bad[n].msg = xasprintf("c=biws,r=%s,p=%s,x=1", nonce, proof);
    bad[n++].detail = "Garbage found at the end of client-final-message.";
    bad[n].msg = xasprintf("c=biws,r=%s,p=%s,", nonce, proof);
    bad[n++].detail = "Garbage found at the end of client-final-message.";
    bad[n].msg = xasprintf("c=biws,p=%s", proof);
    bad[n++].detail = "Expected attribute \"r\" but found \"p\".";
    bad[n].msg = xasprintf("r=%s,p=%s", nonce, proof);
    bad[n++].detail = "Expected attribute \"c\" but found \"r\".";
    bad[n].msg = xasprintf("c=biws,r=%s,x=1", nonce);
    bad[n++].detail = "The client-final-message has no proof (\"p=\").";
    bad[n].msg = xasprintf("c=biws,r=%s,=1,p=%s", nonce, proof);
    bad[n++].detail = "Attribute expected, but found invalid character \"=\".";
    for (int i = 0; i < n; i++) {
        s = auth_scram_new_with_nonce(&v, "alice", NULL, 0, "SERVERNONCE");
        buf_reset(&out);
        ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c.first, strlen(c.first), &out, &err), 0);
        buf_reset(&out);
        ck_assert_msg(call_final(s, bad[i].msg, strlen(bad[i].msg), &out, &err) == -1,
                      "accepted %s", bad[i].msg);
        assert_error(&err, "08P01", "malformed SCRAM message");
        ck_assert_str_eq(err.detail, bad[i].detail);
        rq_error_free(&err);
        auth_scram_free(s);
        free(bad[i].msg);
    }

    /* extensions before the proof are allowed and covered by the proof */
    s = auth_scram_new_with_nonce(&v, "alice", NULL, 0, "SERVERNONCE");
    buf_reset(&out);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c.first, strlen(c.first), &out, &err), 0);
    char *ext = xasprintf("c=biws,r=%s,x=1,p=%s", nonce, proof);
    buf_reset(&out);
    ck_assert_int_eq(call_final(s, ext, strlen(ext), &out, &err), -1);
    assert_error(&err, "28P01", NULL);             /* the proof no longer matches */
    rq_error_free(&err);
    free(ext);
    auth_scram_free(s);

    free(nonce);
    free(final);
    free(sf);
    buf_free(&out);
    auth_verifier_free(&v);
}
END_TEST

START_TEST(test_scram_out_of_order)
{
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    RqError err = {0};
    Buf out;
    Client c;
    buf_init(&out);

    /* final before first */
    AuthScram *s = auth_scram_new(&v, "alice", NULL, 0);
    ck_assert_int_eq(call_final(s, "c=biws,r=abc,p=AAAA", 19, &out, &err), -1);
    assert_error(&err, "08P01", "unexpected SCRAM message");
    rq_error_free(&err);
    auth_scram_free(s);

    /* first twice */
    s = auth_scram_new(&v, "alice", NULL, 0);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", "n,,n=,r=abc", 11, &out, &err), 0);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", "n,,n=,r=abc", 11, &out, &err), -1);
    assert_error(&err, "08P01", "unexpected SCRAM message");
    rq_error_free(&err);
    auth_scram_free(s);

    /* anything after a successful end */
    client_init(&c, "secret");
    s = auth_scram_new(&v, "alice", NULL, 0);
    buf_reset(&out);
    client_first_message(&c);
    ck_assert_int_eq(call_first(s, "SCRAM-SHA-256", c.first, strlen(c.first), &out, &err), 0);
    char *sf = strndup(out.data, out.len);
    char *final = client_final_message(&c, sf);
    buf_reset(&out);
    ck_assert_int_eq(call_final(s, final, strlen(final), &out, &err), 0);
    ck_assert_int_eq(call_final(s, final, strlen(final), &out, &err), -1);
    assert_error(&err, "08P01", "unexpected SCRAM message");
    rq_error_free(&err);
    free(sf);
    free(final);
    auth_scram_free(s);

    /* freeing mid-exchange and freeing NULL are fine */
    char *unused = NULL;
    ck_assert_int_eq(final_after_valid_first(&v, &c, NULL, 0, &unused, &err), 0);
    free(unused);
    auth_scram_free(NULL);

    buf_free(&out);
    auth_verifier_free(&v);
}
END_TEST

/* ------------------------------------------------------------------ */
/* tls-server-end-point                                               */
/* ------------------------------------------------------------------ */

static X509 *make_cert(EVP_PKEY *key, const EVP_MD *md)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"riffq-test",
                               -1, -1, 0);
    X509_set_issuer_name(x, name);
    ck_assert_int_gt(X509_sign(x, key, md), 0);
    return x;
}

static void assert_end_point(X509 *cert, const EVP_MD *expect_md)
{
    uint8_t got[64], want[EVP_MAX_MD_SIZE];
    unsigned int want_len;
    ck_assert_int_eq(X509_digest(cert, expect_md, want, &want_len), 1);
    int n = auth_tls_server_end_point(cert, got);
    ck_assert_int_eq(n, (int)want_len);
    ck_assert(memcmp(got, want, want_len) == 0);
}

START_TEST(test_tls_server_end_point)
{
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    EVP_PKEY *rsa = EVP_RSA_gen(1024);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    ck_assert_ptr_nonnull(ec);
    ck_assert_ptr_nonnull(rsa);
    ck_assert_ptr_nonnull(ed);
    uint8_t out[64];

    X509 *c256 = make_cert(ec, EVP_sha256());
    X509 *c384 = make_cert(ec, EVP_sha384());
    X509 *c512 = make_cert(rsa, EVP_sha512());
    X509 *c1 = make_cert(rsa, EVP_sha1());
    X509 *cmd5 = make_cert(rsa, EVP_md5());
    X509 *ced = make_cert(ed, NULL);

    assert_end_point(c256, EVP_sha256());
    assert_end_point(c384, EVP_sha384());
    assert_end_point(c512, EVP_sha512());
    assert_end_point(c1, EVP_sha256());             /* RFC 5929: SHA-1 -> SHA-256 */
    assert_end_point(cmd5, EVP_sha256());           /* and MD5 -> SHA-256 */
    ck_assert_int_eq(auth_tls_server_end_point(ced, out), -1);  /* no digest: undefined */
    ck_assert_int_eq(auth_tls_server_end_point(NULL, out), -1);

    /* end to end: the binding of a real certificate through -PLUS */
    AuthVerifier v = parse_ok(SECRET_SCRAM);
    int n = auth_tls_server_end_point(c256, out);
    Client c;
    RqError err = {0};
    client_init(&c, "secret");
    c.gs2 = "p=tls-server-end-point,,";
    c.cbind = out;
    c.cbind_len = (size_t)n;
    ck_assert_int_eq(run_exchange(&v, "alice", out, (size_t)n, "SCRAM-SHA-256-PLUS", &c, &err), 0);
    /* a client that saw the SHA-384 certificate instead */
    uint8_t other[64];
    int m = auth_tls_server_end_point(c384, other);
    c.cbind = other;
    c.cbind_len = (size_t)m;
    ck_assert_int_eq(run_exchange(&v, "alice", out, (size_t)n, "SCRAM-SHA-256-PLUS", &c, &err), -1);
    assert_error(&err, "28000", "SCRAM channel binding check failed");
    rq_error_free(&err);
    auth_verifier_free(&v);

    X509_free(c256);
    X509_free(c384);
    X509_free(c512);
    X509_free(c1);
    X509_free(cmd5);
    X509_free(ced);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc;

    tc = tcase_create("base64");
    tcase_add_test(tc, test_b64_known_values);
    tcase_add_test(tc, test_b64_rejects_malformed);
    suite_add_tcase(s, tc);

    tc = tcase_create("verifier");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_verifier_parse_plain);
    tcase_add_test(tc, test_verifier_parse_md5);
    tcase_add_test(tc, test_verifier_parse_malformed);
    tcase_add_test(tc, test_verifier_parse_scram);
    tcase_add_test(tc, test_verifier_scram_from_plain);
    tcase_add_test(tc, test_libpq_scram_verifier);
    tcase_add_test(tc, test_libpq_md5_verifier);
    suite_add_tcase(s, tc);

    tc = tcase_create("password");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_md5_known_value);
    tcase_add_test(tc, test_password_check_all_kinds);
    suite_add_tcase(s, tc);

    tc = tcase_create("scram");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_scram_rfc7677_vector);
    tcase_add_test(tc, test_scram_mechanisms);
    tcase_add_test(tc, test_scram_success);
    tcase_add_test(tc, test_scram_server_first_shape);
    tcase_add_test(tc, test_scram_wrong_password);
    tcase_add_test(tc, test_scram_unknown_user);
    tcase_add_test(tc, test_scram_md5_verifier_is_doomed);
    tcase_add_test(tc, test_scram_tampered_nonce);
    tcase_add_test(tc, test_scram_plus);
    tcase_add_test(tc, test_scram_y_flag);
    tcase_add_test(tc, test_scram_mechanism_and_flag_mismatch);
    tcase_add_test(tc, test_scram_malformed_first);
    tcase_add_test(tc, test_scram_truncated_first);
    tcase_add_test(tc, test_scram_truncated_and_malformed_final);
    tcase_add_test(tc, test_scram_out_of_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("channel_binding");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_tls_server_end_point);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(auth_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
