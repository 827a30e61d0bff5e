"""The store's failure every caller fails closed on, apart from the store's interfaces so the
sealing layer can raise it too."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store could not answer; nothing may be sent on the strength of a missing fact."""
