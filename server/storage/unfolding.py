"""vobject's line unfolding in linear time.

``vobject.base.getLogicalLines`` (0.9.x) re-reads the whole logical line after every
physical line it appends (``StringIO.getvalue()``, then ``.lower().find(...)`` on it), so a
property folded over n lines costs O(n²): a 5 MB DESCRIPTION folded at 75 columns, as every
client folds, took 12 s to parse against 3.5 s unfolded, and an 8 MB one (still under the
size limit) about half a minute of one CPU per PUT. This is the same generator, yielding the
same lines, keeping only the last character and a short tail to test the same conditions.

``install()`` is idempotent; the storage plugin calls it at import.
"""

from __future__ import annotations

from vobject import base

_original = base.getLogicalLines
_QP = "quoted-printable"


def get_logical_lines(fp, allowQP=True):
    if not allowQP:
        yield from _original(fp, allowQP)
        return
    parts: list[str] = []
    size = 0
    last = ""                 # the logical line's last character
    tail = ""                 # its last len(_QP) - 1 characters, lower-cased
    has_qp = False            # _QP occurs in the lower-cased logical line
    quoted_printable = False
    line_number = 0
    start_number = 0

    def append(piece: str) -> None:
        nonlocal size, last, tail, has_qp
        if not piece:
            return
        parts.append(piece)
        size += len(piece)
        last = piece[-1]
        lowered = tail + piece.lower()
        has_qp = has_qp or _QP in lowered
        tail = lowered[-(len(_QP) - 1):]

    def reset() -> None:
        nonlocal size, last, tail, has_qp
        parts.clear()
        size, last, tail, has_qp = 0, "", "", False

    while True:
        line = fp.readline()
        if line == "":
            break
        line = line.rstrip(base.CRLF)
        line_number += 1
        if line.rstrip() == "":
            if size > 0:
                yield "".join(parts), start_number
            start_number = line_number
            reset()
            quoted_printable = False
            continue
        if quoted_printable:
            append("\n")
            append(line)
            quoted_printable = False
        elif line[0] in base.SPACEORTAB:
            append(line[1:])
        elif size > 0:
            yield "".join(parts), start_number
            start_number = line_number
            reset()
            append(line)
        else:
            reset()
            append(line)
        if last == "=" and has_qp:
            quoted_printable = True
    if size > 0:
        yield "".join(parts), start_number


def install() -> None:
    base.getLogicalLines = get_logical_lines
