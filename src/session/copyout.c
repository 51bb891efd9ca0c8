/*
 * COPY ... TO STDOUT over plugin tables: psql's \copy, pg_dump-like tools
 * and data loaders read a plugin's result as COPY text or CSV.
 *
 * The plugin runs the SELECT inside the COPY (or SELECT cols FROM table
 * for the table form) exactly like a query, with text results; its DataRow
 * messages are turned into CopyData lines here, on the loop, as they are
 * fetched, so the stream keeps the handler's backpressure.  Quoting and
 * escaping follow Postgres' COPY TO: text format escapes backslash, the
 * delimiter and control characters and writes NULL as \N; CSV quotes a
 * value holding the delimiter, the quote character, CR or LF, or equal to
 * the NULL string, and doubles quotes.
 */
#include <string.h>
#include <stdio.h>
#include <strings.h>

#include "riffq/route.h"
#include "riffq/wire.h"
#include "session/session_int.h"

struct CopyOut {
    int csv;
    int header;
    char delim, quote, escape;
    char *null_str;             /* owned */
    int force_all;              /* FORCE_QUOTE * */
    char **force;               /* FORCE_QUOTE (col, ...), owned */
    size_t n_force;
    uint8_t *forced;            /* per result column, once the columns are known */
    size_t ncols;
    uint64_t rows;
};

void copyout_free(CopyOut *co)
{
    if (!co) return;
    free(co->null_str);
    for (size_t i = 0; i < co->n_force; i++) free(co->force[i]);
    free(co->force);
    free(co->forced);
    free(co);
}

static const char *def_string(json_t *def)
{
    json_t *arg = json_object_get(def, "arg");
    json_t *s = arg ? json_object_get(arg, "String") : NULL;
    return s ? json_string_value(json_object_get(s, "sval")) : NULL;
}

/* A boolean option: no argument, Boolean, or true/false/on/off/1/0. */
static int def_bool(json_t *def, int *out)
{
    json_t *arg = json_object_get(def, "arg");
    if (!arg) {
        *out = 1;
        return 0;
    }
    json_t *b = json_object_get(arg, "Boolean");
    if (b) {
        *out = json_is_true(json_object_get(b, "boolval"));
        return 0;
    }
    json_t *i = json_object_get(arg, "Integer");
    if (i) {
        json_int_t v = json_integer_value(json_object_get(i, "ival"));
        if (v != 0 && v != 1) return -1;
        *out = (int)v;
        return 0;
    }
    const char *s = def_string(def);
    if (!s) return -1;
    if (!strcasecmp(s, "true") || !strcasecmp(s, "on")) *out = 1;
    else if (!strcasecmp(s, "false") || !strcasecmp(s, "off")) *out = 0;
    else return -1;
    return 0;
}

static int one_char(json_t *def, const char *what, char *out, RqError *err)
{
    const char *s = def_string(def);
    if (!s || strlen(s) != 1 || (unsigned char)s[0] >= 0x80) {
        rq_error_set(err, "0A000", "COPY %s must be a single one-byte character", what);
        return -1;
    }
    *out = s[0];
    return 0;
}

static int parse_options(CopyOut *co, json_t *opts, RqError *err)
{
    const char *format = "text";
    size_t i;
    json_t *o;
    json_array_foreach(opts, i, o) {
        json_t *def = json_object_get(o, "DefElem");
        const char *name = def ? json_string_value(json_object_get(def, "defname")) : NULL;
        if (!name) continue;
        if (!strcmp(name, "format")) {
            format = def_string(def);
            if (!format) format = "";
        } else if (!strcmp(name, "header")) {
            if (def_bool(def, &co->header) < 0) {
                rq_error_set(err, "22023", "header requires a Boolean value");
                return -1;
            }
        } else if (!strcmp(name, "delimiter")) {
            if (one_char(def, "delimiter", &co->delim, err) < 0) return -1;
        } else if (!strcmp(name, "quote")) {
            if (one_char(def, "quote", &co->quote, err) < 0) return -1;
        } else if (!strcmp(name, "escape")) {
            if (one_char(def, "escape", &co->escape, err) < 0) return -1;
        } else if (!strcmp(name, "null")) {
            const char *s = def_string(def);
            free(co->null_str);
            co->null_str = xstrdup(s ? s : "");
        } else if (!strcmp(name, "force_quote")) {
            json_t *arg = json_object_get(def, "arg");
            if (arg && json_object_get(arg, "A_Star")) {
                co->force_all = 1;
            } else if (arg && json_object_get(arg, "List")) {
                json_t *items = json_object_get(json_object_get(arg, "List"), "items");
                size_t k;
                json_t *it;
                json_array_foreach(items, k, it) {
                    const char *col = json_string_value(json_object_get(json_object_get(it, "String"), "sval"));
                    if (!col) continue;
                    co->force = xrealloc(co->force, (co->n_force + 1) * sizeof *co->force);
                    co->force[co->n_force++] = xstrdup(col);
                }
            }
        } else if (!strcmp(name, "encoding")) {
            const char *s = def_string(def);
            if (!s || (strcasecmp(s, "utf8") && strcasecmp(s, "utf-8") && strcasecmp(s, "unicode"))) {
                rq_error_set(err, "0A000", "COPY from a plugin table writes UTF8 only");
                return -1;
            }
        } else {
            rq_error_set(err, "0A000", "COPY option \"%s\" is not supported with COPY TO", name);
            return -1;
        }
    }
    if (!strcasecmp(format, "csv")) {
        co->csv = 1;
    } else if (!strcasecmp(format, "binary")) {
        rq_error_set(err, "0A000", "COPY of a plugin table in binary format is not supported");
        rq_error_hint(err, "Use FORMAT text or FORMAT csv.");
        return -1;
    } else if (strcasecmp(format, "text")) {
        rq_error_set(err, "22023", "COPY format \"%s\" not recognized", format);
        return -1;
    }
    if (!co->delim) co->delim = co->csv ? ',' : '\t';
    if (!co->quote) co->quote = '"';
    if (!co->escape) co->escape = co->quote;
    if (!co->null_str) co->null_str = xstrdup(co->csv ? "" : "\\N");
    if (!co->csv && (co->n_force || co->force_all)) {
        rq_error_set(err, "0A000", "COPY force quote available only in CSV mode");
        return -1;
    }
    if (co->delim == '\r' || co->delim == '\n' || (!co->csv && co->delim == '\\')) {
        rq_error_set(err, "22023", "COPY delimiter cannot be newline, carriage return or backslash");
        return -1;
    }
    if (co->csv && co->delim == co->quote) {
        rq_error_set(err, "22023", "COPY delimiter and quote must be different");
        return -1;
    }
    return 0;
}

static int plain_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '$')) return 0;
    return 1;
}

static void append_ident(Buf *b, const char *s)
{
    if (plain_ident(s)) {
        buf_append_str(b, s);
        return;
    }
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"') buf_append(b, "\"", 1);
        buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

/* Skip whitespace and comments from p. */
static const char *skip_space(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f') p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 0;
            do {
                if (p[0] == '/' && p[1] == '*') depth++, p += 2;
                else if (p[0] == '*' && p[1] == '/') depth--, p += 2;
                else p++;
            } while (*p && depth > 0);
        } else {
            return p;
        }
    }
}

/* The text inside COPY ( ... ): from after '(' to its matching ')',
 * stepping over quotes, dollar quotes and comments.  NULL if malformed. */
static char *inner_query(const char *sql)
{
    const char *p = skip_space(sql);
    if (strncasecmp(p, "copy", 4) != 0) return NULL;
    p = skip_space(p + 4);
    if (*p != '(') return NULL;
    const char *start = ++p;
    int depth = 1;
    while (*p) {
        if (*p == '\'' || *p == '"') {
            char q = *p++;
            while (*p && !(*p == q && p[1] != q)) p += (*p == q) ? 2 : 1;
            if (*p) p++;
        } else if (*p == '$') {
            const char *t = p + 1;
            while ((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') || *t == '_' ||
                   (*t >= '0' && *t <= '9' && t > p + 1))
                t++;
            if (*t == '$') {
                size_t tl = (size_t)(t - p + 1);
                const char *end = t + 1;
                while (*end && strncmp(end, p, tl) != 0) end++;
                p = *end ? end + tl : end;
            } else {
                p++;
            }
        } else if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')) {
            p = skip_space(p);
        } else if (*p == '(') {
            depth++, p++;
        } else if (*p == ')') {
            if (--depth == 0) {
                size_t n = (size_t)(p - start);
                char *out = xmalloc(n + 1);
                memcpy(out, start, n);
                out[n] = '\0';
                return out;
            }
            p++;
        } else {
            p++;
        }
    }
    return NULL;
}

int copyout_prepare(const RouteStmt *st, char **inner_sql, CopyOut **out, RqError *err)
{
    *out = NULL;
    *inner_sql = NULL;
    json_t *copy = st->node;
    if (json_is_true(json_object_get(copy, "is_from"))) {
        rq_error_set(err, "0A000", "COPY FROM into a plugin table is not supported");
        rq_error_hint(err, "Send the rows as INSERT statements, which the plugin's handler receives.");
        return -1;
    }
    if (json_object_get(copy, "filename") || json_is_true(json_object_get(copy, "is_program"))) {
        rq_error_set(err, "0A000", "COPY of a plugin table writes only to STDOUT");
        rq_error_hint(err, "Use psql's \\copy to write a file on the client.");
        return -1;
    }
    CopyOut *co = xcalloc(1, sizeof *co);
    if (parse_options(co, json_object_get(copy, "options"), err) < 0) {
        copyout_free(co);
        return -1;
    }
    json_t *rel = json_object_get(copy, "relation");
    if (json_object_get(copy, "query")) {
        *inner_sql = inner_query(st->text);
        if (!*inner_sql) {
            rq_error_set(err, "42601", "cannot find the query of this COPY statement");
            copyout_free(co);
            return -1;
        }
    } else if (rel) {
        Buf b;
        buf_init(&b);
        buf_append_str(&b, "SELECT ");
        json_t *cols = json_object_get(copy, "attlist");
        if (json_array_size(cols) == 0) {
            buf_append_str(&b, "*");
        } else {
            size_t i;
            json_t *c;
            json_array_foreach(cols, i, c) {
                if (i) buf_append_str(&b, ", ");
                append_ident(&b, json_string_value(json_object_get(json_object_get(c, "String"), "sval")));
            }
        }
        buf_append_str(&b, " FROM ");
        const char *schema = json_string_value(json_object_get(rel, "schemaname"));
        if (schema) {
            append_ident(&b, schema);
            buf_append(&b, ".", 1);
        }
        append_ident(&b, json_string_value(json_object_get(rel, "relname")));
        buf_append(&b, "", 1);
        *inner_sql = b.data;
    } else {
        rq_error_set(err, "42601", "COPY needs a table or a query");
        copyout_free(co);
        return -1;
    }
    *out = co;
    return 0;
}

/* One value as COPY text or CSV (the DataRow's text-format bytes). */
static void put_value(CopyOut *co, const uint8_t *v, size_t n, int col, Buf *out)
{
    if (!co->csv) {
        size_t run = 0;
        for (size_t i = 0; i < n; i++) {
            char c = (char)v[i], e = 0;
            switch (c) {
            case '\\': e = '\\'; break;
            case '\n': e = 'n'; break;
            case '\r': e = 'r'; break;
            case '\t': e = 't'; break;
            case '\b': e = 'b'; break;
            case '\f': e = 'f'; break;
            case '\v': e = 'v'; break;
            default: if (c == co->delim) e = c;
            }
            if (!e) continue;
            buf_append(out, v + run, i - run);
            char pair[2] = { '\\', e };
            buf_append(out, pair, 2);
            run = i + 1;
        }
        buf_append(out, v + run, n - run);
        return;
    }
    int quote = (co->forced && co->forced[col]) ||
                (n == strlen(co->null_str) && memcmp(v, co->null_str, n) == 0) ||
                /* a lone \. would end the data */
                (co->ncols == 1 && n == 2 && v[0] == '\\' && v[1] == '.');
    for (size_t i = 0; i < n && !quote; i++)
        quote = v[i] == (uint8_t)co->delim || v[i] == (uint8_t)co->quote || v[i] == '\n' || v[i] == '\r';
    if (!quote) {
        buf_append(out, v, n);
        return;
    }
    buf_append(out, &co->quote, 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] != (uint8_t)co->quote && v[i] != (uint8_t)co->escape) continue;
        buf_append(out, v + run, i - run);
        buf_append(out, &co->escape, 1);
        run = i;
    }
    buf_append(out, v + run, n - run);
    buf_append(out, &co->quote, 1);
}

static size_t copydata_begin(Buf *out)
{
    buf_append(out, "d", 1);
    size_t at = out->len;
    buf_append_u32(out, 0);
    return at;
}

static void copydata_end(Buf *out, size_t at)
{
    uint32_t n = (uint32_t)(out->len - at);
    uint8_t *p = (uint8_t *)out->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

void copyout_begin(CopyOut *co, const RqResult *cols, Buf *out)
{
    co->ncols = cols->n_cols;
    co->forced = xcalloc(cols->n_cols + 1, 1);
    for (size_t i = 0; i < cols->n_cols; i++) {
        co->forced[i] = (uint8_t)co->force_all;
        for (size_t k = 0; k < co->n_force; k++)
            if (!strcmp(co->force[k], cols->cols[i].name)) co->forced[i] = 1;
    }
    /* CopyOutResponse: text, every column text */
    buf_append(out, "H", 1);
    buf_append_u32(out, (uint32_t)(4 + 1 + 2 + 2 * cols->n_cols));
    buf_append(out, "", 1);
    buf_append_u16(out, (uint16_t)cols->n_cols);
    for (size_t i = 0; i < cols->n_cols; i++) buf_append_u16(out, 0);
    if (co->header) {
        size_t at = copydata_begin(out);
        for (size_t i = 0; i < cols->n_cols; i++) {
            if (i) buf_append(out, &co->delim, 1);
            const char *name = cols->cols[i].name;
            uint8_t saved = co->forced[i];
            co->forced[i] = 0;      /* FORCE_QUOTE is for values, not the header */
            put_value(co, (const uint8_t *)name, strlen(name), (int)i, out);
            co->forced[i] = saved;
        }
        buf_append(out, "\n", 1);
        copydata_end(out, at);
    }
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void copyout_rows(CopyOut *co, const uint8_t *data, size_t len, Buf *out)
{
    /* the messages come from the plugin encoder; the walk still checks every
     * length, so a broken batch ends the conversion instead of overreading */
    size_t pos = 0;
    while (pos + 5 <= len) {
        uint32_t mlen = be32(data + pos + 1);
        if (mlen < 4 || mlen > len - pos - 1) break;
        const uint8_t *m = data + pos + 5, *end = data + pos + 1 + mlen;
        pos += 1 + mlen;
        if (mlen < 6) continue;
        uint16_t nf = (uint16_t)(m[0] << 8 | m[1]);
        m += 2;
        size_t at = copydata_begin(out);
        for (uint16_t f = 0; f < nf && m + 4 <= end; f++) {
            if (f) buf_append(out, &co->delim, 1);
            int32_t vl = (int32_t)be32(m);
            m += 4;
            if (vl < 0) {
                buf_append_str(out, co->null_str);
                continue;
            }
            if ((size_t)vl > (size_t)(end - m)) break;
            put_value(co, m, (size_t)vl, f, out);
            m += vl;
        }
        buf_append(out, "\n", 1);
        copydata_end(out, at);
        co->rows++;
    }
}

void copyout_end(CopyOut *co, Buf *out)
{
    wire_simple(out, 'c');
    char tag[40];
    snprintf(tag, sizeof tag, "COPY %llu", (unsigned long long)co->rows);
    wire_command_complete(out, tag);
}
