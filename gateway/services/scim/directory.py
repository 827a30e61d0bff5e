"""SCIM provisioning on the gateway's store: scim2-server's protocol handling (validation,
PUT and PATCH semantics, attribute selection, paging, errors) over `ScimDirectory`, which
keeps Users as people and Groups as groups.

What provisioning does to access: a person's role is the highest their groups map to
(`[scim] roles`), recomputed for every member a group change touches (a changed role ends
their sessions); deactivating a person (active=false, by PUT or PATCH) or deleting them
ends their sessions at once. Every change is audited (actor "scim") with ids only.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from scim2_models import (
    InvalidValueException,
    NotFoundException,
    NotImplementedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SearchRequest,
    UniquenessException,
)
from scim2_server.handler import AsyncScimHandler
from scim2_server.service import ScimService
from scim2_server.storage import AsyncScimStorage, SearchPage

from gateway.model import AuditEvent, Role
from gateway.runtime.clock import Clock
from gateway.services.people import People, user_name
from gateway.services.scim.mapping import (
    equality,
    group_fields,
    group_resource,
    person_fields,
    user_resource,
)
from gateway.services.scim.models import MAX_RESULTS, Group, User, scim_provider
from gateway.store.base import Conflict, GroupRow, PersonRow, Store

ACTOR = "scim"
# The store's name of a unique field -> the SCIM attribute (Conflict names the field).
SCIM_NAMES = {"user_name": "userName", "external_id": "externalId", "display_name": "displayName"}


def _new_id() -> str:
    return secrets.token_hex(16)


class ScimDirectory(AsyncScimStorage):
    """Users and Groups in the store. Searches narrow by `userName eq` / `externalId eq`
    (Users) or `displayName eq` (Groups), which the store finds by index; other filters
    are refused (`mapping.equality`)."""

    def __init__(
        self, store: Store, people: People, clock: Clock, roles: Callable[[], Mapping[str, Role]]
    ) -> None:
        self.store = store
        self.people = people
        self.clock = clock
        self.roles = roles

    # -- reads ------------------------------------------------------------------------

    async def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        if resource_type.name == "User":
            person = await self.store.person(resource_id)
            if person is None:
                raise NotFoundException(detail=f"no User {resource_id!r}")
            return await self._user(person)
        group = await self.store.group(resource_id)
        if group is None:
            raise NotFoundException(detail=f"no Group {resource_id!r}")
        return group_resource(group)

    async def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        start = search_request.start_index_0 or 0
        count = search_request.count if search_request.count is not None else MAX_RESULTS
        if len(resource_types) > 1:
            return await self._search_everything(search_request, start, count)
        if resource_types[0].name == "User":
            return await self._search_users(search_request, start, count)
        return await self._search_groups(search_request, start, count)

    async def _search_everything(
        self, search_request: SearchRequest[Any], start: int, count: int
    ) -> SearchPage:
        """A search at the root: the Users, then the Groups, paged as one list."""
        if search_request.filter is not None:
            raise NotImplementedException(detail="filter at /Users or /Groups, not the root")
        _, users = await self.store.people(0, 0)
        people, _ = await self.store.people(start, count) if start < users else ([], users)
        rest = count - len(people)
        groups, total = await self.store.groups(max(start - users, 0), rest)
        return SearchPage(
            users + total,
            [*[await self._user(person) for person in people],
             *[group_resource(group) for group in groups]],
        )

    async def _search_users(
        self, search_request: SearchRequest[Any], start: int, count: int
    ) -> SearchPage:
        wanted = equality(search_request.filter, ("user_name", "external_id"))
        if wanted is not None and wanted.field == "external_id":
            found = await self.store.person_by_external_id(wanted.value)
            people = [found] if found is not None else []
            page, total = people[start:start + count], len(people)
        else:
            page, total = await self.store.people(
                start, count, user_name(wanted.value) if wanted is not None else None
            )
        return SearchPage(total, [await self._user(person) for person in page])

    async def _search_groups(
        self, search_request: SearchRequest[Any], start: int, count: int
    ) -> SearchPage:
        wanted = equality(search_request.filter, ("display_name",))
        page, total = await self.store.groups(
            start, count, wanted.value if wanted is not None else None
        )
        return SearchPage(total, [group_resource(group) for group in page])

    async def _user(self, person: PersonRow) -> User:
        return user_resource(person, await self.store.groups_of_person(person.person_id))

    # -- writes -----------------------------------------------------------------------

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        now = self.clock.now()
        if isinstance(resource, User):
            fields = person_fields(resource)
            person = PersonRow(
                person_id=_new_id(), user_name=fields.user_name, created_at=now, updated_at=now,
                external_id=fields.external_id, display_name=fields.display_name,
                active=fields.active, attributes=fields.attributes,
            )
            await _unique(self.store.save_person(person))
            await self._audit("scim.user.created", person_id=person.person_id)
            return user_resource(person)
        assert isinstance(resource, Group)
        fields = group_fields(resource)
        group = GroupRow(
            group_id=_new_id(), display_name=fields.display_name, created_at=now,
            updated_at=now, external_id=fields.external_id,
            members=await self._people(fields.members),
        )
        await _unique(self.store.save_group(group))
        await self._audit("scim.group.created", group_id=group.group_id,
                          members=len(group.members))
        await self._recompute_roles(group.members)
        return await self.get(resource_type, group.group_id)

    async def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        resource_id = str(resource.id)
        if isinstance(resource, User):
            await self._update_person(resource_id, resource)
        else:
            assert isinstance(resource, Group)
            await self._update_group(resource_id, resource)
        return await self.get(resource_type, resource_id)

    async def _update_person(self, person_id: str, user: User) -> None:
        before = await self.store.person(person_id)
        if before is None:
            raise NotFoundException(detail=f"no User {person_id!r}")
        fields = person_fields(user)
        after = replace(
            before, user_name=fields.user_name, external_id=fields.external_id,
            display_name=fields.display_name, attributes=fields.attributes,
        )
        if after != before:
            await _unique(self.store.save_person(replace(after, updated_at=self.clock.now())))
            await self._audit("scim.user.updated", person_id=person_id)
        if fields.active != before.active:
            # Deactivation goes through People, which ends the person's sessions at once.
            await self.people.set_active(person_id, fields.active)
            action = "scim.user.reactivated" if fields.active else "scim.user.deactivated"
            await self._audit(action, person_id=person_id)

    async def _update_group(self, group_id: str, group: Group) -> None:
        before = await self.store.group(group_id)
        if before is None:
            raise NotFoundException(detail=f"no Group {group_id!r}")
        fields = group_fields(group)
        after = replace(
            before, display_name=fields.display_name, external_id=fields.external_id,
            members=tuple(sorted(await self._people(fields.members, before.members))),
        )
        if after == before:
            return
        await _unique(self.store.save_group(replace(after, updated_at=self.clock.now())))
        old, new = set(before.members), set(after.members)
        await self._audit("scim.group.updated", group_id=group_id, added=len(new - old),
                          removed=len(old - new))
        renamed = before.display_name != after.display_name
        await self._recompute_roles(old | new if renamed else old ^ new)

    async def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        if resource_type.name == "User":
            # The store ends the person's sessions and drops their memberships with them.
            if not await self.store.delete_person(resource_id):
                raise NotFoundException(detail=f"no User {resource_id!r}")
            await self._audit("scim.user.deleted", person_id=resource_id)
            return
        before = await self.store.group(resource_id)
        if before is None or not await self.store.delete_group(resource_id):
            raise NotFoundException(detail=f"no Group {resource_id!r}")
        await self._audit("scim.group.deleted", group_id=resource_id,
                          members=len(before.members))
        await self._recompute_roles(before.members)

    # -- membership and roles ---------------------------------------------------------

    async def _people(
        self, person_ids: tuple[str, ...], known: Iterable[str] = ()
    ) -> tuple[str, ...]:
        """The ids, each naming a person; one that names none is the client's error. The
        `known` members are not looked up again (the store keeps only people anyway)."""
        for person_id in set(person_ids).difference(known):
            if await self.store.person(person_id) is None:
                raise InvalidValueException(detail=f"member {person_id!r} is no User")
        return person_ids

    async def _recompute_roles(self, person_ids: Iterable[str]) -> None:
        """Each person's groups and role as their memberships now stand."""
        roles = self.roles()
        for person_id in sorted(set(person_ids)):
            groups = [group.display_name for group in await self.store.groups_of_person(person_id)]
            changed = await self.people.set_groups(person_id, groups, roles)
            if changed is None:
                continue
            after, before = changed
            if after.role != before.role:
                await self._audit("scim.user.role_changed", person_id=person_id,
                                  role_from=before.role, role_to=after.role)

    async def _audit(self, action: str, **details: object) -> None:
        await self.store.append_audit(
            AuditEvent(time=self.clock.now(), actor=ACTOR, action=action, details=details)
        )


async def _unique(write: Awaitable[None]) -> None:
    """A write that would give two resources one unique value answers 409 uniqueness."""
    try:
        await write
    except Conflict as exc:
        field = SCIM_NAMES.get(str(exc), "userName or externalId")
        raise UniquenessException(detail=f"another resource has this {field}") from exc


def scim_handler(directory: ScimDirectory) -> AsyncScimHandler:
    """The SCIM protocol over `directory`: what the web layer hands each request to."""
    return AsyncScimHandler(ScimService(scim_provider()), directory)
