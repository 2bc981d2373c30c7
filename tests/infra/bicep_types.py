"""The resource bodies of infra/ checked against Azure's own resource types, offline.

No Bicep compiler can be had here, so this does a part of what `bicep build` does with the same
data: the `types.json` files of Azure/bicep-types-az (vendored, for the types and api-versions that
infra/ declares, under tests/fixtures/bicep-types/; see SOURCES there). The templates are parsed
with tree-sitter-bicep, which tells literals from expressions.

For every `resource` declaration (conditional, looped, nested, `existing`, with `parent:`):
- its type@api-version exists (case-insensitively, as Bicep looks types up) and may be written at
  the file's target scope;
- a nested resource's or a `parent:` resource's type is a child of its parent's;
- every property name written is known to the type, recursively through objects, discriminated
  objects, unions and arrays (exact spelling; a case-only difference is reported with the
  spelling the type has);
- no read-only property is written (on an `existing` resource everything except `name`, `scope`
  and `parent` is read-only: it writes nothing);
- a literal value has the kind the type wants (string, int, bool, object, array); a literal
  string of a closed enum (a union of string literals) is one of its values, case-sensitively;
  literal strings, ints and arrays are within the type's length and value bounds;
- a required property is present wherever its object is written as a literal object.

A value that is `null` or an expression (identifier, member access, function call, interpolated
string, ternary, ...) is not judged beyond its key. Decorators, comments, modules' `params` and
`pattern` constraints are not checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TYPES_ROOT = REPO / "tests" / "fixtures" / "bicep-types"

# ObjectTypeProperty flags and resource scopes, as bicep-types defines them.
REQUIRED, READ_ONLY = 1, 2
SCOPES = {"tenant": 1, "managementGroup": 2, "subscription": 4, "resourceGroup": 8}
# Keys Bicep itself adds to every resource body; the types do not list them.
BICEP_KEYS = {"parent", "scope", "dependsOn"}
# All an `existing` resource may set: it is read, never written.
EXISTING_KEYS = {"name", "parent", "scope"}

_COMMENTS = ("comment", "diagnostic_comment")
_ESCAPES = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}
_UNICODE_ESCAPE = re.compile(r"\\u\{([0-9a-fA-F]+)\}")

Json = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    file: str  # relative to the infra directory, e.g. "modules/servicebus.bicep"
    line: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


# --- the vendored types -------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    name: str  # "Microsoft.ServiceBus/namespaces/queues@2024-01-01"
    types: Sequence[Json]  # the types.json it comes from; "#/n" refers to types[n]
    body: Json
    writable_scopes: int
    source: str  # path of that types.json relative to the types root


class TypeIndex:
    """Every ResourceType of the types.json files under a root, by lower-cased type@api-version."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resources: dict[str, ResourceType] = {}
        for path in sorted(root.rglob("types.json")):
            types: list[Json] = json.loads(path.read_text())
            for entry in types:
                if entry.get("$type") != "ResourceType":
                    continue
                key = entry["name"].lower()
                if key not in self.resources:
                    self.resources[key] = ResourceType(
                        entry["name"],
                        types,
                        resolve(types, entry["body"]),
                        int(entry.get("writableScopes", 0)),
                        str(path.relative_to(root)),
                    )

    def get(self, type_name: str, api_version: str) -> ResourceType | None:
        return self.resources.get(f"{type_name}@{api_version}".lower())

    def versions_of(self, type_name: str) -> list[str]:
        prefix = f"{type_name.lower()}@"
        return sorted(key.split("@", 1)[1] for key in self.resources if key.startswith(prefix))


def resolve(types: Sequence[Json], reference: Json) -> Json:
    ref = reference["$ref"]
    if not ref.startswith("#/"):
        raise ValueError(f"a reference outside its file is not supported: {ref}")
    return types[int(ref[2:])]


@cache
def vendored_types(root: Path = TYPES_ROOT) -> TypeIndex:
    return TypeIndex(root)


# --- the templates ------------------------------------------------------------------------------


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def parse(source: bytes) -> Node:
    return _parser().parse(source).root_node


def line_of(node: Node) -> int:
    return node.start_point[0] + 1


def literal_string(node: Node) -> str | None:
    """The value of a string literal without interpolation, else None."""
    if node.type != "string":
        return None
    parts: list[str] = []
    for child in node.named_children:
        text = (child.text or b"").decode()
        if child.type == "string_content":
            parts.append(text)
        elif child.type == "escape_sequence":
            unicode = _UNICODE_ESCAPE.fullmatch(text)
            parts.append(chr(int(unicode[1], 16)) if unicode else _ESCAPES.get(text[1:], text))
        else:  # interpolation
            return None
    return "".join(parts)


def literal_int(node: Node) -> int | None:
    if node.type == "number":
        return int((node.text or b"").decode())
    if node.type == "unary_expression" and len(node.named_children) == 1:
        inner = literal_int(node.named_children[0])
        operator = node.child_by_field_name("operator")
        if inner is not None and operator is not None and operator.text == b"-":
            return -inner
    return None


def kind_of(node: Node) -> str:
    """ "string", "int", "bool", "null", "object", "array" for a literal; "expression" otherwise."""
    if literal_string(node) is not None:
        return "string"
    if literal_int(node) is not None:
        return "int"
    return {"boolean": "bool", "null": "null", "object": "object", "array": "array"}.get(
        node.type, "expression"
    )


@dataclass
class Entry:
    """One `key: value` of an object literal."""

    key: str | None  # None: the key is an interpolated string
    key_node: Node
    value: Node


@dataclass
class ObjectLiteral:
    entries: list[Entry] = field(default_factory=list)
    nested: list[Node] = field(default_factory=list)  # resource declarations inside a body
    closed: bool = True  # every key is known (no interpolated key, no spread)


def object_literal(node: Node) -> ObjectLiteral:
    result = ObjectLiteral()
    for child in node.named_children:
        if child.type in _COMMENTS or child.type == "decorators":
            continue
        if child.type != "object_property":
            result.closed = False  # a spread (`...x`) or anything this grammar adds later
            continue
        named = [c for c in child.named_children if c.type not in (*_COMMENTS, "decorators")]
        if len(named) == 1 and named[0].type == "resource_declaration":
            result.nested.append(named[0])
            continue
        if len(named) != 2:
            result.closed = False
            continue
        key_node, value = named
        key = (
            literal_string(key_node)
            if key_node.type == "string"
            else ((key_node.text or b"").decode())
        )
        if key is None:
            result.closed = False
        result.entries.append(Entry(key, key_node, value))
    return result


@dataclass(frozen=True)
class Declaration:
    """A `resource` declaration: its symbol, full type, api-version and body (an object node)."""

    symbol: str
    type_name: str | None  # None: the type string is not a literal of the form type@version
    api_version: str | None
    existing: bool
    node: Node
    body: Node | None  # None: the body is not an object literal
    parent: Declaration | None  # the enclosing declaration of a nested resource


def body_of(value: Node) -> Node | None:
    """The object of `= {...}`, `= if (...) {...}`, `= [for ...: {...}]`, `= [for ...: if ...]`."""
    if value.type == "object":
        return value
    if value.type == "if_statement":
        objects = [c for c in value.named_children if c.type == "object"]
        return objects[0] if objects else None
    if value.type == "for_statement":
        body = value.child_by_field_name("body")
        return body_of(body) if body is not None else None
    return None


def declarations(nodes: Iterable[Node], parent: Declaration | None = None) -> Iterator[Declaration]:
    """Every resource declaration among nodes and nested in them, nested ones after their parent."""
    for child in nodes:
        if child.type != "resource_declaration":
            continue
        named = [c for c in child.named_children if c.type not in _COMMENTS]
        symbol = (named[0].text or b"").decode()
        type_text = literal_string(named[1])
        existing = any(c.type == "existing" for c in child.children)
        body = body_of(named[-1])
        type_name = api_version = None
        if type_text is not None:
            type_name, _, api_version = type_text.partition("@")
            if parent is not None and "/" not in type_name:
                # A nested child names its last segment only, and may leave out its api-version.
                if parent.type_name is None:
                    type_name = None
                else:
                    type_name = f"{parent.type_name}/{type_name}"
                    api_version = api_version or parent.api_version
        declaration = Declaration(
            symbol, type_name or None, api_version or None, existing, child, body, parent
        )
        yield declaration
        if body is not None:
            yield from declarations(object_literal(body).nested, declaration)


def target_scope(root: Node) -> str:
    for child in root.named_children:
        if child.type == "target_scope_assignment":
            values = [literal_string(c) for c in child.named_children if c.type == "string"]
            if values and values[0]:
                return values[0]
    return "resourceGroup"


# --- the check ----------------------------------------------------------------------------------


@dataclass
class Checker:
    """Checks values against the types of one types.json; findings start with `where`."""

    file: str
    where: str
    types: Sequence[Json]
    findings: list[Finding] = field(default_factory=list)

    def report(self, node: Node, message: str) -> None:
        self.findings.append(Finding(self.file, line_of(node), f"{self.where}: {message}"))

    def ref(self, reference: Json) -> Json:
        return resolve(self.types, reference)

    # A value against a type.
    def value(self, node: Node, type_: Json, path: str) -> None:
        kind = kind_of(node)
        tag = type_["$type"]
        if kind in ("expression", "null") or tag == "AnyType":
            return
        if tag in ("UnionType", "StringLiteralType"):
            members = [self.ref(e) for e in type_["elements"]] if tag == "UnionType" else [type_]
            self.union(node, members, path)
            return
        wanted = _KIND_OF_TYPE.get(tag)
        if wanted is None or not self.expect(node, kind, wanted, path):
            return
        if tag == "StringType":
            self.string_bounds(node, type_, path)
        elif tag == "IntegerType":
            self.int_bounds(node, type_, path)
        elif tag == "ArrayType":
            self.array(node, type_, path)
        elif tag in ("ObjectType", "DiscriminatedObjectType"):
            self.object(node, type_, path)

    def expect(self, node: Node, kind: str, wanted: str, path: str) -> bool:
        if kind != wanted:
            self.report(node, f"{path}: a literal {kind} where the type wants {wanted}")
            return False
        return True

    def string_bounds(self, node: Node, type_: Json, path: str) -> None:
        text = literal_string(node) or ""
        low, high = type_.get("minLength"), type_.get("maxLength")
        if (low is not None and len(text) < low) or (high is not None and len(text) > high):
            self.report(
                node, f"{path}: '{text}' is {len(text)} characters long, outside [{low}, {high}]"
            )

    def int_bounds(self, node: Node, type_: Json, path: str) -> None:
        number = literal_int(node)
        low, high = type_.get("minValue"), type_.get("maxValue")
        if number is not None and (
            (low is not None and number < low) or (high is not None and number > high)
        ):
            self.report(node, f"{path}: {number} is outside [{low}, {high}]")

    def array(self, node: Node, type_: Json, path: str) -> None:
        items = [c for c in node.named_children if c.type not in _COMMENTS]
        low, high = type_.get("minLength"), type_.get("maxLength")
        if (low is not None and len(items) < low) or (high is not None and len(items) > high):
            self.report(node, f"{path}: {len(items)} items, outside [{low}, {high}]")
        item_type = self.ref(type_["itemType"])
        for index, item in enumerate(items):
            self.value(item, item_type, f"{path}[{index}]")

    def union(self, node: Node, members: list[Json], path: str) -> None:
        kind = kind_of(node)
        tags = {m["$type"] for m in members}
        if "AnyType" in tags:
            return
        if kind == "string":
            text = literal_string(node)
            if "StringType" in tags:
                return
            allowed = [m["value"] for m in members if m["$type"] == "StringLiteralType"]
            if not allowed:
                self.report(
                    node,
                    f"{path}: a literal string where the type wants "
                    f"{' or '.join(sorted(_kind_names(tags)))}",
                )
            elif text not in allowed:
                hint = [v for v in allowed if v.lower() == (text or "").lower()]
                self.report(
                    node,
                    f"{path}: '{text}' is not one of the allowed values"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + f": {', '.join(repr(v) for v in allowed)}",
                )
            return
        candidates = [m for m in members if _accepts_kind(m, kind)]
        if not candidates:
            self.report(
                node,
                f"{path}: a literal {kind} where the type wants "
                f"{' or '.join(sorted(_kind_names(tags)))}",
            )
            return
        # The first candidate the value satisfies wins; if none does, the closest one's findings.
        best: list[Finding] | None = None
        for candidate in candidates:
            trial = Checker(self.file, self.where, self.types)
            trial.value(node, candidate, path)
            if not trial.findings:
                return
            if best is None or len(trial.findings) < len(best):
                best = trial.findings
        self.findings.extend(best or [])

    # Objects.
    def object(self, node: Node, type_: Json, path: str) -> None:
        literal = object_literal(node)
        self.duplicates(literal, path)
        if type_["$type"] == "DiscriminatedObjectType":
            self.discriminated(node, literal, type_, path)
            return
        self.properties(node, literal, type_["properties"], type_.get("additionalProperties"), path)

    def duplicates(self, literal: ObjectLiteral, path: str) -> None:
        seen: set[str] = set()
        for entry in literal.entries:
            if entry.key is None:
                continue
            if entry.key.lower() in seen:
                self.report(entry.key_node, f"{_join(path, entry.key)}: written twice")
            seen.add(entry.key.lower())

    def discriminated(self, node: Node, literal: ObjectLiteral, type_: Json, path: str) -> None:
        discriminator: str = type_["discriminator"]
        base: Json = type_.get("baseProperties", {})
        elements: dict[str, Json] = {k: self.ref(v) for k, v in type_["elements"].items()}
        chosen = next((e for e in literal.entries if e.key == discriminator), None)
        if chosen is None:
            if literal.closed:
                self.report(
                    node,
                    f"{_join(path, discriminator)}: required, missing (one of "
                    f"{', '.join(repr(v) for v in elements)})",
                )
            return
        value = literal_string(chosen.value)
        if value is None:
            # Not a literal: which variant applies is unknown; a key is known if any variant has it.
            known: dict[str, Json] = dict(base)
            for element in elements.values():
                known.update(element["properties"])
            for entry in literal.entries:
                bicep_key = not path and entry.key in BICEP_KEYS
                if entry.key is not None and entry.key not in known and not bicep_key:
                    self.unknown(entry, known, path)
            return
        if value not in elements:
            hint = [v for v in elements if v.lower() == value.lower()]
            self.report(
                chosen.value,
                f"{_join(path, discriminator)}: '{value}' is not one of "
                "the allowed values"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f": {', '.join(repr(v) for v in elements)}",
            )
            return
        element = elements[value]
        self.properties(
            node,
            literal,
            {**base, **element["properties"]},
            element.get("additionalProperties"),
            path,
        )

    def properties(
        self,
        node: Node,
        literal: ObjectLiteral,
        properties: Json,
        additional: Json | None,
        path: str,
    ) -> None:
        for entry in literal.entries:
            if entry.key is None:
                if additional is not None:
                    self.value(entry.value, self.ref(additional), f"{path}[*]")
                continue
            where = _join(path, entry.key)
            if not path and entry.key in BICEP_KEYS:  # the top of a resource body
                continue
            declared = properties.get(entry.key)
            if declared is None:
                if additional is not None:
                    self.value(entry.value, self.ref(additional), where)
                else:
                    self.unknown(entry, properties, path)
                continue
            if declared["flags"] & READ_ONLY:
                self.report(entry.key_node, f"{where}: read-only, cannot be written")
                continue
            self.value(entry.value, self.ref(declared["type"]), where)
        if literal.closed:
            written = {entry.key for entry in literal.entries}
            for name, declared in properties.items():
                flags = declared["flags"]
                if flags & REQUIRED and not flags & READ_ONLY and name not in written:
                    self.report(node, f"{_join(path, name)}: required, missing")

    def unknown(self, entry: Entry, known: Mapping[str, Any], path: str) -> None:
        key = entry.key or ""
        same = [name for name in known if name.lower() == key.lower()]
        if same:
            message = f"{_join(path, key)}: the type spells it '{same[0]}'"
        else:
            message = f"{_join(path, key)}: not a property of this type"
        self.report(entry.key_node, message)


_KIND_OF_TYPE = {
    "StringType": "string",
    "StringLiteralType": "string",
    "IntegerType": "int",
    "BooleanType": "bool",
    "ArrayType": "array",
    "ObjectType": "object",
    "DiscriminatedObjectType": "object",
}


def _kind_names(tags: set[str]) -> set[str]:
    return {_KIND_OF_TYPE.get(tag, tag) for tag in tags}


def _accepts_kind(type_: Json, kind: str) -> bool:
    return kind in _kind_names({type_["$type"]})


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_source(file: str, source: bytes, index: TypeIndex) -> list[Finding]:
    """The findings for one Bicep file (`file` names it in the findings)."""
    root = parse(source)
    findings: list[Finding] = []
    if root.has_error:
        findings.extend(Finding(file, line_of(n), "does not parse") for n in _errors(root))
        return findings
    scope = target_scope(root)
    by_symbol: dict[str, Declaration] = {}
    all_declarations = list(declarations(root.named_children))
    for declaration in all_declarations:
        by_symbol.setdefault(declaration.symbol, declaration)
    for declaration in all_declarations:
        findings.extend(check_declaration(file, declaration, index, scope, by_symbol))
    return findings


def check_declaration(
    file: str,
    declaration: Declaration,
    index: TypeIndex,
    scope: str,
    by_symbol: Mapping[str, Declaration],
) -> list[Finding]:
    node = declaration.node
    where = f"resource {declaration.symbol}"
    if declaration.type_name is None or declaration.api_version is None:
        return [Finding(file, line_of(node), f"{where}: the type is not a literal 'type@version'")]
    full = f"{declaration.type_name}@{declaration.api_version}"
    resource = index.get(declaration.type_name, declaration.api_version)
    if resource is None:
        known = index.versions_of(declaration.type_name)
        return [
            Finding(
                file,
                line_of(node),
                f"{where}: no type {full} in the vendored types"
                + (f" (vendored versions: {', '.join(known)})" if known else ""),
            )
        ]
    checker = Checker(file, f"{where} ({full})", resource.types)
    if declaration.body is None:
        return checker.findings
    literal = object_literal(declaration.body)
    keys = {entry.key for entry in literal.entries}
    parent = declaration.parent
    parent_entry = next((e for e in literal.entries if e.key == "parent"), None)
    if parent_entry is not None and parent_entry.value.type == "identifier":
        parent = by_symbol.get((parent_entry.value.text or b"").decode(), parent)
    if parent is not None and parent.type_name is not None:
        head, _, last = declaration.type_name.rpartition("/")
        if head.lower() != parent.type_name.lower() or not last:
            checker.report(
                parent_entry.value if parent_entry else node,
                f"not a child type of its parent {parent.symbol} ({parent.type_name})",
            )
    if declaration.existing:
        for entry in literal.entries:
            if entry.key is not None and entry.key not in EXISTING_KEYS | {"dependsOn"}:
                checker.report(
                    entry.key_node,
                    f"{entry.key}: an existing resource writes "
                    "nothing (it takes name, scope and parent only)",
                )
        if literal.closed and "name" not in keys:
            checker.report(node, "name: required, missing")
        return checker.findings
    if resource.writable_scopes == 0:
        checker.report(node, "this type can only be referenced as existing")
    elif (
        parent is None
        and scope in SCOPES
        and "scope" not in keys
        and not resource.writable_scopes & SCOPES[scope]
    ):
        checker.report(node, f"this type cannot be deployed at {scope} scope")
    checker.object(declaration.body, resource.body, "")
    return checker.findings


def _errors(node: Node) -> Iterator[Node]:
    if node.is_error or node.is_missing:
        yield node
        return
    for child in node.children:
        if child.has_error or child.is_missing:
            yield from _errors(child)


def check_directory(infra: Path = INFRA, index: TypeIndex | None = None) -> list[Finding]:
    """The findings for every .bicep file under a directory, paths relative to it."""
    index = index or vendored_types()
    findings: list[Finding] = []
    for path in sorted(infra.rglob("*.bicep")):
        findings.extend(check_source(str(path.relative_to(infra)), path.read_bytes(), index))
    return findings


def declared_types(infra: Path = INFRA) -> set[str]:
    """Every type@api-version the .bicep files under a directory declare."""
    found: set[str] = set()
    for path in sorted(infra.rglob("*.bicep")):
        for declaration in declarations(parse(path.read_bytes()).named_children):
            if declaration.type_name and declaration.api_version:
                found.add(f"{declaration.type_name}@{declaration.api_version}")
    return found


if __name__ == "__main__":
    for finding in check_directory():
        print(finding)
