/*
 * Session settings: see settings.h.  Each definition can normalize a value
 * the way Postgres' check/assign hooks do, because clients compare what they
 * read back (pgjdbc insists on "UTF8" and an ISO DateStyle; asyncpg sends
 * client_encoding as 'utf-8' with the quotes).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "riffq/buf.h"
#include "riffq/wire.h"
#include "settings.h"

typedef int (*SettingCheck)(const char *in, char **out, RqError *err);

enum { S_REPORT = 1, S_READONLY = 2, S_BOOL = 4, S_LIST = 8, S_INT = 16 };

struct SettingDef {
    const char *name;
    const char *boot;       /* default; NULL = computed at init */
    int flags;
    SettingCheck check;
    const char *desc;
};

static int check_encoding(const char *in, char **out, RqError *err);
static int check_datestyle(const char *in, char **out, RqError *err);
static int check_timezone(const char *in, char **out, RqError *err);
static int check_intervalstyle(const char *in, char **out, RqError *err);

static const SettingDef defs[] = {
    { "application_name", "", S_REPORT, NULL, "Sets the application name to be reported in statistics and logs." },
    { "bytea_output", "hex", 0, NULL, "Sets the output format for bytea." },
    { "client_encoding", "UTF8", S_REPORT, check_encoding, "Sets the client's character set encoding." },
    { "client_min_messages", "notice", 0, NULL, "Sets the message levels that are sent to the client." },
    { "DateStyle", "ISO, MDY", S_REPORT | S_LIST, check_datestyle, "Sets the display format for date and time values." },
    { "default_transaction_isolation", "read committed", 0, NULL, "Sets the transaction isolation level of each new transaction." },
    { "default_transaction_read_only", "off", S_REPORT | S_BOOL, NULL, "Sets the default read-only status of new transactions." },
    { "extra_float_digits", "1", S_INT, NULL, "Sets the number of digits displayed for floating-point values." },
    { "idle_in_transaction_session_timeout", "0", S_INT, NULL, "Sets the maximum allowed idle time between queries, when in a transaction." },
    { "in_hot_standby", "off", S_REPORT | S_READONLY | S_BOOL, NULL, "Shows whether hot standby is currently active." },
    { "integer_datetimes", "on", S_REPORT | S_READONLY | S_BOOL, NULL, "Shows whether datetimes are integer based." },
    { "IntervalStyle", "postgres", S_REPORT, check_intervalstyle, "Sets the display format for interval values." },
    { "is_superuser", "off", S_REPORT | S_READONLY | S_BOOL, NULL, "Shows whether the current user is a superuser." },
    { "jit", "off", S_BOOL, NULL, "Allow JIT compilation." },
    { "lc_messages", "C.UTF-8", 0, NULL, "Sets the language in which messages are displayed." },
    { "lc_monetary", "C.UTF-8", 0, NULL, "Sets the locale for formatting monetary amounts." },
    { "lc_numeric", "C.UTF-8", 0, NULL, "Sets the locale for formatting numbers." },
    { "lc_time", "C.UTF-8", 0, NULL, "Sets the locale for formatting date and time values." },
    { "lock_timeout", "0", S_INT, NULL, "Sets the maximum allowed duration of any wait for a lock." },
    { "max_identifier_length", "63", S_READONLY, NULL, "Shows the maximum identifier length." },
    { "row_security", "on", S_BOOL, NULL, "Enable row security." },
    { "search_path", "\"$user\", public", S_LIST, NULL, "Sets the schema search order for names that are not schema-qualified." },
    { "server_encoding", "UTF8", S_REPORT | S_READONLY, NULL, "Shows the server (database) character set encoding." },
    { "server_version", NULL, S_REPORT | S_READONLY, NULL, "Shows the server version." },
    { "server_version_num", NULL, S_READONLY, NULL, "Shows the server version as an integer." },
    { "session_authorization", NULL, S_REPORT | S_READONLY, NULL, "Sets the session user name." },
    { "standard_conforming_strings", "on", S_REPORT | S_BOOL, NULL, "Causes '...' strings to treat backslashes literally." },
    { "statement_timeout", "0", S_INT, NULL, "Sets the maximum allowed duration of any statement." },
    { "synchronous_commit", "on", 0, NULL, "Sets the current transaction's synchronization level." },
    { "TimeZone", "UTC", S_REPORT, check_timezone, "Sets the time zone for displaying and interpreting time stamps." },
    { "transaction_isolation", "read committed", 0, NULL, "Sets the current transaction's isolation level." },
    { "transaction_read_only", "off", S_BOOL, NULL, "Sets the current transaction's read-only status." },
    { "work_mem", "4MB", 0, NULL, "Sets the maximum memory to be used for query workspaces." },
};
#define N_DEFS (sizeof defs / sizeof defs[0])

/* ---- value checks ---- */

static char *unquote(const char *in)
{
    size_t n = strlen(in);
    if (n >= 2 && ((in[0] == '\'' && in[n - 1] == '\'') || (in[0] == '"' && in[n - 1] == '"')))
        return xstrndup(in + 1, n - 2);
    return xstrdup(in);
}

static int check_encoding(const char *in, char **out, RqError *err)
{
    char *v = unquote(in);
    /* Postgres ignores case, '-' and '_' when matching encoding names */
    char norm[32];
    size_t j = 0;
    for (size_t i = 0; v[i] && j < sizeof norm - 1; i++) {
        if (v[i] == '-' || v[i] == '_') continue;
        norm[j++] = (char)tolower((unsigned char)v[i]);
    }
    norm[j] = 0;
    if (strcmp(norm, "utf8") == 0 || strcmp(norm, "unicode") == 0) {
        free(v);
        *out = xstrdup("UTF8");
        return 0;
    }
    rq_error_set(err, "22023", "invalid value for parameter \"client_encoding\": \"%s\"", v);
    rq_error_detail(err, "riffq serves UTF8 only; conversion to other client encodings is not supported.");
    free(v);
    return -1;
}

static int check_datestyle(const char *in, char **out, RqError *err)
{
    /* Accept any combination of an output style and an order, like Postgres,
     * and print them back in Postgres' canonical form. */
    const char *style = NULL, *order = NULL;
    char *copy = xstrdup(in), *save = NULL;
    for (char *tok = strtok_r(copy, ", \t'\"", &save); tok; tok = strtok_r(NULL, ", \t'\"", &save)) {
        if (!strcasecmp(tok, "iso")) style = "ISO";
        else if (!strcasecmp(tok, "sql")) style = "SQL";
        else if (!strcasecmp(tok, "postgres")) style = "Postgres";
        else if (!strcasecmp(tok, "german")) style = "German";
        else if (!strcasecmp(tok, "mdy") || !strcasecmp(tok, "us") || !strcasecmp(tok, "noneuropean") ||
                 !strcasecmp(tok, "noneuro")) order = "MDY";
        else if (!strcasecmp(tok, "dmy") || !strcasecmp(tok, "euro") || !strcasecmp(tok, "european")) order = "DMY";
        else if (!strcasecmp(tok, "ymd")) order = "YMD";
        else if (!strcasecmp(tok, "default")) { style = "ISO"; order = "MDY"; }
        else {
            rq_error_set(err, "22023", "invalid value for parameter \"DateStyle\": \"%s\"", in);
            rq_error_detail(err, "Unrecognized key word: \"%s\".", tok);
            free(copy);
            return -1;
        }
    }
    free(copy);
    *out = xasprintf("%s, %s", style ? style : "ISO", order ? order : "MDY");
    return 0;
}

static int check_intervalstyle(const char *in, char **out, RqError *err)
{
    static const char *ok[] = { "postgres", "postgres_verbose", "sql_standard", "iso_8601" };
    char *v = unquote(in);
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, ok[i])) {
            free(v);
            *out = xstrdup(ok[i]);
            return 0;
        }
    }
    rq_error_set(err, "22023", "invalid value for parameter \"IntervalStyle\": \"%s\"", v);
    rq_error_hint(err, "Available values: postgres, postgres_verbose, sql_standard, iso_8601.");
    free(v);
    return -1;
}

static int check_timezone(const char *in, char **out, RqError *err)
{
    char *v = unquote(in);
    if (!strcasecmp(v, "utc") || !strcasecmp(v, "gmt") || !strcasecmp(v, "z") || !strcasecmp(v, "zulu")) {
        *out = strcasecmp(v, "gmt") ? xstrdup("UTC") : xstrdup("GMT");
        free(v);
        return 0;
    }
    /* numeric offsets ("+02", "-5", "+05:30") are accepted as POSIX-style zones */
    const char *p = v;
    if (*p == '+' || *p == '-') p++;
    if (*p && strspn(p, "0123456789:") == strlen(p)) {
        *out = v;
        return 0;
    }
    /* a named zone must exist in the system's tz database, as in Postgres */
    int ok = v[0] && !strstr(v, "..") && v[0] != '/';
    if (ok) {
        char path[512];
        snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", v);
        ok = access(path, R_OK) == 0;
    }
    if (!ok) {
        rq_error_set(err, "22023", "invalid value for parameter \"TimeZone\": \"%s\"", v);
        free(v);
        return -1;
    }
    *out = v;
    return 0;
}

static int check_bool(const SettingDef *d, const char *in, char **out, RqError *err)
{
    char *v = unquote(in);
    static const char *on[] = { "on", "true", "yes", "1", "t", "y" };
    static const char *off[] = { "off", "false", "no", "0", "f", "n" };
    for (size_t i = 0; i < 6; i++) {
        if (!strcasecmp(v, on[i])) { free(v); *out = xstrdup("on"); return 0; }
        if (!strcasecmp(v, off[i])) { free(v); *out = xstrdup("off"); return 0; }
    }
    rq_error_set(err, "22023", "parameter \"%s\" requires a Boolean value", d->name);
    free(v);
    return -1;
}

static int check_int(const SettingDef *d, const char *in, char **out, RqError *err)
{
    /* integers, optionally with a unit as Postgres allows ("5s", "100ms", "4MB") */
    char *v = unquote(in);
    char *end;
    strtol(v, &end, 10);
    while (*end == ' ') end++;
    if (end == v || strspn(end, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(end)) {
        rq_error_set(err, "22023", "invalid value for parameter \"%s\": \"%s\"", d->name, v);
        free(v);
        return -1;
    }
    *out = v;
    return 0;
}

static int normalize(const SettingDef *d, const char *in, char **out, RqError *err)
{
    if (!d) {
        *out = xstrdup(in);
        return 0;
    }
    if (d->check) return d->check(in, out, err);
    if (d->flags & S_BOOL) return check_bool(d, in, out, err);
    if (d->flags & S_INT) return check_int(d, in, out, err);
    *out = xstrdup(in);
    return 0;
}

/* ---- table ---- */

static void unknown_setting(RqError *err, const char *name)
{
    rq_error_set(err, "42704", "unrecognized configuration parameter \"%s\"", name);
}

static const SettingDef *find_def(const char *name)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (!strcasecmp(defs[i].name, name)) return &defs[i];
    return NULL;
}

static const char *setting_name(const Setting *st)
{
    return st->def ? st->def->name : st->custom_name;
}

static Setting *find(const SessSettings *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcasecmp(setting_name(&s->items[i]), name)) return &s->items[i];
    return NULL;
}

static const char *boot_value(const SessSettings *s, const SettingDef *d, char *buf, size_t n)
{
    if (!d) return "";
    if (!strcmp(d->name, "server_version")) return s->server_version;
    if (!strcmp(d->name, "session_authorization")) return s->user;
    if (!strcmp(d->name, "server_version_num")) {
        int major = atoi(s->server_version);
        const char *dot = strchr(s->server_version, '.');
        snprintf(buf, n, "%d", major * 10000 + (dot ? atoi(dot + 1) : 0));
        return buf;
    }
    return d->boot;
}

static const char *reset_of(const SessSettings *s, const Setting *st, char *buf, size_t n)
{
    return st->reset_value ? st->reset_value : boot_value(s, st->def, buf, n);
}

static Setting *add(SessSettings *s, const SettingDef *d, const char *custom)
{
    char buf[16];
    s->items = xrealloc(s->items, (s->n + 1) * sizeof *s->items);
    Setting *st = &s->items[s->n++];
    memset(st, 0, sizeof *st);
    st->def = d;
    if (!d) st->custom_name = xstrdup(custom);
    st->value = xstrdup(boot_value(s, d, buf, sizeof buf));
    return st;
}

/* Entry for name, created on first change; NULL (42704) if unknown. */
static Setting *touch(SessSettings *s, const char *name, RqError *err)
{
    Setting *st = find(s, name);
    if (st) return st;
    const SettingDef *d = find_def(name);
    if (!d && !strchr(name, '.') && !s->accept_unknown) {
        unknown_setting(err, name);
        return NULL;
    }
    return add(s, d, name);
}

static void set_value(Setting *st, char *v)
{
    if (st->value && strcmp(st->value, v) != 0 && st->def && (st->def->flags & S_REPORT))
        st->report_pending = 1;
    free(st->value);
    st->value = v;
}

int sess_settings_init(SessSettings *s, const SettingsInit *init, RqError *err)
{
    memset(s, 0, sizeof *s);
    s->user = init->user;
    s->server_version = init->server_version;
    s->accept_unknown = init->accept_unknown;
    /* startup-packet settings become the session's RESET values */
    for (size_t i = 0; i < init->n; i++) {
        Setting *st = touch(s, init->keys[i], err);
        if (!st) return -1;
        if (st->def && (st->def->flags & S_READONLY)) {
            rq_error_set(err, "55P02", "parameter \"%s\" cannot be changed now", setting_name(st));
            return -1;
        }
        char *v;
        if (normalize(st->def, init->vals[i], &v, err) < 0) return -1;
        free(st->value);
        st->value = v;
        free(st->reset_value);
        st->reset_value = xstrdup(v);
    }
    return 0;
}

void sess_settings_free(SessSettings *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].custom_name);
        free(s->items[i].value);
        free(s->items[i].session_value);
        free(s->items[i].reset_value);
    }
    free(s->items);
    s->items = NULL;
    s->n = 0;
}

int sess_settings_get(const SessSettings *s, const char *name, const char **canonical,
                      const char **value, RqError *err)
{
    static __thread char buf[16];
    const Setting *st = find(s, name);
    if (st) {
        *canonical = setting_name(st);
        *value = st->value;
        return 0;
    }
    const SettingDef *d = find_def(name);
    if (!d) {
        unknown_setting(err, name);
        return -1;
    }
    *canonical = d->name;
    *value = boot_value(s, d, buf, sizeof buf);
    return 0;
}

const char *sess_settings_value(const SessSettings *s, const char *name)
{
    const char *canon, *value;
    RqError err = {0};
    if (sess_settings_get(s, name, &canon, &value, &err) < 0) {
        rq_error_free(&err);
        return NULL;
    }
    return value;
}

static void remember_for_xact(Setting *st, int is_local, int in_xact)
{
    if (!in_xact) return;
    if (!st->changed_in_xact) {
        st->session_value = xstrdup(st->value);
        st->changed_in_xact = 1;
        st->local = is_local ? 1 : 0;
    } else if (!is_local) {
        /* a later plain SET makes the value survive COMMIT */
        st->local = 0;
    }
}

int sess_settings_set(SessSettings *s, const char *name, const char *value,
                      int is_local, int in_xact, RqError *err)
{
    char buf[16];
    const SettingDef *d = find_def(name);
    if (d && (d->flags & S_READONLY)) {
        rq_error_set(err, "55P02", "parameter \"%s\" cannot be changed", d->name);
        return -1;
    }
    /* validate before creating an entry, so a bad SET leaves nothing behind */
    char *v = NULL;
    if (value && normalize(d, value, &v, err) < 0) return -1;
    /* outside a transaction block, SET LOCAL has no effect (Postgres warns) */
    if (is_local && !in_xact) {
        free(v);
        if (!d && !strchr(name, '.') && !s->accept_unknown) {
            unknown_setting(err, name);
            return -1;
        }
        return 0;
    }
    Setting *st = touch(s, name, err);
    if (!st) {
        free(v);
        return -1;
    }
    if (!v) v = xstrdup(reset_of(s, st, buf, sizeof buf));
    remember_for_xact(st, is_local, in_xact);
    set_value(st, v);
    return 0;
}

void sess_settings_reset_all(SessSettings *s, int in_xact)
{
    char buf[16];
    for (size_t i = 0; i < s->n; i++) {
        Setting *st = &s->items[i];
        const char *r = reset_of(s, st, buf, sizeof buf);
        if (!strcmp(st->value, r)) continue;
        remember_for_xact(st, 0, in_xact);
        set_value(st, xstrdup(r));
    }
}

void sess_settings_xact_end(SessSettings *s, int commit)
{
    for (size_t i = 0; i < s->n; i++) {
        Setting *st = &s->items[i];
        if (!st->changed_in_xact) continue;
        if (!commit || st->local) {
            set_value(st, st->session_value);
        } else {
            free(st->session_value);
        }
        st->session_value = NULL;
        st->changed_in_xact = 0;
        st->local = 0;
    }
}

void sess_settings_report(SessSettings *s, Buf *out)
{
    for (size_t i = 0; i < s->n; i++) {
        Setting *st = &s->items[i];
        if (!st->report_pending) continue;
        st->report_pending = 0;
        wire_parameter_status(out, setting_name(st), st->value);
    }
}

void sess_settings_report_all(SessSettings *s, Buf *out)
{
    char buf[16];
    for (size_t i = 0; i < N_DEFS; i++) {
        if (!(defs[i].flags & S_REPORT)) continue;
        Setting *st = find(s, defs[i].name);
        if (st) st->report_pending = 0;
        wire_parameter_status(out, defs[i].name, st ? st->value : boot_value(s, &defs[i], buf, sizeof buf));
    }
}

static int by_name(const void *a, const void *b)
{
    return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

void sess_settings_show_all(const SessSettings *s, RqResult *r)
{
    rq_result_add_column(r, "name", 25);
    rq_result_add_column(r, "setting", 25);
    rq_result_add_column(r, "description", 25);
    /* Postgres lists SHOW ALL in name order, ignoring case */
    size_t n = N_DEFS;
    const char **names = xmalloc((N_DEFS + s->n) * sizeof *names);
    for (size_t i = 0; i < N_DEFS; i++) names[i] = defs[i].name;
    for (size_t i = 0; i < s->n; i++)
        if (!s->items[i].def) names[n++] = s->items[i].custom_name;
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        const char *canon, *value;
        RqError err = {0};
        sess_settings_get(s, names[i], &canon, &value, &err);
        const SettingDef *d = find_def(names[i]);
        const char *row[3] = { canon, value, d ? d->desc : "" };
        rq_result_add_row(r, row);
    }
    free(names);
}
