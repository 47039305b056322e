"""Pure HTTP rules for serving files (a leaf: no WSGI, no I/O).

Validators, conditional-request decisions, the header filters for 304 and
416, ``Content-Disposition`` and content negotiation for precompressed
files; the ``Range`` rules live in :mod:`wsgipipe._ranges` and are
re-exported here. Parsing is werkzeug's (``werkzeug.http``); what this
module adds is the decisions RFC 9110 asks for, each at the line that makes it.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from urllib.parse import quote

from werkzeug.http import (
    http_date,
    parse_accept_header,
    parse_date,
    parse_etags,
    quote_etag,
    unquote_etag,
)

from ._errors import RangeNotSatisfiable
from ._ranges import MAX_RANGES, ByteRange, Multipart, byte_ranges, multipart

__all__ = [
    "MAX_RANGES",
    "ByteRange",
    "Multipart",
    "byte_ranges",
    "choose_encoding",
    "content_disposition",
    "content_type",
    "etag_for",
    "http_date_value",
    "if_range_matches",
    "last_modified",
    "multipart",
    "not_modified_headers",
    "precondition_status",
    "unsatisfiable_headers",
]

Headers = list[tuple[str, str]]

#: Longer ``Accept-Encoding`` values are ignored (identity is sent): real
#: clients send a few dozen bytes, and parsing costs about 0.5 ms per KiB.
MAX_ACCEPT_ENCODING = 1024

#: RFC 9110 §5.6.7: the three HTTP-date forms, exactly. Anything else (two
#: If-Modified-Since headers joined by the server with ", ", a bare date
#: without weekday) is not a date, and §13.1.3 says to ignore it.
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"\d\d:\d\d:\d\d"
_HTTP_DATE = re.compile(
    rf"{_DAY}, \d\d {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT"  # IMF-fixdate
    rf"|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d\d-{_MONTH}-\d\d {_TIME} GMT"  # rfc850
    rf"|{_DAY} {_MONTH} [ \d]\d {_TIME} (?P<asc_year>\d{{4}})"  # asctime
)

#: RFC 9110 §15.4.5: a 304 carries the headers a 200 would have sent among
#: these, so caches can update what they stored. Last-Modified is kept too.
_KEEP_ON_304 = frozenset(
    {
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "last-modified",
        "vary",
    }
)

_TEXT_LIKE = ("text/", "application/javascript", "application/json", "application/xml")

#: Types the stdlib tables lack or get wrong for the web.
_EXTRA_TYPES = {
    ".js": "text/javascript",  # RFC 9239
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".gz": "application/gzip",
    ".br": "application/x-brotli",
}

# The stdlib defaults only: the host's /etc/mime.types must not change answers.
_STDLIB_TYPES = mimetypes.MimeTypes().types_map[True]


# -- validators -------------------------------------------------------------
def etag_for(size: int, mtime_ns: int, tag: str = "") -> str:
    """A strong ETag from size and mtime, no hashing (whitenoise#129).

    ``tag`` tells encodings apart: each representation of a resource needs
    its own strong validator (RFC 9110 §8.8.3).
    """
    return quote_etag(f"{size:x}-{mtime_ns:x}{'-' + tag if tag else ''}")


def last_modified(mtime: float) -> str:
    """``Last-Modified`` value; HTTP dates have one-second precision (§5.6.7)."""
    return http_date(int(mtime))


def precondition_status(
    method: str,
    etag: str,
    modified: int,
    *,
    if_match: str | None = None,
    if_unmodified_since: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
) -> int:
    """200, 304 or 412 for the conditional headers, in RFC 9110 §13.2.2 order.

    ``etag`` is the quoted current ETag, ``modified`` the Last-Modified time
    in whole seconds since the epoch.
    """
    if if_match is not None:
        # §13.1.1: strong comparison; "*" matches any current representation.
        if not parse_etags(if_match).contains(unquote_etag(etag)[0]):
            return 412
    elif if_unmodified_since is not None:
        # §13.1.4: ignored when If-Match is present or the date is invalid.
        date = http_date_value(if_unmodified_since)
        if date is not None and modified > date.timestamp():
            return 412
    safe = method in ("GET", "HEAD")
    if if_none_match is not None:
        # §13.1.2: weak comparison; it takes precedence over If-Modified-Since,
        # so a rolled-back file with an older mtime is still sent (whitenoise#202).
        if parse_etags(if_none_match).contains_weak(unquote_etag(etag)[0]):
            return 304 if safe else 412
    elif if_modified_since is not None and safe:
        date = http_date_value(if_modified_since)
        if date is not None and modified <= date.timestamp():
            return 304
    return 200


def http_date_value(value: str) -> datetime | None:
    """The date in a header value, or None if it is not exactly one HTTP-date.

    werkzeug's ``parse_date`` is lenient: it reads the first of two joined
    dates and turns year 0000 into 2000. A recipient must ignore an invalid
    date (RFC 9110 §13.1.3), so only the three §5.6.7 forms pass, and a
    four-digit year must survive parsing unchanged.
    """
    match = _HTTP_DATE.fullmatch(value.strip())
    date = parse_date(value) if match else None
    year = match and (match["year"] or match["asc_year"])
    if date is None or (year and int(year) != date.year):
        return None
    return date


def if_range_matches(value: str | None, etag: str, modified: int) -> bool:
    """Whether a Range may be honoured under ``If-Range`` (RFC 9110 §13.1.5).

    True without the header. An entity tag must match strongly, so a weak
    one never does (werkzeug PR#3163); a date must equal Last-Modified
    exactly. Anything else means: send the whole representation.
    """
    if value is None:
        return True
    value = value.strip()
    date = http_date_value(value)
    if date is not None:
        return int(date.timestamp()) == modified
    if value.startswith("W/") or not value.startswith('"'):
        return False
    return value == etag


# -- header filters -----------------------------------------------------------
def not_modified_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """The headers a 304 keeps: validators, caching, Vary and CORS (whitenoise#711)."""
    return [(k, v) for k, v in headers if _kept(k.lower())]


def unsatisfiable_headers(headers: Iterable[tuple[str, str]], size: int) -> Headers:
    """Headers for a 416: what a 304 keeps plus ``Content-Range: bytes */N`` (§15.5.17)."""
    return [*not_modified_headers(headers), *RangeNotSatisfiable(size).headers]


def _kept(name: str) -> bool:
    return name in _KEEP_ON_304 or name.startswith("access-control-")


# -- representation metadata ---------------------------------------------------
def content_type(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """Content-Type for a file name: overrides, then web fixes, then the stdlib.

    Text types get ``charset=utf-8`` so browsers do not guess (RFC 9110 §8.3.2).
    """
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > name.rfind("/") else ""
    found = (overrides or {}).get(suffix) or _EXTRA_TYPES.get(suffix) or _STDLIB_TYPES.get(suffix)
    if found is None:
        return "application/octet-stream"
    if "charset=" not in found and (
        found.startswith(_TEXT_LIKE) or found.endswith(("+xml", "+json"))
    ):
        return found + "; charset=utf-8"
    return found


def choose_encoding(accept_encoding: str | None, available: Sequence[str]) -> list[str]:
    """The ``available`` codings the client accepts, best first (RFC 9110 §12.5.3).

    A specific entry overrides ``*``; ``q=0`` refuses; ties keep the order
    of ``available`` (the server's preference, e.g. ``br`` before ``gzip``).
    """
    if not accept_encoding or len(accept_encoding) > MAX_ACCEPT_ENCODING:
        return []
    weights: dict[str, float] = {}
    for value, quality in parse_accept_header(accept_encoding):
        weights[value.lower()] = quality
    if "x-gzip" in weights:  # §12.5.3: x-gzip is an alias of gzip
        weights.setdefault("gzip", weights["x-gzip"])
    wildcard = weights.get("*", 0.0)
    scored = [(weights.get(coding, wildcard), i, coding) for i, coding in enumerate(available)]
    return [coding for q, _, coding in sorted(scored, key=lambda s: (-s[0], s[1])) if q > 0]


def content_disposition(filename: str | None, *, as_attachment: bool = False) -> str:
    """A ``Content-Disposition`` value per RFC 6266.

    Non-ASCII names get an ASCII ``filename`` fallback plus ``filename*``
    encoded per RFC 8187; control characters are dropped so that a name can
    never split the header.
    """
    kind = "attachment" if as_attachment else "inline"
    if not filename:
        return kind
    name = "".join(c for c in filename if unicodedata.category(c) != "Cc")
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    value = f'{kind}; filename="{quoted}"'
    if fallback != name:
        # RFC 8187 §3.2.1: attr-char is ALPHA / DIGIT / "!#$&+-.^_`|~".
        value += "; filename*=UTF-8''" + quote(name, safe="!#$&+-.^_`|~")
    return value
