"""`python -m mailsvc.cli …` for the tests, without paying the import at every command.

A command's own work is a fraction of a second; importing mailsvc (SQLAlchemy, ldap3, the
relay, the web panel) is about a second of CPU, and the suite runs a few hundred commands. So
each test process keeps one helper process that has imported ``mailsvc.cli.main`` and nothing
else, and forks it once per command. The forked child is a process of its own, as a command
run by hand is: the command's environment and working directory, its stdin from /dev/null, its
stdout and stderr in files, its exit status (``SystemExit``, an uncaught exception's 1 with
the traceback on stderr) as Python's own ``-m`` would give it. Nothing in mailsvc reads the
environment at import (the helper imports with the caller's, MAILSVC_* removed).

``run`` answers as ``subprocess.run(..., capture_output=True, text=True)``. One command at a
time goes through the helper; a second one asked for meanwhile (two threads) runs as a plain
subprocess.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

# The helper: reads one JSON request a line on stdin, forks, answers {"status": N} on stdout.
_HELPER = r"""
import json, os, sys, traceback
from mailsvc.cli.main import main

requests = sys.stdin.buffer
answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
for line in requests:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        status = 1  # unless the command runs and says otherwise
        try:
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            null = os.open(os.devnull, os.O_RDONLY)
            out = os.open(request["stdout"], os.O_WRONLY | os.O_TRUNC)
            err = os.open(request["stderr"], os.O_WRONLY | os.O_TRUNC)
            for fd, target in ((null, 0), (out, 1), (err, 2)):
                os.dup2(fd, target)
                os.close(fd)
            sys.argv = ["mailsvc", *request["args"]]
            try:
                status = main(request["args"])
            except SystemExit as exc:
                code = exc.code
                if code is None or isinstance(code, int):
                    status = code or 0
                else:
                    print(code, file=sys.stderr)
                    status = 1
            except BaseException:
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status or 0)
    answers.write(json.dumps({"pid": pid}) + "\n")
    answers.flush()
    _, wait_status = os.waitpid(pid, 0)
    answers.write(json.dumps({"status": os.waitstatus_to_exitcode(wait_status)}) + "\n")
    answers.flush()
"""


class _Helper:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Unbuffered: a line read ahead into a buffer would hide from select().
            bufsize=0,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def _answer(self, timeout: float) -> dict[str, int]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"the CLI helper did not answer (status {self.proc.poll()})")
        answer: dict[str, int] = json.loads(line)
        return answer

    def run(
        self, args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory(prefix="mscli") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            out.touch()
            err.touch()
            request = {
                "args": list(args),
                "env": dict(env),
                "cwd": str(cwd),
                "stdout": str(out),
                "stderr": str(err),
            }
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            pid = self._answer(timeout)["pid"]
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:  # as subprocess.run does: the command is killed
                os.kill(pid, signal.SIGKILL)
                self.stop()
                raise subprocess.TimeoutExpired(["mailsvc", *args], timeout)
            status = self._answer(timeout)["status"]
            return subprocess.CompletedProcess(
                ["mailsvc", *args],
                status,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )


_helper: dict[str, _Helper] = {}
_start_lock = threading.Lock()


def _the_helper() -> _Helper:
    with _start_lock:
        helper = _helper.get("helper")
        if helper is None or not helper.alive():
            helper = _helper["helper"] = _Helper()
            atexit.register(helper.stop)
        return helper


def run(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``mailsvc ARGS`` with exactly ``env`` in ``cwd``: its status, stdout and stderr."""
    helper = _the_helper()
    if not helper.lock.acquire(blocking=False):
        return subprocess.run(
            [sys.executable, "-m", "mailsvc.cli", *args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    try:
        return helper.run(args, env, cwd, timeout)
    finally:
        helper.lock.release()
