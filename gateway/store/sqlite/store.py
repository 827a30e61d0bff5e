"""`SqliteStore`: every concern's SQLite methods on one connection (connection.py)."""

from __future__ import annotations

from gateway.store.sqlite.audit import SqliteAuditLog
from gateway.store.sqlite.blocks import SqliteBlockLog
from gateway.store.sqlite.consents import SqliteConsents
from gateway.store.sqlite.contacts import SqliteContactLedger
from gateway.store.sqlite.credentials import SqliteCredentials
from gateway.store.sqlite.decisions import SqliteDecisionLog
from gateway.store.sqlite.deliveries import SqliteDeliveryLedger
from gateway.store.sqlite.groups import SqliteScimGroups
from gateway.store.sqlite.inbound import SqliteInboundMessages
from gateway.store.sqlite.locations import SqliteKnownLocations
from gateway.store.sqlite.people import SqlitePeople
from gateway.store.sqlite.privacy import SqlitePrivacy
from gateway.store.sqlite.resealing import SqliteResealing
from gateway.store.sqlite.suppressions import SqliteSuppressions


class SqliteStore(
    SqliteSuppressions,
    SqliteInboundMessages,
    SqliteCredentials,
    SqlitePeople,
    SqliteScimGroups,
    SqliteConsents,
    SqliteKnownLocations,
    SqliteContactLedger,
    SqliteBlockLog,
    SqliteDecisionLog,
    SqliteDeliveryLedger,
    SqliteAuditLog,
    SqlitePrivacy,
    SqliteResealing,
):
    """`Store` on one SQLite file; several instances (or processes) may share the file."""
