"""Observed: the object the app returned is closed exactly once, on every path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wsgipipe import Observed
from wsgipipe._body import close_all
from wsgipipe._handoff import tracked


class AppIterable:
    """An app iterable whose __iter__ returns a *different* object (pallets/werkzeug#1259)."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise OSError("disk went away")
            yield chunk

    def close(self) -> None:
        self.closed += 1


def test_normal_end_closes_the_returned_object_not_its_iterator() -> None:
    app_iter = AppIterable([b"a", b"", b"b"])
    body = Observed(app_iter)
    assert list(body) == [b"a", b"b"], "empty chunks are never handed on"
    assert body.outcome == "finished" and app_iter.closed == 0
    body.close()
    body.close()
    assert app_iter.closed == 1
    assert body.bytes_sent == 2


def test_close_before_first_chunk() -> None:
    app_iter = AppIterable([b"a"])
    body = Observed(app_iter)
    body.close()
    assert app_iter.closed == 1
    assert body.outcome == "aborted"


def test_close_mid_stream() -> None:
    app_iter = AppIterable([b"aa", b"bb", b"cc"])
    body = Observed(app_iter)
    next(body)
    body.close()
    assert app_iter.closed == 1
    assert body.outcome == "aborted"
    assert list(body) == [], "a closed body yields nothing more"


def test_exception_mid_iteration_is_failed_and_still_closed() -> None:
    app_iter = AppIterable([b"a", b"b"], fail_at=1)
    body = Observed(app_iter)
    next(body)
    with pytest.raises(OSError, match="disk went away"):
        next(body)
    body.close()
    assert app_iter.closed == 1
    assert body.outcome == "failed"
    assert isinstance(body.error, OSError)


def test_transform_maps_and_may_drop_chunks() -> None:
    body = Observed(
        [b"keep", b"drop", b"x"], transform=lambda c: b"" if c == b"drop" else c.upper()
    )
    assert list(body) == [b"KEEP", b"X"]
    body.close()


def test_prime_surfaces_the_first_error_and_keeps_the_first_chunk() -> None:
    pulled: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"", b"1", b"2"):
            pulled.append(chunk)
            yield chunk

    body = Observed(chunks())
    body.prime()
    assert pulled == [b"", b"1"], "the first non-empty chunk was pulled, no more"
    assert list(body) == [b"1", b"2"]
    body.close()
    assert body.outcome == "finished"

    failing = Observed(AppIterable([b"a"], fail_at=0))
    with pytest.raises(OSError, match="disk went away"):
        failing.prime()
    failing.close()


def test_source_is_iterated_and_the_returned_object_closed() -> None:
    returned = AppIterable([b"never read"])
    body = Observed(returned, source=iter([b"from the source"]))
    assert list(body) == [b"from the source"]
    body.close()
    assert returned.closed == 1


def test_inner_close_error_is_reraised_after_callbacks() -> None:
    class Bad(AppIterable):
        def close(self) -> None:
            super().close()
            raise RuntimeError("inner close")

    app_iter = Bad([b"a"])
    seen: list[str | None] = []
    body = Observed(app_iter)
    body.on_close(lambda b: seen.append(b.outcome))
    with pytest.raises(RuntimeError, match="inner close"):
        body.close()
    assert app_iter.closed == 1
    assert seen == ["failed"], "callbacks still ran, and saw the failure"


def test_close_all_runs_every_step_and_raises_the_first() -> None:
    ran: list[int] = []

    def fail(n: int) -> None:
        ran.append(n)
        raise ValueError(n)

    with pytest.raises(ValueError, match="1"):
        close_all(lambda: fail(1), lambda: ran.append(2), lambda: fail(3))
    assert ran == [1, 2, 3]


def test_tracked_sees_through_a_file_wrapper() -> None:
    body = Observed([b"x"])

    class Wrapper:
        filelike = body

    assert tracked(body) is body
    assert tracked(Wrapper()) is body  # type: ignore[arg-type]
    assert tracked([b"x"]) is None
    body.close()
