"""Side-by-side rollout strips: frames recorded from a real env, written as PNG grid and GIF."""

import numpy as np
import pytest
from PIL import Image

from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.filmstrip import record_episode, write_side_by_side


def towards_target(obs: np.ndarray) -> np.ndarray:  # obs [1, 23] -> action [1, 3]
    return np.clip(obs[:, 20:23] / 0.03, -1, 1)


def test_strip_and_gif(tmp_path):
    spec = EnvSpec("PolicyKD/KukaReach-v0")
    moving = record_episode(towards_target, spec, seed=0, max_steps=10)
    still = record_episode(lambda o: np.zeros((1, 3)), spec, seed=0, max_steps=4)
    assert len(moving) == 11 and len(still) == 5 and moving[0].shape == (240, 320, 3)
    np.testing.assert_array_equal(moving[0], still[0])  # same seed, same first frame
    assert not np.array_equal(moving[-1], still[-1])  # the arm moved
    write_side_by_side(moving, still, tmp_path / "r.png", tmp_path / "r.gif", columns=4, frame_stride=2)
    strip = np.asarray(Image.open(tmp_path / "r.png"))
    assert strip.shape == (2 * 240, 4 * 320, 3)
    # the last column shows step 10 for the teacher row, and the student's last frame held after its episode ended
    np.testing.assert_array_equal(strip[240 + 20:, 3 * 320:][:, :], still[-1][20:])
    gif = Image.open(tmp_path / "r.gif")
    assert gif.size == (2 * 320, 240) and gif.n_frames == 6  # frames 0, 2, ..., 10


def test_env_without_frames_is_one_clear_error():
    with pytest.raises(PolicyKDError, match="does not render"):
        record_episode(lambda o: np.zeros((1, 1)), EnvSpec("Pendulum-v1"), seed=0, max_steps=1)
