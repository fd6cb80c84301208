#!/usr/bin/python3
"""conf-example.py PROGRAM OUT: an example `--config` file for an icefarm daemon, made
from its --help (where its options and defaults are written down): every option as a
commented-out `name = default` line under what it means, so the file is valid as
installed and each setting is one uncomment away."""
import os
import re
import subprocess
import sys

prog, out = sys.argv[1], sys.argv[2]
name = os.path.basename(prog)
text = subprocess.run([prog, "--help"], capture_output=True, text=True, check=True).stdout

entries = []  # [options, description]
for line in text.splitlines():
    if re.match(r"^\s+--[a-z]", line):
        opts = re.findall(r"--([a-z][a-z-]*)", line.split("  ")[0] if "   " in line else line)
        head = re.match(r"^\s+((?:--[a-z][a-z-]*(?: [A-Z][A-Z0-9:]*)?,? ?)+)\s*(.*)$", line)
        entries.append([re.findall(r"--([a-z][a-z-]*)", head.group(1)), head.group(2)])
    elif entries and re.match(r"^\s{8,}\S", line):
        entries[-1][1] += " " + line.strip()

with open(out, "w") as f:
    f.write("# %s configuration: `name = value` lines; # starts a comment.\n" % name)
    f.write("# Flags and ICEFARM_* environment variables win over this file, and an unknown\n")
    f.write("# name is an error. Generated from `%s --help`: uncomment what you change.\n" % name)
    f.write("# Keep it mode 0600 when it holds a password; the systemd unit hands it to the\n")
    f.write("# service as a credential.\n")
    for opts, desc in entries:
        opts = [o for o in opts if o not in ("help", "config", "version")]
        if not opts:
            continue
        env, defaults = "", []
        m = re.search(r"\[([^\]]*)\]\s*$", desc)
        if m:
            desc = desc[:m.start()].rstrip()
            inner = m.group(1)
            em = re.match(r"(ICEFARM_[A-Z_]+)(?:,\s*(.*))?$", inner)
            if em:
                env, rest = em.group(1), em.group(2) or ""
            else:
                rest = inner
            defaults = [d.strip() for d in rest.split(", ")] if len(opts) > 1 else [rest.strip()]
        desc = re.sub(r"^(\[[^\]]*\])+\s+", "", desc.strip())
        shown = ", ".join(d for d in defaults if d)
        f.write("\n# %s%s%s\n" % (desc, " [environment: %s]" % env if env else "",
                                   " [default: %s]" % shown if shown else ""))
        for i, o in enumerate(opts):
            d = defaults[i] if i < len(defaults) else ""
            literal = re.match(r"^[\w.:/,+-]+$", d) and d not in ("off", "hostname")
            f.write("#%s = %s\n" % (o, d) if literal else "#%s =\n" % o)
