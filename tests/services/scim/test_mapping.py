"""SCIM resources to the gateway's records and back, and the filters the store can answer:
pure functions, no store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from scim2_models import (
    Context,
    InvalidFilterException,
    InvalidValueException,
    SearchRequest,
)

from gateway.services.scim.mapping import (
    Equality,
    equality,
    group_fields,
    group_resource,
    person_fields,
    user_resource,
)
from gateway.services.scim.models import Group, User
from gateway.store.base import GroupRow, PersonRow

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def user(**fields: object) -> User:
    return User.model_validate(
        {"userName": "Katie.Lee@Acme.example", "active": True, **fields},
        scim_ctx=Context.RESOURCE_CREATION_REQUEST,
    )


def test_a_user_becomes_a_person_matched_by_the_lower_cased_user_name() -> None:
    fields = person_fields(user(
        externalId="00u1", displayName="Katie Lee", active=False,
        name={"givenName": "Katie", "familyName": "Lee"},
        emails=[{"value": "katie.lee@acme.example", "type": "work", "primary": True}],
    ))
    assert fields.user_name == "katie.lee@acme.example"
    assert (fields.external_id, fields.display_name, fields.active) == ("00u1", "Katie Lee",
                                                                        False)
    assert json.loads(fields.attributes) == {
        "userName": "Katie.Lee@Acme.example",
        "name": {"givenName": "Katie", "familyName": "Lee"},
        "emails": [{"value": "katie.lee@acme.example", "type": "work", "primary": True}],
    }


def test_a_person_reads_back_as_the_user_that_was_sent_with_their_groups() -> None:
    sent = user(displayName="Katie Lee", name={"givenName": "Katie"},
                emails=[{"value": "katie.lee@acme.example"}], externalId="00u1")
    fields = person_fields(sent)
    person = PersonRow("p1", fields.user_name, T0, T1, fields.external_id, fields.display_name,
                       fields.active, ("sales",), None, fields.attributes)
    read = user_resource(person, [GroupRow("g1", "Sales", T0, T0)])
    assert read.id == "p1"
    assert (read.user_name, read.display_name, read.active, read.external_id) == (
        "Katie.Lee@Acme.example", "Katie Lee", True, "00u1")
    assert read.name == sent.name and read.emails == sent.emails
    assert [(g.value, g.ref, g.display) for g in read.groups] == [("g1", "Groups/g1", "Sales")]
    assert (read.meta.resource_type, read.meta.created, read.meta.last_modified) == (
        "User", T0, T1)


def test_the_user_name_is_the_stored_one_once_single_sign_on_changed_the_address() -> None:
    attributes = json.dumps({"userName": "Katie@Acme.example"})
    assert user_resource(PersonRow("p1", "katie@acme.example", T0, T0, attributes=attributes)
                         ).user_name == "Katie@Acme.example"
    assert user_resource(PersonRow("p1", "katie.lee@acme.example", T0, T0,
                                   attributes=attributes)).user_name == "katie.lee@acme.example"
    # a person who signed in before SCIM knew them: nothing kept, nothing invented
    unknown = user_resource(PersonRow("p2", "omar@acme.example", T0, T0, display_name=""))
    assert (unknown.user_name, unknown.display_name, unknown.groups) == (
        "omar@acme.example", None, None)
    assert user_resource(PersonRow("p3", "x@acme.example", T0, T0, attributes="not json")
                         ).user_name == "x@acme.example"


@pytest.mark.parametrize(("changes", "complaint"), [
    ({"userName": "   "}, "userName"),
    ({"active": None}, "active"),
])
def test_a_user_without_a_user_name_or_active_is_refused(
    changes: dict[str, object], complaint: str
) -> None:
    incomplete = user()
    for key, value in changes.items():
        setattr(incomplete, {"userName": "user_name"}.get(key, key), value)
    with pytest.raises(InvalidValueException, match=complaint):
        person_fields(incomplete)


def group(**fields: object) -> Group:
    return Group.model_validate({"displayName": "compliance-managers", **fields},
                                scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def test_a_group_names_its_members_by_id_each_once() -> None:
    fields = group_fields(group(externalId="okta-g1", members=[
        {"value": "p2"}, {"value": "p1", "type": "User"},
        {"$ref": "https://gw.example.com/scim/v2/Users/p3"}, {"value": "p2"},
    ]))
    assert fields.display_name == "compliance-managers"
    assert fields.external_id == "okta-g1"
    assert fields.members == ("p2", "p1", "p3")


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"members": [{"value": "g9", "type": "Group"}]}, "no nested groups"),
    ({"members": [{"type": "User"}]}, "needs its value"),
    ({"displayName": " "}, "displayName"),
])
def test_a_group_with_a_group_member_or_no_name_is_refused(
    fields: dict[str, object], complaint: str
) -> None:
    with pytest.raises(InvalidValueException, match=complaint):
        group_fields(group(**fields))


def test_a_group_reads_back_with_its_members_as_users() -> None:
    read = group_resource(GroupRow("g1", "Sales", T0, T1, "okta-g1", ("p1", "p2")))
    assert (read.id, read.display_name, read.external_id) == ("g1", "Sales", "okta-g1")
    assert [(m.value, m.ref, m.type) for m in read.members] == [
        ("p1", "Users/p1", "User"), ("p2", "Users/p2", "User")]
    assert group_resource(GroupRow("g2", "Empty", T0, T0)).members is None


def user_search(text: str) -> SearchRequest[User]:
    return SearchRequest[User].model_validate({"filter": text})


@pytest.mark.parametrize(("text", "wanted"), [
    ('userName eq "Katie@Acme.example"', Equality("user_name", "Katie@Acme.example")),
    ('USERNAME eq "k"', Equality("user_name", "k")),
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "k"', Equality("user_name", "k")),
    ('externalId eq "00u1"', Equality("external_id", "00u1")),
])
def test_the_filters_the_store_answers_by_index(text: str, wanted: Equality) -> None:
    assert equality(user_search(text).filter, ("user_name", "external_id")) == wanted


@pytest.mark.parametrize("text", [
    'userName co "katie"', 'userName ne "k"', 'userName sw "k"', 'displayName eq "Katie"',
    'name.givenName eq "Katie"', 'userName eq "a" or userName eq "b"',
    'not (userName eq "a")', 'emails[value eq "k@x.com"]', "userName pr", "active eq true",
])
def test_any_other_filter_is_an_invalid_filter(text: str) -> None:
    with pytest.raises(InvalidFilterException, match='userName eq "…" or externalId eq "…"'):
        equality(user_search(text).filter, ("user_name", "external_id"))


def test_groups_are_filtered_by_display_name() -> None:
    search = SearchRequest[Group].model_validate({"filter": 'displayName eq "Sales"'})
    assert equality(search.filter, ("display_name",)) == Equality("display_name", "Sales")
    assert equality(SearchRequest[Group]().filter, ("display_name",)) is None
