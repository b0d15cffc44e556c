"""The README's public-API example runs exactly as written and does what the text says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def api_example() -> str:
    """The python code block of the README that builds a PicardSolver (the own-loop example)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "PicardSolver(" in b]
    assert len(found) == 1, "the README should hold one PicardSolver example"
    return found[0]


def test_readme_example_runs_as_written(capsys):
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(api_example(), str(README), "exec"), namespace)
    result = namespace["result"]
    assert "rounds for 100 steps" in capsys.readouterr().out
    # exact at threshold 0: the plain loop's answer, in fewer rounds
    w = torch.zeros(4)
    for _ in range(100):
        w = w - 0.1 * 2 * (w - torch.arange(4.0))
    assert torch.equal(result.state["w"], w)
    assert result.stats.iterations < 100


def test_public_api_names():
    import dreampropeller

    for name in ("PicardSolver", "SolverConfig", "Process", "generate", "load_run"):
        assert getattr(dreampropeller, name) is not None
