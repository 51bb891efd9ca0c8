/*
 * The route-file loader: JSON text in, an immutable validated Config out.
 *
 * Design.  jansson parses the text into a tree; one recursive-descent walk
 * then checks that tree against a schema written as code (one parse_*
 * function per kind of object) and copies what it accepts into the Config.
 * Loading is all-or-nothing: the first problem stops the walk, the partial
 * Config is freed, and the caller keeps whatever it had.  That is what lets
 * a SIGHUP reload be safe: a bad edit never installs half a config.
 *
 * Errors.  The walk carries the JSON path of the value under inspection
 * (routes[2].match.tables) in a Loader, so every message can say where the
 * problem is without each parse_* function threading a path through its
 * arguments.  Only the first error is kept; later ones are usually its
 * consequences.  Unknown keys are errors, because a misspelt key that is
 * silently ignored ("tabels") turns a route into a catch-all.
 *
 * Environment.  ${NAME} and ${NAME:-default} are expanded when a string is
 * read, not over the whole tree up front, so that the error names the path
 * of the string that failed, and so that "comment" values, which are never
 * read, may quote ${...} literally.  JSON cannot interpolate into a number,
 * so every integer, size and duration also accepts a string that is wholly
 * a number after expansion ("port": "${RIFFQ_PORT:-5433}").
 *
 * Secrets.  Load errors get logged, so auth.users values and upstream
 * conninfo strings (which may hold passwords) are never quoted in them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <jansson.h>

#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/log.h"

#ifndef RIFFQ_VERSION
#define RIFFQ_VERSION "dev"
#endif

#define DEFAULT_HOST             "127.0.0.1"
#define DEFAULT_PORT             5433
#define DEFAULT_POOL_SIZE        20
#define MAX_POOL_SIZE            10000
#define DEFAULT_MAX_CLIENTS      1000
#define MAX_MAX_CLIENTS          1000000
#define DEFAULT_MAX_MESSAGE_SIZE ((size_t)64 << 20)
#define MIN_MAX_MESSAGE_SIZE     ((long long)1 << 10)
/* Postgres itself refuses any allocation of 1 GB or more (MaxAllocSize). */
#define MAX_MAX_MESSAGE_SIZE     ((long long)1 << 30)
#define DEFAULT_AUTH_TIMEOUT_MS  60000
#define MAX_AUTH_TIMEOUT_MS      3600000LL
#define DEFAULT_SQLSTATE         "42501"
#define COMMENT_KEY              "comment"

/* Suggestions are only worth showing when they are close; "tabels" ->
 * "tables" yes, "foo" -> "for" no. */
#define SUGGEST_MAX_LEN          64

/* ------------------------------------------------------------------ */
/* The walk's state: where we are, and the first error.                */

typedef struct Loader {
    const char *file;   /* name used in messages (borrowed) */
    Config *cfg;        /* being filled (borrowed) */
    Buf path;           /* JSON path of the current value, not NUL-terminated */
    char *err;          /* first error, "FILE: PATH: message" (owned until handed out) */
} Loader;

static int fail(Loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(Loader *L, const char *fmt, ...)
{
    if (L->err) return -1;
    char *msg;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    if (!msg) msg = xstrdup("out of memory formatting an error");
    if (L->path.len)
        L->err = xasprintf("%s: %.*s: %s", L->file, (int)L->path.len, L->path.data, msg);
    else
        L->err = xasprintf("%s: %s", L->file, msg);
    free(msg);
    return -1;
}

/* Quote s the way JSON would, cut short so a pasted blob cannot flood a log
 * line.  Never call this on a secret. */
static void append_quoted(Buf *b, const char *s)
{
    static const size_t max = 80;
    size_t n = 0;
    buf_append_byte(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
        if (n == max) {
            buf_append_str(b, "...");
            break;
        }
        if (*p == '"' || *p == '\\') {
            buf_append_byte(b, '\\');
            buf_append_byte(b, *p);
        } else if (*p == '\n') {
            buf_append_str(b, "\\n");
        } else if (*p == '\t') {
            buf_append_str(b, "\\t");
        } else if (*p < 0x20 || *p == 0x7f) {
            buf_printf(b, "\\u%04x", *p);
        } else {
            buf_append_byte(b, *p);
        }
    }
    buf_append_byte(b, '"');
}

/* A malloc'd quoted copy, for use as a printf argument. */
static char *quoted(const char *s)
{
    Buf b;
    buf_init(&b);
    append_quoted(&b, s);
    buf_append_byte(&b, '\0');
    return b.data;
}

static int is_path_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return 0;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Keys that would make a dotted path ambiguous ("my.db") are written in
 * brackets instead: upstreams["my.db"].pool_size. */
static size_t path_key(Loader *L, const char *key)
{
    size_t mark = L->path.len;
    if (is_path_ident(key)) {
        if (L->path.len) buf_append_byte(&L->path, '.');
        buf_append_str(&L->path, key);
    } else {
        buf_append_byte(&L->path, '[');
        append_quoted(&L->path, key);
        buf_append_byte(&L->path, ']');
    }
    return mark;
}

static size_t path_index(Loader *L, size_t i)
{
    size_t mark = L->path.len;
    buf_printf(&L->path, "[%zu]", i);
    return mark;
}

static void path_pop(Loader *L, size_t mark)
{
    L->path.len = mark;
}

static const char *kind_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:  return "an object";
    case JSON_ARRAY:   return "an array";
    case JSON_STRING:  return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL:    return "a number with a fraction or exponent";
    case JSON_TRUE:    return "true";
    case JSON_FALSE:   return "false";
    case JSON_NULL:    return "null";
    }
    return "an unknown JSON value";
}

/* ------------------------------------------------------------------ */
/* "Did you mean": optimal string alignment distance, so that the      */
/* commonest typo, two swapped letters, costs 1 rather than 2.         */

static size_t min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t w = lb + 1;
    size_t *d = xmalloc((la + 1) * w * sizeof *d);
    for (size_t i = 0; i <= la; i++) d[i * w] = i;
    for (size_t j = 0; j <= lb; j++) d[j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = min3(d[(i - 1) * w + j] + 1, d[i * w + j - 1] + 1,
                            d[(i - 1) * w + j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[(i - 2) * w + j - 2] + 1 < v)
                v = d[(i - 2) * w + j - 2] + 1;
            d[i * w + j] = v;
        }
    }
    size_t r = d[la * w + lb];
    free(d);
    return r;
}

static const char *suggest(const char *word, const char *const *cands, size_t n)
{
    size_t len = strlen(word);
    if (len == 0 || len > SUGGEST_MAX_LEN) return NULL;
    size_t limit = len <= 4 ? 1 : 2;
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (strlen(cands[i]) > SUGGEST_MAX_LEN) continue;
        size_t d = edit_distance(word, cands[i]);
        /* Abbreviations ("warn", "trans") are typos too, however far apart. */
        if (d > limit && len >= 3 && strncmp(cands[i], word, len) == 0) d = limit;
        if (d <= limit && d < strlen(cands[i]) && d < best_d) {
            best = cands[i];
            best_d = d;
        }
    }
    return best;
}

/* " (did you mean "x"?)" or " (expected one of: a, b, c)" -- malloc'd.
 * what: "expected one of" / "upstreams defined" etc. */
static char *hint_for(const char *word, const char *const *cands, size_t n, const char *what)
{
    const char *s = suggest(word, cands, n);
    Buf b;
    buf_init(&b);
    if (s) {
        buf_append_str(&b, " (did you mean ");
        append_quoted(&b, s);
        buf_append_str(&b, "?)");
    } else if (n) {
        buf_printf(&b, " (%s: ", what);
        for (size_t i = 0; i < n; i++) {
            if (i) buf_append_str(&b, ", ");
            buf_append_str(&b, cands[i]);
        }
        buf_append_byte(&b, ')');
    }
    buf_append_byte(&b, '\0');
    return b.data;
}

/* ------------------------------------------------------------------ */
/* Environment expansion.                                              */

static int is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/* Defaults may themselves hold references ("${A:-${B:-x}}"), so the end of
 * a reference is the "}" that balances its "${", not the first "}". */
static int find_reference_end(const char *s, size_t len, size_t open, size_t *end)
{
    int depth = 1;
    for (size_t i = open + 2; i < len; i++) {
        if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
            depth++;
            i++;
        } else if (s[i] == '}' && --depth == 0) {
            *end = i;
            return 0;
        }
    }
    return -1;
}

/* base: offset of s within the caller's whole string, so positions in
 * messages about a nested default still count from the start. */
static int expand_into(const char *s, size_t len, size_t base, Buf *out, char **errmsg)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] != '$' || i + 1 >= len || s[i + 1] != '{') {
            buf_append_byte(out, (uint8_t)s[i++]);
            continue;
        }
        size_t end;
        if (find_reference_end(s, len, i, &end) < 0) {
            *errmsg = xasprintf("unterminated \"${\" at character %zu (expected \"}\")",
                                base + i + 1);
            return -1;
        }
        const char *name = s + i + 2;
        size_t nlen = 0;
        if (is_name_start(name[0]))
            while (name + nlen < s + end && is_name_char(name[nlen])) nlen++;
        const char *rest = name + nlen;
        int has_default = rest + 1 < s + end && rest[0] == ':' && rest[1] == '-';
        if (nlen == 0 || (rest != s + end && !has_default)) {
            *errmsg = xasprintf("invalid \"${...}\" at character %zu: expected ${NAME} or "
                                "${NAME:-default}, NAME made of letters, digits and _",
                                base + i + 1);
            return -1;
        }
        char *var = xstrndup(name, nlen);
        const char *val = getenv(var);
        if (val && (*val || !has_default)) {
            buf_append_str(out, val);
        } else if (has_default) {
            /* Like the shell's ":-": an empty variable also takes the default. */
            const char *def = rest + 2;
            if (expand_into(def, (size_t)(s + end - def), base + (size_t)(def - s), out,
                            errmsg) < 0) {
                free(var);
                return -1;
            }
        } else {
            *errmsg = xasprintf("environment variable \"%s\" is not set "
                                "(write ${%s:-default} to give a default)", var, var);
            free(var);
            return -1;
        }
        free(var);
        i = end + 1;
    }
    return 0;
}

char *cfg_expand_env(const char *s, char **errmsg)
{
    char *ignored = NULL;
    Buf out;
    buf_init(&out);
    if (expand_into(s, strlen(s), 0, &out, errmsg ? errmsg : &ignored) < 0) {
        free(ignored);
        buf_free(&out);
        return NULL;
    }
    buf_append_byte(&out, '\0');
    return out.data;
}

/* ------------------------------------------------------------------ */
/* Readers for leaf values.  Each reports errors at the current path.  */

typedef enum { PLAIN = 0, SECRET = 1 } Secrecy;

/* Say where an odd value came from when expansion changed it: a user who
 * sees got "" wants to know it was "${RIFFQ_PORT}". */
static char *origin_note(const char *raw, const char *expanded)
{
    if (strcmp(raw, expanded) == 0) return xstrdup("");
    char *q = quoted(raw);
    char *r = xasprintf(" (expanded from %s)", q);
    free(q);
    return r;
}

static int expand_value(Loader *L, const char *raw, char **out)
{
    char *msg = NULL;
    *out = cfg_expand_env(raw, &msg);
    if (*out) return 0;
    fail(L, "%s", msg);
    free(msg);
    return -1;
}

/* Every string in a route file means something, so empty is always a
 * mistake (most often an environment variable set to ""). */
static int read_string(Loader *L, json_t *v, Secrecy secrecy, char **out)
{
    if (!json_is_string(v)) return fail(L, "expected a string, got %s", kind_name(v));
    const char *raw = json_string_value(v);
    char *s;
    if (expand_value(L, raw, &s) < 0) return -1;
    if (!*s) {
        free(s);
        if (secrecy == SECRET || !*raw) return fail(L, "expected a non-empty string");
        char *note = origin_note(raw, "");
        fail(L, "expected a non-empty string%s", note);
        free(note);
        return -1;
    }
    free(*out);
    *out = s;
    return 0;
}

/* Whole decimal integer, no sign games, no whitespace: "20" yes, " 20" no. */
static int parse_decimal(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '-') p++;
    if (*p < '0' || *p > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int read_int(Loader *L, json_t *v, long long lo, long long hi, long long *out)
{
    long long n = 0;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
        if (n < lo || n > hi)
            return fail(L, "expected an integer between %lld and %lld, got %lld", lo, hi, n);
        *out = n;
        return 0;
    }
    if (!json_is_string(v))
        return fail(L, "expected an integer between %lld and %lld, got %s", lo, hi, kind_name(v));
    const char *raw = json_string_value(v);
    char *s;
    if (expand_value(L, raw, &s) < 0) return -1;
    int bad = parse_decimal(s, &n) < 0;
    if (bad || n < lo || n > hi) {
        char *q = quoted(s), *note = origin_note(raw, s);
        fail(L, "expected an integer between %lld and %lld, got %s%s", lo, hi, q, note);
        free(q);
        free(note);
        free(s);
        return -1;
    }
    free(s);
    *out = n;
    return 0;
}

typedef struct Unit {
    const char *name;
    long long factor;
} Unit;

/* Postgres' own spellings (kB is 1024 there too), plus the IEC ones people
 * also write. */
static const Unit size_units[] = {
    { "B", 1 }, { "kB", 1LL << 10 }, { "KB", 1LL << 10 }, { "KiB", 1LL << 10 },
    { "MB", 1LL << 20 }, { "MiB", 1LL << 20 }, { "GB", 1LL << 30 }, { "GiB", 1LL << 30 },
    { "TB", 1LL << 40 }, { "TiB", 1LL << 40 }, { NULL, 0 }
};

static const Unit time_units[] = {
    { "ms", 1 }, { "s", 1000 }, { "min", 60000 }, { "h", 3600000 }, { "d", 86400000 },
    { NULL, 0 }
};

/* "64MB", "64 MB" or "65536" (the base unit). */
static int parse_with_unit(const char *s, const Unit *units, long long *out)
{
    const char *p = s;
    if (*p < '0' || *p > '9') return -1;
    errno = 0;
    char *end;
    long long n = strtoll(p, &end, 10);
    if (errno) return -1;
    while (*end == ' ') end++;
    if (!*end) {
        *out = n;
        return 0;
    }
    for (const Unit *u = units; u->name; u++) {
        if (strcmp(end, u->name) == 0) {
            if (n > LLONG_MAX / u->factor) return -1;
            *out = n * u->factor;
            return 0;
        }
    }
    return -1;
}

/* what: "a size such as 65536 or \"64MB\" (units: ...)" -- used in errors. */
static int read_with_unit(Loader *L, json_t *v, const Unit *units, const char *what,
                          long long lo, long long hi, const char *range, long long *out)
{
    long long n = 0;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
        if (n < lo || n > hi) return fail(L, "expected %s, got %lld", range, n);
        *out = n;
        return 0;
    }
    if (!json_is_string(v)) return fail(L, "expected %s, got %s", what, kind_name(v));
    const char *raw = json_string_value(v);
    char *s;
    if (expand_value(L, raw, &s) < 0) return -1;
    char *q = quoted(s), *note = origin_note(raw, s);
    int rc = 0;
    if (parse_with_unit(s, units, &n) < 0)
        rc = fail(L, "expected %s, got %s%s", what, q, note);
    else if (n < lo || n > hi)
        rc = fail(L, "expected %s, got %s%s", range, q, note);
    else
        *out = n;
    free(q);
    free(note);
    free(s);
    return rc;
}

/* range: how lo..hi reads to a person, e.g. "a size between 1kB and 1GB". */
static int read_size(Loader *L, json_t *v, long long lo, long long hi, const char *range,
                     long long *out)
{
    return read_with_unit(L, v, size_units,
                          "a size in bytes such as 65536, or a string such as \"64MB\" "
                          "(units B, kB, MB, GB, TB)",
                          lo, hi, range, out);
}

static int read_duration_ms(Loader *L, json_t *v, long long lo, long long hi,
                            const char *range, long long *out)
{
    return read_with_unit(L, v, time_units,
                          "a duration in milliseconds such as 60000, or a string such as "
                          "\"60s\" (units ms, s, min, h, d)",
                          lo, hi, range, out);
}

/* A "comment" documents the file for people.  It is not expanded, so it may
 * show ${...} examples; an array lets a long note span lines. */
static int check_comment(Loader *L, json_t *v)
{
    if (json_is_string(v)) return 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                size_t m = path_index(L, i);
                fail(L, "expected a string (a comment line), got %s", kind_name(e));
                path_pop(L, m);
                return -1;
            }
        }
        return 0;
    }
    return fail(L, "expected a string or an array of strings (a comment), got %s",
                kind_name(v));
}

static size_t count_strs(const char *const *v)
{
    size_t n = 0;
    while (v[n]) n++;
    return n;
}

static int is_known(const char *key, const char *const *known)
{
    for (size_t i = 0; known[i]; i++)
        if (strcmp(key, known[i]) == 0) return 1;
    return 0;
}

/* obj must be an object; what names it in the type error ("a listener"). */
static int check_object(Loader *L, json_t *obj, const char *what)
{
    if (json_is_object(obj)) return 0;
    return fail(L, "expected %s (a JSON object), got %s", what, kind_name(obj));
}

static int check_keys(Loader *L, json_t *obj, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (strcmp(key, COMMENT_KEY) == 0) {
            size_t m = path_key(L, key);
            int rc = check_comment(L, v);
            path_pop(L, m);
            if (rc < 0) return -1;
            continue;
        }
        if (is_known(key, known)) continue;
        char *q = quoted(key);
        char *hint = hint_for(key, known, count_strs(known), "expected one of");
        fail(L, "unknown key %s%s", q, hint);
        free(q);
        free(hint);
        return -1;
    }
    return 0;
}

static int require_key(Loader *L, json_t *obj, const char *key, json_t **out)
{
    *out = json_object_get(obj, key);
    if (*out) return 0;
    return fail(L, "missing required key \"%s\"", key);
}

/* obj[key] as a string, if present; *out keeps its value otherwise. */
static int opt_string(Loader *L, json_t *obj, const char *key, Secrecy secrecy, char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    size_t m = path_key(L, key);
    int rc = read_string(L, v, secrecy, out);
    path_pop(L, m);
    return rc;
}

static int opt_int(Loader *L, json_t *obj, const char *key, long long lo, long long hi, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    long long n = 0;
    size_t m = path_key(L, key);
    int rc = read_int(L, v, lo, hi, &n);
    path_pop(L, m);
    if (rc == 0) *out = (int)n;
    return rc;
}

/* Picks one of a fixed set of words; out gets its index. */
static int read_choice(Loader *L, json_t *v, const char *const *words, int *out)
{
    char *s = NULL;
    if (read_string(L, v, PLAIN, &s) < 0) return -1;
    for (int i = 0; words[i]; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i;
            free(s);
            return 0;
        }
    }
    char *q = quoted(s);
    char *hint = hint_for(s, words, count_strs(words), "expected one of");
    fail(L, "unknown value %s%s", q, hint);
    free(q);
    free(hint);
    free(s);
    return -1;
}

static int opt_choice(Loader *L, json_t *obj, const char *key, const char *const *words, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    size_t m = path_key(L, key);
    int rc = read_choice(L, v, words, out);
    path_pop(L, m);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Paths relative to the route file.                                   */

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

/* A route file moved together with its certificates and plugins keeps
 * working, whatever the gateway's working directory. */
static char *resolve_path(const Config *cfg, const char *p)
{
    if (p[0] == '/' || strcmp(cfg->dir, ".") == 0) return xstrdup(p);
    return xasprintf("%s/%s", cfg->dir, p);
}

/* ------------------------------------------------------------------ */
/* listen                                                              */

static const char *const listener_keys[] = { "host", "port", "unix", NULL };

static char *listener_name(const CfgListen *l)
{
    if (l->unix_path) return xstrdup(l->unix_path);
    if (strchr(l->host, ':')) return xasprintf("[%s]:%d", l->host, l->port);
    return xasprintf("%s:%d", l->host, l->port);
}

static int parse_listener(Loader *L, json_t *v, CfgListen *out)
{
    if (check_object(L, v, "a listener such as {\"host\": \"127.0.0.1\", \"port\": 5433} "
                           "or {\"unix\": \"/tmp/.s.PGSQL.5433\"}") < 0)
        return -1;
    if (check_keys(L, v, listener_keys) < 0) return -1;
    json_t *host = json_object_get(v, "host"), *port = json_object_get(v, "port");
    json_t *unx = json_object_get(v, "unix");
    if (unx && (host || port))
        return fail(L, "expected either \"unix\" or \"host\" and \"port\", not both");
    if (unx) {
        if (opt_string(L, v, "unix", PLAIN, &out->unix_path) < 0) return -1;
        struct sockaddr_un sun;
        if (strlen(out->unix_path) >= sizeof sun.sun_path) {
            size_t m = path_key(L, "unix");
            fail(L, "a Unix socket path must be shorter than %zu bytes, this one has %zu",
                 sizeof sun.sun_path, strlen(out->unix_path));
            path_pop(L, m);
            return -1;
        }
    } else {
        if (!host && !port) return fail(L, "expected \"host\" and \"port\", or \"unix\"");
        json_t *dummy;
        if (require_key(L, v, "host", &dummy) < 0) return -1;
        if (require_key(L, v, "port", &dummy) < 0) return -1;
        if (opt_string(L, v, "host", PLAIN, &out->host) < 0) return -1;
        /* The server binds numeric addresses only; a host name would fail
         * there, later and less clearly. */
        unsigned char bin[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, out->host, bin) != 1 && inet_pton(AF_INET6, out->host, bin) != 1) {
            size_t m = path_key(L, "host");
            char *q = quoted(out->host);
            fail(L, "expected an IPv4 or IPv6 address such as \"127.0.0.1\", \"0.0.0.0\" or "
                    "\"::\", got %s", q);
            free(q);
            path_pop(L, m);
            return -1;
        }
        if (opt_int(L, v, "port", 1, 65535, &out->port) < 0) return -1;
    }
    out->name = listener_name(out);
    return 0;
}

static int parse_listen(Loader *L, json_t *v, Config *cfg)
{
    if (!json_is_array(v))
        return fail(L, "expected an array of listeners, got %s", kind_name(v));
    size_t n = json_array_size(v);
    if (n == 0) return fail(L, "expected at least one listener");
    cfg->listen = xcalloc(n, sizeof *cfg->listen);
    for (size_t i = 0; i < n; i++) {
        size_t m = path_index(L, i);
        cfg->n_listen = i + 1;  /* counted first: cfg_free must see a half-filled entry */
        int rc = parse_listener(L, json_array_get(v, i), &cfg->listen[i]);
        for (size_t j = 0; rc == 0 && j < i; j++)
            if (strcmp(cfg->listen[j].name, cfg->listen[i].name) == 0)
                rc = fail(L, "listener %s is also listen[%zu]", cfg->listen[i].name, j);
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    return 0;
}

static void default_listen(Config *cfg)
{
    cfg->listen = xcalloc(1, sizeof *cfg->listen);
    cfg->n_listen = 1;
    cfg->listen[0].host = xstrdup(DEFAULT_HOST);
    cfg->listen[0].port = DEFAULT_PORT;
    cfg->listen[0].name = listener_name(&cfg->listen[0]);
}

/* ------------------------------------------------------------------ */
/* tls                                                                 */

static const char *const tls_keys[] = { "cert", "key", "mode", NULL };
static const char *const tls_modes[] = { "disable", "allow", "require", NULL };

static int check_readable(Loader *L, const char *key, const char *path)
{
    if (access(path, R_OK) == 0) return 0;
    int e = errno;
    size_t m = path_key(L, key);
    char *q = quoted(path);
    fail(L, "cannot read %s: %s", q, strerror(e));
    free(q);
    path_pop(L, m);
    return -1;
}

static int parse_tls(Loader *L, json_t *v, Config *cfg)
{
    if (check_object(L, v, "TLS settings") < 0) return -1;
    if (check_keys(L, v, tls_keys) < 0) return -1;
    int mode = -1;
    char *cert = NULL, *key = NULL;
    int rc = opt_choice(L, v, "mode", tls_modes, &mode);
    if (rc == 0) rc = opt_string(L, v, "cert", PLAIN, &cert);
    if (rc == 0) rc = opt_string(L, v, "key", PLAIN, &key);
    if (rc == 0 && !cert != !key)
        rc = fail(L, "\"cert\" and \"key\" go together: give both or neither");
    if (rc == 0 && mode > 0 && !cert)
        rc = fail(L, "mode \"%s\" needs \"cert\" and \"key\"", tls_modes[mode]);
    if (rc == 0) {
        if (mode < 0) mode = cert ? 2 : 0;
        cfg->tls_mode = mode == 2 ? TLS_REQUIRE : mode == 1 ? TLS_ALLOW : TLS_DISABLE;
        if (cert) {
            cfg->tls_cert = resolve_path(cfg, cert);
            cfg->tls_key = resolve_path(cfg, key);
        }
        /* A disabled TLS section may name files that are not there yet:
         * turning TLS off must not need them. */
        if (cfg->tls_mode != TLS_DISABLE) {
            rc = check_readable(L, "cert", cfg->tls_cert);
            if (rc == 0) rc = check_readable(L, "key", cfg->tls_key);
        }
    }
    free(cert);
    free(key);
    return rc;
}

/* ------------------------------------------------------------------ */
/* auth                                                                */

static const char *const auth_keys[] = { "method", "users", "auth_query", "plugin", NULL };
static const char *const auth_query_keys[] = { "upstream", "query", NULL };
#define DEFAULT_AUTH_QUERY "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1"
/* Same order as CfgAuthMethod. */
static const char *const auth_methods[] = { "trust", "password", "md5", "scram-sha-256", NULL };

static int is_md5_verifier(const char *s)
{
    /* Postgres' own test (get_password_type): lower-case hex only. */
    return strlen(s) == 35 && strncmp(s, "md5", 3) == 0 &&
           strspn(s + 3, "0123456789abcdef") == 32;
}

static size_t b64_span(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=");
}

/* SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, keys being 32
 * bytes in base64 (44 characters). */
static int is_wellformed_scram(const char *s)
{
    const char *p = s + strlen("SCRAM-SHA-256$");
    size_t n = strspn(p, "0123456789");
    if (n == 0 || p[n] != ':' || p[0] == '0') return 0;
    p += n + 1;
    n = b64_span(p);
    if (n == 0 || p[n] != '$') return 0;
    p += n + 1;
    if (b64_span(p) != 44 || p[44] != ':') return 0;
    p += 45;
    return b64_span(p) == 44 && p[44] == '\0';
}

/* The secret itself is never quoted: these messages get logged. */
static int check_secret(Loader *L, CfgAuthMethod method, const char *secret)
{
    if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0) {
        /* With method md5 a SCRAM user is fine: the server upgrades that
         * login to SCRAM, as Postgres does. */
        if (!is_wellformed_scram(secret))
            return fail(L, "malformed SCRAM-SHA-256 verifier: expected "
                           "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
    } else if (is_md5_verifier(secret) && method == AUTH_SCRAM) {
        return fail(L, "an md5 verifier cannot answer method \"scram-sha-256\"; give the plain "
                       "password or a SCRAM-SHA-256 verifier");
    }
    return 0;
}

static int parse_user(Loader *L, const char *key, json_t *v, CfgAuthMethod method,
                      Config *cfg, CfgUser *out)
{
    char *name;
    if (expand_value(L, key, &name) < 0) return -1;
    out->name = name;
    if (!*name) return fail(L, "the user name is empty after expanding it");
    for (size_t i = 0; i + 1 < cfg->n_users; i++)
        if (strcmp(cfg->users[i].name, name) == 0)
            return fail(L, "user \"%s\" is defined twice", name);
    if (read_string(L, v, SECRET, &out->secret) < 0) return -1;
    return check_secret(L, method, out->secret);
}

/* A JSON object from names to entries, "comment" keys aside: fn parses each
 * entry with the JSON path pointing at it. */
typedef int (*MapEntry)(Loader *L, const char *name, json_t *v, void *ctx);

static int parse_map(Loader *L, json_t *v, const char *what, MapEntry fn, void *ctx)
{
    if (check_object(L, v, what) < 0) return -1;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        size_t m = path_key(L, key);
        int rc = strcmp(key, COMMENT_KEY) == 0 ? check_comment(L, val) : fn(L, key, val, ctx);
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    return 0;
}

typedef struct UsersCtx {
    CfgAuthMethod method;
    Config *cfg;
} UsersCtx;

static int user_entry(Loader *L, const char *name, json_t *v, void *ctx)
{
    UsersCtx *u = ctx;
    Config *cfg = u->cfg;
    cfg->n_users++;
    return parse_user(L, name, v, u->method, cfg, &cfg->users[cfg->n_users - 1]);
}

static int parse_users(Loader *L, json_t *v, CfgAuthMethod method, Config *cfg)
{
    UsersCtx u = { .method = method, .cfg = cfg };
    cfg->users = xcalloc(json_is_object(v) ? json_object_size(v) : 0, sizeof *cfg->users);
    return parse_map(L, v, "a map of user name to password or verifier", user_entry, &u);
}

static int parse_auth(Loader *L, json_t *v, Config *cfg)
{
    if (check_object(L, v, "authentication settings") < 0) return -1;
    if (check_keys(L, v, auth_keys) < 0) return -1;
    /* No default here: "auth" with users but no method would otherwise mean
     * trust, letting anyone in while looking protected. */
    json_t *mv;
    if (require_key(L, v, "method", &mv) < 0) return -1;
    int method;
    if (opt_choice(L, v, "method", auth_methods, &method) < 0) return -1;
    cfg->auth_method = (CfgAuthMethod)method;
    json_t *users = json_object_get(v, "users");
    if (users) {
        size_t m = path_key(L, "users");
        int rc = parse_users(L, users, cfg->auth_method, cfg);
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    json_t *aq = json_object_get(v, "auth_query");
    if (aq) {
        size_t m = path_key(L, "auth_query");
        int rc = check_object(L, aq, "{\"upstream\": NAME, \"query\": SQL}");
        json_t *dummy;
        if (rc == 0) rc = check_keys(L, aq, auth_query_keys);
        if (rc == 0) rc = require_key(L, aq, "upstream", &dummy);
        if (rc == 0) rc = opt_string(L, aq, "upstream", PLAIN, &cfg->auth_query_upstream);
        if (rc == 0) rc = opt_string(L, aq, "query", PLAIN, &cfg->auth_query);
        if (rc == 0 && !cfg_find_upstream(cfg, cfg->auth_query_upstream)) {
            size_t m2 = path_key(L, "upstream");
            rc = fail(L, "no upstream named \"%s\" in \"upstreams\"", cfg->auth_query_upstream);
            path_pop(L, m2);
        }
        path_pop(L, m);
        if (rc < 0) return -1;
        if (!cfg->auth_query) cfg->auth_query = xstrdup(DEFAULT_AUTH_QUERY);
    }
    if (opt_string(L, v, "plugin", PLAIN, &cfg->auth_plugin) < 0) return -1;
    if (cfg->auth_plugin && cfg->auth_method != AUTH_PASSWORD) {
        /* the hook needs the password itself, which only cleartext gives */
        size_t m = path_key(L, "plugin");
        int rc = fail(L, "a plugin checks cleartext passwords: use \"method\": \"password\" "
                         "(with TLS), not \"%s\"", auth_methods[method]);
        path_pop(L, m);
        return rc;
    }
    if (cfg->auth_method != AUTH_TRUST && cfg->n_users == 0 && !cfg->auth_query_upstream &&
        !cfg->auth_plugin)
        return fail(L, "method \"%s\" needs at least one user in \"users\", \"auth_query\" "
                       "or \"plugin\"", auth_methods[method]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* upstreams and plugins: maps from name to object                     */

static const char *const upstream_keys[] = {
    "conninfo", "hosts", "pool_mode", "pool_size", "min_pool_size", "health_check", NULL
};
static const char *const host_keys[] = { "conninfo", "role", NULL };
/* Same order as CfgHostRole. */
static const char *const host_roles[] = { "primary", "replica", NULL };
static const char *const health_check_keys[] = { "interval", "timeout", NULL };
static const char *const pool_modes[] = { "session", "transaction", NULL };
static const char *const plugin_keys[] = { "module", "import", NULL };

static int parse_host(Loader *L, json_t *v, CfgHost *out)
{
    if (check_object(L, v, "a host such as {\"conninfo\": \"host=...\", \"role\": \"replica\"}") < 0)
        return -1;
    if (check_keys(L, v, host_keys) < 0) return -1;
    json_t *dummy;
    if (require_key(L, v, "conninfo", &dummy) < 0) return -1;
    if (opt_string(L, v, "conninfo", SECRET, &out->conninfo) < 0) return -1;
    /* No default role: a replica listed without one would otherwise be
     * taken for a second primary, or the primary for a replica. */
    if (require_key(L, v, "role", &dummy) < 0) return -1;
    int role = HOST_PRIMARY;
    if (opt_choice(L, v, "role", host_roles, &role) < 0) return -1;
    out->role = (CfgHostRole)role;
    return 0;
}

static int parse_hosts(Loader *L, json_t *v, CfgUpstream *out)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(L, "expected a non-empty array of hosts such as [{\"conninfo\": \"host=...\", "
                       "\"role\": \"primary\"}], got %s",
                    json_is_array(v) ? "an empty array" : kind_name(v));
    size_t n = json_array_size(v);
    out->hosts = xcalloc(n, sizeof *out->hosts);
    size_t primary = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t m = path_index(L, i);
        out->n_hosts = i + 1;
        int rc = parse_host(L, json_array_get(v, i), &out->hosts[i]);
        path_pop(L, m);
        if (rc < 0) return -1;
        if (out->hosts[i].role == HOST_REPLICA) {
            out->n_replicas++;
        } else if (primary != SIZE_MAX) {
            /* writes must have exactly one place to go */
            m = path_index(L, i);
            path_key(L, "role");
            fail(L, "expected exactly one host with \"role\": \"primary\", but hosts[%zu] is "
                    "the primary already", primary);
            path_pop(L, m);
            return -1;
        } else {
            primary = i;
        }
    }
    if (primary == SIZE_MAX)
        return fail(L, "expected exactly one host with \"role\": \"primary\", got none (writes "
                       "and transactions need it; for a read-only server, give its conninfo "
                       "as the primary)");
    out->conninfo = out->hosts[primary].conninfo;
    return 0;
}

#define DEFAULT_HEALTH_INTERVAL_MS 5000
#define DEFAULT_HEALTH_TIMEOUT_MS  2000

static int parse_health_check(Loader *L, json_t *v, CfgUpstream *out)
{
    if (check_object(L, v, "health check settings such as {\"interval\": \"5s\", \"timeout\": \"2s\"}") < 0)
        return -1;
    if (check_keys(L, v, health_check_keys) < 0) return -1;
    static const struct { const char *key; long long lo, hi; const char *range; } keys[] = {
        /* below 100ms a probe (a whole backend start) per host would cost
         * the servers more than it tells */
        { "interval", 100, 3600000, "a duration between 100ms and 1h" },
        { "timeout", 10, 600000, "a duration between 10ms and 10min" },
    };
    int *dest[] = { &out->health_interval_ms, &out->health_timeout_ms };
    for (size_t i = 0; i < 2; i++) {
        json_t *x = json_object_get(v, keys[i].key);
        if (!x) continue;
        long long ms = 0;
        size_t m = path_key(L, keys[i].key);
        int rc = read_duration_ms(L, x, keys[i].lo, keys[i].hi, keys[i].range, &ms);
        path_pop(L, m);
        if (rc < 0) return -1;
        *dest[i] = (int)ms;
    }
    return 0;
}

static int parse_upstream(Loader *L, const char *name, json_t *v, CfgUpstream *out)
{
    out->name = xstrdup(name);
    out->pool_mode = POOL_SESSION;
    out->pool_size = DEFAULT_POOL_SIZE;
    if (check_object(L, v, "an upstream such as {\"conninfo\": \"host=... dbname=...\"}") < 0)
        return -1;
    if (check_keys(L, v, upstream_keys) < 0) return -1;
    json_t *hosts = json_object_get(v, "hosts");
    if (hosts && json_object_get(v, "conninfo"))
        return fail(L, "give either \"conninfo\" (one server) or \"hosts\" (a primary and its "
                       "replicas), not both");
    if (hosts) {
        size_t m = path_key(L, "hosts");
        int rc = parse_hosts(L, hosts, out);
        path_pop(L, m);
        if (rc < 0) return -1;
    } else {
        if (!json_object_get(v, "conninfo"))
            return fail(L, "missing required key \"conninfo\" (or \"hosts\")");
        /* The conninfo is checked by libpq when the pool first connects; here
         * it may only be quoted nowhere, as it can hold a password. */
        out->hosts = xcalloc(1, sizeof *out->hosts);
        out->n_hosts = 1;
        out->hosts[0].role = HOST_PRIMARY;
        if (opt_string(L, v, "conninfo", SECRET, &out->hosts[0].conninfo) < 0) return -1;
        out->conninfo = out->hosts[0].conninfo;
    }
    int mode = POOL_SESSION;
    if (opt_choice(L, v, "pool_mode", pool_modes, &mode) < 0) return -1;
    out->pool_mode = mode == 1 ? POOL_TRANSACTION : POOL_SESSION;
    if (opt_int(L, v, "pool_size", 1, MAX_POOL_SIZE, &out->pool_size) < 0) return -1;
    if (opt_int(L, v, "min_pool_size", 0, out->pool_size, &out->min_pool_size) < 0) return -1;
    /* Replicas are only worth sending reads to while they answer, so they
     * are checked by default; a lone primary has nowhere else for its
     * statements to go, so probing it is opt-in (it shows in SHOW
     * riffq.pools). */
    json_t *hc = json_object_get(v, "health_check");
    if (hc || out->n_replicas) {
        out->health_interval_ms = DEFAULT_HEALTH_INTERVAL_MS;
        out->health_timeout_ms = DEFAULT_HEALTH_TIMEOUT_MS;
    }
    if (hc) {
        size_t m = path_key(L, "health_check");
        int rc = parse_health_check(L, hc, out);
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    return 0;
}

static int parse_plugin(Loader *L, const char *name, json_t *v, Config *cfg, CfgPlugin *out)
{
    out->name = xstrdup(name);
    if (check_object(L, v, "a plugin such as {\"module\": \"plugins/demo.py\"}") < 0) return -1;
    if (check_keys(L, v, plugin_keys) < 0) return -1;
    int has_module = json_object_get(v, "module") != NULL;
    int has_import = json_object_get(v, "import") != NULL;
    if (!has_module && !has_import)
        return fail(L, "missing required key \"module\" (a .py file), or \"import\" (a Python "
                       "module name such as \"mypackage.plugin\")");
    if (has_module && has_import)
        return fail(L, "give \"module\" or \"import\", not both");
    if (has_import) {
        if (opt_string(L, v, "import", PLAIN, &out->import) < 0) return -1;
        /* dotted identifiers only: the name goes to importlib as it is */
        int ok = out->import[0] != '\0' && out->import[0] != '.';
        for (const char *c = out->import; ok && *c; c++)
            ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || *c == '.' ||
                 (*c >= '0' && *c <= '9' && c != out->import && c[-1] != '.');
        if (!ok || strstr(out->import, "..") || out->import[strlen(out->import) - 1] == '.') {
            size_t m = path_key(L, "import");
            int rc = fail(L, "expected a Python module name such as \"package.module\", got \"%s\"",
                          out->import);
            path_pop(L, m);
            return rc;
        }
        return 0;
    }
    char *module = NULL;
    if (opt_string(L, v, "module", PLAIN, &module) < 0) return -1;
    /* Existence is the plugin layer's to report, with Python's own words
     * about what went wrong on import. */
    out->module = resolve_path(cfg, module);
    free(module);
    return 0;
}

static int check_map_name(Loader *L, const char *name)
{
    if (*name) return 0;
    return fail(L, "a name must not be empty");
}

static int upstream_entry(Loader *L, const char *name, json_t *v, void *ctx)
{
    Config *cfg = ctx;
    cfg->n_upstreams++;
    if (check_map_name(L, name) < 0) return -1;
    return parse_upstream(L, name, v, &cfg->upstreams[cfg->n_upstreams - 1]);
}

static int parse_upstreams(Loader *L, json_t *v, Config *cfg)
{
    cfg->upstreams = xcalloc(json_is_object(v) ? json_object_size(v) : 0, sizeof *cfg->upstreams);
    return parse_map(L, v, "a map of upstream name to upstream", upstream_entry, cfg);
}

static int plugin_entry(Loader *L, const char *name, json_t *v, void *ctx)
{
    Config *cfg = ctx;
    cfg->n_plugins++;
    if (check_map_name(L, name) < 0) return -1;
    return parse_plugin(L, name, v, cfg, &cfg->plugins[cfg->n_plugins - 1]);
}

static int parse_plugins(Loader *L, json_t *v, Config *cfg)
{
    cfg->plugins = xcalloc(json_is_object(v) ? json_object_size(v) : 0, sizeof *cfg->plugins);
    return parse_map(L, v, "a map of plugin name to plugin", plugin_entry, cfg);
}

/* ------------------------------------------------------------------ */
/* limits                                                              */

static const char *const limits_keys[] = {
    "max_clients", "max_message_size", "auth_timeout", "plugin_workers", NULL
};

static int parse_limits(Loader *L, json_t *v, Config *cfg)
{
    if (check_object(L, v, "limits") < 0) return -1;
    if (check_keys(L, v, limits_keys) < 0) return -1;
    if (opt_int(L, v, "max_clients", 1, MAX_MAX_CLIENTS, &cfg->max_clients) < 0) return -1;
    if (opt_int(L, v, "plugin_workers", 1, 256, &cfg->plugin_workers) < 0) return -1;
    json_t *x;
    long long n = 0;
    if ((x = json_object_get(v, "max_message_size"))) {
        size_t m = path_key(L, "max_message_size");
        int rc = read_size(L, x, MIN_MAX_MESSAGE_SIZE, MAX_MAX_MESSAGE_SIZE,
                           "a size between 1kB and 1GB", &n);
        path_pop(L, m);
        if (rc < 0) return -1;
        cfg->max_message_size = (size_t)n;
    }
    if ((x = json_object_get(v, "auth_timeout"))) {
        size_t m = path_key(L, "auth_timeout");
        int rc = read_duration_ms(L, x, 1, MAX_AUTH_TIMEOUT_MS,
                                  "a duration between 1ms and 1h", &n);
        path_pop(L, m);
        if (rc < 0) return -1;
        cfg->auth_timeout_ms = (int)n;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* routes                                                              */

static const char *const route_keys[] = {
    "name", "match", "to", "message", "sqlstate", "read_from", NULL
};
/* Same order as CfgReadFrom. */
static const char *const read_from_values[] = { "primary", "replica", NULL };
static const char *const match_keys[] = {
    "tables", "schemas", "statement", "user", "database", "application_name", "client",
    "listen", "regex", NULL
};
/* The statement kinds of route.h's StmtKind, as route_kind_name spells them.
 * Kept here rather than called, because config sits below route. */
static const char *const statement_kinds[] = {
    "select", "insert", "update", "delete", "merge", "ddl", "copy", "utility",
    "transaction", "set", "show", "call", "explain", "other", NULL
};

typedef int (*ItemCheck)(Loader *L, const Config *cfg, const char *item);

static int check_statement_kind(Loader *L, const Config *cfg, const char *item)
{
    (void)cfg;
    if (is_known(item, statement_kinds)) return 0;
    char *q = quoted(item);
    char *hint = hint_for(item, statement_kinds, count_strs(statement_kinds), "expected one of");
    fail(L, "unknown statement kind %s%s", q, hint);
    free(q);
    free(hint);
    return -1;
}

/* A bare address means that one host, as in pg_hba.conf's CIDR column. */
static int check_cidr(Loader *L, const Config *cfg, const char *item)
{
    (void)cfg;
    const char *slash = strchr(item, '/');
    char *addr = slash ? xstrndup(item, (size_t)(slash - item)) : xstrdup(item);
    unsigned char bin[sizeof(struct in6_addr)];
    int max_prefix = 0;
    if (inet_pton(AF_INET, addr, bin) == 1) max_prefix = 32;
    else if (inet_pton(AF_INET6, addr, bin) == 1) max_prefix = 128;
    free(addr);
    long long prefix = 0;
    int ok = max_prefix > 0 &&
             (!slash || (slash[1] >= '0' && slash[1] <= '9' &&
                         parse_decimal(slash + 1, &prefix) == 0 && prefix <= max_prefix));
    if (ok) return 0;
    char *q = quoted(item);
    fail(L, "expected an IPv4 or IPv6 address or CIDR such as \"10.0.0.0/8\" or "
            "\"::1/128\", got %s", q);
    free(q);
    return -1;
}

static int check_listener_ref(Loader *L, const Config *cfg, const char *item)
{
    for (size_t i = 0; i < cfg->n_listen; i++)
        if (strcmp(cfg->listen[i].name, item) == 0) return 0;
    const char **names = xcalloc(cfg->n_listen, sizeof *names);
    for (size_t i = 0; i < cfg->n_listen; i++) names[i] = cfg->listen[i].name;
    char *q = quoted(item);
    char *hint = hint_for(item, names, cfg->n_listen, "listeners are");
    fail(L, "no listener %s%s", q, hint);
    free(q);
    free(hint);
    free(names);
    return -1;
}

static int read_str_list(Loader *L, json_t *v, const Config *cfg, ItemCheck check,
                         CfgStrList *out)
{
    if (!json_is_array(v)) return fail(L, "expected an array of strings, got %s", kind_name(v));
    size_t n = json_array_size(v);
    /* [] would read as "matches nothing" but means "unconstrained" here;
     * refuse it rather than guess which the author meant. */
    if (n == 0)
        return fail(L, "expected a non-empty array of strings (leave the key out to match "
                       "anything)");
    out->items = xcalloc(n, sizeof *out->items);
    for (size_t i = 0; i < n; i++) {
        size_t m = path_index(L, i);
        out->n = i + 1;
        int rc = read_string(L, json_array_get(v, i), PLAIN, &out->items[i]);
        if (rc == 0 && check) rc = check(L, cfg, out->items[i]);
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    return 0;
}

static CfgStrList *match_list(CfgRoute *r, const char *key)
{
    if (strcmp(key, "tables") == 0) return &r->tables;
    if (strcmp(key, "schemas") == 0) return &r->schemas;
    if (strcmp(key, "statement") == 0) return &r->statement;
    if (strcmp(key, "user") == 0) return &r->user;
    if (strcmp(key, "database") == 0) return &r->database;
    if (strcmp(key, "application_name") == 0) return &r->application_name;
    if (strcmp(key, "client") == 0) return &r->client;
    if (strcmp(key, "listen") == 0) return &r->listen;
    return NULL;
}

static ItemCheck match_check(const char *key)
{
    if (strcmp(key, "statement") == 0) return check_statement_kind;
    if (strcmp(key, "client") == 0) return check_cidr;
    if (strcmp(key, "listen") == 0) return check_listener_ref;
    return NULL;
}

/* The router compiles the regex itself; compiling here only proves it can,
 * so a bad pattern fails the load instead of every matching statement. */
static int check_regex(Loader *L, const char *pattern)
{
    regex_t re;
    int rc = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc == 0) {
        regfree(&re);
        return 0;
    }
    char msg[256];
    regerror(rc, &re, msg, sizeof msg);
    return fail(L, "invalid regular expression: %s", msg);
}

static int parse_match(Loader *L, json_t *v, const Config *cfg, CfgRoute *r)
{
    if (check_object(L, v, "match conditions") < 0) return -1;
    if (check_keys(L, v, match_keys) < 0) return -1;
    for (size_t k = 0; match_keys[k]; k++) {
        const char *key = match_keys[k];
        json_t *x = json_object_get(v, key);
        if (!x) continue;
        size_t m = path_key(L, key);
        int rc;
        if (strcmp(key, "regex") == 0) {
            rc = read_string(L, x, PLAIN, &r->regex);
            if (rc == 0) rc = check_regex(L, r->regex);
        } else {
            rc = read_str_list(L, x, cfg, match_check(key), match_list(r, key));
        }
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    return 0;
}

static int unknown_target_name(Loader *L, const char *kind, const char *name,
                               const char *const *names, size_t n)
{
    char *q = quoted(name);
    char *what = xasprintf("%ss defined", kind);
    char *hint = n ? hint_for(name, names, n, what)
                   : xasprintf(" (no %ss are defined)", kind);
    fail(L, "no %s named %s%s", kind, q, hint);
    free(q);
    free(what);
    free(hint);
    return -1;
}

static int parse_target(Loader *L, const Config *cfg, const char *to, CfgRoute *r)
{
    if (strcmp(to, "local") == 0) { r->target = TARGET_LOCAL; return 0; }
    if (strcmp(to, "reject") == 0) { r->target = TARGET_REJECT; return 0; }
    if (strcmp(to, "catalog") == 0) { r->target = TARGET_CATALOG; return 0; }
    if (strncmp(to, "upstream:", 9) == 0 && to[9]) {
        const char *name = to + 9;
        r->target = TARGET_UPSTREAM;
        r->target_name = xstrdup(name);
        if (cfg_find_upstream(cfg, name)) return 0;
        const char **names = xcalloc(cfg->n_upstreams, sizeof *names);
        for (size_t i = 0; i < cfg->n_upstreams; i++) names[i] = cfg->upstreams[i].name;
        unknown_target_name(L, "upstream", name, names, cfg->n_upstreams);
        free(names);
        return -1;
    }
    if (strncmp(to, "plugin:", 7) == 0 && to[7]) {
        const char *name = to + 7;
        r->target = TARGET_PLUGIN;
        r->target_name = xstrdup(name);
        if (cfg_find_plugin(cfg, name)) return 0;
        const char **names = xcalloc(cfg->n_plugins, sizeof *names);
        for (size_t i = 0; i < cfg->n_plugins; i++) names[i] = cfg->plugins[i].name;
        unknown_target_name(L, "plugin", name, names, cfg->n_plugins);
        free(names);
        return -1;
    }
    /* Suggest on the part before the colon, where typos live ("upstrem:main"). */
    static const char *const kinds[] = { "upstream", "plugin", "local", "reject", "catalog", NULL };
    const char *colon = strchr(to, ':');
    char *head = colon ? xstrndup(to, (size_t)(colon - to)) : xstrdup(to);
    const char *s = is_known(head, kinds) ? head : suggest(head, kinds, count_strs(kinds));
    char *hint;
    if (s && (strcmp(s, "upstream") == 0 || strcmp(s, "plugin") == 0))
        hint = xasprintf(" (did you mean \"%s:%s\"?)", s, colon && colon[1] ? colon + 1 : "NAME");
    else if (s)
        hint = xasprintf(" (did you mean \"%s\"?)", s);
    else
        hint = xstrdup("");
    char *q = quoted(to);
    fail(L, "expected \"upstream:NAME\", \"plugin:NAME\", \"local\", \"reject\" or "
            "\"catalog\", got %s%s", q, hint);
    free(q);
    free(hint);
    free(head);
    return -1;
}

static int check_sqlstate(Loader *L, const char *s)
{
    int ok = strlen(s) == 5 && strspn(s, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5;
    if (!ok) {
        char *q = quoted(s);
        fail(L, "expected a SQLSTATE of five characters 0-9 or A-Z, such as \"42501\", got %s",
             q);
        free(q);
        return -1;
    }
    /* Classes 00, 01 and 02 are success, warning and no-data: a client
     * would not see the statement as refused. */
    if (s[0] == '0' && s[1] >= '0' && s[1] <= '2')
        return fail(L, "expected an error SQLSTATE, got class %.2s (success, warning or no "
                       "data)", s);
    return 0;
}

/* "read_from": "replica" sends the route's plain reads to replicas, so it
 * needs an upstream that has some. */
static int parse_read_from(Loader *L, json_t *v, const Config *cfg, CfgRoute *r)
{
    size_t m = path_key(L, "read_from");
    int rf = READ_FROM_PRIMARY;
    int rc = read_choice(L, json_object_get(v, "read_from"), read_from_values, &rf);
    if (rc == 0 && r->target != TARGET_UPSTREAM)
        rc = fail(L, "applies only to routes with \"to\": \"upstream:NAME\"");
    if (rc == 0 && rf == READ_FROM_REPLICA) {
        const CfgUpstream *u = cfg_find_upstream(cfg, r->target_name);
        if (u && u->n_replicas == 0)
            rc = fail(L, "upstream \"%s\" has no host with \"role\": \"replica\"", u->name);
    }
    path_pop(L, m);
    if (rc == 0) r->read_from = (CfgReadFrom)rf;
    return rc;
}

static int parse_route(Loader *L, json_t *v, const Config *cfg, size_t index, CfgRoute *r)
{
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", DEFAULT_SQLSTATE);
    if (check_object(L, v, "a route such as {\"match\": {...}, \"to\": \"upstream:main\"}") < 0)
        return -1;
    if (check_keys(L, v, route_keys) < 0) return -1;
    if (opt_string(L, v, "name", PLAIN, &r->name) < 0) return -1;
    if (!r->name) r->name = xasprintf("route[%zu]", index);
    json_t *x;
    if ((x = json_object_get(v, "match"))) {
        r->has_match = 1;
        size_t m = path_key(L, "match");
        int rc = parse_match(L, x, cfg, r);
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    if (require_key(L, v, "to", &x) < 0) return -1;
    char *to = NULL;
    size_t m = path_key(L, "to");
    int rc = read_string(L, x, PLAIN, &to);
    if (rc == 0) rc = parse_target(L, cfg, to, r);
    path_pop(L, m);
    free(to);
    if (rc < 0) return -1;
    static const char *const reject_only[] = { "message", "sqlstate", NULL };
    for (size_t k = 0; reject_only[k]; k++)
        if (r->target != TARGET_REJECT && json_object_get(v, reject_only[k]))
            return fail(L, "\"%s\" applies only to routes with \"to\": \"reject\"",
                        reject_only[k]);
    if (opt_string(L, v, "message", PLAIN, &r->message) < 0) return -1;
    if (json_object_get(v, "read_from") && parse_read_from(L, v, cfg, r) < 0) return -1;
    char *sqlstate = NULL;
    if (opt_string(L, v, "sqlstate", PLAIN, &sqlstate) < 0) return -1;
    if (sqlstate) {
        m = path_key(L, "sqlstate");
        rc = check_sqlstate(L, sqlstate);
        path_pop(L, m);
        if (rc == 0) memcpy(r->sqlstate, sqlstate, 6);
        free(sqlstate);
        if (rc < 0) return -1;
    }
    return 0;
}

/* A plugin route without conditions claims the tables its plugin registers
 * (decided when the plugin is loaded), so it does not take everything. */
static int matches_everything(const CfgRoute *r)
{
    return (r->target != TARGET_PLUGIN || r->has_match) && !r->tables.n && !r->schemas.n && !r->statement.n && !r->user.n && !r->database.n &&
           !r->application_name.n && !r->client.n && !r->listen.n && !r->regex;
}

static int parse_routes(Loader *L, json_t *v, Config *cfg)
{
    if (!json_is_array(v)) return fail(L, "expected an array of routes, got %s", kind_name(v));
    size_t n = json_array_size(v);
    cfg->routes = xcalloc(n ? n : 1, sizeof *cfg->routes);
    for (size_t i = 0; i < n; i++) {
        size_t m = path_index(L, i);
        cfg->n_routes = i + 1;
        CfgRoute *r = &cfg->routes[i];
        int rc = parse_route(L, json_array_get(v, i), cfg, i, r);
        for (size_t j = 0; rc == 0 && j < i; j++) {
            if (strcmp(cfg->routes[j].name, r->name) == 0) {
                size_t m2 = path_key(L, "name");
                rc = fail(L, "duplicate route name \"%s\" (also routes[%zu])", r->name, j);
                path_pop(L, m2);
            }
        }
        path_pop(L, m);
        if (rc < 0) return -1;
    }
    /* Routes are tried in order, so one that takes everything hides all
     * that follow it: almost certainly a match condition left out. */
    for (size_t i = 0; i + 1 < n; i++) {
        if (!matches_everything(&cfg->routes[i])) continue;
        size_t m = path_index(L, i);
        fail(L, "route \"%s\" has no match conditions and takes every statement, so "
                "routes[%zu] (\"%s\") and any after it can never be chosen; give it a "
                "\"match\" or move it last", cfg->routes[i].name, i + 1,
             cfg->routes[i + 1].name);
        path_pop(L, m);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The top level.                                                      */

static const char *const top_keys[] = {
    "listen", "tls", "auth", "upstreams", "plugins", "routes", "limits",
    "server_version", "log_level", "unknown_settings", NULL
};
static const char *const log_levels[] = { "debug", "info", "warning", "error", NULL };

/* Run parse on obj[key] with the path extended, if the key is present. */
static int with_key(Loader *L, json_t *obj, const char *key,
                    int (*parse)(Loader *, json_t *, Config *), Config *cfg, int *present)
{
    json_t *v = json_object_get(obj, key);
    if (present) *present = v != NULL;
    if (!v) return 0;
    size_t m = path_key(L, key);
    int rc = parse(L, v, cfg);
    path_pop(L, m);
    return rc;
}

static int parse_server_version(Loader *L, json_t *v, Config *cfg)
{
    if (read_string(L, v, PLAIN, &cfg->server_version) < 0) return -1;
    /* Drivers (JDBC, psycopg, node-postgres) parse the leading number to
     * pick features; anything else breaks them in obscure ways. */
    if (cfg->server_version[0] < '0' || cfg->server_version[0] > '9')
        return fail(L, "expected a version that starts with a number, such as \"15.8 (riffq)\"");
    return 0;
}

static int parse_unknown_settings(Loader *L, json_t *v, Config *cfg)
{
    static const char *const words[] = { "reject", "accept", NULL };
    int i;
    if (read_choice(L, v, words, &i) < 0) return -1;
    cfg->accept_unknown_settings = i == 1;
    return 0;
}

static int parse_log_level(Loader *L, json_t *v, Config *cfg)
{
    int i;
    if (read_choice(L, v, log_levels, &i) < 0) return -1;
    LogLevel lvl;
    if (log_parse_level(log_levels[i], &lvl) < 0) return fail(L, "log level not supported");
    free(cfg->log_level);
    cfg->log_level = xstrdup(log_levels[i]);
    return 0;
}

static int parse_root(Loader *L, json_t *root, Config *cfg)
{
    if (!json_is_object(root))
        return fail(L, "expected a JSON object at the top level, got %s", kind_name(root));
    if (check_keys(L, root, top_keys) < 0) return -1;
    int has_listen;
    /* Order matters: routes refer to listeners, upstreams and plugins. */
    if (with_key(L, root, "listen", parse_listen, cfg, &has_listen) < 0) return -1;
    if (!has_listen) default_listen(cfg);
    if (with_key(L, root, "tls", parse_tls, cfg, NULL) < 0) return -1;
    if (with_key(L, root, "upstreams", parse_upstreams, cfg, NULL) < 0) return -1;
    /* after upstreams: auth_query names one */
    if (with_key(L, root, "auth", parse_auth, cfg, NULL) < 0) return -1;
    if (with_key(L, root, "plugins", parse_plugins, cfg, NULL) < 0) return -1;
    if (cfg->auth_plugin && !cfg_find_plugin(cfg, cfg->auth_plugin)) {
        size_t m = path_key(L, "auth");
        size_t m2 = path_key(L, "plugin");
        fail(L, "no plugin named \"%s\" in \"plugins\"", cfg->auth_plugin);
        path_pop(L, m2);
        path_pop(L, m);
        return -1;
    }
    if (with_key(L, root, "limits", parse_limits, cfg, NULL) < 0) return -1;
    if (with_key(L, root, "server_version", parse_server_version, cfg, NULL) < 0) return -1;
    if (with_key(L, root, "log_level", parse_log_level, cfg, NULL) < 0) return -1;
    if (with_key(L, root, "unknown_settings", parse_unknown_settings, cfg, NULL) < 0) return -1;
    if (with_key(L, root, "routes", parse_routes, cfg, NULL) < 0) return -1;
    return 0;
}

static Config *config_new(const char *name)
{
    Config *cfg = xcalloc(1, sizeof *cfg);
    cfg->path = xstrdup(name);
    cfg->dir = dir_of(name);
    cfg->tls_mode = TLS_DISABLE;
    cfg->auth_method = AUTH_TRUST;
    cfg->max_clients = DEFAULT_MAX_CLIENTS;
    cfg->plugin_workers = 2;
    cfg->max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
    cfg->auth_timeout_ms = DEFAULT_AUTH_TIMEOUT_MS;
    cfg->server_version = xstrdup("15.8 (riffq " RIFFQ_VERSION ")");
    cfg->log_level = xstrdup("info");
    return cfg;
}

static Config *load_buffer(const char *text, size_t len, const char *name, char **errmsg)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        char *msg = xasprintf("%s:%d:%d: %s", name, je.line, je.column, je.text);
        if (errmsg) *errmsg = msg;
        else free(msg);
        return NULL;
    }
    Config *cfg = config_new(name);
    Loader L = { .file = name, .cfg = cfg };
    buf_init(&L.path);
    int rc = parse_root(&L, root, cfg);
    json_decref(root);
    buf_free(&L.path);
    if (rc < 0) {
        cfg_free(cfg);
        if (errmsg) *errmsg = L.err;
        else free(L.err);
        return NULL;
    }
    return cfg;
}

Config *cfg_load_string(const char *json, const char *name, char **errmsg)
{
    return load_buffer(json, strlen(json), name ? name : "<string>", errmsg);
}

Config *cfg_load(const char *path, char **errmsg)
{
    FILE *f = fopen(path, "rb");
    Buf text;
    buf_init(&text);
    int e = 0;
    if (f) {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_append(&text, chunk, n);
        if (ferror(f)) e = errno ? errno : EIO;
        fclose(f);
    } else {
        e = errno;
    }
    if (e) {
        buf_free(&text);
        char *msg = xasprintf("%s: cannot read: %s", path, strerror(e));
        if (errmsg) *errmsg = msg;
        else free(msg);
        return NULL;
    }
    Config *cfg = load_buffer(text.data ? text.data : "", text.len, path, errmsg);
    buf_free(&text);
    return cfg;
}

static void free_list(CfgStrList *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
}

void cfg_free(Config *cfg)
{
    if (!cfg) return;
    free(cfg->path);
    free(cfg->dir);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        free(cfg->listen[i].host);
        free(cfg->listen[i].unix_path);
        free(cfg->listen[i].name);
    }
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->auth_query_upstream);
    free(cfg->auth_query);
    free(cfg->auth_plugin);
    for (size_t i = 0; i < cfg->n_users; i++) {
        free(cfg->users[i].name);
        if (cfg->users[i].secret) {
            /* Don't leave passwords lying in freed heap memory. */
            explicit_bzero(cfg->users[i].secret, strlen(cfg->users[i].secret));
            free(cfg->users[i].secret);
        }
    }
    free(cfg->users);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        CfgUpstream *u = &cfg->upstreams[i];
        free(u->name);
        /* u->conninfo points into hosts[] */
        for (size_t h = 0; h < u->n_hosts; h++) {
            if (u->hosts[h].conninfo) {
                explicit_bzero(u->hosts[h].conninfo, strlen(u->hosts[h].conninfo));
                free(u->hosts[h].conninfo);
            }
        }
        free(u->hosts);
    }
    free(cfg->upstreams);
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        free(cfg->plugins[i].name);
        free(cfg->plugins[i].module);
        free(cfg->plugins[i].import);
    }
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        CfgRoute *r = &cfg->routes[i];
        free(r->name);
        free_list(&r->tables);
        free_list(&r->schemas);
        free_list(&r->statement);
        free_list(&r->user);
        free_list(&r->database);
        free_list(&r->application_name);
        free_list(&r->client);
        free_list(&r->listen);
        free(r->regex);
        free(r->target_name);
        free(r->message);
    }
    free(cfg->routes);
    free(cfg->server_version);
    free(cfg->log_level);
    free(cfg);
}

const CfgUser *cfg_find_user(const Config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_users; i++)
        if (strcmp(cfg->users[i].name, name) == 0) return &cfg->users[i];
    return NULL;
}

const CfgUpstream *cfg_find_upstream(const Config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0) return &cfg->upstreams[i];
    return NULL;
}

const CfgPlugin *cfg_find_plugin(const Config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_plugins; i++)
        if (strcmp(cfg->plugins[i].name, name) == 0) return &cfg->plugins[i];
    return NULL;
}
