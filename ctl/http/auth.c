/* --auth broker: who is calling. Every request except the status page carries
 * `Authorization: Basic base64(user:password)` or `Authorization: Bearer TOKEN`.
 *
 * Passwords are checked by the broker itself, so there is one user database: a
 * check is a short-lived MQTT connection (its own ifm_mqtt on the shim's loop,
 * same host, port and CA as the shim's own connection) with the caller's
 * credentials. CONNACK success means valid; a refusal for bad credentials or
 * "not authorized" means 401; anything else (broker down, timeout) means 503.
 * The HTTP connection stays suspended meanwhile, like a request waiting for
 * control. Identical credentials arriving while a check runs join it.
 *
 * What is kept: successful checks for --auth-cache seconds, keyed by
 * HMAC-SHA-256(per-process random key, user NUL password), never the password;
 * tokens from POST /token, keyed by SHA-256(token), never the token; failure
 * counts per source address (rate limit). Our copies of a password are wiped
 * (OPENSSL_cleanse) as soon as the check's connection is set up.
 *
 * On start the shim checks that the broker does check passwords: a check with
 * a made-up user and password must be refused. Until that is settled, Basic
 * requests get 503; if the broker accepts the made-up login, the shim stops.
 */
#include <errno.h>
#include <fcntl.h>
#include <mqtt_protocol.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http.h"
#include "icefarm/log.h"

#define AUTH_POLL_MS 20          /* how often a running check looks at its connection */
#define AUTH_CHECKS_MAX 32       /* credential checks in flight at once */
#define AUTH_RL_FAILURES 5       /* failed authentications per (account, address) pair ... */
#define AUTH_RL_ADDR_FAILURES 50 /* ... and per address, whatever the account ... */
#define AUTH_RL_WINDOW_MS 10000u /* ... per this window, then 429 for that pair (or address) */
#define AUTH_RL_MAX 4096         /* pairs and addresses tracked at once */
#define AUTH_RL_TOKEN "(token)"  /* the "account" of bearer-token guesses */
#define AUTH_CACHE_MAX 1024      /* cached successful checks */
#define AUTH_TOKENS_MAX 10000    /* live tokens */
#define AUTH_TOKENS_PER_USER 32  /* a user's oldest token goes beyond this */
#define AUTH_CRED_MAX 1024       /* decoded user:password */
#define AUTH_PROBE_RETRY_MS 1000

typedef struct {
    uint8_t key[32];
    char user[IFM_NAME_MAX];
    uint64_t expires; /* monotonic ms */
} cache_ent;

typedef struct {
    uint8_t hash[32]; /* SHA-256 of the token's text */
    char user[IFM_NAME_MAX];
    uint64_t expires;      /* monotonic ms */
    uint64_t expires_wall; /* what the client was told */
} token_ent;

typedef struct {
    char ip[HTTP_IP_MAX];
    char user[IFM_NAME_MAX]; /* the account; "" for the address as a whole */
    uint64_t window_end;     /* failures counted until then */
    unsigned failures;
    unsigned inflight; /* checks started from this address and still running */
    bool warned;       /* "rate-limited" logged for this window */
} rl_ent;

struct auth_check {
    auth_check *prev, *next;
    http_auth *a;
    ifm_mqtt *m;
    uint8_t key[32];
    char user[IFM_NAME_MAX];
    char ip[HTTP_IP_MAX]; /* who started it (counted in its inflight) */
    http_req *waiters;    /* linked through http_req.check_next */
    uint64_t timer, deadline;
    bool probe;
};

struct http_auth {
    http_srv *srv;
    uint8_t secret[32]; /* HMAC key of the cache */
    bool ready;         /* the start-up probe saw the broker refuse a made-up login */
    bool fatal;         /* ... or saw it accept one */
    bool probe_warned;
    uint64_t probe_timer;
    auth_check *checks;
    size_t nchecks;
    cache_ent cache[AUTH_CACHE_MAX];
    size_t ncache;
    token_ent *tokens;
    size_t ntokens;
    rl_ent *rl;
    size_t nrl;
};

static int random_bytes(void *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (uint8_t *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    return got == n ? 0 : -1;
}

/* ---- the rate limit: failed authentications per (account, address) ----
 *
 * Bob's wrong guesses must not lock Alice out when both sit behind the same
 * address (a lab's NAT): each (user, address) pair has its own budget of
 * AUTH_RL_FAILURES per window. The address as a whole has a larger one, so a
 * spray over many accounts from one address is still slowed down. */

static rl_ent *rl_find(http_auth *a, const char *ip, const char *user, bool create)
{
    uint64_t now = ifm_now_ms();
    rl_ent *free_slot = NULL;
    for (size_t i = 0; i < a->nrl; i++) {
        rl_ent *e = &a->rl[i];
        if (strcmp(e->ip, ip) == 0 && strcmp(e->user, user) == 0) {
            if (now >= e->window_end) { /* a new window */
                e->failures = 0;
                e->warned = false;
            }
            return e;
        }
        if (!free_slot && e->inflight == 0 && now >= e->window_end)
            free_slot = e;
    }
    if (!create)
        return NULL;
    if (!free_slot) {
        if (a->nrl == AUTH_RL_MAX)
            return NULL;
        free_slot = &a->rl[a->nrl++];
    }
    memset(free_slot, 0, sizeof *free_slot);
    snprintf(free_slot->ip, sizeof free_slot->ip, "%s", ip);
    snprintf(free_slot->user, sizeof free_slot->user, "%s", user);
    return free_slot;
}

/* Seconds until this entry may try again (0: now). Running checks count as
 * failures-to-be, so parallel guesses cannot overtake the limit. */
static unsigned rl_wait(rl_ent *e, unsigned limit, const char *ip, const char *user)
{
    if (!e || e->failures + e->inflight < limit)
        return 0;
    if (e->failures >= limit && !e->warned) {
        e->warned = true;
        char buf[IFM_NAME_MAX * 4 + 4];
        IFM_WARN("auth: %u failed authentications from %s%s%s within %u s: refusing %s for now", e->failures, ip,
                 *user ? " for user=" : "", *user ? http_log_name(user, buf, sizeof buf) : "", AUTH_RL_WINDOW_MS / 1000,
                 *user ? "that pair" : "that address");
    }
    uint64_t now = ifm_now_ms();
    uint64_t left = e->failures >= limit && e->window_end > now ? e->window_end - now : 1000;
    return (unsigned)((left + 999) / 1000);
}

/* Seconds until `user` may try again from `ip` (0: now). A full table fails closed. */
static unsigned rl_blocked(http_auth *a, const char *ip, const char *user)
{
    rl_ent *pair = rl_find(a, ip, user, false), *addr = rl_find(a, ip, "", false);
    if ((!pair || !addr) && a->nrl >= AUTH_RL_MAX) {
        bool room = false;
        for (size_t i = 0; i < a->nrl && !room; i++)
            room = a->rl[i].inflight == 0 && ifm_now_ms() >= a->rl[i].window_end;
        if (!room)
            return 1;
    }
    unsigned w1 = rl_wait(pair, AUTH_RL_FAILURES, ip, user), w2 = rl_wait(addr, AUTH_RL_ADDR_FAILURES, ip, "");
    return w1 > w2 ? w1 : w2;
}

static void rl_count(rl_ent *e)
{
    if (!e)
        return;
    if (e->failures == 0) /* the first failure opens a window */
        e->window_end = ifm_now_ms() + AUTH_RL_WINDOW_MS;
    e->failures++;
}

static void rl_fail(http_auth *a, const char *ip, const char *user)
{
    rl_count(rl_find(a, ip, user, true));
    rl_count(rl_find(a, ip, "", true));
}

static void rl_inflight(http_auth *a, const char *ip, const char *user, int delta)
{
    rl_ent *e[2] = { rl_find(a, ip, user, delta > 0), rl_find(a, ip, "", delta > 0) };
    for (int i = 0; i < 2; i++) {
        if (!e[i])
            continue;
        if (delta > 0)
            e[i]->inflight++;
        else if (e[i]->inflight)
            e[i]->inflight--;
    }
}

/* One line per failure, with the user name (escaped) and never the password. */
static void log_failure(const http_req *r, const char *user, const char *why)
{
    char buf[IFM_NAME_MAX * 4 + 4];
    IFM_WARN("auth failure: user=%s from %s: %s", http_log_name(user ? user : "", buf, sizeof buf), r->ip, why);
}

/* ---- the cache of successful checks ---- */

static void cred_key(const http_auth *a, const char *user, const char *password, uint8_t out[32])
{
    char buf[AUTH_CRED_MAX + 2];
    size_t ul = strlen(user), pl = strlen(password);
    if (ul + pl + 1 > sizeof buf) { /* cannot happen: both come from a bounded decode */
        memset(out, 0, 32);
        return;
    }
    memcpy(buf, user, ul + 1);
    memcpy(buf + ul + 1, password, pl);
    unsigned len = 32;
    HMAC(EVP_sha256(), a->secret, sizeof a->secret, (const unsigned char *)buf, ul + 1 + pl, out, &len);
    OPENSSL_cleanse(buf, sizeof buf);
}

static const cache_ent *cache_find(http_auth *a, const uint8_t key[32])
{
    uint64_t now = ifm_now_ms();
    for (size_t i = 0; i < a->ncache; i++) {
        if (now >= a->cache[i].expires) {
            a->cache[i] = a->cache[--a->ncache];
            i--;
            continue;
        }
        if (CRYPTO_memcmp(a->cache[i].key, key, 32) == 0)
            return &a->cache[i];
    }
    return NULL;
}

static void cache_put(http_auth *a, const uint8_t key[32], const char *user)
{
    http_srv *s = a->srv;
    if (!s->auth_cache_ms)
        return;
    cache_ent *e = (cache_ent *)cache_find(a, key);
    if (!e) {
        if (a->ncache < AUTH_CACHE_MAX) {
            e = &a->cache[a->ncache++];
        } else { /* full of live entries: replace the one that ends first */
            e = &a->cache[0];
            for (size_t i = 1; i < a->ncache; i++)
                if (a->cache[i].expires < e->expires)
                    e = &a->cache[i];
        }
    }
    memcpy(e->key, key, 32);
    snprintf(e->user, sizeof e->user, "%s", user);
    e->expires = ifm_now_ms() + s->auth_cache_ms;
}

/* ---- tokens ---- */

static void token_hash(const char *token, uint8_t out[32])
{
    SHA256((const unsigned char *)token, strlen(token), out);
}

static const token_ent *token_find(http_auth *a, const char *token)
{
    size_t n = strlen(token);
    if (n != 64 || strspn(token, "0123456789abcdef") != 64)
        return NULL;
    uint8_t h[32];
    token_hash(token, h);
    uint64_t now = ifm_now_ms();
    for (size_t i = 0; i < a->ntokens; i++) {
        if (now >= a->tokens[i].expires) {
            a->tokens[i] = a->tokens[--a->ntokens];
            i--;
            continue;
        }
        if (CRYPTO_memcmp(a->tokens[i].hash, h, 32) == 0)
            return &a->tokens[i];
    }
    return NULL;
}

/* A new token for `user`: its text in hex[65]. Returns NULL, or why not. */
static const char *token_new(http_auth *a, const char *user, char hex[65], uint64_t *expires_wall)
{
    http_srv *s = a->srv;
    uint64_t now = ifm_now_ms();
    /* Drop expired tokens; keep at most AUTH_TOKENS_PER_USER per user. */
    size_t mine = 0, oldest = SIZE_MAX;
    for (size_t i = 0; i < a->ntokens; i++) {
        if (now >= a->tokens[i].expires) {
            a->tokens[i] = a->tokens[--a->ntokens];
            i--;
            continue;
        }
        if (strcmp(a->tokens[i].user, user) == 0) {
            mine++;
            if (oldest == SIZE_MAX || a->tokens[i].expires < a->tokens[oldest].expires)
                oldest = i;
        }
    }
    if (mine >= AUTH_TOKENS_PER_USER && oldest != SIZE_MAX)
        a->tokens[oldest] = a->tokens[--a->ntokens];
    if (a->ntokens >= AUTH_TOKENS_MAX)
        return "too many live tokens; try again later";
    if (!a->tokens) {
        a->tokens = calloc(AUTH_TOKENS_MAX, sizeof *a->tokens);
        if (!a->tokens)
            return "out of memory";
    }
    uint8_t raw[32];
    if (random_bytes(raw, sizeof raw))
        return "cannot read /dev/urandom";
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    token_ent *t = &a->tokens[a->ntokens++];
    token_hash(hex, t->hash);
    snprintf(t->user, sizeof t->user, "%s", user);
    t->expires = now + s->token_ttl_ms;
    t->expires_wall = ifm_wall_ms() + s->token_ttl_ms;
    *expires_wall = t->expires_wall;
    return NULL;
}

enum MHD_Result auth_token_serve(http_req *r)
{
    http_srv *s = r->srv;
    char hex[65];
    uint64_t expires;
    const char *why = token_new(s->auth, r->user, hex, &expires);
    if (why)
        return http_reply_error(r, strstr(why, "too many") ? 503 : 500, "%s", why);
    IFM_INFO("client=%s new token, valid for %llu s", r->user, (unsigned long long)(s->token_ttl_ms / 1000));
    json_t *body = json_pack("{s:s, s:I, s:s}", "token", hex, "expires", (json_int_t)expires, "user", r->user);
    OPENSSL_cleanse(hex, sizeof hex);
    return http_reply_json(r, 200, body);
}

int auth_session_token(http_srv *s, const char *user, char hex[65])
{
    uint64_t expires;
    if (!s->auth)
        return -1;
    const char *why = token_new(s->auth, user, hex, &expires);
    if (why) {
        IFM_WARN("client=%s no token for the socket.io worker address: %s", user, why);
        return -1;
    }
    IFM_INFO("client=%s new token for the socket.io worker address, valid for %llu s", user,
             (unsigned long long)(s->token_ttl_ms / 1000));
    return 0;
}

/* ---- credential checks: one short-lived MQTT connection each ---- */

static bool auth_refusal(const char *why)
{
    /* ifm_mqtt reports the CONNACK reason as mosquitto_reason_string(rc). */
    static const int codes[] = { MQTT_RC_BAD_USERNAME_OR_PASSWORD, MQTT_RC_NOT_AUTHORIZED, MQTT_RC_BANNED,
                                 MQTT_RC_BAD_AUTHENTICATION_METHOD };
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (strcmp(why, mosquitto_reason_string(codes[i])) == 0)
            return true;
    return false;
}

static void start_probe(http_auth *a);

static void on_probe_retry(ifm_loop *loop, void *arg)
{
    http_auth *a = arg;
    a->probe_timer = 0;
    start_probe(a);
}

typedef enum {
    CHECK_OK,
    CHECK_REFUSED,
    CHECK_ERROR
} check_outcome;

static void check_free(auth_check *c)
{
    http_auth *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->checks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nchecks--;
    ifm_timer_cancel(a->srv->loop, c->timer);
    ifm_mqtt_free(c->m); /* never from inside one of its own callbacks */
    if (!c->probe)
        rl_inflight(a, c->ip, c->user, -1);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

static void check_done(auth_check *c, check_outcome out, const char *why)
{
    http_auth *a = c->a;
    http_srv *s = a->srv;
    if (c->probe) {
        if (out == CHECK_OK) {
            IFM_ERROR("--auth broker: the broker at %s:%d accepted a made-up user and password, so it does not check "
                      "passwords and cannot authenticate HTTP callers; use a secured broker (broker/SECURITY.md) or "
                      "--auth none",
                      s->broker_host, s->broker_port);
            a->fatal = true;
            ifm_loop_stop(s->loop);
        } else if (out == CHECK_REFUSED) {
            IFM_INFO("--auth broker: the broker checks passwords; authenticating HTTP callers against it");
            a->ready = true;
        } else {
            if (!a->probe_warned)
                IFM_WARN("--auth broker: cannot verify that the broker checks passwords yet (%s); retrying", why);
            a->probe_warned = true;
            a->probe_timer = ifm_timer_add(s->loop, AUTH_PROBE_RETRY_MS, on_probe_retry, a);
        }
        check_free(c);
        return;
    }
    if (out == CHECK_OK)
        cache_put(a, c->key, c->user);
    while (c->waiters) {
        http_req *r = c->waiters;
        c->waiters = r->check_next;
        r->check = NULL;
        r->check_next = NULL;
        if (out == CHECK_OK) {
            snprintf(r->user, sizeof r->user, "%s", c->user);
            http_auth_finish(r, 0, 0, false, NULL);
        } else if (out == CHECK_REFUSED) {
            rl_fail(a, r->ip, c->user);
            char msg[160];
            snprintf(msg, sizeof msg, "the broker refused the login (%s)", why);
            log_failure(r, c->user, msg);
            http_auth_finish(r, 401, 0, true, "wrong user name or password");
        } else {
            http_auth_finish(r, 503, 1, false, "cannot check credentials with the broker: %s", why);
        }
    }
    check_free(c);
}

static void on_check_timer(ifm_loop *loop, void *arg)
{
    auth_check *c = arg;
    c->timer = 0;
    const char *why;
    if (ifm_mqtt_connected(c->m))
        check_done(c, CHECK_OK, NULL);
    else if ((why = ifm_mqtt_refused(c->m)))
        check_done(c, auth_refusal(why) ? CHECK_REFUSED : CHECK_ERROR, why);
    else if (ifm_now_ms() >= c->deadline)
        check_done(c, CHECK_ERROR, "no answer in time");
    else
        c->timer = ifm_timer_add(loop, AUTH_POLL_MS, on_check_timer, c);
}

/* Runs inside libmosquitto: only look at the result from a timer. */
static void on_check_conn(ifm_mqtt *m, bool connected, void *arg)
{
    auth_check *c = arg;
    if (!connected)
        return;
    ifm_loop *loop = c->a->srv->loop;
    ifm_timer_cancel(loop, c->timer);
    c->timer = ifm_timer_add(loop, 0, on_check_timer, c);
}

static auth_check *check_start(http_auth *a, const char *user, const char *password, const uint8_t key[32],
                               const char *ip, bool probe)
{
    http_srv *s = a->srv;
    auth_check *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->a = a;
    c->probe = probe;
    memcpy(c->key, key, 32);
    snprintf(c->user, sizeof c->user, "%s", user);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    ifm_mqtt_opts mo = {
        .host = s->broker_host,
        .port = s->broker_port,
        .tls = s->broker_tls,
        .client_id = NULL,
        .name = NULL,
        .username = user,
        .password = password,
        .cafile = s->cafile,
        .keepalive = s->keepalive,
    };
    /* libmosquitto copies the credentials; the caller wipes its copy right after. */
    c->m = ifm_mqtt_new(s->loop, &mo, on_check_conn, c);
    if (!c->m || ifm_mqtt_start(c->m)) {
        ifm_mqtt_free(c->m);
        free(c);
        return NULL;
    }
    c->deadline = ifm_now_ms() + s->timeout_ms;
    c->timer = ifm_timer_add(s->loop, AUTH_POLL_MS, on_check_timer, c);
    c->next = a->checks;
    if (a->checks)
        a->checks->prev = c;
    a->checks = c;
    a->nchecks++;
    if (!probe)
        rl_inflight(a, ip, user, +1);
    return c;
}

static void start_probe(http_auth *a)
{
    uint8_t raw[16], key[32] = { 0 };
    char user[64], password[64];
    if (random_bytes(raw, sizeof raw)) {
        IFM_ERROR("cannot read /dev/urandom");
        a->fatal = true;
        ifm_loop_stop(a->srv->loop);
        return;
    }
    snprintf(user, sizeof user, "icefarm-http-probe-%02x%02x%02x%02x", raw[0], raw[1], raw[2], raw[3]);
    for (size_t i = 4; i < sizeof raw; i++)
        snprintf(password + 2 * (i - 4), 3, "%02x", raw[i]);
    if (!check_start(a, user, password, key, "-", true))
        a->probe_timer = ifm_timer_add(a->srv->loop, AUTH_PROBE_RETRY_MS, on_probe_retry, a);
    OPENSSL_cleanse(password, sizeof password);
}

/* ---- the Authorization header ---- */

/* Strict base64 (standard alphabet, optional padding). Returns the length or -1. */
static long b64_decode(const char *in, size_t n, char *out, size_t cap)
{
    while (n && in[n - 1] == '=')
        n--;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        int v = ch >= 'A' && ch <= 'Z' ? ch - 'A'
            : ch >= 'a' && ch <= 'z'   ? ch - 'a' + 26
            : ch >= '0' && ch <= '9'   ? ch - '0' + 52
            : ch == '+'                ? 62
            : ch == '/'                ? 63
                                       : -1;
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= cap)
                return -1;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (bits >= 6) /* a lone trailing character */
        return -1;
    out[o] = '\0';
    return (long)o;
}

static auth_result reply(http_req *r, enum MHD_Result *rc, unsigned status, bool challenge, unsigned retry_after,
                         const char *msg)
{
    r->challenge = challenge;
    r->retry_after = retry_after;
    *rc = http_reply_error(r, status, "%s", msg);
    return AUTH_REPLIED;
}

static auth_result basic(http_req *r, const char *b64, enum MHD_Result *rc)
{
    http_srv *s = r->srv;
    http_auth *a = s->auth;
    char cred[AUTH_CRED_MAX + 1];
    size_t n = strlen(b64);
    while (n && (b64[n - 1] == ' ' || b64[n - 1] == '\t'))
        n--;
    long len = n <= 2 * AUTH_CRED_MAX ? b64_decode(b64, n, cred, sizeof cred) : -1;
    char *colon = len > 0 ? memchr(cred, ':', (size_t)len) : NULL;
    if (!colon || memchr(cred, '\0', (size_t)len)) {
        OPENSSL_cleanse(cred, sizeof cred);
        return reply(r, rc, 400, false, 0, "malformed Basic credentials (want base64 of user:password)");
    }
    *colon = '\0';
    const char *user = cred, *password = colon + 1;
    auth_result res;
    unsigned wait = rl_blocked(a, r->ip, user);
    uint8_t key[32] = { 0 };
    const token_ent *tok = NULL;
    if (wait) {
        res = reply(r, rc, 429, false, wait,
                    "too many failed authentications for this user from your address; try again later");
    } else if (!api_name_ok(user) || !*password) {
        rl_fail(a, r->ip, user);
        log_failure(r, user, !*password ? "empty password" : "not a valid user name");
        res = reply(r, rc, 401, true, 0, "wrong user name or password");
    } else if (strlen(password) == 64 && (tok = token_find(a, password)) && strcmp(tok->user, user) == 0) {
        /* user:TOKEN, e.g. the userinfo of the worker address /reserve hands the
         * old socket.io clients */
        snprintf(r->user, sizeof r->user, "%s", tok->user);
        res = AUTH_OK;
    } else {
        cred_key(a, user, password, key);
        const cache_ent *hit = cache_find(a, key);
        if (hit && strcmp(hit->user, user) == 0) {
            snprintf(r->user, sizeof r->user, "%s", hit->user);
            res = AUTH_OK;
        } else if (!a->ready) {
            res = reply(r, rc, 503, false, 1, "icefarm-http is still verifying that the broker checks passwords");
        } else {
            auth_check *c = NULL;
            for (c = a->checks; c; c = c->next)
                if (!c->probe && CRYPTO_memcmp(c->key, key, 32) == 0 && strcmp(c->user, user) == 0)
                    break;
            if (!c && a->nchecks >= AUTH_CHECKS_MAX)
                res = reply(r, rc, 503, false, 1, "too many credential checks in progress; try again");
            else if (!c && !(c = check_start(a, user, password, key, r->ip, false)))
                res = reply(r, rc, 503, false, 1, "cannot start a credential check");
            else {
                r->check = c;
                r->check_next = c->waiters;
                c->waiters = r;
                r->state = REQ_AUTH;
                MHD_suspend_connection(r->conn);
                *rc = MHD_YES;
                res = AUTH_PENDING;
            }
        }
    }
    OPENSSL_cleanse(cred, sizeof cred);
    OPENSSL_cleanse(key, sizeof key);
    return res;
}

static auth_result bearer(http_req *r, const char *token, enum MHD_Result *rc)
{
    http_auth *a = r->srv->auth;
    if (r->route == ROUTE_TOKEN)
        return reply(r, rc, 401, true, 0, "POST /token needs Basic credentials (user and password), not a token");
    char tok[80];
    size_t n = strcspn(token, " \t");
    snprintf(tok, sizeof tok, "%.*s", (int)(n < sizeof tok - 1 ? n : sizeof tok - 1), token);
    const token_ent *t = n < sizeof tok ? token_find(a, tok) : NULL;
    OPENSSL_cleanse(tok, sizeof tok);
    if (t) {
        snprintf(r->user, sizeof r->user, "%s", t->user);
        return AUTH_OK;
    }
    unsigned wait = rl_blocked(a, r->ip, AUTH_RL_TOKEN);
    if (wait)
        return reply(r, rc, 429, false, wait, "too many unknown tokens from your address; try again later");
    rl_fail(a, r->ip, AUTH_RL_TOKEN);
    log_failure(r, NULL, "unknown or expired token");
    return reply(r, rc, 401, true, 0, "unknown or expired token (POST /token with Basic credentials for a new one)");
}

auth_result auth_begin(http_req *r, enum MHD_Result *rc)
{
    http_srv *s = r->srv;
    if (s->stopping)
        return reply(r, rc, 503, false, 0, "icefarm-http is shutting down");
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h)
        return reply(r, rc, 401, true, 0,
                     "authentication required: send Authorization: Basic (user:password) or Bearer (a token "
                     "from POST /token)");
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Basic ", 6) == 0 || strncasecmp(h, "Basic\t", 6) == 0) {
        h += 6;
        while (*h == ' ' || *h == '\t')
            h++;
        return basic(r, h, rc);
    }
    if (strncasecmp(h, "Bearer ", 7) == 0 || strncasecmp(h, "Bearer\t", 7) == 0) {
        h += 7;
        while (*h == ' ' || *h == '\t')
            h++;
        return bearer(r, h, rc);
    }
    return reply(r, rc, 401, true, 0, "unsupported authorization scheme: use Basic or Bearer");
}

void auth_detach(http_req *r)
{
    auth_check *c = r->check;
    if (!c)
        return;
    for (http_req **pp = &c->waiters; *pp; pp = &(*pp)->check_next)
        if (*pp == r) {
            *pp = r->check_next;
            break;
        }
    r->check = NULL;
    r->check_next = NULL;
}

int auth_init(http_srv *s)
{
    http_auth *a = calloc(1, sizeof *a);
    if (!a)
        return -1;
    a->srv = s;
    a->rl = calloc(AUTH_RL_MAX, sizeof *a->rl);
    if (!a->rl || random_bytes(a->secret, sizeof a->secret)) {
        free(a->rl);
        free(a);
        return -1;
    }
    s->auth = a;
    start_probe(a);
    return 0;
}

bool auth_failed(const http_srv *s)
{
    return s->auth && s->auth->fatal;
}

void auth_free(http_srv *s)
{
    http_auth *a = s->auth;
    if (!a)
        return;
    while (a->checks) {
        auth_check *c = a->checks;
        while (c->waiters) /* normally none left: the server answered them */
            auth_detach(c->waiters);
        check_free(c);
    }
    ifm_timer_cancel(s->loop, a->probe_timer);
    if (a->tokens)
        OPENSSL_cleanse(a->tokens, AUTH_TOKENS_MAX * sizeof *a->tokens);
    free(a->tokens);
    free(a->rl);
    OPENSSL_cleanse(a, sizeof *a);
    free(a);
    s->auth = NULL;
}
