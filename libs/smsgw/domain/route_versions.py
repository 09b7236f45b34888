"""The route table as applied at run time: versions folded from RouteTableApplied events (pure).

`smsgw routes apply FILE` (AdminService.ApplyRouteTable) validates a table and appends it to
the admin events (smsgw.account-events.v1) as the next version. intake folds the versions (to
answer GetRouteTable and check MMS), every routing replica folds them too and routes by the
latest: all replicas route alike, a restarted one included, and every version is kept with who
applied it, when and why. Until a first version is applied, each service uses the table of its
configuration (the file's `routes` or SMSGW_ROUTES).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from smsgw.domain import errors as de
from smsgw.domain.route_schema import load_routes
from smsgw.domain.routes import RouteTable
from smsgw.events.envelope import timestamp, to_datetime
from smsgw.v1 import accounts_pb2 as ac


@dataclass(frozen=True)
class RouteTableVersion:
    version: int
    routes_json: str
    table: RouteTable
    comment: str
    source: str
    applied_by: str
    applied_at: datetime | None
    event_id: str = ""

    def to_proto(self) -> ac.RouteTableVersion:
        message = ac.RouteTableVersion(
            version=self.version,
            routes_json=self.routes_json,
            comment=self.comment,
            source=self.source,
            applied_by=self.applied_by,
        )
        if self.applied_at is not None:
            message.applied_at.CopyFrom(timestamp(self.applied_at))
        return message


def validated_routes(routes_json: str) -> tuple[RouteTable, str]:
    """The table and its canonical JSON; InvalidArgument naming every problem (`routes[1].prefix: ...`)."""
    try:
        table = load_routes(routes_json)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_dotted(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise de.InvalidArgument(f"routes_json: {problems}", field="routes_json") from None
    except ValueError as exc:  # not JSON, or a table-wide problem (two routes alike)
        raise de.InvalidArgument(f"routes_json: {exc}", field="routes_json") from None
    return table, json.dumps(json.loads(routes_json), separators=(",", ":"), sort_keys=True)


def _dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class RouteTableVersions:
    def __init__(self) -> None:
        self.versions: list[RouteTableVersion] = []

    @property
    def current(self) -> RouteTableVersion | None:
        return self.versions[-1] if self.versions else None

    @property
    def current_version(self) -> int:
        return self.versions[-1].version if self.versions else 0

    def apply(self, event: ac.AccountEvent) -> RouteTableVersion | None:
        """Folds a RouteTableApplied; the new current version, or None (another kind, or a copy)."""
        if event.WhichOneof("payload") != "route_table_applied":
            return None
        applied = event.route_table_applied
        if applied.version <= self.current_version:
            return None  # read twice (a reader restarted), or a stale apply that lost the race
        try:
            table, canonical = validated_routes(applied.routes_json)
        except de.InvalidArgument:
            # Validated when applied; a table this code cannot read (written by a newer version
            # with conditions it does not know) is skipped, keeping the current one.
            return None
        version = RouteTableVersion(
            version=applied.version,
            routes_json=canonical,
            table=table,
            comment=applied.comment,
            source=applied.source,
            applied_by=event.actor,
            applied_at=to_datetime(event.occurred_at) if event.HasField("occurred_at") else None,
            event_id=event.event_id,
        )
        self.versions.append(version)
        return version

    def next_version(
        self, routes_json: str, *, comment: str, source: str, expected_version: int
    ) -> ac.RouteTableApplied:
        """The event that makes `routes_json` the next version, once validated."""
        _, canonical = validated_routes(routes_json)
        if expected_version and expected_version != self.current_version:
            raise de.RouteTableChanged(
                f"expected_version: the route table is at version {self.current_version}, not {expected_version}; "
                "read it again (smsgw routes show) and apply your change to that one",
                field="expected_version",
                metadata={"current_version": str(self.current_version)},
            )
        return ac.RouteTableApplied(
            version=self.current_version + 1, routes_json=canonical, comment=comment[:500], source=source[:200]
        )
