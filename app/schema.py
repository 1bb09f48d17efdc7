"""Print the JSON Schema of the memory event (`make schema` writes it to schemas/)."""

from __future__ import annotations

import json

from app.models import event_json_schema


def render() -> str:
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
