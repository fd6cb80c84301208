/* Internals shared by tcp.c (streams), tcp_listen.c, tcp_resolve.c and tcp_redial.c.
 * Not installed; nothing outside proto/src includes it. */
#ifndef ICEFARM_TCP_INT_H
#define ICEFARM_TCP_INT_H

#include <netdb.h>

#include "icefarm/tcp.h"

/* Fills every zero field of *o with its default. */
void tcp_opts_defaults(ifm_tcp_opts *o, const ifm_tcp_opts *given);
/* TCP_NODELAY and keep-alive; failures are ignored (the socket still works). */
void tcp_tune(int fd, const ifm_tcp_opts *o);
/* getaddrinfo's EAI_* as a negative errno. */
int tcp_gai_errno(int gai_rc);

/* An accepted socket as a stream (not started). NULL when out of memory (fd closed). */
ifm_tcp *tcp_adopt(ifm_loop *loop, int fd, const ifm_tcp_opts *o);
/* The redialer learns when its caller closes the stream with ifm_tcp_close(). */
void tcp_set_owner(ifm_tcp *s, void (*lost)(void *owner), void *owner);

/* Name resolution on a helper thread, reported on the loop. The callback owns
 * `res` (freeaddrinfo) and is not called after tcp_resolve_cancel(). */
typedef struct tcp_resolve tcp_resolve;
typedef void (*tcp_resolve_cb)(void *arg, int rc, struct addrinfo *res);
int tcp_resolve_start(ifm_loop *loop, const char *host, const char *port, tcp_resolve_cb cb, void *arg,
                      tcp_resolve **out);
void tcp_resolve_cancel(tcp_resolve *r);

#endif
