"""The webhooks file (TOML, KILLBOARD_WEBHOOKS): loading and validation, errors naming entry, field and line."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import is_http_url
from ..kill.topics import BadChannel, Condition, parse

FORMATS = ("discord", "json")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# What Discord can ping: @here/@everyone, a role <@&ID> or a user <@ID> (<@!ID> is the old nickname form).
MENTION = re.compile(r"@here|@everyone|<@&(\d{1,20})>|<@!?(\d{1,20})>")
FIELDS = {
    "name",
    "url",
    "channel",
    "format",
    "mention",
    "mention_min_value",
    "max_age",
    "secret",
    "backoff_min",
    "backoff_max",
}


class WebhookConfigError(ValueError):
    """A bad webhooks file; the message is one line: file, line, entry, field and what is wrong.
    It never repeats a URL or a secret."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One `[[webhook]]` entry, checked. The URL and the secret stay out of repr (logs, tracebacks)."""

    name: str
    url: str = field(repr=False)
    channel: str
    condition: Condition
    format: str = "discord"
    mention: str | None = None
    mention_min_value: float = 0.0
    # Seconds; kills whose kill time is older are not posted. 0: no limit.
    max_age: int = 3600
    secret: str | None = field(default=None, repr=False)
    # After a 5xx or a network error: the first delay, doubling up to the last (with jitter).
    backoff_min: float = 1.0
    backoff_max: float = 300.0

    def allowed_mentions(self) -> dict[str, Any]:
        """Discord's allowed_mentions: only the configured mention may ping, nothing else ever."""
        if self.mention is None:
            return {"parse": []}
        if self.mention in ("@here", "@everyone"):
            return {"parse": ["everyone"]}
        match = MENTION.fullmatch(self.mention)
        assert match is not None  # checked at load
        role, user = match.groups()
        return {"parse": [], "roles": [role]} if role else {"parse": [], "users": [user]}


def load(path: Path) -> list[Webhook]:
    """Read and check the file; raises WebhookConfigError naming what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebhookConfigError(f"webhooks file {path}: cannot read it: {exc}") from None
    return loads(text, str(path))


def loads(text: str, source: str = "webhooks file") -> list[Webhook]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise WebhookConfigError(f"{source}: not valid TOML: {exc}") from None
    except ValueError as exc:  # tomllib lets int()'s own out: an integer past 4,300 digits
        raise WebhookConfigError(f"{source}: not valid TOML: {str(exc)[:80]}") from None
    lines = _Lines(text)
    unknown = set(document) - {"webhook"}
    if unknown:
        key = sorted(unknown)[0]
        raise WebhookConfigError(f"{source}:{lines.top(key)}: unknown key {key!r}: the file holds [[webhook]] tables")
    entries = document.get("webhook", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise WebhookConfigError(f"{source}:{lines.top('webhook')}: 'webhook' must be [[webhook]] tables")
    hooks: list[Webhook] = []
    names: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        hook = _entry(entry, number, source, lines)
        if hook.name in names:
            where = f"{source}:{lines.field(number, 'name')}: webhook {number} ({hook.name})"
            raise WebhookConfigError(f"{where}: name: {hook.name!r} is used by an earlier webhook; names are unique")
        names.add(hook.name)
        hooks.append(hook)
    return hooks


def _entry(entry: dict[str, Any], number: int, source: str, lines: _Lines) -> Webhook:
    label = entry.get("name") if isinstance(entry.get("name"), str) and NAME.fullmatch(entry["name"]) else None

    def fail(key: str | None, problem: str) -> WebhookConfigError:
        line = lines.field(number, key) if key else lines.entry(number)
        who = f"webhook {number}" + (f" ({label})" if label else "")
        return WebhookConfigError(f"{source}:{line}: {who}: " + (f"{key}: " if key else "") + problem)

    for key in entry:
        if key not in FIELDS:
            raise fail(key, f"unknown field; known: {', '.join(sorted(FIELDS))}")
    for key in ("name", "url", "channel"):
        if key not in entry:
            raise fail(None, f"{key}: required")
    name = entry["name"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise fail("name", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    url = entry["url"]
    if not isinstance(url, str) or not is_http_url(url):
        raise fail("url", "must be an http:// or https:// URL with a host")  # never echo it: it is a secret
    channel = entry["channel"]
    if not isinstance(channel, str):
        raise fail("channel", 'must be a string, e.g. "alliance:99000001" or "region.10000002&10b"')
    try:
        condition = parse(channel)
    except BadChannel as exc:
        raise fail("channel", str(exc)) from None
    fmt = entry.get("format", "discord")
    if fmt not in FORMATS:
        raise fail("format", f"must be one of {', '.join(FORMATS)}, got {str(fmt)[:40]!r}")
    mention = entry.get("mention")
    if mention is not None:
        if fmt != "discord":
            raise fail("mention", 'only for format = "discord"')
        if not isinstance(mention, str) or not MENTION.fullmatch(mention):
            raise fail("mention", "must be @here, @everyone, <@&ROLE_ID> or <@USER_ID>")
    secret = entry.get("secret")
    if secret is not None:
        if fmt != "json":
            raise fail("secret", 'only for format = "json" (Discord does not check signatures)')
        if not isinstance(secret, str) or not secret:
            raise fail("secret", "must be a non-empty string")
    min_value = _number(entry, "mention_min_value", 0.0, fail)
    max_age = entry.get("max_age", 3600)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise fail("max_age", "must be a whole number of seconds >= 0 (0: no limit)")
    backoff_min = _number(entry, "backoff_min", 1.0, fail)
    backoff_max = _number(entry, "backoff_max", 300.0, fail)
    if backoff_min <= 0 or backoff_max < backoff_min:
        raise fail("backoff_max", "needs 0 < backoff_min <= backoff_max")
    return Webhook(
        name=name,
        url=url,
        channel=channel,
        condition=condition,
        format=fmt,
        mention=mention,
        mention_min_value=min_value,
        max_age=max_age,
        secret=secret,
        backoff_min=backoff_min,
        backoff_max=backoff_max,
    )


def _number(
    entry: dict[str, Any], key: str, default: float, fail: Callable[[str | None, str], WebhookConfigError]
) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise fail(key, "must be a number >= 0")
    return float(value)


class _Lines:
    """Line numbers for messages: tomllib gives none for valid documents, so find the
    `[[webhook]]` headers and `key =` lines in the text (good enough for a hand-written file)."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers = [i for i, line in enumerate(self._lines) if re.match(r"\s*\[\[\s*webhook\s*\]\]", line)]

    def top(self, key: str) -> int:
        return self._find(key, 0, self._headers[0] if self._headers else len(self._lines)) or 1

    def entry(self, number: int) -> int:
        return self._headers[number - 1] + 1 if number <= len(self._headers) else 1

    def field(self, number: int, key: str) -> int:
        if number > len(self._headers):
            return 1
        start = self._headers[number - 1]
        end = self._headers[number] if number < len(self._headers) else len(self._lines)
        return self._find(key, start, end) or start + 1

    def _find(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for i in range(start, end):
            if pattern.match(self._lines[i]):
                return i + 1
        return None
