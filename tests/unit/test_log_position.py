"""Where a followed log stream resumes (rayinfra.client.services.LogPosition): pure logic."""

from __future__ import annotations

from rayinfra.client.services import LogPosition


def feed(pos: LogPosition, lines: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(at, msg) for at, msg in lines if pos.fresh(at, msg)]


def test_a_stream_that_is_not_resumed_yields_everything_even_repeats() -> None:
    pos = LogPosition()
    lines = [(10.1, "a"), (10.1, "a"), (10.2, "b"), (10.15, "late")]
    assert feed(pos, lines) == lines


def test_a_resumed_stream_skips_what_was_yielded_at_the_last_second() -> None:
    pos = LogPosition()
    assert feed(pos, [(10.1, "a"), (10.5, "x"), (10.5, "x")]) == [
        (10.1, "a"),
        (10.5, "x"),
        (10.5, "x"),
    ]
    pos.resume()  # re-opened at second 10: it sends that second's lines again
    replay = [(10.1, "a"), (10.5, "x"), (10.5, "x"), (10.5, "x"), (11.0, "y"), (10.9, "z")]
    # the third "x" at 10.5 is new (printed twice before the break, three times in all)
    assert feed(pos, replay) == [(10.5, "x"), (11.0, "y"), (10.9, "z")]


def test_lines_without_a_timestamp_are_never_skipped_nor_counted() -> None:
    pos = LogPosition()
    assert feed(pos, [(0, "actor line")] * 3) == [(0, "actor line")] * 3
    assert pos.at == 0
    pos.resume()
    assert feed(pos, [(0, "actor line")]) == [(0, "actor line")]


def test_nothing_yielded_yet_means_no_position() -> None:
    assert LogPosition().at is None
