"""Stopping a server kills what is left of its process group, even after its leader exited."""

from __future__ import annotations

import os
import subprocess
import time

from mailsvc.stack.supervise import _kill_group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_the_group_is_killed_when_its_leader_is_already_gone() -> None:
    # The leader starts a child in its own new group, prints the child's pid and exits (as a
    # daemon's master can, leaving workers behind).
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert leader.stdout is not None
    with leader.stdout:
        child = int(leader.stdout.readline())
    leader.wait()
    assert _alive(child) and os.getpgid(child) == leader.pid
    _kill_group(leader.pid)
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.02)
    assert not _alive(child)
