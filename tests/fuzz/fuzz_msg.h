/* The selector byte that starts every fuzz_msg input. */
#ifndef ICEFARM_FUZZ_MSG_H
#define ICEFARM_FUZZ_MSG_H

#include "icefarm/msg.h"

enum fuzz_msg_sel {
    SEL_CTL_REQ = 0, /* 0 .. IFM_VERB_COUNT-1: a ctl request for that verb */
    SEL_REPLY = IFM_VERB_COUNT,
    SEL_WORKER_STATE,
    SEL_BOARD_STATUS,
    SEL_WORKER_CMD,
    SEL_BOARD_CMD,
    SEL_EVENT,
    SEL_LEASE,
    SEL_AVAILABLE,
    SEL_WORKER_STATS,
    SEL_FARM_STATS,
    SEL_HEARTBEAT,
    SEL_PRESENCE,
    SEL_WORKER_LIVE, /* icefarm/farm/worker/<id>: control's verdict on a worker */
    SEL_ALL,         /* every decoder on the same doc */
    SEL_COUNT
};

#endif
