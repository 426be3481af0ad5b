"""Has someone changed an owned object away from what the operator applies?

`drifted(desired, actual)` holds when a field the operator sets is missing or different in the
live object. Fields the API server or other controllers add are not drift (server-side apply
leaves them alone anyway). Scalars compare as text, because the server returns quantities such
as a GPU count of 4 as "4"; a false alarm only costs one no-op apply.
"""

from __future__ import annotations

from typing import Any


def drifted(desired: Any, actual: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return True
        return any(
            key not in actual or drifted(value, actual[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return True
        return any(drifted(d, a) for d, a in zip(desired, actual, strict=True))
    return str(desired) != str(actual)


def owns_field(obj: dict[str, Any], manager: str, *path: str) -> bool:
    """Whether `manager` applied the field at `path` (read from metadata.managedFields)."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        node = entry.get("fieldsV1") or {}
        for part in path:
            node = node.get(f"f:{part}")
            if not isinstance(node, dict):
                break
        else:
            return True
    return False
