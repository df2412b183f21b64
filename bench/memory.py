"""Where webpubsub's memory per idle connection goes: ``python -m bench.memory [N]``.

Runs the service in this process under ``tracemalloc``, opens N simple clients (default 2,000)
with the benchmark's C generator, and prints the allocation sites that grew, in bytes per
connection. The handshakes are slow under tracemalloc; that does not matter here. Only
127.0.0.1 is used. (The benchmark's "idle memory" figure is RSS, which adds allocator slack.)
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import sys
import tracemalloc
from pathlib import Path

from .run import BUILD, GROUP_SIZE, build_loadgen, free_port, write_inputs


async def measure(n: int, top: int) -> None:
    from webpubsub.server.app import Service
    from webpubsub.server.config import Settings

    port = free_port()
    key = secrets.token_urlsafe(32)
    service = Service(Settings(host="127.0.0.1", port=port, access_keys=[key]))
    await service.start()
    groups = max(1, n // GROUP_SIZE)
    inputs = write_inputs("webpubsub", port, key, groups, BUILD / "memory")
    gc.collect()
    tracemalloc.start(10)
    before = tracemalloc.take_snapshot()
    gen = await asyncio.create_subprocess_exec(
        str(build_loadgen()),
        *("--port", str(port), "--clients", str(n), "--groups", str(groups)),
        *("--paths", str(inputs.paths), "--templates", str(inputs.templates)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert gen.stdin is not None and gen.stdout is not None
    try:
        await asyncio.wait_for(gen.stdout.readline(), 10)
        gen.stdin.write(b"connect\n")
        await gen.stdin.drain()
        print((await asyncio.wait_for(gen.stdout.readline(), 300)).decode().strip())
        await asyncio.sleep(1.0)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        gen.stdin.write(b"quit\n")
        await gen.stdin.drain()
        await asyncio.wait_for(gen.wait(), 30)
        await service.stop()
    stats = after.compare_to(before, "traceback")
    total = sum(s.size_diff for s in stats)
    print(f"traced growth: {total / n:,.0f} bytes per connection over {n:,} connections\n")
    here = str(Path(__file__).resolve().parent)
    for stat in stats[:top]:
        frames = [f for f in stat.traceback if here not in f.filename]
        where = frames[-1] if frames else stat.traceback[-1]
        chain = " <- ".join(
            f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback[-4:])
        )
        print(f"{stat.size_diff / n:7,.0f} B  {stat.count_diff / n:5.1f} blocks  {chain}")
        print(f"{'':24}{where.filename}:{where.lineno}")


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    try:
        import uvloop

        uvloop.run(measure(n, top=15))
    except ImportError:
        asyncio.run(measure(n, top=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
