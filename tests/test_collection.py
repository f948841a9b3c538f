import numpy as np
import pytest

from policykd.artifacts import atomic_write_json
from policykd.buffer import Buffer
from policykd.collection import check_student_fits, collect_to_buffer
from policykd.collectors import LocalCollector
from policykd.config import DistillConfig
from policykd.errors import PolicyKDError
from policykd.students import Student, StudentSpec
from policykd.teachers import load_teacher
from policykd.tracking import Tracker

SETTINGS = {"steps": 500, "beta": 1.0, "seed": 0, "n_envs": 2, "deterministic": False, "student": None}


def test_chunks_are_committed_as_they_fill_and_a_resumed_buffer_is_the_uninterrupted_one(tiny_teachers, tmp_path):
    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    progress = Tracker(None, quiet=True).progress
    collector = LocalCollector(teacher, DistillConfig(n_envs=2, label_every=1))
    whole = collect_to_buffer(teacher, tmp_path / "whole", SETTINGS, student=None, chunk_steps=120, resume=False,
                              progress=progress, collector=collector)
    buffer = collect_to_buffer(teacher, tmp_path / "b", {**SETTINGS, "steps": 300}, student=None, chunk_steps=120,
                               resume=False, progress=progress, collector=collector)
    assert [c["rows"] for c in buffer.metadata["chunks"]] == [120, 120, 60]
    with pytest.raises(PolicyKDError, match="other settings"):
        collect_to_buffer(teacher, tmp_path / "b", SETTINGS, student=None, chunk_steps=120, resume=True, progress=progress,
                          collector=collector)
    # interrupted after two committed chunks (the third being collected is lost): resume it to 500
    Buffer.open(tmp_path / "b").truncate(2)
    meta = Buffer.open(tmp_path / "b").metadata
    meta["config"]["steps"] = 500
    atomic_write_json(tmp_path / "b" / "metadata.json", meta)
    resumed = collect_to_buffer(teacher, tmp_path / "b", SETTINGS, student=None, chunk_steps=120, resume=True,
                                progress=progress, collector=collector)
    assert resumed.rows == 500 and [c["rows"] for c in resumed.metadata["chunks"]] == [120, 120, 120, 120, 20]
    data, expected = resumed.load(), whole.load()
    for key in expected:  # chunk k comes from seed (seed, k) wherever the collection stopped
        np.testing.assert_array_equal(data[key], expected[key], err_msg=key)
    ids = data["episode_id"]
    assert len(ids[np.r_[True, np.diff(ids) != 0]]) == len(np.unique(ids))  # each episode id is one run of rows


def test_a_buffer_labelled_with_an_argmax_teachers_raw_outputs_is_not_resumed(tiny_teachers, tmp_path):
    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    progress = Tracker(None, quiet=True).progress
    collector = LocalCollector(teacher, DistillConfig(n_envs=2, label_every=1))
    collect_to_buffer(teacher, tmp_path / "b", {**SETTINGS, "steps": 200}, student=None, chunk_steps=120, resume=False,
                      progress=progress, collector=collector)
    meta = Buffer.open(tmp_path / "b").metadata
    assert meta["teacher"]["logit_scale"] == teacher.logit_scale
    del meta["teacher"]["logit_scale"]  # as a buffer collected before the logit scale
    atomic_write_json(tmp_path / "b" / "metadata.json", meta)
    with pytest.raises(PolicyKDError, match="labelled with this teacher's raw outputs.*collect into a new --out"):
        collect_to_buffer(teacher, tmp_path / "b", SETTINGS, student=None, chunk_steps=120, resume=True, progress=progress,
                          collector=collector)


def test_a_student_must_fit_the_teacher(tiny_teachers):
    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    fits = Student(StudentSpec(obs_dim=4, action_dim=2, family="categorical", hidden=(8,)))
    check_student_fits(fits, teacher)
    wrong = Student(StudentSpec(obs_dim=4, action_dim=3, family="categorical", hidden=(8,)))
    with pytest.raises(PolicyKDError, match="gives 3 categorical actions.*teacher's env has 4 and 2"):
        check_student_fits(wrong, teacher)
    assert np.all(np.isfinite(fits.act(np.zeros((2, 4), dtype=np.float32))))


def test_a_round_smaller_than_n_envs_starts_a_worker_per_row_only(tiny_teachers, monkeypatch):
    """--n-envs 16 with a 3-row round forked 16 workers, 13 of them with nothing to collect."""
    import policykd.collectors as collectors

    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    started, worker_processes = [], collectors._worker_processes

    def counted(teacher, jobs, options):
        started.append(len(jobs))
        return worker_processes(teacher, jobs, options)

    monkeypatch.setattr(collectors, "_worker_processes", counted)
    rows, _ = LocalCollector(teacher, DistillConfig(n_envs=16, label_every=1)).collect_round(
        steps=3, beta=1.0, seed=0, round_index=0, episode_offset=0, student=None)
    assert started == [3] and len(rows["obs"]) == 3


def test_a_student_at_beta_1_is_refused_before_anything_is_written(tiny_teachers, tmp_path):
    """At --beta 1 the teacher drives every step: the buffer's metadata would name a student that never acted."""
    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    student = Student(StudentSpec(obs_dim=4, action_dim=2, family="categorical", hidden=(8,)))
    collector = LocalCollector(teacher, DistillConfig(n_envs=1, label_every=1))
    with pytest.raises(PolicyKDError, match=r"--student acts only when --beta < 1 .*pass --beta below 1 .*or drop --student"):
        collect_to_buffer(teacher, tmp_path / "b", {**SETTINGS, "student": "s"}, student=student, chunk_steps=120,
                          resume=False, progress=Tracker(None, quiet=True).progress, collector=collector)
    assert not (tmp_path / "b").exists()
    buffer = collect_to_buffer(teacher, tmp_path / "b", {**SETTINGS, "steps": 20, "beta": 0.5, "student": "s"}, student=student,
                               chunk_steps=120, resume=False, progress=Tracker(None, quiet=True).progress, collector=collector)
    assert buffer.rows == 20 and buffer.metadata["config"]["beta"] == 0.5
