/* icefarm-wrk internals: the worker context, boards and their state machine.
 *
 *   board.c    lifecycle: flash default -> test -> ready -> (reserve) prepare ->
 *              reserved -> (release) flash default; broken with back-off retries;
 *              every state owns one timer that dies with it
 *   flash.c    getting an image onto a board: 1200-baud touch -> BOOTSEL ->
 *              write UF2 -> re-enumerate in the new firmware
 *   upload.c   the evaluation engine of a reserved board (queue, serial protocol,
 *              result batching and flushing, reboot keeping the queue)
 *   worker.c   the boards by serial, hotplug routed to them, start/stop/free
 *   commands.c the way in: control's and the holder's commands, and refusals
 *   export.c   kind usbip: the board's USB device exported by the USB/IP server
 *              (wrk/usbip), following it across re-enumerations, hands off
 *   emit.c     the way out: board states, births, events and results go to the
 *              worker's sink (sink.h); the MQTT bridge is one sink, the unit
 *              tests' recorder another
 *
 * The daemon around it (wrk/bridge.c: MQTT; wrk/main.c: options and the loop) is
 * not part of the core library.
 *
 * Everything runs on one ifm_loop; a hung board only ever holds its own timers.
 */
#ifndef ICEFARM_WRK_WORKER_H
#define ICEFARM_WRK_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "fwproto.h"
#include "icefarm/loop.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"
#include "sink.h"
#include "transport.h"

/* Firmware images by role; FW_CUSTOM is the holder's own image (board->custom). */
enum {
    FW_DEFAULT,
    FW_PULSECOUNT,
    FW_VARIANCE,
    FW_COUNT,
    FW_CUSTOM = FW_COUNT
};

typedef struct {
    uint64_t flash_ms;     /* whole flash procedure, touch to re-enumeration */
    uint64_t test_ms;      /* default firmware must say "default firmware" within this */
    uint64_t ready_ms;     /* kind firmware must say "Waiting for bitstream transfer" */
    uint64_t eval_ms;      /* one bitstream: transfer + count window + margin */
    uint64_t retry_min_ms; /* broken boards are retried after this, doubling */
    uint64_t retry_max_ms;
    int max_attempts; /* tries per bitstream before it is reported failed */
} wrk_timeouts;

typedef struct {
    uint8_t *data;
    size_t len;
    char path[256]; /* "" for the built-in simulated image */
} wrk_image;

typedef struct wrk_board wrk_board;
struct usbip_server;
struct usbip_tunnel;
struct usbip_export;

#define WRK_REASON_MAX 216 /* a refusal's reason, as sent in an "error" event */

typedef struct wrk_ctx {
    ifm_loop *loop;
    ifm_mqtt *mqtt; /* the bridge's (wrk/bridge.c); the core never uses it */
    wrk_transport *t;
    wrk_sink sink; /* where the state machine's output goes (sink.h) */
    char id[IFM_NAME_MAX];
    uint64_t epoch;    /* grows with every connection (the bridge's) */
    uint64_t instance; /* this process, random and never 0: the same across reconnects */
    wrk_timeouts to;
    wrk_image fw[FW_COUNT];
    bool offers[FW_COUNT]; /* kinds this worker offers (FW_DEFAULT unused) */
    bool sim;
    /* USB/IP (kind usbip): the server, and where clients reach it */
    struct usbip_server *usbip;        /* NULL: kind usbip not offered */
    struct usbip_tunnel *usbip_tunnel; /* the broker tunnel's sessions (bridge.c), made on first use */
    char usbip_host[256];              /* the advertised host */
    int usbip_port;
    wrk_board **boards;
    size_t nboards, capboards;
    bool stopping;
} wrk_ctx;

/* FL_SETTLING: a new flash started while the previous image was still being
 * written; wait for that write to end and the board to re-enumerate first. */
typedef enum {
    FL_IDLE,
    FL_WAIT_DEVICE,
    FL_TOUCHING,
    FL_WRITING,
    FL_REBOOTING,
    FL_SETTLING
} flash_step;

typedef struct evaljob {
    struct evaljob *next;
    char id[IFM_ID_MAX];
    char batch[IFM_ID_MAX];
    uint8_t *data;
    size_t len;
    int attempts;
} evaljob;

typedef struct resbatch {
    struct resbatch *next;
    char batch[IFM_ID_MAX];
    ifm_result *r;
    uint16_t **samples; /* owned copies, parallel to r */
    size_t n, cap;
} resbatch;

typedef void (*flash_done_fn)(wrk_board *b, bool ok, const char *why);

struct wrk_board {
    wrk_ctx *w;
    char serial[IFM_SERIAL_MAX];
    wrk_usbdev *dev;
    uint16_t vid, pid;
    ifm_board_state state;
    uint64_t state_since_ms; /* wall clock when `state` was entered (board state `since`) */
    char reason[160];
    uint64_t gen;         /* bumped on every state change; stale callbacks compare it */
    uint64_t state_timer; /* the one timer of the current state */
    /* flashing */
    flash_step fstep;
    uint64_t write_gen; /* gen when the UF2 write in flight was issued */
    int image;          /* FW_* being flashed */
    int touches;
    flash_done_fn flash_done;
    /* serial channel */
    bool cdc;
    fw_lines lines;
    /* reservation */
    int kind; /* FW_PULSECOUNT / FW_VARIANCE while prepared or reserved */
    char holder[IFM_NAME_MAX];
    uint64_t lease;
    uint64_t flush_interval_ms;
    uint32_t flush_at;
    bool send_waveform;
    /* evaluation engine */
    evaljob *qhead, *qtail;
    size_t queued;
    evaljob *current;
    bool fw_ready, writing;
    uint64_t flush_timer;
    resbatch *results;
    int reboots;
    /* quarantine */
    int failures;
    /* the holder's own firmware (icefarm-cli flash) */
    uint8_t *custom;
    size_t custom_len;
    bool custom_running;
    /* kind usbip (export.c): kind is the image flashed before the export */
    bool usbip;
    bool exported; /* the export is up (board state says so; never the token) */
    struct usbip_export *export;
};

/* worker.c. Everything here and below runs on w->loop only. */
/* The board with `serial`; with `create`, a new one (announced through the sink)
 * if the serial is valid. NULL otherwise. Boards live until wrk_boards_free(). */
wrk_board *wrk_board_get(wrk_ctx *w, const char *serial, bool create);
/* Starts the transport w->t with the state machine's hotplug handlers: every
 * board it reports arrives (a later loop turn) and is flashed and tested. The
 * context must be complete (loop, t, timeouts, images, offers, sink). */
int wrk_start(wrk_ctx *w);
/* The clean goodbye: the worker offline, then every present board gone ("worker
 * stopped"), through the sink. For the end of the process: run the loop no more. */
void wrk_stop(wrk_ctx *w);
/* Frees every board and cancels its timers, without callbacks. Free the transport
 * first (it may still hold boards as callback arguments). */
void wrk_boards_free(wrk_ctx *w);

/* commands.c: the way in. */
/* Control's command for one of this worker's boards; a refused reservation is
 * a "failure" event for the client that asked, and the board's state again. */
void wrk_cmd_worker(wrk_ctx *w, const ifm_worker_cmd *cmd);
/* The holder's evaluate or flash; a refusal is an "error" event naming the batch. */
void wrk_cmd_board(wrk_board *b, const ifm_board_cmd *cmd);
/* Refuse a command that could not be applied (or not even decoded). */
void wrk_cmd_refuse(wrk_board *b, const char *why, const char *batch_id);

/* board.c */
void wrk_board_set_state(wrk_board *b, ifm_board_state s, const char *reason);
void wrk_board_arm(wrk_board *b, uint64_t ms, ifm_timer_cb cb);
void wrk_board_arrive(wrk_board *b, wrk_usbdev *dev, const wrk_usbinfo *info);
void wrk_board_leave(wrk_board *b);
void wrk_board_flash_default(wrk_board *b);
int wrk_board_reserve(wrk_board *b, const ifm_worker_cmd *cmd, char *err, size_t errlen);
void wrk_board_release(wrk_board *b);
/* Control deleted the board: drop the lease and everything queued, start over. */
void wrk_board_delete(wrk_board *b);
void wrk_board_reboot(wrk_board *b);
void wrk_board_broken(wrk_board *b, const char *why);
/* Flashes the holder's UF2 image onto its reserved board (copies it). */
int wrk_board_flash_custom(wrk_board *b, const uint8_t *image, size_t len, char *err, size_t errlen);
void wrk_board_close_cdc(wrk_board *b);
int wrk_kind_parse(const char *name);
const char *wrk_kind_name(int kind);
/* The reserved kind's name ("usbip" for an export), or "" without a reservation. */
const char *wrk_board_kind(const wrk_board *b);

/* export.c: kind usbip. Reserve: flash the default firmware (or the farm image
 * named by args.image), then export; the board's events say where. */
int wrk_export_reserve(wrk_board *b, const ifm_worker_cmd *cmd, char *err, size_t errlen);
/* While exported, arrivals and departures are the holder's business: the export
 * follows the device ("usbip exported" / "usbip detached"); no reflash, no test. */
void wrk_export_arrive(wrk_board *b);
void wrk_export_leave(wrk_board *b);
/* A reflash (reboot, the holder's own image) finished: export again. */
void wrk_export_flashed(wrk_board *b, bool ok, const char *why);
void wrk_export_resume(wrk_board *b);
/* The device the export serves (NULL: that enumeration ended). */
void wrk_export_set_device(wrk_board *b, wrk_usbdev *dev);
/* The lease ended (or the board was deleted): the export and its connection end,
 * and the holder hears a last `usbip detached` with `why`, tagged with the lease
 * (call it before b->lease and b->holder are cleared). Nothing when not exported. */
void wrk_export_end(wrk_board *b, const char *why);
/* The holder's `unbind`: end the current import, keep the export. */
int wrk_export_unbind(wrk_board *b, char *err, size_t errlen);
/* Board command `announce`: say `usbip exported` (or `usbip detached` while the
 * device is away) again, for a holder's program that started after the event;
 * nothing while the export is still being prepared (its event follows). */
int wrk_export_announce(wrk_board *b, char *err, size_t errlen);

/* flash.c */
void wrk_flash_start(wrk_board *b, int image, flash_done_fn done);
/* Called by board.c on arrive/leave while a flash is in progress. */
void wrk_flash_on_arrive(wrk_board *b);

/* upload.c */
void wrk_upload_start(wrk_board *b); /* open CDC on the kind firmware, wait for ready */
int wrk_upload_evaluate(wrk_board *b, const ifm_board_cmd *cmd, char *err, size_t errlen);
void wrk_upload_stop(wrk_board *b, bool keep_queue);
void wrk_upload_fail_all(wrk_board *b, const char *why); /* report every queued evaluation failed */
void wrk_upload_free(wrk_board *b);
void wrk_upload_flush(wrk_board *b);

/* emit.c: through w->sink (sink.h); each is a no-op without that op. */
void wrk_emit_board_added(wrk_board *b);
void wrk_emit_state(const wrk_board *b);
void wrk_emit_worker(const wrk_ctx *w, bool online);
void wrk_emit(const wrk_board *b, const wrk_event *ev);
/* An event for the board's holder (client = b->holder). */
void wrk_emit_event(const wrk_board *b, const char *name, const char *reason);
void wrk_emit_results(const wrk_board *b, const resbatch *rb);

#endif
