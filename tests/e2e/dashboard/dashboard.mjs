// The dashboard in Debian's headless Chromium, driven by playwright-core,
// against the real farm dashboard.sh started. Prints one "ok - ..." or
// "not ok - ..." line per check (dashboard.sh counts them) and saves a
// screenshot of each state in $SHOTS.
//
// Environment (from dashboard.sh): PW (playwright-core's index.mjs), HTTP (the
// farm's icefarm-http), SHOTS, CLI (icefarm-cli), BROKER, CA, SECRETS, SECURE
// (1: a secured farm), WRK_PID, KEEPALIVE (the worker's, s), HEARTBEAT_MS (the
// worker's, icefarm-wrk's default 1000).
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const env = process.env;
const { chromium } = await import(env.PW);
const secure = env.SECURE === "1";
const WITHIN_MS = 2000; // what the page must show within, after the farm changed
const HEARTBEAT_MS = Number(env.HEARTBEAT_MS || 1000);
const failedRequests = []; // every response >= 400 the pages got (a missing favicon was one)
let stopped = false; // the worker is SIGSTOPped: SIGCONT it whatever happens

let shot = 0;
function ok(cond, what) {
  console.log(`${cond ? "ok" : "not ok"} - ${what}`);
  return cond;
}

function cli(user, ...args) {
  const auth = secure ? ["--user", user, "--password-file", join(env.SECRETS, user), "--cafile", env.CA] : [];
  return execFileSync(env.CLI, ["--broker", env.BROKER, ...auth, "--name", user, "--json", "--timeout", "10", ...args], {
    encoding: "utf8",
  });
}

function password(user) {
  return readFileSync(join(env.SECRETS, user), "utf8").split("\n")[0];
}

// A new, empty profile: --user-data-dir, as playwright's persistent context.
// trusting: whether the browser takes the farm's lab CA (by ignoring certificate
// errors, as a browser that imported the CA would); a browser that does not
// is what a person gets who opens `./icefarm up --secure`'s page as it is.
const profiles = []; // removed at the end
function launch(trusting) {
  const dir = mkdtempSync(join(tmpdir(), "icefarm-chromium-"));
  profiles.push(dir);
  return chromium.launchPersistentContext(dir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 1000 },
    ignoreHTTPSErrors: trusting,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // the secured farm's broker has a certificate from the farm's own lab CA
      ...(secure && trusting ? ["--ignore-certificate-errors"] : []),
    ],
  });
}
const browser = await launch(true);

// Opens the page in `ctx`, logged in as `user` in a secured farm.
async function login(ctx, user) {
  const page = await ctx.newPage(); // its own sessionStorage: its own login
  page.on("pageerror", (e) => console.log(`# ${user ?? "page"}: page error: ${e.message}`));
  page.on("dialog", (d) => d.accept()); // the confirmation of reboot and delete
  page.on("response", (r) => {
    if (r.status() >= 400) failedRequests.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(`${env.HTTP}/`);
  if (secure) {
    await page.waitForSelector("#login:not([hidden])", { timeout: 10000 });
    await page.fill("#f-user", user);
    await page.fill("#f-password", password(user));
    await page.click("#login button[type=submit]");
  }
  return page;
}

// A fresh page logged in as `user` (secured farm) or anonymous; waits until it
// is connected and has decided whether it may send requests.
async function open(user) {
  const page = await login(browser, user);
  await page.waitForFunction(() => window.icefarm && window.icefarm.conn.canRequest !== null, null, {
    timeout: 15000,
  });
  return page;
}

async function save(page, name) {
  shot++;
  const file = join(env.SHOTS, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`# screenshot ${file}`);
}

// Waits until fn(arg) is true in the page; returns the milliseconds it took, or -1.
async function within(page, ms, fn, arg) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
    return Date.now() - t0;
  } catch {
    return -1;
  }
}

const cell = ([serial, cls]) => {
  const td = document.querySelector(`tr[data-serial="${serial}"] .${cls}`);
  return td ? td.textContent : null;
};

try {
  // The boards the farm has, from control itself.
  const status = JSON.parse(cli("alice", "status"));
  const serials = (status.boards || []).map((b) => b.serial).sort();
  ok(serials.length === Number(env.BOARDS), `control reports ${serials.length} boards (${env.BOARDS} simulated)`);

  // 1. A watcher (the dashboard account in a secured farm) sees every board.
  const watcher = await open(secure ? "dana" : undefined);
  const listed = await within(
    watcher,
    10000,
    (want) => want.every((s) => document.querySelector(`tr[data-serial="${s}"] .c-state`)?.textContent === "ready"),
    serials,
  );
  ok(listed >= 0, `the page lists every simulated board as ready (${serials.join(" ")})`);
  const rows = await watcher.$$eval("#boards tr[data-serial]", (r) => r.length);
  ok(rows === serials.length, `the page shows exactly ${serials.length} boards (${rows} rows)`);
  const readOnly = await watcher.evaluate(() => window.icefarm.conn.canRequest);
  if (secure) ok(readOnly === false, "the dashboard account is read-only: no reboot or delete offered");
  await save(watcher, "ready");

  // 2. A reservation shows within 2 s: holder, lease, state.
  const reserved = JSON.parse(cli("bob", "reserve", "--amount", "1"));
  const serial = JSON.stringify(reserved).match(/[0-9A-F]{16}/)[0];
  let t = await within(watcher, WITHIN_MS, (s) => document.querySelector(`tr[data-serial="${s}"] .c-holder`)?.textContent === "bob", serial);
  ok(t >= 0, `bob's reservation of ${serial} shows within 2 s (${t} ms)`);
  t = await within(watcher, 15000, (s) => document.querySelector(`tr[data-serial="${s}"] .c-state`)?.textContent === "reserved", serial);
  ok(t >= 0, `${serial} turns reserved on the page (${t} ms after its lease showed)`);
  const leaseRow = await watcher.$(`#leases tr[data-lease="${serial}"]`);
  ok(!!leaseRow, "the lease is in the leases table");
  await save(watcher, "reserved");

  // 3. Reboot: an operator's works, a plain client's is refused (the ACL and control's table).
  if (secure) {
    const alice = await open("alice");
    ok((await alice.evaluate(() => window.icefarm.conn.canRequest)) === true, "alice's page may send requests");
    await alice.click(`tr[data-serial="${serial}"] .b-reboot`);
    t = await within(alice, 7000, () => /refused \(403\)/.test(document.getElementById("actions-note").textContent));
    const note = await alice.$eval("#actions-note", (e) => e.textContent);
    ok(t >= 0, `a plain client's reboot of bob's board is refused on the page: "${note}"`);
    await save(alice, "client-reboot-refused");
    await alice.close();

    const oscar = await open("oscar");
    await oscar.click(`tr[data-serial="${serial}"] .b-reboot`);
    t = await within(oscar, 7000, (s) => document.getElementById("actions-note").textContent === `reboot ${s}: done`, serial);
    ok(t >= 0, `the operator's reboot of bob's board is done (${t} ms)`);
    t = await within(watcher, 5000, (s) => document.querySelector(`tr[data-serial="${s}"] .c-state`)?.textContent === "preparing", serial);
    const st = await watcher.evaluate(cell, [serial, "c-state"]);
    ok(t >= 0 || st === "reserved", `the rebooted board reflashes (the watcher saw it ${t >= 0 ? "preparing" : st})`);
    await save(oscar, "operator-reboot");
    await oscar.close();
    await within(watcher, 15000, (s) => document.querySelector(`tr[data-serial="${s}"] .c-state`)?.textContent === "reserved", serial);
  }

  // 4. Ending it shows within 2 s.
  cli("bob", "end", serial);
  t = await within(watcher, WITHIN_MS, (s) => document.querySelector(`tr[data-serial="${s}"] .c-holder`)?.textContent === "", serial);
  ok(t >= 0, `the end of bob's lease shows within 2 s (${t} ms)`);
  const events = await watcher.$eval("#events", (e) => e.textContent);
  ok(events.includes(`${serial} reserved by bob`) && events.includes(`${serial}: lease of bob ended`), "the events list has the reservation and its end");
  await save(watcher, "ended");

  // 5. Evaluations: the counts reach the page (worker stats -> control -> farm/stats).
  const before = await watcher.evaluate(() => window.icefarm.farm.stats?.evaluations ?? 0);
  cli("alice", "evaluate", "--boards", "1", ...env.BITSTREAMS.split(" "));
  const nbits = env.BITSTREAMS.split(" ").length;
  t = await within(watcher, 5000, (want) => (window.icefarm.farm.stats?.evaluations ?? 0) >= want, before + nbits);
  ok(t >= 0, `the page counts the ${nbits} evaluations alice ran (${t} ms after the CLI finished)`);
  await save(watcher, "evaluated");

  // 6. A hung worker (SIGSTOP: no heartbeats, its connection still open, so no
  // Will for 1.5 x keep-alive): control stops granting its boards after 2
  // missed heartbeats and says so on icefarm/farm/worker/<id>; the page shows
  // that verdict and why its boards are not available.
  const willMs = Number(env.KEEPALIVE) * 1500;
  const hungBudget = 2 * HEARTBEAT_MS + 250 + 1000; // control's check runs every 250 ms; 1 s for the page
  // Every board ready again after alice's evaluation (its board reflashes the default firmware).
  t = await within(watcher, 15000, (n) => document.querySelector(".c-avail")?.textContent === String(n), serials.length);
  ok(t >= 0, `all ${serials.length} boards are available before the worker is frozen`);
  const ts = Date.now();
  process.kill(Number(env.WRK_PID), "SIGSTOP");
  stopped = true;
  t = await within(watcher, hungBudget + 2000, () =>
    document.querySelector('tr[data-worker="sim-worker"] .c-wstate')?.textContent === "HUNG",
  );
  const hungAfter = Date.now() - ts;
  ok(t >= 0 && hungAfter <= hungBudget, `the frozen worker shows as HUNG ${hungAfter} ms after SIGSTOP (budget ${hungBudget} ms; its Will would come after ${willMs} ms)`);
  // Available follows within control's 20 ms recount (7.2).
  await within(watcher, 1000, () => document.querySelector(".c-avail")?.textContent === "0");
  const hung = await watcher.evaluate(
    (want) => ({
      why: document.querySelector('tr[data-worker="sim-worker"] .c-why')?.textContent ?? "",
      avail: document.querySelector(".c-avail")?.textContent,
      note: document.getElementById("avail-note").hidden ? "" : document.getElementById("avail-note").textContent,
      reasons: want.map((s) => document.querySelector(`tr[data-serial="${s}"] .c-reason`)?.textContent ?? ""),
      workers: document.querySelector(`tr[data-serial="${want[0]}"] .c-worker`)?.textContent ?? "",
    }),
    serials,
  );
  ok(/no heartbeat for \d+ ms/.test(hung.why), `the workers table says why: "${hung.why}"`);
  ok(
    hung.avail === "0" && new RegExp(`^${serials.length} ready boards of sim-worker not granted, worker HUNG: no heartbeat`).test(hung.note),
    `available shows ${hung.avail} (0), and says why: "${hung.note}"`,
  );
  ok(
    hung.reasons.every((r) => r.startsWith("not granted, worker HUNG: no heartbeat")) && hung.workers === "sim-worker (HUNG)",
    `every board of the frozen worker says it is not granted ("${hung.workers}": "${hung.reasons[0]}")`,
  );
  await save(watcher, "worker-hung");
  const frozenFor = Date.now() - ts;
  process.kill(Number(env.WRK_PID), "SIGCONT");
  stopped = false;
  const tc = Date.now();
  t = await within(
    watcher,
    frozenFor < willMs ? 2 * HEARTBEAT_MS + WITHIN_MS : 30000,
    (n) =>
      document.querySelector('tr[data-worker="sim-worker"] .c-wstate')?.textContent === "online" &&
      document.querySelector(".c-avail")?.textContent === String(n) &&
      document.getElementById("avail-note").hidden,
    serials.length,
  );
  ok(t >= 0, `after SIGCONT (frozen ${frozenFor} ms) the worker is online again and its ${serials.length} boards available on the page ${Date.now() - tc} ms later`);
  await save(watcher, "worker-answers-again");

  // 7. A broker restart (persistence off: every retained message is gone): the
  // page reconnects, control and the worker republish, and the page fills again.
  const genBefore = await watcher.evaluate(() => window.icefarm.farm.gen);
  process.kill(Number(env.BROKER_PID), "SIGTERM");
  await within(watcher, 5000, () => !window.icefarm.conn.client.connected);
  await new Promise((r) => setTimeout(r, 500));
  const broker = spawn("mosquitto", ["-c", env.BROKER_CONF], { stdio: ["ignore", openSync(env.BROKER_LOG, "a"), openSync(env.BROKER_LOG, "a")] });
  broker.unref();
  console.log(`# BROKER_PID ${broker.pid}`);
  const t1 = Date.now();
  t = await within(
    watcher,
    30000,
    ([g, want]) => {
      const f = window.icefarm.farm;
      const boards = [...f.boards.values()];
      return (
        f.gen > g &&
        window.icefarm.conn.client.connected &&
        boards.length === want &&
        boards.every((b) => b.gen === f.gen && b.state === "ready") &&
        f.workers.get("sim-worker")?.gen === f.gen &&
        f.stats?.gen === f.gen
      );
    },
    [genBefore, serials.length],
  );
  ok(t >= 0, `after a broker restart the page fills again by itself (${Date.now() - t1} ms after the new broker started)`);
  await save(watcher, "after-broker-restart");

  // 8. Killing the worker: the broker publishes its Will when the connection
  // drops (at the latest after 1.5 x keep-alive); control keeps its leases for
  // its grace (RECONNECTING) and the page shows that within 2 s.
  const t0 = Date.now();
  process.kill(Number(env.WRK_PID), "SIGKILL");
  const will = Number(env.KEEPALIVE) * 1500;
  t = await within(watcher, will + WITHIN_MS + 1000, () =>
    ["RECONNECTING", "LOST"].includes(document.querySelector('tr[data-worker="sim-worker"] .c-wstate')?.textContent),
  );
  const took = t >= 0 ? Date.now() - t0 : -1;
  const shown = await watcher.evaluate(() => ({
    state: document.querySelector('tr[data-worker="sim-worker"] .c-wstate')?.textContent,
    why: document.querySelector('tr[data-worker="sim-worker"] .c-why')?.textContent,
  }));
  ok(t >= 0 && took <= will + WITHIN_MS + 1000, `the killed worker shows as ${shown.state} ${took} ms after the kill (its Will: when its connection drops, at the latest after ${will} ms; the page within 2 s of it): "${shown.why}"`);
  const lostRows = await watcher.$$eval("#boards tr.lost", (r) => r.length);
  ok(lostRows === serials.length, `its ${serials.length} boards are marked as on a lost worker (${lostRows})`);
  await save(watcher, "worker-lost");
  console.log(`# WORKER_KILLED`);
  ok(failedRequests.length === 0, `no request of the pages failed (${failedRequests.join(", ") || "none, no favicon.ico either"})`);
} catch (e) {
  ok(false, `the browser session ran to the end (${e.message.split("\n")[0]})`);
} finally {
  if (stopped) process.kill(Number(env.WRK_PID), "SIGCONT");
  await browser.close();
}

// 9. The secured farm in a browser that does not trust the farm's CA (no
// --ignore-certificate-errors): the wss connection fails without a reason the
// page can see, and after a few attempts the page says what is likely wrong.
if (secure) {
  const strict = await launch(false);
  try {
    const page = await login(strict, "dana");
    const t0 = Date.now();
    const t = await within(page, 20000, () => {
      const h = document.getElementById("hint");
      return !h.hidden && /does not trust the broker's certificate/.test(h.textContent);
    });
    const hint = await page.$eval("#hint", (e) => e.textContent);
    const pill = await page.$eval("#conn", (e) => e.textContent);
    ok(t >= 0 && /ca\.crt/.test(hint) && /Import that file/.test(hint), `a browser that does not trust the lab CA says why ${Date.now() - t0} ms after the login: "${hint.slice(0, 160)}…" (${pill})`);
    await save(page, "untrusted-ca");
  } catch (e) {
    ok(false, `the untrusting browser ran to the end (${e.message.split("\n")[0]})`);
  } finally {
    await strict.close();
  }
}
for (const dir of profiles) rmSync(dir, { recursive: true, force: true });
