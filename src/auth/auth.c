/*
 * Password authentication, server side (contract: include/riffq/auth.h).
 *
 * Design:
 *
 * - A verifier is what a route file stores for a user, in the same three
 *   spellings pg_authid uses (plain, "md5..." and "SCRAM-SHA-256$..."), so an
 *   operator can copy rolpassword from a real server.  A secret that starts
 *   like a verifier but does not parse is an error rather than a plain
 *   password: silently treating a mistyped hash as the password itself would
 *   lock everyone out with no hint why.
 *
 * - The SCRAM exchange follows PostgreSQL's auth-scram.c message by message,
 *   including its SQLSTATEs and wording, because clients (libpq, JDBC,
 *   asyncpg...) and the people reading their errors expect exactly that.
 *   Every message from the client is parsed as a length-delimited byte range
 *   with a cursor that never moves past its end; nothing relies on a NUL.
 *   Any error ends the exchange (stage SCRAM_FINISHED), as it ends the
 *   connection in Postgres, and is marked FATAL for the same reason.
 *
 * - Users that do not exist, and users whose verifier cannot do SCRAM (MD5),
 *   get a "doomed" exchange: a salt derived from the user name with a
 *   per-process secret and the default iteration count, so the
 *   server-first-message looks the same from one attempt to the next, and a
 *   failure at the final step with the very same 28P01 error a wrong password
 *   gets.  Plain-password users get their salt from the same derivation, so
 *   the salt does not tell a probing client which kind of user it hit.
 *
 * - Secrets (passwords, SaltedPassword, ClientKey) are wiped with
 *   OPENSSL_cleanse once used, and compared with CRYPTO_memcmp, so neither a
 *   core dump nor response timing gives them away.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "riffq/auth.h"
#include "auth/auth_internal.h"

#define SCRAM_MECH          "SCRAM-SHA-256"
#define SCRAM_MECH_PLUS     "SCRAM-SHA-256-PLUS"
#define SCRAM_VERIFIER_TAG  "SCRAM-SHA-256$"
#define SCRAM_CBIND_TYPE    "tls-server-end-point"
#define SCRAM_SALT_LEN      16      /* Postgres' SCRAM_DEFAULT_SALT_LEN */
#define SCRAM_RAW_NONCE_LEN 18      /* Postgres' SCRAM_RAW_NONCE_LEN */
#define MD5_HEX_LEN         32
#define MD5_VERIFIER_LEN    35      /* "md5" + 32 hex digits */

/* ------------------------------------------------------------------ */
/* base64 (RFC 4648, standard alphabet, padded)                       */
/* ------------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *auth_b64_encode(const uint8_t *data, size_t len)
{
    char *out = xmalloc(4 * ((len + 2) / 3) + 1);
    char *o = out;
    size_t i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t w = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = b64_alphabet[w >> 18 & 63];
        *o++ = b64_alphabet[w >> 12 & 63];
        *o++ = b64_alphabet[w >> 6 & 63];
        *o++ = b64_alphabet[w & 63];
    }
    if (len - i == 1) {
        uint32_t w = (uint32_t)data[i] << 16;
        *o++ = b64_alphabet[w >> 18 & 63];
        *o++ = b64_alphabet[w >> 12 & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t w = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        *o++ = b64_alphabet[w >> 18 & 63];
        *o++ = b64_alphabet[w >> 12 & 63];
        *o++ = b64_alphabet[w >> 6 & 63];
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/*
 * Strict on purpose: whole quanta only, padding only at the very end, no
 * whitespace.  The input is attacker-supplied (SCRAM proofs), and every
 * legitimate producer (libpq, JDBC, pg_authid) emits exactly this form.
 */
int auth_b64_decode(const char *s, size_t slen, uint8_t *out, size_t outcap)
{
    size_t n = 0;

    if (s == NULL || slen % 4 != 0)
        return -1;
    for (size_t i = 0; i < slen; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)s[i + j];
            if (c == '=') {
                if (i + 4 != slen || j < 2)
                    return -1;
                pad++;
                v[j] = 0;
            } else {
                if (pad)
                    return -1;          /* data after padding */
                v[j] = b64_value(c);
                if (v[j] < 0)
                    return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t take = 3 - (size_t)pad;
        if (take > outcap - n)
            return -1;
        out[n++] = (uint8_t)(w >> 16);
        if (take > 1) out[n++] = (uint8_t)(w >> 8);
        if (take > 2) out[n++] = (uint8_t)w;
    }
    return n > INT_MAX ? -1 : (int)n;
}

/* ------------------------------------------------------------------ */
/* hashing                                                            */
/* ------------------------------------------------------------------ */

static int sha256(const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    return EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -1;
}

static int hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t n,
                       uint8_t out[32])
{
    unsigned int len = 0;
    if (keylen > INT_MAX)
        return -1;
    return HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len) != NULL && len == 32
           ? 0 : -1;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* md5hex(a || b) into out (33 bytes).  Through EVP because the low-level
 * MD5() is deprecated in OpenSSL 3 and absent under a FIPS provider, where
 * this then fails cleanly instead of not linking. */
static int md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL &&
             EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, a, alen) == 1 &&
             EVP_DigestUpdate(ctx, b, blen) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    hex_encode(md, 16, out);
    return 0;
}

/* ------------------------------------------------------------------ */
/* SCRAM key derivation                                               */
/* ------------------------------------------------------------------ */

/*
 * SASLprep (RFC 4013) of the password.  Postgres runs the password through
 * SASLprep and, when that fails (invalid UTF-8, prohibited characters), uses
 * the raw bytes.  Pure ASCII passes through SASLprep unchanged, so for ASCII
 * passwords this is exact.  Full SASLprep (NFKC plus the mapping and
 * prohibition tables) is not implemented: a non-ASCII password is used as
 * its raw bytes, which still agrees with Postgres whenever the password is
 * already in normal form and has no mapped characters (e.g. U+00A0, soft
 * hyphen).  A password that does not will fail to match a verifier made by
 * Postgres; storing such users' verifiers made by riffq itself avoids that.
 * Kept as one function so a full implementation drops in here.
 */
static const char *scram_prepare_password(const char *password)
{
    return password;
}

static int scram_keys_from_password(const char *password, const uint8_t *salt,
                                    size_t salt_len, int iterations,
                                    uint8_t stored_key[AUTH_SCRAM_KEY_LEN],
                                    uint8_t server_key[AUTH_SCRAM_KEY_LEN])
{
    uint8_t salted[AUTH_SCRAM_KEY_LEN], client_key[AUTH_SCRAM_KEY_LEN];
    const char *pw = scram_prepare_password(password);
    size_t pwlen = strlen(pw);
    int rc = -1;

    if (pwlen > INT_MAX || salt_len > INT_MAX || iterations < 1)
        return -1;
    if (PKCS5_PBKDF2_HMAC(pw, (int)pwlen, salt, (int)salt_len, iterations,
                          EVP_sha256(), AUTH_SCRAM_KEY_LEN, salted) == 1 &&
        hmac_sha256(salted, sizeof salted, "Client Key", 10, client_key) == 0 &&
        sha256(client_key, sizeof client_key, stored_key) == 0 &&
        hmac_sha256(salted, sizeof salted, "Server Key", 10, server_key) == 0)
        rc = 0;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

/*
 * The per-process secret behind salts we make up.  It is the one piece of
 * global state here: it must be the same for every exchange of this process
 * (so a probing client sees a stable salt per user name), must be unknown to
 * clients (so they cannot tell a made-up salt from a real one), and is written
 * exactly once under pthread_once, so threads may share it without locking.
 */
static pthread_once_t derived_salt_once = PTHREAD_ONCE_INIT;
static uint8_t derived_salt_secret[32];
static int derived_salt_ready;

static void derived_salt_init(void)
{
    derived_salt_ready = RAND_bytes(derived_salt_secret, sizeof derived_salt_secret) == 1;
}

static int scram_derived_salt(const char *user, uint8_t salt[SCRAM_SALT_LEN])
{
    static const char domain[] = "riffq scram salt";
    uint8_t mac[32];
    Buf input;
    int rc;

    pthread_once(&derived_salt_once, derived_salt_init);
    if (!derived_salt_ready)
        return -1;
    /* The domain string (NUL included) keeps this HMAC distinct from any
     * other use the secret might get later. */
    buf_init(&input);
    buf_append(&input, domain, sizeof domain);
    buf_append_str(&input, user);
    rc = hmac_sha256(derived_salt_secret, sizeof derived_salt_secret,
                     input.data, input.len, mac);
    buf_free(&input);
    if (rc == 0)
        memcpy(salt, mac, SCRAM_SALT_LEN);
    return rc;
}

/* ------------------------------------------------------------------ */
/* verifiers                                                          */
/* ------------------------------------------------------------------ */

static int verifier_error(AuthVerifier *out, char **errmsg, char *msg)
{
    auth_verifier_free(out);
    if (errmsg)
        *errmsg = msg;
    else
        free(msg);
    return -1;
}

/* Decodes exactly want bytes of base64, the only length a SCRAM key has. */
static int b64_decode_exact(const char *s, size_t slen, uint8_t *out, size_t want)
{
    int n = auth_b64_decode(s, slen, out, want);
    return n >= 0 && (size_t)n == want ? 0 : -1;
}

static int parse_scram_verifier(const char *secret, AuthVerifier *out, char **errmsg)
{
    const char *p = secret + strlen(SCRAM_VERIFIER_TAG);
    const char *salt, *salt_end, *stored, *colon;
    long iterations = 0;

    /* Messages name the part that is wrong but never echo it: a verifier is
     * a secret too, and these messages end up in logs. */
    if (*p < '0' || *p > '9')
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: expected an iteration count after \"SCRAM-SHA-256$\""));
    while (*p >= '0' && *p <= '9') {
        iterations = iterations * 10 + (*p - '0');
        if (iterations > INT_MAX)
            return verifier_error(out, errmsg, xstrdup(
                "invalid SCRAM-SHA-256 verifier: iteration count is too large"));
        p++;
    }
    if (iterations < 1)
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: iteration count must be positive"));
    if (*p != ':')
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: expected ':' after the iteration count"));

    salt = p + 1;
    salt_end = strchr(salt, '$');
    if (salt_end == NULL)
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: expected '$' after the salt"));
    if (salt_end == salt)
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: the salt is empty"));
    {
        size_t slen = (size_t)(salt_end - salt);
        uint8_t *tmp = xmalloc(slen);       /* base64 never decodes longer */
        int n = auth_b64_decode(salt, slen, tmp, slen);
        if (n < 0) {
            free(tmp);
            return verifier_error(out, errmsg, xstrdup(
                "invalid SCRAM-SHA-256 verifier: the salt is not valid base64"));
        }
        if ((size_t)n > sizeof out->salt) {
            free(tmp);
            return verifier_error(out, errmsg, xasprintf(
                "invalid SCRAM-SHA-256 verifier: the salt is %d bytes, at most %zu are supported",
                n, sizeof out->salt));
        }
        memcpy(out->salt, tmp, (size_t)n);
        out->salt_len = (size_t)n;
        free(tmp);
    }

    stored = salt_end + 1;
    colon = strchr(stored, ':');
    if (colon == NULL)
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: expected ':' between StoredKey and ServerKey"));
    if (b64_decode_exact(stored, (size_t)(colon - stored), out->stored_key, AUTH_SCRAM_KEY_LEN) < 0)
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: StoredKey is not the base64 of 32 bytes"));
    if (b64_decode_exact(colon + 1, strlen(colon + 1), out->server_key, AUTH_SCRAM_KEY_LEN) < 0)
        return verifier_error(out, errmsg, xstrdup(
            "invalid SCRAM-SHA-256 verifier: ServerKey is not the base64 of 32 bytes"));

    out->kind = VERIFIER_SCRAM;
    out->iterations = (int)iterations;
    return 0;
}

/*
 * "md5" followed by 32 characters is taken for an MD5 verifier (that is the
 * whole shape of one), and so is "md5" followed by a long run of hex digits
 * of the wrong length (a verifier truncated or pasted twice).  Anything else
 * starting with "md5" is an ordinary password.
 */
static int parse_md5_like(const char *secret, AuthVerifier *out, char **errmsg, int *matched)
{
    static const char lower_hex[] = "0123456789abcdef";
    static const char any_hex[] = "0123456789abcdefABCDEF";
    const char *rest = secret + 3;
    size_t n = strlen(rest);

    *matched = 0;
    if (n == MD5_HEX_LEN) {
        size_t good = strspn(rest, lower_hex);
        *matched = 1;
        if (good == MD5_HEX_LEN) {
            out->kind = VERIFIER_MD5;
            memcpy(out->md5, secret, MD5_VERIFIER_LEN + 1);
            return 0;
        }
        if (strspn(rest, any_hex) == MD5_HEX_LEN)
            return verifier_error(out, errmsg, xstrdup(
                "invalid MD5 verifier: hex digits must be lowercase, as Postgres writes them"));
        return verifier_error(out, errmsg, xasprintf(
            "invalid MD5 verifier: character %zu is not a hex digit "
            "(\"md5\" followed by 32 characters is read as an MD5 verifier)",
            good + 4));
    }
    if (n >= 16 && strspn(rest, any_hex) == n) {
        *matched = 1;
        return verifier_error(out, errmsg, xasprintf(
            "invalid MD5 verifier: expected 32 hex digits after \"md5\", found %zu", n));
    }
    return 0;
}

int auth_verifier_parse(const char *secret, AuthVerifier *out, char **errmsg)
{
    memset(out, 0, sizeof *out);
    if (errmsg)
        *errmsg = NULL;
    if (secret == NULL)
        return verifier_error(out, errmsg, xstrdup("missing password"));

    if (strncmp(secret, SCRAM_VERIFIER_TAG, strlen(SCRAM_VERIFIER_TAG)) == 0)
        return parse_scram_verifier(secret, out, errmsg);
    if (strncmp(secret, "SCRAM-", 6) == 0 && strchr(secret, '$') != NULL) {
        int mech_len = (int)(strchr(secret, '$') - secret);
        if (mech_len > 40)
            mech_len = 40;
        return verifier_error(out, errmsg, xasprintf(
            "unsupported SCRAM verifier \"%.*s\": only SCRAM-SHA-256 is supported",
            mech_len, secret));
    }
    if (strncmp(secret, "md5", 3) == 0) {
        int matched;
        int rc = parse_md5_like(secret, out, errmsg, &matched);
        if (matched || rc < 0)
            return rc;
    }
    out->kind = VERIFIER_PLAIN;
    out->plain = xstrdup(secret);
    return 0;
}

int auth_verifier_scram_from_plain(const char *password, int iterations,
                                   const uint8_t *salt, size_t salt_len,
                                   AuthVerifier *out)
{
    memset(out, 0, sizeof *out);
    if (password == NULL || iterations < 1)
        return -1;
    if (salt == NULL) {
        if (RAND_bytes(out->salt, SCRAM_SALT_LEN) != 1)
            return -1;
        out->salt_len = SCRAM_SALT_LEN;
    } else {
        if (salt_len == 0 || salt_len > sizeof out->salt)
            return -1;
        memcpy(out->salt, salt, salt_len);
        out->salt_len = salt_len;
    }
    if (scram_keys_from_password(password, out->salt, out->salt_len, iterations,
                                 out->stored_key, out->server_key) < 0) {
        OPENSSL_cleanse(out, sizeof *out);
        return -1;
    }
    out->kind = VERIFIER_SCRAM;
    out->iterations = iterations;
    return 0;
}

char *auth_verifier_scram_string(const AuthVerifier *v)
{
    char *salt, *stored, *server, *s;

    if (v == NULL || v->kind != VERIFIER_SCRAM)
        return NULL;
    salt = auth_b64_encode(v->salt, v->salt_len);
    stored = auth_b64_encode(v->stored_key, AUTH_SCRAM_KEY_LEN);
    server = auth_b64_encode(v->server_key, AUTH_SCRAM_KEY_LEN);
    s = xasprintf("SCRAM-SHA-256$%d:%s$%s:%s", v->iterations, salt, stored, server);
    free(salt);
    free(stored);
    free(server);
    return s;
}

void auth_verifier_free(AuthVerifier *v)
{
    if (v == NULL)
        return;
    if (v->plain) {
        OPENSSL_cleanse(v->plain, strlen(v->plain));
        free(v->plain);
    }
    /* Zeroing leaves kind == VERIFIER_PLAIN with plain == NULL: a freed
     * verifier accepts no password. */
    OPENSSL_cleanse(v, sizeof *v);
}

/* ------------------------------------------------------------------ */
/* MD5 and cleartext                                                  */
/* ------------------------------------------------------------------ */

void auth_md5_encrypt(const char *password, const char *user, char out[36])
{
    memcpy(out, "md5", 3);
    /* On failure (MD5 disabled by a FIPS provider) the result is the empty
     * string, which no response or stored verifier can ever equal. */
    if (md5_hex2(password, strlen(password), user, strlen(user), out + 3) < 0)
        out[0] = '\0';
}

int auth_md5_check(const AuthVerifier *v, const char *user,
                   const uint8_t salt[4], const char *response)
{
    char verifier[36], expected[36];
    const char *hex;
    int ok;

    if (v == NULL || user == NULL || response == NULL)
        return 0;
    switch (v->kind) {
    case VERIFIER_PLAIN:
        if (v->plain == NULL)
            return 0;
        auth_md5_encrypt(v->plain, user, verifier);
        if (verifier[0] == '\0')
            return 0;
        hex = verifier + 3;
        break;
    case VERIFIER_MD5:
        hex = v->md5 + 3;
        break;
    default:
        /* A SCRAM verifier does not hold md5(password || user). */
        return 0;
    }
    memcpy(expected, "md5", 3);
    if (md5_hex2(hex, MD5_HEX_LEN, salt, 4, expected + 3) < 0)
        ok = 0;
    else
        ok = strnlen(response, MD5_VERIFIER_LEN + 1) == MD5_VERIFIER_LEN &&
             CRYPTO_memcmp(expected, response, MD5_VERIFIER_LEN) == 0;
    OPENSSL_cleanse(verifier, sizeof verifier);
    OPENSSL_cleanse(expected, sizeof expected);
    return ok;
}

int auth_password_check(const AuthVerifier *v, const char *user, const char *password)
{
    int ok = 0;

    if (v == NULL || password == NULL)
        return 0;
    switch (v->kind) {
    case VERIFIER_PLAIN: {
        /* Comparing digests makes the time independent of where the
         * passwords differ and of their lengths. */
        uint8_t a[32], b[32];
        if (v->plain != NULL &&
            sha256(v->plain, strlen(v->plain), a) == 0 &&
            sha256(password, strlen(password), b) == 0)
            ok = CRYPTO_memcmp(a, b, sizeof a) == 0;
        OPENSSL_cleanse(a, sizeof a);
        OPENSSL_cleanse(b, sizeof b);
        break;
    }
    case VERIFIER_MD5: {
        char computed[36];
        if (user == NULL)
            return 0;
        auth_md5_encrypt(password, user, computed);
        ok = computed[0] != '\0' &&
             CRYPTO_memcmp(computed, v->md5, MD5_VERIFIER_LEN) == 0;
        OPENSSL_cleanse(computed, sizeof computed);
        break;
    }
    case VERIFIER_SCRAM: {
        uint8_t stored[AUTH_SCRAM_KEY_LEN], server[AUTH_SCRAM_KEY_LEN];
        if (scram_keys_from_password(password, v->salt, v->salt_len, v->iterations,
                                     stored, server) == 0)
            ok = CRYPTO_memcmp(stored, v->stored_key, AUTH_SCRAM_KEY_LEN) == 0;
        OPENSSL_cleanse(stored, sizeof stored);
        OPENSSL_cleanse(server, sizeof server);
        break;
    }
    }
    return ok;
}

/* ------------------------------------------------------------------ */
/* SCRAM exchange                                                     */
/* ------------------------------------------------------------------ */

typedef enum {
    SCRAM_EXPECT_FIRST,     /* waiting for SASLInitialResponse */
    SCRAM_EXPECT_FINAL,     /* server-first sent, waiting for SASLResponse */
    SCRAM_FINISHED          /* succeeded or failed; nothing more is accepted */
} ScramStage;

/* Owns every pointer in it.  The verifier is copied rather than borrowed so
 * that a route-file reload in the middle of an exchange cannot free it. */
struct AuthScram {
    ScramStage stage;
    char *user;                     /* from the startup packet, never from n= */
    AuthVerifier verifier;
    int has_verifier;
    uint8_t *cbind;                 /* tls-server-end-point data; NULL without TLS */
    size_t cbind_len;
    char *fixed_server_nonce;       /* test hook; NULL in production */

    /* set by client-first */
    int use_cbind;                  /* the client chose SCRAM-SHA-256-PLUS */
    char *gs2_header;               /* "n,," / "y,," / "p=tls-server-end-point,," */
    char *client_first_bare;
    char *nonce;                    /* client nonce followed by server nonce */
    char *server_first;
    int doomed;                     /* made-up verifier: must fail at the end */
    int iterations;
    uint8_t salt[64];
    size_t salt_len;
    uint8_t stored_key[AUTH_SCRAM_KEY_LEN];
    uint8_t server_key[AUTH_SCRAM_KEY_LEN];
};

AuthScram *auth_scram_new_with_nonce(const AuthVerifier *v, const char *user,
                                     const uint8_t *cbind, size_t cbind_len,
                                     const char *server_nonce)
{
    AuthScram *s = xcalloc(1, sizeof *s);

    s->stage = SCRAM_EXPECT_FIRST;
    s->user = xstrdup(user ? user : "");
    if (v != NULL) {
        s->verifier = *v;
        if (v->plain)
            s->verifier.plain = xstrdup(v->plain);
        s->has_verifier = 1;
    }
    if (cbind != NULL && cbind_len > 0) {
        s->cbind = xmalloc(cbind_len);
        memcpy(s->cbind, cbind, cbind_len);
        s->cbind_len = cbind_len;
    }
    if (server_nonce != NULL)
        s->fixed_server_nonce = xstrdup(server_nonce);
    return s;
}

AuthScram *auth_scram_new(const AuthVerifier *v, const char *user,
                          const uint8_t *cbind, size_t cbind_len)
{
    return auth_scram_new_with_nonce(v, user, cbind, cbind_len, NULL);
}

void auth_scram_free(AuthScram *s)
{
    if (s == NULL)
        return;
    auth_verifier_free(&s->verifier);
    free(s->user);
    free(s->cbind);
    free(s->fixed_server_nonce);
    free(s->gs2_header);
    free(s->client_first_bare);
    free(s->nonce);
    free(s->server_first);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

void auth_scram_mechanisms(const AuthScram *s, Buf *out)
{
    /* -PLUS first, as Postgres lists it: clients take the first they like. */
    if (s->cbind != NULL)
        buf_append_cstr(out, SCRAM_MECH_PLUS);
    buf_append_cstr(out, SCRAM_MECH);
    buf_append_byte(out, 0);
}

/* Every failure ends the exchange and the connection, hence FATAL. */
static int scram_reject(AuthScram *s, RqError *err, const char *sqlstate, const char *message)
{
    s->stage = SCRAM_FINISHED;
    rq_error_set(err, sqlstate, "%s", message);
    rq_error_fatal(err);
    return -1;
}

static int scram_reject_detail(AuthScram *s, RqError *err, const char *sqlstate,
                               const char *message, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int scram_reject_detail(AuthScram *s, RqError *err, const char *sqlstate,
                               const char *message, const char *fmt, ...)
{
    va_list ap;
    char *detail;

    scram_reject(s, err, sqlstate, message);
    va_start(ap, fmt);
    if (vasprintf(&detail, fmt, ap) < 0)
        detail = NULL;
    va_end(ap);
    if (detail) {
        rq_error_detail(err, "%s", detail);
        free(detail);
    }
    return -1;
}

#define scram_malformed(s, err, ...) \
    scram_reject_detail((s), (err), "08P01", "malformed SCRAM message", __VA_ARGS__)

/* A client byte shown in an error message: quoted if printable, else hex,
 * so control characters never reach a log or a terminal. */
typedef struct { char text[8]; } ShownChar;

static ShownChar show_char(const char *p, const char *end)
{
    ShownChar c;
    if (p >= end)
        snprintf(c.text, sizeof c.text, "end");
    else if (*p >= 0x21 && *p <= 0x7e)
        snprintf(c.text, sizeof c.text, "\"%c\"", *p);
    else
        snprintf(c.text, sizeof c.text, "0x%02x", (unsigned char)*p);
    return c;
}

/* A client string shown in an error message: at most 30 bytes, anything
 * unprintable replaced by '?', as Postgres' sanitize_str does. */
static char *show_string(const char *p, size_t len)
{
    size_t n = len > 30 ? 30 : len;
    char *out = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        out[i] = (p[i] >= 0x20 && p[i] <= 0x7e) ? p[i] : '?';
    out[n] = '\0';
    return out;
}

typedef struct { const char *p, *end; } ScramCursor;
typedef struct { const char *s; size_t len; } Span;

static int span_equals(Span a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && memcmp(a.s, s, n) == 0;
}

/* Reads the value up to the next ',' (consumed) or the end. */
static void read_value(ScramCursor *c, Span *val)
{
    val->s = c->p;
    while (c->p < c->end && *c->p != ',')
        c->p++;
    val->len = (size_t)(c->p - val->s);
    if (c->p < c->end)
        c->p++;
}

static int read_attr(AuthScram *s, ScramCursor *c, char attr, Span *val, RqError *err)
{
    if (c->p >= c->end || *c->p != attr)
        return scram_malformed(s, err, "Expected attribute \"%c\" but found %s.",
                               attr, show_char(c->p, c->end).text);
    c->p++;
    if (c->p >= c->end || *c->p != '=')
        return scram_malformed(s, err, "Expected character \"=\" for attribute \"%c\".", attr);
    c->p++;
    read_value(c, val);
    return 0;
}

static int read_any_attr(AuthScram *s, ScramCursor *c, char *attr, Span *val, RqError *err)
{
    char a;

    if (c->p >= c->end)
        return scram_malformed(s, err, "Attribute expected, but found end of message.");
    a = *c->p;
    if (!((a >= 'A' && a <= 'Z') || (a >= 'a' && a <= 'z')))
        return scram_malformed(s, err, "Attribute expected, but found invalid character %s.",
                               show_char(c->p, c->end).text);
    c->p++;
    if (c->p >= c->end || *c->p != '=')
        return scram_malformed(s, err, "Expected character \"=\" for attribute \"%c\".", a);
    c->p++;
    read_value(c, val);
    *attr = a;
    return 0;
}

/* The payload is length-delimited on the wire; Postgres rejects embedded
 * NULs (its parser is C-string based), and so do we, to agree with it.  The
 * length cap is Postgres' PG_MAX_AUTH_TOKEN_LENGTH: no honest SCRAM message
 * comes near it, and it keeps every length below comfortably in an int. */
#define SCRAM_MAX_MESSAGE_LEN 65535

static int check_message_bytes(AuthScram *s, const char *msg, size_t len, RqError *err)
{
    if (msg == NULL || len == 0)
        return scram_malformed(s, err, "The message is empty.");
    if (len > SCRAM_MAX_MESSAGE_LEN)
        return scram_malformed(s, err, "The message is %zu bytes long; at most %d are accepted.",
                               len, SCRAM_MAX_MESSAGE_LEN);
    if (memchr(msg, '\0', len) != NULL)
        return scram_malformed(s, err, "The message contains a NUL byte.");
    return 0;
}

/* Fills salt, iterations and keys for the exchange from the verifier, or
 * makes them up (doomed) when there is nothing SCRAM can check against. */
static int scram_load_keys(AuthScram *s, RqError *err)
{
    const AuthVerifier *v = &s->verifier;

    if (s->has_verifier && v->kind == VERIFIER_SCRAM) {
        s->iterations = v->iterations;
        memcpy(s->salt, v->salt, v->salt_len);
        s->salt_len = v->salt_len;
        memcpy(s->stored_key, v->stored_key, AUTH_SCRAM_KEY_LEN);
        memcpy(s->server_key, v->server_key, AUTH_SCRAM_KEY_LEN);
        return 0;
    }
    if (scram_derived_salt(s->user, s->salt) < 0)
        return scram_reject(s, err, "XX000", "could not generate SCRAM salt");
    s->salt_len = SCRAM_SALT_LEN;
    s->iterations = AUTH_SCRAM_DEFAULT_ITERATIONS;
    if (s->has_verifier && v->kind == VERIFIER_PLAIN && v->plain != NULL) {
        if (scram_keys_from_password(v->plain, s->salt, s->salt_len, s->iterations,
                                     s->stored_key, s->server_key) < 0)
            return scram_reject(s, err, "XX000", "could not compute SCRAM keys");
        return 0;
    }
    /* Unknown user, or an MD5 verifier (which cannot yield SCRAM keys). */
    s->doomed = 1;
    return 0;
}

static char *scram_server_nonce(AuthScram *s)
{
    uint8_t raw[SCRAM_RAW_NONCE_LEN];
    char *nonce;

    if (s->fixed_server_nonce)
        return xstrdup(s->fixed_server_nonce);
    if (RAND_bytes(raw, sizeof raw) != 1)
        return NULL;
    nonce = auth_b64_encode(raw, sizeof raw);
    OPENSSL_cleanse(raw, sizeof raw);
    return nonce;
}

int auth_scram_client_first(AuthScram *s, const char *mechanism,
                            const char *msg, size_t len, Buf *out, RqError *err)
{
    ScramCursor c;
    Span cbtype, username, client_nonce, ext;
    const char *bare;
    char *server_nonce, *salt_b64;
    char attr;

    if (s->stage != SCRAM_EXPECT_FIRST)
        return scram_reject_detail(s, err, "08P01", "unexpected SCRAM message",
                                   "A client-first-message was sent after the exchange started.");
    if (mechanism == NULL ||
        !(strcmp(mechanism, SCRAM_MECH) == 0 ||
          (strcmp(mechanism, SCRAM_MECH_PLUS) == 0 && s->cbind != NULL)))
        return scram_reject(s, err, "08P01",
                            "client selected an invalid SASL authentication mechanism");
    s->use_cbind = strcmp(mechanism, SCRAM_MECH_PLUS) == 0;
    if (check_message_bytes(s, msg, len, err) < 0)
        return -1;
    c.p = msg;
    c.end = msg + len;

    /* gs2-cbind-flag */
    switch (*c.p) {
    case 'n':
    case 'y':
        if (s->use_cbind)
            return scram_malformed(s, err,
                "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.");
        /* "y" means the client could bind but thinks we cannot.  We offered
         * -PLUS, so either it is broken or someone in the middle stripped
         * -PLUS from our list: refuse the downgrade (RFC 5802 section 6). */
        if (*c.p == 'y' && s->cbind != NULL)
            return scram_reject_detail(s, err, "28000", "SCRAM channel binding negotiation error",
                "The client supports SCRAM channel binding but thinks the server does not.  "
                "However, this server does support channel binding.");
        c.p++;
        if (c.p >= c.end || *c.p != ',')
            return scram_malformed(s, err, "Comma expected, but found character %s.",
                                   show_char(c.p, c.end).text);
        c.p++;
        break;
    case 'p':
        if (!s->use_cbind)
            return scram_malformed(s, err,
                "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.");
        if (read_attr(s, &c, 'p', &cbtype, err) < 0)
            return -1;
        if (!span_equals(cbtype, SCRAM_CBIND_TYPE)) {
            char *shown = show_string(cbtype.s, cbtype.len);
            scram_reject(s, err, "08P01", "unsupported SCRAM channel-binding type");
            rq_error_detail(err, "The client asked for \"%s\"; only \"%s\" is supported.",
                            shown, SCRAM_CBIND_TYPE);
            free(shown);
            return -1;
        }
        break;
    default:
        return scram_malformed(s, err, "Unexpected channel-binding flag %s.",
                               show_char(c.p, c.end).text);
    }

    /* authzid: Postgres takes the role from the startup packet only. */
    if (c.p < c.end && *c.p == 'a')
        return scram_reject(s, err, "0A000",
                            "client uses authorization identity, but it is not supported");
    if (c.p >= c.end || *c.p != ',')
        return scram_malformed(s, err, "Unexpected attribute %s in client-first-message.",
                               show_char(c.p, c.end).text);
    c.p++;
    s->gs2_header = xstrndup(msg, (size_t)(c.p - msg));
    bare = c.p;

    if (c.p < c.end && *c.p == 'm')
        return scram_reject(s, err, "0A000", "client requires an unsupported SCRAM extension");
    /* n= is read for syntax only: libpq sends it empty, and the user that
     * counts is the one from the startup packet. */
    if (read_attr(s, &c, 'n', &username, err) < 0)
        return -1;
    if (read_attr(s, &c, 'r', &client_nonce, err) < 0)
        return -1;
    if (client_nonce.len == 0)
        return scram_malformed(s, err, "The client nonce is empty.");
    for (size_t i = 0; i < client_nonce.len; i++)
        if (client_nonce.s[i] < 0x21 || client_nonce.s[i] > 0x7e)
            return scram_reject(s, err, "08P01", "non-printable characters in SCRAM nonce");
    /* Optional extensions: none are supported, so they are only skipped. */
    while (c.p < c.end)
        if (read_any_attr(s, &c, &attr, &ext, err) < 0)
            return -1;
    s->client_first_bare = xstrndup(bare, (size_t)(c.end - bare));

    if (scram_load_keys(s, err) < 0)
        return -1;
    server_nonce = scram_server_nonce(s);
    if (server_nonce == NULL)
        return scram_reject(s, err, "XX000", "could not generate random nonce");
    {
        Buf nonce;
        buf_init(&nonce);
        buf_append(&nonce, client_nonce.s, client_nonce.len);
        buf_append_cstr(&nonce, server_nonce);
        s->nonce = nonce.data;          /* ownership moves to s */
    }
    free(server_nonce);
    salt_b64 = auth_b64_encode(s->salt, s->salt_len);
    s->server_first = xasprintf("r=%s,s=%s,i=%d", s->nonce, salt_b64, s->iterations);
    free(salt_b64);

    buf_append_str(out, s->server_first);
    s->stage = SCRAM_EXPECT_FINAL;
    return 0;
}

/* What c= must carry: base64(gs2-header [|| channel binding data]). */
static char *scram_expected_cbind_attr(const AuthScram *s)
{
    Buf input;
    char *b64;

    buf_init(&input);
    buf_append_str(&input, s->gs2_header);
    if (s->use_cbind)
        buf_append(&input, s->cbind, s->cbind_len);
    b64 = auth_b64_encode((const uint8_t *)input.data, input.len);
    buf_free(&input);
    return b64;
}

int auth_scram_client_final(AuthScram *s, const char *msg, size_t len,
                            Buf *out, RqError *err)
{
    ScramCursor c;
    Span cbattr, final_nonce, val;
    const char *proof_attr;
    char attr, *expected;
    uint8_t proof[AUTH_SCRAM_KEY_LEN], client_sig[AUTH_SCRAM_KEY_LEN];
    uint8_t client_key[AUTH_SCRAM_KEY_LEN], computed[AUTH_SCRAM_KEY_LEN];
    uint8_t server_sig[AUTH_SCRAM_KEY_LEN];
    Buf auth_message;
    int crypto_ok, proof_ok, matches;

    if (s->stage != SCRAM_EXPECT_FINAL)
        return scram_reject_detail(s, err, "08P01", "unexpected SCRAM message",
            s->stage == SCRAM_EXPECT_FIRST
                ? "A client-final-message was sent before the client-first-message."
                : "The SCRAM exchange is already finished.");
    if (check_message_bytes(s, msg, len, err) < 0)
        return -1;
    c.p = msg;
    c.end = msg + len;

    if (read_attr(s, &c, 'c', &cbattr, err) < 0)
        return -1;
    expected = scram_expected_cbind_attr(s);
    matches = span_equals(cbattr, expected);
    free(expected);
    if (!matches) {
        /* With -PLUS a mismatch means the TLS endpoints differ (a man in
         * the middle), which Postgres reports as an authorization failure;
         * without it the client simply contradicted its own gs2 header. */
        if (s->use_cbind)
            return scram_reject(s, err, "28000", "SCRAM channel binding check failed");
        return scram_reject(s, err, "08P01",
                            "unexpected SCRAM channel-binding attribute in client-final-message");
    }
    if (read_attr(s, &c, 'r', &final_nonce, err) < 0)
        return -1;
    /* Skip extensions up to the proof, which must be last. */
    do {
        if (c.p >= c.end)
            return scram_malformed(s, err, "The client-final-message has no proof (\"p=\").");
        proof_attr = c.p;
        if (read_any_attr(s, &c, &attr, &val, err) < 0)
            return -1;
    } while (attr != 'p');
    if (b64_decode_exact(val.s, val.len, proof, sizeof proof) < 0)
        return scram_malformed(s, err, "Malformed proof in client-final-message.");
    if (val.s + val.len != c.end)
        return scram_malformed(s, err, "Garbage found at the end of client-final-message.");
    if (!span_equals(final_nonce, s->nonce))
        return scram_reject_detail(s, err, "08P01", "invalid SCRAM response",
                                   "Nonce does not match.");

    /* AuthMessage = client-first-bare "," server-first ","
     *               client-final-without-proof (everything before ",p="). */
    buf_init(&auth_message);
    buf_append_str(&auth_message, s->client_first_bare);
    buf_append_byte(&auth_message, ',');
    buf_append_str(&auth_message, s->server_first);
    buf_append_byte(&auth_message, ',');
    buf_append(&auth_message, msg, (size_t)(proof_attr - 1 - msg));

    crypto_ok = hmac_sha256(s->stored_key, AUTH_SCRAM_KEY_LEN, auth_message.data,
                            auth_message.len, client_sig) == 0;
    for (size_t i = 0; i < AUTH_SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ client_sig[i];
    crypto_ok = crypto_ok && sha256(client_key, sizeof client_key, computed) == 0;
    /* The comparison runs for doomed exchanges too, so they take as long. */
    proof_ok = crypto_ok &&
               CRYPTO_memcmp(computed, s->stored_key, AUTH_SCRAM_KEY_LEN) == 0 &&
               !s->doomed;
    if (proof_ok)
        crypto_ok = hmac_sha256(s->server_key, AUTH_SCRAM_KEY_LEN, auth_message.data,
                                auth_message.len, server_sig) == 0;
    buf_free(&auth_message);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(client_sig, sizeof client_sig);

    if (!crypto_ok)
        return scram_reject(s, err, "XX000", "could not compute SCRAM signatures");
    if (!proof_ok) {
        /* Word for word what a wrong password and an unknown user get. */
        s->stage = SCRAM_FINISHED;
        rq_error_set(err, "28P01", "password authentication failed for user \"%s\"", s->user);
        rq_error_fatal(err);
        return -1;
    }
    {
        char *sig = auth_b64_encode(server_sig, sizeof server_sig);
        buf_append_str(out, "v=");
        buf_append_str(out, sig);
        free(sig);
    }
    s->stage = SCRAM_FINISHED;
    return 0;
}

/* ------------------------------------------------------------------ */
/* channel binding                                                    */
/* ------------------------------------------------------------------ */

int auth_tls_server_end_point(void *x509_cert, uint8_t out[64])
{
    X509 *cert = x509_cert;
    const EVP_MD *md;
    int mdnid = NID_undef;
    unsigned int len = 0;

    /* X509_get_signature_info also sees through RSA-PSS to its real hash.
     * Signatures without a separate digest (Ed25519) have no
     * tls-server-end-point binding defined, so -PLUS is not offered then. */
    if (cert == NULL || X509_get_signature_info(cert, &mdnid, NULL, NULL, NULL) != 1)
        return -1;
    if (mdnid == NID_md5 || mdnid == NID_sha1)
        md = EVP_sha256();          /* RFC 5929 section 4.1 */
    else
        md = EVP_get_digestbynid(mdnid);
    if (md == NULL || EVP_MD_get_size(md) <= 0 || EVP_MD_get_size(md) > 64)
        return -1;
    if (X509_digest(cert, md, out, &len) != 1)
        return -1;
    return (int)len;
}
