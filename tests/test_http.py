"""The pure HTTP rules in wsgipipe._http: ranges, validators, conditions, header filters."""

from __future__ import annotations

import itertools
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.http import http_date, parse_options_header

from wsgipipe import RangeNotSatisfiable
from wsgipipe._http import (
    MAX_ACCEPT_ENCODING,
    MAX_RANGES,
    ByteRange,
    byte_ranges,
    choose_encoding,
    content_disposition,
    content_type,
    etag_for,
    http_date_value,
    if_range_matches,
    multipart,
    not_modified_headers,
    precondition_status,
    unsatisfiable_headers,
)

SIZE = 1000
ETAG = etag_for(SIZE, 1_700_000_000_123_456_789)
MODIFIED = 1_700_000_000


class TestByteRanges:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("bytes=0-", [(0, SIZE)]),  # whole file is still a 206 (werkzeug#1704)
            ("bytes=0-0", [(0, 1)]),  # one byte (whitenoise#711)
            ("bytes=5-5", [(5, 6)]),
            ("bytes=-1", [(SIZE - 1, SIZE)]),  # the last byte
            ("bytes=-5000", [(0, SIZE)]),  # suffix longer than the file: all of it
            ("bytes=990-5000", [(990, SIZE)]),  # last-pos past the end is clipped
            ("bytes=0-9,200-209", [(0, 10), (200, 210)]),
            ("bytes = 0-9 , 500-509", [(0, 10), (500, 510)]),
            ("BYTES=0-1", [(0, 2)]),  # the unit is case-insensitive
        ],
    )
    def test_satisfiable(self, header: str, expected: list[tuple[int, int]]) -> None:
        assert byte_ranges(header, SIZE) == [ByteRange(*r) for r in expected]

    @pytest.mark.parametrize(
        "header",
        [None, "", "bytes=-", "bytes=abc", "bytes=", "items=0-5", "bytes=5-2", "0-5", "bytes=-0"],
    )
    def test_malformed_is_ignored(self, header: str | None) -> None:
        assert byte_ranges(header, SIZE) is None

    @pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=1000-1001,2000-"])
    def test_start_at_or_past_the_end_is_416(self, header: str) -> None:
        with pytest.raises(RangeNotSatisfiable) as info:
            byte_ranges(header, SIZE)
        assert info.value.status_hint == 416
        assert ("Content-Range", f"bytes */{SIZE}") in info.value.headers

    def test_unsatisfiable_specs_are_dropped_when_another_is_satisfiable(self) -> None:
        assert byte_ranges("bytes=0-9,5000-6000", SIZE) == [ByteRange(0, 10)]

    def test_empty_file_ignores_range(self) -> None:
        assert byte_ranges("bytes=0-", 0) is None

    def test_overlapping_suffix_is_coalesced(self) -> None:
        # "-100" resolves to 900-999 and overlaps "850-949": one part, not two.
        assert byte_ranges("bytes=850-949,-100", SIZE) == [ByteRange(850, SIZE)]

    def test_nearby_ranges_are_merged(self) -> None:
        assert byte_ranges("bytes=0-9,20-29,700-709", SIZE) == [(0, 30), (700, 710)]

    def test_too_many_ranges_are_refused(self) -> None:
        specs = ",".join(f"{i * 20}-{i * 20}" for i in range(MAX_RANGES + 1))
        assert byte_ranges(f"bytes={specs}", 100_000) is None

    @given(
        size=st.integers(min_value=0, max_value=10_000),
        specs=st.lists(
            st.tuples(st.integers(-20_000, 20_000), st.integers(-20_000, 20_000)), max_size=40
        ),
    )
    def test_never_more_than_the_file(self, size: int, specs: list[tuple[int, int]]) -> None:
        """Whatever the header, ranges stay inside the file and never overlap."""
        header = "bytes=" + ",".join(f"{a}-{b}" if a >= 0 else f"{a}" for a, b in specs)
        try:
            ranges = byte_ranges(header, size)
        except RangeNotSatisfiable:
            return
        if ranges is None:
            return
        assert sum(r.length for r in ranges) <= size
        for r in ranges:
            assert 0 <= r.start < r.stop <= size
        for a, b in itertools.pairwise(ranges):
            assert a.stop < b.start

    def test_content_range_is_inclusive(self) -> None:
        assert ByteRange(0, 1).content_range(SIZE) == "bytes 0-0/1000"


class TestValidators:
    def test_etag_is_strong_and_changes_with_size_and_mtime(self) -> None:
        tags = {etag_for(10, 1), etag_for(11, 1), etag_for(10, 2), etag_for(10, 1, "gzip")}
        assert len(tags) == 4
        assert all(t.startswith('"') and t.endswith('"') for t in tags)

    def test_precedence_if_none_match_over_if_modified_since(self) -> None:
        # whitenoise#202: after a rollback the mtime is older but the ETag differs.
        status = precondition_status(
            "GET",
            ETAG,
            MODIFIED,
            if_none_match='"old"',
            if_modified_since=http_date(MODIFIED + 3600),
        )
        assert status == 200

    @pytest.mark.parametrize("value", [ETAG, f"W/{ETAG}", f'"x", {ETAG}', "*"])
    def test_if_none_match_weak_comparison(self, value: str) -> None:
        assert precondition_status("GET", ETAG, MODIFIED, if_none_match=value) == 304
        assert precondition_status("HEAD", ETAG, MODIFIED, if_none_match=value) == 304

    def test_if_modified_since(self) -> None:
        assert (
            precondition_status("GET", ETAG, MODIFIED, if_modified_since=http_date(MODIFIED)) == 304
        )
        assert (
            precondition_status("GET", ETAG, MODIFIED, if_modified_since=http_date(MODIFIED - 1))
            == 200
        )
        assert precondition_status("GET", ETAG, MODIFIED, if_modified_since="garbage") == 200

    @pytest.mark.parametrize(("value", "status"), [(ETAG, 200), ("*", 200), ('"x"', 412)])
    def test_if_match_strong(self, value: str, status: int) -> None:
        assert precondition_status("GET", ETAG, MODIFIED, if_match=value) == status

    def test_if_match_never_matches_weak(self) -> None:
        assert precondition_status("GET", ETAG, MODIFIED, if_match=f"W/{ETAG}") == 412

    def test_if_unmodified_since(self) -> None:
        older = http_date(MODIFIED - 10)
        assert precondition_status("GET", ETAG, MODIFIED, if_unmodified_since=older) == 412
        newer = http_date(MODIFIED)
        assert precondition_status("GET", ETAG, MODIFIED, if_unmodified_since=newer) == 200
        # §13.1.4: ignored when If-Match is present.
        assert (
            precondition_status("GET", ETAG, MODIFIED, if_match=ETAG, if_unmodified_since=older)
            == 200
        )

    @pytest.mark.parametrize(
        ("value", "allowed"),
        [
            (None, True),
            (ETAG, True),
            (f"W/{ETAG}", False),  # weak never matches (werkzeug PR#3163)
            ('"other"', False),
            (http_date(MODIFIED), True),  # exact date
            (http_date(MODIFIED - 1), False),  # older
            ("nonsense", False),
        ],
    )
    def test_if_range(self, value: str | None, allowed: bool) -> None:
        assert if_range_matches(value, ETAG, MODIFIED) is allowed

    @pytest.mark.parametrize(
        "value",
        [
            f"{http_date(MODIFIED)}, {http_date(MODIFIED)}",  # two headers joined
            "Sat, 01 Jan 0000 00:00:00 GMT",  # year 0 is no year 2000
            "Mon, 01 Jan 0099 00:00:00 GMT",
            "01 Jan 2100 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 Nov 1994 08:49:37 GMT\r\nX: y",
            "",
        ],
    )
    def test_invalid_dates_are_ignored(self, value: str) -> None:
        # RFC 9110 §13.1.3 (If-Modified-Since), §13.1.4, §13.1.5: ignore them.
        assert http_date_value(value) is None
        assert precondition_status("GET", ETAG, MODIFIED, if_modified_since=value) == 200
        old = MODIFIED + 10
        assert precondition_status("GET", ETAG, old, if_unmodified_since=value) == 200

    @pytest.mark.parametrize(
        "value",
        [
            "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
            "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
            "Sun Nov  6 08:49:37 1994",  # asctime
        ],
    )
    def test_the_three_http_date_forms(self, value: str) -> None:
        date = http_date_value(value)
        assert date is not None and date.timestamp() == 784111777


class TestHeaderFilters:
    HEADERS: ClassVar[list[tuple[str, str]]] = [
        ("Content-Type", "text/plain"),
        ("Content-Length", "10"),
        ("ETag", ETAG),
        ("Last-Modified", http_date(MODIFIED)),
        ("Cache-Control", "max-age=60"),
        ("Vary", "Accept-Encoding"),
        ("Content-Location", "/a.txt"),
        ("Expires", http_date(MODIFIED + 60)),
        ("Access-Control-Allow-Origin", "*"),
        ("Content-Encoding", "gzip"),
    ]

    def test_304_keeps_validators_caching_and_cors(self) -> None:
        kept = {k for k, _ in not_modified_headers(self.HEADERS)}
        assert kept == {
            "ETag",
            "Last-Modified",
            "Cache-Control",
            "Vary",
            "Content-Location",
            "Expires",
            "Access-Control-Allow-Origin",
        }

    def test_416_adds_content_range(self) -> None:
        headers = dict(unsatisfiable_headers(self.HEADERS, 77))
        assert headers["Content-Range"] == "bytes */77"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "Content-Length" not in headers


class TestMultipart:
    def test_length_matches_the_parts(self) -> None:
        ranges = [ByteRange(0, 10), ByteRange(500, 600)]
        plan = multipart(ranges, SIZE, "text/plain", "BOUNDARY")
        body = b"".join(head + b"x" * rng.length for head, rng in plan.parts) + plan.trailer
        assert len(body) == plan.length
        assert body.startswith(b"--BOUNDARY\r\nContent-Type: text/plain\r\n")
        second = b"\r\n--BOUNDARY\r\nContent-Type: text/plain\r\nContent-Range: bytes 500-599/1000"
        assert second + b"\r\n\r\n" in body
        assert body.endswith(b"\r\n--BOUNDARY--\r\n")
        assert plan.content_type == "multipart/byteranges; boundary=BOUNDARY"


class TestRepresentation:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("a.html", "text/html; charset=utf-8"),
            ("a.CSS", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("x.svg", "image/svg+xml; charset=utf-8"),
            ("x.png", "image/png"),
            ("x.woff2", "font/woff2"),
            ("x.tar.gz", "application/gzip"),  # never mislabel the compressed bytes
            ("noext", "application/octet-stream"),
            ("dir.d/noext", "application/octet-stream"),
        ],
    )
    def test_content_type(self, name: str, expected: str) -> None:
        assert content_type(name) == expected

    def test_content_type_overrides(self) -> None:
        assert content_type("a.md", {".md": "text/markdown"}) == "text/markdown; charset=utf-8"

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (None, []),
            ("gzip", ["gzip"]),
            ("gzip, br", ["br", "gzip"]),  # tie: the server's order
            ("gzip;q=1, br;q=0.5", ["gzip", "br"]),
            ("br;q=0, *", ["gzip"]),  # a specific q=0 beats the wildcard
            ("*;q=0", []),
            ("identity", []),
            ("x-gzip", ["gzip"]),
        ],
    )
    def test_choose_encoding(self, header: str | None, expected: list[str]) -> None:
        assert choose_encoding(header, ("br", "gzip")) == expected

    def test_oversized_accept_encoding_is_ignored(self) -> None:
        # Parsing costs about 0.5 ms per KiB; real clients send a few dozen bytes.
        padded = "gzip, " + "x" * MAX_ACCEPT_ENCODING
        assert choose_encoding(padded, ("br", "gzip")) == []
        assert choose_encoding("gzip, " + "x" * 100, ("br", "gzip")) == ["gzip"]


class TestContentDisposition:
    def test_ascii(self) -> None:
        assert content_disposition("report.pdf", as_attachment=True) == (
            'attachment; filename="report.pdf"'
        )

    def test_inline_without_name(self) -> None:
        assert content_disposition(None) == "inline"

    def test_non_ascii_gets_rfc8187_filename_star(self) -> None:
        value = content_disposition("résumé €.pdf", as_attachment=True)
        _, params = parse_options_header(value)
        assert params["filename"] == "résumé €.pdf"  # werkzeug prefers filename*
        assert 'filename="resume .pdf"' in value
        assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%82%AC.pdf" in value

    def test_quotes_and_control_characters_cannot_break_the_header(self) -> None:
        value = content_disposition('a"b\\c\r\nSet-Cookie: x=1.txt', as_attachment=True)
        assert "\r" not in value and "\n" not in value
        _, params = parse_options_header(value)
        assert params["filename"] == 'a"b\\cSet-Cookie: x=1.txt'
