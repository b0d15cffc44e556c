"""`torchrun --nproc-per-node 2 -m dreampropeller generate ... --executor distributed` end to end (gloo)."""

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import TINY_OVERRIDES


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_generate_under_torchrun_writes_one_run_from_rank_0(tmp_path, random_prior_dir):
    out = tmp_path / "dist"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "dreampropeller", "generate", "a red cube", "--out", str(out), "--steps", "5",
        "--executor", "distributed", "--window", "4", "--quiet", "--prior-path", str(random_prior_dir),
        *TINY_OVERRIDES,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("done:") == 1  # only rank 0 reports
    m = json.loads((out / "metrics.json").read_text())
    assert m["executor"] == "distributed" and m["executor_report"]["world_size"] == 2
    assert m["steps"] == 5 and m["comm_s_per_iteration"] > 0
