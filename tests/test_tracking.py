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
    assert run["config"].get("labelled_steps") == 300 and run["config"].get("hidden") == [8, 8], run["config"]
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


def test_sweep_runs_the_grid_and_marks_the_pareto_front(tmp_path, tiny_teachers):
    from policykd.sweep import pareto_front

    assert pareto_front([(1, 0.5), (2, 0.9), (3, 0.8), (1, 0.4)]) == [0, 1]
    config = tmp_path / "base.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\neval_episodes: 2\n")
    result = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                      "--grid", "hidden=[8]|[16,16]", "--grid", "data_mode=teacher|dagger", "--out", str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "s" / "results.json").read_text())["runs"]
    assert sorted((r["param/hidden"], r["param/data_mode"]) for r in runs) == sorted(
        [([8], "teacher"), ([8], "dagger"), ([16, 16], "teacher"), ([16, 16], "dagger")])
    assert {r["student_params"] for r in runs} == {4 * 8 + 8 + 8 * 2 + 2, 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2}
    table = (tmp_path / "s" / "results.md").read_text()
    assert table.count("\n") == 2 + 4 and "params" in table
    assert (tmp_path / "s" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "--grid", "hidden"])
    assert bad.exit_code == 2 and "KEY=V1|V2" in bad.output


def test_wandb_sweep_definition_and_offline_refusal(tmp_path, tiny_teachers, monkeypatch):
    from policykd.sweep import wandb_sweep_config

    grid = {"hidden": [[8], [16, 16]], "kl_direction": ["forward", "reverse"]}
    assert wandb_sweep_config(grid, name="s") == {
        "name": "s", "method": "grid", "metric": {"name": "ratio", "goal": "maximize"},
        "parameters": {"hidden": {"values": [[8], [16, 16]]}, "kl_direction": {"values": ["forward", "reverse"]}}}
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key
    result = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "--grid", "hidden=[8]",
                                      "--wandb-sweep", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "wandb login" in result.output and "drop --wandb-sweep" in result.output
    assert not (tmp_path / "s" / "results.json").exists()


def test_wandb_sweep_run_logs_its_combination(tmp_path, tiny_teachers):
    """The function the W&B agent calls for each run, here in an offline run whose config stands in for the
    sweep controller's choice; the offline run file is read back."""
    from policykd.sweep import SweepContext, wandb_sweep_run

    config = tmp_path / "base.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\neval_episodes: 2\n")
    context = SweepContext(config, {"teacher": str(tiny_teachers["dqn"]), "env_id": "CartPole-v1"}, tmp_path / "s")
    row = wandb_sweep_run(context, {"hidden": [[8], [16]]}, project="policykd-test", defaults={"hidden": [16]},
                          mode="offline")
    assert row["param/hidden"] == [16] and row["student_params"] == 4 * 16 + 16 + 16 * 2 + 2
    (run_file,) = (tmp_path / "s").glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    assert run["config"].get("hidden") == [16], run
    assert run["summary"]["ratio"] == pytest.approx(row["ratio"])
    assert json.loads((tmp_path / "s" / "results.json").read_text())["runs"][0]["name"] == row["name"]


def test_wandb_reader_waits_for_the_exit_record(tmp_path):
    """A run file W&B is still writing (no exit record yet) is not read as if complete."""
    from policykd.wandb_reader import read_run

    run_file = tmp_path / "run-x.wandb"
    run_file.write_bytes(b":W&B\x00\x00\x00")
    with pytest.raises(TimeoutError, match="no exit record"):
        read_run(run_file, timeout_s=0.3)
