"""icefarm-dhs end to end: the fake DCSS (fake_dcss.py) drives icefarm-dhs against a
real farm of simulated boards (started by dhs.sh), with a local HTTP server for the
references. Prints "ok - ..." / "not ok - ..." per check.

    test_dhs.py FARM_BIN BROKER RUN_DIR MOSQUITTO_PID BITSTREAMS_DIR
"""

import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
import fake_dcss as fd  # noqa: E402
from checks import check, failures  # noqa: E402
from uf2 import image as uf2_image  # noqa: E402

FARM_BIN, BROKER, RUN, BROKER_PID, BITS = sys.argv[1:6]
DHS_BIN = os.path.join(FARM_BIN, "ctl", "dhs", "icefarm-dhs")
CLI = os.path.join(FARM_BIN, "cli", "icefarm-cli")
NAME = "boardfarm"
OPS = ["farm_reserve", "farm_release", "farm_renew", "farm_flash", "farm_pulse_count", "farm_variance",
       "farm_list", "farm_board_info", "farm_reboot"]


# ---- a local HTTP server for the references ----

FETCH_DIR = os.path.join(RUN, "fetch")
os.makedirs(FETCH_DIR, exist_ok=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/slow.bin":
            time.sleep(6)
        if self.path == "/big.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
            return
        if self.path == "/redirect.bin":
            self.send_response(302)
            self.send_header("Location", "/clk_1khz.bin")
            self.end_headers()
            return
        path = os.path.join(FETCH_DIR, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass


httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
httpd.daemon_threads = True
threading.Thread(target=httpd.serve_forever, daemon=True).start()
HTTP = "http://127.0.0.1:%d" % httpd.server_address[1]


for f in os.listdir(BITS):
    if f.endswith(".bin"):
        with open(os.path.join(BITS, f), "rb") as src, open(os.path.join(FETCH_DIR, f), "wb") as dst:
            dst.write(src.read())
with open(os.path.join(FETCH_DIR, "fw.uf2"), "wb") as out:
    out.write(uf2_image())
BITSTREAM = open(os.path.join(FETCH_DIR, "clk_1khz.bin"), "rb").read()
COUNT = zlib.crc32(BITSTREAM) % 100000
SHA = hashlib.sha256(BITSTREAM).hexdigest()


# ---- the DHS and the farm ----

procs = []


def start_dhs(port, protocol=2, name=NAME, log="dhs.log", broker=BROKER, by_env=False):
    """by_env: name and protocol from ICEFARM_DHS_NAME/ICEFARM_DHS_PROTOCOL, in a shell
    set up for icefarm-cli (ICEFARM_NAME names the CLI's client, never the DHS)."""
    f = open(os.path.join(RUN, log), "a")
    env = dict(os.environ)
    args = [DHS_BIN, "--dcss", "127.0.0.1:%d" % port]
    if by_env:
        env.update(ICEFARM_DHS_NAME=name, ICEFARM_DHS_PROTOCOL=str(protocol), ICEFARM_NAME="cli-user",
                   ICEFARM_PROTOCOL="2")
    else:
        args += ["--name", name, "--protocol", str(protocol)]
    p = subprocess.Popen(args + ["--broker", broker, "--fetch-dir", FETCH_DIR, "--fetch-max-bytes", "200000",
                                 "--fetch-timeout-s", "3"], stdout=f, stderr=subprocess.STDOUT, env=env)
    procs.append(p)
    return p


def stop(p, what):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
    else:
        rc = p.returncode
    check(rc == 0, "%s exits 0 on SIGTERM (status %s: a crash or a sanitizer report shows in its log)" % (what, rc))


def cli(*args):
    r = subprocess.run([CLI, "--broker", BROKER, "--timeout", "10", "--name", "dhs-observer", "--json"] + list(args),
                       capture_output=True, text=True)
    try:
        return json.loads(r.stdout) if r.stdout.strip() else None
    except ValueError:
        return None


def leases():
    st = cli("status") or {}
    return {l["serial"]: l for l in st.get("leases", [])}


def devices(dhs=NAME, protocol=2):
    dev = [fd.Device(op, fd.OPERATION, dhs) for op in OPS]
    dev.append(fd.Device("farm_status", fd.STRING, dhs, contents="{}"))
    dev.append(fd.Device("farm_oddop", fd.OPERATION, dhs, hw_name="something_else"))
    dev.append(fd.Device("i0", fd.ION_CHAMBER, dhs, extra=["c1", "0", "t1", "clock"]))
    return dev


def run_op(d, op, args="", client=1, timeout=30):
    h = d.start_operation(op, args, client=client)
    if h is None:
        return None, None
    c = d.wait_completion(h, timeout)
    return h, c


# ---- scenarios ----

def main():
    d = fd.FakeDCSS({NAME: fd.DhsEntry(2)}, devices(), duplicate_delay=0.5)
    port = d.start()
    dhs = start_dhs(port)

    # handshake, registration burst, status string
    check(d.wait_online(NAME, 20), "the DHS connects and answers the handshake within DCSS's 1 s")
    check(d.wait(lambda: "farm_status" in d.strings and "farm online" in d.strings["farm_status"], 20),
          "the status string says the farm is online: %r" % d.strings.get("farm_status"))
    check(d.wait(lambda: any("online" in m for m in d.messages("htos_log")), 10), "an htos_log line says it is online")

    # farm_list and farm_board_info
    h, c = run_op(d, "farm_list")
    check(c is not None and c[0] == "normal" and c[1] == ["4"], "farm_list completes normal 4: %r" % (c,))
    ups = d.updates(h) if h else []
    check(len(ups) == 4 and all(u[0] == "board" and u[2] == "ready" for u in ups),
          "farm_list sends one board update per board: %r" % ups[:1])
    serials = sorted(u[1] for u in ups)
    h, c = run_op(d, "farm_board_info", serials[0])
    check(c is not None and c[0] == "normal" and c[1][:2] == [serials[0], "ready"], "farm_board_info: %r" % (c,))
    h, c = run_op(d, "farm_board_info", "NOSUCHBOARD")
    check(c is not None and c[0] == "no_such_board", "farm_board_info of an unknown board: %r" % (c,))

    # errors that complete at once
    h, c = run_op(d, "farm_oddop")
    check(c is not None and c[0] == "unknown_operation", "an operation with a foreign hwName: %r" % (c,))
    h, c = run_op(d, "farm_reserve", "any notanumber")
    check(c is not None and c[0] == "bad_args", "bad arguments: %r" % (c,))
    h, c = run_op(d, "farm_release")
    check(c is not None and c[0] == "bad_args", "missing arguments: %r" % (c,))

    # reserve: any, with a tag; the lease carries the DCSS client
    h, c = run_op(d, "farm_reserve", "any 600 {run 7}", client=5, timeout=60)
    ok = check(c is not None and c[0] == "normal" and len(c[1]) == 3, "farm_reserve any: %r" % (c,))
    board, lease = (c[1][0], c[1][1]) if ok else (serials[0], "0")
    check(any(u[0] == "preparing" for u in d.updates(h)), "farm_reserve sends a preparing update")
    ls = leases()
    check(board in ls and ls[board].get("tag") == "dcss client 5: run 7" and str(ls[board]["lease"]) == lease,
          "the lease is tagged with the DCSS client: %r" % (ls.get(board),))

    # pulse count by http, file: and a redirect
    h, c = run_op(d, "farm_pulse_count", "%s %s %s/clk_1khz.bin" % (board, lease, HTTP))
    check(c == ("normal", [board, str(COUNT), SHA]), "farm_pulse_count by http: %r (want %d %s)" % (c, COUNT, SHA[:8]))
    h, c = run_op(d, "farm_pulse_count", "%s %s file:clk_1khz.bin" % (board, lease))
    check(c == ("normal", [board, str(COUNT), SHA]), "farm_pulse_count by file: %r" % (c,))
    h, c = run_op(d, "farm_pulse_count", "%s %s %s/redirect.bin" % (board, lease, HTTP))
    check(c == ("normal", [board, str(COUNT), SHA]), "farm_pulse_count through a redirect: %r" % (c,))
    for ref, token in (("%s/missing.bin" % HTTP, "not_found"), ("%s/big.bin" % HTTP, "too_large"),
                       ("%s/slow.bin" % HTTP, "timeout"), ("file:../dhs.log", "bad_ref"),
                       ("file:///etc/passwd", "bad_ref"), ("ftp://127.0.0.1/x", "bad_ref")):
        h, c = run_op(d, "farm_pulse_count", "%s %s %s" % (board, lease, ref))
        check(c is not None and c[0] == token, "farm_pulse_count %s: %s (%r)" % (ref.split("/")[-1], token, c))
    h, c = run_op(d, "farm_pulse_count", "%s 999999 file:clk_1khz.bin" % board)
    check(c is not None and c[0] == "bad_lease", "a wrong lease token: %r" % (c,))
    h, c = run_op(d, "farm_variance", "%s %s file:clk_1khz.bin" % (board, lease))
    check(c is not None and c[0] == "wrong_kind", "farm_variance on a pulsecount lease: %r" % (c,))

    # renew
    h, c = run_op(d, "farm_renew", "%s %s 900" % (board, lease))
    check(c is not None and c[0] == "normal" and c[1][0] == board and abs(int(c[1][1]) - time.time() - 900) < 60,
          "farm_renew: %r" % (c,))

    # abort during a count: completed at once, the lease stays, no late completion
    h = d.start_operation("farm_pulse_count", "%s %s file:clk_2khz.bin" % (board, lease), client=2)
    d.wait(lambda: any(u[:2] == ["progress", "evaluate"] for u in d.handles[h]["updates"]), 20)
    d.abort_all("soft")
    c = d.wait_completion(h, 5)
    check(c is not None and c[0] == "aborted", "abort during a count completes it aborted: %r" % (c,))
    d.abort_all("hard")  # twice in a row: nothing left to abort
    time.sleep(2)  # the board's result arrives meanwhile: it must not complete again
    check(len(d.completions(h)) == 1, "exactly one completion after the abort")
    check(board in leases(), "the lease survives an abort")

    # stop_operation during a count
    h = d.start_operation("farm_pulse_count", "%s %s file:clk_8khz.bin" % (board, lease), client=2)
    d.wait(lambda: any(u[:2] == ["progress", "evaluate"] for u in d.handles[h]["updates"]), 20)
    d.stop_operation("farm_pulse_count", NAME)
    c = d.wait_completion(h, 5)
    check(c is not None and c[0] == "aborted", "stoh_stop_operation completes the running count aborted: %r" % (c,))

    # flash by reference, then abort during a flash (made slow by the simulator)
    h, c = run_op(d, "farm_flash", "%s %s %s/fw.uf2" % (board, lease, HTTP), timeout=60)
    uf2 = open(os.path.join(FETCH_DIR, "fw.uf2"), "rb").read()
    check(c == ("normal", [board, hashlib.sha256(uf2).hexdigest(), str(len(uf2))]), "farm_flash: %r" % (c,))
    # flash, then count: the board runs the flashed image; the detail names farm_reboot,
    # which brings the lease's firmware back (holder only: a wrong lease is refused)
    h, c = run_op(d, "farm_pulse_count", "%s %s file:clk_1khz.bin" % (board, lease))
    check(c is not None and c[0] == "eval_failed" and "farm_reboot %s %s" % (board, lease) in " ".join(c[1]),
          "a count after farm_flash fails saying to farm_reboot the board: %r" % (c,))
    h, c = run_op(d, "farm_reboot", "%s 999999" % board)
    check(c is not None and c[0] == "bad_lease", "farm_reboot with a wrong lease: %r" % (c,))
    h, c = run_op(d, "farm_reboot", "%s %s" % (board, lease), timeout=60)
    check(c == ("normal", [board]) and any(u[:1] == ["rebooting"] for u in d.updates(h)),
          "farm_reboot completes once the lease's firmware is back: %r" % (c,))
    check(board in leases() and str(leases()[board]["lease"]) == lease, "the lease survives farm_reboot")
    h, c = run_op(d, "farm_pulse_count", "%s %s file:clk_1khz.bin" % (board, lease))
    check(c == ("normal", [board, str(COUNT), SHA]), "after farm_reboot the count works: %r" % (c,))
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "..", "lib", "mqtt_tool.py"), "pub",
                    BROKER, "icefarm/worker/sim-worker/sim",
                    json.dumps({"v": 1, "serial": board, "fault": "slow_flash", "count": 1})],
                   capture_output=True)
    h = d.start_operation("farm_flash", "%s %s file:fw.uf2" % (board, lease), client=3)
    d.wait(lambda: any(u[:2] == ["progress", "flash"] for u in d.handles[h]["updates"]), 20)
    d.abort_all("soft")
    c = d.wait_completion(h, 5)
    check(c is not None and c[0] == "aborted", "abort during a flash completes it aborted at once: %r" % (c,))
    check(d.wait(lambda: any("finishes on the board" in m for m in d.messages("htos_log")), 5),
          "the flash in flight is left to finish (an htos_log line says so)")

    # release
    h, c = run_op(d, "farm_release", "%s %s" % (board, lease))
    check(c == ("normal", [board]), "farm_release: %r" % (c,))
    check(board not in leases(), "the lease is gone")
    h, c = run_op(d, "farm_release", "%s %s" % (board, lease))
    check(c is not None and c[0] == "not_reserved", "releasing again: %r" % (c,))

    # several at once, independently
    hs = [d.start_operation("farm_board_info", s, client=9) for s in serials]
    cs = [d.wait_completion(x, 20) for x in hs]
    check(all(c is not None and c[0] == "normal" for c in cs), "four operations at once complete independently")

    # garbage from DCSS: unknown, overlong, non-ASCII messages are skipped; the link stays
    conn_before = d.conns[NAME].serial
    d.send_many(NAME, ["stoh_frobnicate 1 2", "stoh_start_operation farm_list {unterminated",
                       "x" * 20000, "stoh_abort_all soft"])
    d.send_raw(NAME, b"%12d %12d " % (5, 0) + b"\xff\xfe\x01\x02\0")
    h, c = run_op(d, "farm_list", client=4)
    check(c is not None and c[0] == "normal" and d.conns[NAME].serial == conn_before,
          "bad messages are skipped and the connection stays: %r" % (c,))
    # a header that cannot be parsed: framing lost, the DHS reconnects by itself
    d.send_raw(NAME, b"this is not a header at all!" + b"\0" * 10)
    check(d.wait(lambda: NAME in d.conns and d.conns[NAME].serial != conn_before and d.conns[NAME].registered, 30),
          "after a broken header the DHS reconnects")
    # the log says the delay that really passes: the first retry after a session
    # that was up waits 0.5-1 s (back-off 1 s with equal jitter), never a stale value
    with open(os.path.join(RUN, "dhs.log")) as f:
        said = [int(w.split()[0]) for w in f.read().split("framing lost; reconnecting in ")[1:]]
    check(said and 500 <= said[-1] <= 1000, "its log names the real delay before the next attempt: %r ms" % said[-1:])
    check(dhs.poll() is None, "the DHS is still running")

    # DCSS restarts on the same port: handles of the old session are dead; grants for
    # them are released
    deadline = time.time() + 60  # the released board is back to ready first
    while time.time() < deadline and (cli("available") or {}).get("amount", 0) + len(leases()) < 4:
        time.sleep(0.5)
    ls = leases()
    for s in serials:  # all boards taken, so the next reserve waits
        if s not in ls:
            run_op(d, "farm_reserve", s, client=6, timeout=60)
    held = leases()
    check(len(held) == 4, "all four boards are leased (%d)" % len(held))
    h_wait = d.start_operation("farm_reserve", "any 60", client=7)
    check(d.wait(lambda: any(u[:1] == ["waiting"] for u in d.handles[h_wait]["updates"]), 10)
          and not d.completions(h_wait), "a reserve with no free board waits")
    d.stop()
    d.port = port
    d.start()
    # free one board: the waiting reserve of the dead handle is granted, then released
    freed = sorted(held)[0]
    subprocess.run([CLI, "--broker", BROKER, "--timeout", "10", "--name", "dhs-%s" % NAME, "end", freed],
                   capture_output=True)
    check(d.wait_online(NAME, 30), "the DHS reconnects after DCSS restarts on the same port")
    check(d.wait(lambda: "farm_status" in d.strings, 10), "it pushes its status string again")
    deadline = time.time() + 20
    while time.time() < deadline and len(leases()) != len(held) - 1:
        time.sleep(0.5)
    check(len(leases()) == len(held) - 1, "a grant for a dead handle is released (%d leases, want %d)" %
          (len(leases()), len(held) - 1))
    check(not [v for v in d.violations if "older connection" in v], "no completion for a handle of the old session")
    h, c = run_op(d, "farm_list", client=8)
    check(c is not None and c[0] == "normal", "operations work on the new session: %r" % (c,))

    # a second DHS with the same name: DCSS refuses it, the first goes on
    dhs2 = start_dhs(port, log="dhs2.log")
    time.sleep(3)
    check(any(o == "duplicate" for _, o in d.handshakes), "DCSS refuses the second DHS of the same name")
    h, c = run_op(d, "farm_list", client=8)
    check(c is not None and c[0] == "normal" and dhs2.poll() is None, "the first DHS keeps working, the second retries")
    stop(dhs2, "the second DHS")

    # the farm's broker goes away and comes back
    os.kill(int(BROKER_PID), signal.SIGTERM)
    check(d.wait(lambda: "farm offline" in d.strings.get("farm_status", ""), 30),
          "with the broker gone the status string says farm offline")
    h, c = run_op(d, "farm_list", client=8)
    check(c is not None and c[0] == "farm_offline", "operations complete farm_offline: %r" % (c,))
    check(NAME in d.conns, "the DCSS connection stays up while the farm is away")
    broker = subprocess.Popen(["mosquitto", "-c", os.path.join(RUN, "mosquitto.conf")],
                              stdout=open(os.path.join(RUN, "mosquitto2.log"), "w"), stderr=subprocess.STDOUT)
    with open(os.path.join(RUN, "broker2.pid"), "w") as pf:
        pf.write(str(broker.pid))
    check(d.wait(lambda: "farm online" in d.strings.get("farm_status", ""), 60),
          "when the broker is back the status string says farm online")
    c = None
    deadline = time.time() + 30
    while time.time() < deadline:
        h, c = run_op(d, "farm_list", client=8)
        if c and c[0] == "normal":
            break
        time.sleep(1)
    check(c is not None and c[0] == "normal", "operations work again: %r" % (c,))

    check(not d.violations, "the fake DCSS saw no protocol violation: %r" % d.violations[:5])
    stop(dhs, "icefarm-dhs")
    d.stop()

    # protocol 1, and MX's manager discarding the first second
    d1 = fd.FakeDCSS({NAME: fd.DhsEntry(1)}, devices(), mx_mode=True)
    port1 = d1.start()
    dhs1 = start_dhs(port1, protocol=1, log="dhs-p1.log", by_env=True)
    check(d1.wait_online(NAME, 20), "protocol 1: handshake and registration (name and protocol from ICEFARM_DHS_NAME "
          "and ICEFARM_DHS_PROTOCOL; ICEFARM_NAME, the CLI's, is not the DHS's)")
    time.sleep(1.5)  # MX's manager throws away what arrives in its first second
    h, c = run_op(d1, "farm_board_info", serials[0])
    check(c is not None and c[0] == "normal", "protocol 1: an operation: %r" % (c,))
    h, c = run_op(d1, "farm_pulse_count", "%s 1 file:clk_1khz.bin" % serials[0])
    check(c is not None and c[0] in ("bad_lease", "not_reserved"), "protocol 1: a failure completion: %r" % (c,))
    check(not d1.violations, "protocol 1: no violation (every message within 199 characters): %r" % d1.violations[:3])
    stop(dhs1, "icefarm-dhs (protocol 1)")
    d1.stop()
    broker.terminate()
    broker.wait(10)
    return 1 if failures() else 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        httpd.shutdown()
    sys.exit(rc)
