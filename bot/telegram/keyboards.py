"""Inline buttons: typed callback data, pending confirmations, and what a press does.

A button being visible proves nothing: every press is authorized again (auth.py), re-checked here
against the current state through the desk (a second press, a press on an expired or already decided
item only gets "already decided"), written to audit_log with the user id, and answered so the client
stops spinning. Packed data stays within Telegram's 64 bytes; a button that would not fit falls back
to a shorter form or is left out, never sent truncated.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiogram.filters.callback_data import MAX_CALLBACK_LENGTH, CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, WebAppInfo

from bot.telegram.render import Button, Reply, esc, value
from core.desk import Actor, BadArgument, NotAllowed, PendingItem, RecoveryResult

if TYPE_CHECKING:
    from bot.telegram.commands import Context

log = logging.getLogger(__name__)

CONFIRM_TTL_S = 300.0
ALREADY_DECIDED = "already decided"


class Confirm(CallbackData, prefix="cf"):
    """Yes/cancel of a destructive action; `token` names the pending confirmation (in memory only:
    after a restart an old button is simply expired)."""

    action: str  # close | risk | resume | cancel
    target: str
    token: str


class Recovery(CallbackData, prefix="rv"):
    item_id: int
    option: str  # one of the item's options (core/decisions.py OPTIONS: each has an effect)


class Promote(CallbackData, prefix="pm"):
    """"Promote anyway" for a challenger model the gate refused."""

    bot: str
    strategy: str
    version: int


class Refresh(CallbackData, prefix="rf"):
    view: str
    args: str = ""


ADMIN_PREFIXES = frozenset({Confirm.__prefix__, Recovery.__prefix__, Promote.__prefix__})
# what a Refresh button may re-run: reading views only (a forged "rf:pause:all" must not act)
REFRESHABLE = frozenset({"bots", "status", "balance", "stats", "daily", "performance", "ml_stats", "phantom_stats",
                         "health", "analysis"})


def fits(data: CallbackData) -> bool:
    try:
        return len(data.pack().encode()) <= MAX_CALLBACK_LENGTH
    except ValueError:  # too long, or a value holding the separator
        return False


def prefix_of(raw: str | None) -> str:
    return (raw or "").split(":", 1)[0]


def markup(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(inline_keyboard=[[_button(b) for b in row] for row in rows])


def _button(b: Button) -> InlineKeyboardButton:
    if b.data is None:
        assert b.web_app is not None
        return InlineKeyboardButton(text=b.label, web_app=WebAppInfo(url=b.web_app))
    return InlineKeyboardButton(text=b.label, callback_data=b.data.pack())


def app_row(url: str | None) -> list[Button]:
    """The button that opens the Mini App (only where it is served over https: PUBLIC_URL)."""
    return [Button("📊 Open the dashboard", None, web_app=url)] if url else []


def refresh_row(view: str, args: list[str] | str = "") -> list[Button]:
    assert view in REFRESHABLE, view
    text = args if isinstance(args, str) else " ".join(args)
    data = Refresh(view=view, args=text.replace(":", ""))
    return [Button("🔄 Refresh", data)] if fits(data) else []


def recovery_rows(item: PendingItem) -> list[list[Button]]:
    """One button per option of the item: each option has an effect (core/recovery.py), nothing else is offered."""
    buttons = []
    for option in item.get("options") or []:
        data: CallbackData = Recovery(item_id=int(item["id"]), option=option)
        if not fits(data):
            log.warning("recovery option %r of item %s does not fit a button", option, item["id"])
            continue
        buttons.append(Button(f"✅ {option.replace('_', ' ')}", data))
    return [buttons[i:i + 2] for i in range(0, len(buttons), 2)]


def promote_button(bot_id: str, strategy: str, version: int, item_id: int) -> Button:
    data: CallbackData = Promote(bot=bot_id, strategy=strategy, version=version)
    if not fits(data):  # a long bot id: the item's own "promote" option decides the same thing
        data = Recovery(item_id=item_id, option="promote")
    return Button(f"⬆️ promote {strategy} v{version} anyway", data)


# --- pending confirmations --------------------------------------------------------------------------
@dataclass
class Pending:
    token: str
    action: str
    target: str
    user: str  # actor label: only who asked may confirm
    params: dict[str, Any]
    expires: float


@dataclass
class Confirmations:
    """Confirmations waiting for their button: each is taken at most once, and expires."""

    ttl: float = CONFIRM_TTL_S
    clock: Callable[[], float] = time.monotonic
    items: dict[str, Pending] = field(default_factory=dict)

    def add(self, action: str, target: str, actor: Actor, params: dict[str, Any]) -> Pending:
        now = self.clock()
        for token in [t for t, p in self.items.items() if p.expires <= now]:
            del self.items[token]
        token = secrets.token_urlsafe(6)  # 8 characters
        target = target.replace(":", "")[:24]  # informational in the button; the token carries the rest
        pending = Pending(token, action, target, actor.label, params, now + self.ttl)
        self.items[token] = pending
        return pending

    def take(self, data: Confirm, actor: Actor) -> Pending | str:
        """The pending action, removed; or why not (a string)."""
        pending = self.items.get(data.token)
        if pending is None or (data.action != "cancel" and data.action != pending.action) \
                or data.target != pending.target:
            return ALREADY_DECIDED
        if pending.user != actor.label:
            return "only the admin who asked can confirm this"
        del self.items[data.token]
        if pending.expires <= self.clock():
            return "expired: send the command again"
        return pending

    def buttons(self, pending: Pending, yes: str) -> list[list[Button]]:
        return [[Button(f"✅ {yes}", Confirm(action=pending.action, target=pending.target, token=pending.token)),
                 Button("✖️ cancel", Confirm(action="cancel", target=pending.target, token=pending.token))]]


# --- presses ------------------------------------------------------------------------------------------------
@dataclass
class Pressed:
    answer: str  # answerCallbackQuery text (≤ 200 characters)
    edit: Reply | None = None  # the message's new text and buttons
    drop_keyboard: bool = False  # decided elsewhere: take the stale buttons away
    alert: bool = False


async def press(ctx: Context, data: CallbackData) -> Pressed:
    """Re-check, act through the desk, audit. Never raises for an operator's mistake."""
    try:
        if isinstance(data, Confirm):
            result = await _confirm(ctx, data)
        elif isinstance(data, Recovery):
            result = _decided(await ctx.desk.decide(data.item_id, data.option, ctx.actor))
        elif isinstance(data, Promote):
            result = _decided(await ctx.desk.promote(data.bot, data.strategy, data.version, ctx.actor))
        elif isinstance(data, Refresh):
            result = await _refresh(ctx, data)
        else:
            result = Pressed("unknown button")
    except NotAllowed:
        result = Pressed("read-only: only admins can do this", alert=True)
    except BadArgument as exc:
        result = Pressed(str(exc)[:200], alert=True)
    await ctx.desk.record_press(ctx.actor, data.pack(), result.answer)
    return result


async def _confirm(ctx: Context, data: Confirm) -> Pressed:
    pending = ctx.confirmations.take(data, ctx.actor)
    if isinstance(pending, str):
        return Pressed(pending, drop_keyboard=pending == ALREADY_DECIDED)
    if data.action == "cancel":
        return Pressed("cancelled", edit=Reply(f"✖️ cancelled: {esc(pending.action)} {esc(pending.target)}"))
    if pending.action == "close":
        listed: list[str] = pending.params["trades"]
        closed = await ctx.desk.close(pending.params["target"], ctx.actor, pending.params.get("bot"), listed)
        done = {c.trade_id for c in closed}
        lines = [f"✅ {esc(c.symbol)} {esc(c.trade_id)} {value(c.qty)}: {esc(str(c.step))}" for c in closed]
        lines += [f"– {esc(t)}: no longer open, nothing sent" for t in listed if t not in done]
        return Pressed(f"closing {len(closed)}", edit=Reply("\n".join(lines) or "nothing closed"))
    if pending.action == "pause":  # the bots the confirmation listed, not whatever exists now
        paused = [b for bot_id in pending.params["bots"]
                  for b in await ctx.desk.pause(bot_id, pending.params["reason"], ctx.actor)]
        text = (f"⏸ paused: <b>{esc(', '.join(paused))}</b>\nno new positions open until /resume" if paused
                else "nothing paused (already paused)")
        return Pressed(f"paused {len(paused)}", edit=Reply(text))
    if pending.action == "resume":
        result = await ctx.desk.resume(pending.params["target"], ctx.actor, confirmed=pending.params["bots"])
        text = (f"▶️ running again: <b>{esc(', '.join(result.resumed))}</b>; the drawdown guard measures from the "
                "equity now" if result.resumed else "nothing resumed (no longer halted)")
        return Pressed("resumed" if result.resumed else "nothing resumed", edit=Reply(text))
    if pending.action == "risk":
        p = pending.params
        changes = [c for bot_id in p["bots"]  # the bots the confirmation listed, not whatever exists now
                   for c in await ctx.desk.risk_set(p["key"], p["value"], ctx.actor, bot_id, confirmed=True)]
        lines = [f"✅ {esc(c.bot_id)}: {esc(c.key)} {value(c.old)} → <b>{value(c.new)}</b>" for c in changes
                 if c.applied]
        return Pressed("applied", edit=Reply("\n".join(lines) or "no bot changed"))
    return Pressed(ALREADY_DECIDED)


def _decided(result: RecoveryResult) -> Pressed:
    """The answer to a decision: what the effect did (ids, prices, quantities), and the buttons of any item
    it led to (a position adopted without a stop-loss)."""
    d = result.decided
    if not d.ok:
        if d.status == "pending":  # still open: the option is not one of the item's
            return Pressed(f"{result.option!r} is not an option of this item", alert=True)
        return Pressed(f"{ALREADY_DECIDED} ({d.status})", drop_keyboard=True)
    option = result.option.replace("_", " ")
    effect = result.effect
    icon = {"changed": "↩️", "failed": "❌", "queued": "⏳"}.get(str(effect.outcome) if effect else "", "✅")
    lines = [f"{icon} recovery #{d.item_id} ({esc(d.kind)}, bot {esc(d.bot_id)}): <b>{esc(option)}</b>"]
    if effect is not None:
        lines.append(esc(effect.text))
    follow = result.follow_up[0] if result.follow_up else None
    if follow is not None:
        lines.append(f"➡️ decision needed: recovery #{follow['id']} ({esc(follow['kind'])})")
    answer = f"{option}: {effect.outcome}" if effect is not None else option
    return Pressed(answer[:200], edit=Reply("\n".join(lines), buttons=recovery_rows(follow) if follow else []))


async def _refresh(ctx: Context, data: Refresh) -> Pressed:
    if data.view not in REFRESHABLE:
        return Pressed("unknown or outdated button")
    replies = await ctx.run(data.view, data.args.split())
    first = replies[0]
    if not first.buttons:
        first.buttons = [refresh_row(data.view, data.args)]
    return Pressed("refreshed", edit=first)


__all__ = ["ADMIN_PREFIXES", "Confirm", "Confirmations", "Pending", "Pressed", "Promote", "Recovery", "Refresh",
           "app_row", "fits", "markup", "press", "promote_button", "recovery_rows", "refresh_row"]
