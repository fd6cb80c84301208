// node model.mjs MODEL_JS: the dashboard's farm model (ctl/http/dashboard/src/model.js)
// on hand-made decoded messages: which verdict on a worker the page shows (control's,
// PROTOCOL.md 7.8, only from the control process that is online now; else the
// worker's own state), which ready boards it says are not granted and why, and the
// events a verdict change makes. Prints "N passed, M failed".
import { pathToFileURL } from "node:url";

const { Farm } = await import(pathToFileURL(process.argv[2]).href);
let passed = 0,
  failed = 0;
function check(name, ok, got) {
  if (ok) passed++;
  else {
    failed++;
    console.log(`FAIL ${name}: got ${JSON.stringify(got)}`);
  }
}

const CTL = 1795243600000;
const worker = (online) => ({ worker: "w1", online, epoch: 7, kinds: ["pulsecount"], boards: [] });
const board = (serial, state) => ({ serial, worker: "w1", epoch: 7, state, kind: "", reason: "", exported: false, since: 0 });
const live = (state, ctlEpoch = CTL, reason = "") => ({ worker: "w1", state, epoch: 7, ctlEpoch, since: 1000, until: 0, reason });

const f = new Farm();
f.apply("ctl", "", { online: true, epoch: CTL }, false);
f.apply("worker", "w1", worker(true), false);
f.apply("board", "A", board("A", "ready"), false);
f.apply("board", "B", board("B", "ready"), false);
f.apply("board", "C", board("C", "flashing"), false);
f.apply("lease", "B", { serial: "B", client: "bob", kind: "pulsecount", worker: "w1", lease: 1, until: 9, tag: "" }, false);
check("no verdict from control: the worker's own state (online)", f.verdict("w1")?.state === "online" && !f.verdict("w1").control, f.verdict("w1"));
check("an online worker's boards are granted", f.ungranted().length === 0 && !f.workerLost("w1"), f.ungranted());

// A verdict from an earlier control process is stale: ignored.
f.apply("liveness", "w1", live("hung", CTL - 1, "no heartbeat for 2080 ms"), false);
check("a verdict with another ctl_epoch is ignored", f.verdict("w1").state === "online", f.verdict("w1"));

// Control (this process) says hung: the page says so, and why the ready, unleased board is not granted.
const ev = f.apply("liveness", "w1", live("hung", CTL, "no heartbeat for 2080 ms"), true);
check("control's verdict wins over the worker's online birth", f.verdict("w1").state === "hung" && f.verdict("w1").control, f.verdict("w1"));
check("the change to hung is an event naming why", ev.length === 1 && ev[0].level === "bad" && /hung: no heartbeat for 2080 ms; its boards are not granted/.test(ev[0].text), ev);
const ug = f.ungranted();
check(
  "ungranted: only the ready, unleased board (A), with the verdict",
  ug.length === 1 && ug[0].worker === "w1" && ug[0].boards === 1 && ug[0].verdict.reason === "no heartbeat for 2080 ms",
  ug,
);
check("its boards are on a lost worker", f.workerLost("w1"), f.workerLost("w1"));

// Back online: an ok event, nothing ungranted.
const ev2 = f.apply("liveness", "w1", live("online"), true);
check("online again: an ok event", ev2.length === 1 && ev2[0].level === "ok" && /answers again/.test(ev2[0].text), ev2);
check("online again: nothing ungranted", f.ungranted().length === 0, f.ungranted());

// A retained verdict replayed on subscribe is no event.
check("a replayed verdict makes no event", f.apply("liveness", "w1", live("reconnecting", CTL, "its connection died"), false).length === 0, null);
check("reconnecting counts as down", f.verdict("w1").state === "reconnecting" && f.workerLost("w1"), f.verdict("w1"));

// Control goes offline: its verdicts no longer hold; the worker's own state does.
f.apply("ctl", "", { online: false, epoch: CTL }, true);
check("control offline: the worker's own state again", f.verdict("w1").state === "online" && !f.verdict("w1").control, f.verdict("w1"));
f.apply("worker", "w1", worker(false), true);
check("... and its Will makes it offline", f.verdict("w1").state === "offline" && f.workerLost("w1"), f.verdict("w1"));

// A cleared verdict (empty payload) is forgotten; prune drops what no connection set again.
f.apply("ctl", "", { online: true, epoch: CTL }, true);
f.apply("liveness", "w1", null, true);
check("a cleared verdict is forgotten", !f.liveness.has("w1"), [...f.liveness.keys()]);
f.apply("liveness", "w1", live("hung"), false);
f.reconnected();
f.prune();
check("prune drops verdicts not republished after a reconnect", !f.liveness.has("w1"), [...f.liveness.keys()]);

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
