"""Bots shared out across desk processes: a fair share each, and a process joining or leaving moves only
the bots it must."""

from __future__ import annotations

from collections import Counter

from core.placement import place

BOTS = [f"bot{i}" for i in range(6)]


def _loads(placed: dict[str, str]) -> Counter[str]:
    return Counter(placed.values())


def test_a_fair_share_each_whatever_the_order() -> None:
    placed = place(BOTS, ["a", "b", "c"], {})
    assert sorted(placed) == BOTS and sorted(_loads(placed).values()) == [2, 2, 2]
    assert place(reversed(BOTS), ["c", "a", "b"], {}) == placed  # every process computes the same answer
    assert sorted(_loads(place(BOTS[:5], ["a", "b", "c"], {})).values()) == [1, 2, 2]
    assert place(BOTS, [], {}) == {}


def test_a_joining_process_takes_its_share_and_nothing_else_moves() -> None:
    alone = place(BOTS, ["a"], {})
    assert set(alone.values()) == {"a"}
    two = place(BOTS, ["a", "b"], alone)
    assert _loads(two) == {"a": 3, "b": 3}
    three = place(BOTS, ["a", "b", "c"], two)
    assert _loads(three) == {"a": 2, "b": 2, "c": 2}
    moved = [b for b in BOTS if three[b] != two[b]]
    assert len(moved) == 2 and all(three[b] == "c" for b in moved)


def test_a_leaving_process_hands_on_only_its_own_bots() -> None:
    three = place(BOTS, ["a", "b", "c"], {})
    two = place(BOTS, ["a", "b"], three)
    assert _loads(two) == {"a": 3, "b": 3}
    assert all(two[b] == three[b] for b in BOTS if three[b] != "c")  # the survivors keep theirs
    back = place(BOTS, ["a", "b", "d"], two)  # the killed one restarts (a new process id)
    assert _loads(back) == {"a": 2, "b": 2, "d": 2}
    assert sum(back[b] != two[b] for b in BOTS) == 2


def test_a_holder_that_is_gone_holds_nothing() -> None:
    placed = place(BOTS, ["a", "b"], dict.fromkeys(BOTS, "dead"))
    assert set(placed.values()) == {"a", "b"} and sorted(_loads(placed).values()) == [3, 3]
