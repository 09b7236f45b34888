"""The carrier kinds the adapter knows, by the name a carrier's `kind` gives.

Each kind's package (smpp/, twilio/, android/) provides its `CarrierKind` in its `kind.py`: its
name, its configuration model, and how its client is built from a carrier's configuration and the
sink its reports go to. The adapter builds every configured carrier's client through this table;
adding a kind is its package, its `kind.py`, and a line in `KINDS` (and its model in
`carriers.Carrier`, the validated union).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .carrier import CarrierClient, CarrierReports


@dataclass(frozen=True)
class CarrierKind:
    name: str
    config: type[BaseModel]
    #: (a carrier's configuration, of `config`; the sink of its reports) -> its client.
    build: Callable[[Any, CarrierReports], CarrierClient]


class UnknownKind(ValueError):
    pass


def table(kinds: Iterable[CarrierKind]) -> Mapping[str, CarrierKind]:
    by_name: dict[str, CarrierKind] = {}
    for kind in kinds:
        if kind.name in by_name:
            raise ValueError(f"carrier kind {kind.name!r} registered twice")
        by_name[kind.name] = kind
    return by_name


def build_clients(
    carriers: Iterable[Any], kinds: Mapping[str, CarrierKind], reports: CarrierReports
) -> list[CarrierClient]:
    """Every carrier's client, in the order the carriers were configured."""
    clients = []
    for config in carriers:
        kind = kinds.get(config.kind)
        if kind is None:
            raise UnknownKind(f"carrier {config.name!r}: kind {config.kind!r} is not one of {sorted(kinds)}")
        if not isinstance(config, kind.config):
            raise TypeError(f"carrier {config.name!r}: a {type(config).__name__}, not the {kind.name} kind's model")
        clients.append(kind.build(config, reports))
    return clients
