"""Static's configuration checks and request-path rules (no I/O per request).

Loud at configuration: every option is checked when :class:`~wsgipipe.Static`
is built. Calm per request: :func:`safe_name` turns ``PATH_INFO`` into a
relative name made of plain segments, or refuses it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "HASHED_NAME",
    "OFFLOAD_MODES",
    "SUFFIXES",
    "cache_policy",
    "check_encodings",
    "check_index",
    "check_offload",
    "check_prefix",
    "check_types",
    "real_root",
    "safe_name",
]

OFFLOAD_MODES = ("x-accel-redirect", "x-sendfile")

#: Names with a content hash (``app.3f9a1c2e.js``) never change: cache them for a year.
HASHED_NAME = r"\.[0-9a-f]{8,}\.\w+$"
YEAR = 365 * 24 * 3600

SUFFIXES = {"br": ".br", "gzip": ".gz"}

# Windows device names are files in every directory there (CVE-2025-66221).
_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{kind}{n}" for kind in ("COM", "LPT") for n in "0123456789¹²³"]
)


def real_root(root: str | os.PathLike[str]) -> str:
    real = os.path.realpath(os.fspath(root))
    if not os.path.isdir(real):
        raise ConfigurationError(f"Static root {os.fspath(root)!r} is not a directory")
    return real


def check_index(index: str | None) -> str | None:
    # The index is joined to request paths, so it must be one plain segment.
    if index is not None and ("/" in index or _refused(index, allow_hidden=True)):
        raise ConfigurationError(f"index must be a plain file name, not {index!r}")
    return index


def check_types(mimetypes: Mapping[str, str] | None) -> dict[str, str]:
    types = {suffix.lower(): kind for suffix, kind in (mimetypes or {}).items()}
    bad = [suffix for suffix in types if not suffix.startswith(".") or "/" in suffix]
    if bad:
        raise ConfigurationError(f"mimetypes keys are extensions such as '.md', not {bad}")
    return types


def check_offload(offload: str | None) -> str | None:
    if offload is not None and offload not in OFFLOAD_MODES:
        raise ConfigurationError(f"offload must be one of {OFFLOAD_MODES} or None, not {offload!r}")
    return offload


def check_prefix(prefix: str) -> str:
    if not (prefix.startswith("/") and prefix.endswith("/")):
        raise ConfigurationError(f"offload_prefix must start and end with '/': {prefix!r}")
    return prefix


def check_encodings(precompressed: Iterable[str]) -> tuple[str, ...]:
    codings = tuple(precompressed)
    unknown = [c for c in codings if c not in SUFFIXES]
    if unknown:
        raise ConfigurationError(f"precompressed codings must be among {tuple(SUFFIXES)}")
    return codings


def cache_policy(max_age: int | None, immutable: str | None) -> Callable[[str], str | None]:
    hashed = re.compile(immutable) if immutable else None
    # No "public": it only matters for responses to requests with
    # Authorization (RFC 9111 §5.2.2.9), and REDbot flags it as unnecessary.
    default = f"max-age={max_age}" if max_age is not None else None
    forever = f"max-age={YEAR}, immutable"

    def policy(name: str) -> str | None:
        if hashed is not None and hashed.search(name):
            return forever
        return default

    return policy


# -- request paths ---------------------------------------------------------------
def safe_name(path_info: str, index: str | None, allow_hidden: bool) -> str | None:
    """Turn PATH_INFO into a relative name made only of plain segments.

    PEP 3333 gives PATH_INFO already percent-decoded, as latin-1 text; it is
    turned back into bytes and read as UTF-8 exactly once, never unquoted
    again, so "%252e" stays a literal "%2e" (docs/decisions.md#decode-once).
    """
    try:
        text = path_info.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    if not text.startswith("/"):
        text = "/" + text
    segments = text[1:].split("/")
    if segments[-1] == "":
        if index is None:
            return None
        segments[-1] = index  # "/" and "/dir/" ask for the index
    if any(_refused(s, allow_hidden) for s in segments):
        return None
    return "/".join(segments)


def _refused(segment: str, allow_hidden: bool) -> bool:
    if segment in ("", ".", "..") or (segment[0] == "." and not allow_hidden):
        return True
    # Backslash, colon (drive letters, NTFS streams) and NUL mean something
    # else to some filesystem; trailing dots and spaces vanish on Windows.
    if "\\" in segment or ":" in segment or "\x00" in segment or segment[-1] in ". ":
        return True
    return segment.split(".", 1)[0].rstrip(" ").upper() in _DEVICES
