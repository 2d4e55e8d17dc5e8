"""Settings: every numeric one has a Limit, and values outside it are refused with one line."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from killboard import config as settings
from killboard.config import LIMITS, Config, from_args, from_env, problems


def test_every_numeric_setting_has_a_limit() -> None:
    numeric = {f.name for f in fields(Config) if type(getattr(Config(), f.name)) in (int, float)}
    assert numeric - LIMITS.keys() == set(), "add a Limit for each new numeric setting"
    assert LIMITS.keys() - numeric == set(), "a Limit for a setting that no longer exists"


def test_the_defaults_are_within_their_limits() -> None:
    assert problems(Config()) == []


@pytest.mark.parametrize("name", sorted(LIMITS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1e30, 1e30])
def test_each_setting_refuses_nan_infinite_and_absurd_values(name: str, bad: float) -> None:
    found = problems(Config().with_overrides(**{name: bad}))
    assert len(found) == 1
    assert found[0].startswith((LIMITS[name].env or name) + " must be between")


def test_each_environment_variable_is_checked() -> None:
    for name, limit in LIMITS.items():
        if limit.env is None:
            continue
        too_low = limit.low - 1
        raw = str(int(too_low)) if isinstance(getattr(Config(), name), int) else str(too_low)
        with pytest.raises(SystemExit, match=f"^{limit.env} must be between"):
            from_env({limit.env: raw})


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("KILLBOARD_R2Z2_URL", "ftp://feed.example", "must be an http:// or https:// address with a host"),
        ("KILLBOARD_ESI_URL", "esi.evetech.net", "must be an http:// or https:// address with a host"),
        ("KILLBOARD_ESI_URL", "https://", "must be an http:// or https:// address with a host"),
        ("KILLBOARD_ESI_URL", "http://[::1", "must be an http:// or https:// address with a host"),
        ("KILLBOARD_PUBLIC_URL", "https://kills.example.com/\nx", "must be an http:// or https:// address"),
        ("KILLBOARD_USER_AGENT", "kb (me@example.com)\r\nX-Injected: 1", "must not hold control characters"),
        ("KILLBOARD_PORT", "9" * 5000, "must be between 1 and 65,535"),  # int() raised past 4,300 digits
        ("KILLBOARD_PORT", "²", "must be an integer, got '²'"),
    ],
)
def test_addresses_headers_and_numbers_are_checked_at_start(name: str, raw: str, message: str) -> None:
    with pytest.raises(SystemExit) as refused:
        from_env({name: raw})
    line = str(refused.value)
    assert line.startswith(f"{name} {message}") and "\n" not in line and len(line) < 200, line


def test_good_addresses_and_a_unicode_contact_pass() -> None:
    config = from_env(
        {
            "KILLBOARD_R2Z2_URL": "http://127.0.0.1:8081/feed/",
            "KILLBOARD_ESI_URL": "https://esi.example/latest",
            "KILLBOARD_USER_AGENT": " killboard (José, jose@example.com) ",
            "KILLBOARD_PORT": " +8081",
        }
    )
    assert (config.r2z2_url, config.esi_url) == ("http://127.0.0.1:8081/feed", "https://esi.example/latest")
    assert (config.user_agent, config.port) == ("killboard (José, jose@example.com)", 8081)


def test_backoff_max_below_min() -> None:
    assert problems(Config(backoff_min=10, backoff_max=5)) == ["backoff_max (5) must not be below backoff_min (10)"]


def test_a_flag_is_named_as_given() -> None:
    parser = argparse.ArgumentParser()
    settings.add_serve_arguments(parser)
    with pytest.raises(SystemExit, match=r"^--port must be between 1 and 65,535, got 99999$"):
        from_args(parser.parse_args(["--port", "99999"]), {})
    assert from_args(parser.parse_args(["--port", "8081"]), {"KILLBOARD_PORT": "99999"}).port == 8081


def test_the_queue_bound_in_bytes_takes_the_largest_body() -> None:
    assert from_env({"KILLBOARD_QUEUE_BYTES": str(64 << 20)}).queue_bytes == 64 << 20
    assert problems(Config(queue_bytes=16 << 20)) == [
        "KILLBOARD_QUEUE_BYTES must not be below the largest body (33,554,432 bytes), got 16,777,216"
    ]
    assert problems(Config(queue_bytes=16 << 20, max_body_bytes=16 << 20)) == []
