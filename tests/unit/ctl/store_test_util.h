/* Helpers shared by the lease store tests: temp dirs, lease builders, raw LMDB access. */
#ifndef ICEFARM_TEST_STORE_UTIL_H
#define ICEFARM_TEST_STORE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* mkdtemp under $TMPDIR (or /tmp); abort on failure. Caller frees with tdir_remove. */
char *tdir_make(void);
/* rm -rf the directory and free the string. */
void tdir_remove(char *dir);

/* A lease with the given names, until = granted + 1 h; args borrowed. */
ctl_lease mk_lease(const char *serial, const char *client, const char *worker);

/* Writes raw bytes under `key` into the named DB of a CLOSED store's env
 * (opens LMDB directly, bypassing the codec): how corruption is injected. */
void raw_put(const char *dir, const char *db, const char *key, const void *val, size_t len);

/* Opens the store or fails the test with the reason. */
ctl_store *open_ok(const char *dir);

#endif
