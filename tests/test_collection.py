import numpy as np
import pytest

from policykd.buffer import Buffer
from policykd.collection import check_student_fits, collect_to_buffer
from policykd.errors import PolicyKDError
from policykd.students import Student, StudentSpec
from policykd.teachers import load_teacher
from policykd.tracking import Tracker

SETTINGS = {"steps": 500, "beta": 1.0, "seed": 0, "n_envs": 2, "deterministic": False, "student": None}


def test_chunks_are_committed_as_they_fill_and_resume_completes_the_count(tiny_teachers, tmp_path):
    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    progress = Tracker(None, quiet=True).progress
    buffer = collect_to_buffer(teacher, tmp_path / "b", {**SETTINGS, "steps": 300}, student=None, chunk_steps=120,
                               resume=False, progress=progress)
    assert [c["rows"] for c in buffer.metadata["chunks"]] == [120, 120, 60]
    # an interrupted collection is the same buffer with fewer rows: resume it to 500 under the same settings
    with pytest.raises(PolicyKDError, match="other settings"):
        collect_to_buffer(teacher, tmp_path / "b", SETTINGS, student=None, chunk_steps=120, resume=True, progress=progress)
    meta = Buffer.open(tmp_path / "b").metadata
    meta["config"]["steps"] = 500
    from policykd.artifacts import atomic_write_json

    atomic_write_json(tmp_path / "b" / "metadata.json", meta)
    resumed = collect_to_buffer(teacher, tmp_path / "b", SETTINGS, student=None, chunk_steps=120, resume=True, progress=progress)
    data = resumed.load()
    assert resumed.rows == 500 == len(data["obs"])
    first, second = data["episode_id"][:300], data["episode_id"][300:]
    assert second.min() > first.max()  # the resumed part starts fresh episodes with new ids


def test_a_student_must_fit_the_teacher(tiny_teachers):
    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    fits = Student(StudentSpec(obs_dim=4, action_dim=2, family="categorical", hidden=(8,)))
    check_student_fits(fits, teacher)
    wrong = Student(StudentSpec(obs_dim=4, action_dim=3, family="categorical", hidden=(8,)))
    with pytest.raises(PolicyKDError, match="gives 3 categorical actions.*teacher's env has 4 and 2"):
        check_student_fits(wrong, teacher)
    assert np.all(np.isfinite(fits.act(np.zeros((2, 4), dtype=np.float32))))
