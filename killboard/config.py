"""Settings of one server run: defaults, environment variables and command-line flags."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from yarl import URL

from killboard import __version__
from killboard.numbers import parse_int

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def resource_dir(name: str) -> Path:
    """Where the shipped `data`, `templates` or `static` folder is: inside the package when installed
    (the wheel maps them to killboard/_data ...), at the top of the repository in a clone."""
    installed = PACKAGE_DIR / f"_{name}"
    return installed if installed.is_dir() else PROJECT_ROOT / name


def default_db_path(env: Mapping[str, str]) -> Path:
    """data/killboard.sqlite3 in a clone (as `make run` always had it); installed as a tool, the
    per-user data directory ($XDG_DATA_HOME/killboard, default ~/.local/share/killboard), never
    the current directory or site-packages."""
    if not (PACKAGE_DIR / "_data").is_dir():
        return PROJECT_ROOT / "data" / "killboard.sqlite3"
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "killboard" / "killboard.sqlite3"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """`127.0.0.1`, `10.0.0.0/8`, `::1` ...; raises ValueError naming the bad entry."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return out


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a running server needs to know; built once, never mutated."""

    host: str = "127.0.0.1"
    port: int = 8080
    db_path: Path = field(default_factory=lambda: default_db_path(os.environ))
    data_dir: Path = field(default_factory=lambda: resource_dir("data"))
    # None: ingest over HTTP is disabled (403), so a fresh install is not an open relay.
    ingest_token: str | None = None
    # Work waiting for the worker; POSTs wait briefly, then get 503, once it is full.
    queue_size: int = 10_000
    queue_full_wait: float = 2.0
    # ... and in bytes: the inbox payloads of kills acknowledged and not yet stored (queued or in
    # the worker's batches); a typical kill is ~10 KB, a fleet fight MBs. Twice the largest body,
    # so a full POST fits while another waits; a POST bigger than all of it gets 413.
    queue_bytes: int = 64 * 1024 * 1024
    # Kills the worker enriches and commits in one transaction.
    batch_size: int = 200
    # Largest POST body: 1,000 big fleet-fight killmails fit comfortably.
    max_body_bytes: int = 32 * 1024 * 1024
    max_batch_items: int = 1000
    # Seconds a request body may take to arrive in full; past it: 408 and the connection is closed.
    body_timeout: float = 30.0
    # GET /api/killmails is streamed: this many at once (others wait, then 503), and a response
    # not read by the client within read_deadline seconds has its connection cut.
    max_large_reads: int = 8
    read_deadline: float = 60.0
    # Clients only send small control messages; anything bigger is closed with 1009.
    ws_max_message: int = 4096
    # Frames waiting for one socket's writer; a client that lets it overflow is closed (1013).
    ws_send_queue: int = 512
    ws_heartbeat: float = 30.0
    ws_close_timeout: float = 2.0
    # Kills older than this (seconds, by kill time) are stored but not pushed live; 0 = no cut-off.
    live_max_age: int = 86_400
    # Live upstream (zKillboard R2Z2 feed + ESI). Off: no request ever leaves the machine.
    upstream: bool = True
    r2z2_url: str = "https://r2z2.zkillboard.com/ephemeral"
    esi_url: str = "https://esi.evetech.net/latest"
    # zKillboard and ESI ask every client for its name, version and a contact (e-mail or URL) in the
    # User-Agent; only the operator knows the contact, so KILLBOARD_USER_AGENT replaces this whole.
    user_agent: str = f"killboard/{__version__} (self-hosted EVE killmail feed; contact not configured)"
    # R2Z2 asks clients to wait ~6 s when the next sequence is not there yet (404).
    r2z2_wait: float = 6.0
    # At most this many requests per second to R2Z2 (the limit upstream is 20/s).
    r2z2_rate: float = 10.0
    # Backoff after 429/403/5xx/network errors: doubles from the first value up to the second.
    backoff_min: float = 1.0
    backoff_max: float = 120.0
    # How long a batch waits for ESI names before it is broadcast with what is known.
    names_wait: float = 2.0
    # How often ESI market prices are refreshed.
    prices_every: float = 86_400.0
    # -- hosting (issue 7) --
    # Kills whose kill time is older than this many days are pruned in the background; 0 = keep all.
    retention_days: int = 0
    # Seconds between upkeep passes (retention, vacuum, WAL checkpoint), and their step sizes.
    maintenance_interval: float = 60.0
    prune_batch: int = 500
    vacuum_pages: int = 1024
    # GET /metrics: served unless off; with a token, only to `Authorization: Bearer <token>`.
    metrics: bool = True
    metrics_token: str | None = None
    # Peers (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto headers are believed.
    trusted_proxies: tuple[str, ...] = ()
    # WebSocket limits (issue 4). Open sockets beyond this are closed at once with 1013.
    ws_max_clients: int = 10_000
    # Distinct channels one socket may hold, and the longest channel string.
    ws_max_channels: int = 256
    ws_max_channel_length: int = 256
    # What subscriptions may cost in memory (issue 22; docs/reliability.md does the
    # arithmetic against the unit's MemoryMax): one socket's channels, each counted whole, and
    # all sockets' together, each distinct condition once. Past either: an error frame.
    ws_sub_bytes: int = 320 * 1024
    ws_sub_total: int = 224 * 1024 * 1024
    # Control messages (anything a client sends) per second per socket, with a burst allowance
    # big enough to subscribe to every allowed channel at once; past it: an error frame, and
    # close 1008 if the client keeps going. 0 = no limit.
    ws_control_rate: float = 20.0
    ws_control_burst: int = 300
    # Resume (`since`): at most this many of the most recent stored kills are replayed.
    ws_replay_max: int = 1000
    # Bytes one socket may hold (queued frames, live kills held during its replay, its
    # transport's unsent bytes); a client that would pass it is closed with 1013 (issue 10).
    ws_send_buffer: int = 4 * 1024 * 1024
    # Replays reading (and rendering) stored kills at once; the others wait their turn.
    ws_replay_concurrency: int = 4
    # Browser Origins allowed to open a socket; empty = any. Same-origin and clients without an
    # Origin header (bots) are always allowed.
    ws_allowed_origins: tuple[str, ...] = ()
    # -- webhooks (issue 13) --
    # The TOML file of [[webhook]] entries; None: no webhooks.
    webhooks_path: Path | None = None
    # This server's address as the public sees it (https://kills.example.com): Discord embeds
    # link to {public_url}/kill/{id}; None: they link to zKillboard only.
    public_url: str | None = None
    # permessage-deflate for clients that offer it (each kill deflated once for all of them),
    # at this zlib level (1-9; README "Fewer bytes per delivery" says why 6).
    ws_deflate: bool = True
    ws_deflate_level: int = 6
    # -- past one process (issue 12, killboard/bus) --
    # Redis (redis://, rediss:// for TLS, unix://; user and password in the URL). Unset: one
    # process, no Redis. Set: this server also appends every stored kill to the stream, and
    # `python app.py edge` serves sockets from it.
    redis_url: str | None = None
    redis_stream: str = "killboard:kills"
    # Entries the stream keeps (trimmed with MAXLEN ~): about a day of zKillboard's kills.
    redis_maxlen: int = 50_000

    def with_overrides(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Limit:
    """The values a numeric setting may take, and the environment variable that sets it."""

    low: float
    high: float
    env: str | None = None
    unit: str = ""


DAY = 86_400.0
YEAR = 365 * DAY
# Every int and float of Config has a line here (tests/test_config.py checks that a new one does):
# a negative, NaN, infinite or absurd value is refused at start with one line, instead of a server
# that misbehaves later (a negative queue size is unbounded, a NaN rate never refills).
LIMITS: dict[str, Limit] = {
    "port": Limit(1, 65_535, "KILLBOARD_PORT"),
    "queue_size": Limit(1, 10_000_000),
    "queue_full_wait": Limit(0, 3600, unit="s"),
    "queue_bytes": Limit(1024 * 1024, 2**40, "KILLBOARD_QUEUE_BYTES", "bytes"),
    "batch_size": Limit(1, 100_000),
    "max_body_bytes": Limit(1, 2**31, unit="bytes"),
    "max_batch_items": Limit(1, 1_000_000),
    "ws_max_message": Limit(1, 2**24, unit="bytes"),
    "ws_send_queue": Limit(1, 1_000_000),
    "ws_heartbeat": Limit(0.01, DAY, unit="s"),
    "ws_close_timeout": Limit(0, 3600, unit="s"),
    "live_max_age": Limit(0, 100 * YEAR, "KILLBOARD_LIVE_MAX_AGE", "s"),
    "r2z2_wait": Limit(0, 3600, unit="s"),
    "r2z2_rate": Limit(0.01, 1000, unit="requests/s"),
    "backoff_min": Limit(0, 3600, unit="s"),
    "backoff_max": Limit(0, DAY, unit="s"),
    "names_wait": Limit(0, 3600, unit="s"),
    "prices_every": Limit(1, YEAR, unit="s"),
    "retention_days": Limit(0, 36_500, "KILLBOARD_RETENTION_DAYS", "days"),
    "maintenance_interval": Limit(0.01, DAY, unit="s"),
    "prune_batch": Limit(1, 1_000_000),
    "vacuum_pages": Limit(0, 2**31),
    "ws_max_clients": Limit(0, 10_000_000, "KILLBOARD_WS_MAX_CLIENTS"),
    "ws_max_channels": Limit(1, 1_000_000, "KILLBOARD_WS_MAX_CHANNELS"),
    "ws_max_channel_length": Limit(1, 65_536, "KILLBOARD_WS_MAX_CHANNEL_LENGTH"),
    "ws_sub_bytes": Limit(1024, 2**31, "KILLBOARD_WS_SUB_BYTES", "bytes"),
    "ws_sub_total": Limit(1024, 2**40, "KILLBOARD_WS_SUB_TOTAL", "bytes"),
    "ws_control_rate": Limit(0, 1_000_000, "KILLBOARD_WS_CONTROL_RATE", "per s"),
    "ws_control_burst": Limit(1, 1_000_000, "KILLBOARD_WS_CONTROL_BURST"),
    "ws_replay_max": Limit(0, 1_000_000, "KILLBOARD_WS_REPLAY_MAX"),
    # 0 replays at once would leave every replay waiting forever; a 0-byte budget drops everyone.
    "ws_send_buffer": Limit(1, 2**31, "KILLBOARD_WS_SEND_BUFFER", "bytes"),
    "ws_replay_concurrency": Limit(1, 10_000, "KILLBOARD_WS_REPLAY_CONCURRENCY"),
    "body_timeout": Limit(0.1, 3600, "KILLBOARD_BODY_TIMEOUT", "s"),
    "max_large_reads": Limit(1, 10_000, "KILLBOARD_MAX_LARGE_READS"),
    "read_deadline": Limit(1, DAY, "KILLBOARD_READ_DEADLINE", "s"),
    "ws_deflate_level": Limit(1, 9, "KILLBOARD_WS_DEFLATE_LEVEL"),
    "redis_maxlen": Limit(1, 100_000_000, "KILLBOARD_REDIS_MAXLEN"),
}


def problems(config: Config, flags: Mapping[str, str] | None = None) -> list[str]:
    """Every numeric setting outside its Limit, one line each, named as the operator set it:
    the flag (`flags` maps field -> flag) or the environment variable, else the field."""
    flags = flags or {}
    out: list[str] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if type(value) not in (int, float):
            continue
        limit = LIMITS.get(f.name)
        if limit is None:
            out.append(f"{f.name}: no Limit in killboard/config.py LIMITS")
            continue
        name = flags.get(f.name) or limit.env or f.name
        unit = f" {limit.unit}" if limit.unit else ""
        if not math.isfinite(value) or not limit.low <= value <= limit.high:
            out.append(f"{name} must be between {_show(limit.low)} and {_show(limit.high)}{unit}, got {value!r}")
    if not out and config.backoff_max < config.backoff_min:
        out.append(f"backoff_max ({config.backoff_max:g}) must not be below backoff_min ({config.backoff_min:g})")
    if not out and config.queue_bytes < config.max_body_bytes:
        # Below it, one kill the largest body may hold could never be queued (R2Z2's included).
        largest = f"{config.max_body_bytes:,} bytes"
        out.append(f"KILLBOARD_QUEUE_BYTES must not be below the largest body ({largest}), got {config.queue_bytes:,}")
    return out


def _show(bound: float) -> str:
    return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"


def checked(config: Config, flags: Mapping[str, str] | None = None) -> Config:
    """`config` itself, or SystemExit with the first problem (cli prints it: one line, exit 1)."""
    found = problems(config, flags)
    if found:
        raise SystemExit(found[0] if len(found) == 1 else "; ".join(found))
    return config


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw.strip())  # past 30 digits: 10**30, which the Limit then refuses
    if value is None:
        raise SystemExit(f"{name} must be an integer, got {raw[:40]!r}")
    return value


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf"; no limit means either
        raise SystemExit(f"{name} must be a finite number, got {raw[:40]!r}")
    return value


def from_env(env: Mapping[str, str] | None = None) -> Config:
    """Defaults overridden by KILLBOARD_* environment variables; SystemExit naming the variable
    for a value that is not a number or out of its Limit."""
    return checked(_from_env(os.environ if env is None else env))


def _from_env(env: Mapping[str, str]) -> Config:
    base = Config()
    return replace(
        base,
        host=env.get("KILLBOARD_HOST") or base.host,
        port=_env_int(env, "KILLBOARD_PORT", base.port),
        db_path=Path(env["KILLBOARD_DB"]) if env.get("KILLBOARD_DB") else default_db_path(env),
        ingest_token=env.get("KILLBOARD_INGEST_TOKEN") or None,
        live_max_age=_env_int(env, "KILLBOARD_LIVE_MAX_AGE", base.live_max_age),
        queue_bytes=_env_int(env, "KILLBOARD_QUEUE_BYTES", base.queue_bytes),
        upstream=_env_flag(env, "KILLBOARD_UPSTREAM", base.upstream),
        r2z2_url=_env_http_url(env, "KILLBOARD_R2Z2_URL") or base.r2z2_url,
        esi_url=_env_http_url(env, "KILLBOARD_ESI_URL") or base.esi_url,
        user_agent=_env_header(env, "KILLBOARD_USER_AGENT") or base.user_agent,
        retention_days=_env_int(env, "KILLBOARD_RETENTION_DAYS", base.retention_days),
        body_timeout=_env_float(env, "KILLBOARD_BODY_TIMEOUT", base.body_timeout),
        max_large_reads=_env_int(env, "KILLBOARD_MAX_LARGE_READS", base.max_large_reads),
        read_deadline=_env_float(env, "KILLBOARD_READ_DEADLINE", base.read_deadline),
        metrics=_env_flag(env, "KILLBOARD_METRICS", base.metrics),
        metrics_token=env.get("KILLBOARD_METRICS_TOKEN") or None,
        trusted_proxies=_env_networks(env, "KILLBOARD_TRUSTED_PROXIES"),
        ws_max_clients=_env_int(env, "KILLBOARD_WS_MAX_CLIENTS", base.ws_max_clients),
        ws_max_channels=_env_int(env, "KILLBOARD_WS_MAX_CHANNELS", base.ws_max_channels),
        ws_max_channel_length=_env_int(env, "KILLBOARD_WS_MAX_CHANNEL_LENGTH", base.ws_max_channel_length),
        ws_sub_bytes=_env_int(env, "KILLBOARD_WS_SUB_BYTES", base.ws_sub_bytes),
        ws_sub_total=_env_int(env, "KILLBOARD_WS_SUB_TOTAL", base.ws_sub_total),
        ws_control_rate=_env_float(env, "KILLBOARD_WS_CONTROL_RATE", base.ws_control_rate),
        ws_control_burst=_env_int(env, "KILLBOARD_WS_CONTROL_BURST", base.ws_control_burst),
        ws_replay_max=_env_int(env, "KILLBOARD_WS_REPLAY_MAX", base.ws_replay_max),
        webhooks_path=Path(env["KILLBOARD_WEBHOOKS"]) if env.get("KILLBOARD_WEBHOOKS") else None,
        public_url=_env_http_url(env, "KILLBOARD_PUBLIC_URL"),
        ws_send_buffer=_env_int(env, "KILLBOARD_WS_SEND_BUFFER", base.ws_send_buffer),
        ws_replay_concurrency=_env_int(env, "KILLBOARD_WS_REPLAY_CONCURRENCY", base.ws_replay_concurrency),
        redis_url=_env_redis_url(env, "KILLBOARD_REDIS_URL"),
        redis_stream=env.get("KILLBOARD_REDIS_STREAM") or base.redis_stream,
        redis_maxlen=_env_int(env, "KILLBOARD_REDIS_MAXLEN", base.redis_maxlen),
        ws_allowed_origins=tuple(
            o.strip().rstrip("/") for o in env.get("KILLBOARD_WS_ORIGINS", "").split(",") if o.strip()
        ),
        ws_deflate=_env_flag(env, "KILLBOARD_WS_DEFLATE", base.ws_deflate),
        ws_deflate_level=_env_int(env, "KILLBOARD_WS_DEFLATE_LEVEL", base.ws_deflate_level),
    )


def _env_redis_url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        # Never echo the value: it may hold a password.
        raise SystemExit(f"{name} must start with redis://, rediss:// (TLS) or unix://")
    return raw


def _env_networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    entries = tuple(env.get(name, "").replace(",", " ").split())
    try:
        parse_networks(entries)  # the middleware's own parse, so the error can name the variable
    except ValueError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    return entries


def _env_http_url(env: Mapping[str, str], name: str) -> str | None:
    """An http(s) address with a host, without its trailing slash; None when unset. Checked at
    start: a bad one was only found by the first request (R2Z2's retried for ever)."""
    raw = (env.get(name) or "").strip().rstrip("/")
    if not raw:
        return None
    if not is_http_url(raw) or _unprintable(raw):
        raise SystemExit(f"{name} must be an http:// or https:// address with a host, got {raw[:80]!r}")
    return raw


def is_http_url(text: str) -> bool:
    """An absolute http:// or https:// address with a host (the settings' and the webhooks')."""
    try:
        url = URL(text)
    except (ValueError, TypeError):  # a bad port or IPv6 literal
        return False
    return url.scheme in ("http", "https") and bool(url.host) and url.is_absolute()


def _env_header(env: Mapping[str, str], name: str) -> str | None:
    """A value sent as an HTTP header: no control characters (a CR or LF would end it; aiohttp
    refused every request with one, after the server had started)."""
    raw = (env.get(name) or "").strip()
    if _unprintable(raw):
        raise SystemExit(f"{name} must not hold control characters (it is sent as an HTTP header), got {raw[:80]!r}")
    return raw or None


def _unprintable(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("on", "1", "true", "yes"):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise SystemExit(f"{name} must be on or off, got {raw!r}")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (env KILLBOARD_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env KILLBOARD_PORT, default 8080)")
    parser.add_argument(
        "--db",
        type=Path,
        help="SQLite database file (env KILLBOARD_DB; default data/killboard.sqlite3 in a clone, "
        "$XDG_DATA_HOME/killboard/killboard.sqlite3 installed)",
    )
    parser.add_argument(
        "--no-upstream",
        action="store_true",
        help="do not follow zKillboard or call ESI (env KILLBOARD_UPSTREAM=off)",
    )


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """Environment first, then flags: a flag given on the command line wins (and is what is checked)."""
    config = _from_env(os.environ if env is None else env)
    changes: dict[str, object] = {}
    flags: dict[str, str] = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
        flags["port"] = "--port"
    if getattr(args, "db", None) is not None:
        changes["db_path"] = args.db
    if getattr(args, "no_upstream", False):
        changes["upstream"] = False
    return checked(replace(config, **changes), flags)  # type: ignore[arg-type]
