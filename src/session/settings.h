/*
 * Session settings (what SET/SHOW/RESET act on).  Postgres keeps every GUC
 * per backend; the gateway keeps the subset that clients read or set at
 * connect time, plus any custom "prefix.name" setting a client defines.
 *
 * Transaction semantics follow Postgres: a SET inside a transaction that is
 * rolled back is undone, SET LOCAL lasts until the transaction ends, and the
 * settings marked GUC_REPORT in Postgres are announced to the client with
 * ParameterStatus whenever their value changes (collected and sent just
 * before ReadyForQuery, as Postgres does).
 */
#ifndef RIFFQ_SESSION_SETTINGS_H
#define RIFFQ_SESSION_SETTINGS_H

#include <stddef.h>
#include "riffq/buf.h"
#include "riffq/error.h"
#include "riffq/result.h"

typedef struct SettingDef SettingDef;

/* A setting whose value differs from its boot value, or that a transaction
 * touched.  Untouched settings have no entry at all: an idle session costs a
 * few bytes here, not a copy of every setting. */
typedef struct Setting {
    const SettingDef *def;      /* NULL for a custom "prefix.name" setting */
    char *custom_name;          /* custom settings only (owned) */
    char *value;                /* current value (owned) */
    char *session_value;        /* value to restore at rollback, when set in a transaction */
    char *reset_value;          /* what RESET returns to when not the boot value (owned) */
    unsigned changed_in_xact : 1;
    unsigned local : 1;         /* changed with SET LOCAL in this transaction */
    unsigned report_pending : 1;
} Setting;

typedef struct SessSettings {
    Setting *items;             /* owned; only touched settings */
    size_t n;
    const char *user;           /* borrowed from the session: session_authorization */
    const char *server_version; /* borrowed from the configuration */
    int accept_unknown;         /* any name is a custom setting */
} SessSettings;

typedef struct SettingsInit {
    const char *user;
    const char *server_version;
    int accept_unknown;
    const char *const *keys;    /* startup packet parameters (other than user/database) */
    const char *const *vals;
    size_t n;
} SettingsInit;

int  sess_settings_init(SessSettings *s, const SettingsInit *init, RqError *err);
void sess_settings_free(SessSettings *s);
/* value NULL means RESET / SET ... TO DEFAULT. */
int  sess_settings_set(SessSettings *s, const char *name, const char *value,
                       int is_local, int in_xact, RqError *err);
void sess_settings_reset_all(SessSettings *s, int in_xact);
/* Current value and canonical name of a setting; -1 with 42704 for an
 * unknown name.  The strings stay valid until the next change. */
int sess_settings_get(const SessSettings *s, const char *name, const char **canonical,
                      const char **value, RqError *err);
/* Current value, or NULL for an unknown name. */
const char *sess_settings_value(const SessSettings *s, const char *name);
void sess_settings_xact_end(SessSettings *s, int commit);
/* ParameterStatus for every reported setting whose value changed. */
void sess_settings_report(SessSettings *s, Buf *out);
/* ParameterStatus for all reported settings (at connection start). */
void sess_settings_report_all(SessSettings *s, Buf *out);
void sess_settings_show_all(const SessSettings *s, RqResult *r);

#endif
