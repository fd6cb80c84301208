/* Private to the sim backend: one board's state, shared by
 *   sim_transport.c  the wrk_transport_ops, enumeration (arrive/leave) and flashing;
 *   sim_usb.c        the CDC pipe: host writes -> device FIFO, device prints -> host;
 *   sim_board.c      what the firmware in flash does with that pipe;
 *   sim_faults.c     fault injection and plugging.
 */
#ifndef ICEFARM_WRK_SIM_INTERNAL_H
#define ICEFARM_WRK_SIM_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

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

    /* BOOTSEL flash in progress. */
    uint64_t t_flash;
    bool flashing;
    int flash_status;
    sim_fw_kind flash_kind;
    wrk_done_cb flash_done;
    void *flash_arg;
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
