"""iCalendar/vCard text handled as text, so what a client sent is stored as it sent it.

vobject's re-serialisation is lossy (a comma inside an X- property value cuts it off,
parameters get re-quoted, lines re-folded), so the store keeps the client's own lines.
These helpers read just enough structure (BEGIN/END nesting, UID, TZID) to check that a text
is the object Radicale parsed, and to split an imported calendar into one object per UID
without rewriting a single line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional


@dataclass
class Line:
    raw: str            # the physical lines, folding and line endings kept
    name: str           # upper-case property name
    params: str         # raw parameter part (after the name, before the value)
    value: str          # unfolded value


def logical_lines(text: str) -> Iterator[Line]:
    """Content lines with their raw (folded) form kept next to the unfolded one."""
    buffer: list[str] = []
    for physical in text.splitlines(keepends=True):
        if physical[:1] in (" ", "\t") and buffer:
            buffer.append(physical)
            continue
        if buffer:
            yield _parse(buffer)
        buffer = [physical]
    if buffer:
        yield _parse(buffer)


def _parse(physical: list[str]) -> Line:
    unfolded = physical[0].rstrip("\r\n") + "".join(p.rstrip("\r\n")[1:] for p in physical[1:])
    colon, quoted = -1, False
    for i, char in enumerate(unfolded):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            colon = i
            break
    head, value = (unfolded, "") if colon < 0 else (unfolded[:colon], unfolded[colon + 1:])
    name, _, params = head.partition(";")
    return Line("".join(physical), name.strip().upper(), params, value)


def param_values(params: str, wanted: str) -> list[str]:
    out = []
    for part in _split_params(params):
        key, _, value = part.partition("=")
        if key.strip().upper() == wanted:
            out.append(value.strip().strip('"'))
    return out


def _split_params(params: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in params:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p]


@dataclass
class _Block:
    kind: str
    lines: list[Line] = field(default_factory=list)

    @property
    def raw(self) -> str:
        return "".join(line.raw for line in self.lines)

    def first(self, name: str) -> Optional[str]:
        depth = 0
        for line in self.lines:
            if line.name == "BEGIN":
                depth += 1
            elif line.name == "END":
                depth -= 1
            elif depth == 1 and line.name == name:
                return line.value
        return None


def _top_blocks(lines: list[Line]) -> tuple[list[Line], list[_Block]]:
    """Properties directly in the container and its first-level components."""
    own: list[Line] = []
    blocks: list[_Block] = []
    depth = 0
    for line in lines:
        if line.name == "BEGIN":
            if depth == 0:
                blocks.append(_Block(line.value.upper()))
            depth += 1
        if depth > 0:
            blocks[-1].lines.append(line)
        else:
            own.append(line)
        if line.name == "END":
            depth -= 1
    return own, blocks


def object_uids(text: str) -> Optional[set[str]]:
    """UIDs of the components of one iCalendar object or one vCard; None if not one object."""
    lines = list(logical_lines(text))
    own, blocks = _top_blocks(lines)
    if len(blocks) != 1 or any(line.value.strip() for line in own if line.name):
        return None
    top = blocks[0]
    if top.kind == "VCARD":
        uid = top.first("UID")
        return {uid} if uid is not None else set()
    if top.kind != "VCALENDAR":
        return None
    _, components = _top_blocks(top.lines[1:-1])
    return {c.first("UID") or "" for c in components if c.kind != "VTIMEZONE"}


def split_objects(text: str) -> dict[str, str]:
    """An imported .ics or .vcf split into one text per UID, each line as the client wrote it.

    Calendars: each object gets the calendar's own properties, the VTIMEZONEs its lines
    reference, and all components (master and overrides) of its UID. Objects without a UID
    are left out (the caller falls back to the parser's text for those).
    """
    lines = list(logical_lines(text))
    _, blocks = _top_blocks(lines)
    result: dict[str, str] = {}
    for block in blocks:
        if block.kind == "VCARD":
            uid = block.first("UID")
            if uid:
                result[uid] = block.raw
        elif block.kind == "VCALENDAR":
            result.update(_split_calendar(block))
    return result


def _split_calendar(calendar: _Block) -> dict[str, str]:
    begin, end = calendar.lines[0], calendar.lines[-1]
    own, components = _top_blocks(calendar.lines[1:-1])
    timezones = {c.first("TZID"): c for c in components if c.kind == "VTIMEZONE"}
    grouped: dict[str, list[_Block]] = {}
    for component in components:
        if component.kind != "VTIMEZONE":
            uid = component.first("UID")
            if uid:
                grouped.setdefault(uid, []).append(component)
    header = "".join(line.raw for line in own if not line.name.startswith("X-WR-"))
    out = {}
    for uid, parts in grouped.items():
        referenced = {tzid for part in parts for line in part.lines
                      for tzid in param_values(line.params, "TZID")}
        zones = "".join(timezones[t].raw for t in sorted(referenced) if t in timezones)
        out[uid] = begin.raw + header + zones + "".join(p.raw for p in parts) + end.raw
    return out
