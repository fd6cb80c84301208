#!/usr/bin/python3
"""The original usbip-ice example `pulse_count_usbip`, on icefarm: reserve a board
of kind usbip running the pulse-count firmware, open its serial console through
`icefarm-cli serial --pty` (the userspace USB/IP client: no root, no kernel
module) with pyserial, run the firmware protocol for each bitstream, release.

    pulse_count_usbip.py [--broker URL] [--serial SERIAL] FILE.bin...

Prints one line per bitstream: "FILE pulses N". With --serial it uses a board you
already hold with kind usbip and leaves its lease alone.

The firmware protocol (shared/reference/icefarm-original.md section 5.2): wait
for "Waiting for bitstream transfer", write the 104090 bytes raw, read the line
", pulses: N". The console comes up when the pty is opened (DTR), as a locally
plugged board's /dev/ttyACM0 would.

Needs python3-serial (pyserial) and icefarm-cli: $ICEFARM_CLI, else on PATH, else
the one built in this checkout (build/cli/icefarm-cli).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

try:
    import serial  # pyserial
except ImportError as exc:  # pragma: no cover - depends on the host
    SYSTEM_PY = "/usr/bin/python3"
    if (not os.environ.get("ICEFARM_PY_REEXEC") and os.path.exists(SYSTEM_PY)
            and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PY)):
        os.environ["ICEFARM_PY_REEXEC"] = "1"
        os.execv(SYSTEM_PY, [SYSTEM_PY] + sys.argv)
    sys.exit("pulse_count_usbip: %s (install python3-serial: apt-get install python3-serial)" % exc)

BITSTREAM_SIZE = 104090
READY = b"Waiting for bitstream transfer"
PULSES = re.compile(rb"pulses: ([0-9]+)")
FAILED = b"Watchdog timeout"


def find_cli():
    """$ICEFARM_CLI, else icefarm-cli on PATH, else the one built in this checkout (build/)."""
    if os.environ.get("ICEFARM_CLI"):
        return os.environ["ICEFARM_CLI"]
    if shutil.which("icefarm-cli"):
        return "icefarm-cli"
    built = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "build", "cli", "icefarm-cli")
    if os.access(built, os.X_OK):
        return os.path.normpath(built)
    sys.exit("pulse_count_usbip: icefarm-cli is not on PATH and not built in this checkout: "
             "cmake --install build, or set ICEFARM_CLI=/path/to/icefarm-cli")


def run(cmd, **kw):
    """subprocess.run/Popen of icefarm-cli, with a clear message when it cannot be started."""
    try:
        return (subprocess.Popen if kw.pop("background", False) else subprocess.run)(cmd, **kw)
    except OSError as exc:
        sys.exit("pulse_count_usbip: cannot run %s: %s (set ICEFARM_CLI to the icefarm-cli to use)"
                 % (cmd[0], exc.strerror))


def cli(args, base):
    """icefarm-cli --json ARGS; returns the parsed JSON reply (exits on failure)."""
    out = run(base + ["--json"] + args, stdout=subprocess.PIPE, check=False)
    try:
        reply = json.loads(out.stdout.decode() or "{}")
    except ValueError:
        reply = {}
    if out.returncode != 0:
        sys.exit("pulse_count_usbip: icefarm-cli %s failed (%d): %s" %
                 (" ".join(args), out.returncode, reply.get("error", "")))
    return reply


class Lines:
    """Lines from a serial port; what follows a matched line stays for the next call."""

    def __init__(self, port):
        self.port = port
        self.buf = b""

    def until(self, patterns, timeout_s):
        """Reads lines until one matches a pattern; returns (pattern index, line)."""
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                for i, pat in enumerate(patterns):
                    if pat.search(line) if hasattr(pat, "search") else pat in line:
                        return i, line
            if time.monotonic() >= deadline:
                raise TimeoutError("no %s within %d s" % (" or ".join(str(p) for p in patterns), timeout_s))
            self.buf += self.port.read(4096)


def evaluate(lines, bits):
    """One bitstream through the firmware protocol: its pulse count."""
    lines.until([READY], 30)
    lines.port.write(bits)
    lines.port.flush()
    i, line = lines.until([PULSES, FAILED], 60)
    if i == 1:
        raise RuntimeError(line.decode(errors="replace").strip())
    return int(PULSES.search(line).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", help="mqtt://HOST:PORT of the farm (default $ICEFARM_BROKER)")
    ap.add_argument("--name", help="client name (default $ICEFARM_NAME)")
    ap.add_argument("--serial", help="a board you hold with kind usbip (default: reserve one)")
    ap.add_argument("files", nargs="+", metavar="FILE.bin")
    a = ap.parse_args()
    base = [find_cli()]
    if a.broker:
        base += ["--broker", a.broker]
    if a.name:
        base += ["--name", a.name]
    bitstreams = []
    for f in a.files:
        with open(f, "rb") as fh:
            data = fh.read()
        if len(data) != BITSTREAM_SIZE:
            sys.exit("pulse_count_usbip: %s is %d bytes, not %d" % (f, len(data), BITSTREAM_SIZE))
        bitstreams.append((f, data))

    serial_no = a.serial
    if not serial_no:
        reply = cli(["reserve", "--amount", "1", "--kind", "usbip", "--args", '{"image": "pulsecount"}'], base)
        s = reply["serials"][0]
        serial_no = s if isinstance(s, str) else s["serial"]
    link = os.path.join(os.environ.get("TMPDIR", "/tmp"), "icefarm-%s-%d.tty" % (serial_no, os.getpid()))
    console = run(base + ["serial", serial_no, "--pty", "--link", link], background=True,
                  stdout=subprocess.PIPE, stderr=sys.stderr)
    try:
        path = console.stdout.readline().decode().strip()  # printed once the pty exists
        if not path:
            sys.exit("pulse_count_usbip: icefarm-cli serial ended (%s)" % console.wait())
        with serial.Serial(path, 115200, timeout=0.2) as port:
            lines = Lines(port)
            for name, data in bitstreams:
                print("%s pulses %d" % (name, evaluate(lines, data)), flush=True)
    finally:
        console.terminate()
        console.wait(timeout=10)
        if not a.serial:
            cli(["end", serial_no], base)


if __name__ == "__main__":
    main()
