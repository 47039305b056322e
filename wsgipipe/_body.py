"""Response bodies that know how their transfer ended.

:class:`Body` is the base of every iterable wsgipipe hands to a server. It
keeps the ``close()`` contract of PEP 3333 in one place:

* ``close()`` is idempotent and safe in every state;
* it runs every cleanup step even if an earlier one raised, then re-raises the
  first error;
* it never defines ``__len__`` and is always truthy, so no server or
  middleware can mistake it for an empty response;
* it records ``bytes_sent`` and an ``outcome``: ``None`` while running, then
  ``"finished"``, ``"aborted"`` (closed before the body was exhausted) or
  ``"failed"`` (an exception ended it).

:class:`Observed` wraps any app iterable: it keeps the object the app
returned and closes *that* object, never ``iter(obj)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal, TypeAlias

from ._errors import ClientGone

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = [
    "READS_BODY",
    "Body",
    "Observed",
    "Outcome",
    "close_all",
    "close_iterable",
    "server_wrapper",
]

Outcome: TypeAlias = Literal["finished", "aborted", "failed"]
Chunk: TypeAlias = bytes
Transform: TypeAlias = Callable[[bytes], bytes]

#: Set in the environ by a layer that reads the body (Tee, Through...) before
#: it calls its app, so that no layer beneath builds a server file wrapper
#: that it would only undo (the rule is in :mod:`wsgipipe._handoff`).
READS_BODY = "wsgipipe.reads_body"


def close_iterable(iterable: object) -> None:
    """Call ``iterable.close()`` if it has one, as PEP 3333 asks of a server."""
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


def close_all(*steps: Callable[[], object]) -> None:
    """Run every step, even if one raises; then re-raise the first error."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except BaseException as exc:
            if first is None:
                first = exc
    if first is not None:
        raise first


class Body:
    """Base class of wsgipipe's response iterables (see module docstring)."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        #: Why the transfer was aborted, when wsgipipe knows (``"idle timeout"``).
        self.reason: str | None = None
        #: How the bytes moved, when known: ``"sendfile"`` (the server's
        #: zero-copy path) or ``"python"`` (read and handed over in chunks).
        self.via: str | None = None
        self._pending = 0
        self._closed = False
        self._close_lock = threading.Lock()
        self._callbacks: list[Callable[[Body], object]] = []

    # -- what subclasses provide ------------------------------------------
    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:
        """Free what this body holds (file, inner iterable). Runs once."""

    # -- the contract -----------------------------------------------------
    def __bool__(self) -> bool:
        # An empty-looking body must not make a server or middleware skip
        # close() (Pylons/webob#74); there is deliberately no __len__ either.
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def on_close(self, callback: Callable[[Body], object]) -> None:
        """Call ``callback(self)`` once the server has closed this body.

        Callbacks run in registration order, after the body's own resources
        are released; a callback added after ``close()`` runs at once.
        """
        if self._closed:
            callback(self)
        else:
            self._callbacks.append(callback)

    def abort(self, reason: str) -> None:
        """Mark why this transfer is ending early; ``close()`` still must run."""
        if self.reason is None:
            self.reason = reason

    def close(self) -> None:
        """Release everything; idempotent, safe in every state, never skips a step."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        callbacks = self._callbacks
        self._callbacks = []
        try:
            self._release()
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            if self.outcome is None:
                self.outcome = "aborted"
            close_all(*(_bind(cb, self) for cb in callbacks))

    # -- bookkeeping shared by subclasses ---------------------------------
    def _emit(self, chunk: bytes) -> bytes:
        # A chunk counts as sent once the server asks for the next one (or
        # reaches the end): only then do we know its write did not fail.
        self.bytes_sent += self._pending
        self._pending = len(chunk)
        return chunk

    def _delivered(self) -> None:
        # The server asks for another chunk only after writing the last one,
        # so it counts even if producing the next one fails.
        self.bytes_sent += self._pending
        self._pending = 0

    def _next_failed(self, exc: BaseException) -> None:
        """Producing the next chunk raised: the previous one was written."""
        self._delivered()
        self._fail(exc)

    def _finish(self) -> None:
        self._delivered()
        if self.outcome is None:
            self.outcome = "finished"

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, ClientGone):
            # The client left (or stopped reading): an abort, not a failure
            # (docs/decisions.md#aborts-are-not-errors).
            self.abort(exc.reason)
            if self.outcome is None:
                self.outcome = "aborted"
            return
        if self.outcome in (None, "aborted"):
            self.outcome = "failed"
        if self.error is None:
            self.error = exc


def _bind(callback: Callable[[Body], object], body: Body) -> Callable[[], object]:
    return lambda: callback(body)


class Observed(Body):
    """Wrap an app iterable: count it, optionally transform each chunk, close it once.

    ``transform`` sees every non-empty chunk and returns what the server gets;
    returning ``b""`` drops the chunk. The object the app returned is closed
    exactly once, on every path, before the close callbacks run.

    ``source``, when given, is iterated instead of ``iterable`` (a wsgipipe
    stream found inside a server's file wrapper); ``iterable`` is still the
    one closed.
    """

    def __init__(
        self,
        iterable: Iterable[bytes],
        *,
        source: Iterable[bytes] | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__()
        self.returned = iterable
        self._source = iterable if source is None else source
        self._transform = transform
        self._iterator: Iterator[bytes] | None = None
        self._exhausted = False
        self._ready: bytes | None = None  # a primed chunk, already transformed

    def prime(self) -> None:
        """Pull the first chunk now, so that its errors surface before any byte is sent.

        The chunk is kept and handed to the server first; an empty body ends
        at the next ``next()``. Used by :class:`wsgipipe.FileErrors`.
        """
        if self._ready is not None or self._exhausted or self._closed:
            return
        try:
            self._ready = self._pull()
        except StopIteration:
            self._ready = b""

    def __next__(self) -> bytes:
        if self._ready is not None:
            chunk, self._ready = self._ready, None
            if chunk:
                self.via = "python"
                return self._emit(chunk)
        if self._exhausted or self._closed:
            raise StopIteration
        try:
            chunk = self._pull()
        except StopIteration:
            self._exhausted = True
            self._finish()
            raise
        except BaseException as exc:
            self._next_failed(exc)
            raise
        self.via = "python"
        return self._emit(chunk)

    def _pull(self) -> bytes:
        while True:
            if self._iterator is None:
                self._iterator = iter(self._source)
            chunk = next(self._iterator)
            if chunk and self._transform is not None:
                chunk = self._transform(chunk)
            if chunk:  # never hand the server an empty chunk (PEP 3333)
                return chunk

    def _release(self) -> None:
        close_iterable(self.returned)


def server_wrapper(environ: WSGIEnvironment) -> Callable[..., Iterable[bytes]] | None:
    """The server's ``wsgi.file_wrapper``, if a file body may be handed to it.

    Not when a layer above reads the body (:data:`READS_BODY`). Not under
    uWSGI, whose file_wrapper sends the descriptor from byte 0 whatever its
    offset (falcon PR#1991), so a range would get the wrong bytes, and never
    reads or seeks through the file object, so the record would say
    "aborted 0 B" for a complete download: reading in Python is correct there.
    """
    if READS_BODY in environ or "uwsgi.version" in environ:
        return None
    wrapper: Callable[..., Iterable[bytes]] | None = environ.get("wsgi.file_wrapper")
    return wrapper
