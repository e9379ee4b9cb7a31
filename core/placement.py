"""Which desk process trades which bot, when several run on one database.

Every process computes the same answer from the same inputs (the bots, the live processes, who holds what),
so they agree without talking to each other; the database lease still guarantees one trader per bot while
their views differ for a moment. The rule:

- each process gets at most ceil(bots / processes): a fair share;
- a bot stays with a live holder that is within that share (no move without a reason), a holder over its
  share keeping the bots it ranks highest;
- every other bot goes to the process that ranks it highest among those with room (rendezvous hashing: a
  process joining or leaving moves only the bots it must).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping


def rank(bot_id: str, instance: str) -> int:
    """The rendezvous score of a (bot, process) pair: stable across processes and runs."""
    return int.from_bytes(hashlib.sha256(f"{bot_id}\x00{instance}".encode()).digest()[:8], "big")


def place(bots: Iterable[str], instances: Iterable[str], holders: Mapping[str, str]) -> dict[str, str]:
    """bot id -> the process that should trade it. `holders`: bot id -> the process holding it now."""
    live = sorted(set(instances))
    wanted = sorted(set(bots))
    if not live:
        return {}
    cap = math.ceil(len(wanted) / len(live))
    load: Counter[str] = Counter()
    out: dict[str, str] = {}
    kept = [b for b in wanted if holders.get(b) in live]
    for bot_id in sorted(kept, key=lambda b: (-rank(b, holders[b]), b)):
        holder = holders[bot_id]
        if load[holder] < cap:
            out[bot_id] = holder
            load[holder] += 1
    for bot_id in wanted:
        if bot_id in out:
            continue
        for instance in sorted(live, key=lambda i: (-rank(bot_id, i), i)):
            if load[instance] < cap:
                out[bot_id] = instance
                load[instance] += 1
                break
    return out
