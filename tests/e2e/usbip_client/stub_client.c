/* The host side of qemu_stub.sh: libicefarm's USB/IP client against THE REAL
 * LINUX KERNEL'S USB/IP SERVER (usbip-host + usbipd in a QEMU guest exporting a
 * dummy_hcd + g_serial CDC ACM gadget, usbip.md 4.6).
 *
 *   stub_client HOST PORT
 *
 * Lists the export (0525:a4a7, left unconfigured by usbip-host), imports it,
 * configures it with the configuration value its descriptors give (2 on
 * g_serial), sets line coding and DTR on the communication interface, echoes
 * data through the gadget's tty (the guest runs a cat loop on /dev/ttyGS0), and
 * drives the stub's UNLINK: a pending bulk IN unlinked gets RET_UNLINK
 * -ECONNRESET and no RET_SUBMIT; a bulk OUT the stub has already completed,
 * unlinked before we read its RET_SUBMIT, gets RET_UNLINK 0, which the 6.1 stub
 * sends only after its next completion (usbip.md 1.7) and which must cost
 * nothing. Prints TAP-style "ok"/"not ok" lines and exits non-zero on a failure. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "icefarm/usbip_client.h"
#include "usbip_session.h"

static int g_pass, g_fail;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok" : "not ok");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (ok)
        g_pass++;
    else
        g_fail++;
}

static bool echo(icefarm_usbip *u, const char *msg)
{
    size_t n = strlen(msg);
    if (icefarm_usbip_write(u, msg, n, NULL, NULL) != 0)
        return false;
    char buf[256];
    size_t got = 0;
    while (got < n) {
        ptrdiff_t r = icefarm_usbip_read(u, buf + got, sizeof buf - got, n - got, NULL, 0, 5000);
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return memcmp(buf, msg, n) == 0;
}

static void urb_done(usbc_urb *urb)
{
    (*(int *)urb->arg)++;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: stub_client HOST PORT\n");
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    char why[400];

    /* ---- DEVLIST: usbipd lists the bound gadget, unconfigured ---- */
    icefarm_usbip_device *devs = NULL;
    size_t n = 0;
    int rc = icefarm_usbip_list(NULL, host, port, 10000, &devs, &n, why, sizeof why);
    check(rc == 0, "the kernel's usbipd lists its exports (%s)", rc ? why : "ok");
    const icefarm_usbip_device *g = NULL;
    for (size_t i = 0; i < n; i++)
        if (devs[i].vid == 0x0525 && devs[i].pid == 0xa4a7)
            g = &devs[i];
    check(g != NULL, "the g_serial gadget 0525:a4a7 is among them (%zu devices)", n);
    if (!g)
        return 1;
    char busid[ICEFARM_USBIP_BUSID_MAX];
    snprintf(busid, sizeof busid, "%s", g->busid);
    check(g->config_value == 0, "usbip-host left it unconfigured (bConfigurationValue %u)", g->config_value);
    check(g->speed == 3, "at high speed (%u)", g->speed);
    free(devs);

    /* ---- import, descriptors, SET_CONFIGURATION(2), line coding, DTR ---- */
    icefarm_usbip_opts o = { .host = host, .port = port, .busid = busid, .timeout_ms = 10000, .no_reconnect = true };
    icefarm_usbip *u = NULL;
    rc = icefarm_usbip_open(NULL, &o, true, &u, why, sizeof why);
    check(rc == 0 && icefarm_usbip_get_state(u) == ICEFARM_USBIP_UP, "imported %s and set it up (%s)", busid,
          rc ? why : "up");
    if (rc)
        return 1;
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    check(info.config_value == 2, "configured with the value its descriptors give: %u (g_serial's ACM config is 2)",
          info.config_value);
    check(info.ncdc == 1 && info.comm_iface == 0 && info.data_iface == 1, "one CDC ACM function, interfaces %u/%u",
          info.comm_iface, info.data_iface);
    check(info.dtr && info.rts && info.line.baud == 115200, "DTR and RTS set, 115200 baud");
    printf("# bulk IN 0x%02x, bulk OUT 0x%02x\n", info.ep_in, info.ep_out);
    icefarm_usbip_line_coding lc = { .baud = 9600, .data_bits = 8 };
    check(icefarm_usbip_set_line_coding(u, &lc, NULL, NULL) == 0, "SET_LINE_CODING 9600 8N1 to interface 0");
    check(icefarm_usbip_set_control_lines(u, true, true, NULL, NULL) == 0, "SET_CONTROL_LINE_STATE DTR|RTS");

    /* the guest wrote a line into the gadget's tty before we came: g_serial kept
     * it in the port's buffer and sends it once SET_CONFIGURATION connects the
     * port; its arrival also says the guest's echo holds the tty open (g_serial
     * takes bulk-OUT data only while the tty is open) */
    char hello[64];
    ptrdiff_t hr = icefarm_usbip_read(u, hello, sizeof hello - 1, 0, "\n", 1, 10000);
    check(hr > 0 && memmem(hello, (size_t)hr, "gadget-hello", 12), "the guest's line came through the bulk IN (%td)",
          hr);
    char drain[256];
    while (icefarm_usbip_read(u, drain, sizeof drain, 0, NULL, 0, 300) > 0)
        ;
    /* ---- echo through the gadget's tty ---- */
    check(echo(u, "hello-gadget\n"), "echo through /dev/ttyGS0 in the guest");
    check(echo(u, "a second line, longer than one packet? no, but a second one\n"), "and again");

    /* ---- UNLINK of a pending bulk IN: -ECONNRESET, never a RET_SUBMIT ---- */
    usbc_conn *c = u->c;
    static uint8_t inbuf[512];
    int in_done = 0;
    usbc_urb in = { .ep = info.ep_in, .type = 2, .buf = inbuf, .len = sizeof inbuf, .done = urb_done, .arg = &in_done };
    check(usbc_submit(c, &in) == 0, "an extra bulk IN queued");
    usleep(200000);
    check(usbc_cancel(&in) == 0, "and unlinked while pending");
    icefarm_usbip_stats st0, st;
    icefarm_usbip_get_stats(u, &st0);
    check(echo(u, "after the unlink\n"), "echo after it");
    for (int i = 0; i < 50 && st0.ret_unlink_reset == 0; i++) {
        icefarm_usbip_read(u, inbuf, sizeof inbuf, 1, NULL, 0, 100);
        icefarm_usbip_get_stats(u, &st0);
    }
    check(in_done == 1, "its done ran once (%d)", in_done);
    check(st0.ret_unlink_reset == 1, "the stub answered RET_UNLINK -ECONNRESET (%llu)",
          (unsigned long long)st0.ret_unlink_reset);

    /* ---- UNLINK of a bulk OUT the stub has completed: RET_UNLINK 0, late ---- */
    static uint8_t outbuf[] = "x";
    int out_done = 0;
    usbc_urb out = { .ep = info.ep_out, .type = 2, .buf = outbuf, .len = 1, .done = urb_done, .arg = &out_done };
    check(usbc_submit(c, &out) == 0, "a bulk OUT sent");
    usleep(300000); /* the stub completes it and sends RET_SUBMIT; we do not read it yet */
    check(usbc_cancel(&out) == 0, "and unlinked before its RET_SUBMIT was read");
    /* the echo of "x" comes back on a bulk IN: that completion releases the stub's RET_UNLINK 0 */
    for (int i = 0; i < 30; i++) {
        icefarm_usbip_read(u, inbuf, sizeof inbuf, 1, NULL, 0, 100);
        icefarm_usbip_get_stats(u, &st);
        if (st.ret_unlink_done)
            break;
    }
    check(echo(u, "after the late unlink\n"), "echo after the completed-URB unlink");
    icefarm_usbip_get_stats(u, &st);
    check(st.ret_unlink_done == 1, "the stub answered RET_UNLINK 0: the URB had completed (%llu)",
          (unsigned long long)st.ret_unlink_done);
    check(st.dropped_ret_submit >= 1, "its RET_SUBMIT was consumed and dropped (%llu)",
          (unsigned long long)st.dropped_ret_submit);
    check(st.ret_unlink_late >= 1, "and the RET_UNLINK 0 came after another URB's completion (%llu late)",
          (unsigned long long)st.ret_unlink_late);
    check(icefarm_usbip_get_state(u) == ICEFARM_USBIP_UP, "the session is still up");
    printf("# urbs %llu submitted, %llu completed, %llu unlinks sent\n", (unsigned long long)st.urbs_submitted,
           (unsigned long long)st.urbs_completed, (unsigned long long)st.unlinks_sent);
    icefarm_usbip_close(u);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
