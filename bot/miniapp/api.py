"""The Mini App's JSON API under /api: one more transport over core/desk.py.

Every request carries `Authorization: tma <initData>`; the user it proves gets the chat's role (admin or
viewer, bot/telegram/auth.py), anyone else 403 and nothing. No cookie, no session: each call proves
itself. Reads call the same desk methods as the chat's commands. An action is two calls, as the chat's
buttons are: POST /api/actions/<action> (admin) validates it and answers what it would do with a token
bound to that admin and expiring (the chat's Confirmations); POST /api/confirm with that token acts
through the desk, which re-checks the state at that moment, and the press is audited (tg:<id>).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.miniapp import schema as s
from bot.miniapp.initdata import InvalidInitData, validate
from bot.telegram.keyboards import ALREADY_DECIDED, CONFIRM_TTL_S, Confirm, Confirmations, Pending
from bot.telegram.render import value
from core.config import BotStatus
from core.decisions import MEANING, Option
from core.desk import RISK_KEYS, Actor, BadArgument, Desk, ModelDoc, NotAllowed, PendingItem, Role, TradeQuery
from core.phantom import ActionFigures
from core.stats import MIN_RATIO_DAYS
from core.strategies import STRATEGIES

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACTOR: web.RequestKey[Actor] = web.RequestKey("actor", Actor)
WINDOWS = (("24 h", 1), ("7 d", 7), ("30 d", 30), ("all", None))
REFUSAL_LOG_EVERY_S = 60.0


@dataclass
class Refusals:
    """Counted always, logged at most once a minute: a stranger cannot flood the log."""

    total: int = 0
    _unlogged: int = 0
    _last: float = float("-inf")

    def add(self, why: str) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last >= REFUSAL_LOG_EVERY_S:
            log.warning("mini app: refused %d request(s); latest: %s", self._unlogged, why)
            self._last, self._unlogged = now, 0


@dataclass
class MiniAppApi:
    desk: Desk
    token: str = field(repr=False)
    role_of: Callable[[int], Role | None]
    max_age_s: float
    clock: Callable[[], float] = time.time
    confirmations: Confirmations = field(default_factory=Confirmations)
    refusals: Refusals = field(default_factory=Refusals)

    # --- the app -------------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        api = web.Application(middlewares=[self._authenticate])
        for path, handler in (("/me", self.me), ("/overview", self.overview), ("/equity", self.equity),
                              ("/trades", self.trades), ("/trades/facets", self.facets),
                              ("/phantoms", self.phantoms), ("/recovery", self.recovery), ("/models", self.models),
                              ("/system", self.system), ("/risk", self.risk)):
            api.router.add_get(path, handler)
        api.router.add_post("/actions/{action}", self.ask)
        api.router.add_post("/confirm", self.confirm)
        return api

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, init_data = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "tma":
                raise InvalidInitData("no tma authorization")
            user = validate(init_data.strip(), self.token, self.clock(), self.max_age_s)
        except InvalidInitData as exc:
            return self._forbidden(str(exc))
        role = self.role_of(user.id)
        if role is None or role == "system":
            return self._forbidden(f"user {user.id} is neither admin nor viewer")
        request[ACTOR] = Actor(user.id, user.username or user.first_name, role)
        try:
            response = await handler(request)
        except NotAllowed:
            return self._forbidden(f"user {user.id} may read, not act")
        except BadArgument as exc:
            response = _json(s.Error(error=str(exc)), 400)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "request"
            response = _json(s.Error(error=f"{where}: {first.get('msg', 'invalid')}"), 400)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _forbidden(self, why: str) -> web.Response:
        self.refusals.add(why)
        return _json(s.Error(error="forbidden"), 403)

    # --- reading -------------------------------------------------------------------------------------------------
    async def me(self, request: web.Request) -> web.Response:
        return _json(_me(request[ACTOR]))

    async def overview(self, request: web.Request) -> web.Response:
        """The first screen: every bot with its status (halts included) and positions, and the PnL windows."""
        desk = self.desk
        status = {st.bot_id: st for st in await desk.status()}
        balance = {b.bot_id: b for b in await desk.balance()}
        bots = []
        for b in await desk.bots():
            st, bal = status.get(b.id), balance.get(b.id)
            bots.append(s.BotCard.model_validate({
                "id": b.id, "mode": b.mode, "status": b.status.status, "reason": b.status.reason,
                "since": b.status.since, "open_positions": b.open_positions, "pending_recovery": b.pending_recovery,
                "positions": st.positions if st else [], "starting": st.starting if st else False,
                "running_here": st.running_here if st else b.running_here,
                "equity": bal.equity if bal and bal.equity is not None else b.equity,
                "peak": bal.peak if bal else None, "drawdown_pct": bal.drawdown_pct if bal else None,
                "today": bal.day_pnl if bal else None, "saved_at": bal.as_of if bal else None}))
        windows = [s.Window(label=label, days=days, figures=s.Figures.model_validate(await desk.stats(days)))
                   for label, days in WINDOWS]
        return _json(s.Overview(me=_me(request[ACTOR]), bots=bots, windows=windows, min_ratio_days=MIN_RATIO_DAYS,
                                as_of=datetime.now(UTC)))

    async def equity(self, request: web.Request) -> web.Response:
        curve = await self.desk.equity(_int(request, "days"), _text(request, "bot"))
        return _json(s.Equity.model_validate(curve))

    async def trades(self, request: web.Request) -> web.Response:
        query = TradeQuery(bot_id=_text(request, "bot"), symbol=_text(request, "symbol"),
                           strategy=_text(request, "strategy"), exit_reason=_text(request, "exit_reason"),
                           before=_cursor(_text(request, "before")), limit=_int(request, "limit") or 50)
        page = await self.desk.trades(query)
        last = page.rows[-1] if page.rows and page.more else None
        return _json(s.TradePage(rows=[s.TradeRow.model_validate(r) for r in page.rows], total=page.total,
                                 more=page.more, next=f"{last.exit_time.isoformat()}|{last.id}" if last else None))

    async def facets(self, request: web.Request) -> web.Response:
        facets = await self.desk.trade_facets(_text(request, "bot"))
        bots = [b.id for b in await self.desk.bots()]
        return _json(s.Facets(bots=bots, symbols=facets.symbols, strategies=facets.strategies,
                              exit_reasons=facets.exit_reasons))

    async def phantoms(self, request: web.Request) -> web.Response:
        data = await self.desk.phantom_stats(_text(request, "symbol"), _text(request, "bot"))

        def group(figures: ActionFigures, action: str) -> s.PhantomGroup | None:
            found = figures.get(action)
            return s.PhantomGroup.model_validate(found) if found and found["total"] else None

        rows = [s.PhantomStrategy(strategy=name, executed=group(f, "EXECUTED"), rejected=group(f, "REJECTED"),
                                  blocked=group(f, "BLOCKED"), all=group(f, "ALL"))
                for name, f in data.by_strategy.items()]
        return _json(s.Phantoms(symbol=data.symbol, strategies=rows, total=group(data.all, "ALL"),
                                what_if_rejected_r=data.all.what_if_rejected_r))

    async def recovery(self, request: web.Request) -> web.Response:
        return _json_list([_item(i) for i in await self.desk.recovery()])

    async def models(self, request: web.Request) -> web.Response:
        data = await self.desk.ml_stats()
        pending = []
        for item in await self.desk.pending_promotions():
            d = item.get("details") or {}
            if d.get("strategy") and d.get("version") is not None:
                pending.append(s.Promotion(item_id=item["id"], bot_id=item["bot_id"], strategy=d["strategy"],
                                           version=int(d["version"]), why=d.get("why")))
        return _json(s.Models(champions=[_model(m) for m in data["models"]],
                              latest=[_model(m) for m in data["latest"]], pending=pending))

    async def system(self, request: web.Request) -> web.Response:
        health = await self.desk.health()
        db = await self.desk.db_stats()
        if health is None:  # the Mini App is served by a host: this cannot be, but say so rather than crash
            return _json(s.Error(error="no host health in this process"), 503)
        return _json(s.System(status=health["status"], faults=health["faults"], database=health["database"],
                              redis=health["redis"], feed=health["feed"],
                              jobs=[s.Job.model_validate(j) for j in await self.desk.jobs()], rows=db.rows,
                              candles=db.candles.candles, candle_gaps=db.candles.gaps,
                              storage=s.Storage.model_validate(db.storage)))

    async def risk(self, request: web.Request) -> web.Response:
        out = []
        for row in await self.desk.risk(_text(request, "bot")):
            out.append(s.BotRisk(bot_id=row.bot_id, settings=[
                s.RiskSetting(key=k, value=row.settings[k], low=spec.low, high=spec.high, low_open=spec.low_open,
                              danger=spec.danger)
                for k, spec in RISK_KEYS.items()]))
        return _json_list(out)

    # --- acting: ask, then confirm --------------------------------------------------------------------------------
    async def ask(self, request: web.Request) -> web.Response:
        actor = request[ACTOR]
        if not actor.admin:
            raise NotAllowed(actor.label)
        action = request.match_info["action"]
        asking = ASKS.get(action)
        if asking is None:
            return _json(s.Error(error=f"unknown action {action!r}"), 404)
        body = await _body(request)
        title, lines, target, params = await asking(self.desk, body)
        pending = self.confirmations.add(action, target, actor, params)
        return _json(s.Confirmation(action=action, target=pending.target, token=pending.token, title=title,
                                    lines=lines, expires_in_s=int(CONFIRM_TTL_S)))

    async def confirm(self, request: web.Request) -> web.Response:
        actor = request[ACTOR]
        if not actor.admin:
            raise NotAllowed(actor.label)
        body = s.ConfirmRequest.model_validate(await _body(request))
        taken = self.confirmations.take(Confirm(action="cancel" if body.cancel else body.action, target=body.target,
                                                token=body.token), actor)
        if isinstance(taken, str):
            result, status = s.ActionResult(ok=False, message=taken), 409
        elif body.cancel:
            result, status = s.ActionResult(ok=True, message=f"cancelled: {taken.action} {taken.target}"), 200
        else:
            result, status = await ACTS[taken.action](self.desk, taken, actor), 200
        await self.desk.record_press(actor, f"app:{body.action}:{body.target}", result.message)
        return _json(result, status)


# --- the actions: what each asks (title, lines, target, params) and what it then does ------------------------------
Asked = tuple[str, list[str], str, dict[str, Any]]


async def _ask_pause(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.PauseRequest.model_validate(body)
    ids = await desk.pause_targets(None if req.bot == "all" else req.bot)  # as /pause: "all" leaves replays out
    lines = [f"{i}: no new positions open until it is resumed; open ones stay managed" for i in ids]
    return (f"Pause {', '.join(ids)}?" if ids else "Nothing to pause", lines or ["no running bot"], req.bot,
            {"bots": ids, "reason": req.reason})


async def _act_pause(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    done = [b for bid in p.params["bots"] for b in await desk.pause(bid, p.params["reason"], actor)]
    return s.ActionResult(ok=bool(done), message=f"paused: {', '.join(done)}" if done else "nothing paused")


async def _ask_resume(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.ResumeRequest.model_validate(body)
    lines, paused, halted = [], [], []
    for st in await desk.status(None if req.bot == "all" else req.bot):
        if (req.bot == "all" and st.mode == "replay") or st.status is None:  # a replay's record: not "all"
            continue
        if st.status.status is BotStatus.PAUSED:
            paused.append(st.bot_id)
            lines.append(f"{st.bot_id}: paused, trades again at once")
        elif st.status.status is BotStatus.HALTED:
            halted.append(st.bot_id)
            lines.append(f"{st.bot_id}: halted ({st.status.reason or 'no reason stored'}); resuming accepts the loss: "
                         "the peak equity resets to the equity now and the drawdown guard measures from there")
    ids = paused + halted
    return (f"Resume {', '.join(ids)}?" if ids else "Nothing to resume", lines or ["no paused or halted bot"],
            req.bot, {"bots": ids, "halted": halted})


async def _act_resume(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    resumed: list[str] = []
    for bid in p.params["bots"]:  # exactly the listed bots; a halt only if it was listed as one
        resumed += (await desk.resume(bid, actor, confirmed=p.params["halted"])).resumed
    return s.ActionResult(ok=bool(resumed), message=f"running: {', '.join(resumed)}" if resumed
                          else "nothing resumed (no longer paused or halted, or halted since)")


async def _ask_close(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.CloseRequest.model_validate(body)
    target = "all" if req.symbol.lower() == "all" else req.symbol.upper()
    positions = await desk.close_preview(target, req.bot)
    if not positions:
        raise BadArgument(f"no open position{'' if target == 'all' else ' for ' + target}: nothing to close")
    lines = [f"{p.symbol} {p.side} {value(p.qty)} ({p.status}), trade {p.trade_id}" for p in positions]
    lines.append("a pending entry is withdrawn (or closed as soon as it fills)")
    return (f"Close {len(positions)} position(s) at market?", lines, target,
            {"target": target, "bot": req.bot, "trades": [p.trade_id for p in positions]})


async def _act_close(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    listed: list[str] = p.params["trades"]
    closed = await desk.close(p.params["target"], actor, p.params["bot"], listed)  # exactly what was listed
    done = {c.trade_id for c in closed}
    lines = [f"{c.symbol} {c.trade_id} {value(c.qty)}: {c.step}" for c in closed]
    lines += [f"{t}: no longer open, nothing sent" for t in listed if t not in done]
    return s.ActionResult(ok=bool(closed), message=f"closing {len(closed)}", lines=lines)


async def _ask_decide(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.DecideRequest.model_validate(body)
    item = next((i for i in await desk.recovery() if int(i["id"]) == req.item_id), None)
    if item is None:
        raise BadArgument(f"recovery #{req.item_id} is not pending (already decided or expired)")
    if req.option not in (item.get("options") or []):
        raise BadArgument(f"{req.option!r} is not an option of recovery #{req.item_id}")
    return (f"Recovery #{req.item_id} ({item['kind']}, bot {item.get('bot_id')}): {req.option.replace('_', ' ')}?",
            [_meaning(req.option)], f"{req.item_id}-{req.option}", {"item_id": req.item_id, "option": req.option})


async def _act_decide(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    result = await desk.decide(p.params["item_id"], p.params["option"], actor)
    return _decided(result.decided.ok, result.decided.status, result.option, result.effect)


async def _ask_promote(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.PromoteRequest.model_validate(body)
    found = [i for i in await desk.pending_promotions(req.bot)
             if (i.get("details") or {}).get("strategy") == req.strategy
             and int((i.get("details") or {}).get("version", -1)) == req.version]
    if not found:
        raise BadArgument(f"no pending promotion of {req.strategy} v{req.version} for {req.bot}")
    why = (found[0].get("details") or {}).get("why") or ""
    return (f"Promote {req.strategy} v{req.version} ({req.bot}) anyway?",
            [f"the gate refused it: {why}", _meaning(Option.PROMOTE)], f"{req.bot}-{req.strategy}-{req.version}",
            {"bot": req.bot, "strategy": req.strategy, "version": req.version})


async def _act_promote(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    result = await desk.promote(p.params["bot"], p.params["strategy"], p.params["version"], actor)
    return _decided(result.decided.ok, result.decided.status, result.option, result.effect)


async def _ask_risk(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.RiskRequest.model_validate(body)
    changes = await desk.risk_preview(req.key, req.value, req.bot)
    if not changes:
        raise BadArgument("no bot to change")
    lines = [f"{c.bot_id}: {c.key} {value(c.old)} → {value(c.new)}" + (
        " ⚠️ at or above the danger level" if c.needs_confirmation else "") for c in changes]
    return (f"Set {req.key} = {req.value}?", lines, f"{req.key}={req.value}",
            {"key": req.key, "value": req.value, "bots": [c.bot_id for c in changes]})


async def _act_risk(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    changes = [c for bid in p.params["bots"]  # the bots the confirmation listed
               for c in await desk.risk_set(p.params["key"], p.params["value"], actor, bid, confirmed=True)]
    lines = [f"{c.bot_id}: {c.key} {value(c.old)} → {value(c.new)}" for c in changes if c.applied]
    return s.ActionResult(ok=bool(lines), message="applied" if lines else "no bot changed", lines=lines)


async def _ask_retrain(desk: Desk, body: dict[str, Any]) -> Asked:
    req = s.RetrainRequest.model_validate(body)
    if req.strategy is not None and STRATEGIES.get(req.strategy) is None:
        raise BadArgument(f"unknown strategy {req.strategy!r} (strategies: {', '.join(STRATEGIES.names())})")
    here = [st.bot_id for st in await desk.status(req.bot) if st.running_here]
    if not here:
        raise BadArgument(f"bot {req.bot} is not running in this process" if req.bot
                          else "no bot is running in this process")
    what = req.strategy or "every strategy with new outcomes since its last training"
    return (f"Retrain {what}?", [f"{b}: challengers face the gate off the event loop; the verdicts follow in the chat"
                                 for b in here], f"{req.bot or 'all'}-{req.strategy or 'all'}",
            {"strategy": req.strategy, "bot": req.bot})


async def _act_retrain(desk: Desk, p: Pending, actor: Actor) -> s.ActionResult:
    queued = await desk.retrain(p.params["strategy"], actor, p.params["bot"])  # re-checked: bots running here now
    lines = []
    for bot_id, q in queued.items():
        if not q.strategies:
            lines.append(f"{bot_id}: nothing to retrain (no new outcomes since the last training, "
                         "or too few for a first model)")
            continue
        lines.append(f"{bot_id}: {', '.join(q.strategies)} queued"
                     + (f", behind a running retrain ({', '.join(q.behind)})" if q.behind else ""))
    return s.ActionResult(ok=any(q.strategies for q in queued.values()), message="retrain", lines=lines)


ASKS: dict[str, Callable[[Desk, dict[str, Any]], Awaitable[Asked]]] = {
    "pause": _ask_pause, "resume": _ask_resume, "close": _ask_close, "decide": _ask_decide,
    "promote": _ask_promote, "risk": _ask_risk, "retrain": _ask_retrain}
ACTS: dict[str, Callable[[Desk, Pending, Actor], Awaitable[s.ActionResult]]] = {
    "pause": _act_pause, "resume": _act_resume, "close": _act_close, "decide": _act_decide,
    "promote": _act_promote, "risk": _act_risk, "retrain": _act_retrain}


# --- helpers ------------------------------------------------------------------------------------------------------
def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def _json_list(models: list[M]) -> web.Response:
    return web.Response(text="[" + ",".join(m.model_dump_json() for m in models) + "]",
                        content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadArgument("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadArgument("the body must be a JSON object")
    return body


def _me(actor: Actor) -> s.Me:
    assert actor.id is not None and actor.role != "system"
    return s.Me(id=actor.id, name=actor.name, role=actor.role)


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    if len(value) > 64:
        raise BadArgument(f"{name} is too long")
    return value or None


def _int(request: web.Request, name: str) -> int | None:
    value = _text(request, name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 6:
        raise BadArgument(f"{name} must be a whole number")
    return int(value)


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if value is None:
        return None
    when, _, trade_id = value.partition("|")
    try:
        at = datetime.fromisoformat(when)
    except ValueError:
        raise BadArgument("before: not a cursor from a previous page") from None
    if at.tzinfo is None or not trade_id:
        raise BadArgument("before: not a cursor from a previous page")
    return at, trade_id


def _meaning(option: str) -> str:
    return MEANING[Option(option)] if option in Option.__members__.values() else option


def _decided(ok: bool, status: str, option: str, effect: Any) -> s.ActionResult:
    if not ok:
        return s.ActionResult(ok=False, message=f"{ALREADY_DECIDED} ({status})")
    text = effect.text if effect is not None else ""
    return s.ActionResult(ok=True, message=f"{option.replace('_', ' ')}: {effect.outcome if effect else 'done'}",
                          lines=[text] if text else [])


def _item(item: PendingItem) -> s.RecoveryItem:
    raw = item.get("details") or {}
    details = {}
    for k, v in raw.items():
        details[str(k)] = ", ".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else (
            "–" if v is None else str(v))
    warnings = []
    if item["kind"] == "unknown_position" and not raw.get("stop_loss"):  # as the chat warns
        warnings.append("this position has NO stop-loss; adopting it keeps it without one (the desk never invents one)")
    return s.RecoveryItem(id=item["id"], bot_id=item.get("bot_id"), kind=item["kind"],
                          critical=bool(item.get("critical")), details=details, warnings=warnings,
                          options=[s.OptionView(name=o, meaning=_meaning(o)) for o in item.get("options") or []],
                          created_at=item.get("created_at"), expires_at=item.get("expires_at"))


def _model(m: ModelDoc) -> s.MLModel:
    metrics = m["metrics"] or {}
    check = metrics.get("challenger")
    return s.MLModel(bot_id=m["bot_id"], strategy=m["strategy"], version=m["version"], trained_at=m["trained_at"],
                     samples=m["samples"], champion=m["champion"], promoted=metrics.get("promoted"),
                     why=metrics.get("why"), challenger=s.ModelCheck.model_validate(check) if check else None)

