"""The host as a real process: boots, answers /health, refuses an old schema, stops on SIGTERM."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from bot.__main__ import build_parser
from tests.hostproc import ROOT, DeskProcess, desk_env, run
from tests.servers import free_port

HEALTH_KEYS = {"status", "version", "database", "redis", "scheduler", "bots", "newest_candle_age_s"}


def _boot_and_stop(tmp_path: Path, env: dict[str, str]) -> dict:
    migrated = run(["migrate"], tmp_path, env)
    assert migrated.returncode == 0, migrated.stderr
    desk = DeskProcess(tmp_path, env).start()
    try:
        # a first start creates its bot just after listening, then places it here (a moment later)
        body = desk.wait_healthy(until=lambda b: b["bots"] and all(x.get("running_here") for x in b["bots"]))
        code, took = desk.terminate(timeout=15)
    finally:
        desk.kill()
    assert code == 0, desk.output[-2000:]
    assert took < 10
    assert "stopped" in desk.output
    return body


def test_host_on_embedded_default(tmp_path: Path) -> None:
    body = _boot_and_stop(tmp_path, desk_env())
    assert body.keys() >= HEALTH_KEYS
    assert body["status"] == "ok" and body["database"] == "ok" and body["redis"] == "disabled"
    assert body["scheduler"] == "running"
    assert [(b["id"], b["status"], b["running_here"]) for b in body["bots"]] == [("main", "running", True)]
    assert (tmp_path / "var" / "phantomdesk.db").exists()


def test_host_on_postgres_and_redis(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    env = desk_env(DATABASE_URL=pg_url.replace("postgresql+asyncpg://", "postgresql://"), REDIS_URL=redis_url,
                   SECRET_KEY="k" * 40, LOG_FORMAT="json")
    body = _boot_and_stop(tmp_path, env)
    assert body["database"] == "ok" and body["redis"] == "ok"


def test_unreachable_redis_is_a_warning(tmp_path: Path) -> None:
    env = desk_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert run(["migrate"], tmp_path, env).returncode == 0
    desk = DeskProcess(tmp_path, env).start()
    try:
        body = desk.wait_healthy()
        assert body["redis"] == "unavailable" and body["status"] == "ok"
        assert "Redis unreachable" in desk.output
    finally:
        assert desk.terminate()[0] == 0


def test_refuses_database_not_at_head(tmp_path: Path) -> None:
    done = run(["serve"], tmp_path, desk_env(), timeout=60)
    assert done.returncode == 3
    assert "python -m bot migrate" in done.stderr


def test_unreachable_database_fails_fast(tmp_path: Path) -> None:
    env = desk_env(DATABASE_URL=f"postgresql://u:p@127.0.0.1:{free_port()}/db", SECRET_KEY="k" * 40)
    done = run(["serve"], tmp_path, env, timeout=60)
    assert done.returncode == 1
    assert "cannot reach the database" in done.stderr


def test_railway_json_commands_exist() -> None:
    config = json.loads((ROOT / "railway.json").read_text())
    assert config["$schema"].startswith("https://railway.com/")
    assert config["build"]["builder"] == "RAILPACK"
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] == "/health" and deploy["restartPolicyType"] == "ON_FAILURE"
    commands = [deploy["startCommand"], *deploy["preDeployCommand"]]
    assert any(shlex.split(c)[-1] == "migrate" for c in deploy["preDeployCommand"])
    for command in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "bot"], command
        build_parser().parse_args(argv[3:])  # exits (SystemExit) on an unknown command


@pytest.mark.parametrize("line", [ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.strip()])
def test_procfile_command_starts_the_host(tmp_path: Path, line: str) -> None:
    kind, command = line.split(":", 1)
    assert kind == "web"
    env = desk_env()
    assert run(["migrate"], tmp_path, env).returncode == 0
    python_dir = str(Path(__import__("sys").executable).parent)
    env["PATH"] = python_dir + ":" + env.get("PATH", "")  # `python` = this interpreter, as on Railway
    desk = DeskProcess(tmp_path, env, command=shlex.split(command)).start()
    try:
        assert desk.wait_healthy()["status"] == "ok"
    finally:
        assert desk.terminate()[0] == 0
