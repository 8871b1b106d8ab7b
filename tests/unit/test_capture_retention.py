"""Retention of the local capture: old files are purged by modification time, 0 keeps all."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from mailsvc.config import DEFAULT_CONFIG, DistributionSettings, load_settings
from mailsvc.errors import ConfigError
from mailsvc.jobs import capture_purge, job_specs
from mailsvc.relay.delivery import capture

if TYPE_CHECKING:
    from mailsvc.jobs import JobContext

DAY = 86400.0
MESSAGE = b"Subject: potwierdzenie\r\n\r\nDzie\xc5\x84 dobry.\r\n"


def captured(directory: Path, age_days: float) -> Path:
    """A file as the capture writes it, last modified ``age_days`` ago."""
    path = capture.store(directory, "", ["jan@example.org"], MESSAGE)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


def aged(path: Path, age_days: float, content: bytes = b"x") -> Path:
    path.write_bytes(content)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


def test_purge_removes_files_older_than_the_retention_and_keeps_newer_ones(
    tmp_path: Path,
) -> None:
    old = [captured(tmp_path, 15), captured(tmp_path, 400)]
    kept = [captured(tmp_path, 13.9), captured(tmp_path, 0)]
    # Left by a store interrupted long ago: as dead as an old message.
    stale = aged(tmp_path / ".20250101T000000.000000Z-0badf00d.eml.tmp", 30)
    # Not the capture's: never touched, however old.
    other = [aged(tmp_path / "README.txt", 100), aged(tmp_path / "notes.eml.bak", 100)]

    assert capture.purge(tmp_path, 14) == 3
    assert not any(p.exists() for p in [*old, stale])
    assert all(p.exists() for p in [*kept, *other])
    assert [m.path for m in capture.list_captured(tmp_path)] == sorted(kept)
    assert capture.purge(tmp_path, 14) == 0  # nothing left to do


def test_purge_measures_age_from_now(tmp_path: Path) -> None:
    path = captured(tmp_path, 1)
    assert capture.purge(tmp_path, 14, now=time.time() + 12 * DAY) == 0
    assert capture.purge(tmp_path, 14, now=time.time() + 14 * DAY) == 1
    assert not path.exists()


def test_zero_retention_keeps_every_file(tmp_path: Path) -> None:
    paths = [captured(tmp_path, 10_000), aged(tmp_path / ".x.eml.tmp", 10_000)]
    assert capture.purge(tmp_path, 0) == 0
    assert all(p.exists() for p in paths)


def test_purge_of_a_capture_that_never_stored_anything(tmp_path: Path) -> None:
    assert capture.purge(tmp_path / "capture", 14) == 0


def test_the_retention_setting_defaults_to_14_days_and_refuses_negatives() -> None:
    assert load_settings(DEFAULT_CONFIG, env={}).smarthost.capture_retention_days == 14
    env = {"MAILSVC_SMARTHOST__CAPTURE_RETENTION_DAYS": "0"}
    assert load_settings(DEFAULT_CONFIG, env=env).smarthost.capture_retention_days == 0
    with pytest.raises(ConfigError) as info:
        load_settings(DEFAULT_CONFIG, env={"MAILSVC_SMARTHOST__CAPTURE_RETENTION_DAYS": "-1"})
    assert "smarthost.capture_retention_days = -1: expected 0 or more" in str(info.value)


def test_the_capture_purge_job_is_registered_next_to_the_relay_log_upkeep() -> None:
    for specs in (job_specs(60.0), job_specs(60.0, distribution=DistributionSettings())):
        by_id = {spec.id: spec for spec in specs}
        assert by_id["capture-purge"].run is capture_purge
        assert by_id["capture-purge"].seconds == by_id["relay-log-upkeep"].seconds == 300.0
    ids = [spec.id for spec in job_specs(60.0, distribution=DistributionSettings())]
    assert ids[:3] == ["councillor-lifecycle", "relay-log-upkeep", "capture-purge"]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("days", "left"), [(14, 1), (0, 2)])
async def test_the_job_purges_the_services_capture_directory(
    tmp_path: Path, days: int, left: int
) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=tmp_path, smarthost={"capture_retention_days": days}
    )
    directory = capture.capture_dir(tmp_path)
    old, new = captured(directory, 20), captured(directory, 1)
    ctx = cast("JobContext", SimpleNamespace(settings=settings))
    assert await capture_purge(ctx) == 2 - left
    assert new.exists() and old.exists() == (days == 0)
    assert len(capture.list_captured(directory)) == left
