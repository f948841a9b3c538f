import json

import numpy as np
import pytest
import torch

import policykd.distill as distill_module
from policykd.buffer import Buffer
from policykd.config import DistillConfig, load_config
from policykd.distill import distill, held_out_episodes, validation_loss
from policykd.errors import PolicyKDError
from policykd.evaluate import compare
from policykd.students import load_student
from policykd.teachers import load_teacher
from policykd.tracking import Tracker
from tests.conftest import zoo_run


def _config(tiny_teachers, tmp_path, **kw):
    base = dict(teacher=str(tiny_teachers["dqn"]), env_id="CartPole-v1", labelled_steps=600, rounds=3, epochs_per_round=2,
                out_dir=str(tmp_path), run_name="run", seed=3, hidden=[16, 16], tau=0.5)
    base.update(kw)
    return DistillConfig(**base)


def _weights(student):
    return {k: v.clone() for k, v in student.state_dict().items()}


def test_same_seed_and_config_give_the_same_student(tiny_teachers, tmp_path):
    a = distill(_config(tiny_teachers, tmp_path / "a"), tracker=Tracker(None, quiet=True))
    b = distill(_config(tiny_teachers, tmp_path / "b"), tracker=Tracker(None, quiet=True))
    c = distill(_config(tiny_teachers, tmp_path / "c", seed=4), tracker=Tracker(None, quiet=True))
    for k, v in _weights(a.student).items():
        torch.testing.assert_close(v, b.student.state_dict()[k], rtol=0, atol=0)
    assert not all(torch.equal(v, c.student.state_dict()[k]) for k, v in _weights(a.student).items())
    assert [h.labelled_steps for h in a.history] == [200, 400, 600]
    assert [h.beta for h in a.history] == [1.0, 0.5, 0.25]


def _interrupted_in_round_three(train_round):
    """train_round, but Ctrl-C (KeyboardInterrupt) when the third round starts training."""
    calls = {"n": 0}

    def crash_in_round_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return train_round(*args, **kwargs)

    return crash_in_round_three


def test_interrupted_run_resumes_to_the_same_student(tiny_teachers, tmp_path, monkeypatch):
    reference = distill(_config(tiny_teachers, tmp_path / "ref"), tracker=Tracker(None, quiet=True))
    real_train = distill_module.train_round
    crash_in_round_three = _interrupted_in_round_three(real_train)
    monkeypatch.setattr(distill_module, "train_round", crash_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        distill(_config(tiny_teachers, tmp_path / "int"), tracker=Tracker(None, quiet=True))
    progress = json.loads((tmp_path / "int" / "run" / "checkpoint" / "progress.json").read_text())
    assert progress["rounds_done"] == 2
    monkeypatch.setattr(distill_module, "train_round", real_train)
    with pytest.raises(PolicyKDError, match="--resume"):
        distill(_config(tiny_teachers, tmp_path / "int"), tracker=Tracker(None, quiet=True))
    resumed = distill(_config(tiny_teachers, tmp_path / "int"), resume=True, tracker=Tracker(None, quiet=True))
    for k, v in _weights(reference.student).items():
        torch.testing.assert_close(v, resumed.student.state_dict()[k], rtol=0, atol=0)
    final = load_student(tmp_path / "int" / "run" / "student")
    assert final.card["config"]["seed"] == 3 and len(final.card["history"]) == 3


@pytest.mark.parametrize("damage", ["torn last line", "deleted"])
def test_a_resumed_run_mends_its_history_log(tiny_teachers, tmp_path, monkeypatch, damage):
    """A run killed while writing history.jsonl, or whose log was deleted, resumes to a log of whole JSON lines with
    every round once."""
    real_train = distill_module.train_round
    crash_in_round_three = _interrupted_in_round_three(real_train)
    history = tmp_path / "run" / "history.jsonl"
    monkeypatch.setattr(distill_module, "train_round", crash_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        distill(_config(tiny_teachers, tmp_path), tracker=Tracker(history, quiet=True))
    monkeypatch.setattr(distill_module, "train_round", real_train)
    if damage == "deleted":
        history.unlink()
    else:
        with open(history, "a") as f:
            f.write('{"step": 600, "distill/rou')
    distill(_config(tiny_teachers, tmp_path), resume=True, tracker=Tracker(history, quiet=True))
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["distill/round"] for r in records if "distill/round" in r] == [0, 1, 2]


def test_distilled_student_reaches_teacher_return_on_cartpole(tmp_path):
    teacher = load_teacher(zoo_run("ppo", "CartPole-v1"))
    config = DistillConfig(teacher=str(teacher.source.path), labelled_steps=4000, rounds=4, hidden=[32, 32], out_dir=str(tmp_path),
                           run_name="cp", seed=0)
    result = distill(config, teacher=teacher, tracker=Tracker(None, quiet=True))
    report = compare(teacher, result.student, episodes=5, latency_calls=20)
    assert report.teacher.mean == pytest.approx(500.0)
    assert report.ratio >= 0.95
    assert report.agreement["accuracy"] >= 0.7 and report.agreement["kl"] < 0.3
    assert result.student.parameter_count() < teacher.actor_parameter_count()


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher: x\nlabelled_steps: 1000\nrounds: 2\n")
    config = load_config(path, {"rounds": 4, "seed": None})
    assert (config.labelled_steps, config.rounds, config.seed) == (1000, 4, 0)
    assert sum(config.round_steps(r) for r in range(4)) == 1000
    path.write_text("teacher: x\nlabeled_steps: 1000\n")
    with pytest.raises(PolicyKDError, match="unknown config keys \\['labeled_steps'\\]"):
        load_config(path, {})
    with pytest.raises(PolicyKDError, match="data_mode"):
        DistillConfig(teacher="x", data_mode="bc")
    with pytest.raises(PolicyKDError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", {})
    with pytest.raises(PolicyKDError, match="collect_max_episode_steps"):
        DistillConfig(teacher="x", collect_max_episode_steps=-1)


def test_distill_collects_truncated_episodes(tiny_teachers, tmp_path):
    """collect_max_episode_steps reaches the collection envs: no episode in the buffer is longer."""
    result = distill(_config(tiny_teachers, tmp_path, collect_max_episode_steps=15, label_every=1), tracker=Tracker(None, quiet=True))
    data = Buffer.open(result.run_dir / "buffer").load()
    assert np.bincount(data["episode_id"]).max() == 15


def test_teacher_mode_never_lets_the_student_act(tiny_teachers, tmp_path):
    result = distill(_config(tiny_teachers, tmp_path, data_mode="teacher"), tracker=Tracker(None, quiet=True))
    assert all(h.student_acted == 0.0 for h in result.history)
    data = np.load(sorted((tmp_path / "run" / "buffer").glob("chunk_*.npz"))[-1])
    assert (data["actor"] == 0).all()


def test_resume_refuses_a_changed_config(tiny_teachers, tmp_path):
    distill(_config(tiny_teachers, tmp_path, rounds=1, labelled_steps=100), tracker=Tracker(None, quiet=True))
    with pytest.raises(PolicyKDError, match="different config.*lr"):
        distill(_config(tiny_teachers, tmp_path, rounds=1, labelled_steps=100, lr=0.5), resume=True, tracker=Tracker(None, quiet=True))


def test_resume_accepts_a_run_saved_before_newer_config_keys(tiny_teachers, tmp_path):
    """A run written before a config key existed resumes when the key keeps its default."""
    config = _config(tiny_teachers, tmp_path, rounds=2, labelled_steps=200)
    distill(config, tracker=Tracker(None, quiet=True))
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    del saved["config"]["bounded_means"]
    path.write_text(json.dumps(saved))
    result = distill(config, resume=True, tracker=Tracker(None, quiet=True))
    assert len(result.history) == 2


def test_resume_refuses_a_run_labelled_with_an_argmax_teachers_raw_outputs(tiny_teachers, tmp_path):
    """A DQN run started before argmax teachers' logits were scaled holds labels of another scale: not resumed."""
    config = _config(tiny_teachers, tmp_path, rounds=2, labelled_steps=200)
    distill(config, tracker=Tracker(None, quiet=True))
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    assert saved["teacher"]["logit_scale"] > 0
    del saved["teacher"]["logit_scale"]
    path.write_text(json.dumps(saved))
    with pytest.raises(PolicyKDError, match="labelled with this teacher's raw outputs.*start a new run"):
        distill(config, resume=True, tracker=Tracker(None, quiet=True))


def test_held_out_episodes_are_stable_and_about_the_fraction():
    ids = np.arange(10_000)
    held = held_out_episodes(ids, 0.1, seed=3)
    assert 0.08 < held.mean() < 0.12
    assert (held_out_episodes(ids[:500], 0.1, seed=3) == held[:500]).all()  # an episode keeps its side as data grows
    assert not held_out_episodes(ids, 0.0, seed=3).any()
    assert (held_out_episodes(ids, 0.1, seed=4) != held).any()


def test_a_few_long_episodes_still_hold_one_out_and_a_trained_episode_never_moves_to_validation():
    """A balancing teacher's first round is a handful of 1000-step episodes: 10% of 6 rounds to none, so the
    episode with the lowest hash is held out (round 0 got no model selection before). Over rounds (each adding
    episodes, at least two in the first) the held-out set may change, but no episode that was trained on (not held
    out in an earlier round) is ever held out later."""
    rows = np.repeat(np.arange(40), 3)  # 40 episodes of 3 rows; the hash (seed 2) picks none of the first 8
    assert not held_out_episodes(rows[rows < 8], 0.0, seed=2).any()
    trained: set[int] = set()
    for n in (2, 3, 5, 8, 12, 20, 40):  # the episodes gathered by each round
        held = held_out_episodes(rows[rows < n], 0.1, seed=2)
        held_ids = set(np.unique(rows[rows < n][held]).tolist())
        assert held_ids, f"no episode held out of {n}"
        assert not held_ids & trained, f"an episode trained on became validation at {n} episodes"
        trained |= set(range(n)) - held_ids
        assert all(held[rows[rows < n] == e].all() for e in held_ids)  # whole episodes
    assert not held_out_episodes(np.zeros(50, dtype=np.int64), 0.1, seed=2).any()  # one episode: nothing to hold out


def test_a_first_round_whose_episodes_the_hash_all_holds_out_still_trains_on_one():
    """Seed 0 hashes episode 0 into validation; a short first round of two long episodes (ids 0 and 361, a
    MountainCar teacher's 120 steps on two envs) had both held out, so round 0 trained on nothing and its loss was
    NaN ("training diverged"). The earliest episode is trained on then, and stays so in every later round."""
    ids = np.repeat([0, 361], 60)
    assert (held_out_episodes(ids, 0.1, seed=0) == (ids == 361)).all()  # without round info, all rows are the first round
    first = held_out_episodes(ids, 0.1, seed=0, row_round=np.zeros(len(ids), dtype=np.int32))
    assert not first[ids == 0].any() and first[ids == 361].all()
    later_ids = np.concatenate([ids, np.repeat(np.arange(362, 400), 5)])
    later_rounds = np.concatenate([np.zeros(len(ids), dtype=np.int32), np.ones(len(later_ids) - len(ids), dtype=np.int32)])
    later = held_out_episodes(later_ids, 0.1, seed=0, row_round=later_rounds)
    assert not later[later_ids == 0].any() and later[later_ids == 361].all()  # each episode keeps its side
    assert not held_out_episodes(np.zeros(50, dtype=np.int64), 0.1, seed=0, row_round=np.zeros(50, dtype=np.int32)).any()


def test_validation_keeps_the_best_epoch_and_stops_early(tiny_teachers, tmp_path):
    config = _config(tiny_teachers, tmp_path, validation_fraction=0.2, early_stopping_patience=2, epochs_per_round=30,
                     lr=0.05, lr_schedule="constant")
    result = distill(config, tracker=Tracker(None, quiet=True))
    validated = [m for m in result.history if m.val_kl is not None]  # a round with no held-out episode yet has none
    assert validated and validated[-1] is result.history[-1]
    for metrics in validated:
        assert 1 <= metrics.best_epoch <= metrics.epochs <= 30
        assert metrics.epochs == 30 or metrics.epochs - metrics.best_epoch == 2  # stopped after 2 epochs without progress
    assert any(m.epochs < 30 for m in validated)
    data = Buffer.open(result.run_dir / "buffer").load()
    held = held_out_episodes(data["episode_id"], 0.2, seed=config.seed)
    kept = validation_loss(result.student, {k: v[held] for k, v in data.items()}, "categorical")
    assert kept == pytest.approx(result.history[-1].val_kl, rel=1e-5)  # the kept weights are the best epoch's
    again = distill(_config(tiny_teachers, tmp_path / "again", validation_fraction=0.2, early_stopping_patience=2,
                            epochs_per_round=30, lr=0.05, lr_schedule="constant"), tracker=Tracker(None, quiet=True))
    for k, v in result.student.state_dict().items():
        torch.testing.assert_close(v, again.student.state_dict()[k], rtol=0, atol=0)


def test_default_recipe_decides_epochs_per_round_and_batch_from_the_data_and_records_it(tiny_teachers, tmp_path):
    """No recipe file: the batch size follows the budget and each round's epochs give it about
    GRADIENT_STEPS_PER_ROUND updates on the rows gathered so far (within DECIDED_EPOCHS_RANGE), so the first
    rounds' small data is fitted as far as the last round's; validation and bounded means are on, and the run's
    record says what was decided."""
    small, large = DistillConfig(labelled_steps=10_000), DistillConfig(labelled_steps=50_000)
    assert small.decided_batch_size() == 128 and large.decided_batch_size() == 256
    assert [small.decided_epochs_per_round(r) for r in range(5)] == [200, 188, 128, 96, 76]  # round 0: capped
    assert [large.decided_epochs_per_round(r) for r in range(5)] == [150, 76, 51, 39, 31]
    assert small.validation_fraction > 0 and small.bounded_means
    with pytest.raises(PolicyKDError, match="config key batch_size must be >= 1, got 0"):
        DistillConfig(batch_size=0)  # 0 is a mistake, not "decide for me" (that is null)
    assert DistillConfig(labelled_steps=10_000, rounds=2, batch_size=64, epochs_per_round=3).decisions() == {
        "epochs_per_round": [3, 3], "batch_size": 64, "decided_from_budget": []}
    result = distill(_config(tiny_teachers, tmp_path, epochs_per_round=None), tracker=Tracker(None, quiet=True))
    record = json.loads((result.run_dir / "config.json").read_text())
    assert record["config"]["epochs_per_round"] is None and record["config"]["batch_size"] is None
    # 600 steps in 3 rounds at batch 64: 4, 7 and 10 minibatches a round
    assert record["decided"] == {"epochs_per_round": [200, 200, 200], "batch_size": 64,
                                 "decided_from_budget": ["epochs_per_round", "batch_size"], "value_matching": True}
    assert result.student.card["decided"] == record["decided"]
    assert [m.epochs for m in result.history] == [200, 200, 200]


def test_quantisation_aware_rounds_train_the_int8_forward_and_save_a_float_student(tiny_teachers, tmp_path, monkeypatch):
    seen: list[bool] = []
    train_round = distill_module.train_round

    def spy(student, *args, **kwargs):
        seen.append(student.quantise_int8)
        return train_round(student, *args, **kwargs)

    monkeypatch.setattr(distill_module, "train_round", spy)
    result = distill(_config(tiny_teachers, tmp_path, quantise_aware_rounds=2), tracker=Tracker(None, quiet=True))
    assert seen == [False, True, True]
    assert result.student.quantise_int8 is False and load_student(result.run_dir / "student").quantise_int8 is False
    plain = distill(_config(tiny_teachers, tmp_path / "plain"), tracker=Tracker(None, quiet=True))
    assert not all(torch.equal(v, plain.student.state_dict()[k]) for k, v in result.student.state_dict().items())
    with pytest.raises(PolicyKDError, match=r"quantise_aware_rounds \(4\) must be at most rounds \(3\)"):
        _config(tiny_teachers, tmp_path, quantise_aware_rounds=4)


def test_bc_students_are_selected_by_their_own_held_out_loss_not_by_kl():
    """A hard-label BC student's std shrinks towards its residuals: one that acts exactly like the teacher with a
    tiny std has a huge KL to it, while one whose mean is off by half a teacher std has a small KL. Selecting BC
    epochs by KL picked the second kind (Hopper at 10k: BC students fell in 100 of 100 episodes); by the held-out
    hard-label NLL, the first."""
    from policykd.students import Student, StudentSpec

    def student_with(mean: float, log_std: float) -> Student:
        student = Student(StudentSpec(obs_dim=2, action_dim=1, family="gaussian", hidden=(4,), action_low=(-1.0,),
                                      action_high=(1.0,)))
        with torch.no_grad():
            for p in student.parameters():
                p.zero_()
            student.action_head.bias.fill_(mean)
            student.log_std_head.bias.fill_(log_std)
        return student

    data = {"obs": np.zeros((8, 2), np.float32), "dist_mean": np.zeros((8, 1), np.float32),
            "dist_log_std": np.zeros((8, 1), np.float32), "value": np.zeros(8, np.float32)}
    exact, off = student_with(0.0, -5.0), student_with(0.5, 0.0)
    assert validation_loss(exact, data, "gaussian") > 1000 > validation_loss(off, data, "gaussian")
    assert validation_loss(exact, data, "gaussian", loss="bc") < validation_loss(off, data, "gaussian", loss="bc")
    assert validation_loss(off, data, "gaussian", loss="mse") == pytest.approx(0.25, rel=1e-5)


def test_validation_compares_means_beyond_the_bounds_as_training_does():
    """A teacher whose means lie beyond the action bounds (the env clips them; rl-zoo's A2C HalfCheetah has 61% of
    its means there, up to 9) is matched by a student at the bound: held-out KL judged the same way is small, while
    the raw KL is huge, and model selection on the raw KL picked broken students (ratio -0.35 before the fix)."""
    from policykd.students import Student, StudentSpec

    student = Student(StudentSpec(obs_dim=2, action_dim=1, family="gaussian", hidden=(4,), action_low=(-1.0,), action_high=(1.0,)))
    with torch.no_grad():
        for p in student.parameters():
            p.zero_()
        student.action_head.bias.fill_(1.0)  # mean at the upper bound
        student.log_std_head.bias.fill_(-2.0)
    data = {"obs": np.zeros((8, 2), np.float32), "dist_mean": np.full((8, 1), 6.0, np.float32),
            "dist_log_std": np.full((8, 1), -2.0, np.float32), "value": np.zeros(8, np.float32)}
    bounds = (student.action_low, student.action_high)
    assert validation_loss(student, data, "gaussian", action_bounds=bounds) == pytest.approx(0.0, abs=1e-6)
    assert validation_loss(student, data, "gaussian") > 100
