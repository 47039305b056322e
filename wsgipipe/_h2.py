"""One HTTP/2 stream under gunicorn 27: what a response can learn about its own stream.

gunicorn 27 serves HTTP/2 (``http_protocols = h2``) in the worker thread, one
stream of a connection after another, and writes a response body with
``send_data``. What it exposes per stream, and what wsgipipe does with it:

* **Frames are read only when gunicorn needs them.** With a large client
  window it never reads, so an RST_STREAM or a FIN sits unread while the
  whole body goes out. A :class:`Stream` reads the connection between two
  chunks, in the worker thread that owns it, through gunicorn's own
  ``pump()`` (the call gunicorn makes while a request body is read): a new
  request is queued for gunicorn, a reset marks this stream closed.
* **A stalled stream** (its flow-control window at 0) makes ``send_data``
  wait for at most the connection's ``stream_timeout`` without window
  progress, then reset that stream alone with RST_STREAM(CANCEL) (RFC 9113
  §6.9). Streams of one connection are served one at a time, so setting
  that limit for the time of one response is a per-stream limit:
  :meth:`Stream.limit_stall`.
* **Bytes framed** are counted on gunicorn's stream object (``send_data``
  and ``send_trailers``), which also says whether END_STREAM went out: a
  body is ``finished`` only then.

gunicorn reaches none of this through the environ; the response object is
found in the closure of ``environ["gunicorn.http2.send_trailers"]``. The
pinned gunicorn version (pyproject) is what this is tested against; anything
else degrades to "no stream": plain HTTP/1 behaviour.
"""

from __future__ import annotations

import select
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._body import Body, close_all, close_iterable
from ._errors import ClientGone

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["Guarded", "Stream", "gone", "guard", "stream_of"]

_KEY = "wsgipipe.h2.stream"
#: Frames read per check at most: a peer flooding PINGs cannot hold the body.
_MAX_READS = 8
#: h2's ``StreamClosedBy`` names.
_RECV_RST, _SEND_RST = "RECV_RST_STREAM", "SEND_RST_STREAM"
#: RFC 9113 §7: the stream is no longer needed.
_CANCEL = 0x8
#: Smallest piece handed over under a minimum rate: a cut comes within
#: this many bytes at the client's pace.
_PIECE = 1024


class Stream:
    """The HTTP/2 stream of one response, seen from the worker thread serving it."""

    def __init__(self, response: Any) -> None:
        self.conn = response.h2_conn
        self.id: int = response.stream_id
        self.sent = 0  # DATA bytes framed for this stream
        self.ended = False  # END_STREAM framed
        self.stall_reason: str | None = None
        #: Set by the watchdog thread (minimum rate); the worker thread acts on it.
        self.cut: str | None = None
        #: True while gunicorn writes a chunk of this stream: bytes wait on the client.
        self.writing = False
        self.paced = False  # a minimum rate watches this stream: hand over small pieces
        self._saved_timeout: object = None
        self._owner = threading.get_ident()
        self._stream = self.conn.streams.get(self.id)
        self._h2 = self.conn.h2_conn.streams.get(self.id)
        if self._stream is not None:
            self._count(self._stream)

    def _count(self, stream: Any) -> None:
        send_data, send_trailers = stream.send_data, stream.send_trailers

        def counted_data(data: bytes, end_stream: bool = False) -> None:
            send_data(data, end_stream=end_stream)
            self.sent += len(data)
            self.ended = self.ended or end_stream

        def counted_trailers(trailers: Any) -> None:
            send_trailers(trailers)
            self.ended = True

        stream.send_data, stream.send_trailers = counted_data, counted_trailers

    def poll(self) -> None:
        """Read the frames waiting on the connection (worker thread only).

        From any other thread this only looks: the h2 state machine is not
        thread-safe.
        """
        if threading.get_ident() != self._owner:
            return
        for _ in range(_MAX_READS):
            if self.over() is not None or not self._readable():
                return
            try:
                self.conn.pump(self.id)
            except Exception:  # gunicorn's HTTP/2 errors: it closed the connection
                return

    def over(self) -> str | None:
        """Why this stream can carry no more bytes, or None while it can."""
        if self.conn.is_closed:
            return "client disconnected"
        if self._stream is None or not self._stream.disconnected:
            return None
        closed_by = getattr(getattr(self._h2, "closed_by", None), "name", None)
        if closed_by == _RECV_RST:
            return "client reset stream"
        if closed_by == _SEND_RST and self.stall_reason is not None:
            return self.stall_reason
        return "client disconnected" if closed_by != _SEND_RST else "stream reset"

    def cancel(self) -> None:
        """Reset this stream alone: RST_STREAM(CANCEL) (RFC 9113 §5.4.2)."""
        if threading.get_ident() == self._owner and self.over() is None:
            with suppress(Exception):  # a dead socket: gunicorn closes the connection
                self.conn.abort_stream(self.id, _CANCEL)

    def piece(self, size: int) -> int:
        """How much of a ``size``-byte chunk to hand gunicorn now.

        Under a minimum rate, no more than the open window (at least
        :data:`_PIECE`): a client that opens its window a trickle at a time
        then returns control between trickles, where a cut can happen.
        """
        if not self.paced:
            return size
        try:
            window = int(self.conn.h2_conn.local_flow_control_window(self.id))
        except Exception:  # the stream is closed: gunicorn finds out itself
            return size
        return min(size, max(window, _PIECE))

    def limit_stall(self, seconds: float | None, reason: str) -> None:
        """Reset this stream after ``seconds`` without flow-control window progress."""
        if seconds is None or threading.get_ident() != self._owner:
            return
        if self.stall_reason is None:
            self._saved_timeout = self.conn.stream_timeout
        self.conn.stream_timeout = seconds
        self.stall_reason = reason

    def settle(self, body: Body) -> None:
        """Make ``body`` say what this stream carried, before its close callbacks run."""
        reason = None
        if not self.ended:
            # No END_STREAM: whatever the body thinks, the client got a cut stream.
            reason = self.cut or _write_timeout(self.stall_reason) or self.over()
        if self.stall_reason is not None:
            # The next stream of the connection gets gunicorn's own limit back.
            self.conn.stream_timeout = self._saved_timeout
        # The DATA bytes framed settle any chunk the body counts as pending.
        body.bytes_sent, body._pending = self.sent, 0
        if not self.ended:
            body.abort(reason or "stream not ended")
            if body.outcome in (None, "finished"):
                body.outcome = "aborted"

    def _readable(self) -> bool:
        sock = self.conn.sock
        with suppress(AttributeError):
            if sock.pending():  # TLS bytes already decrypted (RFC 8446 records)
                return True
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return False


def _write_timeout(stall_reason: str | None) -> str | None:
    """The reason when gunicorn's socket write timed out (called while its error unwinds).

    gunicorn's writes inherit the socket timeout of its last read (the
    keep-alive timeout, or the stream limit while a body was read), and
    Python bounds a whole ``sendall`` by it: a client whose socket took no
    bytes for that long loses the connection, as if it had left.
    """
    exc = sys.exc_info()[1]
    if exc is None or not isinstance(exc.__context__, TimeoutError):
        return None
    return stall_reason or "send timeout"


def stream_of(environ: WSGIEnvironment) -> Stream | None:
    """The gunicorn HTTP/2 stream of this request, or None (HTTP/1, other servers)."""
    found = environ.get(_KEY)
    if isinstance(found, Stream):
        return found
    if environ.get("HTTP_VERSION") != "2":
        return None
    response = _closure_value(environ.get("gunicorn.http2.send_trailers"), "resp")
    if response is None or not hasattr(response, "h2_conn"):
        return None
    try:
        stream = environ[_KEY] = Stream(response)
    except AttributeError:  # another gunicorn version: degrade to HTTP/1 behaviour
        return None
    return stream


def _closure_value(function: object, name: str) -> Any:
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None)
    if code is None or not cells or name not in code.co_freevars:
        return None
    try:
        return cells[code.co_freevars.index(name)].cell_contents
    except ValueError:  # an empty cell
        return None


class Guarded:
    """The server's iterable for an HTTP/2 response: the stream is checked between chunks.

    ``filelike`` names the watched body, so that a layer above finds it as
    it finds a file in a server's file wrapper.
    """

    def __init__(self, server: Iterable[bytes], body: Body, stream: Stream) -> None:
        self.server = server
        self.filelike = body
        self.stream = stream
        self._iterator: Iterator[bytes] | None = None
        self._chunk = b""
        self._left = memoryview(b"")

    def __iter__(self) -> Guarded:
        return self

    def __next__(self) -> bytes:
        stream = self.stream
        stream.writing = False  # gunicorn asks for more: what it had is written
        stream.poll()
        reason = stream.cut or stream.over()
        if reason is None:
            try:
                chunk = self._piece()
            except ClientGone as exc:
                reason = exc.reason
            else:
                stream.writing = True
                return chunk
        # Ending the iteration, not raising: gunicorn then finds the stream
        # closed and logs it at debug level, not as an error with a 500.
        self.filelike.abort(reason)
        self.stream.cancel()
        raise StopIteration

    def _piece(self) -> bytes:
        if not self._left:
            if self._iterator is None:
                self._iterator = iter(self.server)
            self._chunk = next(self._iterator)
            self._left = memoryview(self._chunk)
        size = self.stream.piece(len(self._left))
        if size >= len(self._left) == len(self._chunk):
            self._left = memoryview(b"")
            return self._chunk  # the common case: the whole chunk, not copied
        piece, self._left = self._left[:size], self._left[size:]
        return bytes(piece)

    def close(self) -> None:
        self.stream.writing = False
        # The body is closed even if reading gunicorn's stream state fails.
        close_all(lambda: self.stream.settle(self.filelike), lambda: close_iterable(self.server))


def guard(environ: WSGIEnvironment, body: Body, server: Iterable[bytes]) -> Iterable[bytes]:
    """``server`` checked between chunks when this request is an HTTP/2 stream."""
    if isinstance(server, Guarded):
        return server
    stream = stream_of(environ)
    return server if stream is None else Guarded(server, body, stream)


class _Gone(Body):
    """The body for a client that left before the first byte: already aborted."""

    def __init__(self, exc: ClientGone, *, quiet: bool) -> None:
        super().__init__()
        self.abort(exc.reason)
        self.outcome = "aborted"
        self._exc = exc
        self._quiet = quiet

    def __next__(self) -> bytes:
        if self._quiet:
            raise StopIteration
        raise self._exc


def gone(environ: WSGIEnvironment, exc: ClientGone) -> Body:
    """What a layer returns when the client left before the first byte.

    HTTP/1: the ClientGone comes out of the first ``next()``; its ECONNRESET
    makes gunicorn drop the connection and log it at debug level. HTTP/2:
    this stream is reset alone and the body ends at once, which gunicorn
    logs at debug level too (an exception would be an ERROR and a 500).
    """
    stream = stream_of(environ)
    if stream is not None:
        stream.cancel()
    return _Gone(exc, quiet=stream is not None)
