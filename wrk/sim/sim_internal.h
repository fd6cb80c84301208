/* Private to the sim backend: one board's state, shared by
 *   sim_transport.c  the wrk_transport_ops, enumeration (arrive/leave) and flashing;
 *   sim_usb.c        the CDC pipe: host writes -> device FIFO, device prints -> host;
 *   sim_board.c      what the firmware in flash does with that pipe;
 *   sim_faults.c     fault injection and plugging;
 *   sim_desc.c       the USB descriptors of the board's three identities;
 *   sim_urb.c        the URB level: standard and CDC requests, bulk and
 *                    interrupt endpoints on the same pipe as sim_usb.c;
 *   sim_picoboot.c   the bootrom's PICOBOOT interface at the URB level, and
 *                    the board's flash memory it reads and writes.
 */
#ifndef ICEFARM_WRK_SIM_INTERNAL_H
#define ICEFARM_WRK_SIM_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "icefarm/usbip.h"
#include "picoboot.h"
#include "sim.h"
#include "uf2.h"

/* TinyUSB's CDC RX buffer in the pico-ice firmware (tusb_config.h). */
#define SIM_FIFO_SIZE 512
/* HANG freezes a transfer once this many bytes of it arrived: clearly mid-transfer. */
#define SIM_HANG_AFTER 4096u
/* Cap on printed-but-undelivered bytes; a real firmware's TX FIFO drops too. */
#define SIM_TX_MAX 65536u

typedef struct sim_transport sim_transport;
typedef struct sim_board sim_board;

/* ---- USB identities (sim_desc.c) ---- */

typedef enum {
    SIM_ID_DEFAULT,  /* 2e8a:0009, the default firmware (and unknown firmware) */
    SIM_ID_PICO_ICE, /* 1209:b1c0, the pulse-count and variance firmware */
    SIM_ID_BOOTSEL,  /* 2e8a:000f, the bootrom */
    SIM_ID_COUNT
} sim_id;

typedef struct {
    const uint8_t *device; /* 18 bytes */
    const uint8_t *config; /* the one configuration, config_len bytes */
    size_t config_len;
    const char *const *strings; /* by index; [3] (the serial) and NULLs come from elsewhere */
    size_t nstrings;
} sim_identity;

typedef struct {
    uint8_t dev_default[18], dev_pico_ice[18], dev_bootsel[18];
    uint8_t cfg_default[128], cfg_pico_ice[256], cfg_bootsel[96];
    sim_identity id[SIM_ID_COUNT];
} sim_descs;

/* A URB of the sim: the wrk_urb first, its buffer after the struct. */
typedef struct sim_urb {
    wrk_urb u;
    sim_board *board; /* the board of the device it was allocated for */
    wrk_usbdev *dev;  /* that enumeration */
    struct sim_urb *next;
    bool queued;   /* on an endpoint queue */
    bool finished; /* on the completion list */
    bool lost;     /* NO_COMPLETION fault: never completes on its own */
    uint8_t slot;  /* endpoint queue */
    uint32_t off;  /* OUT: bytes the device has taken so far */
} sim_urb;

#define SIM_EP_SLOTS 32 /* endpoint number | 16 for IN */

/* The board's flash (SIM_FLASH_SIZE, sim.h) is kept per 4 KiB sector (NULL =
 * erased, all 0xff), so an idle board costs nothing. */
#define SIM_FLASH_SECTORS (SIM_FLASH_SIZE / PICOBOOT_FLASH_SECTOR)

/* The bootrom's PICOBOOT interface (interface 1 of the BOOTSEL identity). */
#define SIM_PB_IFACE 1
#define SIM_PB_EP_OUT 0x03
#define SIM_PB_EP_IN 0x84
#define SIM_PB_PACKET 64 /* full-speed bulk wMaxPacketSize */

typedef enum {
    SIM_PB_IDLE,     /* waiting for a command packet on OUT */
    SIM_PB_DATA_OUT, /* WRITE: taking dTransferLength bytes from OUT */
    SIM_PB_DATA_IN,  /* READ: handing dTransferLength bytes to IN */
    SIM_PB_ACK_IN,   /* an empty packet on IN ends the command */
    SIM_PB_ACK_OUT,  /* a packet from the host on OUT ends the command */
} sim_pb_phase;

typedef struct {
    sim_pb_phase phase;
    picoboot_cmd cmd;                   /* the command being run */
    uint32_t addr, left;                /* data phase: next address, bytes still to move */
    uint8_t chunk[PICOBOOT_FLASH_PAGE]; /* the bootrom's 256-byte transfer buffer */
    uint32_t chunk_len, chunk_off;      /* OUT: bytes gathered; IN: bytes read, chunk_off sent */
    picoboot_status status;             /* what GET_CMD_STATUS answers */
    uint8_t exclusive;                  /* EXCLUSIVE_ACCESS's bExclusive (mass storage is not modelled) */
    uint64_t t_reboot;                  /* REBOOT2 accepted: the watchdog fires at this timer */
    uint32_t reboot_flags;
} sim_pb;

typedef struct sim_write {
    struct sim_write *next;
    const uint8_t *data; /* the caller's, alive until done */
    size_t len, off;
    wrk_done_cb done;
    void *arg;
} sim_write;

typedef enum {
    FWS_OFF,          /* no firmware running: absent or in BOOTSEL */
    FWS_DEFAULT,      /* the default firmware's print loop */
    FWS_SILENT,       /* unknown firmware: enumerates, never prints or reads */
    FWS_HUNG,         /* HANG fault: frozen until touch, re-flash or power cycle */
    FWS_WAIT_DTR,     /* bitstream firmware after boot, CDC never opened yet */
    FWS_DISCONNECTED, /* bitstream firmware, DTR dropped after a connection */
    FWS_WAITING,      /* printed "Waiting for bitstream transfer" */
    FWS_RECEIVING,    /* reading the 104090 bytes, watchdog armed */
    FWS_MEASURING,    /* CRAM loaded, counting / sampling for count_window_ms */
} sim_fw_state;

typedef enum {
    NEXT_NONE,
    NEXT_APP,
    NEXT_BOOTSEL
} sim_next;

struct wrk_usbdev {
    sim_board *board;
    wrk_usbinfo info;
};

struct sim_board {
    sim_transport *sim;
    char serial[SIM_SERIAL_LEN + 1];
    bool plugged;        /* physically connected */
    bool bootsel;        /* the current/next enumeration is the bootrom */
    wrk_usbdev *dev;     /* reported with arrive and not yet left, else NULL */
    sim_fw_kind flashed; /* what is in flash */
    sim_fw_state fw;
    unsigned faults[SIM_FAULT_COUNT];

    /* Enumeration changes: one pending at a time. */
    uint64_t t_enum;
    bool enum_arrive; /* pending action: arrive (true) or leave (false) */
    bool leave_flap;  /* the pending leave is a DISCONNECT flap (counts it down) */
    sim_next next;    /* after the pending leave */
    uint32_t next_ms;

    /* CDC channel. gen changes whenever the channel opens or closes, so code that
     * called out to the user can tell whether "its" channel still exists. */
    bool cdc_open;
    unsigned gen;
    wrk_cdc_rx_cb rx;
    wrk_cdc_err_cb err;
    void *cdc_arg;
    sim_write *wq_head, *wq_tail;
    uint8_t fifo[SIM_FIFO_SIZE]; /* device side; survives close like TinyUSB's */
    size_t fifo_len;
    uint8_t *tx; /* printed, not yet delivered */
    size_t tx_off, tx_len, tx_cap;
    uint64_t t_usb;

    /* Firmware. */
    bool dtr; /* DTR as the firmware last noticed it (it polls, so it lags cdc_open) */
    uint64_t t_fw;
    uint32_t received;
    uint32_t crc;
    bool dropping; /* WATCHDOG fault active for this transfer */
    uint64_t xfer_start_us;

    /* The URB level (sim_urb.c). */
    uint8_t devnum;                  /* address of the current enumeration */
    uint8_t config;                  /* active configuration value (1 after enumeration) */
    uint8_t alt[WRK_USB_MAX_IFACES]; /* current alternate setting per interface */
    uint32_t claimed;
    uint32_t halted;                             /* endpoint slots that stall until CLEAR_FEATURE(HALT) */
    uint8_t line_coding[2][7];                   /* CDC0 and CDC1 (pico-ice) */
    uint16_t line_state[2];                      /* SET_CONTROL_LINE_STATE: bit 0 DTR, bit 1 RTS */
    sim_urb *q[SIM_EP_SLOTS], *qt[SIM_EP_SLOTS]; /* submitted, in order per endpoint */
    sim_urb *fin, *fin_tail;                     /* completed, done not called yet */
    unsigned urbs;                               /* queued + finished */
    uint8_t echo[SIM_FIFO_SIZE];                 /* CDC1: the FPGA UART looped back */
    size_t echo_len;
    bool leaving; /* the leave is running: no new URBs */

    /* PICOBOOT and the flash memory (sim_picoboot.c). flash_valid is false until
     * the contents are first needed: until then they are the image of
     * `flashed`, built by sim_fw_build_uf2 (the boards start that way). */
    sim_pb pb;
    uint8_t **flash; /* SIM_FLASH_SECTORS sector pointers, or NULL */
    bool flash_valid;

    /* BOOTSEL flash in progress. */
    uint64_t t_flash;
    bool flashing;
    int flash_status;
    sim_fw_kind flash_kind;
    wrk_done_cb flash_done;
    void *flash_arg;
    uf2_image flash_img; /* what the flash in progress writes (data NULL if none) */
    char flash_reason[UF2_REASON_MAX];
};

struct sim_transport {
    wrk_transport base; /* first, so a wrk_transport* is a sim_transport* */
    sim_options opt;
    char *seed;
    bool started;
    wrk_transport_events ev;
    void *ev_arg;
    sim_board *boards;
    size_t nboards;
    sim_descs descs;
    uint8_t next_devnum;
};

/* sim_transport.c */
sim_transport *sim_of(const wrk_transport *t); /* NULL if t is not a sim */
sim_board *sim_find(sim_transport *s, const char *serial);
/* Schedule a leave after `ms`, then (unless NEXT_NONE) an arrival next_ms later. */
void sim_schedule_leave(sim_board *b, uint32_t ms, sim_next next, uint32_t next_ms, bool flap);
void sim_schedule_arrive(sim_board *b, uint32_t ms, bool bootsel);
void sim_cancel_enum(sim_board *b);

static inline bool sim_rebooting(const sim_board *b)
{
    /* A touch or a finished flash: the board is about to leave; ops are refused. */
    return b->t_enum && !b->enum_arrive && !b->leave_flap;
}

/* 0 if ops may use `dev` now. A dev is usable from its arrive until its leave
 * starts (during the leave callback the board no longer points at it). */
static inline int sim_dev_usable(const wrk_usbdev *dev)
{
    if (!dev || dev->board->dev != dev)
        return -ENODEV;
    return sim_rebooting(dev->board) ? -EBUSY : 0;
}

/* sim_usb.c */
int sim_cdc_open(wrk_transport *t, wrk_usbdev *dev, wrk_cdc_rx_cb rx, wrk_cdc_err_cb err, void *arg);
int sim_cdc_write(wrk_transport *t, wrk_usbdev *dev, const uint8_t *data, size_t len, wrk_done_cb done, void *arg);
void sim_cdc_close(wrk_transport *t, wrk_usbdev *dev);
void sim_usb_print(sim_board *b, const char *text);
void sim_usb_kick(sim_board *b); /* make sure a USB tick is coming */
/* Drop the channel without callbacks (close or leave); the FIFO is kept. */
void sim_usb_close(sim_board *b);
void sim_usb_free(sim_board *b);

/* sim_desc.c */
int sim_desc_build(sim_descs *s);
void sim_desc_info(const sim_identity *id, uint8_t config_value, wrk_usb_desc *out);
int sim_desc_endpoints(const sim_identity *id, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max);
/* The endpoint `addr` in the current alternate settings; 0 or -ENOENT. */
int sim_desc_find_ep(const sim_identity *id, const uint8_t *alts, uint8_t addr, wrk_usb_ep *ep, uint8_t *iface);
size_t sim_desc_string(const sim_identity *id, const char *serial, uint8_t index, uint8_t *out, size_t cap);

/* sim_urb.c: the URB ops (sim_transport.c puts them in the ops table) */
const sim_identity *sim_identity_of(const sim_board *b);
void sim_urb_enumerated(sim_board *b); /* a new enumeration: configured, defaults */
/* Take the head URB of endpoint queue `slot` off and queue its completion. */
void sim_urb_complete_head(sim_board *b, int slot, int status);
/* The device goes: every URB completes with -ENODEV, now. */
void sim_urb_fail_all(sim_board *b);
bool sim_urb_active(const sim_board *b); /* URBs queued or completions pending */
void sim_urb_tick(sim_board *b);         /* move data, complete what can complete */
int sim_usb_desc(wrk_transport *t, wrk_usbdev *dev, wrk_usb_desc *out);
int sim_usb_endpoints(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max);
int sim_usb_claim(wrk_transport *t, wrk_usbdev *dev, uint8_t iface);
int sim_usb_release(wrk_transport *t, wrk_usbdev *dev, uint8_t iface);
int sim_usb_set_config(wrk_transport *t, wrk_usbdev *dev, uint8_t value);
int sim_usb_set_altsetting(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt);
int sim_usb_clear_halt(wrk_transport *t, wrk_usbdev *dev, uint8_t ep);
int sim_usb_reset(wrk_transport *t, wrk_usbdev *dev);
wrk_urb *sim_urb_alloc(wrk_transport *t, wrk_usbdev *dev, size_t size);
void sim_urb_free(wrk_transport *t, wrk_urb *urb);
int sim_urb_submit(wrk_transport *t, wrk_urb *urb);
int sim_urb_cancel(wrk_transport *t, wrk_urb *urb);
bool sim_take_hook(wrk_transport *t, wrk_usbdev *dev, wrk_hook hook);

/* sim_picoboot.c */
void sim_pb_reset(sim_board *b); /* INTERFACE_RESET, a bus reset or configuration: idle, status cleared */
void sim_pb_stop(sim_board *b);  /* the board leaves: a pending REBOOT2 is moot */
/* The interface requests on endpoint 0 (vendor, recipient interface 1): 0 or -EPIPE. */
int sim_pb_control(sim_board *b, wrk_urb *u, const ifm_usb_setup *s);
/* Moves the PICOBOOT endpoints' URBs as far as they go this tick. */
void sim_pb_serve(sim_board *b, uint32_t *out_budget, uint32_t *in_budget);
bool sim_pb_more_work(const sim_board *b);
bool sim_pb_slot(int slot); /* the endpoint queue is one of PICOBOOT's */
/* Replace the flash contents the image covers by it (erasing those sectors
 * first), as a completed UF2 download does; `flashed` already names what it
 * boots. A flash nobody has read or written yet that receives the image of
 * `flashed` itself stays implicit (no memory). 0 or -ENOMEM/-EINVAL. */
int sim_flash_store(sim_board *b, const uf2_image *img);
void sim_flash_free(sim_board *b);

/* sim_board.c */
void sim_fw_boot(sim_board *b); /* start the flashed firmware (FWS_OFF in BOOTSEL) */
void sim_fw_stop(sim_board *b); /* power off / reboot: cancels firmware timers */
/* The firmware notices DTR going up (from a USB tick) or down (on close). */
void sim_fw_dtr(sim_board *b, bool up);
/* Let the firmware read from the FIFO (called from the USB tick). */
void sim_fw_consume(sim_board *b);
/* Whether the firmware reads the FIFO in its current state. */
bool sim_fw_reads(const sim_board *b);
/* Bytes the host sends right now vanish on the way (WATCHDOG fault). */
bool sim_fw_dropping(const sim_board *b);

#endif
