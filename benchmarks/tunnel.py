"""Measure local port forwards on the lab: OpenSSH `ssh -L` against sshtunnel and paramiko, tuned or not.

A sink on the node's 127.0.0.1 sends each connection as many bytes (random, cached) as its first 12 bytes
ask for.  For each forwarder and run: time-to-ready (start until a first byte has round-tripped through the local
port), then a separate process pulls SIZE through one connection and then through 4 parallel ones.  Ratios are
to plain `ssh -L` (a) and to the fastest `ssh -L` variant of the run (a or a2), medians against medians.

With --env and --instance, each run also times `svcctl tunnel INSTANCE --via V -- true` from process start to
its "ready" line, for each --via and login (--app APP's binding, and a temporary user), interleaved.

    .venv/bin/python benchmarks/tunnel.py [--host lab-3] [--runs 5] [--mb 200] [--only a d]
        [--env DIR --instance NAME --app APP]   (SVCCTL_KEY or SVCCTL_KEY_FILE for that environment)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from svcctl.tunnel.forward import (  # noqa: E402
    ForwardSpec,
    OpenSshForwarder,
    ParamikoForwarder,
    open_forwarder,
)
from svcctl.tunnel.ports import pick_port  # noqa: E402

LAB = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))

# Runs on the node: listen on 127.0.0.1, print the port, serve until ssh's stdin closes (so it can't outlive us).
SINK = r"""
import os, socket, sys, threading
buf = memoryview(os.urandom(1 << 20))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def serve(c):
    try:
        want = b""
        while len(want) < 12:
            more = c.recv(12 - len(want))
            if not more:
                return
            want += more
        left = int(want)
        while left > 0:
            n = c.send(buf[: min(left, len(buf))])
            left -= n
    except OSError:
        pass
    finally:
        c.close()
def loop():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=loop, daemon=True).start()
sys.stdin.read()
"""

# Runs locally in its own process (as psql would be): pull `size` bytes through each of `n` connections at once.
PULL = r"""
import json, socket, sys, threading, time
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
got = [0] * n
def pull(i):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"%012d" % size)
        buf = bytearray(1 << 20)
        while got[i] < size:
            k = s.recv_into(buf)
            if not k:
                break
            got[i] += k
t0 = time.perf_counter()
threads = [threading.Thread(target=pull, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": sum(got)}))
"""


@contextmanager
def remote_sink(host: str) -> Iterator[int]:
    """Start the sink on the node; yield its port; stop it (closing ssh's stdin ends it)."""
    proc = subprocess.Popen(
        ["ssh", "-F", str(LAB / "ssh_config"), host, "python3", "-c", f"'{SINK}'"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def first_byte(port: int, deadline: float) -> None:
    """Poll until the local port accepts and a byte has gone to the sink and one come back."""
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"%012d" % 1)
                if s.recv(1):
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"local port {port} never delivered a byte")


def pull(port: int, conns: int, size: int) -> float:
    """MB/s pulling `size` bytes through each of `conns` connections, from a separate process."""
    res = subprocess.run(
        [sys.executable, "-c", PULL, str(port), str(conns), str(size)], capture_output=True, text=True, timeout=300
    )
    out = json.loads(res.stdout)
    if out["bytes"] != conns * size:
        raise RuntimeError(f"short read: {out['bytes']} of {conns * size} bytes")
    return float(out["bytes"]) / 1e6 / float(out["seconds"])


# --- the forwarders under test: each is a context manager factory (spec -> yields the local port) -----------------

Factory = Callable[[ForwardSpec], "contextmanager[int]"]  # type: ignore[type-arg]


def openssh_raw(*extra: str) -> Factory:
    """(a) Baseline: plain `ssh -N -L` with the lab's config, its own connection (plus `extra` options)."""

    @contextmanager
    def run(spec: ForwardSpec) -> Iterator[int]:
        port = pick_port("127.0.0.1", None)
        proc = subprocess.Popen(
            ["ssh", "-F", str(spec.ssh_config), "-N", "-o", "ControlMaster=no", "-o", "ControlPath=none",
             "-o", "ExitOnForwardFailure=yes", *extra, "-L", f"{port}:127.0.0.1:{spec.remote_port}", spec.host],
        )  # fmt: skip
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(10)

    return run


@contextmanager
def sshtunnel_defaults(spec: ForwardSpec) -> Iterator[int]:
    """(b) sshtunnel 0.5.1 with its defaults (paramiko's 2 MiB window, 32 KiB packets, 16 KiB reads)."""
    import sshtunnel

    fwd = sshtunnel.SSHTunnelForwarder(
        (LAB_ADDR[spec.host], 22),
        ssh_username="deploy",
        ssh_pkey=str(spec.identity),
        ssh_config_file=None,
        allow_agent=False,
        remote_bind_address=("127.0.0.1", spec.remote_port),
        local_bind_address=("127.0.0.1", pick_port("127.0.0.1", None)),
    )
    fwd.start()
    try:
        yield int(fwd.local_bind_port)
    finally:
        fwd.stop()


def raw_connect(
    spec: ForwardSpec, *, ciphers: tuple[str, ...] | None, sockbuf: int | None
) -> Callable[[], paramiko.Transport]:
    """A bare paramiko connect for the tuning matrix (benchmark only; the product goes through svcctl.ssh)."""

    def connect() -> paramiko.Transport:
        sock = socket.create_connection((LAB_ADDR[spec.host], 22), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sockbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sockbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sockbuf)
        t = paramiko.Transport(sock)
        if ciphers:
            t.get_security_options().ciphers = ciphers
        t.start_client(timeout=10)
        t.auth_publickey("deploy", paramiko.PKey.from_path(str(spec.identity)))
        return t

    return connect


def paramiko_variant(
    window: int, packet: int, ciphers: tuple[str, ...] | None = None, sockbuf: int | None = None
) -> Factory:
    """(c) ParamikoForwarder's bridge with the given flow-control sizes, cipher preference and socket buffers."""

    @contextmanager
    def run(spec: ForwardSpec) -> Iterator[int]:
        fwd = ParamikoForwarder(
            spec, raw_connect(spec, ciphers=ciphers, sockbuf=sockbuf), window_size=window, max_packet_size=packet
        )
        fwd.start()
        try:
            yield fwd.local_port
        finally:
            fwd.close()

    return run


@contextmanager
def chosen(spec: ForwardSpec) -> Iterator[int]:
    """(d) What `svcctl tunnel` uses: open_forwarder's choice (the OpenSSH master), strict host keys and all."""
    with open_forwarder(spec) as fwd:
        yield fwd.local_port


@contextmanager
def chosen_paramiko(spec: ForwardSpec) -> Iterator[int]:
    """(d') The product's paramiko path (svcctl.ssh: pinned host key, GCM preferred)."""
    with ParamikoForwarder(spec) as fwd:
        yield fwd.local_port


@contextmanager
def chosen_openssh(spec: ForwardSpec) -> Iterator[int]:
    """(d'') The product's OpenSSH path (OpenSshForwarder: isolated connection, readiness by polling)."""
    with OpenSshForwarder(spec) as fwd:
        yield fwd.local_port


GCM = ("aes128-gcm@openssh.com",)
MiB = 2**20
VARIANTS: dict[str, Factory] = {
    "a openssh ssh -L": openssh_raw(),
    "a2 openssh ssh -L aes128-gcm": openssh_raw("-c", "aes128-gcm@openssh.com"),
    "b sshtunnel defaults": sshtunnel_defaults,  # type: ignore[dict-item]
    "c1 paramiko 2M/32K ctr": paramiko_variant(2 * MiB, 32 * 1024),
    "c2 paramiko 16M/256K ctr": paramiko_variant(16 * MiB, 256 * 1024),
    "c3 paramiko 16M/256K gcm": paramiko_variant(16 * MiB, 256 * 1024, GCM),
    "c4 paramiko 64M/256K gcm +sockbuf": paramiko_variant(64 * MiB, 256 * 1024, GCM, 4 * MiB),
    "c5 paramiko 64M/256K gcm": paramiko_variant(64 * MiB, 256 * 1024, GCM),
    "c6 paramiko 16M/256K gcm +sockbuf": paramiko_variant(16 * MiB, 256 * 1024, GCM, 4 * MiB),
    "c7 paramiko 16M/32K gcm": paramiko_variant(16 * MiB, 32 * 1024, GCM),
    "d1 svcctl ParamikoForwarder": chosen_paramiko,  # type: ignore[dict-item]
    "d2 svcctl OpenSshForwarder": chosen_openssh,  # type: ignore[dict-item]
    "d  svcctl default": chosen,  # type: ignore[dict-item]
}

LAB_ADDR: dict[str, str] = {}


@dataclass
class Result:
    ready: list[float] = field(default_factory=list)
    single: list[float] = field(default_factory=list)
    parallel: list[float] = field(default_factory=list)
    lost: int = 0  # runs whose pull came up short


def cli_ready(env_dir: Path, instance: str, via: str, app: str | None) -> float:
    """Seconds from starting `svcctl tunnel INSTANCE --via VIA [--app APP] -- true` to its "ready" line."""
    argv = [sys.executable, "-m", "svcctl", "tunnel", instance, "--via", via, *(["--app", app] if app else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*argv, "--", "true"], cwd=env_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    ready, lines = None, []
    for line in proc.stderr:
        lines.append(line)
        if ready is None and line.startswith("ready in"):
            ready = time.perf_counter() - t0
    if proc.wait() != 0 or ready is None:
        raise RuntimeError(f"svcctl tunnel failed (exit {proc.returncode}):\n" + "".join(lines))
    return ready


CLI_VIAS = ("openssh", "paramiko")


def report_cli(ready: dict[str, list[float]], runs: int) -> None:
    """Time to ready of `svcctl tunnel`, per --via and login, medians (and the spread) of the runs."""
    print(f"\nsvcctl tunnel: process start to the ready line, median of {runs} runs (interleaved; min-max)\n")
    head = f"{'--via / login':36} {'ready s':>8} {'min':>6} {'max':>6}"
    print(head)
    print("-" * len(head))
    for name, values in ready.items():
        print(f"{name:36} {statistics.median(values):8.2f} {min(values):6.2f} {max(values):6.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="lab-3")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=200, help="MB per connection (default 200)")
    ap.add_argument("--parallel", type=int, default=4, help="connections at once for the parallel pull")
    ap.add_argument("--only", nargs="*", help="variant prefixes to run (e.g. a c3 d)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--env", type=Path, help="an environment with --instance applied on --host, for time to ready")
    ap.add_argument("--instance", help="the instance `svcctl tunnel` opens for the time-to-ready figures")
    ap.add_argument("--app", help="an app bound to --instance (its binding's login is timed too)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hosts = json.loads((LAB / "hosts.json").read_text())
    LAB_ADDR.update({n: h["address"] for n, h in hosts.items()})
    size = args.mb * 10**6
    variants = {k: v for k, v in VARIANTS.items() if not args.only or any(k.startswith(p) for p in args.only)}
    results = {name: Result() for name in variants}
    logins = [("binding", args.app), ("temporary user", None)] if args.app else [("temporary user", None)]
    cli: dict[str, list[float]] = {}
    with remote_sink(args.host) as sink_port:
        spec = ForwardSpec(
            host=args.host,
            remote_port=sink_port,
            ssh_config=LAB / "ssh_config",
            known_hosts=LAB / "known_hosts",
            identity=LAB / "id_ed25519",
            name=args.host,
        )
        for run in range(args.runs):  # interleaved, so drift on the machine hits every variant alike
            for name, factory in variants.items():
                t0 = time.perf_counter()
                r = results[name]
                with factory(spec) as port:
                    first_byte(port, t0 + 30)
                    r.ready.append(time.perf_counter() - t0)
                    try:
                        single, par = pull(port, 1, size), pull(port, args.parallel, size // args.parallel)
                    except RuntimeError as exc:  # a sample lost (the lab is shared): said, counted, not averaged in
                        r.lost += 1
                        print(f"run {run + 1}/{args.runs} {name}: {exc}; sample dropped", file=sys.stderr, flush=True)
                        continue
                    r.single.append(single)
                    r.parallel.append(par)
                print(f"run {run + 1}/{args.runs} {name}: {single:.0f} MB/s, {args.parallel} at once {par:.0f} MB/s",
                      file=sys.stderr, flush=True)  # fmt: skip
            if args.env and args.instance:
                for via in CLI_VIAS:
                    for login, app in logins:
                        seconds = cli_ready(args.env, args.instance, via, app)
                        cli.setdefault(f"{via} / {login}", []).append(seconds)
                        print(f"run {run + 1}/{args.runs} svcctl tunnel --via {via} ({login}): ready in "
                              f"{seconds:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    report(results, args.mb, args.host, args.runs, args.parallel)
    if cli:
        report_cli(cli, args.runs)
    if args.json:
        raw = {k: vars(v) for k, v in results.items()} | {f"svcctl tunnel --via {k}": v for k, v in cli.items()}
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


def report(results: dict[str, Result], mb: int, host: str, runs: int, parallel: int) -> None:
    """The throughput table: medians, ratios to plain `ssh -L` (a) and to the fastest `ssh -L` variant."""
    base = results.get("a openssh ssh -L")
    baselines = [r for name, r in results.items() if name.startswith(("a ", "a2 "))]
    best_single = max((statistics.median(r.single) for r in baselines), default=float("nan"))
    best_par = max((statistics.median(r.parallel) for r in baselines), default=float("nan"))
    print(f"\n{mb} MB from {host}:127.0.0.1, median of {runs} runs, interleaved "
          f"(parallel: {parallel} connections x {mb // parallel} MB at once)\n"
          "x ssh: to plain ssh -L (a); x best: to the fastest ssh -L variant of the run (a or a2)\n")  # fmt: skip
    head = (f"{'variant':36} {'MB/s':>6} {'x ssh':>6} {'x best':>6} {'par MB/s':>9} {'x ssh':>6} {'x best':>6} "
            f"{'ready s':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if not r.single:
            print(f"{name:36} (every run lost)")
            continue
        single, par, ready = (statistics.median(x) for x in (r.single, r.parallel, r.ready))
        ratio = single / statistics.median(base.single) if base else float("nan")
        pratio = par / statistics.median(base.parallel) if base else float("nan")
        lost = f"  ({r.lost} of {runs} runs lost)" if r.lost else ""
        print(f"{name:36} {single:6.0f} {ratio:6.2f} {single / best_single:6.2f} {par:9.0f} {pratio:6.2f} "
              f"{par / best_par:6.2f} {ready:8.2f}{lost}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
