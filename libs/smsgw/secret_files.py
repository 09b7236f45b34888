"""Secrets by reference in configuration: `<field>_file` names a file that holds the field's value.

A carrier's password in the carrier list (a ConfigMap, a variable, a file in a repository) is a
secret in the wrong place; `password_file: /etc/smsgw/secrets/smsc-main` points at a mounted
Kubernetes Secret instead, and only the path is in the configuration. Used by the carrier
kinds' pydantic models, before validation (`mode="before"`), so the file's content is checked
like a value written in place would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def value_from_file(data: Any, field: str) -> Any:
    """`data` (a model's input) with `field` read from the file `<field>_file` names, if it names one.

    The file's content is the value, without a trailing newline (as `echo` and `kubectl create
    secret --from-file` leave it). Raises ValueError, naming the setting and the path but never
    the content, when both are given or the file cannot be read or is empty."""
    reference = f"{field}_file"
    if not isinstance(data, dict) or data.get(reference) in (None, ""):
        return data
    if data.get(field) not in (None, ""):
        raise ValueError(f"give {field} or {reference}, not both")
    path = Path(data[reference])
    try:
        value = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{reference}: cannot read {path} ({reason})") from None
    if not value:
        raise ValueError(f"{reference}: {path} is empty")
    return {**data, field: value}
