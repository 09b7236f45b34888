"""The platform's configuration file (smsgw.yaml): one document for what the services are told.

Sections: `carriers` (carrier-adapter), `routes` (routing, and intake for MMS), `numbers` and
`receipt_policies` (receipt), `carrier_health` (routing). A section replaces the SMSGW_*
variable of the same name, which must then be left unset (two sources of one table would be a
question of which one wins). Settings that are not tables (ports, brokers, TLS files) stay in
SMSGW_* variables; secrets stay in files (a section holds no secret but the SMPP password,
which carrier-adapter masks in every log and error).

Each section is validated by the code that uses it, found through the `smsgw.config_sections`
entry points (a library names no service); `smsgw config check FILE` runs all of them and
prints each problem with its line and column (`smsgw.yaml:14:9: routes[1].prefix: ...`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

SECTIONS_ENTRY_POINTS = "smsgw.config_sections"

#: A section's loader: the section's value (plain YAML data) in, the service's object out;
#: raises pydantic's ValidationError (locations relative to the section's value) or ValueError.
SectionLoader = Callable[[Any], Any]


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based
    column: int  # 1-based
    where: str  # "routes[1].prefix"
    message: str

    def render(self, path: str) -> str:
        return (
            f"{path}:{self.line}:{self.column}: {self.where}: {self.message}"
            if self.where
            else (f"{path}:{self.line}:{self.column}: {self.message}")
        )


class ConfigFileError(ValueError):
    """The file cannot be used: every problem found, each with its line."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(p.render(path) for p in problems))


class ConfigDocument:
    """A parsed configuration file and where each value sits in it."""

    def __init__(self, path: str, data: dict[str, Any], root: yaml.MappingNode | None) -> None:
        self.path = path
        self.data = data
        self._root = root

    def __contains__(self, section: str) -> bool:
        return section in self.data

    def position(self, loc: tuple[str | int, ...]) -> tuple[int, int]:
        """Line and column of the value at `loc`, or of the nearest enclosing value the file has
        (a missing key is reported where its mapping is)."""
        node: yaml.Node | None = self._root
        if node is None:
            return 1, 1
        for part in loc:
            child = _child(node, part)
            if child is not None:
                node = child
        return node.start_mark.line + 1, node.start_mark.column + 1

    def resolved(self, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
        """`loc` without the parts pydantic adds that are not keys of the file (the tag of a
        tagged union, a union member's type): the last part stays (it may be a missing key)."""
        node: yaml.Node | None = self._root
        kept: list[str | int] = []
        for index, part in enumerate(loc):
            child = _child(node, part) if node is not None else None
            if child is not None:
                node = child
                kept.append(part)
            elif index == len(loc) - 1:
                kept.append(part)
        return tuple(kept)

    def problems_of(self, section: str, loader: SectionLoader) -> list[Problem]:
        try:
            loader(self.data[section])
        except ValidationError as exc:
            return [self._problem((section,), error) for error in exc.errors(include_url=False, include_input=False)]
        except ValueError as exc:
            line, column = self.position((section,))
            return [Problem(line, column, section, str(exc))]
        return []

    def load(self, section: str, loader: SectionLoader) -> Any:
        """The section made into the service's object; ConfigFileError naming lines if it cannot be."""
        problems = self.problems_of(section, loader)
        if problems:
            raise ConfigFileError(self.path, problems)
        return loader(self.data[section])

    def _problem(self, prefix: tuple[str, ...], error: Any) -> Problem:
        loc = self.resolved(prefix + tuple(error["loc"]))
        line, column = self.position(loc)
        return Problem(line, column, _dotted(loc), error["msg"].removeprefix("Value error, "))


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part or (isinstance(part, int) and key.value == str(part)):
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]
    return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} given twice (first at line {first.line + 1})", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read(path: str | Path) -> ConfigDocument:
    """Parses the file; ConfigFileError (with the line) when it is not a YAML mapping."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigFileError(name, [Problem(1, 1, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigFileError(name, [Problem(line, column, "", f"not valid YAML: {exc.problem}")]) from None
    if data is None:
        data, root = {}, None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode | None):
        raise ConfigFileError(
            name, [Problem(1, 1, "", "the file must be a mapping of sections (carriers:, routes:, ...)")]
        )
    return ConfigDocument(name, data, root)


def section_loaders() -> dict[str, SectionLoader]:
    """Every section a service reads, by name (the installed `smsgw.config_sections` entry points)."""
    return {ep.name: ep.load() for ep in importlib.metadata.entry_points(group=SECTIONS_ENTRY_POINTS)}


def check(path: str | Path) -> tuple[ConfigDocument | None, list[Problem]]:
    """Every problem of the file: unknown sections, each section's own, and references between them."""
    try:
        document = read(path)
    except ConfigFileError as exc:
        return None, exc.problems
    loaders = section_loaders()
    problems: list[Problem] = []
    for section in document.data:
        if section not in loaders:
            line, column = document.position((section,))
            known = ", ".join(sorted(loaders))
            problems.append(Problem(line, column, str(section), f"unknown section; the sections are {known}"))
            continue
        problems += document.problems_of(section, loaders[section])
    if not problems:
        problems += _unknown_carriers(document)
    return document, sorted(problems, key=lambda p: (p.line, p.column))


def _unknown_carriers(document: ConfigDocument) -> list[Problem]:
    """A route (or a receipt policy) naming a carrier the `carriers` section does not declare."""
    carriers = document.data.get("carriers")
    if not isinstance(carriers, list):
        return []
    declared = {str(c.get("name")) for c in carriers if isinstance(c, dict)}
    problems = []
    for index, route in enumerate(document.data.get("routes") or []):
        entries = [route["carrier"]] if route.get("carrier") else route.get("carriers", [])
        for position, entry in enumerate(entries):
            name = entry if isinstance(entry, str) else entry.get("carrier")
            if name not in declared:
                loc: tuple[str | int, ...] = (
                    ("routes", index, "carrier") if route.get("carrier") else ("routes", index, "carriers", position)
                )
                line, column = document.position(loc)
                problems.append(
                    Problem(
                        line,
                        column,
                        _dotted(loc),
                        f"carrier {name!r} is not in `carriers` ({', '.join(sorted(declared))})",
                    )
                )
    policies = (document.data.get("receipt_policies") or {}).get("carriers") or {}
    for name in policies:
        if name not in declared:
            loc = ("receipt_policies", "carriers", name)
            line, column = document.position(loc)
            problems.append(Problem(line, column, _dotted(loc), f"carrier {name!r} is not in `carriers`"))
    return problems
