/* The USB descriptors of a simulated board, one set per identity, as the real
 * firmware declares them (pico-sdk stdio USB, the pico-ice firmware, the bootrom):
 *
 *   default firmware  2e8a:0009 "Pico" (pico-sdk stdio USB): IAD + CDC (comm
 *                     interface 0 with interrupt IN 0x81, data interface 1 with
 *                     bulk 0x02/0x82) and the SDK's vendor reset interface 2;
 *   pico-ice firmware 1209:b1c0 "pico-ice" (pico-ice-sdk): CDC0 "RP2040 logs" on
 *                     interfaces 0/1 (0x81, 0x02/0x82), CDC1 "iCE40 UART" on 2/3
 *                     (0x83, 0x04/0x84), DFU on interface 4 with two alternate
 *                     settings "iCE40 DFU (Flash)" and "iCE40 DFU (CRAM)";
 *   BOOTSEL           2e8a:000f "RP2350 Boot" (bootrom): mass storage on
 *                     interface 0 (0x81/0x02) and PICOBOOT on 1 (0x03/0x84).
 *
 * All are full-speed devices with 64-byte packets and one configuration. The
 * tables are built once by sim_desc_build(); the walkers below read any of them. */
#include <string.h>

#include "sim_internal.h"

typedef struct {
    uint8_t *p;
    size_t n, cap;
} desc_buf;

static void put(desc_buf *d, const uint8_t *b, size_t n)
{
    if (d->n + n <= d->cap)
        memcpy(d->p + d->n, b, n);
    d->n += n; /* an overflow shows in the length check of sim_desc_build */
}

static void iface(desc_buf *d, uint8_t num, uint8_t alt, uint8_t neps, uint8_t cls, uint8_t sub, uint8_t proto,
                  uint8_t istr)
{
    const uint8_t b[9] = { 9, 4, num, alt, neps, cls, sub, proto, istr };
    put(d, b, sizeof b);
}

static void endpoint(desc_buf *d, uint8_t addr, uint8_t type, uint16_t mps, uint8_t interval)
{
    const uint8_t b[7] = { 7, 5, addr, type, (uint8_t)mps, (uint8_t)(mps >> 8), interval };
    put(d, b, sizeof b);
}

/* IAD + CDC ACM: comm interface `comm` (notifications on `notify`), data
 * interface comm + 1 (bulk `out` / `in`). */
static void cdc(desc_buf *d, uint8_t comm, uint8_t istr, uint8_t notify, uint8_t out, uint8_t in)
{
    const uint8_t iad[8] = { 8, 0x0b, comm, 2, 2, 2, 0, istr };
    put(d, iad, sizeof iad);
    iface(d, comm, 0, 1, 2, 2, 0, istr);
    const uint8_t header[5] = { 5, 0x24, 0x00, 0x20, 0x01 };
    const uint8_t callmgmt[5] = { 5, 0x24, 0x01, 0x00, (uint8_t)(comm + 1) };
    const uint8_t acm[4] = { 4, 0x24, 0x02, 0x02 };
    const uint8_t uni[5] = { 5, 0x24, 0x06, comm, (uint8_t)(comm + 1) };
    put(d, header, sizeof header);
    put(d, callmgmt, sizeof callmgmt);
    put(d, acm, sizeof acm);
    put(d, uni, sizeof uni);
    endpoint(d, notify, WRK_EP_INTERRUPT, 8, 16);
    iface(d, (uint8_t)(comm + 1), 0, 2, 0x0a, 0, 0, 0);
    endpoint(d, out, WRK_EP_BULK, 64, 0);
    endpoint(d, in, WRK_EP_BULK, 64, 0);
}

static void dfu(desc_buf *d, uint8_t num, uint8_t alt, uint8_t istr)
{
    iface(d, num, alt, 0, 0xfe, 0x01, 0x02, istr);
    /* bmAttributes: will detach, manifestation tolerant, download; 1000 ms detach
     * timeout, 4096-byte transfers, DFU 1.1 */
    const uint8_t func[9] = { 9, 0x21, 0x0d, 0xe8, 0x03, 0x00, 0x10, 0x10, 0x01 };
    put(d, func, sizeof func);
}

static size_t config(desc_buf *d, uint8_t nifaces, void (*body)(desc_buf *))
{
    size_t start = d->n;
    const uint8_t c[9] = { 9, 2, 0, 0, nifaces, 1, 0, 0x80, 250 };
    put(d, c, sizeof c);
    body(d);
    size_t total = d->n - start;
    if (d->n <= d->cap) {
        d->p[start + 2] = (uint8_t)total;
        d->p[start + 3] = (uint8_t)(total >> 8);
    }
    return total;
}

static void body_default(desc_buf *d)
{
    cdc(d, 0, 4, 0x81, 0x02, 0x82);
    iface(d, 2, 0, 0, 0xff, 0x00, 0x01, 5); /* pico-sdk's reset interface */
}

static void body_pico_ice(desc_buf *d)
{
    cdc(d, 0, 4, 0x81, 0x02, 0x82);
    cdc(d, 2, 5, 0x83, 0x04, 0x84);
    dfu(d, 4, 0, 6);
    dfu(d, 4, 1, 7);
}

static void body_bootsel(desc_buf *d)
{
    iface(d, 0, 0, 2, 0x08, 0x06, 0x50, 0);
    endpoint(d, 0x81, WRK_EP_BULK, 64, 0);
    endpoint(d, 0x02, WRK_EP_BULK, 64, 0);
    iface(d, 1, 0, 2, 0xff, 0x00, 0x00, 0);
    endpoint(d, 0x03, WRK_EP_BULK, 64, 0);
    endpoint(d, 0x84, WRK_EP_BULK, 64, 0);
}

static void device(uint8_t out[18], uint8_t cls, uint8_t sub, uint8_t proto, uint16_t vid, uint16_t pid)
{
    const uint8_t b[18] = {
        18,   1,    0x00,  0x02, /* USB 2.0 */
        cls,  sub,  proto, 64,   (uint8_t)vid, (uint8_t)(vid >> 8), (uint8_t)pid, (uint8_t)(pid >> 8),
        0x00, 0x01, /* bcdDevice 1.00 */
        1,    2,    3,     1
    };
    memcpy(out, b, sizeof b);
}

static const char *const strings_default[] = { NULL, "Raspberry Pi", "Pico", NULL, "Board CDC", "Reset" };
static const char *const strings_pico_ice[] = {
    NULL, "tinyVision.ai Inc.", "pico-ice", NULL, "RP2040 logs", "iCE40 UART", "iCE40 DFU (Flash)", "iCE40 DFU (CRAM)"
};
static const char *const strings_bootsel[] = { NULL, "Raspberry Pi", "RP2350 Boot", NULL };

int sim_desc_build(sim_descs *s)
{
    desc_buf d = { s->cfg_default, 0, sizeof s->cfg_default };
    size_t n[3];
    n[0] = config(&d, 3, body_default);
    d = (desc_buf){ s->cfg_pico_ice, 0, sizeof s->cfg_pico_ice };
    n[1] = config(&d, 5, body_pico_ice);
    d = (desc_buf){ s->cfg_bootsel, 0, sizeof s->cfg_bootsel };
    n[2] = config(&d, 2, body_bootsel);
    if (n[0] > sizeof s->cfg_default || n[1] > sizeof s->cfg_pico_ice || n[2] > sizeof s->cfg_bootsel)
        return -1;
    device(s->dev_default, 0xef, 0x02, 0x01, WRK_VID_RPI, WRK_PID_PICO_STDIO);
    device(s->dev_pico_ice, 0xef, 0x02, 0x01, WRK_VID_PIDCODES, WRK_PID_PICO_ICE);
    device(s->dev_bootsel, 0x00, 0x00, 0x00, WRK_VID_RPI, WRK_PID_BOOTSEL);
    s->id[SIM_ID_DEFAULT] = (sim_identity){ s->dev_default, s->cfg_default, n[0], strings_default,
                                            sizeof strings_default / sizeof *strings_default };
    s->id[SIM_ID_PICO_ICE] = (sim_identity){ s->dev_pico_ice, s->cfg_pico_ice, n[1], strings_pico_ice,
                                             sizeof strings_pico_ice / sizeof *strings_pico_ice };
    s->id[SIM_ID_BOOTSEL] = (sim_identity){ s->dev_bootsel, s->cfg_bootsel, n[2], strings_bootsel,
                                            sizeof strings_bootsel / sizeof *strings_bootsel };
    return 0;
}

/* ---- walking a configuration descriptor ---- */

/* The next descriptor at *off (advanced past it), or NULL at the end or on a
 * malformed one. */
static const uint8_t *next_desc(const uint8_t *cfg, size_t len, size_t *off)
{
    if (*off + 2 > len || cfg[*off] < 2 || *off + cfg[*off] > len)
        return NULL;
    const uint8_t *p = cfg + *off;
    *off += p[0];
    return p;
}

void sim_desc_info(const sim_identity *id, uint8_t config_value, wrk_usb_desc *out)
{
    memcpy(out->device, id->device, sizeof out->device);
    out->config_value = config_value;
    out->nifaces = 0;
    memset(out->iface, 0, sizeof out->iface);
    if (config_value == 0)
        return;
    size_t off = 0;
    for (const uint8_t *p; (p = next_desc(id->config, id->config_len, &off));) {
        if (p[1] != 4 || p[0] < 9 || p[2] >= WRK_USB_MAX_IFACES)
            continue;
        uint8_t num = p[2];
        if (p[3] == 0) {
            out->iface[num].cls = p[5];
            out->iface[num].subclass = p[6];
            out->iface[num].protocol = p[7];
        }
        out->iface[num].nalts++;
        if (num + 1 > out->nifaces)
            out->nifaces = (uint8_t)(num + 1);
    }
}

int sim_desc_endpoints(const sim_identity *id, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max)
{
    size_t off = 0, n = 0;
    bool in_it = false, found = false;
    for (const uint8_t *p; (p = next_desc(id->config, id->config_len, &off));) {
        if (p[1] == 4 && p[0] >= 9) {
            in_it = p[2] == iface && p[3] == alt;
            found |= in_it;
        } else if (p[1] == 5 && p[0] >= 7 && in_it && n < max) {
            eps[n++] = (wrk_usb_ep){
                .addr = p[2], .type = (uint8_t)(p[3] & 3), .interval = p[6], .max_packet = (uint16_t)(p[4] | p[5] << 8)
            };
        }
    }
    return found ? (int)n : -ENOENT;
}

int sim_desc_find_ep(const sim_identity *id, const uint8_t *alts, uint8_t addr, wrk_usb_ep *ep, uint8_t *iface)
{
    size_t off = 0;
    bool in_it = false;
    uint8_t cur = 0;
    for (const uint8_t *p; (p = next_desc(id->config, id->config_len, &off));) {
        if (p[1] == 4 && p[0] >= 9) {
            cur = p[2];
            in_it = cur < WRK_USB_MAX_IFACES && p[3] == alts[cur];
        } else if (p[1] == 5 && p[0] >= 7 && in_it && p[2] == addr) {
            *ep = (wrk_usb_ep){
                .addr = p[2], .type = (uint8_t)(p[3] & 3), .interval = p[6], .max_packet = (uint16_t)(p[4] | p[5] << 8)
            };
            *iface = cur;
            return 0;
        }
    }
    return -ENOENT;
}

/* String descriptor `index` (0: the language list) into out; its length. */
size_t sim_desc_string(const sim_identity *id, const char *serial, uint8_t index, uint8_t *out, size_t cap)
{
    if (cap < 2)
        return 0;
    if (index == 0) {
        const uint8_t langs[4] = { 4, 3, 0x09, 0x04 };
        size_t n = cap < 4 ? cap : 4;
        memcpy(out, langs, n);
        return n;
    }
    const char *s = index == 3 ? serial : index < id->nstrings ? id->strings[index] : NULL;
    if (!s)
        return 0;
    size_t len = 2 + 2 * strlen(s);
    if (len > 254)
        len = 254;
    out[0] = (uint8_t)len;
    out[1] = 3;
    size_t n = 2;
    for (const char *c = s; *c && n + 2 <= len && n + 2 <= cap; c++) {
        out[n++] = (uint8_t)*c;
        out[n++] = 0;
    }
    return n;
}
