"""`PostgresStore`: every concern's PostgreSQL methods on one pool (connection.py)."""

from __future__ import annotations

from gateway.store.postgres.audit import PostgresAuditLog
from gateway.store.postgres.blocks import PostgresBlockLog
from gateway.store.postgres.consents import PostgresConsents
from gateway.store.postgres.contacts import PostgresContactLedger
from gateway.store.postgres.credentials import PostgresCredentials
from gateway.store.postgres.decisions import PostgresDecisionLog
from gateway.store.postgres.deliveries import PostgresDeliveryLedger
from gateway.store.postgres.groups import PostgresScimGroups
from gateway.store.postgres.inbound import PostgresInboundMessages
from gateway.store.postgres.locations import PostgresKnownLocations
from gateway.store.postgres.people import PostgresPeople
from gateway.store.postgres.privacy import PostgresPrivacy
from gateway.store.postgres.resealing import PostgresResealing
from gateway.store.postgres.suppressions import PostgresSuppressions


class PostgresStore(
    PostgresSuppressions,
    PostgresInboundMessages,
    PostgresCredentials,
    PostgresPeople,
    PostgresScimGroups,
    PostgresConsents,
    PostgresKnownLocations,
    PostgresContactLedger,
    PostgresBlockLog,
    PostgresDecisionLog,
    PostgresDeliveryLedger,
    PostgresAuditLog,
    PostgresPrivacy,
    PostgresResealing,
):
    """`Store` on a PostgreSQL database through an asyncpg connection pool."""
