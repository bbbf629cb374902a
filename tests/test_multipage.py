"""The multi-page mini-transaction check on hand-made histories: it passes and it fails."""

from __future__ import annotations

from sixfold.check.history import Event, parse_history, write_event
from sixfold.check.multipage import check_groups


def _history(reads: list[list[list[int | None]]], writes: tuple[int, ...] = (7, 8)) -> list[Event]:
    """Process 0 writes `writes` to group g0 (pages 10, 11); process 1 reads it `reads`."""
    events: list[Event] = []

    def log(process: int, kind: str, f: str, value: object) -> None:
        events.append(Event(len(events), process, kind, f, "g0", value, float(len(events))))

    for value in writes:
        log(0, "invoke", "mwrite", value)
        log(0, "ok", "mwrite", value)
    for read in reads:
        log(1, "invoke", "mread", "r1")
        log(1, "ok", "mread", read)
    return events


def test_pages_read_at_one_read_point_agree() -> None:
    result = check_groups(
        _history(
            [
                [[10, 5, 7], [11, 5, 7]],
                [[10, 6, 8], [11, 9, None]],  # different read points: not compared
                [[10, 9, None], [11, 12, 8]],
            ]
        )
    )
    assert result.violations == ()
    assert result.reads == 6 and result.shared_read_points == 2


def test_pages_written_together_but_read_apart_is_a_violation() -> None:
    result = check_groups(_history([[[10, 5, 7], [11, 6, 7]], [[10, 6, 8], [11, 5, 8]]]))
    assert [(v.group, v.read_point) for v in result.violations] == [("g0", 5), ("g0", 6)]
    assert "pages written together read apart" in str(result.violations[0])
    assert "page 10 = 7" in str(result.violations[0]) and "page 11 = 8" in str(result.violations[0])


def test_a_value_never_written_or_from_a_failed_write_is_a_violation() -> None:
    events = _history([[[10, 5, 99], [11, 5, 99]]])
    assert "never written" in str(check_groups(events).violations[0])
    failed = [*events[:2], Event(2, 0, "invoke", "mwrite", "g0", 9, 2.0)]
    failed += [Event(3, 0, "fail", "mwrite", "g0", 9, 3.0)]
    failed += [Event(4, 1, "invoke", "mread", "g0", "writer", 4.0)]
    failed += [Event(5, 1, "ok", "mread", "g0", [[10, 5, 9], [11, 5, 9]], 5.0)]
    assert "value 9 was never written" in str(check_groups(failed).violations[0])


def test_group_events_round_trip_and_are_left_out_of_the_register_check(tmp_path) -> None:
    from sixfold.check.history import pair_operations

    events = _history([[[10, 5, 7], [11, 5, 7]]])
    path = tmp_path / "h.jsonl"
    with path.open("w") as file:
        for event in events:
            write_event(file, event)
    assert parse_history(path.read_text().splitlines()) == events
    assert pair_operations(events) == []
