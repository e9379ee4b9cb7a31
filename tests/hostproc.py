"""Run `python -m bot ...` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
# variables a developer's shell might carry that would change the desk under test
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "TELEGRAM_", "BYBIT_", "TRADING_MODE", "LIVE_TRADING_CONFIRM", "SENTRY_",
            "PORT", "LOG_", "SECRET_KEY", "DATA_DIR", "MARKET_FEED", "FEED_", "DEFAULT_SYMBOLS",
            "STRATEGIES_DIR")


def desk_env(**values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    # no internet here: the host's market is the synthetic one unless a test says otherwise
    return {**base, "PYTHONPATH": str(ROOT), "MARKET_FEED": "synthetic", "FEED_SPEED": "500", **values}


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def get_json(url: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


class DeskProcess:
    """`python -m bot [args]` on a free port; `health()` polls GET /health."""

    def __init__(self, cwd: Path, env: dict[str, str], args: list[str] | None = None,
                 command: list[str] | None = None) -> None:
        self.port = int(env.get("PORT") or free_port())
        self.env = {**env, "PORT": str(self.port)}
        self.cwd = cwd
        self.command = command or [sys.executable, "-m", "bot", *(args or [])]
        self.log_path = cwd / f"desk-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, shell: bool = False) -> DeskProcess:
        log = self.log_path.open("ab")
        cmd: Any = " ".join(self.command) if shell else self.command
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     shell=shell, start_new_session=True)
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> tuple[int, dict[str, Any]]:
        return get_json(f"http://127.0.0.1:{self.port}/health")

    def wait_healthy(self, timeout: float = 60, status: int = 200,
                     until: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """The first /health body with `status` (and, with `until`, for which `until(body)` holds: /health
        answers while the bots are still being loaded)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"desk exited with {self.proc.returncode}:\n{self.output[-3000:]}")
            try:
                code, body = self.health()
                if code == status and (until is None or until(body)):
                    return body
                last = (code, body)
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"/health never answered {status} (last: {last}):\n{self.output[-3000:]}")

    def wait_drained(self, timeout: float = 300) -> dict[str, Any]:
        """The replayed market is all queued, and every bot here has processed and saved all of it."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.health()[1]
            mine = [b for b in body["bots"] if b["running_here"]]
            if body["feed"] == "done" and all(b["backlog"] == 0 and b["unsaved"] == 0 for b in mine):
                return body
            assert time.monotonic() < deadline, f"not drained after {timeout} s: {body}"
            time.sleep(0.5)

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM) if self.proc.poll() is None else None
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
