"""Figures drawn in a process of their own: the same bytes, errors as they were."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest

from celestial_eval import drawing
from celestial_eval.drawing import Drawer
from celestial_eval.evaluate import OUTPUTS, write_evaluation

FIGURES = ("confusion_png", "history_png", "preview_png")


def run_fresh(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter: no JAX, one thread, so the drawer forks."""
    prelude = "from celestial_data.dataset import can_fork\nassert can_fork()\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + script], capture_output=True, text=True, timeout=120
    )


def test_a_drawing_process_writes_the_figures_this_one_draws(
    tmp_path: Path, evaluation_inputs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "inputs.pickle"
    inputs.write_bytes(pickle.dumps(evaluation_inputs))
    pids = tmp_path / "pids"
    done = run_fresh(f"""
import os, pickle
from celestial_eval import drawing
from celestial_eval.evaluate import write_evaluation
render = drawing._render
def logged(*args):
    with open({str(pids)!r}, "a") as log:
        log.write(f"{{os.getpid()}}\\n")
    return render(*args)
drawing._render = logged
with open({str(inputs)!r}, "rb") as stream:
    write_evaluation({str(tmp_path / "forked")!r}, **pickle.load(stream))
print(os.getpid())
""")
    assert done.returncode == 0, done.stderr
    drawers = set(pids.read_text().split())
    assert len(drawers) == 1 and done.stdout.strip() not in drawers  # one other process

    monkeypatch.setattr(drawing, "can_fork", lambda: False)
    write_evaluation(tmp_path / "here", **evaluation_inputs)
    for key in FIGURES:
        name = OUTPUTS[key]
        assert (tmp_path / "forked" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def broken(path: object) -> None:
    raise ValueError("no such colour 'ultraviolet'")


def test_a_figure_that_fails_raises_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drawing, "can_fork", lambda: False)
    with Drawer() as drawer:
        figure = drawer.draw(broken)
        with pytest.raises(ValueError, match="ultraviolet"):
            Drawer.result(figure)


def test_a_drawing_process_error_is_raised_here_as_itself() -> None:
    done = run_fresh("""
from celestial_eval.drawing import Drawer
def broken(path):
    raise ValueError("no such colour 'ultraviolet'")
with Drawer() as drawer:
    try:
        Drawer.result(drawer.draw(broken))
    except ValueError as error:
        print(type(error).__name__, error)
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ValueError no such colour 'ultraviolet'"


def test_a_killed_drawing_process_is_said_in_one_line_with_the_fix() -> None:
    done = run_fresh("""
import os, signal
from celestial_eval.drawing import Drawer
from celestial_eval.errors import EvalError
def killed(path):
    os.kill(os.getpid(), signal.SIGKILL)
with Drawer() as drawer:
    try:
        Drawer.result(drawer.draw(killed))
    except EvalError as error:
        print(error)
""")
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("The process drawing the evaluation's figures stopped")
    assert "out-of-memory killer" in message and "Free memory and run again." in message
    assert "\n" not in message


def test_without_fork_figures_are_drawn_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drawing, "can_fork", lambda: False)

    def pid(path: BinaryIO) -> None:
        path.write(str(os.getpid()).encode())

    with Drawer() as drawer:
        assert Drawer.result(drawer.draw(pid)) == str(os.getpid()).encode()
