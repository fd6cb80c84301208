// The farm as the dashboard knows it: the last retained message of every
// public topic, decoded (decode.js). apply() takes one message and returns the
// events worth a line in the page's list: only for live messages (a retained
// message replayed on subscribe is old news, not an event).
//
// After a broker restart every publisher republishes its retained state
// (DESIGN decision 10): the model is kept across the reconnect, so only real
// changes become events, and whatever nobody republished within PRUNE_MS of
// the reconnect is dropped (prune()).

export const TRANSIENT = new Set(["flashing", "testing", "preparing"]);
// A board longer than this in a state that should pass quickly is "stuck".
export const STUCK_MS = 60_000;
export const PRUNE_MS = 10_000;

export class Farm {
  constructor() {
    this.reset();
  }

  reset() {
    this.ctl = null; // {online, epoch}
    this.available = null; // {amount, kinds}
    this.stats = null; // farm stats (7.7)
    this.boards = new Map(); // serial -> board state (+ seen: ms when the page saw this state first)
    this.workers = new Map(); // id -> worker state
    this.liveness = new Map(); // id -> control's verdict on the worker (7.8)
    this.wstats = new Map(); // id -> worker stats
    this.leases = new Map(); // serial -> lease
    this.gen = 0; // connections so far; every entry remembers the one that last set it
  }

  // A new connection: entries not set again on it are dropped by prune().
  reconnected() {
    this.gen++;
  }

  prune() {
    for (const m of [this.boards, this.workers, this.liveness, this.wstats, this.leases])
      for (const [k, v] of m) if (v.gen !== this.gen) m.delete(k);
    for (const k of ["ctl", "available", "stats"]) if (this[k] && this[k].gen !== this.gen) this[k] = null;
  }

  // kind: a type from decode.classify; name: the topic's variable part.
  // live: the message is news (not a retained one replayed on subscribe).
  apply(type, name, v, live, now = Date.now()) {
    const ev = [];
    const say = (level, text) => {
      if (live) ev.push({ time: now, level, text });
    };
    if (v) v.gen = this.gen;
    switch (type) {
      case "ctl":
        if (this.ctl && this.ctl.online !== v.online) say(v.online ? "ok" : "bad", `control ${v.online ? "online" : "offline"}`);
        this.ctl = v;
        break;
      case "available":
        this.available = v;
        break;
      case "stats": {
        const old = this.stats;
        if (old && old.epoch === v.epoch && v.failures > old.failures)
          say("warn", `${v.failures - old.failures} evaluation failure${v.failures - old.failures > 1 ? "s" : ""}`);
        if (old && old.epoch === v.epoch) {
          for (const [k, n] of Object.entries(v.waiting))
            if (n > (old.waiting[k] ?? 0)) say("info", `a reserve of kind ${k} waits for boards (${n} waiting)`);
        }
        this.stats = v;
        break;
      }
      case "lease": {
        const old = this.leases.get(name);
        if (v === null) {
          if (old) say("info", `${name}: lease of ${old.client} ended`);
          this.leases.delete(name);
        } else {
          if (old && old.lease !== v.lease) say("info", `${name}: lease of ${old.client} ended`);
          if (!old || old.lease !== v.lease) say("ok", `${name} reserved by ${v.client} (${v.kind})`);
          this.leases.set(name, v);
        }
        break;
      }
      case "worker": {
        const old = this.workers.get(name);
        if (old && old.online && !v.online) say("bad", `worker ${name}: connection ended (epoch ${v.epoch})`);
        else if (v.online && (!old || !old.online)) say("ok", `worker ${name} online (epoch ${v.epoch})`);
        else if (v.online && old && old.epoch !== v.epoch) say("warn", `worker ${name} reconnected (epoch ${v.epoch})`);
        this.workers.set(name, v);
        break;
      }
      case "liveness": {
        if (v === null) {
          this.liveness.delete(name);
          break;
        }
        // An event when the verdict the page shows changes to one of control's.
        const before = this.verdict(name);
        this.liveness.set(name, v);
        const after = this.verdict(name);
        if (before && after.control && before.state !== after.state) {
          if (v.state === "hung") say("bad", `worker ${name} hung: ${v.reason}; its boards are not granted`);
          else if (v.state === "reconnecting")
            say("warn", `worker ${name} reconnecting (${v.reason}): its boards are not granted, its leases are kept`);
          else if (v.state === "offline") say("bad", `worker ${name} offline for control: ${v.reason}`);
          else say("ok", `worker ${name} ${before.state === "hung" ? "answers again" : "is back"}: its boards are granted`);
        }
        break;
      }
      case "wstats":
        this.wstats.set(name, v);
        break;
      case "board": {
        const old = this.boards.get(name);
        if (v === null) {
          this.boards.delete(name);
          break;
        }
        v.seen = old && old.state === v.state ? old.seen : now;
        if (old && old.state !== v.state) {
          if (v.state === "broken") say("bad", `${name} broken: ${v.reason || "?"}`);
          else if (v.state === "gone") say("warn", `${name} gone${v.reason ? ": " + v.reason : ""}`);
          else if (old.state === "broken") say("ok", `${name} recovered (${v.state})`);
          else say("muted", `${name} ${old.state} → ${v.state}`);
        }
        if (old && !old.exported && v.exported) say("info", `${name} exported over USB/IP`);
        if (old && old.exported && !v.exported) say("muted", `${name} no longer exported`);
        this.boards.set(name, v);
        break;
      }
      default:
        break;
    }
    return ev;
  }

  // What decides whether a worker's boards are granted: control's verdict
  // (7.8) when this control process published one; else the worker's own
  // state (7.4: its birth or its Will). {state: online|hung|reconnecting|
  // offline, reason, since (ms, 0 unknown), until (ms, 0), control: bool}.
  verdict(id) {
    const v = this.liveness.get(id);
    if (v && this.ctl && this.ctl.online && v.ctlEpoch === this.ctl.epoch)
      return { state: v.state, reason: v.reason, since: v.since, until: v.until, control: true };
    const w = this.workers.get(id);
    if (!w) return null;
    return w.online
      ? { state: "online", reason: "", since: 0, until: 0, control: false }
      : { state: "offline", reason: "its connection is gone (the broker published its Will)", since: 0, until: 0, control: false };
  }

  // A board's worker is down (its boards are not granted) unless control (or
  // the worker itself, without a word from control) says online.
  workerLost(id) {
    const v = this.verdict(id);
    return !!v && v.state !== "online";
  }

  // Ready, unleased boards whose worker is down: why "available" is short.
  // [{worker, verdict, boards: n}]
  ungranted() {
    const by = new Map();
    for (const b of this.boards.values()) {
      if (b.state !== "ready" || this.leases.has(b.serial) || !this.workerLost(b.worker)) continue;
      by.set(b.worker, (by.get(b.worker) ?? 0) + 1);
    }
    return [...by.entries()].sort().map(([worker, boards]) => ({ worker, verdict: this.verdict(worker), boards }));
  }

  // When the board entered its state: the worker's `since`, else when this page first saw it.
  since(b) {
    return b.since || b.seen;
  }

  stuck(b, now = Date.now()) {
    return b.state === "broken" || (TRANSIENT.has(b.state) && now - this.since(b) > STUCK_MS);
  }
}
