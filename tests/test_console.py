"""pipelines/console.py: `tdds run`'s task lines leave nothing behind once the run ends (a handler
made during the run with sys.stdout would write into the closed log file of the run)."""
from __future__ import annotations

import io
import logging
import sys

from pipelines.console import task_lines


def test_a_handler_made_during_the_run_is_gone_after_it_and_nothing_fails(tmp_path, capfd):
    out = io.StringIO()
    stray = logging.getLogger("kfp.stray")
    with task_lines(tmp_path / "run.log", out=out) as lines:
        print("Executing task 'score'")
        stray.addHandler(logging.StreamHandler(sys.stdout))     # as kfp.local's loggers do mid-run
        stray.warning("inside")
        print("Task 'score' finished with status SUCCESS")
    assert lines.counts["done"] == 1 and "score" in out.getvalue()
    assert not [h for h in stray.handlers if getattr(h, "stream", None) is lines]
    stray.warning("after the run")                       # no "--- Logging error ---" on stderr
    lines.write("late\n")                                # a writer that kept the stream: dropped quietly
    assert "Logging error" not in capfd.readouterr().err
    text = (tmp_path / "run.log").read_text()
    assert "inside" in text and "after the run" not in text and "late" not in text
