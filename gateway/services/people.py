"""People who sign in: matched across single sign-on and SCIM, their role from their groups.

A person is the same person whichever way they arrive: by `external_id` (OIDC `sub`, SCIM
externalId) when one is known, else by their email address (SCIM userName), lower-cased
when it is ASCII (a non-ASCII address is kept as written: case mapping would let a
look-alike such as U+212A KELVIN SIGN stand for a plain `k`). An email never re-links a
person already linked to another external id: that is someone else claiming the address.
Their role is the highest one their groups map to (`roles`: group name -> role), none when
no group maps; a change of role, or deactivation, ends their sessions at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from gateway.auth.sessions import Sessions
from gateway.model import Role
from gateway.runtime.clock import Clock
from gateway.store.base import PeopleDirectory, PersonRow


@dataclass(frozen=True)
class Identity:
    """Who an identity provider says signed in."""

    email: str
    external_id: str | None = None
    display_name: str = ""
    # None: the provider says nothing about groups (Google's ID token has none), so the
    # groups SCIM provisioned, and the role they gave, stand.
    groups: tuple[str, ...] | None = ()


def role_for(groups: Iterable[str], roles: Mapping[str, Role]) -> Role | None:
    """The highest role any of `groups` maps to; None when none maps (no access)."""
    mapped = [roles[group] for group in groups if group in roles]
    return max(mapped) if mapped else None


class IdentityClash(Exception):
    """The email names a person linked to another identity at an identity provider."""


def user_name(email: str) -> str:
    email = email.strip()
    return email.lower() if email.isascii() else email


class People:
    def __init__(self, store: PeopleDirectory, sessions: Sessions, clock: Clock) -> None:
        self.store = store
        self.sessions = sessions
        self.clock = clock

    async def find(self, identity: Identity) -> tuple[PersonRow | None, bool]:
        """The person, and whether the provider's own id matched (not just the email).
        Raises IdentityClash for an email whose person is linked to another id."""
        if identity.external_id:
            person = await self.store.person_by_external_id(identity.external_id)
            if person is not None:
                return person, True
        person = await self.store.person_by_user_name(user_name(identity.email))
        if (person is not None and identity.external_id and person.external_id
                and person.external_id != identity.external_id):
            raise IdentityClash(person.person_id)
        return person, False

    async def signed_in(
        self, identity: Identity, roles: Mapping[str, Role]
    ) -> tuple[PersonRow, PersonRow | None]:
        """The person as the identity provider now describes them, recorded, and as they
        were before (None: first sign-in): their groups and role brought up to date (a
        changed role ends their other sessions). An inactive person stays inactive: the
        caller refuses them. Raises IdentityClash (see `find`), and `Conflict` when a new
        email is another person's."""
        now = self.clock.now()
        known, linked = await self.find(identity)
        if identity.groups is None:
            # Kept only for the same identity (or a provider matched by email alone, as
            # SAML is): a newly linked id inherits no role its own provider did not give.
            kept = known is not None and (linked or identity.external_id is None)
            groups = known.groups if kept and known else ()
            role_name = known.role if kept and known else None
        else:
            groups = identity.groups
            role = role_for(groups, roles)
            role_name = role.name.lower() if role is not None else None
        person = PersonRow(
            person_id=known.person_id if known else secrets.token_hex(16),
            user_name=user_name(identity.email),
            created_at=known.created_at if known else now,
            updated_at=now,
            external_id=identity.external_id or (known.external_id if known else None),
            display_name=identity.display_name or (known.display_name if known else ""),
            active=known.active if known else True,
            groups=tuple(groups),
            role=role_name,
            attributes=known.attributes if known else "{}",
        )
        await self.store.save_person(person)
        if known is not None and known.role != role_name:
            await self.sessions.end_person_sessions(person.person_id)
        return person, known

    async def set_active(self, person_id: str, active: bool) -> PersonRow | None:
        """SCIM's `active`; a deactivated person's sessions end at once."""
        person = await self.store.person(person_id)
        if person is None:
            return None
        changed = replace(person, active=active, updated_at=self.clock.now())
        await self.store.save_person(changed)
        if not active:
            await self.sessions.end_person_sessions(person_id)
        return changed

    async def set_groups(
        self, person_id: str, groups: Iterable[str], roles: Mapping[str, Role]
    ) -> tuple[PersonRow, PersonRow] | None:
        """SCIM group membership: the person's groups and the role they map to, recorded;
        returns the person as now and as before (None: no such person). A changed role
        ends their sessions at once."""
        before = await self.store.person(person_id)
        if before is None:
            return None
        role = role_for(groups, roles)
        role_name = role.name.lower() if role is not None else None
        after = replace(
            before, groups=tuple(groups), role=role_name, updated_at=self.clock.now()
        )
        if (after.groups, after.role) == (before.groups, before.role):
            return before, before
        await self.store.save_person(after)
        if before.role != role_name:
            await self.sessions.end_person_sessions(person_id)
        return after, before
