"""The one YAML reader (and writer) of lrcn's configs: config files, ``key=value`` override values
and a run's saved ``config.yaml``.

PyYAML's ``safe_load`` is safe from code execution but not from surprises:

- aliases are expanded without bound (a 456-byte "billion laughs" document of nested aliases grew
  to 2.6 GB before a ``MemoryError``): here the composed node graph is measured before anything is
  built, and a document that would expand past ``MAX_NODES`` nodes, nests deeper than
  ``MAX_DEPTH`` or holds a recursive alias is refused;
- a key written twice in a mapping silently kept the last value: here it is refused, naming both
  lines;
- scalars were resolved as YAML 1.1 does (``yes``/``no``/``on``/``off`` booleans, ``1_000``,
  sexagesimal ``1:30``, octal ``010``, ``2024-01-01`` dates): here they are resolved by YAML 1.2's
  core schema, so those stay strings and ``010`` is 10.

Every refusal is a ``Refused`` (a ``yaml.YAMLError``) with the line it concerns; ``load_yaml``
turns it and any syntax error into one ``LrcnError`` sentence naming the file and the fix.
"""

from __future__ import annotations

import collections.abc
import re
import reprlib
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lrcn.errors import LrcnError

MAX_NODES = 10_000  # scalars and collections after alias expansion; the largest config has ~150
MAX_DEPTH = 50  # nesting levels; a config has three
SHOWN_CHARACTERS = 80  # what an error message quotes of a user's value

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
# 0x10 and 0o10: YAML 1.2's core schema reads them as 16 and 8, but in a config an integer written
# in another base is a surprise (010 is 10, 0o10 is 8), so they resolve to this tag and are refused.
_RADIX_INT = "tag:lrcn:radix-int"

_DECIMAL = re.compile(r"^[-+]?[0-9]+$")
_RADIX = re.compile(r"^(?:0x[0-9a-fA-F]+|0o[0-7]+)$")
_FLOAT_NUMBER = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {
    **{
        f"{sign}.{inf}": float(f"{sign or '+'}inf")
        for sign in ("", "+", "-")
        for inf in ("inf", "Inf", "INF")
    },
    **{f".{nan}": float("nan") for nan in ("nan", "NaN", "NAN")},
}
_SPECIAL_FLOAT = re.compile("^(?:" + "|".join(re.escape(k) for k in _SPECIAL_FLOATS) + ")$")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_BOOL_WORD = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_WORD = re.compile(r"^(?:~|null|Null|NULL|)$")

# YAML 1.2 core schema, in resolution order (the first match wins): (tag, pattern, first characters)
_CORE_SCHEMA: list[tuple[str, re.Pattern[str], str]] = [
    (_BOOL, _BOOL_WORD, "tTfF"),
    (_RADIX_INT, _RADIX, "0"),
    (_INT, _DECIMAL, "-+0123456789"),
    (_FLOAT, _FLOAT_NUMBER, "-+.0123456789"),
    (_FLOAT, _SPECIAL_FLOAT, "-+."),
    (_NULL, _NULL_WORD, "~nN"),
]


def core_schema_tag(value: str) -> str:
    """The tag YAML 1.2's core schema gives the plain scalar ``value`` (``0x``/``0o`` integers get
    lrcn's refused radix tag): ``"yes"`` -> str, ``"010"`` -> int, ``"1e-3"`` -> float."""
    for tag, pattern, _ in _CORE_SCHEMA:
        if pattern.match(value):
            return tag
    return _STR


def shown(value: Any) -> str:
    """``repr(value)`` cut to about ``SHOWN_CHARACTERS``, for error messages quoting user input.

    A long string keeps its first characters and says how long it was
    (``'xxxx...'... (5000 characters)``); other values are shortened without being expanded in full.
    """
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARACTERS:
            return repr(value)
        return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value))) if value.bit_length() < 14_000 else None
        if digits is not None and digits <= SHOWN_CHARACTERS:
            return repr(value)
        return f"an integer of {digits or 'over 4000'} digits"
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, SHOWN_CHARACTERS, SHOWN_CHARACTERS
    text = short.repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."


def shown_name(name: str) -> str:
    r"""A user's name (a config key, a dataset) in backticks for messages, a long one cut to its
    first ``SHOWN_CHARACTERS`` (``\`kkkk...\` (1006 characters)``)."""
    if len(name) <= SHOWN_CHARACTERS:
        return f"`{name}`"
    return f"`{name[:SHOWN_CHARACTERS]}...` ({len(name)} characters)"


class Refused(yaml.YAMLError):
    """A document the config loader will not build: ``reason`` says why and what to do instead;
    ``line`` (1-based) is where, or None."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expansion(root: Node, limit: int = MAX_NODES) -> int:
    """Count the nodes ``root`` stands for once every alias is expanded, without expanding them.

    Each node of the composed graph is visited once (an alias is the same node object as its
    anchor), so a billion-laughs document is measured in microseconds. Returns the count.

    Raises:
        Refused: the count passes ``limit``, or an alias refers to a collection containing it.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # visited, their subtrees still being counted
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, counted_children = stack.pop()
        key = id(node)
        if counted_children:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                raise Refused(
                    f"the value starting here holds more than {limit} YAML nodes once its "
                    f"aliases are expanded (a config has a few hundred); write the values out "
                    f"instead of nesting aliases of aliases",
                    _line(node),
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise Refused(
                "an alias refers to a collection that contains it (a recursive value, which no "
                "config key takes); write the value out instead",
                _line(node),
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


class ConfigLoader(yaml.SafeLoader):
    """``SafeLoader`` with bounded alias expansion and nesting, refused duplicate keys and YAML 1.2
    core-schema scalars (see the module's docstring). Use ``load_yaml``."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    yaml_constructors = dict(yaml.SafeLoader.yaml_constructors)

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # noqa: D102
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(
                    f"values are nested more than {MAX_DEPTH} levels deep (a config has three); "
                    "flatten them",
                    self.peek_event().start_mark.line + 1,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:  # noqa: D102
        check_expansion(node)  # before anything is built
        return super().construct_document(node)

    def flatten_mapping(self, node: MappingNode) -> None:
        """No YAML 1.1 merge keys: ``<<`` is an ordinary key (YAML 1.2 has no merge)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping, refusing a key written twice (YAML says keys are unique; PyYAML kept the
        last)."""
        if isinstance(node, MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, collections.abc.Hashable):
                    continue  # PyYAML's own error names it
                if key in first_line:
                    raise Refused(
                        f"the key {shown(key)} appears twice in one mapping (first on line "
                        f"{first_line[key]}); keep one of them",
                        _line(key_node),
                    )
                first_line[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_bool(self, node: ScalarNode) -> bool:  # noqa: D102
        value = self.construct_scalar(node)
        if value not in _BOOLS:
            raise Refused(f"{shown(value)} is not a boolean; write true or false", _line(node))
        return _BOOLS[value]

    def construct_yaml_int(self, node: ScalarNode) -> int:  # noqa: D102
        value = self.construct_scalar(node)
        if _RADIX.match(value):
            return self.construct_radix_int(node)
        if not _DECIMAL.match(value):
            raise Refused(
                f"{shown(value)} is not an integer; write it in decimal digits", _line(node)
            )
        try:
            return int(value)
        except ValueError:  # Python reads at most 4300 digits
            raise Refused(
                f"an integer of {len(value)} digits is longer than any config value needs; "
                "write a smaller number",
                _line(node),
            ) from None

    def construct_radix_int(self, node: ScalarNode) -> NoReturn:  # noqa: D102
        value = self.construct_scalar(node)
        base, name = (16, "a hexadecimal") if value.startswith("0x") else (8, "an octal")
        raise Refused(
            f"{value} is {name} integer; write the decimal number ({int(value[2:], base)}) "
            "instead, or quote it if it is text",
            _line(node),
        )

    def construct_yaml_float(self, node: ScalarNode) -> float:  # noqa: D102
        value = self.construct_scalar(node)
        if value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if not _FLOAT_NUMBER.match(value):
            raise Refused(f"{shown(value)} is not a number; write e.g. 0.001 or 1e-3", _line(node))
        return float(value)


for _tag, _pattern, _first in _CORE_SCHEMA:
    ConfigLoader.add_implicit_resolver(_tag, _pattern, list(_first))
ConfigLoader.add_implicit_resolver(_NULL, _NULL_WORD, [""])  # an empty value is null
ConfigLoader.add_constructor(_BOOL, ConfigLoader.construct_yaml_bool)
ConfigLoader.add_constructor(_INT, ConfigLoader.construct_yaml_int)
ConfigLoader.add_constructor(_RADIX_INT, ConfigLoader.construct_radix_int)
ConfigLoader.add_constructor(_FLOAT, ConfigLoader.construct_yaml_float)
for _tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:merge"):
    ConfigLoader.yaml_constructors.pop(_tag, None)  # not in YAML 1.2's core schema


def parse_yaml(text: str) -> Any:
    """Parse one YAML document with ``ConfigLoader``.

    Raises:
        Refused: a bound, a duplicate key or a hex/octal integer (see ``ConfigLoader``).
        yaml.YAMLError: any other syntax error.
    """
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(text: str, source: str) -> Any:
    """Parse one config YAML document read from ``source`` (a file name, for messages).

    Raises:
        LrcnError: one sentence naming ``source``, the line and the fix.
    """
    try:
        return parse_yaml(text)
    except Refused as exc:
        where = f" line {exc.line}" if exc.line is not None else ""
        raise LrcnError(f"{source}{where}: {exc.reason}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LrcnError(f"{source}{where}: not valid YAML; fix the syntax there.") from None


class ConfigDumper(yaml.SafeDumper):
    """``SafeDumper`` that quotes every string a YAML 1.2 reader (``ConfigLoader``) or a YAML 1.1
    one would read as something else (``"1e-3"``, ``"0x10"``, ``"yes"``), so a saved config reads
    back as it was written, with lrcn or any other tool."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:  # noqa: D102
        if kind is ScalarNode and implicit[0]:
            tag = core_schema_tag(value)
            if tag != _STR:
                return tag
        return super().resolve(kind, value, implicit)


def dump_yaml(data: Any) -> str:
    """``data`` as YAML text that ``load_yaml`` reads back equal, keys in their order."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False)
