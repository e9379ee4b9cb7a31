"""Recovery decisions and their effects: one table of what each (kind, option) does, and the rules that do it.

An admin decides an item (storage marks it decided once); `perform` then acts, checked against the
exchange's state at that moment, not when the item was raised: a state that changed is not acted on
blindly (the result says what changed and the host reconciles again, which raises a fresh item if one
is still needed). Every effect is idempotent: an adopted position's trade id and a close's order link id
derive from the item id, so a restart that performs a decision again sends nothing twice. The desk never
invents a stop-loss: a position adopted without one is said so, with a "close at market" decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from core.decisions import MEANING, OPTIONS, Option, RecoveryDraft, RecoveryKind, options_of
from core.exchange.broker import Broker, OrderRejected, Position, order_link_id
from core.lifecycle import HELD_STATES, TradeStatus
from core.live import EXECUTION_LOOKBACK
from core.reconcile import fmt
from core.trader import OpenTrade, Trader


class Outcome(StrEnum):
    DONE = "done"
    SENT = "sent"  # an order is at the exchange; its fills finish the job
    NOTHING = "nothing"  # ignore / keep: decided, nothing to do
    CHANGED = "changed"  # the state moved since the item was raised: not acted on
    FAILED = "failed"  # the exchange refused; the item may be raised again
    QUEUED = "queued"  # the bot is not traded by this process: its process acts at its next reconciliation


PENDING_EFFECT = "acting"  # recorded with the decision, replaced by the outcome once performed


@dataclass
class Effect:
    outcome: Outcome
    text: str
    trade_id: str | None = None
    order_link_id: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    estimated: bool = False
    follow_up: list[RecoveryDraft] = field(default_factory=list)

    @property
    def recheck(self) -> bool:
        """The exchange's state moved: reconcile again (a fresh item replaces this one if still needed)."""
        return self.outcome == Outcome.CHANGED

    def as_json(self) -> dict[str, Any]:
        return {"state": str(self.outcome), "text": self.text, "trade_id": self.trade_id,
                "order_link_id": self.order_link_id, "qty": fmt(self.qty), "price": fmt(self.price),
                "estimated": self.estimated}


@dataclass(frozen=True)
class Item:
    id: int
    bot_id: str | None
    kind: RecoveryKind
    details: dict[str, Any]

    @property
    def base(self) -> str:
        """Link base of what this item's decision creates: trade t-rv<id>, close order pd-rv<id>-c."""
        return f"rv{self.id}"


class Account(Protocol):
    """A live bot as its recovery effects need it (the host's runtime provides it)."""

    trader: Trader
    broker: Broker

    def now(self) -> datetime: ...


class RecoveryPorts(Protocol):
    def account(self, bot_id: str) -> Account | None:
        """The live bot if this process trades it."""
        ...

    async def commit(self, bot_id: str) -> None:
        """Write the trader's ledger events (one transaction each)."""
        ...

    async def resume_halted(self, bot_id: str, actor: str) -> str: ...

    async def promote_model(self, bot_id: str, strategy: str, version: int, actor: str) -> str: ...


class NoSuchOption(ValueError):
    pass


async def perform(item: Item, option: Option, ports: RecoveryPorts, actor: str) -> Effect:
    """Carry out an admin's decision (idempotent: performing it twice does it once)."""
    if option not in OPTIONS[item.kind]:
        raise NoSuchOption(f"{option} is not an option of {item.kind}")
    if option in (Option.IGNORE, Option.KEEP_HALTED, Option.DISMISS):
        return Effect(Outcome.NOTHING, MEANING[option])
    if item.bot_id is None:
        raise NoSuchOption(f"recovery item {item.id} names no bot")
    if item.kind == RecoveryKind.DRAWDOWN_HALT:
        return Effect(Outcome.DONE, await ports.resume_halted(item.bot_id, actor))
    if item.kind == RecoveryKind.ML_PROMOTE:
        strategy, version = item.details.get("strategy"), item.details.get("version")
        if strategy is None or version is None:
            raise NoSuchOption(f"recovery item {item.id} names no model")
        return Effect(Outcome.DONE, await ports.promote_model(item.bot_id, str(strategy), int(version), actor))
    account = ports.account(item.bot_id)
    if account is None:
        return Effect(Outcome.QUEUED, f"bot {item.bot_id} is not traded by this process: the process trading it "
                                      "acts on the decision at its next reconciliation")
    effect = await EXCHANGE_EFFECTS[(item.kind, option)](item, account)
    await ports.commit(item.bot_id)
    return effect


# --- the exchange effects, each checked against the exchange's state now ---------------------------------------
async def _position(account: Account, symbol: str) -> Position | None:
    return next((p for p in await account.broker.positions() if p.symbol == symbol and p.qty > 0), None)


def _held(trader: Trader, trade_id: str) -> OpenTrade | None:
    trade = trader.trades.get(trade_id)
    return trade if trade is not None and trade.status in HELD_STATES else None


def _describe(p: Position) -> str:
    return f"{p.side} {fmt(p.qty)} at {fmt(p.entry_price)}"


async def _unknown_now(item: Item, account: Account) -> Position | Effect:
    d = item.details
    symbol = str(d["symbol"])
    p = await _position(account, symbol)
    was = f"{d.get('side')} {d.get('qty')} at {d.get('entry_price')}"
    if p is None:
        return Effect(Outcome.CHANGED, f"{symbol}: the exchange holds no position any more (it held {was}): "
                                       "nothing done")
    if (p.side, fmt(p.qty), fmt(p.entry_price)) != (d.get("side"), d.get("qty"), d.get("entry_price")):
        return Effect(Outcome.CHANGED, f"{symbol}: the exchange now holds {_describe(p)} (it held {was}): nothing "
                                       "done; the desk looks again")
    other = next((t for t in account.trader.held() if t.record.symbol == symbol and t.base != item.base), None)
    if other is not None:
        return Effect(Outcome.CHANGED, f"{symbol}: the desk now tracks this position as trade {other.record.id}")
    return p


async def _adopt(item: Item, account: Account) -> Effect:
    trader = account.trader
    existing = trader.trades.get(f"t-{item.base}")
    if existing is not None:
        return Effect(Outcome.DONE, f"already adopted as trade {existing.record.id}", existing.record.id)
    found = await _unknown_now(item, account)
    if isinstance(found, Effect):
        return found
    r = trader.adopt(found, item.base, account.now())
    text = (f"{r.symbol}: adopted {r.side} {fmt(r.qty)} at {fmt(r.entry_price)} as trade {r.id} "
            f"(stop-loss {fmt(r.stop_loss) or 'none'}, take-profit {fmt(r.take_profit) or 'none'})")
    follow: list[RecoveryDraft] = []
    if r.stop_loss is None:
        text += ". ⚠️ This position has NO stop-loss and the desk does not invent one: close it or set a stop"
        follow.append(unprotected_draft(r.bot_id, r.id, r.symbol, r.side, r.qty))
    return Effect(Outcome.DONE, text, r.id, qty=r.qty, price=r.entry_price, follow_up=follow)


def unprotected_draft(bot_id: str, trade_id: str, symbol: str, side: str, qty: Decimal) -> RecoveryDraft:
    return RecoveryDraft(
        str(RecoveryKind.UNPROTECTED_POSITION), f"unprotected:{bot_id}:{trade_id}",
        f"{symbol}: trade {trade_id} ({side} {fmt(qty)}) has no stop-loss at the exchange; the desk never invents "
        "one", options_of(RecoveryKind.UNPROTECTED_POSITION),
        {"trade_id": trade_id, "symbol": symbol, "side": side, "qty": fmt(qty)}, critical=False)


async def _send_close(item: Item, account: Account, trade: OpenTrade, qty: Decimal) -> Effect:
    """A reduce-only market close of `qty` under the item's own link id (a second send finds the first)."""
    trader, r = account.trader, trade.record
    link = order_link_id(item.base, "close")
    if trade.status == TradeStatus.CLOSING and trade.close_link != link:
        return Effect(Outcome.DONE, f"{r.symbol}: trade {r.id} is already being closed ({trade.close_link})", r.id)
    intent = trader.begin_close(r.id, link, qty) if trade.status == TradeStatus.OPEN else None
    try:
        state = await account.broker.close(intent) if intent is not None else await account.broker.order(link)
    except OrderRejected as exc:
        trader.on_refused(link, str(exc))
        return Effect(Outcome.FAILED, f"{r.symbol}: the exchange refused the close ({exc}); trade {r.id} stays open",
                      r.id, link, qty)
    if state is not None:
        trader.on_order(state)
    status = state.status if state is not None else "unconfirmed"
    return Effect(Outcome.SENT, f"{r.symbol}: reduce-only market close of {fmt(qty)} sent (order {link}, "
                                f"{status}); its fill closes trade {r.id} at the execution price (reason manual)",
                  r.id, link, qty)


async def _close_unknown(item: Item, account: Account) -> Effect:
    trader = account.trader
    trade = trader.trades.get(f"t-{item.base}")
    if trade is None:
        adopted = await _adopt(item, account)
        if adopted.outcome != Outcome.DONE or adopted.trade_id is None:
            return adopted
        trade = trader.trades[adopted.trade_id]
    return await _send_close(item, account, trade, trade.record.qty)


async def _trade_now(item: Item, account: Account) -> tuple[OpenTrade, Position | None] | Effect:
    """The item's trade, still open, and the exchange's position on its symbol now (an Effect if it closed)."""
    tid, symbol = str(item.details["trade_id"]), str(item.details["symbol"])
    trade = _held(account.trader, tid)
    if trade is None:
        return Effect(Outcome.CHANGED, f"{symbol}: trade {tid} is no longer open: nothing done")
    return trade, await _position(account, symbol)


async def _mismatch_now(item: Item, account: Account) -> tuple[OpenTrade, Position] | Effect:
    d = item.details
    tid, symbol = str(d["trade_id"]), str(d["symbol"])
    found = await _trade_now(item, account)
    if isinstance(found, Effect):
        return found
    trade, p = found
    if p is None or p.side != trade.record.side:
        return Effect(Outcome.CHANGED, f"{symbol}: the exchange holds no {trade.record.side} position any more: "
                                       "nothing done; the desk looks again")
    if fmt(p.qty) != d.get("exchange_qty") or fmt(trade.record.qty) != d.get("desk_qty"):
        return Effect(Outcome.CHANGED, f"{symbol}: the exchange now holds {fmt(p.qty)} and trade {tid} "
                                       f"{fmt(trade.record.qty)} (they were {d.get('exchange_qty')} and "
                                       f"{d.get('desk_qty')}): nothing done; the desk looks again")
    return trade, p


async def _adopt_size(item: Item, account: Account) -> Effect:
    found = await _mismatch_now(item, account)
    if isinstance(found, Effect):
        return found
    trade, p = found
    old = account.trader.adjust_qty(trade.record.id, p.qty)
    return Effect(Outcome.DONE, f"{p.symbol}: trade {trade.record.id} quantity {fmt(old)} → {fmt(p.qty)} (the "
                                "exchange's)", trade.record.id, qty=p.qty)


async def _close_mismatch(item: Item, account: Account) -> Effect:
    trade = account.trader.trades.get(str(item.details["trade_id"]))
    link = order_link_id(item.base, "close")
    if trade is not None and trade.close_link == link:  # performed before (a restart): look, never resend
        return await _send_close(item, account, trade, trade.record.qty)
    found = await _mismatch_now(item, account)
    if isinstance(found, Effect):
        return found
    trade, p = found
    if trade.record.qty != p.qty:
        account.trader.adjust_qty(trade.record.id, p.qty)
    return await _send_close(item, account, trade, p.qty)


async def _close_unprotected(item: Item, account: Account) -> Effect:
    tid, symbol = str(item.details["trade_id"]), str(item.details["symbol"])
    trade = _held(account.trader, tid)
    if trade is None:
        return Effect(Outcome.CHANGED, f"{symbol}: trade {tid} is no longer open: nothing done")
    p = await _position(account, symbol)
    if p is None:
        return Effect(Outcome.CHANGED, f"{symbol}: the exchange holds no position any more: nothing done; the desk "
                                       "looks again")
    return await _send_close(item, account, trade, p.qty)


async def _mark_closed(item: Item, account: Account) -> Effect:
    tid, symbol = str(item.details["trade_id"]), str(item.details["symbol"])
    found = await _trade_now(item, account)
    if isinstance(found, Effect):
        return found
    trade, p = found
    if p is not None and p.side == trade.record.side:
        return Effect(Outcome.CHANGED, f"{symbol}: the exchange holds a {_describe(p)} position again: nothing done; "
                                       "the desk looks again")
    fills = [f for f in await account.broker.executions(account.now() - EXECUTION_LOOKBACK) if f.symbol == symbol]
    if fills:
        last = max(fills, key=lambda f: (f.time, f.seq or 0))
        price, estimated, source = last.price, False, f"the last execution on {symbol} ({last.exec_id})"
    else:
        price, estimated, source = await account.broker.last_price(symbol), True, "an ESTIMATE from the last price"
    r = account.trader.mark_closed(tid, price, account.now(), estimated=estimated)
    return Effect(Outcome.DONE, f"{symbol}: trade {tid} closed at {fmt(price)} ({source}), reason reconciled_manual, "
                                f"net {r.net_pnl:+.2f} USDT", tid, qty=r.qty, price=price, estimated=estimated)


EXCHANGE_EFFECTS: dict[tuple[RecoveryKind, Option], Callable[[Item, Account], Awaitable[Effect]]] = {
    (RecoveryKind.UNKNOWN_POSITION, Option.ADOPT): _adopt,
    (RecoveryKind.UNKNOWN_POSITION, Option.CLOSE_AT_MARKET): _close_unknown,
    (RecoveryKind.SIZE_MISMATCH, Option.ADOPT_EXCHANGE_SIZE): _adopt_size,
    (RecoveryKind.SIZE_MISMATCH, Option.CLOSE_AT_MARKET): _close_mismatch,
    (RecoveryKind.TRADE_WITHOUT_POSITION, Option.MARK_CLOSED): _mark_closed,
    (RecoveryKind.UNPROTECTED_POSITION, Option.CLOSE_AT_MARKET): _close_unprotected,
}

# every option of every kind has an effect: a new option without one fails here, at import
assert all(o in (Option.IGNORE, Option.KEEP_HALTED, Option.DISMISS, Option.RESUME, Option.PROMOTE)
           or (k, o) in EXCHANGE_EFFECTS for k, opts in OPTIONS.items() for o in opts)
