"""docs/params.md's table, generated from the schema:  python -m tools.params_docs [docs/params.md]

Here, not in stages/lib/params: a param whose allowed values a room above params declares (params may not
import it) gets them listed from there, so the table names today's layouts."""

from __future__ import annotations

import sys

from stages.lib.data.layouts import LAYOUTS
from stages.lib.params.messages import allowed, as_yaml, sections
from stages.lib.params.schema import Assemble, Config, Synthetic

DECLARED_ABOVE = {"data.layout": lambda: "auto or one of " + ", ".join(layout.name for layout in LAYOUTS)}


def params_table() -> str:
    """The Markdown table of docs/params.md: every param with its default, where that default comes
    from (the study's report, its code, or our choice), the allowed values and the meaning."""
    defaults = Config(synthetic=Synthetic(), assemble=Assemble()).model_dump()
    rows = ["| param | default | source | allowed | meaning |", "|---|---|---|---|---|"]
    for key, field, sub in sections():
        if sub is None:
            value = defaults
            for part in key.split("."):
                value = value[part]
            source = (field.json_schema_extra or {}).get("source", "")
            can = DECLARED_ABOVE[key]() if key in DECLARED_ABOVE else allowed(field)
            rows.append(f"| `{key}` | `{as_yaml(value)}` | {source} | {can} | {field.description} |")
    return "\n".join(rows) + "\n"


def write_table(path: str) -> None:
    """Replace the params table in the Markdown file at `path` (from its header row to the first line
    that is not a table row) with today's."""
    lines = open(path, encoding="utf-8").read().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("| param |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    text = "\n".join(lines[:start]) + "\n" + params_table() + "\n".join(lines[end:])
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":  # python -m tools.params_docs [docs/params.md]: print the table, or update the file's
    if len(sys.argv) > 1:
        write_table(sys.argv[1])
    else:
        sys.stdout.write(params_table())
