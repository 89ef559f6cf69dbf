"""The one retry rule: exponential, capped, with equal jitter, reset after a success."""

from __future__ import annotations

import pytest

from edge_runtime.backoff import Backoff, backoff_delay


def test_each_delay_lies_between_half_and_all_of_its_ceiling() -> None:
    backoff = Backoff(0.5, 30.0)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2**attempt)
        for _ in range(50):
            assert ceiling / 2 <= backoff_delay(attempt, 0.5, 30.0) <= ceiling
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
        assert backoff.attempt == attempt + 1


def test_delays_grow_until_the_cap_then_stay_under_it() -> None:
    backoff = Backoff(0.1, 3.0)
    delays = [backoff.next_delay() for _ in range(20)]
    # below the cap, attempt n+1 waits at least ceiling(n + 1) / 2 = ceiling(n), which is the
    # most attempt n can wait: the sequence cannot go down
    growing = delays[:6]  # ceilings 0.1, 0.2, 0.4, 0.8, 1.6, 3.0
    assert growing == sorted(growing)
    assert delays[5] >= 1.5
    assert all(1.5 <= d <= 3.0 for d in delays[5:])


def test_reset_starts_again_from_the_minimum() -> None:
    backoff = Backoff(1.0, 60.0)
    for _ in range(8):
        backoff.next_delay()
    assert backoff.next_delay() >= 30.0
    backoff.reset()
    assert backoff.attempt == 0
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_huge_and_negative_attempts_stay_in_range() -> None:
    assert 5.0 <= backoff_delay(10**9, 0.2, 10.0) <= 10.0
    assert 0.1 <= backoff_delay(-3, 0.2, 10.0) <= 0.2


@pytest.mark.parametrize(("minimum", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_bounds_are_refused(minimum: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="0 < minimum <= maximum"):
        Backoff(minimum, maximum)
