"""W&B (offline) and TensorBoard receive what a distillation run logs; read back and compared with the run's files."""

import json

import pytest
from typer.testing import CliRunner

from policykd.cli import app
from policykd.wandb_reader import read_run


@pytest.fixture(scope="module")
def tracked_run(tiny_teachers, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    config = root / "recipe.yaml"
    config.write_text("labelled_steps: 300\nrounds: 3\nepochs_per_round: 2\nhidden: [8, 8]\neval_episodes: 2\nlatency_calls: 20\n")
    result = CliRunner().invoke(app, ["distill", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                      "--out-dir", str(root), "--run-name", "r", "--wandb", "--tensorboard"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "r", result.output


def test_wandb_offline_run_holds_config_history_and_evaluation(tracked_run):
    run_dir, output = tracked_run
    assert "wandb sync" in output  # tells the user how to upload the offline run
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    logged = [h for h in run["history"] if "distill/kl" in h]
    assert [h["_step"] for h in logged] == [h["step"] for h in history] == [100, 200, 300]
    assert [h["distill/kl"] for h in logged] == pytest.approx([h["distill/kl"] for h in history])
    report = json.loads((run_dir / "eval.json").read_text())
    assert run["summary"]["eval/ratio"] == pytest.approx(report["ratio"])
    assert run["summary"]["eval/student_return_mean"] == pytest.approx(report["student"]["mean"])
    assert run["config"]["labelled_steps"] == 300 and run["config"]["hidden"] == [8, 8]
    assert "student-r" in run["artifacts"]  # the student folder, as an artifact
    assert any("evalcomparison" in name for name in run["artifacts"])  # the teacher-vs-student table


def test_tensorboard_scalars_match_history(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    kl = events.Scalars("distill/kl")
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [e.step for e in kl] == [100, 200, 300]
    assert [e.value for e in kl] == pytest.approx([h["distill/kl"] for h in history], rel=1e-6)


def test_report_has_tables_plots_config_and_versions(tracked_run):
    run_dir, _ = tracked_run
    result = CliRunner().invoke(app, ["report", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.md").read_text()
    ratio = json.loads((run_dir / "eval.json").read_text())["ratio"]
    assert f"Return ratio: **{ratio:.3f}**" in text
    assert "| round | labelled steps |" in text and '"labelled_steps": 300' in text and "torch " in text
    for png in ("distillation_curve.png", "latency.png"):
        assert f"(plots/{png})" in text
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_a_non_run_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished distillation run" in result.output
