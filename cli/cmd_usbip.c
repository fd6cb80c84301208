/* icefarm-cli usbip: boards of kind usbip and this machine's kernel.
 *
 *   usbip attach SERIAL... | --amount N
 *       attaches each board to the kernel (vhci_hcd, through sysfs as the usbip
 *       tool does: the import happens here, the kernel gets the socket), follows
 *       every re-export by itself (a 1200-baud touch, a reflash: the worker says
 *       `usbip exported` again and the board is attached again at once), prints
 *       each board's local tty as it appears, and on Ctrl-C detaches and ends the
 *       leases it took itself (--amount). Needs root and vhci_hcd.
 *   usbip tunnel SERIAL [--listen 127.0.0.1:3240]
 *       a local USB/IP endpoint relaying to the board through the broker (TLS,
 *       passwords, the holder-only ACL), so the kernel's own `usbip attach -r
 *       127.0.0.1 -b BUSID` works in a secured farm with no other port open; it
 *       prints that command line with the board's busid.
 *   usbip list HOST[:PORT]
 *       what a USB/IP server lists (icefarm workers list nothing, by design).
 *
 * --json prints one JSON object per line: attached, tty, detached, error.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/usbip_client.h"
#include "icefarm/tcp.h"
#include "usbip_vhci.h"

#define MAX_BOARDS 64
#define TTY_WAIT_MS 15000

typedef enum {
    B_WAITING,   /* for `usbip exported` */
    B_IMPORTING, /* connect + OP_REQ_IMPORT in flight */
    B_ATTACHED
} bstate;

typedef struct att att;

typedef struct {
    att *a;
    char serial[IFM_SERIAL_MAX];
    bstate st;
    char busid[32], host[256], port[16];
    int vport;          /* vhci port while attached */
    unsigned gen;       /* bumps with every import started: stale answers are dropped */
    char tty[64];       /* printed already */
    uint64_t tty_until; /* look for the tty until then */
    uint64_t event_ms;  /* when the last `usbip exported` came */
    bool again;         /* another export came while importing */
} board;

struct att {
    const cli_opts *o;
    icefarm *f;
    vhci v;
    board b[MAX_BOARDS];
    size_t n;
    bool took; /* the leases are ours to end */
    bool stop;
    bool leases_gone; /* stopped because every lease ended: exit 1, like `serial` */
    int exit_code;
};

static void say(att *a, const board *b, const char *event, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void say(att *a, const board *b, const char *event, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (a->o->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "event", event, "serial", b ? b->serial : "", "message", msg,
                              "t_ms", (json_int_t)ifm_wall_ms());
        if (b && b->st == B_ATTACHED) {
            json_object_set_new(j, "port", json_integer(b->vport));
            json_object_set_new(j, "busid", json_string(b->busid));
        }
        if (b && strcmp(event, "tty") == 0)
            json_object_set_new(j, "path", json_string(b->tty));
        cli_print_json(j);
        json_decref(j);
    } else if (strcmp(event, "tty") == 0) {
        printf("%s %s\n", b->serial, b->tty);
        fflush(stdout);
    } else {
        fprintf(stderr, "icefarm-cli: %s%s%s\n", b ? b->serial : "", b ? ": " : "", msg);
    }
}

static board *find(att *a, const char *serial)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->b[i].serial, serial) == 0)
            return &a->b[i];
    return NULL;
}

/* Detaches b's port if it still holds our device. */
static void detach(att *a, board *b, const char *why)
{
    if (b->st != B_ATTACHED)
        return;
    vhci_port p;
    if (vhci_port_get(&a->v, b->vport, &p) == 0 && p.status == VHCI_ST_USED) {
        char err[256];
        if (vhci_detach(&a->v, b->vport, err, sizeof err) != 0)
            say(a, b, "error", "%s", err);
    }
    vhci_unrecord(&a->v, b->vport);
    say(a, b, "detached", "detached from port %d (%s)", b->vport, why);
    b->st = B_WAITING;
    b->tty[0] = '\0';
}

static void start_import(att *a, board *b);

typedef struct {
    board *b;
    unsigned gen;
} import_ctx;

static void imported(int status, int fd, const icefarm_usbip_device *dev, const char *why, void *arg)
{
    import_ctx *ic = arg;
    board *b = ic->b;
    att *a = b->a;
    bool stale = ic->gen != b->gen;
    free(ic);
    if (stale) {
        if (fd >= 0)
            close(fd);
        return;
    }
    if (status) {
        b->st = B_WAITING;
        say(a, b, "error", "import of %s from %s:%s failed: %s", b->busid, b->host, b->port, why);
        if (b->again || status == -EAGAIN || status == -EBUSY) {
            b->again = false;
            start_import(a, b); /* the device was re-enumerating: the next try finds it */
        }
        return;
    }
    int vport = vhci_free_port(&a->v, dev->speed);
    char err[300];
    if (vport < 0) {
        close(fd);
        b->st = B_WAITING;
        say(a, b, "error", "no free vhci_hcd port for a %s-speed device", dev->speed >= 5 ? "super" : "high/full");
        return;
    }
    uint32_t devid = dev->busnum << 16 | dev->devnum;
    if (vhci_attach(&a->v, vport, fd, devid, dev->speed, err, sizeof err) != 0) {
        close(fd);
        b->st = B_WAITING;
        say(a, b, "error", "%s", err);
        return;
    }
    close(fd); /* the kernel holds its own reference now */
    b->st = B_ATTACHED;
    b->vport = vport;
    vhci_record(&a->v, vport, b->host, b->port, b->busid);
    b->tty_until = ifm_now_ms() + TTY_WAIT_MS;
    say(a, b, "attached", "attached %04x:%04x on vhci port %d (%llu ms after the export event)", dev->vid, dev->pid,
        vport, (unsigned long long)(ifm_now_ms() - b->event_ms));
    if (b->again) {
        b->again = false;
        start_import(a, b);
    }
}

static void start_import(att *a, board *b)
{
    if (b->st == B_IMPORTING) {
        b->again = true;
        return;
    }
    detach(a, b, "re-exported");
    import_ctx *ic = malloc(sizeof *ic);
    if (!ic)
        return;
    ic->b = b;
    ic->gen = ++b->gen;
    b->st = B_IMPORTING;
    int rc = icefarm_usbip_import_fd(a->f, b->host, b->port, b->busid, 5000, imported, ic);
    if (rc) {
        free(ic);
        b->st = B_WAITING;
        say(a, b, "error", "cannot import %s: %s", b->busid, icefarm_strerror(rc));
    }
}

/* ---- events ---- */

static bool event_usbip(const icefarm_event *ev, char *busid, char *host, char *port)
{
    size_t len;
    const void *data = icefarm_event_data(ev, &len);
    ifm_doc doc;
    ifm_err err;
    if (!data || ifm_doc_parse(&doc, data, len, &err))
        return false;
    uint64_t p = 0;
    bool ok = ifm_get_str(doc.root, "busid", true, busid, 32, NULL) == 0;
    if (ifm_get_str(doc.root, "host", false, host, 256, NULL))
        host[0] = '\0';
    ifm_get_uint(doc.root, "port", false, 0, 65535, &p, NULL);
    snprintf(port, 16, "%u", (unsigned)(p ? p : 3240));
    ifm_doc_free(&doc);
    return ok && busid[0];
}

static void on_exported(icefarm *f, const icefarm_event *ev, void *arg)
{
    (void)f;
    att *a = arg;
    board *b = find(a, icefarm_event_serial(ev));
    if (!b)
        return;
    char busid[32], host[256], port[16];
    if (!event_usbip(ev, busid, host, port))
        return;
    b->event_ms = ifm_now_ms();
    if (b->st == B_ATTACHED && strcmp(busid, b->busid) == 0) {
        /* a repeat (an announce) while our port still has the device: nothing to do */
        vhci_port p;
        if (vhci_port_get(&a->v, b->vport, &p) == 0 && p.status == VHCI_ST_USED && b->tty[0])
            return;
    }
    snprintf(b->busid, sizeof b->busid, "%s", busid);
    snprintf(b->host, sizeof b->host, "%s", host[0] ? host : "127.0.0.1");
    snprintf(b->port, sizeof b->port, "%s", port);
    start_import(a, b);
}

static void on_detached(icefarm *f, const icefarm_event *ev, void *arg)
{
    (void)f;
    att *a = arg;
    board *b = find(a, icefarm_event_serial(ev));
    if (!b)
        return;
    say(a, b, "away", "the board went away (%s); it is attached again when it is back",
        icefarm_event_reason(ev)[0] ? icefarm_event_reason(ev) : "re-enumerating");
    /* vhci drops the port when the worker closes the connection; if it has not yet,
     * free it now so the device is not seen twice */
    detach(a, b, "the board went away");
}

static void on_lease_end(icefarm *f, const icefarm_event *ev, void *arg)
{
    (void)f;
    att *a = arg;
    board *b = find(a, icefarm_event_serial(ev));
    if (!b)
        return;
    char why[200];
    const char *reason = icefarm_event_reason(ev);
    snprintf(why, sizeof why, "the lease ended%s%s", reason[0] ? ": " : "", reason);
    detach(a, b, why);
    say(a, b, "ended", "%s", why);
    b->st = B_WAITING;
    b->serial[0] = '\0'; /* forget it */
    bool any = false;
    for (size_t i = 0; i < a->n; i++)
        any |= a->b[i].serial[0] != '\0';
    if (!any)
        a->stop = a->leases_gone = true;
}

static void on_signal(icefarm *f, int signo, void *arg)
{
    (void)f;
    (void)signo;
    ((att *)arg)->stop = true;
}

/* Asks the worker to announce the board's export again (we may start after it did). */
static void announce(att *a, board *b)
{
    int rc = icefarm_usbip_announce(a->f, b->serial);
    if (rc)
        say(a, b, "error", "cannot ask for the export: %s", icefarm_strerror(rc));
}

static void look_for_ttys(att *a)
{
    uint64_t now = ifm_now_ms();
    for (size_t i = 0; i < a->n; i++) {
        board *b = &a->b[i];
        if (b->st != B_ATTACHED || b->tty[0] || now > b->tty_until)
            continue;
        char ttys[4][64];
        int n = vhci_ttys(&a->v, b->vport, ttys, 4);
        if (n > 0) {
            snprintf(b->tty, sizeof b->tty, "%s", ttys[0]);
            say(a, b, "tty", "%s", b->tty);
        } else if (now + 100 > b->tty_until) {
            b->tty_until = 0; /* said once */
            say(a, b, "notty", "attached, but no tty appeared (no CDC ACM function, e.g. BOOTSEL)");
        }
    }
}

static int attach_run(att *a)
{
    while (!a->stop) {
        struct pollfd p = { .fd = icefarm_fd(a->f), .events = POLLIN };
        int wait = icefarm_timeout(a->f);
        if (wait < 0 || wait > 100)
            wait = 100;
        if (poll(&p, 1, wait) < 0 && errno != EINTR)
            return cli_error(a->o, CLI_FAILED, "poll: %s", strerror(errno));
        int rc = icefarm_run_once(a->f, 0);
        if (rc && rc != -ETIMEDOUT && rc != -EINTR)
            return cli_error(a->o, CLI_UNREACHABLE, "the farm connection failed: %s", icefarm_strerror(rc));
        look_for_ttys(a);
    }
    return a->exit_code;
}

static int cmd_attach(const cli_opts *o)
{
    if (!o->amount && o->npos < 2)
        return cli_error(o, CLI_USAGE, "usbip attach needs serials, or --amount N to reserve boards of kind usbip");
    if (o->amount && o->npos > 1)
        return cli_error(o, CLI_USAGE, "usbip attach takes serials or --amount, not both");
    att *a = calloc(1, sizeof *a);
    if (!a)
        return cli_error(o, CLI_FAILED, "out of memory");
    a->o = o;
    char why[512];
    int code = CLI_OK;
    if (vhci_open(&a->v, why, sizeof why) != 0) {
        code = cli_error(o, CLI_FAILED, "%s", why);
        free(a);
        return code;
    }
    a->f = cli_connect(o, &code);
    if (!a->f) {
        free(a);
        return code;
    }
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    int src;
    if ((src = icefarm_on_signals(a->f, sigs, 3, on_signal, a)) ||
        (src = icefarm_on(a->f, "usbip exported", on_exported, a)) ||
        (src = icefarm_on(a->f, "usbip detached", on_detached, a)) ||
        (src = icefarm_on(a->f, "reservation end", on_lease_end, a))) {
        code = cli_error(o, CLI_FAILED, "cannot set up event and signal handling: %s", icefarm_strerror(src));
        goto out;
    }
    if (o->amount) {
        char(*serials)[ICEFARM_SERIAL_MAX] = NULL;
        size_t n = 0;
        int rc = icefarm_reserve(a->f, o->amount, "usbip", NULL, 0, o->wait_s * 1000, &serials, &n, why, sizeof why);
        if (rc) {
            code = cli_error(o, rc == -EBUSY ? CLI_NOT_ENOUGH : CLI_FAILED, "reserve --kind usbip: %s", why);
            goto out;
        }
        a->took = true;
        for (size_t i = 0; i < n && a->n < MAX_BOARDS; i++) {
            board *b = &a->b[a->n++];
            b->a = a;
            snprintf(b->serial, sizeof b->serial, "%s", serials[i]);
            say(a, b, "reserved", "reserved with kind usbip");
        }
        free(serials);
    } else {
        for (int i = 1; i < o->npos && a->n < MAX_BOARDS; i++) {
            board *b = &a->b[a->n++];
            b->a = a;
            snprintf(b->serial, sizeof b->serial, "%s", o->pos[i]);
        }
    }
    int wrc = 0;
    for (size_t i = 0; i < a->n && !wrc; i++) {
        if ((wrc = icefarm_watch(a->f, a->b[i].serial)) == 0)
            announce(a, &a->b[i]);
    }
    if (wrc) /* its export would never be heard of: stop here (the leases taken end below) */
        code = cli_error(o, CLI_FAILED, "cannot follow the boards' events: %s", icefarm_strerror(wrc));
    else
        code = attach_run(a);
    if (code == CLI_OK && a->leases_gone)
        code = CLI_FAILED;
    for (size_t i = 0; i < a->n; i++)
        if (a->b[i].serial[0])
            detach(a, &a->b[i], "Ctrl-C");
    if (a->took) {
        const char *ser[MAX_BOARDS];
        size_t k = 0;
        for (size_t i = 0; i < a->n; i++)
            if (a->b[i].serial[0])
                ser[k++] = a->b[i].serial;
        if (k) {
            icefarm_req req = { .verb = "end", .serials = ser, .nserials = k };
            icefarm_reply *r = NULL;
            int rc = icefarm_call(a->f, &req, &r, why, sizeof why);
            if (rc || !icefarm_reply_ok(r))
                cli_error(o, CLI_FAILED, "could not end the leases: %s", rc ? why : icefarm_reply_error(r));
            else
                say(a, NULL, "ended", "ended %zu lease(s)", k);
            icefarm_reply_free(r);
        }
    }
out:
    icefarm_close(a->f);
    free(a);
    return code;
}

static int cmd_list(const cli_opts *o)
{
    if (o->npos != 2)
        return cli_error(o, CLI_USAGE,
                         "usbip list takes one HOST[:PORT]: a USB/IP server (port 3240 unless given), e.g. the "
                         "worker's 'usbip:' address");
    char host[256], port[16] = "3240";
    if (ifm_tcp_split_hostport(o->pos[1], host, sizeof host, port, sizeof port) != 0 || !host[0]) {
        snprintf(host, sizeof host, "%s", o->pos[1]);
        snprintf(port, sizeof port, "3240");
    }
    if (!port[0])
        snprintf(port, sizeof port, "3240");
    icefarm_usbip_device *devs = NULL;
    size_t n = 0;
    char why[512];
    int rc = icefarm_usbip_list(NULL, host, port, o->farm.timeout_ms, &devs, &n, why, sizeof why);
    if (rc)
        return cli_error(o,
                         rc == -ECONNREFUSED || rc == -ETIMEDOUT || rc == -ENOENT || rc == -EHOSTUNREACH ||
                                 rc == -ENETUNREACH
                             ? CLI_UNREACHABLE
                             : CLI_FAILED,
                         "%s", why);
    if (o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr,
                                  json_pack("{s:s, s:s, s:i, s:i}", "busid", devs[i].busid, "path", devs[i].path, "vid",
                                            devs[i].vid, "pid", devs[i].pid));
        json_t *j = json_pack("{s:b, s:o}", "ok", 1, "devices", arr);
        cli_print_json(j);
        json_decref(j);
    } else {
        if (!n)
            printf("%s:%s exports no device (an icefarm worker never lists its boards: the busid comes with the "
                   "`usbip exported` event)\n",
                   host, port);
        for (size_t i = 0; i < n; i++)
            printf("%-12s %04x:%04x %s\n", devs[i].busid, devs[i].vid, devs[i].pid, devs[i].path);
    }
    free(devs);
    return CLI_OK;
}

/* ---- usbip tunnel ---- */

typedef struct {
    const cli_opts *o;
    icefarm_usbip_tunnel *tu;
    char serial[IFM_SERIAL_MAX];
    char busid[32];
    bool stop;
} tun;

static void tun_exported(icefarm *f, const icefarm_event *ev, void *arg)
{
    (void)f;
    tun *t = arg;
    char busid[32], host[256], port[16];
    if (strcmp(icefarm_event_serial(ev), t->serial) != 0 || !event_usbip(ev, busid, host, port))
        return;
    if (strcmp(busid, t->busid) == 0)
        return;
    snprintf(t->busid, sizeof t->busid, "%s", busid);
    int lp = icefarm_usbip_tunnel_port(t->tu);
    char cmdline[200];
    snprintf(cmdline, sizeof cmdline, "usbip --tcp-port %d attach -r 127.0.0.1 -b %s", lp, busid);
    if (t->o->json) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "event", "tunnel", "serial", t->serial, "port", lp, "busid",
                              busid, "command", cmdline);
        cli_print_json(j);
        json_decref(j);
    } else {
        printf("%s\n", cmdline);
        fflush(stdout);
    }
}

static void tun_signal(icefarm *f, int signo, void *arg)
{
    (void)f;
    (void)signo;
    ((tun *)arg)->stop = true;
}

static void tun_lease_end(icefarm *f, const icefarm_event *ev, void *arg)
{
    (void)f;
    tun *t = arg;
    if (strcmp(icefarm_event_serial(ev), t->serial) == 0) {
        const char *reason = icefarm_event_reason(ev);
        cli_error(t->o, CLI_FAILED, "the lease of %s ended%s%s", t->serial, reason[0] ? ": " : "", reason);
        t->stop = true;
    }
}

static int cmd_tunnel(const cli_opts *o)
{
    if (o->npos != 2)
        return cli_error(o, CLI_USAGE, "usbip tunnel SERIAL [--listen 127.0.0.1:3240]");
    tun t = { .o = o };
    snprintf(t.serial, sizeof t.serial, "%s", o->pos[1]);
    int code = CLI_OK;
    icefarm *f = cli_connect(o, &code);
    if (!f)
        return code;
    if ((code = cli_usbip_check_lease(f, o, t.serial)) != 0)
        goto out;
    char why[300];
    int rc = icefarm_usbip_tunnel_open(f, t.serial, o->listen, &t.tu, why, sizeof why);
    if (rc) {
        code = cli_error(o, rc == -EINVAL ? CLI_USAGE : CLI_FAILED, "%s", why);
        goto out;
    }
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    if ((rc = icefarm_on_signals(f, sigs, 3, tun_signal, &t)) ||
        (rc = icefarm_on(f, "usbip exported", tun_exported, &t)) ||
        (rc = icefarm_on(f, "reservation end", tun_lease_end, &t)) || (rc = icefarm_watch(f, t.serial))) {
        code = cli_error(o, CLI_FAILED, "cannot set up event and signal handling: %s", icefarm_strerror(rc));
        goto out;
    }
    icefarm_usbip_announce(f, t.serial);
    fprintf(stderr, "icefarm-cli: %s: USB/IP through the broker on 127.0.0.1:%d (Ctrl-C ends)\n", t.serial,
            icefarm_usbip_tunnel_port(t.tu));
    while (!t.stop) {
        struct pollfd p = { .fd = icefarm_fd(f), .events = POLLIN };
        int wait = icefarm_timeout(f);
        if (wait < 0 || wait > 1000)
            wait = 1000;
        if (poll(&p, 1, wait) < 0 && errno != EINTR)
            break;
        rc = icefarm_run_once(f, 0);
        if (rc && rc != -ETIMEDOUT && rc != -EINTR) {
            code = cli_error(o, CLI_UNREACHABLE, "the farm connection failed: %s", icefarm_strerror(rc));
            break;
        }
    }
    if (t.stop && code == CLI_OK && !t.busid[0])
        code = CLI_OK;
out:
    icefarm_usbip_tunnel_close(t.tu);
    icefarm_close(f);
    return code;
}

int cmd_usbip(const cli_opts *o)
{
    const char *sub = o->npos ? o->pos[0] : "";
    if (strcmp(sub, "attach") == 0)
        return cmd_attach(o);
    if (strcmp(sub, "list") == 0)
        return cmd_list(o);
    if (strcmp(sub, "tunnel") == 0)
        return cmd_tunnel(o);
    return cli_error(o, CLI_USAGE, "usbip attach SERIAL...|--amount N, usbip tunnel SERIAL, or usbip list HOST[:PORT]");
}
