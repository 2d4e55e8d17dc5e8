"""The docs stay honest: every setting and channel the code knows is documented, every link and
path in the docs exists, the README stays one screen, and its two snippets work against the real
server."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import AUTH, Client, load_killmails, settle

from killboard.config import LIMITS, PROJECT_ROOT, Config, _show
from killboard.kill import topics

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# Pages another branch of issue 18 writes (the tool and the container; development): links to
# them may point nowhere until it lands. Remove a name here once its page is in the tree.
# Paths the docs name that exist only once the server has run.
CREATED_AT_RUN = re.compile(r"\.sqlite3(-wal|-shm)?$")
ENV = r"KILLBOARD_[A-Z0-9_]*[A-Z0-9]"
# A path in the tree, wherever the docs name it (not a part of /etc/killboard/… or a User-Agent).
TREE_PATH = re.compile(
    r"(?<![\w/.-])(?:killboard|tests|bench|deploy|docs|static|templates|data)(?:/[A-Za-z_.][\w.@-]*)+"
)


def text_outside_code(page: Path) -> str:
    """The page without fenced blocks and inline code: what Markdown renders as prose."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def table_rows(page: Path) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in page.read_text().splitlines()
        if line.startswith("|")
    ]


def slugs(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a page."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_readme_is_one_screen() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines; the reference belongs in docs/"


def test_every_limit_is_documented_with_its_range() -> None:
    rows = table_rows(DOCS / "configuration.md")
    defaults = Config()
    for name, limit in LIMITS.items():
        mine = [row for row in rows if row[0] == f"`{name}`"]
        assert mine, f"docs/configuration.md has no row for the setting `{name}` (config.LIMITS)"
        row = " | ".join(mine[0])
        for what, value in (("low", limit.low), ("high", limit.high), ("default", getattr(defaults, name))):
            assert _show(value) in row, f"`{name}`: its {what} {_show(value)} is not in its row: {row}"
        if limit.env:
            assert f"`{limit.env}`" in row, f"`{name}`: its variable {limit.env} is not in its row"


def environment_variables() -> set[str]:
    """Every KILLBOARD_* name the package reads: quoted in its source as a literal."""
    found: set[str] = set()
    for module in (PROJECT_ROOT / "killboard").rglob("*.py"):
        found |= set(re.findall(rf"[\"']({ENV})[\"']", module.read_text()))
    return found


def test_every_environment_variable_is_documented() -> None:
    read = environment_variables()
    assert {"KILLBOARD_PORT", "KILLBOARD_WS_SEND_BUFFER", "KILLBOARD_LOG_FORMAT"} <= read  # the scan works
    documented = {
        name for row in table_rows(DOCS / "configuration.md") if len(row) > 1 for name in re.findall(ENV, row[1])
    }
    missing = sorted(read - documented)
    assert not missing, f"read by killboard/ but not in the table of docs/configuration.md: {missing}"
    stale = sorted(documented - read)
    assert not stale, f"docs/configuration.md documents variables nothing reads: {stale}"


def test_every_channel_kind_is_documented() -> None:
    text = (DOCS / "protocol.md").read_text()
    channels = text[text.index("## Channels") : text.index("## Resume")]
    for name in ("kills", "all", *sorted(topics.TOPICS)):
        assert f"`{name}`" in channels, f"docs/protocol.md, Channels: the topic `{name}` is missing"
    for prefix in sorted(topics.DOT_PREFIXES):
        assert re.search(rf"`{prefix}\.[A-Z]+`", channels), f"docs/protocol.md: `{prefix}.ID` is missing"
    for prefix in sorted(topics.COLON_PREFIXES | topics.COLON_PREFIXES_SAME_AS_DOT):
        assert re.search(rf"`{prefix}:[A-Z]+`", channels), f"docs/protocol.md: `{prefix}:ID` is missing"
    assert f"up to {topics.MAX_PARTS} conditions" in channels


def test_ship_group_lists_match_the_code() -> None:
    rows = {row[0].strip("`"): row for row in table_rows(DOCS / "protocol.md") if len(row) == 2}
    for topic, groups in topics.SHIP_GROUP_TOPICS.items():
        assert topic in rows, f"docs/protocol.md has no ship-group row for `{topic}`"
        listed = {int(n) for n in re.findall(r"\b\d+\b", rows[topic][1])}
        assert listed == set(groups), f"`{topic}`: the docs list {sorted(listed)}, the code {sorted(groups)}"


def test_relative_links_point_at_files_and_headings() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", text_outside_code(page)):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
                continue
            if anchor and file.suffix == ".md" and anchor not in slugs(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_paths_named_in_the_docs_exist() -> None:
    missing = []
    for page in PAGES:
        for path in set(TREE_PATH.findall(page.read_text())):
            path = path.rstrip(".")
            if CREATED_AT_RUN.search(path):
                continue
            if not (PROJECT_ROOT / path).exists():
                missing.append(f"{page.name}: {path}")
    assert not missing, "named in the docs, not in the tree:\n" + "\n".join(sorted(missing))


def snippet(language: str, port: int) -> str:
    found = re.search(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert found, f"README.md has no {language} snippet"
    assert "127.0.0.1:8080" in found.group(1)
    return found.group(1).replace("127.0.0.1:8080", f"127.0.0.1:{port}")


async def first_line_for_a_kill(client: Client, command: list[str]) -> tuple[str, str]:
    """Run a README snippet against the real app, post a real kill, and return the line the
    snippet printed for it and the line the README promises (victim ship, value)."""
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(15):
            while (await (await client.get("/health")).json())["subscribed"] < 1:
                assert proc.returncode is None, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        kill = load_killmails()[0]
        assert (await client.post("/api/killmails", json=kill, headers=AUTH)).status == 202
        await settle(client)
        stored = await (await client.get(f"/api/killmails/{kill['killmail_id']}")).json()
        expected = f"{stored['victim']['ship_name']['en']} {round(stored['total_value']):,} ISK"
        line = await asyncio.wait_for(proc.stdout.readline(), 15)  # type: ignore[union-attr]
        return line.decode().strip(), expected
    finally:
        proc.kill()
        await proc.wait()


async def test_readme_python_snippet_prints_each_kill(client: Client, tmp_path: Path) -> None:
    script = tmp_path / "bot.py"
    script.write_text(snippet("python", client.server.port or 0))
    line, expected = await first_line_for_a_kill(client, [sys.executable, str(script)])
    assert line == expected


def node_with_websocket() -> list[str] | None:
    """node, with the flag its version needs for the global WebSocket (built in from 22)."""
    node = shutil.which("node")
    if node is None:
        return None
    major = int(subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip("v\n").split(".")[0])
    return [node] if major >= 22 else [node, "--experimental-websocket"] if major >= 20 else None


async def test_readme_js_snippet_prints_each_kill(client: Client, tmp_path: Path) -> None:
    node = node_with_websocket()
    if node is None:
        pytest.skip("needs Node.js 20+ for a WebSocket outside the browser")
    script = tmp_path / "page.js"
    script.write_text(snippet("js", client.server.port or 0))
    line, expected = await first_line_for_a_kill(client, [*node, str(script)])
    assert line == expected
