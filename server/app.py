"""The WSGI application: Radicale's, with the few things it leaves to the deployment.

* The request body is read once, checked against ``[server] max_content_length`` under
  every server (Radicale checks it only in its built-in one) and kept for the storage plugin,
  which stores what the client sent rather than vobject's rewrite of it.
* A client error gets one line of reason in the body instead of a bare "Bad Request".
* A database outage becomes ``503 Service Unavailable`` with ``Retry-After``, never a 500.
* Hostile input Radicale would crash or spin on is refused first, with 400 and a reason: an
  unknown charset, malformed Basic credentials, recurrence rules that never end their search
  (see ``server.crm.recurrence``); an item over ``max_resource_size`` gets 413, not 412.
* A PUT of one object is prepared on the client's text, not on vobject's re-serialisation
  of it (``server.put_prepare``).

Used by ``crm-server`` (Radicale's own server loop) and by ``server.wsgi`` (gunicorn).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import io
import logging
import re
from http import client
from typing import Iterable, Optional

import defusedxml.ElementTree as DefusedET
from radicale import httputils
from radicale import item as radicale_item
from radicale import pathutils
from radicale.app import Application
from radicale.app import base as app_base

from server import listing, put_prepare, request_context
from server.crm import recurrence

logger = logging.getLogger("radicale-crm")
put_prepare.install()   # a PUT's object is not re-serialised only to be thrown away

RETRY_AFTER_SECONDS = 5
_XML_METHODS = {"PROPFIND", "PROPPATCH", "REPORT", "MKCOL", "MKCALENDAR"}
# No DAV client sends a DTD. defusedxml refuses entity declarations with an exception that
# Radicale does not catch (a 500), so such bodies are refused here, before parsing.
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class _RefusalsAreNotCrashes(logging.Filter):
    """Radicale 3.9 logs any exception a method does not catch (DELETE catches none) as
    "Exception: ..." plus a traceback on the root logger. A plugin's deliberate refusal is a
    normal answer: it is logged as one line at info, without the traceback. A database
    outage is not logged here at all: ``request_context.OutageLog`` reports it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and _unknown_zone(record):
            return False
        context = request_context.current()
        if context is None or record.levelno < logging.ERROR:
            return True
        if context.db_unavailable:
            # The outage is logged by request_context.OutageLog, once, not per request with
            # Radicale's traceback of the driver's error.
            return False
        if context.refusal is None:
            return True
        if record.name == "radicale":
            # "Exception: ..." and the "... response status ... 500" line: the client gets
            # the refusal's status, so that is what the log says, once.
            if record.msg != "Exception: %s":
                return "response status" not in str(record.msg)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "Refused %s %s (%d): %s", (
                context.method, context.path, *context.refusal)
            return True
        # the traceback Radicale writes on the root logger right after
        return not (record.name == "root" and "Refused" in record.getMessage())


_zones_seen: set = set()


def _unknown_zone(record: logging.LogRecord) -> bool:
    """vobject logs a TZID that names neither a VTIMEZONE of the object nor an Olson zone as
    a bare ERROR on the root logger (``'Mars/Olympus'``), on every parse of such an object,
    each REPORT included. Clients do send such TZIDs, and the object is served as sent: it
    is said once per zone per process, at info."""
    if not (record.levelno == logging.ERROR and type(record.msg).__name__ ==
            "UnknownTimeZoneError"):
        return False
    zone = str(record.msg)
    if zone not in _zones_seen and len(_zones_seen) < 1000:
        _zones_seen.add(zone)
        logger.info("Unknown time zone %s in a client's object (no VTIMEZONE for it and not "
                    "an Olson name): served as sent", zone)
    return True


_refusal_filter = _RefusalsAreNotCrashes()
logging.getLogger("radicale").addFilter(_refusal_filter)
logging.getLogger().addFilter(_refusal_filter)


class CrmApplication(Application):

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        context = request_context.RequestContext(
            method=environ.get("REQUEST_METHOD", "").upper(),
            path=environ.get("PATH_INFO", ""),
            remote_addr=environ.get("REMOTE_ADDR", ""),
            forwarded_for=environ.get("HTTP_X_FORWARDED_FOR", ""))
        refusal = self._read_body(environ, context) or _check_headers(environ)
        if refusal is not None:
            return _plain(start_response, *refusal)
        context.decoder = lambda raw: httputils.decode_request(self.configuration, environ, raw)
        if context.method == "PUT" and context.raw_body:
            refusal = self._check_recurrences(context)
            if refusal is not None:
                return _plain(start_response, *refusal)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        with request_context.bound(context):
            answers = super().__call__(environ, capture)
        code = int(captured["status"].split(" ", 1)[0])
        if context.refusal is not None and code >= 400:
            status, reason = context.refusal
            return _plain(start_response, status, reason,
                          _keep(captured["headers"]) + context.refusal_headers,
                          head=context.method == "HEAD")
        if not context.db_unavailable and "requester" in context.memo:
            request_context.mark_db_worked()     # the storage opened a transaction
        if context.db_unavailable and code >= 500:
            return _plain(start_response, client.SERVICE_UNAVAILABLE,
                          "the database is unavailable, retry later",
                          [("Retry-After", str(RETRY_AFTER_SECONDS))])
        if code == client.PRECONDITION_FAILED and self._over_resource_size(environ, context):
            return _plain(start_response, client.REQUEST_ENTITY_TOO_LARGE,
                          "a calendar object or card in the body is larger than the limit of "
                          f"{self._max_resource_size} bytes ([server] max_resource_size)",
                          _keep(captured["headers"]))
        if 400 <= code < 500 and _is_generic(captured["headers"]):
            reason = context.reason or self._explain(context, code)
            if reason:
                return _plain(start_response, code, reason, _keep(captured["headers"]),
                              head=context.method == "HEAD")
        start_response(captured["status"], captured["headers"])
        return answers

    def do_PROPFIND(self, environ, base_prefix, path, user, user_groups, request_info):
        def depth_zero(env):
            return super(CrmApplication, self).do_PROPFIND(
                env, base_prefix, path, user, user_groups, request_info)
        return listing.propfind(self, environ, base_prefix, path, user, user_groups,
                                request_info, depth_zero) or \
            super().do_PROPFIND(environ, base_prefix, path, user, user_groups, request_info)

    def do_REPORT(self, environ, base_prefix, path, user, user_groups, request_info):
        return listing.report(self, environ, base_prefix, path, user, user_groups,
                              request_info) or \
            super().do_REPORT(environ, base_prefix, path, user, user_groups, request_info)

    def _read_body(self, environ, context) -> Optional[tuple[int, str]]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return client.BAD_REQUEST, "invalid Content-Length header"
        if length < 0:
            return client.BAD_REQUEST, "invalid Content-Length header"
        limit = self._max_content_length
        if limit and length > limit:
            return (client.REQUEST_ENTITY_TOO_LARGE,
                    f"request body of {length} bytes exceeds the limit of {limit} bytes")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not length and not chunked:
            return None
        stream = environ["wsgi.input"]
        try:
            if chunked and _undecoded_chunks(environ):
                body = _read_chunks(stream, limit)
            else:
                body = stream.read(length) if length else stream.read(
                    limit + 1 if limit else -1)
        except _ChunksOverLimit:
            return (client.REQUEST_ENTITY_TOO_LARGE,
                    f"request body exceeds the limit of {limit} bytes")
        except _ChunkError as e:
            return client.BAD_REQUEST, f"invalid chunked request body: {e}"
        except OSError:   # the client stopped sending ([server] timeout)
            return client.REQUEST_TIMEOUT, "the request body did not arrive in time"
        if limit and len(body) > limit:
            return (client.REQUEST_ENTITY_TOO_LARGE,
                    f"request body exceeds the limit of {limit} bytes")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        context.raw_body = body
        if context.method in _XML_METHODS and _DTD.search(body):
            return (client.BAD_REQUEST,
                    "malformed XML body: DTDs and entity declarations are not allowed")
        return None

    def _check_recurrences(self, context) -> Optional[tuple[int, str]]:
        try:
            text = context.body_text
        except Exception:
            return None   # undecodable: Radicale refuses it, _explain says why
        why = recurrence.problem(text, self._max_vevent_rrule_occurrence)
        return (client.BAD_REQUEST, "invalid iCalendar object: " + why) if why else None

    def _over_resource_size(self, environ, context) -> bool:
        """Radicale answers 412 to a PUT whose item exceeds ``max_resource_size``; the only
        other 412s of a PUT come from preconditions the client asked for (or strict mode)."""
        return (context.method == "PUT" and not self._strict_preconditions
                and not environ.get("HTTP_IF_MATCH") and not environ.get("HTTP_IF_NONE_MATCH"))

    def _explain(self, context, code: int) -> Optional[str]:
        """Why Radicale refused a request it checked itself (error path only)."""
        if code != client.BAD_REQUEST:
            return None
        if not app_base._check_path_format(self._storage, pathutils.sanitize_path(context.path),
                                           self._validate_path_value):
            return ("invalid path: characters such as : , ? * \" ' are not allowed in names "
                    "([server] validate_path_value = %s)" % self._validate_path_value)
        if context.method == "MOVE":
            return "invalid Destination header: not a valid path on this server"
        if not context.raw_body:
            return "empty request body" if context.method == "PUT" else None
        try:
            text = context.body_text
        except Exception as e:  # undecodable body
            return f"request body cannot be decoded: {e}"
        if context.method == "PUT":
            try:
                components = radicale_item.read_components(text)
                tag = "VADDRESSBOOK" if components and components[0].name == "VCARD" \
                    else "VCALENDAR"
                radicale_item.check_and_sanitize_items(
                    components, self._max_vevent_rrule_occurrence, is_collection=False,
                    tag=tag)
            except Exception as e:
                return "invalid iCalendar/vCard object: " + _one_line(e)
            return "invalid iCalendar/vCard object"
        if context.method in _XML_METHODS:
            try:
                DefusedET.fromstring(text)
            except Exception as e:
                return "malformed XML body: " + _one_line(e)
            return "unsupported or invalid XML request"
        return None


class _ChunkError(ValueError):
    pass


class _ChunksOverLimit(Exception):
    pass


def _undecoded_chunks(environ) -> bool:
    """Radicale's built-in server (wsgiref) hands the application the raw socket stream,
    chunk sizes and all, and no end of input: reading to the limit waited for bytes that
    never came until the socket timed out. gunicorn and other WSGI servers decode chunks."""
    return environ.get("SERVER_SOFTWARE", "").startswith("WSGIServer/")


def _read_chunks(stream, limit: int) -> bytes:
    """A chunked body (RFC 9112 section 7.1), read no further than ``limit`` bytes."""
    body = bytearray()
    while True:
        line = stream.readline(1024)
        if not line.endswith(b"\n"):
            raise _ChunkError("bad chunk size line")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ChunkError("bad chunk size line") from None
        if size < 0:
            raise _ChunkError("bad chunk size line")
        if size == 0:
            break
        if limit and len(body) + size > limit:
            raise _ChunksOverLimit()
        data = stream.read(size)
        if len(data) != size or stream.readline(3).strip():
            raise _ChunkError("chunk shorter than its size")
        body += data
    for _ in range(100):                      # trailer fields, up to the empty line
        if stream.readline(8192).strip() == b"":
            break
    return bytes(body)


def _check_headers(environ) -> Optional[tuple[int, str]]:
    """Headers Radicale would turn into a 500: an unknown charset (it looks the codec up
    while decoding the body) and Basic credentials that are not base64 of ``user:password``
    (it unpacks them without a check)."""
    content_type = environ.get("CONTENT_TYPE") or ""
    if "charset=" in content_type:
        charset = content_type.split("charset=")[1].split(";")[0].strip()
        try:
            codecs.lookup(charset)
        except LookupError:
            return client.BAD_REQUEST, f"unknown charset in Content-Type: {charset[:60]!r}"
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if authorization.startswith("Basic"):
        try:
            decoded = base64.b64decode(authorization[len("Basic"):].strip().encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            decoded = b""
        if b":" not in decoded:
            return (client.BAD_REQUEST,
                    "invalid Authorization header: Basic credentials must be the base64 of "
                    "user:password")
    return None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _is_generic(headers) -> bool:
    """Radicale's own canned plain-text answers (XML error bodies are kept as they are)."""
    return any(k.lower() == "content-type" and v.startswith("text/plain") for k, v in headers)


def _keep(headers) -> list:
    return [(k, v) for k, v in headers
            if k.lower() not in ("content-type", "content-length", "content-encoding")]


def _plain(start_response, code: int, reason: str, extra=(), head: bool = False):
    body = (reason + "\n").encode("utf-8")
    headers = [*extra, ("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body)))]
    start_response("%d %s" % (code, client.responses.get(code, "Error")), headers)
    return [] if head else [body]
