"""Whether a selector may match `<html>`, `<head>`, `<body>` or an element of the footer.

A selector "may match" when it does in some state of the page: pseudo-classes of state or
structure, :not() and :has() are taken to match, so a rule counts when it may apply, never
only when it surely does. What stands around the three elements is known (<html> has no
parent and no sibling, <head> and <body> are its children in that order), so compounds
before the subject are matched too; an element of the footer may stand anywhere in the body,
so only its own compound is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from tinycss2.ast import Node

from gateway.rewrite.css_syntax import is_literal, significant, text


@dataclass(frozen=True)
class Target:
    """An element a selector is matched against: `<html>`, `<head>` or `<body>` as parsed
    (`attrs`), or any element of the footer (`attrs` None: any tag, any attribute but the
    class and id it never has)."""

    label: str
    tag: str | None
    attrs: dict[str, str] | None = None
    root: bool = False

    def has_attribute(self, name: str) -> bool:
        if self.attrs is None:
            return name not in ("class", "id")
        return name in self.attrs

    def has_id(self, value: str) -> bool:
        # Compared without case: a document in quirks mode matches ids and classes so.
        return self.attrs is not None and (self.attrs.get("id") or "").lower() == value

    def has_class(self, value: str) -> bool:
        if self.attrs is None:
            return False
        return value in (self.attrs.get("class") or "").lower().split()


def element_target(label: str, attributes: Mapping[str, str | None] | None) -> Target:
    """`<html>`, `<head>` or `<body>` with the attributes the parser gave it (None when the
    document has no such element)."""
    attrs = {name.lower(): value or "" for name, value in (attributes or {}).items()}
    return Target(label, label.strip("<>"), attrs, root=label == "<html>")


FOOTER = Target("the footer", None)


@dataclass
class Compound:
    """The simple selectors of a compound selector that decide what it matches:
    ("type", tag), ("id", v), ("class", v), ("attribute", name), ("is", selectors),
    ("root",), ("nesting",); others (pseudo-classes of state or structure, :not(), :has())
    are taken to match. And the pseudo-elements it selects, if any."""

    simple: list[tuple] = field(default_factory=list)
    pseudo_elements: list[str] = field(default_factory=list)


@dataclass
class Selector:
    """A complex selector: its compounds, and the combinator (" ", ">", "+", "~", "||")
    between each and the next; the last compound is its subject. `written` is shown in a
    problem, so its text is made only then."""

    written: list[Node] | str
    compounds: list[Compound]
    combinators: list[str]

    @property
    def subject(self) -> Compound:
        return self.compounds[-1]

    @cached_property
    def text(self) -> str:
        return self.written if isinstance(self.written, str) else text(self.written).strip()


@dataclass
class Context:
    """The selectors of a style rule, for the rules nested in it (`&`)."""

    selectors: list[Selector]
    parent: Context | None


@dataclass(frozen=True)
class Family:
    """<html>, <head> and <body>, and where each stands."""

    html: Target
    head: Target
    body: Target

    def standing(self, target: Target, combinator: str) -> Target | None:
        """The element that may stand `combinator` before `target` (its parent or an
        ancestor for " " and ">", an earlier sibling for "+" and "~")."""
        if target is self.body:
            return self.html if combinator in (" ", ">") else self.head
        if target is self.head:
            return self.html if combinator in (" ", ">") else None
        return None


Matcher = Callable[[Target], bool]
_LEGACY_PSEUDO_ELEMENTS = frozenset({"before", "after", "first-line", "first-letter"})
_MATCHES_ANY_OF = frozenset({"is", "where", "matches", "any", "-webkit-any", "-moz-any"})
_COMBINATORS = frozenset({">", "+", "~", "||"})


def matcher(context: Context | None, family: Family) -> Matcher:
    """Whether an element may be one that `&` stands for in rules nested in `context`; at
    the top level (where `&` is :scope), any. Each answer is worked out once: rules nested
    in rules of several selectors each would otherwise take exponential time."""
    if context is None:
        return lambda target: True
    parent = matcher(context.parent, family)
    known: dict[str, bool] = {}

    def matches(target: Target) -> bool:
        if target.label not in known:
            known[target.label] = any(
                selects(selector, target, parent, family) for selector in context.selectors
            )
        return known[target.label]

    return matches


def selects(selector: Selector, target: Target, parent: Matcher, family: Family) -> bool:
    """Whether `selector` may select `target` (a pseudo-element's originating element, for
    a selector of a pseudo-element)."""
    if not _may_match(selector.subject, target, parent, family):
        return False
    if target.attrs is None:
        return True
    standing = target
    for compound, combinator in zip(
        reversed(selector.compounds[:-1]), reversed(selector.combinators), strict=True
    ):
        if combinator == "||":
            return True
        before = family.standing(standing, combinator)
        if before is None or not _may_match(compound, before, parent, family):
            return False
        standing = before
    return True


def _may_match(compound: Compound, target: Target, parent: Matcher, family: Family) -> bool:
    for simple in compound.simple:
        kind = simple[0]
        if kind == "type" and target.tag is not None and simple[1] not in ("*", target.tag):
            return False
        if kind == "nesting" and not parent(target):
            return False
        if kind == "id" and not target.has_id(simple[1]):
            return False
        if kind == "class" and not target.has_class(simple[1]):
            return False
        if kind == "attribute" and not target.has_attribute(simple[1]):
            return False
        if kind == "root" and not target.root:
            return False
        if kind == "is" and simple[1] and not any(
            selects(selector, target, parent, family) for selector in simple[1]
        ):
            return False
    return True


def selector_list(nodes: list[Node]) -> list[Selector]:
    """The complex selectors of a rule's prelude (or of :is() and its kin)."""
    selectors = []
    for part in _split_commas(nodes):
        if significant(part):
            compounds, combinators = _complex(part)
            selectors.append(Selector(part, compounds, combinators))
    return selectors


def _split_commas(nodes: list[Node]) -> Iterator[list[Node]]:
    part: list[Node] = []
    for node in nodes:
        if is_literal(node, ","):
            yield part
            part = []
        else:
            part.append(node)
    yield part


def _complex(nodes: list[Node]) -> tuple[list[Compound], list[str]]:
    """A complex selector's compounds and the combinators between them. A combinator at
    the start (a relative selector, nested) or at the end is dropped."""
    nodes = _without_spaces_around(nodes)
    compounds = [Compound()]
    combinators: list[str] = []
    pending = ""  # a combinator read since the last compound
    after_pseudo_element = False
    i = 0
    while i < len(nodes):
        node = nodes[i]
        following = nodes[i + 1] if i + 1 < len(nodes) else None
        if node.type == "whitespace" or (node.type == "literal" and node.value in _COMBINATORS):
            if pending in ("", " "):
                pending = " " if node.type == "whitespace" else node.value
            i += 1
            continue
        if pending:
            if compounds[-1].simple or compounds[-1].pseudo_elements:
                compounds.append(Compound())
                combinators.append(pending)
            pending = ""
            after_pseudo_element = False
        compound = compounds[-1]
        if is_literal(node, ":"):
            if is_literal(following, ":"):
                compound.pseudo_elements.append(
                    _name_of(nodes[i + 2] if i + 2 < len(nodes) else None))
                after_pseudo_element = True
                i += 3
                continue
            name = _name_of(following)
            if name in _LEGACY_PSEUDO_ELEMENTS:
                compound.pseudo_elements.append(name)
                after_pseudo_element = True
            elif not after_pseudo_element:
                if name == "root":
                    compound.simple.append(("root",))
                elif name in _MATCHES_ANY_OF and following is not None \
                        and following.type == "function":
                    compound.simple.append(("is", selector_list(following.arguments)))
            i += 2
            continue
        simple, taken = _simple(node, following)
        if not after_pseudo_element:
            compound.simple += simple
        i += taken
    return compounds, combinators


def _without_spaces_around(nodes: list[Node]) -> list[Node]:
    start, end = 0, len(nodes)
    while start < end and nodes[start].type == "whitespace":
        start += 1
    while end > start and nodes[end - 1].type == "whitespace":
        end -= 1
    return nodes[start:end]


def _name_of(node: Node | None) -> str:
    if node is not None and node.type == "ident":
        return node.value.lower()
    if node is not None and node.type == "function":
        return node.name.lower()
    return ""


def _simple(node: Node, following: Node | None) -> tuple[list[tuple], int]:
    """The simple selector that starts at `node`, and how many nodes it takes."""
    if (node.type == "ident" or is_literal(node, "*")) and is_literal(following, "|"):
        return [], 2  # a namespace prefix: the name follows the bar
    if node.type == "ident":
        return [("type", node.value.lower())], 1
    if node.type == "hash":
        return [("id", node.value.lower())], 1
    if is_literal(node, "&"):
        return [("nesting",)], 1
    if following is not None and following.type == "ident":
        if is_literal(node, "|"):
            return [("type", following.value.lower())], 2
        if is_literal(node, "."):
            return [("class", following.value.lower())], 2
    if node.type == "[] block":
        inside = significant(node.content)
        if len(inside) >= 3 and is_literal(inside[1], "|") and not is_literal(inside[2], "="):
            inside = inside[2:]  # ns|attribute, *|attribute
        elif len(inside) >= 2 and is_literal(inside[0], "|"):
            inside = inside[1:]  # |attribute
        if inside and inside[0].type == "ident":
            return [("attribute", inside[0].value.lower())], 1
    return [], 1
