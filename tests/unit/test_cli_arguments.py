"""Every command-line argument is checked where it is parsed: a bad one ends the command with one line that
names it and exit code 2 — never a traceback, never a screen of usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import build_parser
from tests.conftest import CANDLES

DATA = str(CANDLES / "binance_spot_2020-12_2021-07")
BAD = [
    (["replay", "--data", DATA, "--intervals", "15,7"], "--intervals", "unknown interval '7'"),
    (["replay", "--data", DATA, "--intervals", "5,15"], "--intervals", "must be shorter than the slow one"),
    (["replay", "--data", DATA, "--intervals", "15"], "--intervals", "give the slow and the fast interval"),
    (["replay", "--data", DATA, "--from", "yesterday"], "--from", "not a date"),
    (["replay", "--data", DATA, "--flush-every", "0"], "--flush-every", "above 0"),
    (["replay", "--data", DATA, "--resume-after", "-1"], "--resume-after", "hours"),
    (["replay", "--data", DATA, "--on-halt", "pause"], "--on-halt", "invalid choice"),
    (["demo", "--days", "-1"], "--days", "above 0"),
    (["demo", "--seed", "x"], "--seed", "invalid int value"),
    (["candles", "backfill", "--symbols", ","], "--symbols", "at least one symbol"),
    (["candles", "backfill", "--symbols", "BTCUSDT", "--interval", "7"], "--interval", "unknown interval"),
    (["candles", "backfill", "--symbols", "BTCUSDT", "--days", "0"], "--days", "above 0"),
    (["candles", "export", "--out", "x", "--format", "xml"], "--format", "invalid choice"),
    (["ml", "report", "--data", DATA, "--intervals", "5,15"], "--intervals", "must be shorter"),
    (["strategies", "check", "scalp", "--max-cuts", "0"], "--max-cuts", "above 0"),
    (["nonsense"], "invalid choice", "nonsense"),
]


@pytest.mark.parametrize(("argv", "names", "says"), BAD, ids=[" ".join(a[:3]) + f" {n}" for a, n, _ in BAD])
def test_a_bad_argument_is_one_line_naming_it(argv: list[str], names: str, says: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m bot") and names in lines[0] and says in lines[0], err


def test_the_process_says_it_in_one_line_too() -> None:
    done = subprocess.run([sys.executable, "-m", "bot", "replay", "--data", DATA, "--intervals", "5,15"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "python -m bot replay: argument --intervals: the fast interval must be shorter than the slow one and divide "
        "it, like 15,5 (got '5,15') (--help shows the usage)"]


def test_a_misspelt_setting_names_the_model_and_the_closest_name(tmp_path: Path) -> None:
    from bot.cli_bots import BadBotFile, read_bot_file

    path = tmp_path / "bot.yaml"
    path.write_text("id: x\nsymbols: [BTCUSDT]\nrisk_pcnt: 2\nstrategies:\n  scalp:\n    reward_rsk: 2\n"
                    "    zzz: 1\n")
    with pytest.raises(BadBotFile) as refused:
        read_bot_file(path)
    lines = sorted(refused.value.lines)
    assert lines == sorted([
        f"{path}: bot 'x': risk_pcnt: unknown field (not a bot setting; did you mean 'risk_pct'?)",
        f"{path}: bot 'x': strategies.scalp.reward_rsk: unknown field (not a parameter of strategy scalp; "
        "did you mean 'reward_risk'?)",
        f"{path}: bot 'x': strategies.scalp.zzz: unknown field (not a parameter of strategy scalp)"])
