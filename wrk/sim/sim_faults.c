/* Fault injection and plugging for simulated boards (sim.h). Faults are armed
 * counters the board consults at the point where each fault bites; DISCONNECT
 * and UNPLUG act at once. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "sim_internal.h"

static const char *const fault_names[SIM_FAULT_COUNT] = {
    [SIM_FAULT_HANG] = "hang",
    [SIM_FAULT_WATCHDOG] = "watchdog",
    [SIM_FAULT_DISCONNECT] = "disconnect",
    [SIM_FAULT_UNPLUG] = "unplug",
    [SIM_FAULT_SLOW_FLASH] = "slow_flash",
    [SIM_FAULT_WRONG_FW] = "wrong_fw",
    [SIM_FAULT_FLASH_FAIL] = "flash_fail",
    [SIM_FAULT_NO_COMPLETION] = "no_completion",
    [SIM_FAULT_STALL] = "stall",
    [SIM_FAULT_PARTIAL_PDU] = "partial_pdu",
    [SIM_FAULT_LATE_UNLINK] = "late_unlink",
    [SIM_FAULT_BUSY_IMPORT] = "busy_import",
};

const char *sim_fault_name(sim_fault fault)
{
    return (unsigned)fault < SIM_FAULT_COUNT ? fault_names[fault] : "?";
}

int sim_fault_from_name(const char *name, sim_fault *out)
{
    if (!name)
        return -1;
    for (int f = 0; f < SIM_FAULT_COUNT; f++) {
        const char *n = fault_names[f];
        size_t i = 0;
        for (; n[i] && name[i]; i++) {
            int c = name[i] == '-' ? '_' : tolower((unsigned char)name[i]);
            if (c != n[i])
                break;
        }
        if (!n[i] && !name[i]) {
            *out = (sim_fault)f;
            return 0;
        }
    }
    return -1;
}

static int unplug(sim_board *b)
{
    if (!b->plugged)
        return -EALREADY;
    b->plugged = false;
    if (b->dev)
        sim_schedule_leave(b, 0, NEXT_NONE, 0, false);
    else
        sim_cancel_enum(b); /* a pending arrival never happens */
    return 0;
}

static int disconnect(sim_board *b, unsigned count)
{
    sim_transport *s = b->sim;
    if (count == 0) {
        b->faults[SIM_FAULT_DISCONNECT] = 0;
        if (b->t_enum && !b->enum_arrive && b->leave_flap)
            sim_cancel_enum(b);
        return 0;
    }
    if (!b->plugged)
        return -EALREADY;
    b->faults[SIM_FAULT_DISCONNECT] = count;
    if (!s->started)
        return 0; /* flaps start replug_ms after its first arrival */
    if (b->dev) {
        sim_schedule_leave(b, 0, NEXT_APP, s->opt.replug_ms, true);
    } else {
        /* Absent (re-enumerating): the glitch only delays its return, and a power
         * cycle boots the flashed firmware even if it was heading for BOOTSEL. */
        b->faults[SIM_FAULT_DISCONNECT]--;
        sim_schedule_arrive(b, s->opt.replug_ms, false);
    }
    return 0;
}

int sim_inject(wrk_transport *t, const char *serial, sim_fault fault, unsigned count)
{
    sim_transport *s = sim_of(t);
    if (!s || (unsigned)fault >= SIM_FAULT_COUNT)
        return -EINVAL;
    sim_board *b = sim_find(s, serial);
    if (!b)
        return -ENODEV;
    switch (fault) {
    case SIM_FAULT_UNPLUG:
        return count ? unplug(b) : 0;
    case SIM_FAULT_DISCONNECT:
        return disconnect(b, count);
    default:
        b->faults[fault] = count;
        return 0;
    }
}

int sim_plug(wrk_transport *t, const char *serial)
{
    sim_transport *s = sim_of(t);
    if (!s)
        return -EINVAL;
    sim_board *b = sim_find(s, serial);
    if (!b)
        return -ENODEV;
    if (b->plugged)
        return -EALREADY;
    b->plugged = true;
    if (s->started)
        sim_schedule_arrive(b, s->opt.enum_ms, false);
    return 0;
}

size_t sim_board_count(const wrk_transport *t)
{
    sim_transport *s = sim_of(t);
    return s ? s->nboards : 0;
}

const char *sim_board_serial(const wrk_transport *t, size_t i)
{
    sim_transport *s = sim_of(t);
    return s && i < s->nboards ? s->boards[i].serial : NULL;
}
