"""A TCP relay that holds every byte for a fixed delay in each direction: hosts "far away" on the lab.

The lab machine's kernel has no netem (`tc qdisc add ... netem` says "Specified qdisc kind is unknown"),
so the latency run emulates distance on the path it cares about, SSH: each lab host's port 22 is reached
through a listening port here that delays what it relays by --ms each way (in order, never reordered or
dropped, with no bandwidth limit). A request and its answer so cost 2 x ms more, as over a WAN link with
that one-way delay. TCP's own behaviour on a long link (slow start, window growth) is not emulated: it
matters for bulk transfers, not for the small request/answer exchanges a plan makes.

    python benchmarks/delayline.py --ms 25 LOCALPORT=HOST:PORT [...]    (prints "ready" once listening)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, b""))

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    with contextlib.suppress(OSError, ConnectionError):
        await asyncio.gather(receive(), send())


async def _serve(port: int, host: str, target: int, delay: float) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay))
        except (OSError, ConnectionError, asyncio.CancelledError):
            pass  # a connection cut by either end ends both directions
        finally:
            for w in (writer, up_writer):
                w.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", type=float, required=True, help="delay each way, in milliseconds")
    p.add_argument("routes", nargs="+", help="LOCALPORT=HOST:PORT")
    a = p.parse_args()
    servers = []
    for route in a.routes:
        local, _, remote = route.partition("=")
        host, _, port = remote.rpartition(":")
        servers.append(await _serve(int(local), host, int(port), a.ms / 1000))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
