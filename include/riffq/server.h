/*
 * The server layer: listeners (TCP and Unix sockets), per-client
 * connections with their read/write buffers and TLS, the startup handshake
 * and authentication.  Once a client is authenticated its messages go to a
 * Session; the server only frames bytes and moves them.
 */
#ifndef RIFFQ_SERVER_H
#define RIFFQ_SERVER_H

#include <uv.h>
#include "riffq/config.h"

typedef struct Server Server;

/* Takes ownership of cfg.  Returns NULL with *errmsg (malloc'd) when the
 * TLS files or user secrets in cfg cannot be used. */
Server *server_new(uv_loop_t *loop, Config *cfg, char **errmsg);
/* Open the listeners.  0, or -1 with *errmsg. */
int server_listen(Server *srv, char **errmsg);
/* Swap in a new configuration for new connections (takes ownership).
 * Listeners are not re-bound; a change of listen addresses is logged. */
int server_reload(Server *srv, Config *cfg, char **errmsg);
/* Close listeners and every connection; the loop then runs dry. */
void server_stop(Server *srv);
void server_free(Server *srv);

#endif
