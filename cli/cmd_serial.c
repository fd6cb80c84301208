/* icefarm-cli serial SERIAL: a board's CDC ACM console through the userspace
 * USB/IP client (libicefarm, icefarm/usbip_client.h): no root, no kernel module.
 *
 *   stdin/stdout (default): bytes in, bytes out; after stdin's EOF nothing more
 *     is sent and the board's output keeps coming until Ctrl-C (or SIGTERM);
 *   --pty [--link PATH]: a pseudo-terminal that any serial program opens
 *     (picocom, screen, pyserial); its path is printed (and linked at PATH).
 *
 * A pty carries no DTR, and the firmware prints nothing without it, so the
 * session asserts DTR and RTS itself, as a real /dev/ttyACM does: while a
 * program has the pty open (the master sees no hang-up), DTR and RTS are up,
 * and they drop when the last one closes it, so the firmware greets every new
 * opener ("Waiting for bitstream transfer") like a locally plugged board. They
 * go up 50 ms after the open, once the opener has set its mode and flushed its
 * input (pyserial and picocom flush at open). In stdin/stdout mode they are up
 * for the whole session. Either way they go down when `serial` ends, as on a
 * tty's last close, so the next console is greeted too.
 *
 * Line coding set on the pty (baud, data bits, parity, stop bits) is relayed to
 * the board as SET_LINE_CODING: the master is in packet mode, so a program that
 * sets EXTPROC is noticed at once (TIOCPKT_IOCTL), and the slave's termios are
 * watched every 100 ms while the pty is open for the others (we never change
 * the opener's termios ourselves). So `stty -F PTY 1200`, picocom -b 1200 or
 * pyserial's baudrate=1200 is the 1200-baud touch. The pty stays across
 * re-enumerations: while the board is away nothing is read from it (writers
 * block), and output resumes when it is back.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/grow.h"
#include "icefarm/usbip_client.h"

typedef struct {
    const cli_opts *o;
    icefarm *f;
    icefarm_usbip *u;
    char serial[IFM_SERIAL_MAX];
    int in_fd, out_fd; /* stdin/stdout, or the pty master twice */
    bool pty;
    bool peer_open;     /* a program has the pty's slave open */
    uint64_t lines_due; /* when DTR/RTS follow the opener (0: done) */
    char pty_path[128];
    icefarm_usbip_state st;
    bool writing; /* a write to the board is in flight */
    uint8_t wbuf[4096];
    uint8_t *pend; /* board output the local side has not taken yet */
    size_t pend_len, pend_cap;
    icefarm_usbip_line_coding lc; /* as the pty's termios last said */
    bool in_eof;
    bool retrying;       /* GONE was reported and the session is importing again */
    char last_gone[512]; /* the reason last reported while retrying */
    bool stop;
    int exit_code;
} ser;

/* ---- reporting ---- */

static void report(ser *s, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(ser *s, const char *event, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->o->json && s->pty) {
        json_t *j = json_pack("{s:s, s:s, s:s}", "event", event, "serial", s->serial, "message", msg);
        cli_print_json(j);
        json_decref(j);
    } else {
        fprintf(stderr, "icefarm-cli: serial %s: %s\n", s->serial, msg);
    }
}

/* ---- the lease check ---- */

int cli_usbip_check_lease(icefarm *f, const cli_opts *o, const char *board)
{
    ser sv = { .o = o, .f = f };
    snprintf(sv.serial, sizeof sv.serial, "%s", board);
    ser *s = &sv;
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    cli_reply r = { 0 };
    int rc = cli_call(s->f, s->o, &req, NULL, 0, &r);
    if (rc)
        return rc;
    char kind[IFM_KIND_MAX], holder[IFM_NAME_MAX];
    bool known = cli_status_board(&r, s->serial, holder, sizeof holder, kind, sizeof kind);
    cli_reply_free(&r);
    const char *me = icefarm_name(s->f);
    if (!known)
        return cli_error(s->o, CLI_FAILED, "unknown serial %s (404: no worker has reported it; see icefarm-cli status)",
                         s->serial);
    if (!holder[0])
        return cli_error(s->o, CLI_FAILED,
                         "board %s is not reserved: its USB device is exported only to a holder of kind usbip. "
                         "Reserve it with: icefarm-cli reserve --kind usbip %s",
                         s->serial, s->serial);
    if (strcmp(holder, me) != 0)
        return cli_error(s->o, CLI_FAILED, "board %s is reserved by %s, not by you (%s)", s->serial, holder, me);
    if (strcmp(kind, "usbip") != 0)
        return cli_error(s->o, CLI_FAILED,
                         "board %s is reserved by you with kind %s, not usbip, so its USB device is not exported. "
                         "Reserve a board with kind usbip: icefarm-cli reserve --kind usbip --amount 1 "
                         "(or end this lease and: icefarm-cli reserve --kind usbip %s)",
                         s->serial, kind[0] ? kind : "?", s->serial);
    return 0;
}

/* ---- the pty ---- */

static uint32_t speed_to_baud(speed_t sp)
{
    static const speed_t sps[] = { B50,     B75,      B110,     B134,     B150,     B200,     B300,
                                   B600,    B1200,    B1800,    B2400,    B4800,    B9600,    B19200,
                                   B38400,  B57600,   B115200,  B230400,  B460800,  B500000,  B576000,
                                   B921600, B1000000, B1152000, B1500000, B2000000, B3000000, B4000000 };
    static const uint32_t bauds[] = { 50,     75,      110,     134,     150,     200,     300,
                                      600,    1200,    1800,    2400,    4800,    9600,    19200,
                                      38400,  57600,   115200,  230400,  460800,  500000,  576000,
                                      921600, 1000000, 1152000, 1500000, 2000000, 3000000, 4000000 };
    for (size_t i = 0; i < sizeof sps / sizeof *sps; i++)
        if (sps[i] == sp)
            return bauds[i];
    return 0;
}

/* The line coding a termios describes. */
static icefarm_usbip_line_coding coding_of(const struct termios *t)
{
    icefarm_usbip_line_coding lc = { .baud = speed_to_baud(cfgetospeed(t)) };
    switch (t->c_cflag & CSIZE) {
    case CS5:
        lc.data_bits = 5;
        break;
    case CS6:
        lc.data_bits = 6;
        break;
    case CS7:
        lc.data_bits = 7;
        break;
    default:
        lc.data_bits = 8;
    }
    lc.stop_bits = (t->c_cflag & CSTOPB) ? 2 : 0;
    if (t->c_cflag & PARENB) {
        if (t->c_cflag & CMSPAR)
            lc.parity = (t->c_cflag & PARODD) ? 3 : 4;
        else
            lc.parity = (t->c_cflag & PARODD) ? 1 : 2;
    }
    return lc;
}

static void line_set(icefarm_usbip *u, int status, void *arg)
{
    (void)u;
    ser *s = arg;
    if (status && status != -ENODEV)
        report(s, "warning", "SET_LINE_CODING failed: %s", icefarm_strerror(status));
}

/* Relays a changed line coding of the pty to the board. */
static void look_at_termios(ser *s)
{
    if (!s->pty)
        return;
    struct termios t;
    if (tcgetattr(s->in_fd, &t) != 0) /* on a master: the slave's termios */
        return;
    icefarm_usbip_line_coding lc = coding_of(&t);
    if (!lc.baud || memcmp(&lc, &s->lc, sizeof lc) == 0)
        return;
    s->lc = lc;
    if (s->st != ICEFARM_USBIP_UP)
        return; /* the next import sets the library's own; a change now is remembered */
    if (lc.baud == 1200)
        report(s, "touch", "1200 baud set on the pty: the board reboots into its bootloader");
    int rc = icefarm_usbip_set_line_coding(s->u, &lc, line_set, s);
    if (rc)
        report(s, "warning", "cannot send the line coding: %s", icefarm_strerror(rc));
}

static int open_pty(ser *s)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0 || grantpt(m) || unlockpt(m))
        return cli_error(s->o, CLI_FAILED, "cannot create a pseudo-terminal: %s", strerror(errno));
    const char *name = ptsname(m);
    if (!name)
        return cli_error(s->o, CLI_FAILED, "cannot name the pseudo-terminal: %s", strerror(errno));
    snprintf(s->pty_path, sizeof s->pty_path, "%s", name);
    /* Open the slave once and close it: until a slave has been open, the master
     * shows no hang-up (which is how openers are noticed) and the slave's line
     * discipline echoes what the board prints back to the board. */
    int sl = open(s->pty_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (sl < 0)
        return cli_error(s->o, CLI_FAILED, "cannot open %s: %s", s->pty_path, strerror(errno));
    close(sl);
    /* the slave's termios start as the kernel's default; every opener sets its own */
    struct termios t;
    if (tcgetattr(m, &t) == 0)
        s->lc = coding_of(&t);
    int one = 1;
    if (ioctl(m, TIOCPKT, &one) != 0)
        return cli_error(s->o, CLI_FAILED, "cannot put the pty in packet mode: %s", strerror(errno));
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    s->in_fd = s->out_fd = m;
    if (s->o->link) {
        unlink(s->o->link);
        if (symlink(s->pty_path, s->o->link) != 0)
            return cli_error(s->o, CLI_FAILED, "cannot link %s to %s: %s", s->o->link, s->pty_path, strerror(errno));
    }
    if (s->o->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s?}", "event", "pty", "serial", s->serial, "path", s->pty_path, "link",
                              s->o->link);
        cli_print_json(j);
        json_decref(j);
    } else {
        printf("%s\n", s->o->link ? s->o->link : s->pty_path);
        fflush(stdout);
        fprintf(stderr, "icefarm-cli: serial %s: console on %s%s%s (Ctrl-C ends)\n", s->serial, s->pty_path,
                s->o->link ? ", linked at " : "", s->o->link ? s->o->link : "");
    }
    return 0;
}

static void lines_set(icefarm_usbip *u, int status, void *arg)
{
    (void)u;
    ser *s = arg;
    if (status && status != -ENODEV)
        report(s, "warning", "SET_CONTROL_LINE_STATE failed: %s", icefarm_strerror(status));
}

/* DTR and RTS follow whether a program has the pty open. */
static void apply_lines(ser *s)
{
    if (s->st != ICEFARM_USBIP_UP || !s->u)
        return;
    icefarm_usbip_info info;
    icefarm_usbip_get_info(s->u, &info);
    if (info.dtr == s->peer_open && info.rts == s->peer_open)
        return;
    int rc = icefarm_usbip_set_control_lines(s->u, s->peer_open, s->peer_open, lines_set, s);
    if (rc)
        report(s, "warning", "cannot set DTR/RTS: %s", icefarm_strerror(rc));
}

/* Whether the slave is open now: the master sees a hang-up while it is not. */
static void look_at_peer(ser *s)
{
    struct pollfd p = { .fd = s->in_fd, .events = POLLIN };
    if (poll(&p, 1, 0) < 0)
        return;
    bool open = !(p.revents & POLLHUP);
    if (open == s->peer_open)
        return;
    s->peer_open = open;
    s->pend_len = 0; /* output nobody read belongs to the previous opener */
    if (open) {
        report(s, "opened", "the pty was opened: DTR and RTS up");
        look_at_termios(s);
        s->lines_due = ifm_now_ms() + 50; /* after the opener has set its mode and flushed */
        return;
    }
    report(s, "closed", "the pty was closed: DTR and RTS down");
    s->lines_due = 0;
    apply_lines(s);
}

/* ---- data ---- */

static void on_data(icefarm_usbip *u, const uint8_t *data, size_t len, void *arg)
{
    ser *s = arg;
    if (s->pend_len + len > s->pend_cap) {
        uint8_t *p = ifm_grow_bytes(s->pend, &s->pend_cap, s->pend_len + len, 65536, 0);
        if (!p) {
            s->stop = true;
            s->exit_code = cli_error(s->o, CLI_FAILED, "out of memory");
            return;
        }
        s->pend = p;
    }
    memcpy(s->pend + s->pend_len, data, len);
    s->pend_len += len;
    if (s->pend_len >= 65536)
        icefarm_usbip_pause(u, true); /* the local side is slow: the board waits */
}

static void flush_out(ser *s)
{
    while (s->pend_len) {
        ssize_t n = write(s->out_fd, s->pend, s->pend_len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (!s->pty) { /* stdout went away */
                s->stop = true;
                return;
            }
            return;
        }
        memmove(s->pend, s->pend + n, s->pend_len - (size_t)n);
        s->pend_len -= (size_t)n;
    }
    icefarm_usbip_pause(s->u, false);
}

static void written(icefarm_usbip *u, int status, void *arg)
{
    (void)u;
    ser *s = arg;
    s->writing = false;
    if (status && status != -ENODEV)
        report(s, "warning", "a write to the board failed: %s", icefarm_strerror(status));
}

static void read_in(ser *s)
{
    ssize_t n = read(s->in_fd, s->wbuf, sizeof s->wbuf);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != EIO)
            s->in_eof = true;
        return;
    }
    if (n == 0) {
        s->in_eof = !s->pty;
        return;
    }
    const uint8_t *p = s->wbuf;
    size_t len = (size_t)n;
    if (s->pty) {
        /* packet mode: a status byte first; TIOCPKT_DATA (0) means data follows */
        uint8_t st = p[0];
        p++;
        len--;
        if (st != TIOCPKT_DATA) {
            if (st & TIOCPKT_IOCTL)
                look_at_termios(s);
            return;
        }
    }
    if (!len)
        return;
    int rc = icefarm_usbip_write(s->u, p, len, written, s);
    if (rc == 0)
        s->writing = true;
    else
        report(s, "warning", "dropped %zu bytes: %s", len, icefarm_strerror(rc));
}

/* ---- the session ---- */

static void on_state(icefarm_usbip *u, icefarm_usbip_state st, const char *why, void *arg)
{
    ser *s = arg;
    s->u = u; /* also while icefarm_usbip_open is still waiting */
    s->st = st;
    /* While the board or its worker is away the session retries every second:
     * say so once, and again only when the reason changes, not twice a second. */
    bool quiet = false;
    const char *note = "";
    if (st == ICEFARM_USBIP_CONNECTING) {
        quiet = s->retrying;
    } else if (st == ICEFARM_USBIP_GONE) {
        const char *w = why ? why : "";
        quiet = s->retrying && strcmp(s->last_gone, w) == 0;
        if (!s->retrying)
            note = " (trying again until it is back or the lease ends)";
        s->retrying = true;
        snprintf(s->last_gone, sizeof s->last_gone, "%s", w);
    } else {
        s->retrying = false;
    }
    if (!quiet)
        report(s, icefarm_usbip_state_name(st), "%s: %s%s", icefarm_usbip_state_name(st), why ? why : "", note);
    if (st == ICEFARM_USBIP_UP) {
        look_at_termios(s); /* a coding set while the board was away */
        if (s->pty && !s->lines_due)
            apply_lines(s);
    }
    if (st == ICEFARM_USBIP_CLOSED) {
        s->stop = true;
        s->exit_code = CLI_FAILED;
    }
}

static void on_signal(icefarm *f, int signo, void *arg)
{
    (void)f;
    (void)signo;
    ser *s = arg;
    s->stop = true;
}

static int run(ser *s)
{
    uint64_t next_look = 0;
    while (!s->stop) {
        struct pollfd p[3];
        int n = 0;
        p[n++] = (struct pollfd){ .fd = icefarm_fd(s->f), .events = POLLIN };
        int in_i = -1, out_i = -1;
        if (s->pty)
            look_at_peer(s);
        bool local_open = !s->pty || s->peer_open;
        /* read the local side only while the board takes it (writers block meanwhile) */
        if (local_open && !s->in_eof && !s->writing && s->st == ICEFARM_USBIP_UP) {
            in_i = n;
            p[n++] = (struct pollfd){ .fd = s->in_fd, .events = POLLIN };
        }
        if (s->pend_len && local_open) {
            if (s->out_fd == s->in_fd && in_i >= 0) {
                p[in_i].events |= POLLOUT;
                out_i = in_i;
            } else {
                out_i = n;
                p[n++] = (struct pollfd){ .fd = s->out_fd, .events = POLLOUT };
            }
        }
        int wait = icefarm_timeout(s->f);
        if (s->pty && (wait < 0 || wait > 100))
            wait = 100;
        if (s->lines_due) {
            uint64_t now = ifm_now_ms();
            int left = s->lines_due > now ? (int)(s->lines_due - now) : 0;
            if (left < wait)
                wait = left;
        }
        if (poll(p, (nfds_t)n, wait) < 0 && errno != EINTR)
            return cli_error(s->o, CLI_FAILED, "poll: %s", strerror(errno));
        if (out_i >= 0 && (p[out_i].revents & (POLLOUT | POLLERR | POLLHUP)))
            flush_out(s);
        if (in_i >= 0 && (p[in_i].revents & POLLIN))
            read_in(s);
        int rc = icefarm_run_once(s->f, 0);
        if (rc && rc != -ETIMEDOUT && rc != -EINTR)
            return cli_error(s->o, CLI_UNREACHABLE, "the farm connection failed: %s", icefarm_strerror(rc));
        if (s->pend_len && (!s->pty || s->peer_open))
            flush_out(s);
        uint64_t now = ifm_now_ms();
        if (s->pty && s->lines_due && now >= s->lines_due) {
            s->lines_due = 0;
            apply_lines(s);
        }
        if (s->pty && s->peer_open && now >= next_look) {
            look_at_termios(s);
            next_look = now + 100;
        }
    }
    return s->exit_code;
}

int cmd_serial(const cli_opts *o)
{
    if (o->npos != 1)
        return cli_error(o, CLI_USAGE,
                         "serial takes one board serial (icefarm-cli serial SERIAL [--pty [--link PATH]])");
    if (o->link && !o->pty)
        return cli_error(o, CLI_USAGE, "--link goes with --pty");
    ser s = { .o = o, .in_fd = STDIN_FILENO, .out_fd = STDOUT_FILENO, .st = ICEFARM_USBIP_CONNECTING };
    snprintf(s.serial, sizeof s.serial, "%s", o->pos[0]);
    int code = CLI_OK;
    s.f = cli_connect(o, &code);
    if (!s.f)
        return code;
    code = cli_usbip_check_lease(s.f, o, s.serial);
    if (code)
        goto out;
    s.pty = o->pty;
    if (s.pty && (code = open_pty(&s)) != 0)
        goto out;
    if (!s.pty)
        fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    int src = icefarm_on_signals(s.f, sigs, 3, on_signal, &s);
    if (src) {
        code = cli_error(o, CLI_FAILED, "cannot set up signal handling: %s", icefarm_strerror(src));
        goto out;
    }
    icefarm_usbip_opts uo = {
        .serial = s.serial,
        .tunnel = o->tunnel,
        .no_dtr = o->pty, /* in pty mode DTR follows the pty's openers */
        .cdc_interface = (uint8_t)(o->cdc_interface > 0 ? o->cdc_interface : 0),
        .on_state = on_state,
        .on_data = on_data,
        .arg = &s,
        .timeout_ms = o->farm.timeout_ms,
    };
    char why[512];
    int rc = icefarm_usbip_open(s.f, &uo, true, &s.u, why, sizeof why);
    if (rc) {
        s.u = NULL; /* on_state saw the session, but a failed open has freed it */
        code = cli_error(o, rc == -ENOTCONN ? CLI_UNREACHABLE : CLI_FAILED, "%s", why);
        goto out;
    }
    code = run(&s);
    /* Hang up as a tty's last close does (HUPCL): DTR and RTS go down, so the
     * firmware sees the next console open and greets it again. */
    if (s.u && s.st == ICEFARM_USBIP_UP)
        icefarm_usbip_set_control_lines(s.u, false, false, NULL, NULL);
    if (s.u) {
        icefarm_usbip_info info;
        icefarm_usbip_get_info(s.u, &info);
        if (o->json && s.pty) {
            json_t *j = json_pack("{s:s, s:s, s:i}", "event", "end", "serial", s.serial, "imports", info.imports);
            cli_print_json(j);
            json_decref(j);
        }
    }
out:
    icefarm_usbip_close(s.u);
    if (o->link && s.pty)
        unlink(o->link);
    if (s.pty && s.in_fd >= 0 && s.in_fd != STDIN_FILENO)
        close(s.in_fd);
    free(s.pend);
    icefarm_close(s.f);
    return code;
}
