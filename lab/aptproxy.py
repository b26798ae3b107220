#!/usr/bin/env python3
"""A caching HTTP proxy for apt inside the lab hosts that reaches only the machine's own Debian mirror.

The lab hosts have no route out.  Their apt is configured with `Acquire::http::Proxy` pointing here, on the
lab bridge.  Requests are forwarded only when their URL starts with one of the `--allow` prefixes (the URIs
of the machine's apt sources, read by labctl.py); anything else gets 403.  Package files (`.deb`, immutable
by name) are cached on disk so a second install is local; indexes are always fetched fresh.

Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Proxy(BaseHTTPRequestHandler):
    allow: tuple[str, ...] = ()
    cache: Path = Path("/var/cache/svcctl-lab/apt")
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("aptproxy: " + (format % args) + "\n")

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        url = self.path
        if not url.startswith("http://") or not any(url.startswith(a.rstrip("/") + "/") for a in self.allow):
            self.send_error(403, "only the machine's Debian mirror is reachable from the lab")
            return
        cached = self.cache / hashlib.sha256(url.encode()).hexdigest()
        if url.endswith(".deb") and cached.exists():
            self._send_file(cached, head)
            return
        req = urllib.request.Request(url, method="HEAD" if head else "GET")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                if head or not url.endswith(".deb"):
                    body = b"" if head else resp.read()
                    self.send_response(resp.status)
                    for k in ("Content-Type", "Last-Modified", "ETag"):
                        if resp.headers.get(k):
                            self.send_header(k, resp.headers[k])
                    self.send_header(
                        "Content-Length",
                        str(len(body) if not head else resp.headers.get("Content-Length", 0)),
                    )
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                fd, tmp = tempfile.mkstemp(dir=self.cache)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(resp, out)
                os.replace(tmp, cached)
        except urllib.error.HTTPError as exc:
            self.send_error(exc.code, exc.reason)
            return
        except OSError as exc:
            self.send_error(502, f"mirror unreachable: {exc}")
            return
        self._send_file(cached, head)

    def _send_file(self, path: Path, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        if not head:
            with path.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, help="ADDR:PORT on the lab bridge")
    p.add_argument("--cache", required=True, type=Path)
    p.add_argument("--allow", action="append", default=[], help="URL prefix that may be fetched")
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    Proxy.allow = tuple(a.allow)
    Proxy.cache = a.cache
    a.cache.mkdir(parents=True, exist_ok=True)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, int(port)), Proxy).serve_forever()


if __name__ == "__main__":
    main()
