"""The import's pause of the cyclic garbage collector: on again after the last of several
overlapping prepares, even when one fails; left off if it was off before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mailsvc.directory.roster_import import _collector_paused


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_overlapping_pauses_enable_it_again_after_the_last() -> None:
    gc.enable()
    first, second = _collector_paused(), _collector_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # the first ends while the second still runs
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_failing_prepare_enables_it_again() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), _collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("directory gone")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with _collector_paused():
        pass
    assert not gc.isenabled()
