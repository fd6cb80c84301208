// The dashboard's reading of icefarm's messages (proto/PROTOCOL.md sections 5,
// 7): msgpack by @msgpack/msgpack, then each message checked like icefarm's C
// decoders check it (one map, v = 1, required fields of the right types) and
// turned into a plain object. Anything else throws an Error whose message says
// why; the page logs it and keeps going. tests/e2e/dashboard/golden.mjs runs
// this file in node against golden messages written by the C encoders.
import { decode } from "@msgpack/msgpack";

const MAX_PAYLOAD = 12 * 1024 * 1024;

export class BadMessage extends Error {}

function fail(why) {
  throw new BadMessage(why);
}

function typeName(x) {
  if (x === null || x === undefined) return "nil";
  if (Array.isArray(x)) return "array";
  if (x instanceof Uint8Array) return "bin";
  if (typeof x === "number") return Number.isInteger(x) ? "integer" : "float";
  if (typeof x === "bigint") return "integer";
  return typeof x === "object" ? "map" : typeof x;
}

function isMap(x) {
  return typeName(x) === "map";
}

// The root map, with v checked.
export function root(bytes) {
  if (!bytes || bytes.length === 0) fail("empty payload");
  if (bytes.length > MAX_PAYLOAD) fail(`payload of ${bytes.length} bytes exceeds the ${MAX_PAYLOAD} byte limit`);
  let m;
  try {
    m = decode(bytes);
  } catch (e) {
    fail(`not msgpack: ${e.message}`);
  }
  if (!isMap(m)) fail("payload is not a msgpack map");
  if (m.v === undefined || m.v === null) fail('missing field "v"');
  if (typeName(m.v) !== "integer" || m.v < 0) fail('field "v" must be an unsigned integer');
  if (m.v !== 1) fail(`unsupported protocol version ${m.v} (this peer speaks 1)`);
  return m;
}

function field(m, key, type, required) {
  const x = m[key];
  if (x === undefined || x === null) {
    if (required) fail(`missing field "${key}"`);
    return undefined;
  }
  const t = typeName(x);
  if (type === "uint") {
    if (t !== "integer" || x < 0) fail(`field "${key}" must be an unsigned integer, got ${t}`);
    return Number(x);
  }
  if (t !== type) fail(`field "${key}" must be ${type === "map" ? "a map" : `a ${type}`}, got ${t}`);
  return x;
}

const str = (m, k, req = true) => field(m, k, "string", req);
const uint = (m, k, req = true) => field(m, k, "uint", req);

const STATES = ["flashing", "testing", "ready", "preparing", "reserved", "broken", "gone"];

function counts(m, key) {
  const c = field(m, key, "map", true);
  const out = {};
  for (const [k, n] of Object.entries(c)) {
    if (typeName(n) !== "integer" || n < 0) fail(`count for kind "${k}" in "${key}" must be an unsigned integer`);
    out[k] = Number(n);
  }
  return out;
}

// icefarm/ctl/state (7.1)
export function ctlState(bytes) {
  const m = root(bytes);
  const state = str(m, "state");
  if (state !== "online" && state !== "offline") fail(`unknown control state "${state}"`);
  return { online: state === "online", epoch: uint(m, "epoch") };
}

// icefarm/farm/available (7.2)
export function available(bytes) {
  const m = root(bytes);
  return { amount: uint(m, "amount"), kinds: counts(m, "kinds") };
}

// icefarm/farm/stats (7.7)
export function farmStats(bytes) {
  const m = root(bytes);
  const s = {
    epoch: uint(m, "epoch"),
    time: uint(m, "time"),
    evaluations: uint(m, "evaluations"),
    failures: uint(m, "failures"),
    waiting: counts(m, "waiting"),
    waitingBoards: counts(m, "waiting_boards"),
  };
  const h = field(m, "history", "map", true);
  s.history = { start: uint(h, "start"), step: uint(h, "step"), evaluations: [], failures: [] };
  if (s.history.step < 1) fail('history "step" must be at least 1');
  for (const k of ["evaluations", "failures"]) {
    const a = field(h, k, "array", true);
    for (const n of a) if (typeName(n) !== "integer" || n < 0) fail(`history "${k}" must hold unsigned integers`);
    s.history[k] = a.map(Number);
  }
  if (s.history.evaluations.length !== s.history.failures.length) fail("history series differ in length");
  if (s.failures > s.evaluations) fail(`${s.failures} failures out of ${s.evaluations} evaluations`);
  for (const k of Object.keys(s.waitingBoards))
    if (!(k in s.waiting)) fail(`"waiting_boards" names kind "${k}", which "waiting" does not`);
  return s;
}

// icefarm/lease/<serial> (7.3); an empty payload = the board is free (null)
export function lease(bytes) {
  if (!bytes || bytes.length === 0) return null;
  const m = root(bytes);
  return {
    serial: str(m, "serial"),
    client: str(m, "client"),
    kind: str(m, "kind"),
    worker: str(m, "worker"),
    lease: uint(m, "lease"),
    until: uint(m, "until"),
    tag: str(m, "tag", false) ?? "",
  };
}

// icefarm/worker/<id>/state (7.4)
export function workerState(bytes) {
  const m = root(bytes);
  const state = str(m, "state");
  if (state !== "online" && state !== "offline") fail(`unknown worker state "${state}"`);
  const online = state === "online";
  const w = { worker: str(m, "worker"), online, epoch: uint(m, "epoch"), kinds: [], boards: [] };
  const kinds = field(m, "kinds", "array", online);
  for (const k of kinds ?? []) {
    if (typeof k !== "string") fail('field "kinds" must hold strings');
    w.kinds.push(k);
  }
  for (const b of field(m, "boards", "array", online) ?? []) {
    if (!isMap(b)) fail('field "boards" must hold maps');
    const st = str(b, "state");
    if (!STATES.includes(st)) fail(`unknown board state "${st}"`);
    w.boards.push({ serial: str(b, "serial"), state: st, kind: str(b, "kind", false) ?? "" });
  }
  return w;
}

// icefarm/worker/<id>/stats (7.6)
export function workerStats(bytes) {
  const m = root(bytes);
  const s = {
    worker: str(m, "worker"),
    instance: uint(m, "instance"),
    evaluations: uint(m, "evaluations"),
    failures: uint(m, "failures"),
  };
  if (s.failures > s.evaluations) fail(`${s.failures} failures out of ${s.evaluations} evaluations`);
  return s;
}

// icefarm/farm/worker/<id> (7.8): control's verdict on a worker
const LIVENESS = ["online", "hung", "reconnecting", "offline"];
export function workerLiveness(bytes) {
  if (!bytes || bytes.length === 0) return null; // cleared: control forgot the worker
  const m = root(bytes);
  const state = str(m, "state");
  if (!LIVENESS.includes(state)) fail(`unknown worker liveness "${state}"`);
  return {
    worker: str(m, "worker"),
    state,
    epoch: uint(m, "epoch"),
    ctlEpoch: uint(m, "ctl_epoch"),
    since: uint(m, "since"),
    until: uint(m, "until", false) ?? 0,
    reason: str(m, "reason", false) ?? "",
  };
}

// icefarm/<serial>/state (7.5); an empty payload = forgotten (null)
export function boardState(bytes) {
  if (!bytes || bytes.length === 0) return null;
  const m = root(bytes);
  const state = str(m, "state");
  if (!STATES.includes(state)) fail(`unknown board state "${state}"`);
  return {
    serial: str(m, "serial"),
    worker: str(m, "worker"),
    epoch: uint(m, "epoch"),
    state,
    kind: str(m, "kind", false) ?? "",
    reason: str(m, "reason", false) ?? "",
    exported: field(m, "exported", "boolean", false) ?? false,
    since: uint(m, "since", false) ?? 0,
  };
}

// A reply to a request (section 5): {ok, code, error?, serials?}
export function reply(bytes) {
  const m = root(bytes);
  const r = { ok: field(m, "ok", "boolean", true), code: uint(m, "code"), error: str(m, "error", false) ?? "" };
  if (r.code < 100 || r.code > 599) fail(`field "code" must be between 100 and 599, got ${r.code}`);
  if (r.ok !== (r.code >= 200 && r.code <= 299)) fail(`"ok" is ${r.ok} but "code" is ${r.code}`);
  const serials = m.serials;
  if (Array.isArray(serials)) r.serials = serials.map((s) => (typeof s === "string" ? s : s?.serial)).filter(Boolean);
  return r;
}

// Which decoder a topic needs, and the topic's variable part.
export function classify(topic) {
  const l = topic.split("/");
  if (l[0] !== "icefarm") return null;
  if (l.length === 3 && l[1] === "ctl" && l[2] === "state") return { type: "ctl", decode: ctlState };
  if (l.length === 3 && l[1] === "farm" && l[2] === "available") return { type: "available", decode: available };
  if (l.length === 3 && l[1] === "farm" && l[2] === "stats") return { type: "stats", decode: farmStats };
  if (l.length === 4 && l[1] === "farm" && l[2] === "worker")
    return { type: "liveness", name: l[3], decode: workerLiveness };
  if (l.length === 3 && l[1] === "lease") return { type: "lease", name: l[2], decode: lease };
  if (l.length === 4 && l[1] === "worker" && l[3] === "state") return { type: "worker", name: l[2], decode: workerState };
  if (l.length === 4 && l[1] === "worker" && l[3] === "stats")
    return { type: "wstats", name: l[2], decode: workerStats };
  if (l.length === 4 && l[1] === "client" && l[3] === "reply") return { type: "reply", name: l[2], decode: reply };
  if (l.length === 3 && l[2] === "state" && !["worker", "ctl", "client", "lease", "farm"].includes(l[1]))
    return { type: "board", name: l[1], decode: boardState };
  return null;
}
