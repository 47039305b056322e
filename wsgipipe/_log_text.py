"""Client input made safe for a log line (a leaf: imports nothing from wsgipipe).

Every log line that carries something the client chose (the request path,
the method) passes it through :func:`log_text`, so that no request can
write a line of its own (a ``%0a`` in the path becomes a real newline in
``PATH_INFO``) or send terminal escape sequences to whoever reads the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["log_text", "request_target"]

# Visible ASCII stays as it is, except "%", which is encoded like everything
# else so that the escaping can be undone without ambiguity. Space, control
# characters (CR, LF, ESC), DEL and non-ASCII become %XX.
_KEEP = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def log_text(text: str, *, spaces: bool = False) -> str:
    """``text`` with every byte outside visible ASCII percent-encoded.

    PEP 3333 environ strings are bytes decoded as latin-1, so they are
    encoded back to those bytes; any other text is encoded as UTF-8.
    ``spaces=True`` keeps spaces, for free text at the end of a line (an
    error message); a field such as the path never has one.
    """
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return quote(raw, safe=_KEEP + " " if spaces else _KEEP)


def request_target(environ: WSGIEnvironment) -> str:
    """``METHOD /path`` for a log line, both escaped by :func:`log_text`."""
    method = log_text(environ.get("REQUEST_METHOD", "?"))
    path = log_text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return f"{method} {path or '/'}"
