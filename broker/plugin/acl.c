#include "acl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "icefarm/mp.h"

/* ---- a small string-keyed hash map ---- */

typedef struct entry {
    struct entry *next;
    char *key;
    void *val;
} entry;

typedef struct {
    entry **b;
    size_t nb, n;
    void (*free_val)(void *);
} smap;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int smap_init(smap *m, void (*free_val)(void *))
{
    m->nb = 64;
    m->n = 0;
    m->free_val = free_val;
    m->b = calloc(m->nb, sizeof *m->b);
    return m->b ? 0 : -1;
}

static void smap_clear(smap *m)
{
    for (size_t i = 0; m->b && i < m->nb; i++) {
        entry *e = m->b[i];
        while (e) {
            entry *next = e->next;
            if (m->free_val)
                m->free_val(e->val);
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(m->b);
    m->b = NULL;
    m->nb = m->n = 0;
}

static entry **smap_slot(const smap *m, const char *key)
{
    entry **pp = &m->b[hash_str(key) & (m->nb - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void *smap_get(const smap *m, const char *key)
{
    entry *e = *smap_slot(m, key);
    return e ? e->val : NULL;
}

static void smap_grow(smap *m)
{
    size_t nb = m->nb * 2;
    entry **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* keep working with longer chains */
    for (size_t i = 0; i < m->nb; i++) {
        entry *e = m->b[i];
        while (e) {
            entry *next = e->next;
            size_t k = hash_str(e->key) & (nb - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

/* Takes ownership of val (freed on failure too). */
static int smap_put(smap *m, const char *key, void *val)
{
    entry **pp = smap_slot(m, key);
    if (*pp) {
        if (m->free_val && (*pp)->val != val)
            m->free_val((*pp)->val);
        (*pp)->val = val;
        return 0;
    }
    entry *e = calloc(1, sizeof *e);
    char *k = strdup(key);
    if (!e || !k) {
        free(e);
        free(k);
        if (m->free_val)
            m->free_val(val);
        return -1;
    }
    e->key = k;
    e->val = val;
    *pp = e;
    if (++m->n > m->nb * 2)
        smap_grow(m);
    return 0;
}

static void smap_del(smap *m, const char *key)
{
    entry **pp = smap_slot(m, key);
    entry *e = *pp;
    if (!e)
        return;
    *pp = e->next;
    if (m->free_val)
        m->free_val(e->val);
    free(e->key);
    free(e);
    m->n--;
}

/* ---- state ---- */

typedef struct {
    const void *conn; /* NULL: not connected */
    char *conn_id;
} live_conn;

static void free_live(void *p)
{
    live_conn *c = p;
    if (c)
        free(c->conn_id);
    free(c);
}

struct acl_state {
    acl_opts o;
    smap roles;  /* user -> (acl_role) */
    smap leases; /* serial -> acl_lease */
    smap owners; /* serial -> worker name */
    smap live;   /* worker -> live_conn */
    smap ended;  /* connections that ended ("%p"): their writes are Wills */
    smap ids;    /* client id -> id_owner, for live connections */
    smap drains; /* serial -> acl_drain: the lease that ended last, while its events drain */
};

typedef struct {
    char client[IFM_NAME_MAX];
    uint64_t lease, until_ms;
    bool confirmed; /* the worker said `released` */
} acl_drain;

typedef struct {
    const void *conn;
    char user[];
} id_owner;

static void logf_(const acl_state *st, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(const acl_state *st, int level, const char *fmt, ...)
{
    if (!st->o.log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    st->o.log(level, msg);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

acl_state *acl_new(const acl_opts *opts)
{
    acl_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    if (opts)
        st->o = *opts;
    if (!st->o.now_ms)
        st->o.now_ms = wall_ms;
    if (!st->o.max_leases)
        st->o.max_leases = 100000;
    if (!st->o.max_boards)
        st->o.max_boards = 100000;
    if (!st->o.drain_ms)
        st->o.drain_ms = 2000;
    if (smap_init(&st->roles, NULL) || smap_init(&st->leases, free) || smap_init(&st->owners, free) ||
        smap_init(&st->live, free_live) || smap_init(&st->ended, NULL) || smap_init(&st->ids, free) ||
        smap_init(&st->drains, free)) {
        acl_free(st);
        return NULL;
    }
    return st;
}

void acl_free(acl_state *st)
{
    if (!st)
        return;
    smap_clear(&st->roles);
    smap_clear(&st->leases);
    smap_clear(&st->owners);
    smap_clear(&st->live);
    smap_clear(&st->ended);
    smap_clear(&st->ids);
    smap_clear(&st->drains);
    free(st);
}

/* ---- names and roles ---- */

static const char *const role_names[] = { "none", "control", "worker", "client", "gateway", "dashboard", "operator" };

const char *acl_role_name(acl_role r)
{
    return (unsigned)r < sizeof role_names / sizeof *role_names ? role_names[r] : "?";
}

int acl_role_parse(const char *s)
{
    for (int i = ROLE_CONTROL; i <= ROLE_OPERATOR; i++)
        if (strcmp(s, role_names[i]) == 0)
            return i;
    return -1;
}

acl_role acl_role_of(const acl_state *st, const char *user)
{
    if (!user || !ifm_name_valid(user, IFM_NAME_MAX))
        return ROLE_NONE;
    return (acl_role)(intptr_t)smap_get(&st->roles, user);
}

size_t acl_user_count(const acl_state *st)
{
    return st->roles.n;
}

int acl_load_roles(acl_state *st, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open roles file %s: %s", path, strerror(errno));
        return -1;
    }
    smap fresh;
    if (smap_init(&fresh, NULL)) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        char *user = strtok_r(line, " \t\r\n", &save);
        if (!user)
            continue;
        char *role = strtok_r(NULL, " \t\r\n", &save);
        char *extra = role ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        int r = role ? acl_role_parse(role) : -1;
        if (!role || extra) {
            snprintf(err, errlen, "%s:%d: want \"user role\"", path, lineno);
            rc = -1;
            break;
        }
        const char *bad = ifm_name_problem(user, IFM_NAME_MAX);
        if (bad) {
            snprintf(
                err, errlen,
                "%s:%d: \"%.64s\" cannot be a username: it %s (1-%d bytes of UTF-8, no '/', '+', '#', leading '$')",
                path, lineno, user, bad, IFM_NAME_MAX - 1);
            rc = -1;
            break;
        }
        if (r < 0) {
            snprintf(err, errlen, "%s:%d: unknown role \"%.32s\" (control, worker, client, gateway, dashboard)", path,
                     lineno, role);
            rc = -1;
            break;
        }
        if (smap_get(&fresh, user)) {
            snprintf(err, errlen, "%s:%d: user \"%.64s\" listed twice", path, lineno, user);
            rc = -1;
            break;
        }
        if (smap_put(&fresh, user, (void *)(intptr_t)r)) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "cannot read roles file %s", path);
        rc = -1;
    }
    fclose(f);
    if (rc) {
        smap_clear(&fresh);
        return -1;
    }
    smap_clear(&st->roles);
    st->roles = fresh;
    return 0;
}

/* ---- topics ---- */

typedef enum {
    T_OTHER,
    T_SYS,
    T_CTL_STATE,
    T_CTL_REQ,
    T_FARM,
    T_LEASE,
    T_WORKER,
    T_CLIENT,
    T_BOARD,
    T_TUNNEL /* icefarm/<serial>/usbip/<session>/c2s|s2c: name = serial, leaf = c2s|s2c */
} tkind;

typedef struct {
    tkind k;
    char name[IFM_NAME_MAX]; /* serial, worker, client or verb */
    char leaf[32];
    char sub[IFM_NAME_MAX]; /* icefarm/client/<name>/presence/<sub>: the connection */
} tinfo;

#define MAX_LEVELS 8

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static void classify(const char *topic, tinfo *t)
{
    t->k = T_OTHER;
    t->name[0] = t->leaf[0] = t->sub[0] = '\0';
    if (strncmp(topic, "$SYS/", 5) == 0 || is(topic, "$SYS")) {
        t->k = T_SYS;
        return;
    }
    char buf[512];
    size_t len = strlen(topic);
    if (len >= sizeof buf)
        return;
    memcpy(buf, topic, len + 1);
    char *lv[MAX_LEVELS];
    int n = 0;
    char *p = buf;
    for (;;) {
        if (n == MAX_LEVELS)
            return; /* deeper than anything icefarm uses */
        lv[n++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    if (n < 3 || !is(lv[0], "icefarm"))
        return;
    const char *l1 = lv[1], *l2 = lv[2];
#define SET(kind, nm, lf)                                                                                              \
    do {                                                                                                               \
        t->k = kind;                                                                                                   \
        snprintf(t->name, sizeof t->name, "%s", nm);                                                                   \
        snprintf(t->leaf, sizeof t->leaf, "%s", lf);                                                                   \
    } while (0)
    if (is(l1, "ctl")) {
        if (n == 3 && is(l2, "state"))
            SET(T_CTL_STATE, "", "");
        else if (n == 4 && is(l2, "req") && ifm_verb_valid(lv[3]))
            SET(T_CTL_REQ, lv[3], "");
    } else if (is(l1, "farm")) {
        for (int i = 2; i < n; i++)
            if (!*lv[i])
                return;
        SET(T_FARM, "", "");
    } else if (is(l1, "lease")) {
        if (n == 3 && ifm_serial_valid(l2))
            SET(T_LEASE, l2, "");
    } else if (is(l1, "worker")) {
        if (n == 4 && ifm_name_valid(l2, IFM_NAME_MAX) && ifm_name_valid(lv[3], sizeof t->leaf))
            SET(T_WORKER, l2, lv[3]);
    } else if (is(l1, "client")) {
        /* icefarm/client/<name>/<leaf>[/...]: the whole subtree is the client's. */
        if (n == 5 && is(lv[3], "presence") && ifm_name_valid(l2, IFM_NAME_MAX) &&
            ifm_name_valid(lv[4], IFM_NAME_MAX)) {
            SET(T_CLIENT, l2, "presence");
            snprintf(t->sub, sizeof t->sub, "%s", lv[4]);
        } else if (n >= 4 && ifm_name_valid(l2, IFM_NAME_MAX) && *lv[3]) {
            SET(T_CLIENT, l2, n == 4 ? lv[3] : "");
        }
    } else if (n == 3 && ifm_serial_valid(l1) && (is(l2, "cmd") || is(l2, "event") || is(l2, "state"))) {
        SET(T_BOARD, l1, l2);
    } else if (n == 5 && ifm_serial_valid(l1) && is(l2, "usbip") && ifm_usbip_session_valid(lv[3]) &&
               (is(lv[4], "c2s") || is(lv[4], "s2c"))) {
        SET(T_TUNNEL, l1, lv[4]);
    }
#undef SET
}

/* Next level of a topic or filter: [*s, *e), advances *p past the '/'.
 * Returns false at the end. */
static bool next_level(const char **p, bool *done, const char **s, size_t *n)
{
    if (*done)
        return false;
    const char *slash = strchr(*p, '/');
    *s = *p;
    if (slash) {
        *n = (size_t)(slash - *p);
        *p = slash + 1;
    } else {
        *n = strlen(*p);
        *done = true;
    }
    return true;
}

static bool lv_is(const char *s, size_t n, const char *w)
{
    return n == strlen(w) && memcmp(s, w, n) == 0;
}

bool acl_filters_intersect(const char *a, const char *b)
{
    const char *pa = a, *pb = b, *sa, *sb;
    size_t na, nb;
    bool da = false, db = false;
    for (;;) {
        bool ha = next_level(&pa, &da, &sa, &na);
        bool hb = next_level(&pb, &db, &sb, &nb);
        if (ha && lv_is(sa, na, "#"))
            return true;
        if (hb && lv_is(sb, nb, "#"))
            return true;
        if (!ha || !hb) {
            /* "a/#" also matches "a": the other side may end where '#' follows. */
            if (ha == hb)
                return true;
            const char *rest = ha ? sa : sb;
            size_t rn = ha ? na : nb;
            return lv_is(rest, rn, "#");
        }
        if (lv_is(sa, na, "+") || lv_is(sb, nb, "+"))
            continue;
        if (na != nb || memcmp(sa, sb, na) != 0)
            return false;
    }
}

/* ---- leases and ownership ---- */

/* user NULL: held by anyone. */
static bool holds_lease(acl_state *st, const char *serial, const char *user)
{
    const acl_lease *l = smap_get(&st->leases, serial);
    if (!l || (user && strcmp(l->client, user) != 0))
        return false;
    if (st->o.lease_grace_ms) {
        uint64_t end = l->until_ms + st->o.lease_grace_ms;
        if (end < l->until_ms)
            end = UINT64_MAX;
        if (st->o.now_ms() > end)
            return false;
    }
    return true;
}

bool acl_lease_holder(acl_state *st, const char *serial, const char *client)
{
    return holds_lease(st, serial, client);
}

/* The drain of the lease that ended last on `serial`, if it still runs. */
static acl_drain *drain_of(acl_state *st, const char *serial)
{
    acl_drain *d = smap_get(&st->drains, serial);
    if (d && st->o.now_ms() > d->until_ms) {
        smap_del(&st->drains, serial);
        return NULL;
    }
    return d;
}

bool acl_draining(acl_state *st, const char *serial, const char *client, uint64_t lease)
{
    const acl_drain *d = drain_of(st, serial);
    return d && d->lease == lease && !d->confirmed && (!client || is(d->client, client));
}

/* May `user` (NULL: the gateway, for any holder) read this board event? An
 * event tagged with a lease goes to that lease's holder: the current one, or
 * the one whose lease just ended, until the worker confirms the release
 * (`released`, itself delivered) or the drain runs out. Untagged events (older
 * workers) go to the current holder. */
static bool event_readable(acl_state *st, const char *serial, const char *user, const void *payload, size_t len)
{
    char event[32];
    uint64_t tag = 0;
    if (!payload || acl_decode_event_tag(payload, len, event, sizeof event, &tag) || !tag)
        return holds_lease(st, serial, user);
    const acl_lease *l = smap_get(&st->leases, serial);
    if (l && l->lease == tag && holds_lease(st, serial, user))
        return true;
    const acl_drain *d = drain_of(st, serial);
    return d && d->lease == tag && (!user || is(d->client, user)) && (!d->confirmed || is(event, "released"));
}

bool acl_presence_topic(const char *topic, char *name, size_t namecap, char *conn, size_t conncap)
{
    tinfo t;
    classify(topic, &t);
    if (t.k != T_CLIENT || !is(t.leaf, "presence"))
        return false;
    snprintf(name, namecap, "%s", t.name);
    snprintf(conn, conncap, "%s", t.sub);
    return true;
}

bool acl_has_presence(const acl_state *st, const char *user)
{
    acl_role r = acl_role_of(st, user);
    return r == ROLE_CLIENT || r == ROLE_OPERATOR || r == ROLE_GATEWAY;
}

const char *acl_board_owner(const acl_state *st, const char *serial)
{
    return smap_get(&st->owners, serial);
}

static bool worker_live(const acl_state *st, const char *worker)
{
    const live_conn *c = smap_get(&st->live, worker);
    return c && c->conn;
}

static bool owns(const acl_state *st, const char *serial, const char *worker)
{
    const char *o = smap_get(&st->owners, serial);
    return o && strcmp(o, worker) == 0;
}

/* May `worker` speak for `serial`? Yes if nobody owns it, it owns it, or its
 * owner's connection is gone (the board moved to another host). */
static bool claimable(const acl_state *st, const char *serial, const char *worker)
{
    const char *o = smap_get(&st->owners, serial);
    return !o || strcmp(o, worker) == 0 || !worker_live(st, o);
}

static void claim(acl_state *st, const char *serial, const char *worker)
{
    const char *o = smap_get(&st->owners, serial);
    if (o && strcmp(o, worker) == 0)
        return;
    if (o && worker_live(st, o)) {
        logf_(st, ACL_LOG_WARNING,
              "icefarm_acl: worker %s claims board %s, which belongs to connected worker %s: ignored", worker, serial,
              o);
        return;
    }
    if (!o && st->owners.n >= st->o.max_boards) {
        logf_(st, ACL_LOG_WARNING, "icefarm_acl: %zu boards known; not recording board %s of worker %s", st->owners.n,
              serial, worker);
        return;
    }
    if (o)
        logf_(st, ACL_LOG_INFO, "icefarm_acl: board %s moves from worker %s (gone) to worker %s", serial, o, worker);
    char *w = strdup(worker);
    if (w)
        smap_put(&st->owners, serial, w);
}

static void release(acl_state *st, const char *serial, const char *worker)
{
    if (owns(st, serial, worker))
        smap_del(&st->owners, serial);
}

static void release_all_but(acl_state *st, const char *worker, const acl_worker_birth *keep)
{
    smap set;
    bool have_set = keep && keep->nserials && smap_init(&set, NULL) == 0;
    for (size_t i = 0; have_set && i < keep->nserials; i++)
        smap_put(&set, keep->serials[i], (void *)1);
    /* Collect first: deleting while walking the buckets would be fragile. */
    size_t cap = st->owners.n, nk = 0;
    char **victims = cap ? calloc(cap, sizeof *victims) : NULL;
    for (size_t b = 0; victims && b < st->owners.nb; b++)
        for (entry *e = st->owners.b[b]; e; e = e->next)
            if (strcmp(e->val, worker) == 0 && !(have_set && smap_get(&set, e->key)) && nk < cap)
                victims[nk++] = e->key;
    for (size_t i = 0; i < nk; i++) {
        char *k = strdup(victims[i]);
        if (k) {
            smap_del(&st->owners, k);
            free(k);
        }
    }
    free(victims);
    if (have_set)
        smap_clear(&set);
}

static void mark_live(acl_state *st, const char *worker, const void *conn, const char *conn_id)
{
    live_conn *c = smap_get(&st->live, worker);
    if (c && c->conn == conn && c->conn_id && conn_id && strcmp(c->conn_id, conn_id) == 0)
        return;
    live_conn *n = calloc(1, sizeof *n);
    if (!n)
        return;
    n->conn = conn;
    n->conn_id = strdup(conn_id ? conn_id : "");
    if (!n->conn_id) {
        free(n);
        return;
    }
    smap_put(&st->live, worker, n);
}

static void conn_key(char *out, size_t cap, const void *conn)
{
    snprintf(out, cap, "%p", conn);
}

#define MAX_ENDED 1000000

void acl_disconnect(acl_state *st, const void *conn, const char *conn_id)
{
    if (!conn)
        return;
    /* By pointer only: the broker frees a connection only after this event, and
     * the client id may already be gone. */
    for (size_t b = 0; b < st->live.nb; b++)
        for (entry *e = st->live.b[b]; e; e = e->next) {
            live_conn *c = e->val;
            if (c->conn == conn)
                c->conn = NULL;
        }
    /* Its client id is free again. Collect, then delete. */
    char *gone = NULL;
    for (size_t b = 0; b < st->ids.nb && !gone; b++)
        for (entry *e = st->ids.b[b]; e && !gone; e = e->next)
            if (((id_owner *)e->val)->conn == conn)
                gone = strdup(e->key);
    if (gone) {
        smap_del(&st->ids, gone);
        free(gone);
    }
    char k[32];
    conn_key(k, sizeof k, conn);
    if (st->ended.n >= MAX_ENDED && !smap_get(&st->ended, k)) {
        /* Marks are cleared when the memory is reused by a new connection, so this
         * many means something is off; start over rather than grow. */
        logf_(st, ACL_LOG_WARNING, "icefarm_acl: %zu ended connections remembered; forgetting them", st->ended.n);
        smap_clear(&st->ended);
        smap_init(&st->ended, NULL);
    }
    smap_put(&st->ended, k, (void *)1);
}

static bool ended(const acl_state *st, const void *conn);

void acl_seen(acl_state *st, const void *conn, const char *conn_id, const char *user)
{
    if (!conn || !conn_id || !*conn_id || !user || ended(st, conn))
        return; /* an ended connection's Will check must not claim its id again */
    id_owner *o = smap_get(&st->ids, conn_id);
    if (o && o->conn == conn)
        return;
    size_t n = strlen(user);
    id_owner *fresh = malloc(sizeof *fresh + n + 1);
    if (!fresh)
        return;
    fresh->conn = conn;
    memcpy(fresh->user, user, n + 1);
    smap_put(&st->ids, conn_id, fresh);
}

void acl_connect(acl_state *st, const void *conn)
{
    char k[32];
    conn_key(k, sizeof k, conn);
    smap_del(&st->ended, k);
}

static bool ended(const acl_state *st, const void *conn)
{
    if (!conn || st->ended.n == 0)
        return false;
    char k[32];
    conn_key(k, sizeof k, conn);
    return smap_get(&st->ended, k) != NULL;
}

/* ---- decoders ---- */

/* Reads the root map header and the version field wherever it is; calls
 * `field` for every other key. Rejects duplicate keys among `known`. */
typedef int (*field_fn)(ifm_mp *r, const char *key, uint32_t klen, void *arg);

static int decode_root(const void *p, size_t len, const char *const *known, size_t nknown, field_fn fn, void *arg,
                       uint32_t *seen)
{
    ifm_mp r;
    ifm_mp_init(&r, p, len, NULL, 0);
    uint32_t n;
    bool have_v = false;
    *seen = 0;
    if (len == 0 || len > IFM_MAX_PAYLOAD || ifm_mp_map(&r, &n))
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        if (ifm_mp_str(&r, &k, &kl))
            return -1;
        if (kl == 1 && k[0] == 'v') {
            uint64_t v;
            if (have_v || ifm_mp_uint(&r, &v) || v != 1)
                return -1;
            have_v = true;
            continue;
        }
        size_t idx = nknown;
        for (size_t j = 0; j < nknown; j++)
            if (strlen(known[j]) == kl && memcmp(known[j], k, kl) == 0)
                idx = j;
        if (idx == nknown) {
            if (ifm_mp_skip(&r, IFM_MAX_DEPTH - 1))
                return -1;
            continue;
        }
        if (*seen & (1u << idx))
            return -1;
        *seen |= 1u << idx;
        if (fn(&r, known[idx], kl, arg))
            return -1;
    }
    return have_v && ifm_mp_done(&r) ? 0 : -1;
}

/* A string that may be empty. */
static int read_str0(ifm_mp *r, char *out, size_t cap)
{
    const char *s;
    uint32_t n;
    if (ifm_mp_str(r, &s, &n) || n >= cap || memchr(s, '\0', n))
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static const char *const lease_keys[] = { "serial", "client", "worker", "kind", "lease", "until" };

static int lease_field(ifm_mp *r, const char *key, uint32_t klen, void *arg)
{
    acl_lease *l = arg;
    char kind[64];
    if (is(key, "serial"))
        return ifm_mp_cstr(r, l->serial, sizeof l->serial);
    if (is(key, "client"))
        return ifm_mp_cstr(r, l->client, sizeof l->client);
    if (is(key, "worker"))
        return read_str0(r, l->worker, sizeof l->worker);
    if (is(key, "kind"))
        return read_str0(r, kind, sizeof kind);
    if (is(key, "lease"))
        return ifm_mp_uint(r, &l->lease);
    return ifm_mp_uint(r, &l->until_ms);
}

int acl_decode_lease(const void *p, size_t len, acl_lease *out)
{
    memset(out, 0, sizeof *out);
    uint32_t seen;
    if (decode_root(p, len, lease_keys, 6, lease_field, out, &seen))
        return -1;
    /* serial, client and until are what access depends on */
    if ((seen & 0x23) != 0x23 || !ifm_serial_valid(out->serial) || !ifm_name_valid(out->client, IFM_NAME_MAX))
        return -1;
    return 0;
}

static const char *const board_keys[] = { "serial", "worker", "state" };

static int board_field(ifm_mp *r, const char *key, uint32_t klen, void *arg)
{
    acl_board_state *b = arg;
    if (is(key, "serial"))
        return ifm_mp_cstr(r, b->serial, sizeof b->serial);
    if (is(key, "worker"))
        return ifm_mp_cstr(r, b->worker, sizeof b->worker);
    return ifm_mp_cstr(r, b->state, sizeof b->state);
}

int acl_decode_board_state(const void *p, size_t len, acl_board_state *out)
{
    memset(out, 0, sizeof *out);
    uint32_t seen;
    if (decode_root(p, len, board_keys, 3, board_field, out, &seen) || seen != 0x7)
        return -1;
    return 0;
}

int acl_decode_event_tag(const void *p, size_t len, char *event, size_t cap, uint64_t *lease)
{
    ifm_mp r;
    ifm_mp_init(&r, p, len, NULL, 0);
    uint32_t n;
    bool have_event = false, have_lease = false;
    *lease = 0;
    if (cap)
        event[0] = '\0';
    if (len == 0 || len > IFM_MAX_PAYLOAD || ifm_mp_map(&r, &n))
        return -1;
    for (uint32_t i = 0; i < n && !(have_event && have_lease); i++) {
        const char *k;
        uint32_t kl;
        if (ifm_mp_str(&r, &k, &kl))
            return -1;
        if (kl == 5 && memcmp(k, "event", 5) == 0 && !have_event) {
            if (ifm_mp_cstr(&r, event, cap))
                return -1;
            have_event = true;
        } else if (kl == 5 && memcmp(k, "lease", 5) == 0 && !have_lease) {
            if (ifm_mp_uint(&r, lease))
                return -1;
            have_lease = true;
        } else if (ifm_mp_skip(&r, IFM_MAX_DEPTH - 1)) {
            return -1;
        }
    }
    return 0;
}

static const char *const birth_keys[] = { "worker", "state", "boards" };

static int birth_boards(ifm_mp *r, acl_worker_birth *b)
{
    uint32_t n;
    if (ifm_mp_array(r, &n) || n > IFM_MAX_SERIALS)
        return -1;
    b->serials = calloc(n ? n : 1, sizeof *b->serials);
    if (!b->serials)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t m;
        bool have = false;
        if (ifm_mp_map(r, &m))
            return -1;
        for (uint32_t j = 0; j < m; j++) {
            const char *k;
            uint32_t kl;
            if (ifm_mp_str(r, &k, &kl))
                return -1;
            if (kl == 6 && memcmp(k, "serial", 6) == 0) {
                if (have || ifm_mp_cstr(r, b->serials[b->nserials], IFM_SERIAL_MAX))
                    return -1;
                have = true;
            } else if (ifm_mp_skip(r, IFM_MAX_DEPTH - 3)) {
                return -1;
            }
        }
        if (!have)
            return -1;
        b->nserials++;
    }
    return 0;
}

static int birth_field(ifm_mp *r, const char *key, uint32_t klen, void *arg)
{
    acl_worker_birth *b = arg;
    if (is(key, "worker"))
        return ifm_mp_cstr(r, b->worker, sizeof b->worker);
    if (is(key, "state")) {
        char s[16];
        if (ifm_mp_cstr(r, s, sizeof s))
            return -1;
        if (is(s, "online"))
            b->online = true;
        else if (!is(s, "offline"))
            return -1;
        return 0;
    }
    return birth_boards(r, b);
}

int acl_decode_worker_birth(const void *p, size_t len, acl_worker_birth *out)
{
    memset(out, 0, sizeof *out);
    uint32_t seen;
    if (decode_root(p, len, birth_keys, 3, birth_field, out, &seen) || (seen & 0x3) != 0x3) {
        acl_worker_birth_free(out);
        return -1;
    }
    return 0;
}

void acl_worker_birth_free(acl_worker_birth *b)
{
    free(b->serials);
    b->serials = NULL;
    b->nserials = 0;
}

/* ---- decisions ---- */

static bool public_state(const tinfo *t)
{
    switch (t->k) {
    case T_CTL_STATE:
    case T_FARM:
    case T_LEASE:
        return true;
    case T_WORKER:
        return is(t->leaf, "state") || is(t->leaf, "stats"); /* stats: evaluation counts, for dashboards */
    case T_BOARD:
        return is(t->leaf, "state");
    default:
        return false;
    }
}

static bool can_read(acl_state *st, acl_role role, const char *user, const tinfo *t, bool subscribing,
                     const void *payload, size_t len)
{
    if (role == ROLE_CONTROL)
        return true;
    if (public_state(t))
        return true;
    if (t->k == T_CLIENT && is(t->name, user))
        return true;
    switch (role) {
    case ROLE_DASHBOARD:
        return t->k == T_SYS;
    case ROLE_CLIENT:
    case ROLE_OPERATOR:
        if (t->k == T_TUNNEL) /* the holder reads its board's tunnel replies */
            return is(t->leaf, "s2c") && holds_lease(st, t->name, user);
        if (t->k != T_BOARD || !is(t->leaf, "event"))
            return false;
        /* Subscribing decides nothing (as for icefarm/+/event, which any
         * client may subscribe): each event is judged when it is delivered. A
         * holder re-subscribing after a broker restart, before control has
         * republished its lease, must not lose its subscription. */
        return subscribing || event_readable(st, t->name, user, payload, len);
    case ROLE_GATEWAY:
        /* It serves the events of every client it acts for (SSE). */
        if (t->k == T_CLIENT)
            return is(t->leaf, "event");
        if (t->k != T_BOARD || !is(t->leaf, "event"))
            return false;
        return subscribing || event_readable(st, t->name, NULL, payload, len);
    case ROLE_WORKER:
        if (t->k == T_WORKER)
            return is(t->name, user);
        if ((t->k == T_BOARD && is(t->leaf, "cmd")) || (t->k == T_TUNNEL && is(t->leaf, "c2s")))
            return subscribing ? claimable(st, t->name, user) : owns(st, t->name, user);
        return false;
    default:
        return false;
    }
}

static bool worker_state_ok(const char *user, const void *payload, size_t len)
{
    if (len == 0)
        return true;
    acl_worker_birth b;
    if (acl_decode_worker_birth(payload, len, &b))
        return false;
    bool ok = is(b.worker, user);
    acl_worker_birth_free(&b);
    return ok;
}

static bool can_write(acl_state *st, acl_role role, const char *user, const tinfo *t, const void *payload, size_t len,
                      bool retain)
{
    switch (role) {
    case ROLE_CONTROL:
        switch (t->k) {
        case T_LEASE:
            return retain; /* a lease is state: always retained, empty = released */
        case T_FARM:
        case T_CTL_STATE:
        case T_CLIENT:
            return true;
        case T_WORKER:
            return is(t->leaf, "cmd") || is(t->leaf, "sim");
        default:
            return false;
        }
    case ROLE_WORKER:
        if (t->k == T_WORKER && is(t->leaf, "stats"))
            return is(t->name, user) && retain; /* its own counters (control checks the payload) */
        if (t->k == T_WORKER && is(t->leaf, "heartbeat"))
            return is(t->name, user) && !retain;
        if (t->k == T_WORKER)
            return is(t->name, user) && is(t->leaf, "state") && worker_state_ok(user, payload, len);
        if (t->k == T_TUNNEL) /* its boards' tunnel replies */
            return is(t->leaf, "s2c") && !retain && owns(st, t->name, user);
        if (t->k != T_BOARD)
            return false;
        if (is(t->leaf, "event"))
            return !retain && owns(st, t->name, user);
        if (is(t->leaf, "state")) {
            if (!claimable(st, t->name, user))
                return false;
            if (len == 0)
                return true;
            acl_board_state b;
            return acl_decode_board_state(payload, len, &b) == 0 && is(b.serial, t->name) && is(b.worker, user);
        }
        return false;
    case ROLE_CLIENT:
    case ROLE_OPERATOR:
        if (t->k == T_CLIENT && is(t->leaf, "presence"))
            return retain && is(t->name, user); /* the plugin checks <conn> is its own */
        if (retain)
            return false; /* a retained command would run again for the next holder */
        if (t->k == T_CTL_REQ)
            return true;
        if (t->k == T_TUNNEL) /* the holder's tunnel bytes (and its Will, an empty one) */
            return is(t->leaf, "c2s") && holds_lease(st, t->name, user);
        return t->k == T_BOARD && is(t->leaf, "cmd") && holds_lease(st, t->name, user);
    case ROLE_GATEWAY:
        /* Requests for its callers; board commands only for a leased board, and
         * the message hook then checks that it names that board's holder. */
        if (t->k == T_CLIENT && is(t->leaf, "presence"))
            return retain && is(t->name, user);
        if (retain)
            return false;
        return t->k == T_CTL_REQ || (t->k == T_BOARD && is(t->leaf, "cmd") && holds_lease(st, t->name, NULL));
    default:
        return false;
    }
}

/* The readable patterns of a role, for wildcard subscriptions. */
static bool filter_may_read(acl_role role, const char *user, const char *filter)
{
    if (role == ROLE_CONTROL)
        return true;
    static const char *const pub[] = { "icefarm/ctl/state", "icefarm/farm/#",         "icefarm/lease/+",
                                       "icefarm/+/state",   "icefarm/worker/+/state", "icefarm/worker/+/stats" };
    for (size_t i = 0; i < sizeof pub / sizeof *pub; i++)
        if (acl_filters_intersect(filter, pub[i]))
            return true;
    char own[IFM_NAME_MAX + 64];
    switch (role) {
    case ROLE_DASHBOARD:
        snprintf(own, sizeof own, "icefarm/client/%s/#", user);
        return acl_filters_intersect(filter, own) || acl_filters_intersect(filter, "$SYS/#");
    case ROLE_CLIENT:
    case ROLE_OPERATOR:
        snprintf(own, sizeof own, "icefarm/client/%s/#", user);
        return acl_filters_intersect(filter, own) || acl_filters_intersect(filter, "icefarm/+/event") ||
            acl_filters_intersect(filter, "icefarm/+/usbip/+/s2c");
    case ROLE_GATEWAY:
        snprintf(own, sizeof own, "icefarm/client/%s/#", user);
        return acl_filters_intersect(filter, own) || acl_filters_intersect(filter, "icefarm/+/event") ||
            acl_filters_intersect(filter, "icefarm/client/+/event");
    case ROLE_WORKER:
        snprintf(own, sizeof own, "icefarm/worker/%s/#", user);
        return acl_filters_intersect(filter, own) || acl_filters_intersect(filter, "icefarm/+/cmd") ||
            acl_filters_intersect(filter, "icefarm/+/usbip/+/c2s");
    default:
        return false;
    }
}

bool acl_check(acl_state *st, const void *conn, const char *user, int access, const char *topic, const void *payload,
               size_t len, bool retain)
{
    acl_role role = acl_role_of(st, user);
    if (role == ROLE_NONE || !topic)
        return false;
    if (access == ACL_UNSUBSCRIBE)
        return true;
    tinfo t;
    if (access == ACL_SUBSCRIBE) {
        if (strncmp(topic, "$share/", 7) == 0) {
            const char *slash = strchr(topic + 7, '/');
            if (!slash || slash == topic + 7 || !slash[1])
                return false;
            topic = slash + 1;
        }
        if (strpbrk(topic, "+#"))
            return filter_may_read(role, user, topic);
        classify(topic, &t);
        return can_read(st, role, user, &t, true, NULL, 0);
    }
    classify(topic, &t);
    if (access == ACL_READ)
        return can_read(st, role, user, &t, false, payload, len);
    if (access == ACL_WRITE) {
        if (ended(st, conn)) {
            /* a Will */
            bool ok = (role == ROLE_CONTROL && t.k == T_CTL_STATE) ||
                (role == ROLE_WORKER && t.k == T_WORKER && is(t.name, user) && is(t.leaf, "state")) ||
                (t.k == T_CLIENT && is(t.leaf, "presence") && len == 0) ||
                (t.k == T_TUNNEL && is(t.leaf, "c2s") && len == 0); /* the end of its tunnel session */
            return ok && can_write(st, role, user, &t, payload, len, retain);
        }
        return can_write(st, role, user, &t, payload, len, retain);
    }
    return false;
}

int acl_check_connect(const acl_state *st, const char *user, const char *client_id, char *why, size_t whylen)
{
    if (!user)
        return 0; /* anonymous: allow_anonymous decides; no role means no access */
    acl_role role = acl_role_of(st, user);
    if (role == ROLE_NONE) {
        snprintf(why, whylen, "user \"%.64s\" has no icefarm role", user);
        return -1;
    }
    const char *id = client_id ? client_id : "";
    bool wrk_id = strncmp(id, "wrk-", 4) == 0;
    if (role == ROLE_WORKER && !(wrk_id && is(id + 4, user))) {
        snprintf(why, whylen, "worker \"%.64s\" must connect with client id \"wrk-%.64s\"", user, user);
        return -1;
    }
    if (role != ROLE_WORKER && wrk_id) {
        snprintf(why, whylen, "client id \"%.64s\" is reserved for a worker", id);
        return -1;
    }
    if (role != ROLE_CONTROL && is(id, "icefarm-ctl")) {
        snprintf(why, whylen, "client id \"icefarm-ctl\" is reserved for control");
        return -1;
    }
    const id_owner *o = *id ? smap_get(&st->ids, id) : NULL;
    if (o && strcmp(o->user, user) != 0) {
        snprintf(why, whylen, "client id \"%.64s\" is in use by another user", id);
        return -1;
    }
    return 0;
}

acl_req_action acl_request_action(const acl_state *st, const char *user, const char *topic, const char *response_topic)
{
    tinfo t;
    classify(topic, &t);
    if (t.k != T_CTL_REQ)
        return ACL_REQ_PASS;
    acl_role role = acl_role_of(st, user);
    if (role != ROLE_CLIENT && role != ROLE_OPERATOR && role != ROLE_GATEWAY)
        return ACL_REQ_DENY;
    if (response_topic) {
        char prefix[IFM_NAME_MAX + 32];
        int n = snprintf(prefix, sizeof prefix, "icefarm/client/%s/", user);
        if (n < 0 || (size_t)n >= sizeof prefix || strncmp(response_topic, prefix, (size_t)n) != 0 ||
            !response_topic[n] || strpbrk(response_topic, "+#"))
            return ACL_REQ_DENY;
    }
    return role == ROLE_GATEWAY ? ACL_REQ_GATEWAY : ACL_REQ_REPLACE;
}

acl_req_action acl_command_action(const acl_state *st, const char *user, const char *topic)
{
    tinfo t;
    classify(topic, &t);
    if (t.k != T_BOARD || !is(t.leaf, "cmd"))
        return ACL_REQ_PASS;
    switch (acl_role_of(st, user)) {
    case ROLE_CLIENT:
    case ROLE_OPERATOR:
        return ACL_REQ_REPLACE;
    case ROLE_GATEWAY:
        return ACL_REQ_HOLDER;
    default:
        return ACL_REQ_DENY; /* the write check refuses these anyway */
    }
}

bool acl_command_client_ok(acl_state *st, const char *topic, const char *client)
{
    tinfo t;
    classify(topic, &t);
    return t.k == T_BOARD && is(t.leaf, "cmd") && ifm_name_valid(client, IFM_NAME_MAX) &&
        holds_lease(st, t.name, client);
}

bool acl_may_act_for(const acl_state *st, const char *client)
{
    acl_role r = acl_role_of(st, client);
    return r == ROLE_CLIENT || r == ROLE_OPERATOR;
}

/* ---- learning ---- */

/* The lease on a board ended or changed hands: its events keep reaching its
 * holder for a while (event_readable). */
static void start_drain(acl_state *st, const char *serial, const acl_lease *old)
{
    if (!smap_get(&st->drains, serial) && st->drains.n >= st->o.max_leases)
        return;
    acl_drain *d = calloc(1, sizeof *d);
    if (!d)
        return;
    snprintf(d->client, sizeof d->client, "%s", old->client);
    d->lease = old->lease;
    d->until_ms = st->o.now_ms() + st->o.drain_ms;
    smap_put(&st->drains, serial, d);
}

static void observe_lease(acl_state *st, const tinfo *t, const void *payload, size_t len)
{
    const acl_lease *old = smap_get(&st->leases, t->name);
    acl_lease prev;
    bool had = old != NULL;
    if (had)
        prev = *old;
    if (len == 0) {
        if (had)
            start_drain(st, t->name, &prev);
        if (smap_get(&st->leases, t->name))
            logf_(st, ACL_LOG_INFO, "icefarm_acl: lease on %s ended", t->name);
        smap_del(&st->leases, t->name);
        return;
    }
    acl_lease l;
    if (acl_decode_lease(payload, len, &l) || !is(l.serial, t->name)) {
        /* Fail closed: nobody holds a board whose lease we cannot read. */
        smap_del(&st->leases, t->name);
        logf_(st, ACL_LOG_WARNING, "icefarm_acl: unreadable lease for %s (%zu bytes): nobody holds it now", t->name,
              len);
        return;
    }
    if (!smap_get(&st->leases, t->name) && st->leases.n >= st->o.max_leases) {
        logf_(st, ACL_LOG_WARNING, "icefarm_acl: %zu leases known; not recording the lease on %s", st->leases.n,
              t->name);
        return;
    }
    if (had && prev.lease != l.lease)
        start_drain(st, t->name, &prev);
    acl_lease *copy = malloc(sizeof *copy);
    if (!copy)
        return;
    *copy = l;
    smap_put(&st->leases, t->name, copy);
}

static void observe_birth(acl_state *st, const char *worker, const void *payload, size_t len)
{
    acl_worker_birth b;
    if (len == 0 || acl_decode_worker_birth(payload, len, &b))
        return;
    if (b.online) {
        for (size_t i = 0; i < b.nserials; i++)
            if (ifm_serial_valid(b.serials[i]))
                claim(st, b.serials[i], worker);
        release_all_but(st, worker, &b);
    } else {
        release_all_but(st, worker, NULL);
    }
    acl_worker_birth_free(&b);
}

void acl_observe(acl_state *st, const char *user, const void *conn, const char *conn_id, const char *topic,
                 const void *payload, size_t len, bool retain)
{
    acl_role role = acl_role_of(st, user);
    if (!topic || (role != ROLE_CONTROL && role != ROLE_WORKER))
        return;
    tinfo t;
    classify(topic, &t);
    if (role == ROLE_CONTROL) {
        if (t.k == T_LEASE && retain)
            observe_lease(st, &t, payload, len);
        return;
    }
    mark_live(st, user, conn, conn_id);
    if (t.k == T_WORKER && is(t.name, user) && is(t.leaf, "state")) {
        observe_birth(st, user, payload, len);
    } else if (t.k == T_BOARD && is(t.leaf, "state")) {
        acl_board_state b;
        if (len == 0)
            release(st, t.name, user);
        else if (acl_decode_board_state(payload, len, &b) == 0 && is(b.worker, user))
            is(b.state, "gone") ? release(st, t.name, user) : claim(st, t.name, user);
    } else if (t.k == T_BOARD && is(t.leaf, "event") && owns(st, t.name, user)) {
        char event[32];
        uint64_t tag;
        acl_drain *d = smap_get(&st->drains, t.name);
        if (d && acl_decode_event_tag(payload, len, event, sizeof event, &tag) == 0 && is(event, "released") &&
            tag == d->lease)
            d->confirmed = true; /* the lease's last event: nothing of it may follow */
    }
}
