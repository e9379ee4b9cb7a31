"""The command table: name, usage line, admin?, parser, handler — one source for /help, the console
and the Telegram router.

A handler is the thin layer the architecture asks for: it gets parsed arguments, calls the desk, and
renders the result (render.py) into transport-neutral `Reply`s. Nothing here knows about aiogram's
messages; `execute` is what both transports call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot import charts
from bot.telegram import render as rd
from bot.telegram.keyboards import Confirmations, app_row, promote_button, recovery_rows, refresh_row
from bot.telegram.render import Reply, esc
from core.config import BotStatus
from core.decisions import MEANING, Option
from core.desk import RISK_KEYS, Actor, BadArgument, Desk, MLStats, ModelDoc, NotAllowed, PendingItem
from core.stats import MIN_RATIO_DAYS, Summary
from core.strategies import STRATEGIES
from core.universe import UniverseView, Why

log = logging.getLogger(__name__)

READ_ONLY = "🔒 read-only: your Telegram id may read the desk, not change it"
SYMBOL = re.compile(r"^[A-Za-z0-9]{2,20}(USDT|USDC)$", re.IGNORECASE)
CHART_KINDS = ("equity", "daily", "winrate", "phantoms", "calibration")
_TREND = {1: "up ↗", -1: "down ↘", 0: "none"}
OSCILLATORS = frozenset({"rsi", "adx", "plus_di", "minus_di", "vol_z"})  # 0..100 or a z-score: not prices


@dataclass
class Context:
    """Who asks, and what a handler may use."""

    desk: Desk
    actor: Actor
    confirmations: Confirmations
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the auth middleware's counters for /health

    async def run(self, name: str, args: list[str]) -> list[Reply]:
        return await execute(self, name, args)


Parser = Callable[[list[str]], dict[str, Any]]
Handler = Callable[..., Awaitable[Reply | list[Reply]]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    about: str
    admin: bool | Callable[[list[str]], bool]  # a callable: admin only for some arguments (/risk set)
    parse: Parser
    handle: Handler

    def needs_admin(self, args: list[str]) -> bool:
        return self.admin(args) if callable(self.admin) else self.admin


# --- argument parsing ---------------------------------------------------------------------------------------
def _none(args: list[str]) -> dict[str, Any]:
    if args:
        raise BadArgument("this command takes no arguments")
    return {}


def _int(text: str, name: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"\d{1,6}", text) or not lo <= int(text) <= hi:
        raise BadArgument(f"{name} must be a whole number from {lo} to {hi}, not {text!r}")
    return int(text)


def _at_most(args: list[str], n: int) -> None:
    if len(args) > n:
        raise BadArgument(f"too many arguments ({len(args)}; at most {n})")


def _optional_int(name: str, lo: int, hi: int, key: str) -> Parser:
    def parse(args: list[str]) -> dict[str, Any]:
        _at_most(args, 1)
        return {key: _int(args[0], name, lo, hi)} if args else {}
    return parse


def _bot_only(args: list[str]) -> dict[str, Any]:
    _at_most(args, 1)
    return {"bot_id": args[0]} if args else {}


def _stats_args(args: list[str]) -> dict[str, Any]:
    """[days] [bot] — in either order: a number is the days, a word the bot."""
    _at_most(args, 2)
    out: dict[str, Any] = {}
    for a in args:
        if a.isdigit():
            if "days" in out:
                raise BadArgument("days given twice")
            out["days"] = _int(a, "days", 1, 3650)
        else:
            if "bot_id" in out:
                raise BadArgument(f"one bot at a time, not {out['bot_id']!r} and {a!r}")
            out["bot_id"] = a
    return out


def _symbol(text: str) -> str:
    if not SYMBOL.match(text):
        raise BadArgument(f"{text!r} is not a symbol like BTCUSDT")
    return text.upper()


def _chart_args(args: list[str]) -> dict[str, Any]:
    if not args:
        raise BadArgument("which chart?")
    _at_most(args, 2)
    kind = args[0].lower()
    if kind not in CHART_KINDS:
        if not SYMBOL.match(args[0]):
            raise BadArgument(f"unknown chart {args[0]!r} (charts: {', '.join(CHART_KINDS)} or a symbol)")
        kind = args[0].upper()
    out: dict[str, Any] = {"kind": kind}
    if len(args) == 2:
        out["days"] = _int(args[1], "days", 1, 3650)
    return out


def _target_and_reason(args: list[str]) -> dict[str, Any]:
    """[bot|all] [reason]: the first word names the bot (a typo is an error, not a reason)."""
    if not args:
        return {"target": "all"}
    return {"target": args[0], "reason": " ".join(args[1:]) or None}


def _target(args: list[str]) -> dict[str, Any]:
    _at_most(args, 1)
    return {"target": args[0] if args else "all"}


def _close_args(args: list[str]) -> dict[str, Any]:
    if not args:
        raise BadArgument("close what?")
    _at_most(args, 2)
    target = "all" if args[0].lower() == "all" else _symbol(args[0])
    return {"target": target, **({"bot_id": args[1]} if len(args) == 2 else {})}


def _strategy(args: list[str]) -> dict[str, Any]:
    _at_most(args, 1)
    if args and STRATEGIES.get(args[0]) is None:
        raise BadArgument(f"unknown strategy {args[0]!r} (strategies: {', '.join(STRATEGIES.names())})")
    return {"strategy": args[0]} if args else {}


def _symbol_optional(args: list[str]) -> dict[str, Any]:
    _at_most(args, 1)
    return {"symbol": _symbol(args[0])} if args else {}


def _symbol_required(args: list[str]) -> dict[str, Any]:
    if not args:
        raise BadArgument("which symbol?")
    _at_most(args, 1)
    return {"symbol": _symbol(args[0])}


def _risk_args(args: list[str]) -> dict[str, Any]:
    if args and args[0].lower() == "set":
        if len(args) not in (3, 4):
            raise BadArgument("set needs a key and a value")
        key = args[1].lower()
        if key not in RISK_KEYS:
            raise BadArgument(f"unknown key {args[1]!r} (keys: {', '.join(RISK_KEYS)})")
        return {"key": key, "value": args[2], **({"bot_id": args[3]} if len(args) == 4 else {})}
    return _bot_only(args)


def _risk_is_admin(args: list[str]) -> bool:
    return bool(args) and args[0].lower() == "set"


# --- handlers --------------------------------------------------------------------------------------------------
async def start(ctx: Context) -> Reply:
    bots = await ctx.desk.bots()
    role = {"admin": "an admin", "viewer": "a viewer (read-only)", "system": "the system"}[ctx.actor.role]
    lines = [f"<b>phantomdesk</b> — hello {esc(ctx.actor.name)}, you are {role}.",
             f"{len(bots)} bot(s): " + (", ".join(f"{esc(b.id)} ({esc(b.status.status)})" for b in bots) or "none"),
             "/help lists the commands."]
    return Reply("\n".join(lines))


async def help_(ctx: Context) -> Reply:
    lines = ["<b>Commands</b>"]
    for c in COMMANDS.values():
        lock = " 🔒" if c.admin is True else ""
        lines.append(f"<code>{esc(c.usage)}</code>{lock} — {esc(c.about)}")
    lines.append("🔒 admins only" + ("" if ctx.actor.admin else " (you can read everything else)"))
    return Reply("\n".join(lines))


async def bots(ctx: Context) -> Reply:
    rows = await ctx.desk.bots()
    if not rows:
        return Reply("no bots configured")
    table = rd.table([[b.id, b.status.status, b.mode, b.open_positions, rd.money(b.equity, False), b.pending_recovery,
                       "here" if b.running_here else b.traded_by or rd.DASH] for b in rows],
                     ["bot", "status", "mode", "open", "equity", "recov", "traded by"], right=(3, 4, 5))
    reasons = [f"{esc(b.id)} {esc(b.status.status)}{_since(b.status.since)}: {esc(b.status.reason)}"
               for b in rows if b.status.reason]
    return Reply("\n".join([rd.title("Bots"), table, *reasons]), buttons=[refresh_row("bots")])


def _since(since: datetime | None) -> str:
    return f" since {rd.when(since)} UTC" if since else ""


async def status(ctx: Context, bot_id: str | None = None) -> Reply:
    parts = [rd.title("Status")]
    for s in await ctx.desk.status(bot_id):
        st = s.status
        head = f"<b>{esc(s.bot_id)}</b> {esc(st.status if st else '?')}"
        if st is not None and st.status is not BotStatus.RUNNING:
            head += _since(st.since)
        if st is not None and st.reason:
            head += f" ({esc(st.reason)})"
        if s.equity is not None:
            head += f" · equity {rd.money(s.equity, False)}"
        if s.starting:
            head += " · starting: restoring its state (figures follow in a moment)"
        elif not s.running_here:
            head += " · " + ("a replay's record, never traded" if s.mode == "replay"
                             else "not running in this process")
        parts.append(head)
        positions = s.positions
        if positions:
            parts.append(rd.table([[p.symbol, p.side, p.status, rd.price(p.qty), rd.price(p.entry),
                                    rd.price(p.last), rd.money(p.unrealized)] for p in positions],
                                  ["symbol", "side", "state", "qty", "entry", "last", "uPnL"], right=(3, 4, 5, 6)))
        else:
            parts.append("no open positions")
    rows = [refresh_row("status", bot_id or ""), app_row(ctx.extras.get("app_url"))]
    return Reply("\n".join(parts), buttons=[r for r in rows if r])


async def balance(ctx: Context) -> Reply:
    rows = await ctx.desk.balance()
    table = rd.table([[b.bot_id, rd.money(b.equity, False), rd.money(b.realized, False), rd.money(b.peak, False),
                       rd.pct(b.drawdown_pct, ratio=False), rd.money(b.day_pnl)] for b in rows],
                     ["bot", "equity", "realized", "peak", "dd", "today"], right=(1, 2, 3, 4, 5))
    notes = ["today: trades closed since 00:00 UTC by the wall clock (as /daily and /stats N)"]
    notes += [f"{esc(b.bot_id)}: not running here — its state saved {rd.when(b.as_of)} UTC"
              for b in rows if b.as_of]
    return Reply("\n".join([rd.title("Balance (USDT)"), table, *notes]), buttons=[refresh_row("balance")])


async def stats(ctx: Context, days: int | None = None, bot_id: str | None = None) -> Reply:
    s = await ctx.desk.stats(days, bot_id)
    scope = f"{'all bots' if s['bot_id'] == 'all' else 'bot ' + s['bot_id']}, " + (
        f"last {days} days by the wall clock (UTC)" if days else "all time")
    if not s["trades"]:
        newest = s.get("newest_exit")
        why = (f"no trade closed in that time; the newest closed {rd.when(newest)} UTC (a replay's trades carry "
               "their market's time) — /stats without days shows all time" if newest else "no closed trades yet")
        return Reply(f"{rd.title('Stats')} — {esc(scope)}\n{esc(why)}",
                     buttons=[refresh_row("stats", _args(days, bot_id))])
    few = s.get("return_days", 0) < MIN_RATIO_DAYS
    best, worst = s["best_trade"], s["worst_trade"]
    pairs = [
        ("Trades", f"{s['trades']} ({s['wins']} won, {s['losses']} lost)"),
        ("Win rate", rd.pct(s["win_rate"])),
        ("Net PnL", f"{rd.money(s['net_pnl'])} USDT"),
        ("Profit factor", rd.num(s["profit_factor"])),
        ("Expectancy", f"{rd.money(s['expectancy_usd'])} USDT, {rd.r(s['expectancy_r'])}"),
        ("Median trade", rd.money(s["median_pnl"])),
        ("Fees / funding", f"{rd.money(s['fees'], False)} / {rd.money(s.get('funding'))}"),
        ("Max drawdown", f"{rd.money(-s['max_drawdown'])} USDT ({rd.pct(-s['max_drawdown_pct'], ratio=False)})"),
        ("Sharpe / Sortino", f"{rd.num(s['sharpe'])} / {rd.num(s['sortino'])}"
                             + (f" (over {s.get('return_days', 0)} days: too few to mean much)" if few else "")),
        ("Avg holding", f"{rd.num(s['avg_holding_h'], 1)} h"),
        ("Per day", f"{rd.money(s['daily_avg'])} USDT"),
        ("Best / worst", f"{rd.money(best['net_pnl'] if best else None)} / "
                         f"{rd.money(worst['net_pnl'] if worst else None)}"),
    ]
    return Reply(f"{rd.title('Stats')} — {esc(scope)}\n{rd.kv(pairs)}",
                 buttons=[refresh_row("stats", _args(days, bot_id))])


def _args(*values: Any) -> str:
    return " ".join(str(v) for v in values if v is not None)


async def daily(ctx: Context, n: int = 7) -> Reply:
    days = await ctx.desk.daily(n)
    total, rows = 0.0, []
    for d, pnl in days:
        total += pnl
        rows.append([d.isoformat(), rd.money(pnl), rd.money(total)])
    lines = [f"{rd.title('Daily PnL')} — last {n} days by the wall clock (UTC), total {rd.money(total)} USDT",
             rd.table(rows, ["day", "pnl", "cumulative"], right=(1, 2))]
    if not any(pnl for _, pnl in days) and (newest := await ctx.desk.recent(1)):
        lines.append(f"no trade closed in these days; the newest closed {rd.when(newest[0].exit_time)} UTC (a "
                     "replay's trades carry their market's time) — /stats shows all time")
    return Reply("\n".join(lines), buttons=[refresh_row("daily", str(n))])


async def recent(ctx: Context, n: int = 10) -> Reply:
    trades = await ctx.desk.recent(n)
    if not trades:
        return Reply("no closed trades yet")
    rows = [[rd.when(t.exit_time)[5:], t.symbol, t.side[0].upper(), t.strategy or "-", t.exit_reason or "-",
             rd.r(t.realized_r), rd.money(t.net_pnl)] for t in trades]
    return Reply("\n".join([f"{rd.title('Recent trades')} — last {len(trades)}",
                            rd.table(rows, ["exit (UTC)", "symbol", "", "strategy", "why", "R", "pnl"],
                                     right=(5, 6))]))


def _breakdown(groups: dict[str, Summary], name: str) -> str:
    rows = [[k, g["trades"], rd.pct(g["win_rate"]), rd.money(g["net_pnl"]), rd.num(g["profit_factor"]),
             rd.r(g["expectancy_r"])] for k, g in groups.items()]
    return rd.table(rows, [name, "n", "win", "net", "PF", "exp"], right=(1, 2, 3, 4, 5)) if rows else "no trades"


async def performance(ctx: Context, bot_id: str | None = None) -> Reply:
    p = await ctx.desk.performance(bot_id)
    text = "\n".join([rd.title("Performance by symbol"), _breakdown(p["by_symbol"], "symbol"),
                      rd.title("by strategy"), _breakdown(p["by_strategy"], "strategy")])
    return Reply(text, buttons=[refresh_row("performance", bot_id or "")])


async def chart(ctx: Context, kind: str, days: int | None = None) -> Reply:
    span = f"last {days} days" if days else "all time"
    if kind in ("equity", "daily"):
        pnl = await ctx.desk.pnl_chart(days)
        png = (await charts.render(charts.equity_chart, pnl.points, pnl.capital, f"Equity ({span})")
               if kind == "equity" else
               await charts.render(charts.daily_pnl_chart, pnl.daily, f"Daily PnL ({span})"))
    elif kind == "winrate":
        png = await charts.render(charts.win_rate_chart, await ctx.desk.phantom_outcomes(days))
    elif kind == "phantoms":
        png = await charts.render(charts.phantom_outcomes_chart, await ctx.desk.phantom_groups())
    elif kind == "calibration":
        model = _calibration_model(await ctx.desk.ml_stats())
        if model is None:
            return Reply("no ML model trained yet: nothing to calibrate")
        title = f"ML calibration — {model['bot_id']} {model['strategy']} v{model['version']}" + (
            " (champion)" if model.get("champion") else " (newest, not promoted)")
        png = await charts.render(charts.calibration_chart, model.get("metrics") or {}, None, title)
    else:
        chart = await ctx.desk.candles_for(kind, days, limit=200)
        png = await charts.render(charts.candles_chart, chart.series, chart.trades, symbol=chart.symbol,
                                  interval=chart.interval, max_candles=max(200, min(len(chart.series), 500)))
        span = f"{esc(chart.interval)}m candles" + (f", last {days} days" if days else "")
    return Reply(f"📈 <b>{esc(kind)}</b> — {span}", photo=png, photo_name=f"{kind.lower()}.png")


def _calibration_model(data: MLStats) -> ModelDoc | None:
    """The champion with the most samples; without one, the newest model with a calibration."""
    champions = sorted(data["models"], key=lambda m: m["samples"] or 0, reverse=True)
    latest = [m for m in data["latest"] if (m["metrics"] or {}).get("calibration")]
    pool = [m for m in champions if (m["metrics"] or {}).get("calibration")] or latest
    return pool[0] if pool else None


async def pause(ctx: Context, target: str, reason: str | None = None) -> Reply:
    """One bot pauses at once; several (`all`) after a button listing them, as every mass action."""
    if target == "all" and len(ids := await ctx.desk.pause_targets(target)) > 1:
        pending = ctx.confirmations.add("pause", "all", ctx.actor, {"bots": ids, "reason": reason})
        why = f"\nreason: {esc(reason)}" if reason else ""
        text = (f"⚠️ Pause <b>{len(ids)}</b> bots: {esc(', '.join(ids))}?{why}\nThey open no new positions until "
                "/resume; open ones stay managed. The buttons expire in 5 minutes.")
        return Reply(text, buttons=ctx.confirmations.buttons(pending, f"pause {len(ids)} bots"),
                     confirm_token=pending.token)
    done = await ctx.desk.pause(target, reason, ctx.actor)
    if not done:
        return Reply("nothing paused")
    why = f" — reason: {esc(reason)}" if reason else ""
    return Reply(f"⏸ paused: <b>{esc(', '.join(done))}</b>{why}\nno new positions open until /resume")


async def resume(ctx: Context, target: str) -> list[Reply]:
    """Paused bots resume at once; a halted one only after a button that says what resets."""
    result = await ctx.desk.resume(target, ctx.actor)
    replies = [Reply(f"▶️ running: <b>{esc(', '.join(result.resumed))}</b>")] if result.resumed else []
    if result.halted:
        ids = [h.bot_id for h in result.halted]
        pending = ctx.confirmations.add("resume", ",".join(ids), ctx.actor, {"target": target, "bots": ids})
        lines = ["⚠️ <b>Halted</b> — resuming accepts the loss that halted the bot:"]
        for h in result.halted:
            lines.append(f"• <b>{esc(h.bot_id)}</b>{_since(h.since)}: {esc(h.reason or 'no reason stored')}")
            if h.equity is not None:
                lines.append(f"  the peak equity {rd.money(h.peak, False)} resets to the equity now "
                             f"{rd.money(h.equity, False)}: the drawdown guard measures from here")
            else:
                lines.append("  its peak equity resets to its equity when it resumes: the drawdown guard measures "
                             "from there")
        lines.append("The buttons expire in 5 minutes.")
        replies.append(Reply("\n".join(lines), buttons=ctx.confirmations.buttons(pending, f"resume {', '.join(ids)}"),
                             confirm_token=pending.token))
    return replies or [Reply("nothing resumed")]


async def close(ctx: Context, target: str, bot_id: str | None = None) -> Reply:
    positions = await ctx.desk.close_preview(target, bot_id)
    if not positions:
        return Reply(f"no open position{' for ' + esc(target) if target != 'all' else ''}: nothing to close")
    # the button closes exactly what this message lists, nothing opened after it
    pending = ctx.confirmations.add("close", target, ctx.actor, {"target": target, "bot": bot_id,
                                                                 "trades": [p.trade_id for p in positions]})
    rows = [[p.symbol, p.side, p.status, rd.price(p.qty), rd.money(p.unrealized)] for p in positions]
    text = "\n".join([f"⚠️ Close <b>{len(positions)}</b> position(s) at market?",
                      rd.table(rows, ["symbol", "side", "state", "qty", "uPnL"], right=(3, 4)),
                      "A pending entry is withdrawn (or closed as soon as it fills). The buttons expire in 5 minutes."])
    return Reply(text, buttons=ctx.confirmations.buttons(pending, f"close {target}"), confirm_token=pending.token)


async def retrain(ctx: Context, strategy: str | None = None) -> Reply:
    lines = []
    for bot_id, q in (await ctx.desk.retrain(strategy, ctx.actor)).items():
        if not q.strategies:
            lines.append(f"{esc(bot_id)}: nothing to retrain (no new outcomes since the last training, "
                         "or too few for a first model)")
            continue
        line = f"{esc(bot_id)}: {esc(', '.join(q.strategies))} queued"
        if q.behind:
            line += f", behind a running retrain ({esc(', '.join(q.behind))})"
        lines.append(line)
    return Reply("\n".join(["🧠 retrain: challengers face the gate off the event loop; the verdicts follow here",
                             *lines]))


async def ml_stats(ctx: Context) -> Reply:
    data = await ctx.desk.ml_stats()
    parts = [rd.title("ML filter — champions")]
    champions = data.get("models", [])
    if champions:
        rows = []
        for m in champions:
            ch = (m.get("metrics") or {}).get("challenger") or {}
            rows.append([m["bot_id"], m["strategy"], f"v{m['version']}", m.get("samples"), rd.num(ch.get("brier"), 4),
                         rd.num(ch.get("auc"), 3), rd.r(ch.get("lift_r"))])
        parts.append(rd.table(rows, ["bot", "strategy", "ver", "n", "brier", "auc", "lift"], right=(3, 4, 5, 6)))
    else:
        parts.append("no champion model yet: signals are taken unscored")
    latest = [m for m in data.get("latest", []) if not m.get("champion")]
    for m in latest:
        metrics = m.get("metrics") or {}
        parts.append(f"newest {esc(m['strategy'])} v{m['version']} ({esc(m['bot_id'])}): "
                     f"{'promoted' if metrics.get('promoted') else 'refused'} — {esc(metrics.get('why') or '')}")
    buttons = []
    for item in await ctx.desk.pending_promotions():
        d = item.get("details") or {}
        parts.append(f"⏳ #{item['id']} {esc(item['bot_id'])} {esc(d.get('strategy'))} v{d.get('version')} "
                     f"refused by the gate: {esc(d.get('why') or '')}")
        if item["bot_id"] and d.get("strategy") and d.get("version") is not None:  # a model is always a bot's
            buttons.append([promote_button(item["bot_id"], d["strategy"], int(d["version"]), item["id"])])
    return Reply("\n".join(parts), buttons=[*buttons, refresh_row("ml_stats")])


async def phantom_stats(ctx: Context, symbol: str | None = None) -> Reply:
    data = await ctx.desk.phantom_stats(symbol)
    rows = []
    for strategy, figures in data.by_strategy.items():
        first = True
        for action in ("EXECUTED", "REJECTED", "BLOCKED", "ALL"):
            f = figures.get(action)
            if f and f["total"]:
                rows.append([strategy if first else "", action.lower(), f["total"], rd.pct(f["win_rate"]),
                             rd.r(f["avg_r"]), rd.num(f["sum_r"], 1)])
                first = False
    what_if = data.all.what_if_rejected_r
    head = f"{rd.title('Phantoms')} — {esc(data.symbol or 'every symbol')}, closed shadow trades"
    table = rd.table(rows, ["strategy", "action", "n", "win", "avg", "sum R"], right=(2, 3, 4, 5)) if rows \
        else "no closed phantoms yet"
    return Reply("\n".join([head, table, f"what-if: the rejected signals would have made {rd.num(what_if, 1)} R"]),
                 buttons=[refresh_row("phantom_stats", symbol or "")])


async def db_stats(ctx: Context) -> Reply:
    data = await ctx.desk.db_stats()
    c = data.candles
    pairs = [("backend", c.backend), ("candles", f"{c.candles:,} in {c.symbols} symbols"),
             ("gaps", f"{c.gaps} ({c.missing_candles:,} candles missing)"), ("database", _bytes(c.database_bytes))]
    rows = [[k, f"{v:,}"] for k, v in data.rows.items()]
    return Reply("\n".join([rd.title("Database"), rd.kv(pairs), rd.table(rows, ["table", "rows"], right=(1,))]))


def _bytes(n: int | None) -> str:
    if n is None:
        return rd.DASH
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.1f} {unit}"
        size /= 1024
    return str(n)


async def health(ctx: Context) -> Reply:
    doc = await ctx.desk.health()
    if doc is None:
        return Reply(f"{rd.title('Health')}\nno host health in this process (the console reads the database)")
    auth = ctx.extras.get("auth")
    # ages and uptimes as durations, not raw seconds
    scalars = [(k, "yes" if v else "no") if isinstance(v, bool) else (k.removesuffix("_s"), rd.duration(v))
               if k.endswith("_s") and isinstance(v, int | float) else (k, v)
               for k, v in doc.items() if not isinstance(v, list | dict)]
    faults = doc.get("faults") or []
    if auth is not None:
        scalars.append(("refused telegram users", f"{auth.refused_total} (last hour replies: {auth.replies})"))
    parts = [rd.title("Health"), rd.kv(scalars)]
    parts += [f"⚠️ {esc(f)}" for f in faults]
    bots_ = doc.get("bots") or []
    if bots_:
        parts.append(rd.table([[b.get("id"), b.get("status"), b.get("mode"), b.get("open_trades"),
                                "here" if b.get("running_here") else b.get("traded_by") or rd.DASH,
                                b.get("candles", rd.DASH), b.get("error") or ""] for b in bots_],
                              ["bot", "status", "mode", "open", "traded by", "candles", "error"], right=(3, 5)))
    return Reply("\n".join(parts), buttons=[refresh_row("health")])


async def jobs(ctx: Context) -> Reply:
    runs = await ctx.desk.jobs()
    if not runs:
        return Reply("no job has run yet")
    # a host lists its scheduler (last run and next run); without one, the last recorded runs
    rows = [[j.job_id, j.last_status or "not run yet", rd.when(j.last_run) if j.last_run else "–",
             rd.when(j.next_run) if j.next_run else "–", (j.last_error or "")[:40]] for j in runs]
    return Reply("\n".join([rd.title("Jobs"), rd.table(rows, ["job", "last", "last run (UTC)", "next run (UTC)",
                                                              "error"])]))


async def risk(ctx: Context, bot_id: str | None = None, key: str | None = None, value: str | None = None) -> Reply:
    if key is None:
        rows = await ctx.desk.risk(bot_id)
        parts = [rd.title("Risk settings")]
        for r in rows:
            pairs = [*r.settings.items(), ("risk_usd", r.risk_usd), ("max_position_notional", r.max_position_notional)]
            parts += [f"<b>{esc(r.bot_id)}</b>", rd.table([[k, rd.value(v)] for k, v in pairs], right=(1,))]
        parts.append("change: <code>/risk set KEY VALUE [bot]</code>")
        return Reply("\n".join(parts))
    assert value is not None
    changes = await ctx.desk.risk_set(key, value, ctx.actor, bot_id)
    applied = [c for c in changes if c.applied]
    waiting = [c for c in changes if not c.applied and c.needs_confirmation]
    lines = [f"✅ {esc(c.bot_id)}: {esc(c.key)} {rd.value(c.old)} → <b>{rd.value(c.new)}</b>" for c in applied]
    if not waiting:
        return Reply("\n".join(lines) or "no bot changed")
    danger = RISK_KEYS[key].danger
    pending = ctx.confirmations.add("risk", f"{key}={value}", ctx.actor,
                                    {"key": key, "value": value, "bots": [c.bot_id for c in waiting]})
    lines.append(f"⚠️ {esc(key)} = <b>{esc(value)}</b> is at or above the danger level {esc(danger)} for "
                 f"{esc(', '.join(c.bot_id for c in waiting))}: confirm?")
    return Reply("\n".join(lines), buttons=ctx.confirmations.buttons(pending, f"set {key} {value}"),
                 confirm_token=pending.token)


async def recovery(ctx: Context) -> list[Reply]:
    items = await ctx.desk.recovery()
    if not items:
        return [Reply("✅ no recovery item is waiting")]
    return [Reply(recovery_text(item), buttons=recovery_rows(item)) for item in items]


def recovery_text(item: PendingItem) -> str:
    details = item.get("details") or {}
    flag = "🚨 critical" if item.get("critical") else "ℹ️"
    lines = [f"{flag} <b>recovery #{item['id']}</b> — {esc(item['kind'])}, bot {esc(item.get('bot_id') or '-')}"]
    if item.get("kind") == "unknown_position" and not details.get("stop_loss"):
        lines.append("⚠️ this position has NO stop-loss; adopting it keeps it without one (the desk never invents one)")
    lines += [f"{esc(k)}: {esc(v)}" for k, v in details.items() if not isinstance(v, dict | list)]
    lines += [f"{esc(k)}: {esc(', '.join(f'{a}={b}' for a, b in v.items()))}" for k, v in details.items()
              if isinstance(v, dict)]
    lines.append(f"raised {rd.when(item.get('created_at'))} UTC, expires {rd.when(item.get('expires_at'))} UTC")
    lines += [f"• <b>{esc(str(o).replace('_', ' '))}</b>: {esc(MEANING[Option(o)])}" for o in item.get("options") or []
              if o in Option.__members__.values()]
    return "\n".join(lines)


async def analysis(ctx: Context, symbol: str) -> Reply:
    a = await ctx.desk.analysis(symbol)
    parts = [f"{rd.title('Analysis')} — {esc(a.symbol)} (bot {esc(a.bot_id)})"]
    if not a.intervals:
        parts.append("no candle of this symbol seen yet")
    for interval, view in a.intervals.items():
        g = view.regime
        parts.append(f"<b>{esc(interval)}m</b> close {rd.price(view.close)} at {rd.when(view.time)} UTC · "
                     f"trend {_TREND.get(g.trend, '?')}, {'ranging' if g.ranging else 'not ranging'}, "
                     f"{'volatile' if g.volatile else 'calm'}, ATR percentile "
                     f"{rd.pct(g.atr_percentile, ratio=g.atr_percentile <= 1, digits=0)}, "
                     f"BTC {_TREND.get(g.btc_trend, '?')}")
        parts.append(rd.table([[k, rd.num(v, 1) if k in OSCILLATORS else rd.level(v)]
                               for k, v in view.indicators.items()], right=(1,)))
    if a.latest_signals:
        rows = [[s, d.signal.side, rd.when(d.signal.time)[5:], rd.price(d.signal.entry), rd.price(d.signal.stop_loss),
                 rd.price(d.signal.take_profit), d.action.lower(), (d.reason or "")[:30]]
                for s, d in a.latest_signals.items()]
        parts += ["<b>latest signal per strategy</b>",
                  rd.table(rows, ["strategy", "side", "time", "entry", "SL", "TP", "action", "why"])]
    else:
        parts.append("no signal on this symbol yet")
    return Reply("\n".join(parts), buttons=[refresh_row("analysis", a.symbol)])


async def universe(ctx: Context, bot_id: str | None = None) -> Reply:
    views = await ctx.desk.universe(bot_id)
    if not views:
        return Reply("no bot running here has a universe rule: their symbols are fixed lists (see /bots)")
    return Reply("\n\n".join(_universe_text(v) for v in views))


def _universe_text(v: UniverseView) -> str:
    rule = v.rule
    floors = [f"turnover ≥ {rd.num(rule.min_turnover_usd, 0)} USDT" if rule.min_turnover_usd else "",
              f"listed ≥ {rule.min_age_days} days" if rule.min_age_days else "",
              f"excluding {', '.join(rule.exclude)}" if rule.exclude else ""]
    head = f"{rd.title('Universe')} — bot {esc(v.bot_id)}: top {rule.top} by 24 h turnover"
    lines = [head + "".join(f", {esc(f)}" for f in floors if f)]
    if v.universe is None:
        return "\n".join([*lines, "not selected yet"])
    lines.append(f"{len(v.universe.symbols)} symbols, selected {rd.when(v.universe.at)} UTC "
                 f"({v.universe.eligible} eligible)")
    rows = [[m.symbol, f"#{m.rank}" if m.why is Why.RANKED else "by hand",
             rd.num(m.turnover_24h, 0) if m.turnover_24h is not None else "-"] for m in v.universe.members]
    lines.append(rd.table(rows, ["symbol", "why", "24h turnover"], right=(2,)))
    if v.universe.unavailable:
        lines.append(f"included but not trading on Bybit: {esc(', '.join(v.universe.unavailable))}")
    if v.held:
        lines.append(f"left, still held until their trades and phantoms end: {esc(', '.join(v.held))}")
    return "\n".join(lines)


# --- the table -------------------------------------------------------------------------------------------------
def _c(name: str, usage: str, about: str, admin: bool | Callable[[list[str]], bool], parse: Parser,
       handle: Handler) -> Command:
    return Command(name, usage, about, admin, parse, handle)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    _c("start", "/start", "who you are and which bots run", False, _none, start),
    _c("help", "/help", "this list", False, _none, help_),
    _c("bots", "/bots", "every bot: status, mode, open positions, equity", False, _none, bots),
    _c("status", "/status [bot]", "open positions with unrealized PnL", False, _bot_only, status),
    _c("balance", "/balance", "equity, realized, peak, drawdown per bot", False, _none, balance),
    _c("stats", "/stats [days] [bot]", "win rate, PnL, drawdown, Sharpe...", False, _stats_args, stats),
    _c("daily", "/daily [n]", "PnL per UTC day (n days, default 7)", False,
       _optional_int("n", 1, 366, "n"), daily),
    _c("recent", "/recent [n]", "the last closed trades (default 10)", False,
       _optional_int("n", 1, 100, "n"), recent),
    _c("performance", "/performance [bot]", "per symbol and per strategy", False, _bot_only, performance),
    _c("chart", "/chart equity|daily|winrate|phantoms|calibration|SYMBOL [days]", "a chart as a picture", False,
       _chart_args, chart),
    _c("pause", "/pause [bot|all] [reason]", "stop opening positions (open ones stay managed)", True,
       _target_and_reason, pause),
    _c("resume", "/resume [bot|all]", "open positions again", True, _target, resume),
    _c("close", "/close SYMBOL|all [bot]", "close at market, after a confirmation", True, _close_args, close),
    _c("retrain", "/retrain [strategy]", "retrain the ML filter now", True, _strategy, retrain),
    _c("ml_stats", "/ml_stats", "champion models, last challengers, pending promotions", False, _none, ml_stats),
    _c("phantom_stats", "/phantom_stats [symbol]", "shadow trades: taken vs rejected vs blocked", False,
       _symbol_optional, phantom_stats),
    _c("db_stats", "/db_stats", "candles stored, gaps, table sizes", False, _none, db_stats),
    _c("health", "/health", "database, Redis, scheduler, bots, feed age", False, _none, health),
    _c("jobs", "/jobs", "scheduled jobs and their last run", False, _none, jobs),
    _c("risk", "/risk [bot] · /risk set KEY VALUE [bot]", "risk limits; set one (🔒, confirmed above a danger "
       "level)", _risk_is_admin, _risk_args, risk),
    _c("recovery", "/recovery", "decisions waiting for an admin, with their buttons", False, _none, recovery),
    _c("analysis", "/analysis SYMBOL", "regime, indicators and the latest signal per strategy", False,
       _symbol_required, analysis),
    _c("universe", "/universe [bot]", "the symbols a universe rule chose now, and why each is in", False, _bot_only,
       universe),
)}


def parse_line(text: str) -> tuple[str, list[str], str | None]:
    """'/stats@desk_bot 7 main' -> ('stats', ['7', 'main'], 'desk_bot'); a console line may omit the '/'."""
    words = text.strip().split()
    if not words:
        return "", [], None
    head = words[0].removeprefix("/")
    name, _, mention = head.partition("@")
    return name.lower(), words[1:], mention or None


async def execute(ctx: Context, name: str, args: list[str]) -> list[Reply]:
    """Parse → authorize → call the desk → render; an operator's mistake is one line with the usage."""
    command = COMMANDS.get(name)
    if command is None:
        return [Reply(rd.error(f"unknown command /{name}") + " — /help lists the commands")]
    if command.needs_admin(args) and not ctx.actor.admin:
        return [Reply(READ_ONLY)]
    try:
        parsed = command.parse(args)
        out = await command.handle(ctx, **parsed)
    except BadArgument as exc:
        return [Reply(rd.error(str(exc), command.usage))]
    except NotAllowed:
        return [Reply(READ_ONLY)]
    return out if isinstance(out, list) else [out]
