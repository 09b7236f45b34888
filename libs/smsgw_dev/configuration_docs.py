"""docs/configuration.md, written from the services' settings models: every SMSGW_* variable a
service reads is a field of one of them, so the page cannot forget one or keep one that is gone
(tests/unit/test_configuration_docs.py fails when the page and the models differ).

    python -m smsgw_dev.configuration_docs > docs/configuration.md     (make config-docs)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from smsgw.settings import ServiceSettings

#: (title, settings class, environment prefix), in the order of the page.
SERVICES = (
    ("intake", "smsgw_intake.__main__:IntakeSettings", "SMSGW_"),
    ("routing", "smsgw_routing.__main__:RoutingSettings", "SMSGW_"),
    ("carrier-adapter", "smsgw_carrier_adapter.__main__:CarrierAdapterSettings", "SMSGW_"),
    ("receipt", "smsgw_receipt.__main__:ReceiptSettings", "SMSGW_"),
    ("receipt: webhooks", "smsgw_receipt.webhooks.settings:WebhookSettings", "SMSGW_WEBHOOK_"),
)

HEADER = """\
# Configuration

Generated from the settings models by `make config-docs` (`smsgw_dev.configuration_docs`); do not
edit by hand: `tests/unit/test_configuration_docs.py` fails when this page and the models differ.

Every service reads its settings from `SMSGW_*` environment variables (in Kubernetes: the
`smsgw-config` ConfigMap and each Deployment's `env`, k8s/), validates them at start and logs the
effective configuration with secrets masked. A value that cannot work stops the service naming the
variable. With `SMSGW_ENVIRONMENT=production` (the default) a development default still in use
(simulator carriers, the development route table, sender or secrets, insecure modes) stops it too;
secrets come from files (`*_FILE`, a mounted Secret), never from an inline default.
"""


def settings_class(reference: str) -> type[BaseModel]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is not None and str(origin) == "typing.Literal":
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation)).replace("|", "\\|")


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, SecretStr):
        return "(empty)" if not value.get_secret_value() else "(set)"
    if value == "":
        return "(empty)"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if len(text) > 60:  # a JSON document: the page names the module that explains it
        return "(a JSON document; see the description)"
    return f"`{text}`"


def description_of(cls: type[BaseModel], name: str) -> str:
    """The field's description, or the one of the class it overrides (e.g. a service's own port)."""
    for klass in cls.__mro__:
        fields = getattr(klass, "model_fields", {})
        if name in fields and fields[name].description:
            return " ".join(fields[name].description.split()).replace("|", "\\|")
    return ""


def table(cls: type[BaseModel], prefix: str, names: list[str]) -> list[str]:
    lines = ["| variable | type | default | what |", "| --- | --- | --- | --- |"]
    for name in names:
        field = cls.model_fields[name]
        variable = f"{prefix}{name.upper()}"
        lines.append(
            f"| `{variable}` | {type_name(field.annotation)} | {default_text(field)} | {description_of(cls, name)} |"
        )
    return lines


def render() -> str:
    shared = list(ServiceSettings.model_fields)
    out = [HEADER, "## Every service", "", *table(ServiceSettings, "SMSGW_", shared), ""]
    for title, reference, prefix in SERVICES:
        cls = settings_class(reference)
        base_defaults = ServiceSettings.model_fields
        own = [
            name
            for name, field in cls.model_fields.items()
            if name not in base_defaults or field.default != base_defaults[name].default
        ]
        note = (
            ""
            if prefix != "SMSGW_"
            else " (besides every service's, above; a shared one listed here has its own default)"
        )
        out += [f"## {title}", "", f"`{reference.replace(':', '.')}`{note}.", "", *table(cls, prefix, own), ""]
    return "\n".join(out).rstrip() + "\n"


def undocumented() -> list[str]:
    """Variables whose field has no description, anywhere in its class hierarchy."""
    missing = []
    for _, reference, prefix in SERVICES:
        cls = settings_class(reference)
        missing += [f"{prefix}{n.upper()}" for n in cls.model_fields if not description_of(cls, n)]
    return sorted(set(missing))


if __name__ == "__main__":
    sys.stdout.write(render())
