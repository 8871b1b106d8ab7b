"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where mailsvc spends its time.

.venv/bin/python bench/relay_profile.py /tmp/prof.txt [--top 30] [--grep smtp]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """'func (path/to/module.py:123)' → 'module.py:func' (site-packages and lib prefixes cut)."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{m['func']}"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            frames = [_name(f) for f in m[1].split(";") if f.strip()]
            stacks.append((frames, int(m[2])))
    return stacks


def summarize(path: Path, top: int = 30, grep: str | None = None) -> str:
    stacks = load(path)
    total = sum(n for _, n in stacks)
    if not total:
        return f"{path}: no samples"
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in stacks:
        # thread frames come first in py-spy's raw output ("thread (0x..)"); skip them
        frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    lines = [f"py-spy profile {path}: {total} samples (active threads only)"]
    lines.append(f"{'inclusive':>9} {'self':>6}  function")
    shown = 0
    for name, n in inclusive.most_common():
        if grep and grep not in name:
            continue
        lines.append(f"{100 * n / total:8.1f}% {100 * own[name] / total:5.1f}%  {name}")
        shown += 1
        if shown >= top:
            break
    lines.append("")
    lines.append("top self time:")
    for name, n in own.most_common(top):
        lines.append(f"{100 * n / total:8.1f}%  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--grep")
    args = p.parse_args(argv)
    print(summarize(args.profile, args.top, args.grep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
