"""A small HTTP/1.1 codec for the metadata proxy: parse, bound, render.

Pure message functions (request and response heads, framing, rendering) and
two stream readers with limits. Errors are HttpError with the status the
client should get (400 malformed, 413 body too large, 431 head too large).
Used by ``services/metadata.py``; nothing here knows about appliances.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from http import HTTPStatus

Headers = tuple[tuple[str, str], ...]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_FIELD_VALUE = re.compile(r"[\x20-\x7e\x80-\xff\t]*")
_LENGTH = re.compile(r"[0-9]{1,15}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
)
_MAX_TRAILERS = 32


class HttpError(Exception):
    """A request that ends with ``status``; ``reason`` is the short text the client sees."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str  # origin form: path and query
    headers: Headers
    content_length: int | None
    chunked: bool

    @property
    def expects_continue(self) -> bool:
        return any(n.lower() == "expect" and v.lower() == "100-continue" for n, v in self.headers)


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers
    content_length: int | None
    chunked: bool


# -- messages (pure) ------------------------------------------------------------------------------
def parse_request_head(data: bytes, *, max_headers: int = 64) -> RequestHead:
    """Parse a request head ending in a blank line; raise HttpError 400 or 431."""
    lines = _head_lines(data)
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target) or version not in _VERSIONS:
        raise HttpError(400, "malformed request line")
    headers = _parse_fields(lines[1:], max_headers)
    length, chunked = _body_framing(headers)
    return RequestHead(method, target, headers, length, chunked)


def parse_response_head(data: bytes, *, max_headers: int = 64) -> ResponseHead:
    """Parse a response head ending in a blank line; raise HttpError on anything malformed."""
    lines = _head_lines(data)
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    valid_code = re.fullmatch(r"[1-5][0-9]{2}", code)
    if version not in _VERSIONS or not valid_code or not _FIELD_VALUE.fullmatch(reason):
        raise HttpError(400, "malformed status line")
    headers = _parse_fields(lines[1:], max_headers)
    length, chunked = _body_framing(headers)
    return ResponseHead(int(code), reason, headers, length, chunked)


def _head_lines(data: bytes) -> list[str]:
    text = data.decode("latin-1")
    if not text.endswith("\r\n\r\n"):
        raise HttpError(400, "incomplete message head")
    return text[:-4].split("\r\n")


def _parse_fields(lines: list[str], max_headers: int) -> Headers:
    if len(lines) > max_headers:
        raise HttpError(431, "too many header fields")
    fields: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        # a name with spaces around it, or a folded line, is refused: a smuggling vector
        if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise HttpError(400, "malformed header field")
        fields.append((name, value.strip(" \t")))
    return tuple(fields)


def _body_framing(headers: Headers) -> tuple[int | None, bool]:
    lengths = {v for n, v in headers if n.lower() == "content-length"}
    codings = [v for n, v in headers if n.lower() == "transfer-encoding"]
    if codings:
        chunked_only = [c.strip().lower() for c in ",".join(codings).split(",")] == ["chunked"]
        if lengths or not chunked_only:
            raise HttpError(400, "unsupported Transfer-Encoding")
        return None, True
    if not lengths:
        return None, False
    if len(lengths) > 1 or not all(_LENGTH.fullmatch(v) for v in lengths):
        raise HttpError(400, "malformed Content-Length")
    return int(lengths.pop()), False


def connection_tokens(headers: Headers) -> set[str]:
    values = (v for n, v in headers if n.lower() == "connection")
    return {t.strip().lower() for v in values for t in v.split(",")}


def render_request(
    method: str, target: str, headers: Headers, body: bytes, *, authority: str
) -> bytes:
    """An HTTP/1.1 request for the orchestrator, on a connection used once."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{n}: {v}" for n, v in headers]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def render_response(status: int, reason: str, headers: Headers, body: bytes | None) -> bytes:
    """A response for the client; ``body=None`` (HEAD, 204, 304) keeps the upstream's length."""
    dropped = HOP_BY_HOP | connection_tokens(headers)
    if body is not None:
        dropped |= {"content-length"}
    lines = [f"HTTP/1.1 {status} {reason or _phrase(status)}"]
    lines += [f"{n}: {v}" for n, v in headers if n.lower() not in dropped]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def error_response(status: int, reason: str) -> bytes:
    text = f"{status} {_phrase(status)}: {reason}\n".encode()
    return render_response(status, "", (("Content-Type", "text/plain; charset=utf-8"),), text)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# -- streams ---------------------------------------------------------------------------------------
async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read up to a blank line; the reader's limit bounds the size (431)."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed before the end of the head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "message head too large") from None


async def read_body(
    reader: asyncio.StreamReader, *, length: int | None, chunked: bool, to_eof: bool, limit: int
) -> bytes:
    """Read a body framed by ``length``, chunked coding, or the end of the stream (413, 400)."""
    try:
        if chunked:
            return await _read_chunked(reader, limit)
        if length is not None:
            if length > limit:
                raise HttpError(413, "body too large")
            return await reader.readexactly(length)
        if not to_eof:
            return b""
        body = await reader.read(limit + 1)
        while chunk := await reader.read(limit + 1 - len(body)):
            body += chunk
        if len(body) > limit:
            raise HttpError(413, "body too large")
        return body
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed before the end of the body") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, "malformed chunked body") from None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise HttpError(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise HttpError(413, "body too large")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "malformed chunk")
    for _ in range(_MAX_TRAILERS):
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return b"".join(parts)
    raise HttpError(400, "too many trailer fields")


def has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status not in {204, 304} and not 100 <= status < 200
