"""icefarm-dhs's /metrics on the running farm: the DHS is started with
--metrics-listen against the fake DCSS (tests/e2e/dhs/fake_dcss.py), a short DCSS
session runs (farm_list, an unknown board, reserve, a pulse count whose bitstream
is fetched by file: reference, release), and each counter must move by exactly
what the session did; the text passes `promtool check metrics`. Prints
"ok - ..." / "not ok - ...". About 10 s.

    dhs_metrics.py FARM_BIN BROKER RUN_DIR BITS_DIR METRICS_HOSTPORT
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dhs"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
import fake_dcss as fd  # noqa: E402
from checks import check, failures  # noqa: E402

FARM_BIN, BROKER, RUN, BITS, MET = sys.argv[1:6]
NAME = "boardfarm"
OPS = ["farm_list", "farm_board_info", "farm_reserve", "farm_pulse_count", "farm_release"]


def scrape():
    try:
        with urllib.request.urlopen("http://%s/metrics" % MET, timeout=10) as r:
            return r.read().decode()
    except OSError:
        return ""


def val(text, series):
    """The value of one series, 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def wait_until(pred, timeout):
    """Polls pred() every 0.1 s until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run_op(d, op, args="", timeout=30):
    h = d.start_operation(op, args, client=1)
    return d.wait_completion(h, timeout) if h is not None else None


def main():
    fetch_dir = os.path.join(RUN, "dhs-fetch")
    os.makedirs(fetch_dir, exist_ok=True)
    shutil.copy(os.path.join(BITS, "clk_1khz.bin"), fetch_dir)
    size = os.path.getsize(os.path.join(fetch_dir, "clk_1khz.bin"))
    d = fd.FakeDCSS({NAME: fd.DhsEntry(2)}, [fd.Device(op, fd.OPERATION, NAME) for op in OPS])
    port = d.start()
    log = open(os.path.join(RUN, "dhs.log"), "a")
    dhs = subprocess.Popen([os.path.join(FARM_BIN, "ctl", "dhs", "icefarm-dhs"), "--dcss", "127.0.0.1:%d" % port,
                            "--name", NAME, "--broker", BROKER, "--fetch-dir", fetch_dir, "--metrics-listen", MET],
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        check(d.wait_online(NAME, 20), "icefarm-dhs connects to the fake DCSS")
        check(wait_until(lambda: val(scrape(), "icefarm_mqtt_connected") == 1, 20), "dhs: icefarm_mqtt_connected is 1")
        text = scrape()
        check(val(text, "icefarm_dhs_dcss_connected") == 1, "dhs: icefarm_dhs_dcss_connected is 1")
        check(val(text, "icefarm_dhs_dcss_sessions_total") == 1, "dhs: one DCSS session counted")
        check(val(text, "icefarm_dhs_operations_running") == 0, "dhs: no operation running yet")

        c = run_op(d, "farm_list")
        check(c is not None and c[0] == "normal", "farm_list completes normal: %r" % (c,))
        c = run_op(d, "farm_board_info", "NOSUCHBOARD")
        check(c is not None and c[0] == "no_such_board", "farm_board_info NOSUCHBOARD: %r" % (c,))
        c = run_op(d, "farm_reserve", "any 600", timeout=60)
        ok = check(c is not None and c[0] == "normal" and len(c[1]) == 3, "farm_reserve any: %r" % (c,))
        board, lease = (c[1][0], c[1][1]) if ok else ("none", "1")
        c = run_op(d, "farm_pulse_count", "%s %s file:clk_1khz.bin" % (board, lease))
        check(c is not None and c[0] == "normal", "farm_pulse_count by file: reference: %r" % (c,))
        c = run_op(d, "farm_release", "%s %s" % (board, lease))
        check(c is not None and c[0] == "normal", "farm_release: %r" % (c,))

        text = scrape()
        for op in OPS:
            check(val(text, 'icefarm_dhs_operations_started_total{operation="%s"}' % op) == 1,
                  "dhs: one %s started" % op)
        for op, status in [("farm_list", "normal"), ("farm_board_info", "no_such_board"),
                           ("farm_reserve", "normal"), ("farm_pulse_count", "normal"), ("farm_release", "normal")]:
            check(val(text, 'icefarm_dhs_operations_completed_total{operation="%s",status="%s"}' % (op, status)) == 1,
                  "dhs: one %s completed %s" % (op, status))
            check(val(text, 'icefarm_dhs_operation_duration_seconds_count{operation="%s"}' % op) == 1,
                  "dhs: %s's duration observed once" % op)
        check(val(text, 'icefarm_dhs_fetch_duration_seconds_count{result="ok"}') == 1, "dhs: one fetch timed, ok")
        check(val(text, "icefarm_dhs_fetch_bytes_total") == size, "dhs: the fetch counted %d bytes" % size)
        prom = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        check(prom.returncode == 0, "icefarm-dhs's /metrics passes promtool check metrics %s" % prom.stdout.strip())

        check(not d.violations, "the fake DCSS saw no protocol violation: %r" % d.violations[:3])
        d.stop()
        check(wait_until(lambda: val(scrape(), "icefarm_dhs_dcss_connected") == 0, 20),
              "dhs: icefarm_dhs_dcss_connected is 0 once DCSS has gone away")
    finally:
        if dhs.poll() is None:
            dhs.send_signal(signal.SIGTERM)
            try:
                rc = dhs.wait(30)
            except subprocess.TimeoutExpired:
                dhs.kill()
                rc = dhs.wait()
        else:
            rc = dhs.returncode
        check(rc == 0, "icefarm-dhs exits 0 on SIGTERM (status %s)" % rc)
        d.stop()
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main())
