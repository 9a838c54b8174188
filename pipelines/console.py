"""What ``tdds run`` shows while kfp.local runs a pipeline: one line per task (name, state, seconds,
cache hit) on the terminal, and everything else kfp.local prints (the executor input and output
JSON, each task's streamed log) in a log file.

kfp.local writes its task log lines and the tasks' output through ``sys.stdout`` and announces cache
hits through the root logger; :func:`task_lines` captures both for the duration of a run.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import IO, Iterator, Optional

__all__ = ["TaskLines", "task_lines", "log_tail", "TASK_LINE"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_DONE = re.compile(r"Task '([^']+)' finished with status (\w+)")
_HIT = re.compile(r"Task (\S+) cache hit")
#: a line :class:`TaskLines` prints for a task that ran (group 1: the task's name); cached tasks print
#: ``<name> cached`` instead
TASK_LINE = re.compile(r"^  ([a-z0-9-]+)(?: #\d+)?\s+(?:done|FAILED)\s+-?[\d.]+ s$", re.M)


class TaskLines(io.TextIOBase):
    """A text stream that copies everything into ``log`` and writes one line per task event to
    ``out``: ``<task>  running`` is not shown; ``<task>  done  12.3 s``, ``<task>  FAILED  4.0 s`` and
    ``<task>  cached`` are. Thread-safe (kfp.local runs loop iterations in threads)."""

    def __init__(self, log: IO[str], out: IO[str]):
        super().__init__()
        self.log, self.out = log, out
        self.started: dict[str, list[tuple[int, float]]] = {}   # task -> (ordinal, start) of its running instances
        self.seen: dict[str, int] = {}                              # task -> instances started so far
        self.counts = {"done": 0, "cached": 0, "failed": 0}
        self.failed: list[str] = []           # names of the tasks that failed, in order
        self._buf = ""
        self._lock = threading.RLock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
            text = _ANSI.sub("", s)
            if self.log.closed:      # a handler someone made during the run, used after it: nothing to keep
                return len(s)
            self.log.write(text)
            self._buf += text
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self._event(line)
        return len(s)

    def flush(self) -> None:
        with self._lock:
            if not self.log.closed:
                self.log.flush()
            self.out.flush()

    def _event(self, line: str) -> None:
        if m := _START.search(line):
            name = m.group(1)
            self.seen[name] = self.seen.get(name, 0) + 1
            self.started.setdefault(name, []).append((self.seen[name], time.monotonic()))
        elif m := _DONE.search(line):
            name, status = m.group(1), m.group(2).upper()
            running = self.started.get(name) or [(0, time.monotonic())]
            ordinal, t0 = running.pop(0)     # loop iterations of one task: the earliest started
            took = time.monotonic() - t0
            if ordinal > 1 or self._loop(name):
                name = f"{name} #{ordinal}"
            state = "done" if status == "SUCCESS" else "FAILED"
            self.counts["done" if state == "done" else "failed"] += 1
            if state == "FAILED":
                self.failed.append(name)
            self._show(f"{name:<44} {state:<7} {took:7.1f} s")
        elif m := _HIT.search(line):
            self.counts["cached"] += 1
            self._show(f"{m.group(1).strip(chr(39))[:44]:<44} cached")

    def _loop(self, name: str) -> bool:
        """Whether ``name`` has run (or runs) more than once: a loop task, numbered."""
        return self.seen.get(name, 0) > 1

    def _show(self, text: str) -> None:
        self.out.write(f"  {text}\n")
        self.out.flush()


@contextlib.contextmanager
def task_lines(log_path: Path, out: Optional[IO[str]] = None) -> Iterator[TaskLines]:
    """Route ``sys.stdout`` and INFO logging of the root logger to a :class:`TaskLines` writing
    ``log_path`` (appended) and ``out`` (default: the real stdout) for the block."""
    out = out or sys.stdout
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(log_path, "a", encoding="utf-8") as log:
        lines = TaskLines(log, out)
        handler = logging.StreamHandler(lines)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(min(old_level or logging.WARNING, logging.INFO))
        try:
            with contextlib.redirect_stdout(lines):
                yield lines
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            lines.flush()
            _drop_handlers_on(lines)


def _drop_handlers_on(stream: IO[str]) -> None:
    """Remove every logging handler that writes to ``stream``: one created during the run with
    ``sys.stdout`` (kfp.local's loggers) would otherwise write into a closed log file afterwards."""
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                        if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if getattr(h, "stream", None) is stream:
                lg.removeHandler(h)


def log_tail(log_path: Path, lines: int = 40, task: Optional[str] = None) -> str:
    """The last ``lines`` lines of a run's log, or of the part of it from ``task``'s start to its end
    ("" when there is none)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    if task:
        start = text.rfind(f"Executing task '{task}'")
        end = text.find(f"Task '{task}' finished", max(start, 0))
        if start >= 0:
            text = text[start:end if end > start else len(text)]
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
