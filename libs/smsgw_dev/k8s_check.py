"""`make k8s-check`: renders k8s/base and every overlay with kustomize, as `kubectl apply -k` would,
and validates every object offline: Kubernetes' own kinds against the API schemas of the oldest
Kubernetes the manifests support (kubernetes-validate, strict: a misspelled field is an error),
Strimzi's against deploy/k8s-schemas/ (the fields we use, written here). An object of a kind with
no schema is an error too, so nothing goes unchecked.

    python -m smsgw_dev.k8s_check [KUSTOMIZE_COMMAND...]

kustomize is `$KUSTOMIZE`, else `kustomize` or `kubectl kustomize` on PATH (.ci/k8s-check.sh
builds kustomize with Go when neither is there).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("k8s/base", "k8s/overlays/dev", "k8s/overlays/prod", "the base with every component")
#: k8s/README.md: Kubernetes 1.27 or later (built-in gRPC probes, kustomize 5 in kubectl).
KUBERNETES_VERSION = "1.27.0"
SCHEMAS = ROOT / "deploy" / "k8s-schemas"


def kustomize_command() -> list[str]:
    if os.environ.get("KUSTOMIZE"):
        return [*shlex.split(os.environ["KUSTOMIZE"]), "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise SystemExit(
        "k8s-check: no kustomize: put kustomize (v5) or kubectl (>= 1.27) on PATH, set KUSTOMIZE, "
        "or run .ci/k8s-check.sh, which builds kustomize with Go"
    )


#: Every component on the base: the opt-in ones no overlay uses are checked too.
EVERY_COMPONENT = "the base with every component"


def render(target: str, command: list[str]) -> list[dict[str, Any]]:
    if target == EVERY_COMPONENT:
        # kustomize takes relative paths only: a scratch overlay beside the real ones, removed after.
        with tempfile.TemporaryDirectory(dir=ROOT / "k8s" / "overlays", prefix=".k8s-check-") as scratch:
            components = sorted(p.name for p in (ROOT / "k8s" / "components").iterdir() if p.is_dir())
            (Path(scratch) / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": ["../../base"],
                        "components": [f"../../components/{name}" for name in components],
                    }
                )
            )
            return _render(scratch, command, target)
    return _render(str(ROOT / target), command, target)


def _render(directory: str, command: list[str], target: str) -> list[dict[str, Any]]:
    done = subprocess.run([*command, directory], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"k8s-check: {target} does not render: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema["properties"]
        found[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return found


def problems_of(doc: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in crds:
        validator = jsonschema.Draft202012Validator(crds[key])
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in validator.iter_errors(doc)
        ]
    group = key[0].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):  # a custom resource (Strimzi, KEDA, ...)
        return [f"no schema for {key[0]} {key[1]}: add one to deploy/k8s-schemas/"]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [str(error)]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no Kubernetes {KUBERNETES_VERSION} schema for {key[0]} {key[1]}"]
    return []


def check(command: list[str]) -> list[str]:
    crds = crd_schemas()
    failures = []
    for target in TARGETS:
        docs = render(target, command)
        found = [
            f"{target}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {problem}"
            for doc in docs
            for problem in problems_of(doc, crds)
        ]
        kinds = sorted({d["kind"] for d in docs})
        print(f"{target}: {len(docs)} objects ({', '.join(kinds)}): {'valid' if not found else 'INVALID'}")
        failures += found
    return failures


def main(argv: list[str]) -> int:
    failures = check(argv or kustomize_command())
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
