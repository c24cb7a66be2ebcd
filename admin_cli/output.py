"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        json.dump(list(rows), sys.stdout, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    if not rows:
        print("(none)")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def emit_record(row: dict[str, Any], as_json: bool) -> None:
    """One object: JSON, or ``key: value`` lines (lists joined, empty shown as -)."""
    if as_json:
        emit([row], [], True)
        return
    width = max(len(k) for k in row) + 2
    for key, value in row.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        print(f"{key + ':':{width}} {value if value not in (None, '') else '-'}")
