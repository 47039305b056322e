"""An HTTP/2 client for the real-server tests that drives flow control exactly.

It never sends WINDOW_UPDATE unless told to, so a small initial window is a
stalled stream; over TLS it offers ``h2`` by ALPN.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class Reply:
    """What one stream got."""

    status: int | None = None
    data: int = 0
    ended: bool = False
    reset: int | None = None  # the server's RST_STREAM error code
    headers: dict[str, str] = field(default_factory=dict)


class H2Client:
    """One HTTP/2 connection to 127.0.0.1 (prior knowledge, or TLS with ALPN)."""

    def __init__(
        self,
        port: int,
        *,
        window: int = 65535,
        tls: bool = False,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        raw = socket.socket()
        if rcvbuf is not None:  # a reader that stops fills the server's socket soon
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", port))
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw)
            assert raw.selected_alpn_protocol() == "h2"
        self.sock = raw
        config = h2.config.H2Configuration(client_side=True)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.conn.initiate_connection()
        if window > 65535:  # the connection window starts at 65535 whatever the setting
            self.conn.increment_flow_control_window(window - 65535)
        self.flush()
        self.replies: dict[int, Reply] = {}
        self.goaway: int | None = None
        self.closed = False

    def get(self, path: str) -> int:
        """Send a GET; the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
        self.conn.send_headers(stream_id, [*headers, (":authority", "127.0.0.1")], end_stream=True)
        self.replies[stream_id] = Reply()
        self.flush()
        return stream_id

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        self.flush()

    def ping(self) -> None:
        self.conn.ping(b"12345678")
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def read_until(
        self, done: Callable[[], bool], timeout: float = 10.0, *, ack: bool = False
    ) -> bool:
        """Read frames until ``done()`` or the deadline; ``ack`` gives window back."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(done())
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                continue
            for event in self.conn.receive_data(data):
                self._event(event, ack)
            self.flush()
        return True

    def _event(self, event: h2.events.Event, ack: bool) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            reply = self.replies[event.stream_id]
            reply.headers = {k.decode(): v.decode() for k, v in event.headers}
            reply.status = int(reply.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.replies[event.stream_id].data += len(event.data)
            if ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.replies[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.replies[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code

    def trickle(self, stream_id: int, size: int, every: float, timeout: float) -> bool:
        """Open the window ``size`` bytes every ``every`` s until the stream ends or resets."""
        deadline = time.monotonic() + timeout
        reply = self.replies[stream_id]
        while reply.reset is None and not reply.ended and time.monotonic() < deadline:
            self.read_until(lambda: False, timeout=every)
            if reply.reset is None and not reply.ended:
                self.conn.increment_flow_control_window(size, stream_id)
                self.conn.increment_flow_control_window(size)
                self.flush()
        return reply.reset is not None or reply.ended

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
