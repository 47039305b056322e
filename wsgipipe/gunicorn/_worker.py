"""OffloadWorker: gunicorn's gthread worker, with file downloads handed to one sender thread.

Under gthread a download holds a thread for as long as the client takes to
read it, so ``threads`` slow readers take a worker down. This worker runs
requests exactly as gthread does; only when the app's response is a file the
kernel can send as it is (see :mod:`._transfer`) does the thread send the
headers, give the socket and the file to the per-process :class:`Sender`,
and return to the pool at once. When the transfer ends, the body is closed,
the access log written and ``post_request`` run in the thread pool, and the
connection goes back to gthread's keep-alive poller or is closed.

gthread has no hook between "the app returned" and "log, close, post_request",
so :meth:`OffloadWorker.handle_request` is gthread's, plus the hand-off; it
relies on gthread internals (``nr_conns``, ``method_queue``, ``tpool``,
``finish_request``) of the gunicorn versions in :data:`._limits.SUPPORTED`.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

from .._body import close_all, close_iterable
from .._errors import WsgipipeError
from ._limits import check_nofile, check_version
from ._sender import Job, Sender
from ._transfer import Handoff, body_of, close_now, offloadable

__all__ = ["OffloadWorker"]

#: A stopping worker cuts its offloaded transfers this long before
#: ``graceful_timeout`` ends, so that they are logged before the arbiter's kill.
CUT_MARGIN = 1.5

#: The reason recorded on transfers a stopping worker cuts.
SHUTDOWN = "worker shutdown"


class OffloadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """gthread plus offloading of file responses.

    Use it with ``worker_class = "wsgipipe.gunicorn.OffloadWorker"``.
    """

    sender: Sender
    alive: bool

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        check_version()
        super().check_config(cfg, log)

    def init_process(self) -> None:
        check_nofile(self.cfg, self.log)
        self.sender = Sender(self._transfer_ended)
        self.sender.start()
        self._stop_began: float | None = None
        self._cut = False
        self._stuck_logged = False
        super().init_process()

    # -- the loop: heartbeat, shutdown ------------------------------------------
    def run(self) -> None:
        try:
            super().run()
        finally:
            # Past graceful_timeout (or on an error): whatever is still being
            # sent is cut, closed and logged here, as the process ends.
            self.sender.stop(SHUTDOWN)

    def notify(self) -> None:
        """Heartbeat, only while the sender is alive and turning."""
        now = time.monotonic()
        if not self.alive:
            self._cut_when_due(now)
        if not self.sender.running and not self._cut:
            if self.alive:
                self.log.error("offload sender died (%r); restarting worker", self.sender.failure)
            self.alive = False
        elif self.cfg.timeout and self.sender.stuck_for(now) > self.cfg.timeout / 2:
            # A sendfile blocked on a slow disk blocks every transfer: stop
            # the heartbeat so the arbiter replaces this worker.
            if not self._stuck_logged:
                self.log.error("offload sender stuck for %.0fs", self.sender.stuck_for(now))
                self._stuck_logged = True
            return
        self._stuck_logged = False
        super().notify()

    def _cut_when_due(self, now: float) -> None:
        if self._stop_began is None:
            self._stop_began = now
        elif not self._cut and now - self._stop_began >= self.cfg.graceful_timeout - CUT_MARGIN:
            self._cut = True
            self.sender.cut_all(SHUTDOWN)

    # -- a request, as gthread serves it, plus the hand-off -----------------------
    def handle_request(self, req: Any, conn: Any) -> bool | Handoff:
        environ: dict[str, Any] = {}
        resp = None
        handoff: Handoff | None = None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            self._prepare(resp, environ)
            respiter = self.wsgi(environ, resp.start_response)
            try:
                handoff = self._hand_off(conn, req, resp, environ, respiter, started)
                if handoff is not None:
                    return handoff
                self._send(resp, respiter, environ)
            finally:
                if handoff is None:
                    self.log.access(resp, req, environ, datetime.now() - started)
                    if hasattr(respiter, "close"):
                        respiter.close()
            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                # Headers are out: a 500 would corrupt the response (gthread's rule).
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            if handoff is None:
                self._post_request(req, environ, resp)
        return True

    def _prepare(self, resp: Any, environ: dict[str, Any]) -> None:
        environ["wsgi.multithread"] = True
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            resp.force_close()
        if (
            not self.alive
            or not self.cfg.keepalive
            or len(self.keepalived_conns) >= self.max_keepalived
        ):
            resp.force_close()

    @staticmethod
    def _send(resp: Any, respiter: Any, environ: dict[str, Any]) -> None:
        if isinstance(respiter, environ["wsgi.file_wrapper"]):
            resp.write_file(respiter)
        else:
            for item in respiter:
                resp.write(item)
        resp.close()

    def _hand_off(
        self,
        conn: Any,
        req: Any,
        resp: Any,
        environ: dict[str, Any],
        respiter: Any,
        started: datetime,
    ) -> Handoff | None:
        found = offloadable(conn, resp, respiter, environ)
        if found is None or not self.sender.running or self._cut:
            return None  # after the shutdown cut, what is left runs on the thread
        resp.send_headers()
        body = body_of(respiter)
        if body is not None:
            body.via = "offload"
        return Handoff(found, conn, req, resp, environ, respiter, started)

    def _post_request(self, req: Any, environ: dict[str, Any], resp: Any) -> None:
        try:
            self.cfg.post_request(self, req, environ, resp)
        except Exception:
            self.log.exception("Exception in post_request hook")

    def _keepalive_after(self, conn: Any, keepalive: bool | Handoff) -> bool | Handoff:
        if isinstance(keepalive, Handoff):
            # Drain the request body now, in the worker thread (gthread's
            # rule). Whatever happens, the hand-off goes on: it owns the body.
            try:
                reusable = keepalive.keepalive and super()._keepalive_after(conn, True)
            except Exception:
                reusable = False
            keepalive.keepalive = bool(reusable)
            return keepalive
        return bool(super()._keepalive_after(conn, keepalive))

    # -- main thread: hand the socket over, take it back ---------------------------
    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        handoff = _result(fs)
        if isinstance(handoff, Handoff):
            # The worker thread is done with the socket: the sender owns it
            # now, and it stays counted in nr_conns (worker_connections).
            handoff.sock.setblocking(False)
            self.sender.submit(handoff)
        else:
            super().finish_request(conn, fs)

    def _transfer_ended(self, job: Job) -> None:
        """On the sender thread: close, log and decide keep-alive in the pool."""
        assert isinstance(job, Handoff)
        try:
            fut = self.tpool.submit(self._settle, job)
        except RuntimeError:  # the pool is shut down: the process is ending
            self._settle(job)
            close_now(job.sock, reset=job.ending != "finished")
            return
        fut.add_done_callback(lambda f: self.method_queue.defer(self._reuse_or_close, job, f))

    def _settle(self, job: Handoff) -> bool:
        """In the pool: the ending gthread would have seen, then keep-alive or not."""
        job.resp.sent = job.sent  # the access log's byte count
        reusable = job.ending == "finished" and job.keepalive
        try:
            close_all(lambda: self._account(job), lambda: close_iterable(job.respiter))
        except WsgipipeError as exc:
            # Expected endings raised on purpose (a file that shrank): the
            # connection must close, and the message says why.
            self.log.warning("Closing an offloaded response: %s", exc)
            reusable = False
        except Exception:
            self.log.exception("Error closing an offloaded response")
            reusable = False
        finally:
            self._post_request(job.req, job.environ, job.resp)
        return reusable

    def _account(self, job: Handoff) -> None:
        """The reason, the bytes the kernel sent and the access log, before close()."""
        body = body_of(job.respiter)
        if body is not None and job.reason and job.reason != "client gone":
            body.abort(job.reason)
        seek = getattr(getattr(job.respiter, "filelike", None), "seek", None)
        if seek is not None:
            # As socket.sendfile does: the file position says how far the
            # kernel got, which is how a FileStream counts bytes_sent.
            seek(job.position)
        self.log.access(job.resp, job.req, job.environ, datetime.now() - job.started)

    def _reuse_or_close(self, job: Handoff, fs: Future[bool]) -> None:
        if _result(fs) is True:
            # gthread's keep-alive branch, pipelined bytes included.
            super().finish_request(job.conn, fs)
        else:
            self.nr_conns -= 1
            close_now(job.conn.sock, reset=job.ending != "finished")


def _result(fs: Future[Any]) -> Any:
    if fs.cancelled() or fs.exception() is not None:
        return fs  # let gthread's own handling see the failure
    return fs.result()
