"""A fake DCSS (the Blu-Ice hub) for testing a DHS, Python standard library only.

Written from what the real DCSS does (the SSRL server's dcss_hardware_client.c,
dcss_client.c and dcss_broadcast.h in the public Blu-Ice/DCS sources), not from our
DHS's code. Defaults behave like the real DCSS; knobs cover the
other peers.

    d = FakeDCSS(dhs={"boardfarm": DhsEntry(protocol=2)},
                 devices=[Device("farm_reserve", OPERATION, "boardfarm"), ...])
    d.start()                          # listens on 127.0.0.1:<d.port> (host=... elsewhere)
    d.wait_online("boardfarm", 10)
    h = d.start_operation("farm_list", client=3)
    c = d.wait_completion(h, 10)       # ("normal", ["4"]) as DCSS's scripts see it
    d.stop()

Every DHS message is checked (item 8): ASCII, B = 0, T matches what was sent, the
size limits, balanced braces, no character DCSS would blank, one completion per
handle with a one-word status, no completion for a handle of an older connection.
Failures go to d.violations (tests assert it is empty).
"""

import re
import socket
import threading
import time

# database.dat device types (dcss_device.h)
REAL_MOTOR, PSEUDO_MOTOR, HARDWARE_HOST, ION_CHAMBER, SHUTTER = 1, 2, 3, 4, 6
OPERATION, ENCODER, STRING, OBJECT = 11, 12, 13, 14

BLOCK = 200
HEADER = 26
V2_BUDGET = 1000  # our own budget for DHS text (section 3.4)
BAD_CHARS = '[]$;"\n'  # DCS_BAD_CHARACTERS: blanked before broadcasting


class DhsEntry:
    """A hardware host in the database: protocol 1 or 2; `host` is the address the
    DHS must connect from (None: any, the default for tests)."""

    def __init__(self, protocol=2, host=None):
        self.protocol = protocol
        self.host = host


class Device:
    def __init__(self, name, dtype, dhs, hw_name=None, contents="", extra=None):
        self.name = name
        self.type = dtype
        self.dhs = dhs
        self.hw_name = hw_name or name
        self.contents = contents  # strings; shutters: "open"/"closed"
        self.extra = extra or []  # ion chamber: counter channel timer timerType; motors: dependencies


def registration_line(d):
    """The exact text of section 4.2, with its trailing newline where DCSS sends one."""
    if d.type == REAL_MOTOR:
        return "stoh_register_real_motor %s %s" % (d.name, d.hw_name)
    if d.type == PSEUDO_MOTOR:
        return "stoh_register_pseudo_motor %s %s" % (d.name, d.hw_name)
    if d.type == ION_CHAMBER:
        return "stoh_register_ion_chamber %s %s\n" % (d.name, " ".join(d.extra))
    if d.type == SHUTTER:
        return "stoh_register_shutter %s %s %s\n" % (d.name, d.contents or "closed", d.hw_name)
    kind = {OPERATION: "operation", ENCODER: "encoder", STRING: "string", OBJECT: "object"}[d.type]
    return "stoh_register_%s %s %s\n" % (kind, d.name, d.hw_name)


def header(text_len, bin_len, shape):
    """A protocol-2 header in one of the shapes of section 3.2."""
    if shape == "dcss":
        h = "%12d %12d " % (text_len, bin_len)
    elif shape == "cpp":
        h = "%12d %12d\0" % (text_len, bin_len)
    elif shape == "mx":
        h = "%12d%13d\0" % (text_len, bin_len)
    elif shape == "java":
        h = ("%d %d" % (text_len, bin_len)).ljust(HEADER, "\0")
    else:
        raise ValueError(shape)
    assert len(h) == HEADER, repr(h)
    return h.encode()


def tcl_words(text):
    """Splits a Tcl list the simple way DCSS's scripts rely on (braces group)."""
    words, i, n = [], 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        if text[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            words.append(text[i + 1:j - 1])
            i = j
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            words.append(text[i:j])
            i = j
    return words


def dcss_filter(text):
    """What GUIs and scripts see of a DHS message (dcss_broadcast.h)."""
    out = "".join(" " if c in BAD_CHARS else c for c in text)
    return re.sub(r"(?<!\S)PRIVATE(\S*)", lambda m: "PRIVATE" + "X" * len(m.group(1)), out)


class Conn:
    """One accepted DHS connection (a thread, as in the real DCSS)."""

    def __init__(self, dcss, sock, addr, serial):
        self.dcss = dcss
        self.sock = sock
        self.addr = addr
        self.serial = serial  # connection number, to tell old handles from new
        self.name = None
        self.protocol = 1
        self.send_lock = threading.Lock()
        self.closed = False
        self.registered = False


class FakeDCSS:
    def __init__(self, dhs, devices, port=0, host="127.0.0.1", strict=False, reject_host_delay=1.0, duplicate_delay=3.0,
                 header_shape="dcss", send_nul=True, segment=None, mx_mode=False):
        self.dhs = dhs
        self.devices = devices
        self.port = port
        self.host = host  # the address to listen on (a container's DHS needs its bridge's)
        self.strict = strict  # assert htos_client_is_hardware as the first word
        self.reject_host_delay = reject_host_delay
        self.duplicate_delay = duplicate_delay
        self.header_shape = header_shape  # how we frame protocol-2 messages to the DHS
        self.send_nul = send_nul  # protocol 2: NUL after the text, counted in T (DCSS) or not (Tcl)
        self.segment = segment  # None: one write per message; 1: one byte per write
        self.mx_mode = mx_mode  # discard what the DHS sends in the first second
        self.lock = threading.Condition()
        self.listener = None
        self.conns = {}  # dhs name -> Conn (online)
        self.all_conns = []
        self.serial = 0
        self.log = []  # (time, event, detail) of everything
        self.received = []  # (conn serial, text) of every DHS message
        self.broadcast = []  # stog_ lines as GUIs would see them
        self.strings = {}  # string device -> contents DCSS stores
        self.handles = {}  # handle -> {"op", "conn", "updates": [], "completions": [], "dead"}
        self.counters = {}  # client id -> next operation counter
        self.violations = []
        self.handshakes = []  # (name or None, outcome)
        self._threads = []
        self._stopping = False

    # ---- lifecycle ----

    def start(self):
        """Listens (again, on the same port after stop())."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(8)
        self.port = s.getsockname()[1]
        self.listener = s
        self._stopping = False
        t = threading.Thread(target=self._accept_loop, args=(s,), daemon=True)
        t.start()
        self._threads.append(t)
        self._note("listening", self.port)
        return self.port

    def stop(self, abrupt=True):
        """Stops listening and drops every connection (a DCSS that went away)."""
        self._stopping = True
        if self.listener:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            conns = list(self.conns.values())
        for c in conns:
            self.drop(c.name, abrupt=abrupt)
        with self.lock:
            pending = [c for c in self.all_conns if not c.closed]
        for c in pending:
            self._close(c)
        for t in self._threads:
            t.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _note(self, event, detail=""):
        with self.lock:
            self.log.append((time.monotonic(), event, detail))
            self.lock.notify_all()

    def _violation(self, conn, what):
        with self.lock:
            self.violations.append("%s: %s" % (conn.name if conn else "?", what))
            self.lock.notify_all()

    def _accept_loop(self, lsock):
        while not self._stopping:
            try:
                sock, addr = lsock.accept()
            except OSError:
                return
            with self.lock:
                self.serial += 1
                conn = Conn(self, sock, addr, self.serial)
                self.all_conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    # ---- handshake (section 4.1) ----

    def _read_exact(self, conn, n, deadline=None):
        buf = b""
        while len(buf) < n:
            try:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    conn.sock.settimeout(left)
                else:
                    conn.sock.settimeout(None)
                chunk = conn.sock.recv(n - len(buf))
            except (socket.timeout, OSError):
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _handshake(self, conn):
        self._send_raw(conn, b"stoc_send_client_type".ljust(BLOCK, b"\0"))
        block = self._read_exact(conn, BLOCK, time.monotonic() + 1.0)  # 1 s, cumulative
        if block is None:
            self.handshakes.append((None, "timeout"))
            self._note("handshake timeout", conn.addr)
            return False
        text = block.split(b"\0", 1)[0].strip(b" \0\t\r\n").decode("ascii", "replace")
        words = text.split()
        if self.strict and (not words or words[0] != "htos_client_is_hardware"):
            self._violation(conn, "handshake's first word is %r" % (words[0] if words else ""))
        name = words[1] if len(words) > 1 else ""
        entry = self.dhs.get(name)
        if entry is None:
            self.handshakes.append((name, "unknown"))
            self._note("handshake unknown name", name)
            return False
        if entry.host is not None and conn.addr[0] != entry.host:
            time.sleep(self.reject_host_delay)
            self.handshakes.append((name, "wrong host"))
            self._note("handshake wrong host", conn.addr[0])
            return False
        with self.lock:
            dup = name in self.conns
        if dup:
            time.sleep(self.duplicate_delay)
            self.handshakes.append((name, "duplicate"))
            self._note("handshake duplicate", name)
            return False
        conn.name = name
        conn.protocol = entry.protocol
        with self.lock:
            self.conns[name] = conn
            self.handshakes.append((name, "online"))
            self.broadcast.append("stog_configure_hardware_host %s localhost online" % name)
            self.lock.notify_all()
        self._note("online", name)
        return True

    # ---- a connection ----

    def _serve(self, conn):
        try:
            if not self._handshake(conn):
                self._close(conn)
                return
            for d in self.devices:
                if d.dhs == conn.name:
                    self.send(conn, registration_line(d))
            for d in self.devices:
                if d.dhs == conn.name and d.type == REAL_MOTOR and d.extra:
                    self.send(conn, "stoh_set_motor_dependency %s %s" % (d.name, " ".join(d.extra)))
                if d.dhs == conn.name and d.type == PSEUDO_MOTOR and d.extra:
                    self.send(conn, "stoh_set_motor_children %s %s" % (d.name, " ".join(d.extra)))
            conn.registered = True
            self._note("registered", conn.name)
            if self.mx_mode:  # MX's manager: sleep 1 s and discard unread input
                time.sleep(1.0)
                conn.sock.setblocking(False)
                try:
                    while conn.sock.recv(65536):
                        pass
                except (BlockingIOError, OSError):
                    pass
                conn.sock.setblocking(True)
            while True:
                text = self._read_message(conn)
                if text is None:
                    break
                self._dispatch(conn, text)
        finally:
            self._disconnected(conn)

    def _read_message(self, conn):
        if conn.protocol == 1:
            block = self._read_exact(conn, BLOCK)
            if block is None:
                return None
            if b"\0" not in block:
                self._violation(conn, "protocol-1 message without a NUL (200 characters or more)")
            raw = block.split(b"\0", 1)[0]
        else:
            hdr = self._read_exact(conn, HEADER)
            if hdr is None:
                return None
            m = re.fullmatch(rb"[ \0]*(\d+)[ \0]+(\d+)[ \0]*", hdr)
            if not m:
                self._violation(conn, "bad protocol-2 header %r" % hdr)
                return None
            tlen, blen = int(m.group(1)), int(m.group(2))
            if blen != 0:
                self._violation(conn, "binary part of %d bytes" % blen)
            raw = self._read_exact(conn, tlen + blen)
            if raw is None:
                return None
            raw = raw[:tlen]
            if b"\0" in raw[:-1]:
                self._violation(conn, "T = %d but the text ends earlier" % tlen)
            raw = raw.rstrip(b"\0")
            if len(raw) > V2_BUDGET:
                self._violation(conn, "message of %d bytes over the %d budget" % (len(raw), V2_BUDGET))
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            self._violation(conn, "non-ASCII message %r" % raw[:80])
            text = raw.decode("ascii", "replace")
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in text):
            self._violation(conn, "control character in %r" % text[:80])
        bad = [c for c in text if c in BAD_CHARS]
        if bad:
            self._violation(conn, "characters DCSS blanks %r in %r" % ("".join(bad), text[:80]))
        depth = 0
        for c in text:
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth < 0:
                break
        if depth != 0:
            self._violation(conn, "unbalanced braces in %r" % text[:80])
        return text.strip()

    def _dispatch(self, conn, text):
        with self.lock:
            self.received.append((conn.serial, text))
            self.lock.notify_all()
        words = text.split()
        if not words:
            return
        cmd = words[0]
        if cmd in ("htos_operation_update", "htos_operation_completed"):
            self._operation_message(conn, cmd, text)
        elif cmd == "htos_set_string_completed":
            # the real rule: status at a fixed place, contents 34 + len(name) characters in
            if len(words) >= 3:
                name, status = words[1], words[2]
                contents = text[34 + len(name):]
                with self.lock:
                    if status == "normal":
                        self.strings[name] = contents
                    self.broadcast.append(dcss_filter("stog" + text[4:]))
                    self.lock.notify_all()
        elif cmd == "htos_send_configuration":
            dev = next((d for d in self.devices if len(words) > 1 and d.name == words[1]), None)
            if dev and dev.type == STRING:
                self.send(conn, "stoh_configure_string %s %s %s" % (dev.name, dev.dhs,
                                                                     self.strings.get(dev.name, dev.contents)))
            elif dev and dev.type == OPERATION:
                self.send(conn, "stoh_configure_operation %s %s" % (dev.name, dev.dhs))
        elif cmd in ("htos_log", "htos_note", "htos_report_shutter_state", "htos_report_ion_chambers",
                     "htos_motor_move_started", "htos_update_motor_position", "htos_motor_move_completed",
                     "htos_start_operation", "htos_configure_device", "htos_get_encoder_completed",
                     "htos_set_encoder_completed"):
            with self.lock:
                self.broadcast.append(dcss_filter("stog" + text[4:]))
                self.lock.notify_all()
        else:
            self._note("unrecognized command", text[:80])  # logged; the connection stays

    def _operation_message(self, conn, cmd, text):
        words = tcl_words(text)
        if len(words) < 3:
            self._violation(conn, "short operation message %r" % text)
            return
        op, handle = words[1], words[2]
        with self.lock:
            h = self.handles.get(handle)
            if h is None:
                self.violations.append("%s: %s for unknown handle %s" % (conn.name, cmd, handle))
            elif h["conn"] != conn.serial:
                self.violations.append("%s: %s for handle %s of an older connection" % (conn.name, cmd, handle))
            elif h["op"] != op:
                self.violations.append("%s: %s names %s, handle %s is %s" % (conn.name, cmd, op, handle, h["op"]))
            elif cmd == "htos_operation_update":
                if h["completions"]:
                    self.violations.append("%s: update after completion of %s" % (conn.name, handle))
                h["updates"].append(words[3:])
            else:
                if len(words) < 4:
                    self.violations.append("%s: completion of %s without a status" % (conn.name, handle))
                elif h["completions"] or h["dead"]:
                    self.violations.append("%s: second completion of %s: %r" % (conn.name, handle, text))
                h["completions"].append((words[3] if len(words) > 3 else "", words[4:]))
            self.broadcast.append(dcss_filter("stog" + text[4:]))
            self.lock.notify_all()

    def _disconnected(self, conn):
        self._close(conn)
        with self.lock:
            if conn.name and self.conns.get(conn.name) is conn:
                del self.conns[conn.name]
                self.broadcast.append("stog_configure_hardware_host %s localhost offline" % conn.name)
                # the scripting engine fails what was outstanding on that DHS
                for handle, h in self.handles.items():
                    if h["conn"] == conn.serial and not h["completions"] and not h["dead"]:
                        h["dead"] = "no_hw_host_%s" % conn.name
            self.lock.notify_all()
        if conn.name:
            self._note("offline", conn.name)

    def _close(self, conn):
        if conn.closed:
            return
        conn.closed = True
        try:
            conn.sock.close()
        except OSError:
            pass

    # ---- sending ----

    def _send_raw(self, conn, data):
        with conn.send_lock:
            try:
                if self.segment:
                    for i in range(0, len(data), self.segment):
                        conn.sock.sendall(data[i:i + self.segment])
                else:
                    conn.sock.sendall(data)
                return True
            except OSError:
                return False

    def frame(self, protocol, text):
        raw = text.encode("ascii")
        if protocol == 1:
            return raw[:BLOCK].ljust(BLOCK, b"\0")  # strncpy: longer text loses its NUL
        body = raw + (b"\0" if self.send_nul else b"")
        return header(len(body), 0, self.header_shape) + body

    def send(self, conn, text):
        return self._send_raw(conn, self.frame(conn.protocol, text))

    def send_raw(self, dhs, data):
        """Bytes as they are (garbage tests)."""
        conn = self._conn(dhs)
        return conn is not None and self._send_raw(conn, data)

    def send_many(self, dhs, texts):
        """Several messages in one write."""
        conn = self._conn(dhs)
        return conn is not None and self._send_raw(conn, b"".join(self.frame(conn.protocol, t) for t in texts))

    def _conn(self, dhs):
        with self.lock:
            return self.conns.get(dhs)

    # ---- the test driver (item 7) ----

    def new_handle(self, client):
        with self.lock:
            n = self.counters.get(client, 0) + 1
            self.counters[client] = n
        return "%s.%d" % (client, n)

    def start_operation(self, op, args="", client=1, dhs=None):
        """stoh_start_operation <op> <client>.<n> <args>; returns the handle (None if
        the DHS is not connected: the real DCSS answers no_hw_host itself)."""
        dev = next((d for d in self.devices if d.name == op and d.type == OPERATION), None)
        dhs = dhs or (dev.dhs if dev else next(iter(self.dhs)))
        conn = self._conn(dhs)
        handle = self.new_handle(client)
        if conn is None:
            return None
        with self.lock:
            self.handles[handle] = {"op": op, "conn": conn.serial, "updates": [], "completions": [], "dead": None}
            self.broadcast.append("stog_start_operation %s %s %s" % (op, handle, args))
        # the GUI's text with its prefix swapped: the DCSS name, not the hwName
        self.send(conn, ("stoh_start_operation %s %s %s" % (op, handle, args)).rstrip())
        return handle

    def stop_operation(self, op, dhs):
        return self.send(self._conn(dhs), "stoh_stop_operation %s" % op) if self._conn(dhs) else False

    def abort_all(self, mode="soft"):
        with self.lock:
            conns = list(self.conns.values())
        for c in conns:
            self.send(c, "stoh_abort_all %s" % mode)

    def set_string(self, name, contents):
        dev = next(d for d in self.devices if d.name == name)
        conn = self._conn(dev.dhs)
        return conn is not None and self.send(conn, "stoh_set_string %s %s" % (name, contents))

    def read_ion_chambers(self, dhs, seconds, channels):
        conn = self._conn(dhs)
        return conn is not None and self.send(conn, "stoh_read_ion_chambers %s 0 %s" % (seconds, " ".join(channels)))

    def wait(self, pred, timeout, what="condition"):
        """Waits until pred() (called under the lock) is true; returns its value or None."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.2))

    def wait_online(self, dhs, timeout):
        return self.wait(lambda: dhs in self.conns and self.conns[dhs].registered, timeout)

    def wait_offline(self, dhs, timeout):
        return self.wait(lambda: dhs not in self.conns, timeout)

    def wait_completion(self, handle, timeout, n=1):
        """The n-th completion (status, [args]) of a handle, or None."""
        def done():
            h = self.handles.get(handle)
            return h["completions"][n - 1] if h and len(h["completions"]) >= n else None
        return self.wait(done, timeout)

    def updates(self, handle):
        with self.lock:
            return list(self.handles[handle]["updates"])

    def completions(self, handle):
        with self.lock:
            return list(self.handles[handle]["completions"])

    def messages(self, prefix=""):
        with self.lock:
            return [t for _, t in self.received if t.startswith(prefix)]

    def drop(self, dhs, abrupt=True):
        """Drops the TCP connection (RST when abrupt, else a FIN)."""
        conn = self._conn(dhs)
        if conn is None:
            return False
        if abrupt:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            except OSError:
                pass
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def half_close(self, dhs):
        conn = self._conn(dhs)
        if conn is None:
            return False
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True
