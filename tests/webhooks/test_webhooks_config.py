"""The webhooks file: good files load; bad ones fail with file, line, entry and field, never the URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from killboard.config import PROJECT_ROOT, from_env
from killboard.webhooks.config import WebhookConfigError, load, loads

GOOD = """\
# our kills
[[webhook]]
name = "our-kills"
url = "https://discord.com/api/webhooks/123/SECRET-TOKEN"
channel = "alliance:99000001"
format = "discord"
mention = "@here"
mention_min_value = 10_000_000_000
max_age = 3600

[[webhook]]
name = "bot"
url = "http://127.0.0.1:9000/hook"
channel = "region.10000002&10b"
format = "json"
secret = "s"
"""


def test_a_good_file_loads() -> None:
    first, second = loads(GOOD)
    assert (first.name, first.format, first.mention, first.mention_min_value) == ("our-kills", "discord", "@here", 1e10)
    assert first.allowed_mentions() == {"parse": ["everyone"]}
    assert second.format == "json" and second.secret == "s" and second.max_age == 3600
    assert "SECRET-TOKEN" not in repr(first) and "'s'" not in repr(second)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('channel = "alliance:99000001"', 'channel = "alliance:abc"'), ":5: webhook 1 (our-kills): channel: "),
        (('format = "json"', 'format = "xml"'), ":15: webhook 2 (bot): format: must be one of discord, json"),
        (('name = "bot"', 'name = "our-kills"'), ":12: webhook 2 (our-kills): name: 'our-kills' is used"),
        (('mention = "@here"', 'mention = "@someone"'), ":7: webhook 1 (our-kills): mention: must be"),
        (("max_age = 3600", "max_age = -1"), ":9: webhook 1 (our-kills): max_age: "),
        (("max_age = 3600", 'max_age = 3600\nurll = "x"'), ":10: webhook 1 (our-kills): urll: unknown field"),
        (('url = "http://127.0.0.1:9000/hook"', 'url = "ftp://x/SECRET2"'), ":13: webhook 2 (bot): url: must be"),
        (('secret = "s"', 'secret = ""'), ":16: webhook 2 (bot): secret: must be a non-empty string"),
        (('name = "bot"', 'name = "no spaces"'), ":12: webhook 2: name: 1-64 letters"),
        (('channel = "region.10000002&10b"\n', ""), ":11: webhook 2 (bot): channel: required"),
        (("max_age = 3600", "max_age = 3600\nmax_age = 5"), "not valid TOML: Cannot overwrite a value (at line 10"),
        (("max_age = 3600", "max_age = " + "9" * 5000), "not valid TOML: Exceeds the limit (4300 digits)"),
    ],
)
def test_a_bad_entry_names_its_line_entry_and_field(change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(WebhookConfigError) as err:
        loads(text, "hooks.toml")
    message = str(err.value)
    assert message.startswith("hooks.toml"), message
    assert expected in message, message
    assert "\n" not in message and "SECRET" not in message


def test_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="cannot read it"):
        load(tmp_path / "nope.toml")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_server_refuses_to_start_with_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "hooks.toml"
    bad.write_text(GOOD.replace('format = "json"', 'format = "xml"'))
    env = {**os.environ, "KILLBOARD_WEBHOOKS": str(bad), "KILLBOARD_UPSTREAM": "off"}
    done = run("--db", str(tmp_path / "kb.sqlite3"), "--port", "1", env=env)
    assert done.returncode == 1
    assert (
        done.stderr
        == f"KILLBOARD_WEBHOOKS: {bad}:15: webhook 2 (bot): format: must be one of discord, json, got 'xml'\n"
    )
    assert not (tmp_path / "kb.sqlite3").exists()  # nothing started


def test_webhooks_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    done = run("webhooks", "check", "--file", str(good))
    assert done.returncode == 0, done.stderr
    assert "2 webhooks: OK" in done.stdout and "SECRET-TOKEN" not in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('[[webhook]]\nname = "bot"', '[[webhook]]\nname = "bot"\nmax_age = 1.5', 1))
    done = run("webhooks", "check", "--file", str(bad))
    assert done.returncode == 1
    assert done.stderr == f"{bad}:13: webhook 2 (bot): max_age: must be a whole number of seconds >= 0 (0: no limit)\n"


def test_public_url_must_be_http() -> None:
    assert from_env({"KILLBOARD_PUBLIC_URL": "https://kills.example.com/"}).public_url == "https://kills.example.com"
    assert from_env({}).public_url is None
    with pytest.raises(SystemExit, match="KILLBOARD_PUBLIC_URL must be an http:// or https:// address"):
        from_env({"KILLBOARD_PUBLIC_URL": "kills.example.com"})
