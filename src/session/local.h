/*
 * The gateway's own answers: SELECTs without a FROM clause over literals,
 * parameters and a handful of session functions (what clients send to ping
 * and to learn about the server), and SHOW/SET/RESET.  Transaction control
 * stays in the session because it owns the transaction state.
 */
#ifndef RIFFQ_SESSION_LOCAL_H
#define RIFFQ_SESSION_LOCAL_H

#include <stdint.h>
#include "riffq/result.h"
#include "riffq/route.h"
#include "settings.h"

typedef struct LocalCtx {
    const struct SessEnv *env;  /* for the gateway's own SHOW riffq.* views */
    SessSettings *settings;
    const char *user;
    const char *database;
    const char *server_version;
    int32_t pid;
    int in_xact;
    const char *sql;            /* full query text the statement came from (for error positions) */
    /* The session's own views (pg_catalog.pg_cursors): fill out with the
     * view's columns and current rows. */
    void (*view)(void *ud, const char *name, RqResult *out);
    void *view_ud;
} LocalCtx;

/* Parameter count and types of a statement: declared types win, others are
 * inferred from casts ($1::int4), else text.  *n_out is the highest $N
 * referenced or declared, at least min_n.  Returns the types (malloc'd,
 * *n_out of them, never NULL). */
uint32_t *local_param_types(const RouteStmt *st, const uint32_t *declared, uint16_t n_declared,
                            uint16_t min_n, uint16_t *n_out);

/* Whether the local engine answers this statement at all: SELECTs without
 * FROM, SELECTs of the session's views (pg_cursors), SET and SHOW. */
int local_handles(const RouteStmt *st);

/* Run (params != NULL) or only describe (params == NULL: columns, no rows,
 * no side effects) a statement.  params are text values, NULL = SQL NULL. */
int local_run(LocalCtx *ctx, const RouteStmt *st, const char *const *params, uint16_t n_params,
              const uint32_t *param_types, RqResult *out, RqError *err);

/* SHOW riffq.pools | riffq.routes | riffq.stats (admin.c).  -1 with 42704
 * for another riffq.* name. */
int admin_show(const struct SessEnv *env, const char *name, int describe, RqResult *out, RqError *err);
/* Whether sql is a SHOW of a riffq.* view, which the gateway always answers. */
int admin_is_show(const char *sql);

/* The error for a statement nothing can answer (no route). */
void local_no_route(const LocalCtx *ctx, const RouteStmt *st, RqError *err);

#endif
