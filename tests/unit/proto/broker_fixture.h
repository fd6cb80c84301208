/* A real Mosquitto broker for tests: started on an ephemeral loopback port with a
 * private config in a temp dir, killed and cleaned up at teardown.
 *
 *     ifm_test_broker b;
 *     if (ifm_test_broker_start(&b, NULL)) fail;     // picks a free port
 *     ... connect to 127.0.0.1:b.port ...
 *     ifm_test_broker_kill(&b);                      // SIGKILL (a crash)
 *     ifm_test_broker_restart(&b);                   // same port, same config
 *     ifm_test_broker_stop(&b);                      // SIGTERM, wait, rm temp dir
 *
 * The broker binary is $ICEFARM_MOSQUITTO or /usr/sbin/mosquitto. The broker's own
 * log (log_type all) goes to b.log, which ifm_test_broker_dump_log() prints to stderr:
 * useful in a failing test. No broker outlives its test process: the child gets
 * PR_SET_PDEATHSIG (and, as root, runs with `user root` so mosquitto's privilege
 * drop does not clear it), and brokers still running at exit() are killed (a
 * cmocka failure skips the test's own stop()). The temp dir of a broker that was
 * not stopped stays behind for inspection. Not thread-safe; one test process may
 * run several brokers.
 */
#ifndef ICEFARM_TEST_BROKER_FIXTURE_H
#define ICEFARM_TEST_BROKER_FIXTURE_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[256]; /* private temp dir: mosquitto.conf, mosquitto.log */
    char conf[300];
    char log[300];
} ifm_test_broker;

/* Writes the config (listener <port> 127.0.0.1, allow_anonymous true,
 * set_tcp_nodelay true, persistence false, plus `extra_conf` lines if not NULL,
 * e.g. a plugin line), launches mosquitto and waits (up to 30 s) until it accepts
 * TCP connections. Picks a free port itself (and retries with another if the port
 * was taken meanwhile). Returns 0, or -1 with a reason on stderr. */
int ifm_test_broker_start(ifm_test_broker *b, const char *extra_conf);
/* Like start, but on a given port (0: pick one). */
int ifm_test_broker_start_port(ifm_test_broker *b, int port, const char *extra_conf);
/* SIGKILL and reap: the broker dies without closing anything cleanly. */
void ifm_test_broker_kill(ifm_test_broker *b);
/* Starts the same config again on the same port; waits until it accepts. */
int ifm_test_broker_restart(ifm_test_broker *b);
/* SIGTERM (SIGKILL after 10 s), reap, remove the temp dir. Safe to call twice. */
void ifm_test_broker_stop(ifm_test_broker *b);
/* Prints the broker's log to stderr. */
void ifm_test_broker_dump_log(const ifm_test_broker *b);
/* A TCP port that was free a moment ago on 127.0.0.1 (bind to port 0). -1 on error. */
int ifm_test_free_port(void);
/* True if something accepts TCP connections on 127.0.0.1:port. */
bool ifm_test_port_open(int port);

#endif
