"""The fake DCSS of tests/e2e/dhs/fake_dcss.py for the stack's dhs service
(tests/docker/engine.sh): it listens on HOST (the compose network's gateway, so the
container reaches it), writes its port to PORTFILE, then waits for the DHS named NAME
to connect, checks the handshake and the registration burst, runs one farm_list, and
prints "ok - ..." / "not ok - ..." per check.

    dhs_dcss.py HOST PORTFILE NAME BOARDS TIMEOUT
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e", "dhs"))
import fake_dcss as fd  # noqa: E402

OPS = ["farm_reserve", "farm_release", "farm_renew", "farm_flash", "farm_pulse_count", "farm_variance",
       "farm_list", "farm_board_info"]


def check(cond, what):
    print("%s - %s" % ("ok" if cond else "not ok", what), flush=True)
    return cond


def main():
    host, portfile, name, boards, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    devices = [fd.Device(op, fd.OPERATION, name) for op in OPS]
    devices.append(fd.Device("farm_status", fd.STRING, name, contents="{}"))
    d = fd.FakeDCSS({name: fd.DhsEntry(2)}, devices, host=host)
    port = d.start()
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % port)
    os.rename(portfile + ".tmp", portfile)
    try:
        online = d.wait_online(name, timeout)
        check(online, "the DHS in its container connects to the fake DCSS at %s:%d and answers the handshake "
              "(handshakes: %r)" % (host, port, d.handshakes))
        if not online:
            return
        check(d.wait(lambda: "farm online" in d.strings.get("farm_status", ""), 30),
              "its status string says the farm is online: %r" % d.strings.get("farm_status"))
        h = d.start_operation("farm_list", client=1)
        c = d.wait_completion(h, 30) if h is not None else None
        check(c is not None and c[0] == "normal" and c[1] == [str(boards)],
              "farm_list completes normal %d: %r" % (boards, c))
        ups = d.updates(h) if h is not None else []
        check(len(ups) == boards and all(u[0] == "board" for u in ups),
              "farm_list sends one board update per board: %r" % ups[:2])
        check(not d.violations, "the DHS broke none of DCSS's rules: %r" % d.violations[:3])
    finally:
        d.stop()


if __name__ == "__main__":
    main()
