"""Issue #26, the command line: `tdds --help` reads in workflow order with a start-here line, every
subcommand and option of tdds_core/cli says what it does, and `tdds score --T` defaults to the
epochs the dynamics hold."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from tdds_core.cli import COMMANDS, build_parser, main
from tdds_core.dynamics import DynamicsWriter, open_dynamics
from tdds_core.scoring import compute_scores


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_lists_the_commands_in_workflow_order_after_a_start_here_line(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "Start here: tdds run --config configs/quickstart.yaml" in " ".join(text.split())
    listed = [line.split()[0] for line in text.split("COMMAND\n", 2)[-1].splitlines()
              if line.startswith("    ") and not line.startswith("     ") and line.split()]
    assert [c for c in listed if c in COMMANDS] == list(COMMANDS)
    assert listed.index("run") < listed.index("train") < listed.index("score") < listed.index("report")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_library_command_and_option_is_described(command):
    sub = _subparsers(build_parser([command]))[command]
    assert sub.description and len(sub.description) > 40, f"`tdds {command} --help` says nothing of what it does"
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"`tdds {command}` option {action.option_strings[0]} has no help text"


def test_score_T_defaults_to_every_recorded_epoch(tmp_path, capsys):
    n, c, epochs = 40, 4, 6
    rng = np.random.default_rng(1)
    y = rng.integers(0, c, n)
    w = DynamicsWriter(tmp_path / "dyn", ids=[str(i) for i in range(n)], labels=y, num_classes=c, fingerprint="fp-help",
                       dtype="float32")
    for t in range(epochs):
        w.write_epoch(t, rng.standard_normal((n, c)) + np.eye(c)[y] * t)
    w.finalize()
    out = tmp_path / "s.npy"
    assert main(["score", "--dynamics", str(tmp_path / "dyn"), "--method", "tdds", "--out", str(out)]) == 0
    assert "T=6 (every recorded epoch from 0), W=6" in capsys.readouterr().out
    want = compute_scores("tdds", open_dynamics(tmp_path / "dyn"), T=6, W=6)
    assert np.array_equal(np.load(out), want)
