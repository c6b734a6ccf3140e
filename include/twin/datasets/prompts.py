"""Prompt templates kept as files in `prompts/`, each hashed into the dataset manifest.

A file has `[system]` (optional) and `[user]` sections; `{name}` placeholders are filled by plain
replacement, so braces in passages (code) never break a template.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from twin.llm.base import Messages

PROMPTS_DIR = Path(__file__).parent / "prompts"
_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


class PromptError(ValueError):
    """A prompt file is missing or has no [user] section."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str | None
    user: str
    sha256: str

    def render(self, **fields: str) -> Messages:
        user = self.user
        for key, value in fields.items():
            user = user.replace("{" + key + "}", value)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": user}]


def load_prompt(name: str, directory: Path = PROMPTS_DIR) -> PromptTemplate:
    path = directory / f"{name}.txt"
    if not path.is_file():
        raise PromptError(f"no prompt {name!r}: {path} does not exist")
    raw = path.read_bytes()
    parts = _SECTION.split(raw.decode("utf-8"))
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if not sections.get("user"):
        raise PromptError(f"{path}: a prompt needs a [user] section")
    return PromptTemplate(name=name, system=sections.get("system") or None, user=sections["user"],
                          sha256=hashlib.sha256(raw).hexdigest())
