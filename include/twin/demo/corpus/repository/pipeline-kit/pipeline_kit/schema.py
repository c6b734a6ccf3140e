"""Schema fingerprints and drift diffs.

The fingerprint guards the shape of a source, not its meaning: pair it with value checks.
"""

from __future__ import annotations

import hashlib
import json
from typing import TypedDict


class Field(TypedDict):
    name: str
    type: str
    nullable: bool


def fingerprint(fields: list[Field]) -> str:
    """Order-independent hash of (name, type, nullable); 16 hex chars is plenty for a diff alert."""
    canon = sorted((f["name"], f["type"], f["nullable"]) for f in fields)
    return hashlib.sha256(json.dumps(canon).encode("utf-8")).hexdigest()[:16]


def drift(expected: list[Field], actual: list[Field]) -> list[str]:
    """Readable lines, one per change, short enough to read on a phone at 7 a.m."""
    before = {f["name"]: f for f in expected}
    after = {f["name"]: f for f in actual}
    lines = [f"- removed: {n} ({before[n]['type']})" for n in sorted(before.keys() - after.keys())]
    lines += [f"+ added:   {n} ({after[n]['type']})" for n in sorted(after.keys() - before.keys())]
    for name in sorted(before.keys() & after.keys()):
        if before[name]["type"] != after[name]["type"]:
            lines.append(f"~ type:    {name} {before[name]['type']} -> {after[name]['type']}")
    return lines
