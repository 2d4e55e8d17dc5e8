"""Take docs/screenshot.png (the README's picture): the real server, the bundled real killmails,
Debian's headless Chromium. Run from the project root: `.venv/bin/python docs/screenshot.py`."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import launch, new_page  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

TOKEN = "screenshot"


async def main() -> None:
    files = sorted((ROOT / "tests/data/killmails").glob("[0-9]*.json"), key=lambda p: int(p.stem))
    kills = [json.loads(p.read_text()) for p in files]  # oldest kill id first
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
        try:
            await server.start()
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

                async def post(batch: list[dict[str, object]]) -> None:
                    async with session.post(server.url + "/api/killmails", json=batch) as resp:
                        assert resp.status == 202, await resp.text()

                await post(kills[:-4])
                await asyncio.sleep(1)  # stored: the page renders them
                async for browser in launch():
                    _, page, _ = await new_page(browser)
                    await page.set_viewport_size({"width": 1280, "height": 860})
                    await page.goto(server.url + "/")
                    await page.wait_for_selector("#status[data-state=live]")
                    await post(kills[-4:])  # the newest few arrive live, over the WebSocket
                    await page.wait_for_selector(f'li.kill[data-id="{kills[-1]["killmail_id"]}"]')
                    await page.wait_for_timeout(800)  # let the slide-in finish
                    await page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
