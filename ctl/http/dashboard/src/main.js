// The icefarm dashboard: one page that subscribes to the farm's public,
// retained topics over MQTT-over-WebSockets and shows them live. In a secured
// farm it logs in to the broker (a dashboard account reads; an operator's may
// also reboot and delete, as MQTT 5 requests to control like every client's).
import mqtt from "mqtt";
import { Buffer } from "buffer";
import { encode } from "@msgpack/msgpack";
import uPlot from "uplot";

import { classify } from "./decode.js";
import { Farm, PRUNE_MS } from "./model.js";

const $ = (id) => document.getElementById(id);
const farm = new Farm();
const MAX_EVENTS = 200;
const REQUEST_TIMEOUT_MS = 5000;

const conn = {
  client: null,
  url: "",
  user: "",
  name: "", // the icefarm-client name of our requests
  canRequest: null, // null: unknown yet; true: control answered us; false: it did not
  pending: new Map(), // correlation (hex) -> {resolve, timer}
  syncTimer: 0,
  fails: 0, // attempts (or connections) that failed in a row
  failingSince: 0, // ms: when the first of them failed
  connectedOnce: false, // this broker was reached since the login
};

// ---- small DOM helpers ----

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function td(text, cls = "") {
  return el("td", { class: cls, text: text === undefined || text === null ? "" : String(text) });
}

function fill(id, rows, empty = "none") {
  const body = $(id);
  if (!rows.length) rows = [el("tr", {}, el("td", { class: "muted", text: empty, colSpan: 20 }))];
  body.replaceChildren(...rows);
}

function dur(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

// ---- rendering ----

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    draw();
  });
}

function draw() {
  const now = Date.now();
  const c = farm.ctl;
  $("ctl").textContent = c ? `control ${c.online ? "online" : "OFFLINE"}` : "control ?";
  $("ctl").className = `pill ${c ? (c.online ? "ok" : "bad") : "muted"}`;
  drawBoards(now);
  drawWorkers(now);
  drawLeases(now);
  drawAvailability();
  drawStats(now);
}

// How the page names control's verdict on a worker.
const VERDICT = { online: "online", hung: "HUNG", reconnecting: "RECONNECTING", offline: "LOST" };

// Why a worker is not online, in words: control's reason, for how long, and
// (reconnecting) until when its leases are kept.
function verdictWhy(v, now) {
  if (!v || v.state === "online") return "";
  const parts = [v.reason || (v.state === "hung" ? "no heartbeat" : "")];
  if (v.since) parts.push(`since ${clock(v.since)} (${dur(now - v.since)})`);
  if (v.state === "reconnecting" && v.until) parts.push(`leases kept until ${clock(v.until)}`);
  return parts.filter(Boolean).join("; ");
}

function drawBoards(now) {
  const serials = [...farm.boards.keys()].sort();
  const rows = serials.map((s) => {
    const b = farm.boards.get(s);
    const l = farm.leases.get(s);
    const v = farm.verdict(b.worker);
    const lost = farm.workerLost(b.worker);
    const stuck = farm.stuck(b, now);
    // A board on a worker that is not online is not granted, whatever its worker last said.
    const why = lost
      ? `not granted, worker ${VERDICT[v.state]}${v.reason ? `: ${v.reason}` : ""}${b.reason ? `; ${b.reason}` : ""}`
      : b.reason;
    const tr = el("tr", { "data-serial": s, class: [lost ? "lost" : "", stuck ? "stuck" : ""].join(" ").trim() });
    tr.append(
      td(s, "mono"),
      td(b.worker + (lost ? ` (${VERDICT[v.state]})` : ""), lost ? "bad c-worker" : "c-worker"),
      td(b.state, `c-state st-${b.state}${lost ? " ungranted" : ""}`),
      td(dur(now - farm.since(b)), stuck ? "bad c-since" : "c-since"),
      td(l ? l.kind : "", "c-kind"),
      td(l ? l.client : "", "c-holder"),
      td(b.kind || "default", "c-fw"),
      td(l ? dur(l.until - now) : "", "c-left num"),
      td(b.exported ? "exported" : "", "c-usbip"),
      td(why, lost ? "c-reason bad" : "c-reason muted"),
    );
    const act = el("td", { class: "act" });
    if (conn.canRequest) {
      act.append(
        el("button", { type: "button", text: "reboot", className: "b-reboot", onclick: () => action("reboot", s) }),
        el("button", { type: "button", text: "delete", className: "b-delete", onclick: () => action("delete", s) }),
      );
    }
    tr.append(act);
    return tr;
  });
  const avail = farm.available ? farm.available.amount : 0;
  $("bh").textContent = `Boards (${serials.length}, ${avail} available)`;
  fill("boards", rows, "no boards yet");
  document.querySelectorAll(".act").forEach((e) => (e.hidden = !conn.canRequest));
}

function drawWorkers(now) {
  const ids = [...farm.workers.keys()].sort();
  const down = {};
  const rows = ids.map((id) => {
    const w = farm.workers.get(id);
    const v = farm.verdict(id);
    const ok = v.state === "online";
    if (!ok) down[VERDICT[v.state]] = (down[VERDICT[v.state]] ?? 0) + 1;
    const n = [...farm.boards.values()].filter((b) => b.worker === id && b.state !== "gone").length;
    const st = farm.wstats.get(id);
    return el(
      "tr",
      { "data-worker": id, class: ok ? "" : "lost" },
      td(id, "mono"),
      td(VERDICT[v.state], ok ? "ok c-wstate" : "bad c-wstate"),
      td(w.epoch, "num"),
      td(n, "num"),
      td(w.kinds.join(", ")),
      td(st ? `${st.evaluations} (${st.failures} failed)` : "", "num"),
      td(verdictWhy(v, now), "c-why bad"),
    );
  });
  const summary = Object.entries(down).map(([k, n]) => `, ${n} ${k}`).join("");
  $("wh").textContent = `Workers (${ids.length}${summary})`;
  $("wh").className = summary ? "bad" : "";
  fill("workers", rows);
}

function drawLeases(now) {
  const serials = [...farm.leases.keys()].sort();
  const rows = serials.map((s) => {
    const l = farm.leases.get(s);
    return el(
      "tr",
      { "data-lease": s },
      td(s, "mono"),
      td(l.client),
      td(l.kind),
      td(l.worker),
      td(l.lease, "num"),
      td(dur(l.until - now), "num"),
      td(l.tag, "muted"),
    );
  });
  $("lh").textContent = `Leases (${serials.length})`;
  fill("leases", rows);
}

function drawAvailability() {
  const a = farm.available;
  const rows = a
    ? [
        el("tr", {}, td("any"), td(a.amount, "num c-avail")),
        ...Object.entries(a.kinds).map(([k, n]) => el("tr", { "data-kind": k }, td(k), td(n, "num"))),
      ]
    : [];
  fill("avail", rows, "?");
  // Why fewer boards are available than are ready: their workers are down.
  const ug = farm.ungranted();
  $("avail-note").textContent = ug
    .map((u) => `${u.boards} ready board${u.boards > 1 ? "s" : ""} of ${u.worker} not granted, worker ${VERDICT[u.verdict.state]}${u.verdict.reason ? `: ${u.verdict.reason}` : ""}`)
    .join(". ");
  $("avail-note").hidden = !ug.length;
  const s = farm.stats;
  const w = s ? Object.keys(s.waiting).sort() : [];
  fill(
    "waiting",
    w.map((k) => el("tr", { "data-kind": k }, td(k), td(s.waiting[k], "num"), td(s.waitingBoards[k] ?? 0, "num"))),
    "none",
  );
}

// ---- the chart: evaluations and failures per second, 5 s buckets, ten minutes ----

let plot = null;
function chartData(now) {
  const s = farm.stats;
  if (!s) return [[], [], []];
  const h = s.history;
  const step = h.step;
  const xs = [],
    ev = [],
    fa = [];
  // Only complete buckets; buckets after the last message are zero (nothing
  // changed, so control published nothing).
  const lastDone = Math.floor(now / step) - 1;
  const first = lastDone - 119; // always ten minutes: zeros before control's history starts
  for (let i = first; i <= lastDone; i++) {
    const k = i - h.start / step;
    xs.push((i * step) / 1000);
    ev.push(k >= 0 && k < h.evaluations.length ? h.evaluations[k] / (step / 1000) : 0);
    fa.push(k >= 0 && k < h.failures.length ? h.failures[k] / (step / 1000) : 0);
  }
  return [xs, ev, fa];
}

function drawStats(now) {
  const s = farm.stats;
  const data = chartData(now);
  const last = data[1].length ? data[1][data[1].length - 1] : 0;
  $("rate").textContent = s ? `${last.toFixed(1)}/s` : "";
  $("totals").textContent = s
    ? `${s.evaluations} evaluations, ${s.failures} failed since control started (${clock(s.epoch)})`
    : "no statistics from control yet";
  const box = $("chart");
  const width = Math.max(300, box.clientWidth || 600);
  if (!plot) {
    plot = new uPlot(
      {
        width,
        height: 160,
        series: [
          {},
          { label: "evaluations/s", stroke: "#2a6fdb", fill: "rgba(42,111,219,0.12)" },
          { label: "failures/s", stroke: "#c0392b" },
        ],
        // Plain hh:mm labels at least 70 px apart: uPlot's default puts the
        // date on the first label, which then overlaps the second.
        axes: [
          {
            space: 70,
            values: (u, splits) =>
              splits.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
          },
          { size: 50 },
        ],
        scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      },
      data,
      box,
    );
  } else {
    if (Math.abs(plot.width - width) > 20) plot.setSize({ width, height: 160 });
    plot.setData(data);
  }
}

function addEvents(list) {
  if (!list.length) return;
  const ol = $("events");
  for (const e of list) {
    ol.prepend(el("li", { class: e.level }, el("span", { class: "muted mono", text: clock(e.time) + " " }), e.text));
  }
  while (ol.children.length > MAX_EVENTS) ol.lastChild.remove();
}

// ---- MQTT ----

function onMessage(topic, payload, packet) {
  if (packet.properties && packet.properties.correlationData) {
    const key = Buffer.from(packet.properties.correlationData).toString("hex");
    const p = conn.pending.get(key);
    if (p) {
      conn.pending.delete(key);
      clearTimeout(p.timer);
      const t = classify(topic);
      try {
        p.resolve(t.decode(payload));
      } catch (e) {
        p.resolve({ ok: false, code: 0, error: `bad reply: ${e.message}` });
      }
    }
    return;
  }
  const t = classify(topic);
  if (!t || t.type === "reply") return;
  let v;
  try {
    v = t.decode(payload);
  } catch (e) {
    console.warn(`icefarm dashboard: ignoring ${topic}: ${e.message}`);
    return;
  }
  addEvents(farm.apply(t.type, t.name, v, !packet.retain));
  render();
}

// One MQTT 5 request to control (PROTOCOL.md section 5); resolves with the reply
// or {ok: false, code: 503} when control does not answer in time.
function request(verb, body) {
  const corr = Buffer.from(crypto.getRandomValues(new Uint8Array(16)));
  const key = corr.toString("hex");
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      conn.pending.delete(key);
      resolve({ ok: false, code: 503, error: "control did not answer (this account may not send requests)" });
    }, REQUEST_TIMEOUT_MS);
    conn.pending.set(key, { resolve, timer });
    conn.client.publish(`icefarm/ctl/req/${verb}`, Buffer.from(encode({ v: 1, ...body })), {
      qos: 0,
      properties: {
        responseTopic: `icefarm/client/${conn.name}/reply`,
        correlationData: corr,
        userProperties: { "icefarm-client": conn.name },
        messageExpiryInterval: Math.ceil(REQUEST_TIMEOUT_MS / 1000) + 1,
      },
    });
  });
}

async function action(verb, serial) {
  const l = farm.leases.get(serial);
  const what = `${verb === "reboot" ? "Reboot" : "Delete"} board ${serial}${l ? ` (held by ${l.client})` : " (free)"}?`;
  if (!window.confirm(what)) return;
  const r = await request(verb, { serials: [serial] });
  addEvents([
    {
      time: Date.now(),
      level: r.ok ? "ok" : "bad",
      text: r.ok ? `${verb} ${serial}: done` : `${verb} ${serial} refused (${r.code}): ${r.error}`,
    },
  ]);
  $("actions-note").textContent = r.ok ? `${verb} ${serial}: done` : `${verb} ${serial} refused (${r.code}): ${r.error}`;
  $("actions-note").className = r.ok ? "ok" : "bad";
}

// Whether this account may send requests: a dashboard account's requests are
// dropped by the broker (no reply), a client's or operator's are answered.
async function probeRequests() {
  const r = await request("status", {});
  conn.canRequest = r.code !== 503 && r.code !== 0;
  $("actions-note").textContent = conn.canRequest
    ? `${conn.name} may send requests: reboot and delete are offered (control decides: a board's holder, or an operator).`
    : "read-only: this account cannot send requests to control.";
  $("actions-note").className = "muted";
  render();
}

const TOPICS = [
  "icefarm/ctl/state",
  "icefarm/farm/+",
  "icefarm/farm/worker/+",
  "icefarm/lease/+",
  "icefarm/+/state",
  "icefarm/worker/+/state",
  "icefarm/worker/+/stats",
];

function setConn(text, cls) {
  $("conn").textContent = text;
  $("conn").className = `pill ${cls}`;
}

// After HINT_AFTER failed attempts in a row the page says what is likely
// wrong: a browser gives a page no reason for a failed WebSocket (an unknown
// CA, a wrong port and a dead broker all look the same), so the hint names
// the likely causes in order.
const HINT_AFTER = 3;
function showHint() {
  const h = $("hint");
  if (conn.fails < HINT_AFTER) {
    h.hidden = true;
    return;
  }
  const wss = conn.url.startsWith("wss:");
  const since = `${conn.fails} attempts since ${clock(conn.failingSince)}`;
  let text;
  if (conn.connectedOnce) {
    text = `Lost the broker at ${conn.url} (${since}). It may be restarting or down: the page reconnects by itself when it is back.`;
  } else if (wss) {
    text =
      `Cannot reach the broker at ${conn.url} (${since}). Most likely this browser does not trust the broker's ` +
      `certificate, which the farm's own CA signed: "./icefarm up --secure" prints that CA as "ca: …/ca.crt" ` +
      `(the docker stack's is docker/operator/ca.crt). ` +
      `Import that file into this browser as a trusted certificate authority (Chromium: Settings › Privacy and security › ` +
      `Security › Manage certificates › Authorities; Firefox: Settings › Certificates › View Certificates › Authorities), ` +
      `then reload. Otherwise check the address and port (the "websockets:" line of ./icefarm up) and that the broker runs.`;
  } else {
    text =
      `Cannot reach the broker at ${conn.url} (${since}). Check the address and port (the "websockets:" line ` +
      `./icefarm up prints) and that the farm's broker runs.`;
  }
  h.textContent = text;
  h.hidden = false;
}

function connect({ broker, user, password }) {
  if (conn.client) conn.client.end(true);
  conn.url = broker;
  conn.user = user || "";
  conn.name = user || "dashboard";
  conn.canRequest = null;
  conn.fails = 0;
  conn.failingSince = 0;
  conn.connectedOnce = false;
  showHint();
  const rand = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  const client = mqtt.connect(broker, {
    protocolVersion: 5,
    clean: true,
    clientId: `dashboard-${rand}`,
    username: user || undefined,
    password: password || undefined,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
    keepalive: 10,
    resubscribe: false, // subscribed anew on every connect, after the model is reset
  });
  conn.client = client;
  setConn(`connecting to ${broker}`, "muted");
  $("who").textContent = user ? `as ${user}` : "";
  $("logout").hidden = !user;
  farm.reset();
  client.on("connect", () => {
    setConn(`connected to ${broker}`, "ok");
    conn.fails = 0;
    conn.connectedOnce = true;
    showHint();
    farm.reconnected();
    render();
    client.subscribe([...TOPICS, `icefarm/client/${conn.name}/reply`], { qos: 1 });
    // What nobody republished after a broker restart is gone.
    clearTimeout(conn.syncTimer);
    conn.syncTimer = setTimeout(() => {
      farm.prune();
      render();
    }, PRUNE_MS);
    $("login").hidden = true;
    $("main").hidden = false;
    probeRequests();
  });
  client.on("reconnect", () => setConn(`reconnecting to ${broker}`, "warn"));
  // One close per attempt that failed (or connection that ended).
  const failed = () => {
    if (conn.client !== client) return;
    if (!conn.fails) conn.failingSince = Date.now();
    conn.fails++;
    showHint();
  };
  client.on("offline", () => setConn(`disconnected from ${broker}; retrying`, "bad"));
  client.on("close", () => {
    if (!client.connected) setConn(`disconnected from ${broker}; retrying`, "bad");
    failed();
  });
  client.on("error", (e) => {
    const code = e && e.code;
    if (code === 134 || code === 135 || code === 4 || code === 5) {
      // bad user name or password, not authorized: ask again, stop retrying
      client.end(true);
      conn.fails = 0;
      showHint();
      showLogin(`the broker refused the login: ${e.message}`);
    } else {
      setConn(`error: ${e.message}`, "bad");
    }
  });
  client.on("message", onMessage);
}

// ---- login ----

const store = {
  get(k) {
    return sessionStorage.getItem(`icefarm.${k}`) ?? localStorage.getItem(`icefarm.${k}`) ?? "";
  },
  set(k, v, remember) {
    sessionStorage.setItem(`icefarm.${k}`, v);
    if (remember) localStorage.setItem(`icefarm.${k}`, v);
  },
  clear() {
    for (const s of [sessionStorage, localStorage]) for (const k of ["user", "password"]) s.removeItem(`icefarm.${k}`);
  },
};

function showLogin(msg = "") {
  $("login").hidden = false;
  $("login-msg").textContent = msg;
  setConn("not connected", "bad");
}

async function loadConfig() {
  // Served by icefarm-http (--ws-url); absent when the page is hosted elsewhere.
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (r.ok) return await r.json();
  } catch {
    /* static hosting without a config.json */
  }
  return {};
}

async function start() {
  $("nobundle").hidden = true;
  const cfg = await loadConfig();
  const q = new URLSearchParams(location.search);
  const broker = q.get("broker") || store.get("broker") || cfg.broker || "";
  const user = q.get("user") || store.get("user") || "";
  const password = store.get("password");
  $("f-broker").value = broker;
  $("f-user").value = user;
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const b = $("f-broker").value.trim(),
      u = $("f-user").value.trim(),
      p = $("f-password").value;
    const remember = $("f-remember").checked;
    store.set("broker", b, true);
    store.set("user", u, remember);
    store.set("password", p, remember);
    $("f-password").value = "";
    connect({ broker: b, user: u, password: p });
  });
  $("logout").addEventListener("click", () => {
    store.clear();
    conn.fails = 0;
    showHint();
    if (conn.client) conn.client.end(true);
    conn.client = null;
    $("main").hidden = true;
    showLogin();
  });
  setInterval(render, 1000); // time in state, lease left, the chart's clock
  window.addEventListener("resize", render);
  // A secured farm needs a login; an anonymous one connects at once.
  if (broker && (!cfg.secured || (user && password))) connect({ broker, user, password });
  else showLogin(broker ? "" : "Give the broker's websocket address.");
}

// For tests and the curious: the page's state.
window.icefarm = { farm, conn };
start();
