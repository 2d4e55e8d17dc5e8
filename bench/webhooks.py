"""Webhooks: how fast the real server drains a backlog to a Discord-like webhook (5 requests per 2 s)
and to a JSON receiver (no limit), and what the deliverer costs in server CPU.

    python bench/webhooks.py [discord_kills] [json_kills]     # default 200 and 1000
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp  # noqa: E402
from webhookfakes import FakeDiscord, FakeReceiver  # noqa: E402

from bench.data import real_killmails, stream, take  # noqa: E402
from bench.procstat import cpu_seconds, load_average  # noqa: E402
from bench.server import TOKEN, Server  # noqa: E402


async def drain(workdir: Path, fmt: str, count: int) -> dict[str, float]:
    """Store `count` kills with no webhook caught up, then time the webhook's catch-up."""
    fake: FakeDiscord | FakeReceiver = await (FakeDiscord() if fmt == "discord" else FakeReceiver()).start()
    hooks = workdir / f"{fmt}.toml"
    hooks.write_text(
        f'[[webhook]]\nname = "bench"\nurl = "{fake.url}"\nchannel = "kills"\nformat = "{fmt}"\nmax_age = 0\n'
    )
    server = Server(workdir / f"{fmt}-{time.monotonic_ns()}.sqlite3")
    server.env["KILLBOARD_WEBHOOKS"] = str(hooks)
    kills = take(stream(real_killmails()), count)
    try:
        await server.start()
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            for i in range(0, count, 25):
                async with session.post(server.url + "/api/killmails", json=kills[i : i + 25]) as resp:
                    assert resp.status == 202, await resp.text()
            stored = time.monotonic() - started
            while _delivered(fake) < count:
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.stop()
        await fake.close()
    out = {"kills": count, "seconds": elapsed, "stored_seconds": stored, "server_cpu": cpu}
    if isinstance(fake, FakeDiscord):
        out |= {
            "messages": len(fake.messages),
            "most_embeds": max(len(m["embeds"]) for m in fake.messages),
            "rate_limited": fake.rate_limited,
            "too_early": fake.too_early,
            "rejected": len(fake.rejected),
        }
    return out


def _delivered(fake: FakeDiscord | FakeReceiver) -> int:
    return len(fake.kill_ids()) if isinstance(fake, FakeDiscord) else len(fake.frames)


async def main(discord_kills: int, json_kills: int) -> None:
    before = load_average()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, Any] = {
            "discord": await drain(Path(tmp), "discord", discord_kills),
            "json": await drain(Path(tmp), "json", json_kills),
        }
    results["load_average"] = {"before": before, "after": load_average()[0]}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args + [200, 1000][len(args) :])))
