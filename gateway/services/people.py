"""People who sign in: matched across single sign-on and SCIM, their role from their groups.

A person is the same person whichever way they arrive: by `external_id` (OIDC `sub`, SCIM
externalId) when one is known, else by their person key (`user_name`): the one spelling of
their email address that SCIM's userName and every sign-in method are matched by. An email
never re-links a person already linked to another external id: that is someone else
claiming the address. Their role is the highest one their groups map to (`roles`: group
name -> role), none when no group maps; a change of role, or deactivation, ends their
sessions at once.

Each writer changes only the columns it owns (`PersonChanges`): a sign-in never writes
`active` nor what SCIM keeps, SCIM group membership only groups and role, deactivation only
`active`; so a sign-in or a group change racing a deactivation cannot undo it.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import idna

from gateway.auth.sessions import Sessions
from gateway.model import Role
from gateway.runtime.clock import Clock
from gateway.store.base import KEEP, Keep, PeopleDirectory, PersonChanges, PersonRow


@dataclass(frozen=True)
class Identity:
    """Who an identity provider says signed in. `email` as the provider sent it (its person
    key is computed here, the same way SCIM's userName is)."""

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


class InvalidUserName(ValueError):
    """An address that cannot be a person key (see `user_name`): refused, never matched."""


def user_name(address: str) -> str:
    """The person key of an email address (SCIM userName, or an address an identity provider
    sent), as the store keeps and matches it.

    Refused (InvalidUserName): an address with a character Unicode normalisation would
    replace by another, which could stand for someone else's address: compatibility
    characters (fullwidth letters, ligatures: NFKC differs from NFC) and characters NFC
    itself replaces (U+212A KELVIN SIGN becomes K); and a domain that is not a valid
    internationalised domain name. Otherwise: NFC; the domain in its IDNA ASCII form
    (UTS #46, lower case), so `Bücher.example` and `xn--bcher-kva.example` are one domain;
    the local part lower-cased when ASCII, else kept as written (case mapping beyond ASCII
    is what look-alikes exploit). Surrounding white space is not part of it. A userName
    without '@' is keyed as a local part.
    """
    text = address.strip()
    if not text.isascii():
        composed = unicodedata.normalize("NFC", text)
        if unicodedata.normalize("NFKC", text) != composed or any(
            unicodedata.normalize("NFC", char) != char for char in text if not char.isascii()
        ):
            raise InvalidUserName(
                "the address has a compatibility character (such as a fullwidth letter, a "
                "ligature or U+212A KELVIN SIGN) that could stand for another address"
            )
        text = composed
    local, at, domain = text.rpartition("@")
    if not at:
        return _local_part(text)
    return f"{_local_part(local)}@{_domain(domain)}"


def _local_part(local: str) -> str:
    return local.lower() if local.isascii() else local


def _domain(domain: str) -> str:
    """The domain's ASCII form, lower case; an `xn--` label must be what its Unicode form
    encodes to (else it could hide a look-alike the Unicode spelling would refuse)."""
    try:
        if not domain.isascii():
            return idna.encode(domain, uts46=True).decode("ascii")
        domain = domain.lower()
        for label in domain.split("."):
            if label.startswith("xn--") and idna.alabel(idna.ulabel(label)).decode() != label:
                raise InvalidUserName("the domain's xn-- label is not in its canonical form")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidUserName(f"the domain is not a valid domain name ({exc})") from None
    return domain


class People:
    def __init__(self, store: PeopleDirectory, sessions: Sessions, clock: Clock) -> None:
        self.store = store
        self.sessions = sessions
        self.clock = clock

    async def find(self, identity: Identity) -> tuple[PersonRow | None, bool]:
        """The person, and whether the provider's own id matched (not just the email).
        Raises IdentityClash for an email whose person is linked to another id, and
        InvalidUserName for an email that cannot be a person key."""
        key = user_name(identity.email)
        if identity.external_id:
            person = await self.store.person_by_external_id(identity.external_id)
            if person is not None:
                return person, True
        person = await self.store.person_by_user_name(key)
        if (person is not None and identity.external_id and person.external_id
                and person.external_id != identity.external_id):
            raise IdentityClash(person.person_id)
        return person, False

    async def signed_in(
        self, identity: Identity, roles: Mapping[str, Role]
    ) -> tuple[PersonRow, PersonRow | None]:
        """The person as the identity provider now describes them, recorded, and as they
        were before (None: first sign-in): their email, id, name, groups and role brought
        up to date (a changed role ends their other sessions). Both are read in the write's
        own transaction, so the returned person's `active` is the stored flag: an inactive
        person stays inactive, and the caller refuses them. Raises IdentityClash (see
        `find`), InvalidUserName, and `Conflict` when a new email is another person's."""
        key = user_name(identity.email)
        known, linked = await self.find(identity)
        groups: tuple[str, ...] | Keep = KEEP
        role_name: str | Keep | None = KEEP
        if identity.groups is not None:
            groups = tuple(identity.groups)
            role = role_for(groups, roles)
            role_name = role.name.lower() if role is not None else None
        elif known is not None and not linked and identity.external_id is not None:
            # A newly linked id inherits no role its own provider did not give (the same
            # identity, or a provider matched by email alone as SAML is, keeps SCIM's).
            groups, role_name = (), None
        now = self.clock.now()
        if known is not None:
            changed = await self.store.update_person(known.person_id, PersonChanges(
                user_name=key,
                external_id=identity.external_id or KEEP,
                display_name=identity.display_name or KEEP,
                groups=groups,
                role=role_name,
            ), now)
            if changed is not None:
                after, before = changed
                if before.role != after.role:
                    await self.sessions.end_person_sessions(after.person_id)
                return after, before
            # Deleted meanwhile (SCIM): this sign-in is their first again.
        person = PersonRow(
            person_id=secrets.token_hex(16),
            user_name=key,
            created_at=now,
            updated_at=now,
            external_id=identity.external_id,
            display_name=identity.display_name,
            groups=() if isinstance(groups, Keep) else groups,
            role=None if isinstance(role_name, Keep) else role_name,
        )
        await self.store.save_person(person)
        return person, None

    async def set_active(self, person_id: str, active: bool) -> PersonRow | None:
        """SCIM's `active` (or the operator's): only that flag is written; a deactivated
        person's sessions end at once."""
        changed = await self.store.set_person_active(person_id, active, self.clock.now())
        if changed is None:
            return None
        if not active:
            await self.sessions.end_person_sessions(person_id)
        return changed[0]

    async def set_groups(
        self, person_id: str, groups: Iterable[str], roles: Mapping[str, Role]
    ) -> tuple[PersonRow, PersonRow] | None:
        """SCIM group membership: the person's groups and the role they map to, recorded
        (nothing else of theirs is written); returns the person as now and as before (None:
        no such person). A changed role ends their sessions at once."""
        groups = tuple(groups)
        role = role_for(groups, roles)
        changed = await self.store.update_person(person_id, PersonChanges(
            groups=groups, role=role.name.lower() if role is not None else None,
        ), self.clock.now())
        if changed is None:
            return None
        after, before = changed
        if before.role != after.role:
            await self.sessions.end_person_sessions(person_id)
        return after, before
