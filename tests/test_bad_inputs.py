"""A catalogue of bad inputs and faults, each answered the way README promises: a non-zero exit, one line without
a traceback that names the problem and the fix, and nothing lost (victim files intact, nothing written where it
should not be).

Every case is a function of (tmp_path, assets) returning a Case; `assets` holds tiny teachers and a finished run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from policykd.cli import app
from policykd.env_factory import EnvSpec
from policykd.students import Student, StudentSpec

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    argv: list
    message: str                      # a regex the one-line error must match (the problem and the fix)
    victims: list[Path] = field(default_factory=list)   # files whose bytes must not change
    absent: list[Path] = field(default_factory=list)    # paths that must not exist afterwards
    exit_code: int = 2


def _digest(path: Path) -> str:
    if path.is_dir():
        return "|".join(f"{p.relative_to(path)}:{_digest(p)}" for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- assets shared by the cases ------------------------------------------------------------------------------------

class TwoActionPendulum(gym.Env):
    """Pendulum's observation space with a 2-d action: a teacher for Pendulum must be refused on it."""

    observation_space = gym.spaces.Box(np.array([-1, -1, -8], dtype=np.float32), np.array([1, 1, 8], dtype=np.float32))
    action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(3, dtype=np.float32), 0.0, False, False, {}


gym.register("PolicyKDTest/TwoActionPendulum-v0", entry_point=TwoActionPendulum, max_episode_steps=10)


class NanCartPole(gym.Wrapper):
    """CartPole whose observations turn NaN from the fifth step: a broken env whose rows must never reach a buffer."""

    def __init__(self):
        super().__init__(gym.make("CartPole-v1").unwrapped)
        self.steps = 0

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return (obs * np.nan if self.steps >= 5 else obs), reward, terminated, truncated, info


gym.register("PolicyKDTest/NanCartPole-v0", entry_point=NanCartPole, max_episode_steps=100)


class NanRewardCartPole(NanCartPole):
    """CartPole whose rewards (not observations) turn NaN from the fifth step."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, (np.nan if self.steps >= 5 else reward), terminated, truncated, info


gym.register("PolicyKDTest/NanRewardCartPole-v0", entry_point=NanRewardCartPole, max_episode_steps=100)


def _tiny_student(directory: Path, *, obs_dim: int = 4, action_dim: int = 2, family: str = "categorical",
                  env_id: str = "CartPole-v1", teacher: dict | None = None) -> Path:
    low, high = ((), ()) if family == "categorical" else ((-1.0,) * action_dim, (1.0,) * action_dim)
    student = Student(StudentSpec(obs_dim=obs_dim, action_dim=action_dim, family=family, hidden=(8,),
                                  activation="relu", action_low=low, action_high=high))
    student.save(directory, card_extra={"teacher": teacher or {"env": EnvSpec(env_id).to_json()}})
    return directory


@pytest.fixture(scope="module")
def assets(tiny_teachers, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad_input_assets")
    recipe = root / "recipe.yaml"
    recipe.write_text("labelled_steps: 200\nrounds: 2\nepochs_per_round: 1\nhidden: [8]\neval_episodes: 1\nlatency_calls: 10\n")
    teacher = root / "teacher.zip"
    shutil.copyfile(tiny_teachers["dqn"], teacher)
    result = runner.invoke(app, ["distill", str(teacher), "--env", "CartPole-v1", "-c", str(recipe), "--out-dir",
                                 str(root / "runs"), "--run-name", "done", "--no-eval"])
    assert result.exit_code == 0, result.output
    buffer = root / "buffer"
    result = runner.invoke(app, ["collect", str(teacher), "--env", "CartPole-v1", "--out", str(buffer), "--steps", "100"])
    assert result.exit_code == 0, result.output
    return {"root": root, "recipe": recipe, "teacher": teacher, "run": root / "runs" / "done", "buffer": buffer,
            "sac": tiny_teachers["sac"], "td3": tiny_teachers["td3"], "qrdqn": tiny_teachers["qrdqn"], "student": root / "runs" / "done" / "student"}


def _folder_victim_case(tmp_path: Path, argv: list, message: str) -> Case:
    """argv + a folder holding a user's file, given where an output file belongs: refused, the file untouched."""
    folder = tmp_path / "results"
    _write(folder / "mine.txt", "mine\n")
    return Case([*argv, folder], message, victims=[folder / "mine.txt"])


def _copy_run(assets: dict, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(assets["run"], runs / "done")
    return runs / "done"


def _distill(assets: dict, tmp_path: Path, *extra) -> list:
    return ["distill", assets["teacher"], "--env", "CartPole-v1", "-c", assets["recipe"], "--out-dir", tmp_path / "runs", *extra]


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"teacher: x\n{text}\n")
    return path


def _config_case(text: str, message: str) -> Callable[[Path, dict], Case]:
    def case(tmp_path: Path, assets: dict) -> Case:
        return Case(["distill", "-c", _recipe(tmp_path, text), "--out-dir", tmp_path / "runs"], message,
                    absent=[tmp_path / "runs"])
    return case


def _teacher_recipe_case(text: str, message: str) -> Callable[[Path, dict], Case]:
    def case(tmp_path: Path, assets: dict) -> Case:
        recipe = _write(tmp_path / "teacher.yaml", f"algo: ppo\nenv_id: Pendulum-v1\n{text}\n")
        return Case(["teacher", "train", recipe, "--out", tmp_path / "agent"], message, absent=[tmp_path / "agent"])
    return case


# -- the catalogue ---------------------------------------------------------------------------------------------------

CASES: dict[str, Callable[[Path, dict], Case]] = {
    # recipes: every key checked before any teacher is loaded or folder created
    "steps-not-a-number": _config_case('labelled_steps: "many"', r"labelled_steps must be a whole number"),
    "steps-fractional": _config_case("labelled_steps: 1000.7", r"labelled_steps must be a whole number.*1000\.7"),
    "hidden-scalar": _config_case("hidden: 64", r"hidden must be a list of positive layer widths, e\.g\. \[64, 64\]"),
    "hidden-zero-width": _config_case("hidden: [64, 0]", r"hidden must be a list"),
    "kl-direction-unknown": _config_case("kl_direction: sideways", r"kl_direction must be one of forward, reverse"),
    "eval-episodes-zero": _config_case("eval_episodes: 0", r"eval_episodes must be >= 1"),
    "eval-episodes-beyond-memory": _config_case("eval_episodes: 1000000000000", r"eval_episodes must be <= 100000"),
    "latency-calls-beyond-memory": _config_case("latency_calls: 99999999999999999999", r"latency_calls must be <= 10000000"),
    "data-mode-unknown": _config_case("data_mode: bc", r"data_mode must be one of teacher, dagger"),
    "activation-unknown": _config_case("activation: swish", r"activation must be one of"),
    "lr-negative": _config_case("lr: -0.001", r"lr must be > 0"),
    "lr-nan": _config_case("lr: .nan", r"lr must be a finite number"),
    "beta-above-one": _config_case("beta0: 1.5", r"beta0 must be <= 1"),
    "lr-schedule-unknown": _config_case("lr_schedule: linear", r"lr_schedule must be one of constant, cosine"),
    "n-envs-zero": _config_case("n_envs: 0", r"n_envs must be >= 1"),
    "wandb-not-bool": _config_case('wandb: "yes"', r"wandb must be true or false"),
    "seed-negative": _config_case("seed: -1", r"seed must be >= 0"),
    "seed-beyond-numpy": _config_case("seed: 99999999999999999999", r"seed must be <= 4294967295, got 99999999999999999999"),
    "eval-seed-beyond-numpy": _config_case("eval_seed: 4294967296", r"eval_seed must be <= 4294967295"),
    "steps-below-rounds": _config_case("labelled_steps: 3\nrounds: 5", r"labelled_steps \(3\) must be at least rounds \(5\)"),
    "loss-unknown": _config_case("loss: l1", r"loss must be one of kl, bc, mse"),
    "tau-for-deterministic-teacher": lambda tmp_path, assets: Case(
        ["distill", assets["td3"], "--env", "Pendulum-v1", "-c", _write(tmp_path / "tau.yaml", "tau: 2.0\n"), "--out-dir",
         tmp_path / "runs"], r"tau=2 has no meaning for a deterministic \(td3\) teacher.*leave tau at 1", absent=[tmp_path / "runs"]),
    "unknown-key": _config_case("labeled_steps: 1000", r"unknown config keys \['labeled_steps'\].*valid keys"),
    "run-name-in-recipe-escapes": _config_case("run_name: ../../x", r"plain folder name"),
    "recipe-not-a-mapping": lambda tmp_path, assets: Case(
        ["distill", "-c", _write(tmp_path / "list.yaml", "- 1\n- 2\n"), "--out-dir", tmp_path / "runs"], r"must be a mapping",
        absent=[tmp_path / "runs"]),
    "recipe-invalid-yaml": lambda tmp_path, assets: Case(
        ["distill", "-c", _write(tmp_path / "bad.yaml", "a: [1, 2\n"), "--out-dir", tmp_path / "runs"], r"not valid YAML",
        absent=[tmp_path / "runs"]),
    "recipe-missing": lambda tmp_path, assets: Case(["distill", "-c", tmp_path / "nope.yaml"], r"does not exist"),
    "recipe-is-a-folder": lambda tmp_path, assets: Case(["distill", "-c", tmp_path], r"is a folder, not a YAML file"),
    "no-teacher": lambda tmp_path, assets: Case(["distill", "--out-dir", tmp_path / "runs"], r"no teacher given",
                                                absent=[tmp_path / "runs"]),
    "hidden-flag-not-numbers": lambda tmp_path, assets: Case(
        _distill(assets, tmp_path, "--hidden", "64,abc"), r"--hidden .* comma-separated", absent=[tmp_path / "runs"]),
    # run folders: names stay inside --out-dir, --resume acts only on the same policykd run
    "run-name-parent": lambda tmp_path, assets: _victim_case(tmp_path, _distill(assets, tmp_path, "--run-name", "../victim", "--resume"),
                                                             r"plain folder name"),
    "run-name-absolute": lambda tmp_path, assets: _victim_case(
        tmp_path, _distill(assets, tmp_path, "--run-name", str(tmp_path / "victim"), "--resume"), r"plain folder name"),
    "run-name-nested": lambda tmp_path, assets: Case(_distill(assets, tmp_path, "--run-name", "a/b"), r"plain folder name",
                                                     absent=[tmp_path / "runs"]),
    "run-name-control-character": lambda tmp_path, assets: Case(_distill(assets, tmp_path, "--run-name", "a\nb"),
                                                                r"plain folder name", absent=[tmp_path / "runs"]),
    "steps-beyond-the-disk": lambda tmp_path, assets: Case(
        _distill(assets, tmp_path, "--steps", str(10**15)), r"labelled_steps 1,000,000,000,000,000 needs about .* on disk.*lower it",
        absent=[tmp_path / "runs"]),
    "out-dir-empty": lambda tmp_path, assets: Case(["distill", "-c", _recipe(tmp_path, ""), "--out-dir", ""], r"out_dir is empty"),
    "n-envs-thousands": _config_case("n_envs: 100000", r"n_envs must be <= 256"),
    "image-shape-without-conv": _config_case("image_shape: [3, 1, 1]", r"image_shape.*conv is empty.*drop image_shape"),
    "tau-with-hard-labels": _config_case("loss: bc\ntau: 2.0", r"tau 2\.0 shapes the KL.*loss 'bc' does not use"),
    "kl-direction-with-mse": _config_case("loss: mse\nkl_direction: reverse", r"kl_direction 'reverse'.*loss 'mse' does not use"),
    "resume-foreign-folder": lambda tmp_path, assets: _victim_case(
        tmp_path, ["distill", assets["teacher"], "--env", "CartPole-v1", "-c", assets["recipe"], "--out-dir", tmp_path,
                   "--run-name", "victim", "--resume"], r"not a policykd run.*nothing was changed"),
    "resume-without-name": lambda tmp_path, assets: Case(_distill(assets, tmp_path, "--resume"), r"--resume needs --run-name"),
    "resume-missing-run": lambda tmp_path, assets: Case(_distill(assets, tmp_path, "--run-name", "nope", "--resume"),
                                                        r"no run .*nope to resume", absent=[tmp_path / "runs" / "nope"]),
    "existing-run-without-resume": lambda tmp_path, assets: _run_case(
        tmp_path, assets, [], r"already exists; pass --resume"),
    "resume-changed-recipe": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume", "--steps", "300"], r"different config.*labelled_steps"),
    "resume-replaced-teacher": lambda tmp_path, assets: _replaced_teacher_case(tmp_path, assets),
    "resume-run-record-edited-to-match": lambda tmp_path, assets: _edited_record_case(tmp_path, assets),
    "resume-corrupt-progress": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume"], r"progress\.json is corrupt.*new one", damage="checkpoint/progress.json"),
    "resume-corrupt-checkpoint-student": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume"], r"the checkpoint of .*done is damaged \(.*\); this run cannot be resumed",
        damage="checkpoint/student.safetensors"),
    "resume-corrupt-optimizer": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume"], r"optimizer\.safetensors is corrupt.*new one", damage="checkpoint/optimizer.safetensors"),
    "resume-corrupt-run-record": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume"], r"config\.json is corrupt", damage="config.json"),
    "resume-corrupt-buffer-metadata": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume"], r"buffer/metadata\.json is corrupt", damage="buffer/metadata.json"),
    "resume-modified-buffer-chunk": lambda tmp_path, assets: _run_case(
        tmp_path, assets, ["--resume"], r"does not match its sha256 in metadata\.json \(torn write or modified file\); this run cannot be resumed", damage="buffer/chunk_000000.npz"),
    "resume-locked-run": lambda tmp_path, assets: _locked_case(tmp_path, assets),
    "resume-student-is-a-file": lambda tmp_path, assets: _student_file_case(tmp_path, assets),
    "resume-checkpoint-missing": lambda tmp_path, assets: _lost_checkpoint_case(tmp_path, assets, replace_with_file=False),
    "resume-checkpoint-is-a-file": lambda tmp_path, assets: _lost_checkpoint_case(tmp_path, assets, replace_with_file=True),
    # output locations
    "out-dir-is-a-file": lambda tmp_path, assets: Case(
        _distill(assets, tmp_path, "--out-dir", _write(tmp_path / "file", "keep"), "--run-name", "r"),
        r"cannot create the run folder .*file", victims=[tmp_path / "file"]),
    "out-dir-impossible": lambda tmp_path, assets: Case(
        _distill(assets, tmp_path, "--out-dir", "/proc/policykd-runs", "--run-name", "r"), r"/proc/policykd-runs"),
    "export-out-is-a-file": lambda tmp_path, assets: Case(
        ["export", assets["student"], "--format", "safetensors", "--out", _write(tmp_path / "file", "keep")],
        r"file", victims=[tmp_path / "file"]),
    "export-into-the-student-folder": lambda tmp_path, assets: _export_into_student_case(tmp_path, assets),
    "export-unknown-format": lambda tmp_path, assets: Case(["export", assets["student"], "--format", "tflite", "--out", tmp_path / "x"],
                                                           r"unknown export format 'tflite'; choose one of", absent=[tmp_path / "x"]),
    # collect
    "collect-into-foreign-folder": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", _write(tmp_path / "folder" / "notes.txt", "mine").parent,
         "--steps", "50"], r"not an empty folder", victims=[tmp_path / "folder"]),
    "collect-over-existing-buffer": lambda tmp_path, assets: _buffer_case(tmp_path, assets, [], r"already holds a buffer.*--resume"),
    "collect-resume-other-settings": lambda tmp_path, assets: _buffer_case(
        tmp_path, assets, ["--resume", "--seed", "7"], r"other settings.*seed"),
    "collect-resume-other-chunk-size": lambda tmp_path, assets: _buffer_case(
        tmp_path, assets, ["--resume", "--chunk-steps", "7"], r"other settings.*\(chunk_steps\)"),
    "collect-resume-other-teacher": lambda tmp_path, assets: _buffer_case(
        tmp_path, assets, ["--resume"], r"another teacher file", teacher="qrdqn"),
    "collect-resume-a-distill-runs-buffer": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", _copy_run(assets, tmp_path) / "buffer", "--resume"],
        r"done/buffer is the buffer of a distillation run.*policykd distill \.\.\. --resume", victims=[tmp_path / "runs"]),
    "collect-resume-locked-buffer": lambda tmp_path, assets: _locked_buffer_case(tmp_path, assets),
    "collect-resume-buffer-spaces-edited": lambda tmp_path, assets: _edited_buffer_case(
        tmp_path, assets, lambda m: m.update(action_space={"type": "Discrete", "n": -1}), r"action_space must have a positive whole n"),
    "collect-resume-buffer-config-edited": lambda tmp_path, assets: _edited_buffer_case(
        tmp_path, assets, lambda m: m.update(config=None), r"metadata\.json is corrupt \(config must be a mapping\)"),
    "collect-resume-not-a-buffer": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", tmp_path / "nothing", "--resume"], r"not a policykd buffer"),
    "collect-student-wrong-shape": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", tmp_path / "buf", "--beta", "0.5", "--student",
         _tiny_student(tmp_path / "s", obs_dim=3, action_dim=1, family="gaussian", env_id="Pendulum-v1")],
        r"takes 3 observations.*pass a student distilled from this teacher", absent=[tmp_path / "buf"]),
    "collect-beyond-the-disk": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", tmp_path / "buf", "--steps", str(10**15)],
        r"--steps 1,000,000,000,000,000 needs about .* of buffer on disk, more than the .* free under .*lower it",
        absent=[tmp_path / "buf"]),
    "collect-env-returns-nan": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "PolicyKDTest/NanCartPole-v0", "--out", tmp_path / "buf", "--steps", "50"],
        r"an observation the env returned is NaN or inf on PolicyKDTest/NanCartPole-v0 \(episode \d+, step 5\); check the env"),
    "distill-env-returns-nan": lambda tmp_path, assets: Case(
        ["distill", assets["teacher"], "--env", "PolicyKDTest/NanCartPole-v0", "-c", assets["recipe"], "--out-dir", tmp_path / "runs"],
        r"an observation the env returned is NaN or inf on PolicyKDTest/NanCartPole-v0 \(episode \d+, step 5\); check the env"),
    "eval-env-returns-nan": lambda tmp_path, assets: Case(
        ["eval", assets["teacher"], assets["student"], "--env", "PolicyKDTest/NanCartPole-v0", "--episodes", "2"],
        r"evaluation stopped: PolicyKDTest/NanCartPole-v0 returned a NaN or inf observation on seed \d+; check the env"),
    "eval-env-nan-reward": lambda tmp_path, assets: Case(
        ["eval", assets["teacher"], assets["student"], "--env", "PolicyKDTest/NanRewardCartPole-v0", "--episodes", "2"],
        r"evaluation stopped: PolicyKDTest/NanRewardCartPole-v0 returned a NaN or inf reward on seed \d+ after a finite "
        r"observation; check the env's reward"),
    "distill-teacher-weights-nan": lambda tmp_path, assets: Case(
        ["distill", _nan_teacher(assets["teacher"], tmp_path / "nan.zip"), "--env", "CartPole-v1", "-c", assets["recipe"],
         "--out-dir", tmp_path / "runs"],
        r"the teacher's output \(action distribution or value\) on a finite observation is NaN or inf on CartPole-v1 "
        r"\(episode \d+, step 0\); check the teacher's weights"),
    "training-diverges": lambda tmp_path, assets: Case(
        ["distill", assets["teacher"], "--env", "CartPole-v1", "-c",
         _write(tmp_path / "lr.yaml", assets["recipe"].read_text() + "lr: 1.0e+30\n"), "--out-dir", tmp_path / "runs"],
        r"training diverged in round 1, epoch 1: the loss became NaN or inf.*lower lr \(now 1e\+30\)"),
    "collect-beta-without-student": lambda tmp_path, assets: Case(
        ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", tmp_path / "buf", "--beta", "0.5"],
        r"pass --student", absent=[tmp_path / "buf"]),
    # eval, bench, report
    "eval-student-wrong-shape": lambda tmp_path, assets: Case(
        ["eval", assets["teacher"], _tiny_student(tmp_path / "s", obs_dim=3, action_dim=1, family="gaussian", env_id="Pendulum-v1"),
         "--env", "CartPole-v1", "--episodes", "1"], r"takes 3 observations"),
    "report-corrupt-eval": lambda tmp_path, assets: _damaged_run_report_case(
        tmp_path, assets, "eval.json", '{"teacher": ', r"eval\.json is corrupt"),
    "report-over-users-notes": lambda tmp_path, assets: _users_report_case(tmp_path, assets),
    "report-unfinished-run": lambda tmp_path, assets: Case(
        ["report", _write(tmp_path / "runs" / "unfinished" / "config.json", "{}").parent],
        r"unfinished is a distillation run that did not finish .*--run-name unfinished --resume", victims=[tmp_path / "runs"]),
    "report-multitask-run": lambda tmp_path, assets: Case(
        ["report", _write(tmp_path / "runs" / "multi" / "student" / "multitask.json", "{}").parents[1]],
        r"multi is a multi-task run \(`policykd distill-multi`\).*report writes single-teacher runs only", victims=[tmp_path / "runs"]),
    "report-over-users-plot": lambda tmp_path, assets: _damaged_run_report_case(
        tmp_path, assets, "plots/distillation_curve.png", "my own figure\n",
        r"distillation_curve\.png exists and is not a figure policykd wrote"),
    "report-card-without-history": lambda tmp_path, assets: _edited_card_report_case(
        tmp_path, assets, lambda card: card.pop("history"), r"student\.json lacks or mistypes a field the report reads \(KeyError: 'history'\)"),
    "report-card-wall-time-null": lambda tmp_path, assets: _edited_card_report_case(
        tmp_path, assets, lambda card: card.update(wall_s=None), r"student\.json lacks or mistypes a field the report reads \(TypeError"),
    "report-eval-of-another-shape": lambda tmp_path, assets: _damaged_run_report_case(
        tmp_path, assets, "eval.json", '{"teacher": 5}', r"eval\.json is not this run's evaluation record"),
    "report-eval-of-another-env": lambda tmp_path, assets: _damaged_run_report_case(
        tmp_path, assets, "eval.json", json.dumps({
            "env": "Pendulum-v1", "seeds": [1], "ratio": 0.5, "agreement": {}, "latency_us": {},
            **{who: {"mean": 1.0, "std": 0.0, "iqm": 1.0, "ci95_low": 1.0, "ci95_high": 1.0} for who in ("teacher", "student")}}),
        r"eval\.json is not this run's evaluation record \(it evaluates on 'Pendulum-v1', this run's teacher acts on 'CartPole-v1'\)"),
    "eval-json-over-the-student-card": lambda tmp_path, assets: _json_over_student_case(tmp_path, assets),
    "teacher-eval-json-over-the-checkpoint": lambda tmp_path, assets: _json_over_checkpoint_case(tmp_path, assets),
    "bench-plot-over-users-figure": lambda tmp_path, assets: Case(
        ["bench", assets["student"], "--plot", _write(tmp_path / "mine.png", "my figure\n"), "--teacher", "none"],
        r"mine\.png exists and is not a figure policykd wrote.*move it away", victims=[tmp_path / "mine.png"]),
    "eval-unknown-target-before-evaluating": lambda tmp_path, assets: Case(
        ["eval", assets["teacher"], assets["student"], "--env", "CartPole-v1", "--latency", "--target", "cortex-m99"],
        r"cortex-m99"),
    "eval-target-without-latency": lambda tmp_path, assets: Case(
        ["eval", assets["teacher"], assets["student"], "--env", "CartPole-v1", "--target", "aarch64", "--rate", "50"],
        r"--target and --rate are for the embedded targets of --latency, which is not given"),
    "eval-json-is-a-folder": lambda tmp_path, assets: _folder_victim_case(
        tmp_path, ["eval", assets["teacher"], assets["student"], "--env", "CartPole-v1", "--json"], r"is a folder; give a file path"),
    "teacher-eval-json-under-a-file": lambda tmp_path, assets: Case(
        ["teacher", "eval", assets["teacher"], "--env", "CartPole-v1", "--json", _write(tmp_path / "f.txt", "mine\n") / "r.json"],
        r"f\.txt is a file, not a folder", victims=[tmp_path / "f.txt"]),
    "bench-no-backends": lambda tmp_path, assets: Case(["bench", assets["student"], "--backends", ",", "--teacher", "none"],
                                                       r"names no backend"),
    "bench-plot-not-an-image": lambda tmp_path, assets: Case(
        ["bench", assets["student"], "--plot", tmp_path / "latency.txt", "--teacher", "none"],
        r"cannot draw a plot into .*latency\.txt: the name must end in an image format such as \.png", absent=[tmp_path / "latency.txt"]),
    "bench-teacher-of-another-env": lambda tmp_path, assets: Case(
        ["bench", assets["student"], "--teacher", REPO / "agents" / "sac-Pendulum-v1", "--backends", "numpy", "--calls", "100"],
        r"student takes 4 observations and gives 2 categorical actions, but the teacher's env has 3 and 1 squashed_gaussian"),
    "embedded-format-not-c": lambda tmp_path, assets: Case(
        ["embedded", assets["student"], "--format", "onnx", "--target", "cortex-m4"],
        r"--format: export format 'onnx' does not run on embedded targets.*use one of c, c-int16, c-int8"),
    "student-view-of-another-env": lambda tmp_path, assets: Case(
        ["distill", REPO / "agents" / "sac-Pendulum-v1", "--student-view", "policykd_envs.racecar:RaysView", "--steps", "300",
         "--out-dir", tmp_path / "runs"],
        r"student view 'policykd_envs\.racecar:RaysView' failed in its space\(\) on Pendulum-v1 \(AttributeError: .*use a view "
        r"written for this env", absent=[tmp_path / "runs"]),
    "student-view-name-missing": lambda tmp_path, assets: Case(
        ["distill", REPO / "agents" / "sac-Pendulum-v1", "--student-view", "policykd.views:nosuch", "--steps", "300",
         "--out-dir", tmp_path / "runs"],
        r"cannot import 'policykd\.views:nosuch': module policykd\.views has no 'nosuch'; check the name", absent=[tmp_path / "runs"]),
    "distill-multi-env-count": lambda tmp_path, assets: Case(
        ["distill-multi", assets["teacher"], assets["sac"], "--env", "CartPole-v1", "--out-dir", tmp_path / "runs"],
        r"--env was given 1 times for 2 teachers; give it once per teacher", absent=[tmp_path / "runs"]),
    "sweep-ray-options-without-ray": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "hidden=[8]", "--out", tmp_path / "sw", "--asha", "--num-samples", "3"],
        r"--num-samples, --asha are for Ray Tune sweeps; add --backend ray or drop them", absent=[tmp_path / "sw"]),
    "sweep-ray-address-malformed": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "hidden=[8]", "--out", tmp_path / "sw", "--backend", "ray",
         "--address", "bogus"], r"--address bogus is not a Ray address; give host:port", absent=[tmp_path / "sw"]),
    "bench-card-teacher-replaced": lambda tmp_path, assets: _bench_replaced_case(tmp_path, assets),
    # sweeps: every combination validated before any work
    "sweep-too-many-samples": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "tau=1|2", "--backend", "ray", "--search", "random",
         "--num-samples", "1000000000", "--out", tmp_path / "sw"], r"--num-samples 1,000,000,000 is more than 1,000 trials",
        absent=[tmp_path / "sw"]),
    "sweep-samples-of-a-grid-search": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "tau=1|2", "--backend", "ray", "--num-samples", "8",
         "--out", tmp_path / "sw"], r"--num-samples draws trials for --search random", absent=[tmp_path / "sw"]),
    "sweep-locked": lambda tmp_path, assets: _locked_sweep_case(tmp_path, assets),
    "sweep-unknown-key": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "nokey=1|2", "--out", tmp_path / "sw"],
        r"unknown config keys \['nokey'\]", absent=[tmp_path / "sw"]),
    "sweep-bad-value": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "hidden=[8]|64", "--out", tmp_path / "sw"],
        r"hidden must be a list", absent=[tmp_path / "sw"]),
    "sweep-malformed-grid": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "hidden", "--out", tmp_path / "sw"], r"KEY=V1\|V2",
        absent=[tmp_path / "sw"]),
    "sweep-grid-too-large": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--out", tmp_path / "sw",
         *[a for k in ("lr", "tau", "lambda_v", "beta0") for a in ("--grid", f"{k}=" + "|".join(str(0.1 * (i + 1)) for i in range(9)))]],
        r"--grid has 6,561 combinations \(9 lr x 9 tau x 9 lambda_v x 9 beta0\), more than 1,000", absent=[tmp_path / "sw"]),
    "sweep-grid-key-twice": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "lr=0.001", "--grid", "lr=0.01", "--out", tmp_path / "sw"],
        r"--grid gives lr twice", absent=[tmp_path / "sw"]),
    "sweep-grid-value-twice-spelled-differently": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "tau=1|1.0", "--out", tmp_path / "sw"],
        r"--grid tau lists 1 more than once", absent=[tmp_path / "sw"]),
    "sweep-grid-value-twice": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "hidden=[8]|[8,8]|[8]", "--out", tmp_path / "sw"],
        r"--grid hidden lists \[8\] more than once", absent=[tmp_path / "sw"]),
    "sweep-fixed-key": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "run_name=a|b", "--out", tmp_path / "sw"],
        r"cannot sweep run_name", absent=[tmp_path / "sw"]),
    "sweep-evaluation-seeds": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "--grid", "eval_seed=5|77777", "--out", tmp_path / "sw"],
        r"cannot sweep eval_seed: every student of a sweep is compared with its teacher on the same seeds", absent=[tmp_path / "sw"]),
    "sweep-view-the-env-lacks": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "-c", assets["recipe"], "--grid", "tau=0.5|1", "--grid",
         "student_view=camera", "--out", tmp_path / "sw"],
        r"--grid combination \{'tau': 0.5, 'student_view': 'camera'\}: env CartPole-v1 has no student view 'camera'", absent=[tmp_path / "sw" / "runs"]),
    "sweep-conv-without-an-image": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "-c", assets["recipe"], "--grid", "conv=[]|[[8,4,2]]", "--out",
         tmp_path / "sw"], r"--grid combination \{'conv': \[\[8, 4, 2\]\]\}: conv needs to know where the image is",
        absent=[tmp_path / "sw" / "runs"]),
    "sweep-corrupt-results": lambda tmp_path, assets: Case(
        ["sweep", assets["teacher"], "--env", "CartPole-v1", "-c", assets["recipe"], "--grid", "tau=0.5|1", "--out",
         _write(tmp_path / "sw" / "results.json", "{not json").parent], r"results\.json is corrupt",
        victims=[tmp_path / "sw" / "results.json"]),
    # teachers
    "teacher-missing": lambda tmp_path, assets: Case(["teacher", "eval", tmp_path / "missing.zip"], r"does not exist"),
    "teacher-empty-file": lambda tmp_path, assets: Case(["teacher", "eval", _write(tmp_path / "t.zip", ""), "--env", "CartPole-v1"],
                                                        r"not a readable SB3 checkpoint"),
    "teacher-not-a-zip": lambda tmp_path, assets: Case(["teacher", "eval", _write(tmp_path / "t.txt", "hello")], r"neither a \.zip"),
    "teacher-truncated": lambda tmp_path, assets: Case(
        ["teacher", "eval", _write_bytes(tmp_path / "t.zip", assets["teacher"].read_bytes()[:2000]), "--env", "CartPole-v1"],
        r"not a readable SB3 checkpoint"),
    "teacher-zip-without-env": lambda tmp_path, assets: Case(["teacher", "eval", assets["teacher"]], r"pass --env"),
    "teacher-unknown-env": lambda tmp_path, assets: Case(["teacher", "eval", assets["teacher"], "--env", "NoSuchEnv-v9"], r"NoSuchEnv-v9"),
    "teacher-wrong-algo": lambda tmp_path, assets: Case(["teacher", "eval", assets["teacher"], "--env", "CartPole-v1", "--algo", "sac"],
                                                        r"dqn"),
    "teacher-unknown-algo": lambda tmp_path, assets: Case(["teacher", "eval", assets["teacher"], "--env", "CartPole-v1", "--algo", "xyz"],
                                                          r"unknown algorithm 'xyz'"),
    "teacher-obs-space-mismatch": lambda tmp_path, assets: Case(["teacher", "eval", assets["sac"], "--env", "CartPole-v1"], r"shape"),
    "teacher-action-space-mismatch": lambda tmp_path, assets: Case(
        ["distill", assets["sac"], "--env", "PolicyKDTest/TwoActionPendulum-v0", "--out-dir", tmp_path / "runs"], r"action",
        absent=[tmp_path / "runs"]),
    "teacher-crafted-zip": lambda tmp_path, assets: _crafted_zip_case(tmp_path, assets),
    "teacher-crafted-vecnormalize": lambda tmp_path, assets: _crafted_vecnormalize_case(tmp_path, assets),
    "student-card-names-crafted-teacher": lambda tmp_path, assets: _crafted_card_case(tmp_path, assets),
    "teacher-config-names-a-foreign-wrapper": lambda tmp_path, assets: _foreign_wrapper_case(tmp_path, assets),
    # students
    "student-missing": lambda tmp_path, assets: Case(["export", tmp_path / "nostudent", "--format", "onnx"], r"not a student"),
    "student-path-with-a-newline": lambda tmp_path, assets: Case(["export", tmp_path / "no\nstudent", "--format", "onnx"],
                                                                 r"no\\nstudent is not a student folder"),
    "student-card-corrupt": lambda tmp_path, assets: _student_case(tmp_path, assets, lambda d: (d / "student.json").write_text("{oops"),
                                                                    r"student\.json"),
    "student-card-wrong-shape": lambda tmp_path, assets: _student_case(tmp_path, assets, _card_obs_dim_7, r"student"),
    "student-weights-truncated": lambda tmp_path, assets: _student_case(
        tmp_path, assets, lambda d: _truncate(d / "student.safetensors"), r"student\.safetensors"),
    "student-weights-nan": lambda tmp_path, assets: _student_case(tmp_path, assets, _nan_weights, r"(NaN|non-finite)"),
    "student-card-teacher-path-not-a-string": lambda tmp_path, assets: _student_case(
        tmp_path, assets, _card_teacher_path_number, r"student\.json: teacher\.path must be a string, got 5"),
    "student-card-action-bounds-edited": lambda tmp_path, assets: _continuous_student_case(
        tmp_path, _card_action_high_doubled, r"student\.safetensors and student\.json disagree on action_high"),
    "student-card-activation-edited": lambda tmp_path, assets: _student_case(
        tmp_path, assets, _card_activation_swapped, r"student\.safetensors was saved with another spec than student\.json holds: "
                                                    r"activation differ \(weights \"relu\", card \"tanh\"\)"),
    "student-card-normaliser-edited": lambda tmp_path, assets: _student_case(
        tmp_path, assets, _card_normaliser_shifted, r"student\.safetensors and student\.json disagree on obs_mean"),
    "recipe-key-given-twice": _config_case("lr: 0.001\nlr: 0.01", r"not valid YAML: .*key 'lr' is given twice"),
    # teacher recipes (policykd teacher train): checked before any env is built or folder written
    "teacher-recipe-invalid-yaml": _teacher_recipe_case("n_timesteps: [1", r"teacher config .* is not valid YAML"),
    "teacher-recipe-not-a-mapping": lambda tmp_path, assets: Case(
        ["teacher", "train", _write(tmp_path / "t.yaml", "- 1\n"), "--out", tmp_path / "agent"], r"must be a mapping",
        absent=[tmp_path / "agent"]),
    "teacher-recipe-timesteps-not-a-number": _teacher_recipe_case("n_timesteps: abc", r"key n_timesteps .* must be a int, got 'abc'"),
    "teacher-recipe-timesteps-negative": _teacher_recipe_case("n_timesteps: -5", r"key n_timesteps .* must be >= 1, got -5"),
    "teacher-recipe-timesteps-beyond-any-run": _teacher_recipe_case("n_timesteps: 1.0e+30", r"key n_timesteps .* must be <= 10,000,000,000"),
    "teacher-recipe-hyperparam-nan": _teacher_recipe_case("n_timesteps: 128\nhyperparams: {gamma: .nan}",
                                                          r"hyperparams\.gamma in teacher config .* must hold finite numbers, got nan"),
    "teacher-recipe-unknown-key": _teacher_recipe_case("n_timesteps: 100\nlearning_rate: 0.1", r"unknown keys \['learning_rate'\].*valid keys"),
    "teacher-recipe-unknown-hyperparam": _teacher_recipe_case(
        "n_timesteps: 100\nhyperparams:\n  n_stepz: 64", r"hyperparams \['n_stepz'\] .* are not PPO arguments; valid: .*n_steps"),
    "teacher-recipe-policy-kwargs-in-hyperparams": _teacher_recipe_case(
        "n_timesteps: 100\nhyperparams:\n  policy_kwargs: {}", r"move policy_kwargs from hyperparams to the top level"),
    "teacher-recipe-unknown-activation": _teacher_recipe_case(
        "n_timesteps: 100\npolicy_kwargs:\n  activation_fn: swish", r"activation_fn .* must be one of relu, tanh, elu, got 'swish'"),
    "teacher-recipe-never-past-learning-starts": lambda tmp_path, assets: Case(
        ["teacher", "train", _write(tmp_path / "t.yaml", "algo: sac\nenv_id: Pendulum-v1\nn_timesteps: 1000\nhyperparams:\n"
                                                         "  learning_starts: 5000\n"), "--out", tmp_path / "agent"],
        r"n_timesteps 1000 is not past SAC's learning_starts 5000, so the policy would never be trained", absent=[tmp_path / "agent"]),
    "teacher-recipe-never-past-default-learning-starts": lambda tmp_path, assets: Case(
        ["teacher", "train", _write(tmp_path / "t.yaml", "algo: dqn\nenv_id: CartPole-v1\nn_timesteps: 50\n"), "--out", tmp_path / "agent"],
        r"n_timesteps 50 is not past DQN's learning_starts 100", absent=[tmp_path / "agent"]),
    "teacher-recipe-name-escapes": _teacher_recipe_case("n_timesteps: 100\nname: ../../x", r"name '\.\./\.\./x' .* plain folder name"),
    "teacher-recipe-rejected-by-sb3": _teacher_recipe_case(
        "n_timesteps: 100\nhyperparams:\n  n_steps: 1\n  batch_size: 64", r"PPO rejected the teacher config's .*hyperparams"),
}



def _nan_teacher(teacher: Path, out: Path) -> Path:
    """A copy of the DQN teacher with NaN in its Q-network's last layer."""
    from stable_baselines3 import DQN

    model = DQN.load(teacher, device="cpu")
    with torch.no_grad():
        list(model.q_net.parameters())[-1].fill_(float("nan"))
    model.save(out)
    return out


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _victim_case(tmp_path: Path, argv: list, message: str) -> Case:
    victim = tmp_path / "victim"
    _write(victim / "buffer" / "precious.txt", "not policykd's")
    _write(victim / "notes.md", "mine")
    return Case(argv, message, victims=[victim], absent=[victim / "config.json", victim / "checkpoint"])


def _run_case(tmp_path: Path, assets: dict, extra: list, message: str, *, damage: str | None = None) -> Case:
    run = _copy_run(assets, tmp_path)
    if damage:
        target = run / damage
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        data[:4] = b"\x00{x\x01"
        target.write_bytes(bytes(data))
    return Case(_distill(assets, tmp_path, "--run-name", "done", *extra), message, victims=[run])


def _student_file_case(tmp_path: Path, assets: dict) -> Case:
    """A file where a run keeps its student folder: found only after every remaining round was trained, before."""
    run = _copy_run(assets, tmp_path)
    shutil.rmtree(run / "student")
    (run / "student").write_text("mine\n")
    return Case(_distill(assets, tmp_path, "--run-name", "done", "--resume"),
                r"student is a file where the run keeps its student folder; move it away, then resume", victims=[run])


def _lost_checkpoint_case(tmp_path: Path, assets: dict, *, replace_with_file: bool) -> Case:
    """A finished run whose checkpoint folder is gone (or a file): resuming it restarted from round 1 and cut the buffer
    (history doubled, chunks deleted); it is refused before anything changes."""
    run = _copy_run(assets, tmp_path)
    shutil.rmtree(run / "checkpoint")
    if replace_with_file:
        (run / "checkpoint").write_text("x\n")
        message = r"checkpoint is a file, not the run's checkpoint folder; this run cannot be resumed"
    else:
        message = r"finished rounds before \(per its history\.jsonl\) but its checkpoint is missing; this run cannot be resumed"
    return Case(_distill(assets, tmp_path, "--run-name", "done", "--resume"), message, victims=[run])


def _replaced_teacher_case(tmp_path: Path, assets: dict) -> Case:
    run = _copy_run(assets, tmp_path)
    teacher = tmp_path / "teacher.zip"
    shutil.copyfile(assets["qrdqn"], teacher)  # another CartPole checkpoint under the path the run recorded? a new path
    record = json.loads((run / "config.json").read_text())
    record["config"]["teacher"] = str(teacher)
    (run / "config.json").write_text(json.dumps(record))
    argv = ["distill", teacher, "--env", "CartPole-v1", "-c", assets["recipe"], "--out-dir", tmp_path / "runs", "--run-name", "done",
            "--resume"]
    return Case(argv, r"not the file .* was started with.*original teacher", victims=[run])


def _edited_record_case(tmp_path: Path, assets: dict) -> Case:
    """config.json's lr edited by hand to match a new recipe: the checkpoint was trained with the old lr."""
    run = _copy_run(assets, tmp_path)
    record = json.loads((run / "config.json").read_text())
    record["config"]["lr"] = 0.01
    (run / "config.json").write_text(json.dumps(record))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path(assets["recipe"]).read_text() + "lr: 0.01\n")
    argv = ["distill", assets["teacher"], "--env", "CartPole-v1", "-c", recipe, "--out-dir", tmp_path / "runs", "--run-name", "done",
            "--resume"]
    return Case(argv, r"config\.json was edited since its checkpoint was written \(lr: lr=0\.001 in the checkpoint\)", victims=[run])


def _locked_case(tmp_path: Path, assets: dict) -> Case:
    run = _copy_run(assets, tmp_path)
    _hold_lock(run / ".lock")
    return Case(_distill(assets, tmp_path, "--run-name", "done", "--resume"), r"another policykd process is working in", victims=[run])


_HOLDERS: list[subprocess.Popen] = []


def _hold_lock(lock: Path) -> None:
    """Another process holding `lock` (fcntl.flock) for a minute, as a second policykd process would."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"),
        str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    _HOLDERS.append(holder)


def _locked_sweep_case(tmp_path: Path, assets: dict) -> Case:
    """Two sweeps in one folder: the second would rewrite results.json without the first one's rows."""
    sweep = tmp_path / "sw"
    _write(sweep / "results.json", json.dumps({"runs": []}))
    _hold_lock(sweep / ".lock")
    argv = ["sweep", assets["teacher"], "--env", "CartPole-v1", "-c", assets["recipe"], "--grid", "hidden=[8]|[16]", "--out", sweep]
    return Case(argv, r"another policykd process is working in", victims=[sweep / "results.json"], absent=[sweep / "runs"])


def _locked_buffer_case(tmp_path: Path, assets: dict) -> Case:
    """Two `policykd collect --resume` on one buffer would append the same chunk: the second is refused."""
    buffer = tmp_path / "buffer"
    shutil.copytree(assets["buffer"], buffer)
    _hold_lock(buffer / ".lock")
    argv = ["collect", assets["teacher"], "--env", "CartPole-v1", "--out", buffer, "--steps", "200", "--resume"]
    return Case(argv, r"another policykd process is working in", victims=[buffer])


def _buffer_case(tmp_path: Path, assets: dict, extra: list, message: str, *, teacher: str = "teacher") -> Case:
    buffer = tmp_path / "buffer"
    shutil.copytree(assets["buffer"], buffer)
    argv = ["collect", assets[teacher], "--env", "CartPole-v1", "--out", buffer, "--steps", "100", *extra]
    return Case(argv, message, victims=[buffer])


def _edited_buffer_case(tmp_path: Path, assets: dict, edit: Callable[[dict], None], message: str) -> Case:
    """A buffer whose metadata.json was edited into another valid JSON document: one line, not a bug line later."""
    case = _buffer_case(tmp_path, assets, ["--resume"], message)
    metadata = json.loads((tmp_path / "buffer" / "metadata.json").read_text())
    edit(metadata)
    (tmp_path / "buffer" / "metadata.json").write_text(json.dumps(metadata))
    return case


def _edited_card_report_case(tmp_path: Path, assets: dict, edit: Callable[[dict], None], message: str) -> Case:
    """`policykd report` on a finished run whose student.json was hand-edited: refused in one line, the run untouched."""
    run = _copy_run(assets, tmp_path)
    card = json.loads((run / "student" / "student.json").read_text())
    edit(card)
    (run / "student" / "student.json").write_text(json.dumps(card))
    return Case(["report", run], message, victims=[run], absent=[run / "report.md"])


def _damaged_run_report_case(tmp_path: Path, assets: dict, name: str, text: str, message: str) -> Case:
    """`policykd report` on a finished run whose file `name` holds `text`: refused, the run untouched, no report.md."""
    run = _copy_run(assets, tmp_path)
    _write(run / name, text)
    return Case(["report", run], message, victims=[run], absent=[run / "report.md"])


def _export_into_student_case(tmp_path: Path, assets: dict) -> Case:
    student = tmp_path / "student"
    shutil.copytree(assets["student"], student)
    return Case(["export", student, "--format", "safetensors", "--out", student],
                r"--out .*student is a student folder and the export would replace its student\.safetensors; pass another --out",
                victims=[student])


def _json_over_student_case(tmp_path: Path, assets: dict) -> Case:
    student = tmp_path / "student"
    shutil.copytree(assets["student"], student)
    return Case(["eval", assets["teacher"], student, "--env", "CartPole-v1", "--json", student / "student.json"],
                r"student\.json exists and is not a record policykd wrote.*move it away", victims=[student])


def _json_over_checkpoint_case(tmp_path: Path, assets: dict) -> Case:
    teacher = tmp_path / "teacher.zip"
    shutil.copyfile(assets["teacher"], teacher)
    return Case(["teacher", "eval", teacher, "--env", "CartPole-v1", "--json", teacher],
                r"teacher\.zip exists and is not a record policykd wrote", victims=[teacher])


def _users_report_case(tmp_path: Path, assets: dict) -> Case:
    run = _copy_run(assets, tmp_path)
    _write(run / "report.md", "# my notes on this run\n")
    return Case(["report", run], r"report\.md was not written by `policykd report`.*move it away", victims=[run])


def _bench_replaced_case(tmp_path: Path, assets: dict) -> Case:
    teacher = tmp_path / "teacher.zip"
    shutil.copyfile(assets["teacher"], teacher)
    student = _tiny_student(tmp_path / "student", teacher={"path": str(teacher), "algo": "dqn", "sha256": "0" * 64,
                                                           "env": EnvSpec("CartPole-v1").to_json()})
    return Case(["bench", student, "--backends", "numpy", "--calls", "100"], r"does not have the sha256 recorded.*--teacher",
                victims=[teacher, student])


class _WritesMarker:
    """Unpickling this writes its marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _crafted_zip(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of the SB3 zip `src` whose "data" carries a pickle that writes `marker`."""
    payload = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(_WritesMarker(marker))).decode()}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(raw)
                data["observation_space"] = payload
                raw = json.dumps(data).encode()
            zout.writestr(item, raw)
    return dst


def _crafted_zip_case(tmp_path: Path, assets: dict) -> Case:
    marker = tmp_path / "pwned"
    zip_path = _crafted_zip(assets["teacher"], tmp_path / "crafted.zip", marker)
    return Case(["teacher", "eval", zip_path, "--env", "CartPole-v1"], r"crafted\.zip.*refused.*--trust-pickle", absent=[marker])


def _crafted_vecnormalize_case(tmp_path: Path, assets: dict) -> Case:
    marker = tmp_path / "pwned"
    run = tmp_path / "dqn" / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    shutil.copy(assets["teacher"], run / "CartPole-v1.zip")
    (run / "CartPole-v1" / "config.yml").write_text("normalize: true\n")
    (run / "CartPole-v1" / "vecnormalize.pkl").write_bytes(pickle.dumps(_WritesMarker(marker)))
    return Case(["teacher", "eval", run], r"vecnormalize\.pkl.*--trust-pickle", absent=[marker])


def _foreign_wrapper_case(tmp_path: Path, assets: dict) -> Case:
    """An rl-zoo folder whose config.yml names callables outside the wrapper packages (pathlib.Path.touch,
    os.system) as its env wrappers: refused before any is called."""
    marker = tmp_path / "pwned"
    run = tmp_path / "dqn" / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    shutil.copy(assets["teacher"], run / "CartPole-v1.zip")
    (run / "CartPole-v1" / "config.yml").write_text(f"env_wrapper:\n  - pathlib.Path.touch: {{}}\n  - os.system: {{}}\n"
                                                   f"# {marker}\n")
    return Case(["teacher", "eval", run], r"env wrapper 'pathlib\.Path\.touch' is outside.*--trust-pickle", absent=[marker])


def _crafted_card_case(tmp_path: Path, assets: dict) -> Case:
    """A student folder from someone else whose card names a crafted teacher with its true sha256."""
    marker = tmp_path / "pwned"
    zip_path = _crafted_zip(assets["teacher"], tmp_path / "crafted.zip", marker)
    record = {"path": str(zip_path), "algo": "dqn", "sha256": hashlib.sha256(zip_path.read_bytes()).hexdigest(),
              "env": EnvSpec("CartPole-v1").to_json()}
    student = _tiny_student(tmp_path / "student", teacher=record)
    return Case(["bench", student, "--backends", "numpy", "--calls", "100"], r"refused.*--trust-pickle", absent=[marker],
                victims=[student])


def _student_case(tmp_path: Path, assets: dict, damage: Callable[[Path], None], message: str) -> Case:
    student = tmp_path / "student"
    shutil.copytree(assets["student"], student)
    damage(student)
    return Case(["export", student, "--format", "onnx", "--out", tmp_path / "onnx"], message, victims=[student],
                absent=[tmp_path / "onnx" / "student.onnx"])


def _card_activation_swapped(student: Path) -> None:
    """relu -> tanh in the card: the weights' shapes cannot show it, the spec saved in their metadata does."""
    card = json.loads((student / "student.json").read_text())
    assert card["spec"]["activation"] == "relu"
    card["spec"]["activation"] = "tanh"
    (student / "student.json").write_text(json.dumps(card))


def _continuous_student_case(tmp_path: Path, damage: Callable[[Path], None], message: str) -> Case:
    student = _tiny_student(tmp_path / "student", obs_dim=3, action_dim=1, family="gaussian", env_id="Pendulum-v1")
    damage(student)
    return Case(["export", student, "--format", "onnx", "--out", tmp_path / "onnx"], message, victims=[student],
                absent=[tmp_path / "onnx" / "student.onnx"])


def _card_obs_dim_7(student: Path) -> None:
    card = json.loads((student / "student.json").read_text())
    card["spec"]["obs_dim"] = 7
    (student / "student.json").write_text(json.dumps(card))


def _card_teacher_path_number(student: Path) -> None:
    card = json.loads((student / "student.json").read_text())
    card["teacher"]["path"] = 5
    (student / "student.json").write_text(json.dumps(card))


def _card_action_high_doubled(student: Path) -> None:
    card = json.loads((student / "student.json").read_text())
    card["spec"]["action_high"] = [2 * v for v in card["spec"]["action_high"]]
    (student / "student.json").write_text(json.dumps(card))


def _card_normaliser_shifted(student: Path) -> None:
    """The card claims another normaliser mean than the weights hold (the weights' std and clip kept)."""
    card = json.loads((student / "student.json").read_text())
    weights = load_file(str(student / "student.safetensors"))
    std, clip = weights["obs_std"].astype(np.float64), float(weights["obs_clip"])
    card["spec"]["normalizer"] = {"mean": (weights["obs_mean"] + 1.0).tolist(), "var": (std**2 - 1e-8).tolist(),
                                  "clip": None if np.isinf(clip) else clip, "epsilon": 1e-8}
    (student / "student.json").write_text(json.dumps(card))


def _nan_weights(student: Path) -> None:
    weights = load_file(str(student / "student.safetensors"))
    weights["action_head.weight"][0, 0] = np.nan
    save_file(weights, str(student / "student.safetensors"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_loses_nothing(name: str, tmp_path: Path, assets: dict, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    case = CASES[name](tmp_path, assets)
    before = {p: _digest(p) for p in case.victims}
    try:
        result = runner.invoke(app, [str(a) for a in case.argv])
    finally:
        while _HOLDERS:
            _HOLDERS.pop().kill()
    output = result.output.strip()
    assert result.exit_code == case.exit_code, output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    import re

    assert re.search(case.message, errors[0]), errors[0]
    for path, digest in before.items():
        assert _digest(path) == digest, f"{path} changed"
    for path in case.absent:
        assert not path.exists(), f"{path} was written"


def test_the_catalogue_is_large() -> None:
    assert len(CASES) >= 60


def _signal_during(argv: list[str], sig: int, *, wait_for: Callable[[], bool], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    process = subprocess.Popen([sys.executable, "-m", "policykd.cli", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not wait_for() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        os.killpg(process.pid, sig)  # the whole process group, workers included, as a terminal's Ctrl-C does
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_collect_keeps_its_chunks_and_resumes(sig, tmp_path, assets) -> None:
    buffer = tmp_path / "buf"
    argv = ["collect", str(assets["teacher"]), "--env", "CartPole-v1", "--out", str(buffer), "--steps", "200000",
            "--chunk-steps", "500"]
    result = _signal_during(argv, sig, wait_for=lambda: len(list(buffer.glob("chunk_*.npz"))) >= 2, cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "--resume" in result.stderr
    from policykd.buffer import Buffer

    kept = Buffer.open(buffer)
    assert kept.rows >= 1000 and len(kept.load()["obs"]) == kept.rows
    resumed = runner.invoke(app, argv[:-4] + ["--steps", str(kept.rows + 300), "--chunk-steps", "500", "--resume"])
    assert resumed.exit_code != 0  # other settings than the interrupted collection: refused
    assert "other settings" in resumed.output


def test_interrupted_collect_resumes_to_the_full_count(tmp_path, assets) -> None:
    buffer = tmp_path / "buf"
    argv = ["collect", str(assets["teacher"]), "--env", "CartPole-v1", "--out", str(buffer), "--steps", "3000", "--chunk-steps", "400"]
    result = _signal_during(argv, signal.SIGINT, wait_for=lambda: len(list(buffer.glob("chunk_*.npz"))) >= 1, cwd=tmp_path)
    assert result.returncode in (0, 130), result.stderr
    from policykd.buffer import Buffer

    done_before = Buffer.open(buffer).rows
    resumed = runner.invoke(app, argv + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    final = Buffer.open(buffer)
    data = final.load()
    assert final.rows == 3000 == len(data["obs"]) and done_before <= 3000
    assert np.isfinite(data["obs"]).all()


def test_interrupted_distill_says_how_to_resume(tmp_path, assets) -> None:
    argv = ["distill", str(assets["teacher"]), "--env", "CartPole-v1", "--steps", "400000", "--rounds", "2", "--out-dir",
            str(tmp_path / "runs"), "--run-name", "r", "--no-eval"]
    metadata = tmp_path / "runs" / "r" / "buffer" / "metadata.json"
    seen: list[float] = []

    def collecting() -> bool:  # a moment after the buffer exists: the workers are running
        if metadata.exists() and not seen:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 2.0

    result = _signal_during(argv, signal.SIGTERM, wait_for=collecting, cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "--run-name r" in result.stderr and "--resume" in result.stderr


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux /proc")
def test_collection_workers_end_when_their_parent_is_killed(tmp_path, assets) -> None:
    """SIGKILL (the OOM killer, a job timeout) gives the parent no chance to stop its workers: they stop themselves."""
    argv = ["distill", str(assets["teacher"]), "--env", "CartPole-v1", "--steps", "400000", "--rounds", "1", "--out-dir",
            str(tmp_path / "runs"), "--run-name", "r", "--no-eval"]
    process = subprocess.Popen([sys.executable, "-m", "policykd.cli", *argv], cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            workers = _children(process.pid)
        assert len(workers) >= 2, "the collection workers never started"
        process.kill()
        process.wait()
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{w}").exists() and "Z" not in _state(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in _state(w)]
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)


def _state(pid: int) -> str:
    """The process state letter from /proc/PID/stat ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path, assets, monkeypatch) -> None:
    """Rerunning an interrupted sweep continues its interrupted combination from its checkpoint (before: 'run dir ...
    already exists; pass --resume', an option sweep does not have) and ends with every combination."""
    import policykd.pipeline as pipeline

    compare, calls = pipeline.compare, []

    def interrupted_once(*args, **kwargs):  # Ctrl-C while the first combination's student is evaluated
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return compare(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compare", interrupted_once)
    recipe = _write(tmp_path / "sweep.yaml", "labelled_steps: 200\nrounds: 2\nepochs_per_round: 1\nhidden: [8]\n"
                                             "eval_episodes: 1\nlatency_calls: 10\n")
    argv = ["sweep", str(assets["teacher"]), "--env", "CartPole-v1", "-c", str(recipe), "--grid", "lr=0.001|0.003",
            "--out", str(tmp_path / "sw")]
    result = runner.invoke(app, [str(a) for a in argv])
    assert result.exit_code == 130 and "continue with the same command" in result.output, result.output
    again = runner.invoke(app, [str(a) for a in argv])
    assert again.exit_code == 0, again.output
    rows = json.loads((tmp_path / "sw" / "results.json").read_text())["runs"]
    assert [r["name"] for r in rows] == ["sweep000__lr=0.001", "sweep001__lr=0.003"]
    history = (tmp_path / "sw" / "runs" / "sweep000__lr=0.001" / "history.jsonl").read_text().splitlines()
    assert any("resume/round" in json.loads(line) for line in history)  # continued from its checkpoint, not started over
    before = _digest(tmp_path / "sw")
    for grid in ("lr=0.0005|0.001|0.003", "tau=1|2"):  # another grid here: runs named for other combinations, rows mixed
        other = runner.invoke(app, [str(a) for a in argv[:-4]] + ["--grid", grid, "--out", str(tmp_path / "sw")])
        assert other.exit_code == 2 and "holds a sweep of another --grid" in other.output, other.output
    assert _digest(tmp_path / "sw") == before


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux /proc")
def test_an_evaluation_worker_that_dies_is_one_line(tmp_path, assets) -> None:
    """An env worker killed mid-evaluation (the OOM killer, a simulator crash) looked like a Ctrl-C ('interrupted',
    exit 130: click reads the EOFError as an abort) with tracebacks from gymnasium and the other worker."""
    argv = [sys.executable, "-m", "policykd.cli", "teacher", "eval", str(assets["teacher"]), "--env", "CartPole-v1",
            "--episodes", "100000", "--n-envs", "2"]
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_children(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(_children(process.pid)[0], signal.SIGKILL)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, err
    assert "error: an env worker process of CartPole-v1 died (killed, out of memory, or the simulator crashed)" in err
    assert "Traceback" not in err + out and "interrupted" not in err
