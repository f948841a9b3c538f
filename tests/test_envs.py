"""policykd's own pybullet envs (envs/, imported as policykd_envs): registration, checks, dynamics, bad input."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pybullet
import pytest
from gymnasium.utils.env_checker import check_env

import policykd_envs
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd_envs.track import Track

RACECAR_IDS = ("PolicyKD/RacecarTrack-v0", "PolicyKD/RacecarObstacles-v0")
KUKA_IDS = ("PolicyKD/KukaReach-v0", "PolicyKD/KukaReachObstacle-v0")


def steer_to_centre(obs: np.ndarray, throttle: float = 0.8) -> np.ndarray:
    """A hand-written lane keeper: steer against heading error and lateral offset."""
    return np.array([np.clip(-1.5 * obs[2] - 1.0 * obs[3], -1, 1), throttle], dtype=np.float32)


def towards_target(obs: np.ndarray) -> np.ndarray:
    """Move the end effector straight at the target."""
    return np.clip(obs[20:23] / 0.03, -1, 1).astype(np.float32)


def test_import_only_registers():
    code = ("import sys, gymnasium as gym, policykd_envs; "
            "assert all(i in gym.registry for i in policykd_envs.ENV_IDS); "
            "assert 'pybullet' not in sys.modules and 'policykd_envs.racecar' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_env_spec_imports_the_namespace_package():
    env = EnvSpec("PolicyKD/KukaReach-v0").make()
    assert env.observation_space.shape == (23,)
    env.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space m.* value is (-)?infinity")  # speeds, velocities: unbounded
@pytest.mark.parametrize("env_id", policykd_envs.ENV_IDS)
def test_check_env_and_headless_render(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    check_env(env.unwrapped)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a scene, not a blank image
    env.close()


@pytest.mark.parametrize("env_id", policykd_envs.ENV_IDS)
def test_same_seed_same_trajectory(env_id):
    def trajectory(seed: int) -> np.ndarray:
        env = gym.make(env_id)
        obs, _ = env.reset(seed=seed)
        actions = np.random.default_rng(0).uniform(-1, 1, size=(25, env.action_space.shape[0]))
        out = [obs]
        for a in actions:
            obs, *_ = env.step(a.astype(np.float32))
            out.append(obs)
        env.close()
        return np.stack(out)

    first = trajectory(7)
    np.testing.assert_array_equal(first, trajectory(7))
    assert not np.allclose(first, trajectory(8))


@pytest.mark.parametrize("env_id", RACECAR_IDS + KUKA_IDS)
def test_bad_actions(env_id):
    env = gym.make(env_id)
    dim = env.action_space.shape[0]
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.full(dim, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(dim + 1, dtype=np.float32))
    env.close()
    clipped, unclipped = [], []
    for action, out in ((np.full(dim, 5.0), unclipped), (np.ones(dim), clipped)):
        env = gym.make(env_id)
        env.reset(seed=0)
        out.append(env.step(action.astype(np.float32))[0])
        env.close()
    np.testing.assert_array_equal(clipped[0], unclipped[0])  # documented: out-of-range actions are clipped


def test_unknown_kwargs_are_one_clear_error():
    with pytest.raises(PolicyKDError, match="wheels"):
        EnvSpec("PolicyKD/RacecarTrack-v0", {"wheels": 6}).make()
    with pytest.raises(ValueError, match="n_obstacles"):
        gym.make("PolicyKD/RacecarTrack-v0", n_obstacles=-1)


def test_close_disconnects_the_physics_server():
    env = gym.make("PolicyKD/RacecarTrack-v0")
    env.reset(seed=0)
    client = env.unwrapped._p._client
    assert pybullet.getConnectionInfo(client)["isConnected"] == 1
    env.close()
    assert pybullet.getConnectionInfo(client)["isConnected"] == 0
    env.close()  # closing twice is harmless


def test_racecar_lane_keeper_completes_a_lap():
    env = gym.make("PolicyKD/RacecarTrack-v0")
    obs, info = env.reset(seed=3)
    assert info["laps"] == 0 and not info["lap_completed"]
    total = 0.0
    for _ in range(500):
        obs, reward, terminated, truncated, info = env.step(steer_to_centre(obs))
        total += reward
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert info["lap_completed"] and info["is_success"] and info["laps"] >= 1
    assert total == pytest.approx(info["progress"])  # reward is progress along the centreline
    assert info["progress"] >= env.unwrapped.track.length
    env.close()


def test_racecar_crash_terminates_with_penalty():
    env = gym.make("PolicyKD/RacecarTrack-v0")
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0], dtype=np.float32))  # full left
        if terminated:
            break
    assert terminated and (info["crashed"] or info["off_track"])
    assert reward < -0.5
    env.close()


def test_racecar_obstacles_block_a_naive_driver():
    env = gym.make("PolicyKD/RacecarObstacles-v0")
    crashes = 0
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        for _ in range(500):
            obs, _, terminated, truncated, info = env.step(steer_to_centre(obs))
            if terminated or truncated:
                break
        crashes += int(info["crashed"])
    assert crashes >= 2  # obstacles sit on the racing line; keeping to the centre hits them
    env.close()


def test_kuka_reaches_and_obstacle_blocks_the_straight_path():
    results = {}
    for env_id in KUKA_IDS:
        env = gym.make(env_id)
        successes, collisions = 0, 0
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            for _ in range(100):
                obs, reward, terminated, truncated, info = env.step(towards_target(obs))
            successes += int(info["is_success"])
            collisions += info.get("collisions", 0)
            penalty = 0.2 if info.get("collision") else 0.0
            if env_id == "PolicyKD/KukaReach-v0":
                assert reward == pytest.approx(-info["distance"])
            else:  # distance along the way over the obstacle while the straight line is blocked; -0.5 until within 5 cm
                not_reached = 0.0 if info["is_success"] else 0.5
                assert reward <= -info["distance"] - penalty - not_reached + 1e-6
        results[env_id] = (successes, collisions)
        env.close()
    assert results["PolicyKD/KukaReach-v0"][0] == 4
    assert results["PolicyKD/KukaReachObstacle-v0"][1] > 0


def test_kuka_obstacle_is_passable_over_the_top():
    """A scripted detour (up above the obstacle, across, down) reaches the target: the variant is solvable, and
    its shaped reward grows along that way."""
    env = gym.make("PolicyKD/KukaReachObstacle-v0")
    successes, finals = 0, []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        lift, phase, rewards = obs[25] + obs[28] + 0.15, 0, []
        for _ in range(100):
            flange, target = obs[14:17], obs[17:20]
            if phase == 0:
                goal = np.array([flange[0], flange[1], max(lift, flange[2])])
                phase = int(flange[2] >= lift - 0.02)
            if phase == 1:
                goal = np.array([target[0], target[1], max(lift, flange[2])])
                phase = 1 + int(np.linalg.norm(goal[:2] - flange[:2]) < 0.03)
            if phase == 2:
                goal = target
            obs, reward, _, _, info = env.step(np.clip((goal - flange) / 0.03, -1, 1).astype(np.float32))
            rewards.append(reward)
        successes += int(info["is_success"])
        if info["is_success"] and not info["collision"]:  # no not-reached cost; the straight (unblocked) distance
            assert reward == pytest.approx(-info["distance"], abs=1e-5)
        finals.append(rewards[-1] - rewards[0])
    assert successes >= 3 and np.mean(finals) > 0
    env.close()


def test_track_projection_round_trip():
    track = Track.random(np.random.default_rng(0))
    assert track.min_turn_radius() >= 1.6
    for s, lateral in ((0.5, 0.2), (track.length * 0.6, -0.3)):
        xy, heading = track.point_at(s, lateral)
        projection = track.project(xy)
        assert projection.s == pytest.approx(s, abs=1e-6)
        assert projection.lateral == pytest.approx(lateral, abs=1e-6)
        assert projection.heading == pytest.approx(heading)
    assert track.progress(track.length - 0.1, 0.2) == pytest.approx(0.3)
    assert track.progress(0.2, track.length - 0.1) == pytest.approx(-0.3)
