"""Render the configuration reference in README.md from the Settings model (`make docs`).

Each row comes from a field of `app.settings.Settings`: its name, default and `description`.
A test fails when a setting has no description or the README block is out of date.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.settings import ENV_PREFIX, Settings

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


def _default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(set)" if value.get_secret_value() else ""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        desc = field.description
        if not desc:
            raise ValueError(f"setting {name} has no description: add Field(description=...) in app/settings.py")
        shown = _default(default).replace("|", "\\|")
        rows.append(
            f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {desc} |"
            if shown
            else f"| `{ENV_PREFIX}{name.upper()}` | | {desc} |"
        )
    return "\n".join(rows)


def update_readme(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    new = re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{render()}\n{END}", text, flags=re.S)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    update_readme(Path(__file__).resolve().parents[1] / "README.md")
