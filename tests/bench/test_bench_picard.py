"""`bench picard` end to end on short horizons: JSON schema and the exactness flag."""

import json

from dreampropeller.cli import main


def test_bench_picard_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(
        [
            "bench",
            "picard",
            "--json",
            str(out),
            "--steps",
            "60",
            "--windows",
            "2,8",
            "--problems",
            "quadratic,growing",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    names = [p["name"] for p in data["problems"]]
    assert names == ["quadratic", "growing"]
    for p in data["problems"]:
        for key in (
            "T",
            "window",
            "iterations",
            "unit_evals",
            "rounds_speedup",
            "loss_sequential",
            "loss_propelled",
            "rel_deviation",
            "exact_at_zero_threshold",
        ):
            assert key in p
        assert p["exact_at_zero_threshold"] is True
        assert p["T"] == 60 and p["window"] == 8
        assert 1.0 <= p["rounds_speedup"] <= 8.0
        assert p["rounds_speedup"] == round(60 / p["iterations"], 3)
    assert "p=8" in capsys.readouterr().out


def test_bench_picard_bad_input(capsys):
    assert main(["bench", "picard", "--problems", "nope"]) == 2
    assert "unknown problem" in capsys.readouterr().err


def test_bench_picard_secant_guesses(tmp_path):
    out = tmp_path / "s.json"
    args = [
        "bench",
        "picard",
        "--json",
        str(out),
        "--steps",
        "60",
        "--windows",
        "8",
        "--problems",
        "quadratic",
    ]
    assert main([*args, "--guesses", "secant", "--no-controls"]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["guesses"] == "secant"
    assert data["problems"][0]["exact_at_zero_threshold"] is True  # exact with the secant guesses too
    assert data["problems"][0]["rounds_speedup"] > 3.5  # 4.29 (plain: 3.00)
