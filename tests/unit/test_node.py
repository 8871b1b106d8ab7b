"""A node's id: configured, or made once and kept under var_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.config.check import validate
from mailsvc.errors import ConfigError
from mailsvc.node import node_id


def test_node_id_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(var_dir=tmp_path)
    first = node_id(settings)
    assert first == node_id(settings)
    assert (tmp_path / "node-id").read_text().strip() == first
    other = settings.with_changes(var_dir=tmp_path / "other")
    assert node_id(other) != first


def test_configured_node_id_wins(tmp_path: Path) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=tmp_path, cluster={"node_id": "urzad-1"}
    )
    assert node_id(settings) == "urzad-1"
    assert not (tmp_path / "node-id").exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"node_id": "bad id!"}, "cluster.node_id"),
        ({"lease_seconds": 10.0, "heartbeat_seconds": 5.0}, "cluster.lease_seconds"),
        ({"heartbeat_seconds": 0.0}, "cluster.heartbeat_seconds"),
    ],
)
def test_bad_cluster_settings_are_named(changes: dict[str, object], named: str) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(cluster=changes)
    with pytest.raises(ConfigError, match=named):
        validate(settings)
