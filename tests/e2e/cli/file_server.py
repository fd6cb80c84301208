#!/usr/bin/env python3
"""A local HTTP server for icefarm-cli's URL paths (tests/e2e/cli/fetch.sh).

Usage: file_server.py DIR PORTFILE
Serves DIR's files at /NAME, and besides:
  /missing            404
  /big                200 with a Content-Length of 1 MiB (over any bitstream's cap)
  /stream             200 without a length, never ending (the cap while reading)
  /slow/NAME          NAME, one byte every 0.5 s (the timeout)
  /redirect/NAME      302 to /NAME on this server
  /redirect-ftp       302 to an ftp:// URL (refused)
  /redirect-file      302 to file:///etc/passwd (refused)
  /error              500
Writes its port to PORTFILE once it listens; runs until killed.
"""
import http.server
import os
import sys
import time

ROOT, PORTFILE = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("file_server: " + (fmt % args) + "\n")

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def local(self, name):
        path = os.path.join(ROOT, os.path.basename(name))
        return open(path, "rb").read() if os.path.isfile(path) else None

    def do_GET(self):
        p = self.path
        try:
            if p == "/big":
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 20))
                self.end_headers()
                for _ in range(256):
                    self.wfile.write(b"x" * 4096)
            elif p == "/stream":
                self.send_response(200)
                self.end_headers()  # no length: HTTP/1.0 reads to the close
                while True:
                    self.wfile.write(b"x" * 4096)
            elif p.startswith("/slow/"):
                body = self.local(p[6:]) or b""
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for b in body:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(0.5)
            elif p.startswith("/redirect/"):
                self.send(302, headers=[("Location", "http://127.0.0.1:%d/%s" % (self.server.server_address[1], p[10:]))])
            elif p == "/redirect-ftp":
                self.send(302, headers=[("Location", "ftp://127.0.0.1/x.bin")])
            elif p == "/redirect-file":
                self.send(302, headers=[("Location", "file:///etc/passwd")])
            elif p == "/error":
                self.send(500, b"broken")
            else:
                body = self.local(p[1:])
                if body is None:
                    self.send(404, b"not found")
                else:
                    self.send(200, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (over its cap, or its timeout): expected


httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
httpd.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(httpd.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
httpd.serve_forever()
