"""The smsgw.v1 contract only grows: no field, enum value or RPC is removed, renamed or retyped.

The protos are compiled with grpc_tools.protoc into a FileDescriptorSet and compared
with the committed baseline, protos/baseline/smsgw-v1.json: every (message, field
number) there must still have the same name, type and label, every (enum, number) the
same name, every RPC the same request, response and streaming. Additions pass.

A deliberate contract change (a new package, smsgw.v2, per protos/smsgw/v1/events.proto)
or a reviewed addition refreshes the baseline, together with buf's image:

    bash .ci/proto-check.sh --update-baseline
    # or only this file's baseline:
    .venv/bin/python tests/unit/test_proto_contract.py --update-baseline

buf (.ci/proto-check.sh) runs the same idea with its FILE rules, and lint; this test is
the fast check that runs in `make test`.
"""

from __future__ import annotations

import json
import sys
import warnings
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
BASELINE = PROTOS / "baseline" / "smsgw-v1.json"
PACKAGE = "smsgw.v1"
REFRESH = "bash .ci/proto-check.sh --update-baseline"

FDP = descriptor_pb2.FieldDescriptorProto


class ContractGrew(UserWarning):
    """The protos define more than the baseline records (allowed; record it once reviewed)."""


def compile_descriptor_set(out_dir: Path) -> descriptor_pb2.FileDescriptorSet:
    """Every .proto under protos/, compiled by grpc_tools.protoc with their imports."""
    out = out_dir / "smsgw.binpb"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    code = protoc.main(
        ["protoc", f"-I{PROTOS}", f"-I{well_known}", "--include_imports", f"--descriptor_set_out={out}", *sources]
    )
    if code != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with exit code {code} on {sources}")
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    kind = FDP.Type.Name(field.type).removeprefix("TYPE_").lower()
    return f"{kind} {field.type_name.lstrip('.')}" if field.type_name else kind


def _label(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.label == FDP.LABEL_REPEATED:
        return "repeated"
    return "optional" if field.proto3_optional else "singular"  # proto3 `optional`: explicit presence


def _messages(prefix: str, messages, enums_out: dict, messages_out: dict) -> None:
    for message in messages:
        name = f"{prefix}.{message.name}"
        fields = {}
        for field in message.field:
            fields[str(field.number)] = {
                "name": field.name,
                "type": _type_name(field),
                "label": _label(field),
                "oneof": (
                    message.oneof_decl[field.oneof_index].name
                    if field.HasField("oneof_index") and not field.proto3_optional
                    else ""
                ),
            }
        messages_out[name] = fields
        _enums(name, message.enum_type, enums_out)
        _messages(name, message.nested_type, enums_out, messages_out)


def _enums(prefix: str, enums, enums_out: dict) -> None:
    for enum in enums:
        enums_out[f"{prefix}.{enum.name}"] = {str(v.number): v.name for v in enum.value}


def contract_of(descriptor_set: descriptor_pb2.FileDescriptorSet, package: str = PACKAGE) -> dict:
    """The parts of the package that generated code and the wire depend on, as plain data."""
    files: list = []
    messages: dict = {}
    enums: dict = {}
    services: dict = {}
    for file in descriptor_set.file:
        if file.package != package:
            continue  # imports such as google/protobuf/timestamp.proto
        files.append(file.name)
        _messages(package, file.message_type, enums, messages)
        _enums(package, file.enum_type, enums)
        for service in file.service:
            services[f"{package}.{service.name}"] = {
                method.name: {
                    "input": method.input_type.lstrip("."),
                    "output": method.output_type.lstrip("."),
                    "client_streaming": method.client_streaming,
                    "server_streaming": method.server_streaming,
                }
                for method in service.method
            }
    return {"package": package, "files": sorted(files), "messages": messages, "enums": enums, "services": services}


def breaking_changes(baseline: dict, current: dict) -> list[str]:
    """What the current contract removed, renamed or retyped; additions are not listed."""
    problems = []
    for name, fields in baseline["messages"].items():
        now = current["messages"].get(name)
        if now is None:
            problems.append(f"message {name}: removed")
            continue
        for number, was in fields.items():
            field = now.get(number)
            if field is None:
                problems.append(f"{name} field {number} ({was['name']}): removed")
                continue
            for key in ("name", "type", "label", "oneof"):
                if field[key] != was[key]:
                    problems.append(f"{name} field {number} ({was['name']}): {key} {was[key]!r} -> {field[key]!r}")
    for name, values in baseline["enums"].items():
        now = current["enums"].get(name)
        if now is None:
            problems.append(f"enum {name}: removed")
            continue
        for number, was in values.items():
            if number not in now:
                problems.append(f"{name} value {number} ({was}): removed")
            elif now[number] != was:
                problems.append(f"{name} value {number}: renamed {was!r} -> {now[number]!r}")
    for name, methods in baseline["services"].items():
        now = current["services"].get(name)
        if now is None:
            problems.append(f"service {name}: removed")
            continue
        for method, was in methods.items():
            if method not in now:
                problems.append(f"{name}.{method}: removed")
                continue
            for key, value in was.items():
                if now[method][key] != value:
                    problems.append(f"{name}.{method}: {key} {value!r} -> {now[method][key]!r}")
    return problems


def additions(baseline: dict, current: dict) -> list[str]:
    """What the current contract has that the baseline does not record yet."""
    found = []
    for kind, member_kind in (("messages", "field"), ("enums", "value"), ("services", "rpc")):
        for name, members in current[kind].items():
            if name not in baseline[kind]:
                found.append(f"{kind[:-1]} {name}")
                continue
            found += [f"{name} {member_kind} {m}" for m in members if m not in baseline[kind][name]]
    return found


def write_baseline(contract: dict, path: Path = BASELINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(contract, indent=1, sort_keys=True) + "\n")


# --- the contract of this repository -------------------------------------------------


@pytest.fixture(scope="module")
def current(tmp_path_factory) -> dict:
    return contract_of(compile_descriptor_set(tmp_path_factory.mktemp("descriptors")))


@pytest.fixture(scope="module")
def baseline() -> dict:
    if not BASELINE.exists():
        pytest.fail(f"no contract baseline at {BASELINE.relative_to(ROOT)}: create it with `{REFRESH}`")
    return json.loads(BASELINE.read_text())


def test_each_proto_declares_the_package_of_its_folder(tmp_path):
    descriptor_set = compile_descriptor_set(tmp_path)
    for file in descriptor_set.file:
        if file.name.startswith("google/"):
            continue
        assert file.package == str(Path(file.name).parent).replace("/", "."), file.name


def test_no_field_value_or_rpc_is_removed_renamed_or_retyped(baseline, current):
    problems = breaking_changes(baseline, current)
    assert not problems, (
        "breaking changes to the smsgw.v1 contract (fields are only ever added; a breaking "
        "change is a new package, smsgw.v2, and a new topic):\n  " + "\n  ".join(problems)
    )


def test_additions_pass_and_are_reported_until_recorded(baseline, current):
    # Additions are allowed. Until the baseline records them, removing one again would go
    # unnoticed, so they are listed as a warning in the test summary.
    new = additions(baseline, current)
    if new:
        warnings.warn(
            ContractGrew(
                f"smsgw.v1 grew beyond protos/baseline/; once reviewed, record it with `{REFRESH}`: " + ", ".join(new)
            ),
            stacklevel=2,
        )


# --- the checker itself --------------------------------------------------------------


def _contract(fields=None, values=None, methods=None) -> dict:
    return {
        "package": PACKAGE,
        "files": [],
        "messages": {
            "smsgw.v1.M": fields
            if fields is not None
            else {"1": {"name": "id", "type": "string", "label": "singular", "oneof": ""}}
        },
        "enums": {"smsgw.v1.E": values if values is not None else {"0": "E_UNSPECIFIED", "1": "QUEUED"}},
        "services": {
            "smsgw.v1.S": methods
            if methods is not None
            else {
                "Get": {
                    "input": "smsgw.v1.M",
                    "output": "smsgw.v1.M",
                    "client_streaming": False,
                    "server_streaming": False,
                }
            }
        },
    }


def test_checker_allows_additions():
    base = _contract()
    grown = _contract(
        fields={
            "1": base["messages"]["smsgw.v1.M"]["1"],
            "2": {"name": "to", "type": "string", "label": "singular", "oneof": ""},
        },
        values={"0": "E_UNSPECIFIED", "1": "QUEUED", "2": "SENT"},
    )
    grown["messages"]["smsgw.v1.N"] = {}
    assert breaking_changes(base, grown) == []
    assert additions(base, grown) == ["smsgw.v1.M field 2", "message smsgw.v1.N", "smsgw.v1.E value 2"]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"fields": {}}, "smsgw.v1.M field 1 (id): removed"),
        (
            {"fields": {"1": {"name": "key", "type": "string", "label": "singular", "oneof": ""}}},
            "smsgw.v1.M field 1 (id): name 'id' -> 'key'",
        ),
        (
            {"fields": {"1": {"name": "id", "type": "int64", "label": "singular", "oneof": ""}}},
            "smsgw.v1.M field 1 (id): type 'string' -> 'int64'",
        ),
        (
            {"fields": {"1": {"name": "id", "type": "string", "label": "repeated", "oneof": ""}}},
            "smsgw.v1.M field 1 (id): label 'singular' -> 'repeated'",
        ),
        (
            {"fields": {"1": {"name": "id", "type": "string", "label": "singular", "oneof": "choice"}}},
            "smsgw.v1.M field 1 (id): oneof '' -> 'choice'",
        ),
        ({"values": {"0": "E_UNSPECIFIED"}}, "smsgw.v1.E value 1 (QUEUED): removed"),
        ({"values": {"0": "E_UNSPECIFIED", "1": "E_QUEUED"}}, "smsgw.v1.E value 1: renamed 'QUEUED' -> 'E_QUEUED'"),
        ({"methods": {}}, "smsgw.v1.S.Get: removed"),
        (
            {
                "methods": {
                    "Get": {
                        "input": "smsgw.v1.M",
                        "output": "smsgw.v1.M",
                        "client_streaming": False,
                        "server_streaming": True,
                    }
                }
            },
            "smsgw.v1.S.Get: server_streaming False -> True",
        ),
    ],
)
def test_checker_reports_removed_renamed_and_retyped(change, expected):
    assert breaking_changes(_contract(), _contract(**change)) == [expected]


def test_checker_reports_a_removed_message():
    current = _contract()
    del current["messages"]["smsgw.v1.M"]
    assert breaking_changes(_contract(), current) == ["message smsgw.v1.M: removed"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--update-baseline"]:
        sys.exit(f"usage: {sys.argv[0]} --update-baseline   (rewrites {BASELINE.relative_to(ROOT)})")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_baseline(contract_of(compile_descriptor_set(Path(tmp))))
    print(f"wrote {BASELINE.relative_to(ROOT)}")
