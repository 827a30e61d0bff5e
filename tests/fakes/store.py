"""The real store with an outage switch."""

from __future__ import annotations

from gateway.store.base import StoreUnavailable


class FlakyStore:
    """The real store, with a switch that makes every call fail as an outage would."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("open", "close"):
            return attribute

        async def call(*args: object, **kwargs: object) -> object:
            if self.down:
                raise StoreUnavailable("injected outage")
            return await attribute(*args, **kwargs)

        return call
