"""Read multistatus answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import unquote

D = "{DAV:}"


def responses(body: bytes | str) -> dict[str, tuple[str, ET.Element]]:
    """href -> (status line of the response/propstat, response element)."""
    root = ET.fromstring(body)
    out = {}
    for response in root.findall(f"{D}response"):
        href = unquote(response.findtext(f"{D}href"))
        status = response.findtext(f"{D}status") or response.findtext(f"{D}propstat/{D}status")
        out[href] = (status or "", response)
    return out


def sync_token(body: bytes | str) -> str:
    return ET.fromstring(body).findtext(f"{D}sync-token")


def prop(body: bytes | str, name: str) -> str | None:
    root = ET.fromstring(body)
    for element in root.iter(name):
        return element.text
    return None
