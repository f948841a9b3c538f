"""A saved student as a teacher (policykd.student_teacher): the teacher contract from the student's own forward pass."""

from pathlib import Path

import numpy as np
import pytest
import torch

from policykd import runtime
from policykd.config import DistillConfig
from policykd.distill import distill
from policykd.errors import PolicyKDError
from policykd.teachers import load_teacher

PENDULUM_TEACHER = Path(__file__).resolve().parents[1] / "agents" / "sac-Pendulum-v1"


@pytest.fixture(scope="module")
def pendulum_student(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chain")
    result = distill(DistillConfig(teacher=str(PENDULUM_TEACHER), labelled_steps=300, rounds=1, epochs_per_round=2,
                                   hidden=[16, 16], out_dir=str(out), run_name="first"))
    return result.run_dir / "student"


def test_a_student_folder_loads_as_a_teacher_with_the_students_own_numbers(pendulum_student):
    teacher = load_teacher(pendulum_student)
    policy = runtime.load(pendulum_student)
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    dist, value = teacher.dist_and_value(obs)
    student_dist, student_value = teacher.student(torch.from_numpy(obs))
    assert dist.family == "squashed_gaussian" and torch.equal(dist["mean"], student_dist["mean"]) and torch.equal(value, student_value)
    np.testing.assert_allclose(teacher.act(obs), policy.batch(obs), atol=1e-6)
    assert list(teacher.features(obs)) == ["trunk.1", "trunk.3"] and teacher.features(obs)["trunk.3"].shape == (16, 16)
    identity = teacher.identity()
    assert identity["algo"] == "policykd-student" and identity["env"]["env_id"] == "Pendulum-v1" and len(identity["sha256"]) == 64


def test_a_student_of_a_student_is_distilled_and_records_its_teacher(pendulum_student, tmp_path):
    result = distill(DistillConfig(teacher=str(pendulum_student), labelled_steps=300, rounds=2, epochs_per_round=2, hidden=[8],
                                   out_dir=str(tmp_path), run_name="second"))
    card = (result.run_dir / "student" / "student.json").read_text()
    assert '"algo": "policykd-student"' in card and str(pendulum_student) in card
    assert result.history[-1].val_kl < 5.0 and np.isfinite(result.history[-1].val_kl)


def test_a_damaged_student_teacher_is_refused_in_one_line(pendulum_student, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "student.json").write_text((pendulum_student / "student.json").read_text())
    (broken / "student.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PolicyKDError, match="is not a readable safetensors file") as e:
        load_teacher(broken)
    assert "\n" not in str(e.value)
