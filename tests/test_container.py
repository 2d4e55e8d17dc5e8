"""Dockerfile and compose.yaml, checked where no container engine can run them: a non-root user,
the database on /data, a HEALTHCHECK that really asks /health (run against a real server), every
KILLBOARD_* a real setting, and the scale profile wired to the tested nginx site's ports."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from serverproc import ServerProcess, free_port

from killboard.cli import build_parser
from killboard.config import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
SETTINGS = set(re.findall(r'"(KILLBOARD_[A-Z_]+)"', (PROJECT_ROOT / "killboard" / "config.py").read_text()))
EDGES_SITE = (PROJECT_ROOT / "deploy" / "nginx" / "killboard-edges.conf").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in steps:
        if op == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return env


def test_the_image_runs_as_a_user_with_the_database_on_a_volume() -> None:
    steps = final_stage()
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the server must not run as root"
    assert ("VOLUME", "/data") in steps
    env = env_of(steps)
    assert env["KILLBOARD_DB"].startswith("/data/")
    assert env["KILLBOARD_HOST"] == "0.0.0.0"  # reachable through the published port
    assert ("EXPOSE", env["KILLBOARD_PORT"]) in steps
    assert set(env) - {"PYTHONUNBUFFERED"} <= SETTINGS
    (entry,) = [args for op, args in steps if op == "ENTRYPOINT"]
    assert yaml.safe_load(entry) == ["killboard"]  # the console script the wheel installs
    run = " ".join(args for op, args in steps if op == "RUN")
    assert "--no-cache-dir" in run and "--constraint /tmp/requirements.txt" in run


def test_the_build_context_holds_what_the_wheel_is_built_from() -> None:
    ignore = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    for op, args in instructions(DOCKERFILE):
        if op == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), source
                assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore leaves out {source}"


def healthcheck_command() -> list[str]:
    (args,) = [args for op, args in final_stage() if op == "HEALTHCHECK"]
    assert "--interval=" in args and "--timeout=" in args
    command = yaml.safe_load(args[args.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def test_the_healthcheck_asks_health_of_a_real_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "kb.sqlite3")
    await server.start()
    try:
        ok = subprocess.run(
            healthcheck_command(), env={"KILLBOARD_PORT": str(server.port)}, capture_output=True, timeout=30
        )
        assert ok.returncode == 0, ok.stderr
    finally:
        server.stop()
    down = subprocess.run(
        healthcheck_command(), env={"KILLBOARD_PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert down.returncode != 0  # nothing listening: unhealthy


def services(profile: str | None) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in COMPOSE["services"].items()
        if (profile is None and not svc.get("profiles")) or (profile in svc.get("profiles", []))
    }


def test_compose_up_runs_the_embedded_default() -> None:
    default = services(None)
    assert list(default) == ["killboard"]  # `docker compose up`: one process, no Redis
    svc = default["killboard"]
    assert svc["build"] == "."
    assert "8080:8080" in svc["ports"]
    (volume,) = svc["volumes"]
    name, target = volume.split(":")
    assert target == "/data" and name in COMPOSE["volumes"]  # a named volume outlives the container
    assert not any("REDIS" in key for key in svc.get("environment", {}))


@pytest.mark.parametrize("name", list(COMPOSE["services"]))
def test_every_setting_in_compose_exists(name: str) -> None:
    environment = COMPOSE["services"][name].get("environment", {})
    unknown = {key for key in environment if key.startswith("KILLBOARD_")} - SETTINGS
    assert not unknown, f"{name}: not settings of killboard/config.py: {unknown}"


def upstream_ports(name: str) -> list[int]:
    block = re.search(r"upstream " + name + r" \{(.*?)\}", EDGES_SITE, re.S)
    assert block is not None
    return [int(port) for port in re.findall(r"server 127\.0\.0\.1:(\d+)", block.group(1))]


def test_the_scale_profile_is_the_tested_nginx_recipe() -> None:
    scale = services("scale")
    assert set(scale) == {"redis", "writer", "edge1", "edge2", "nginx"}
    writer = scale["writer"]
    # The site is used unchanged: nginx, the writer and the edges share the writer's namespace,
    # so the site's 127.0.0.1 ports are theirs.
    assert upstream_ports("killboard_app") == [int(writer["environment"]["KILLBOARD_PORT"])]
    edges = [scale["edge1"], scale["edge2"]]
    assert upstream_ports("killboard_edges") == [int(e["environment"]["KILLBOARD_PORT"]) for e in edges]
    for svc in (*edges, scale["nginx"]):
        assert svc["network_mode"] == "service:writer"
    for svc in edges:
        args = build_parser().parse_args(svc["command"])
        assert args.run.__name__ == "_run_edge"  # `killboard edge`
    for svc in (writer, *edges):
        assert svc["environment"]["KILLBOARD_HOST"] == "127.0.0.1"  # only nginx is published
        assert svc["environment"]["KILLBOARD_REDIS_URL"].startswith("redis://redis:")
        assert svc["environment"]["KILLBOARD_TRUSTED_PROXIES"] == "127.0.0.1"  # nginx's X-Forwarded-For
    assert "listen 80;" in EDGES_SITE and any(p.endswith(":80") for p in writer["ports"])
    (site,) = scale["nginx"]["volumes"]
    source, target, *_ = site.split(":")
    assert (PROJECT_ROOT / source).resolve() == PROJECT_ROOT / "deploy" / "nginx" / "killboard-edges.conf"
    assert target.startswith("/etc/nginx/conf.d/")
    assert writer["volumes"][0].split(":")[0] != services(None)["killboard"]["volumes"][0].split(":")[0]
