"""What Bybit sends that cannot be used: one error for the public feed, the private stream and REST rows."""

from __future__ import annotations


class BadMessage(ValueError):
    """A message (or REST row) that cannot be used; `kind` names its error counter."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
