"""PolicyKD/KukaReach-v0 and PolicyKD/KukaReachObstacle-v0: a Kuka iiwa arm from pybullet_data reaching targets.

Observation (float32, shape (23,), or (29,) with the obstacle):
    0-6   joint angles, rad
    7-13  joint velocities, rad/s
    14-16 end-effector (gripper flange) position, m, in the arm's base frame
    17-19 target position, m
    20-22 target minus end-effector, m
    23-28 (obstacle variant) obstacle centre, m, and its half extents, m
Action (float32, shape (3,), each in [-1, 1]; values outside are clipped, NaN or inf raise ValueError):
    end-effector displacement of up to 3 cm per step along x, y, z. Inverse kinematics (flange pointing down)
    turns the commanded point into joint targets for the arm's position controllers; the commanded point is kept
    inside the workspace box x in [0.2, 0.8], y in [-0.5, 0.5], z in [0.05, 0.8].
Reward: minus the end-effector's distance to the target, m. In the obstacle variant the distance is measured along
    the way over the obstacle (flange -> a point 12 cm above its top -> target) while the straight line to the target
    passes within 8 cm of the box, a further -0.2 is charged on every step in which any link touches it, and -0.5 on
    every step the flange is not yet within 5 cm of the target (without it, hovering short of a target tucked behind
    the box scores better than the contact-prone final approach). Every reward is <= 0.
Termination: none (the arm should reach the target and stay). Truncation: 100 steps (4.2 s at 24 Hz).
Info: distance (m), is_success (distance < 0.05 m), and in the obstacle variant collision (touching it now) and
    collisions (steps spent touching it so far).
Randomised from the reset seed: the start joint angles (rest pose +- 0.1 rad), the target, and the obstacle, a
    box centred on the straight line from the start to the target and turned across it, so that the direct path
    is blocked. Physics: 240 Hz, 10 substeps per action.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ._bullet import BulletEnv, camera_image, checked_action

_N_JOINTS = 7
_FLANGE_LINK = 6
_REST_POSE = np.array([0.0, 0.5, 0.0, -1.4, 0.0, 1.2, 0.0])
_JOINT_FORCE_N = 300.0
_PHYSICS_DT = 1 / 240
_SUBSTEPS = 10
_STEP_M = 0.03
_WORKSPACE_LOW = np.array([0.2, -0.5, 0.05])
_WORKSPACE_HIGH = np.array([0.8, 0.5, 0.8])
_TARGET_LOW = np.array([0.35, -0.35, 0.15])
_TARGET_HIGH = np.array([0.7, 0.35, 0.6])
_SUCCESS_M = 0.05
_CONTACT_PENALTY = 0.2
_NOT_REACHED_COST = 0.5  # obstacle variant only
_CLEARANCE_M = 0.08  # the arm's links around the flange are about this thick


class KukaReachEnv(BulletEnv):
    """Kuka iiwa reaching a random point, optionally around a box obstacle across the direct path."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / (_PHYSICS_DT * _SUBSTEPS)))}

    def __init__(self, render_mode: str | None = None, obstacle: bool = False):
        if not isinstance(obstacle, bool):
            raise ValueError(f"obstacle={obstacle!r} must be True or False")
        super().__init__(render_mode)
        self.obstacle = obstacle
        n_obs = 23 + (6 if obstacle else 0)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self._arm = -1
        self._marker = -1
        self._obstacle_body = -1
        self._obstacle_box = np.zeros(6)
        self._obstacle_yaw = 0.0
        self._target = np.zeros(3)
        self._collisions = 0
        self._flange_down = self._p.getQuaternionFromEuler([0.0, np.pi, 0.0])

    def _build_scene(self, start_pose: np.ndarray) -> None:
        p = self._p
        p.resetSimulation()
        p.setGravity(0, 0, -9.81)
        p.setTimeStep(_PHYSICS_DT)
        p.loadURDF("plane.urdf")
        self._arm = p.loadURDF("kuka_iiwa/model.urdf", useFixedBase=True)
        for j in range(_N_JOINTS):
            p.resetJointState(self._arm, j, float(start_pose[j]))
        p.setJointMotorControlArray(self._arm, list(range(_N_JOINTS)), p.POSITION_CONTROL,
                                    targetPositions=start_pose.tolist(), forces=[_JOINT_FORCE_N] * _N_JOINTS)
        marker = p.createVisualShape(p.GEOM_SPHERE, radius=_SUCCESS_M, rgbaColor=[0.1, 0.8, 0.1, 0.7])
        self._marker = p.createMultiBody(baseMass=0, baseVisualShapeIndex=marker)

    def _add_obstacle(self, start: np.ndarray) -> None:
        """A box across the straight line from `start` to the target, halfway along it."""
        p, rng = self._p, self.np_random
        centre = (start + self._target) / 2
        along = self._target - start
        yaw = float(np.arctan2(along[1], along[0]))
        half = np.array([0.015, rng.uniform(0.04, 0.07), rng.uniform(0.04, 0.06)])
        orientation = p.getQuaternionFromEuler([0, 0, yaw])
        collision = p.createCollisionShape(p.GEOM_BOX, halfExtents=half.tolist())
        visual = p.createVisualShape(p.GEOM_BOX, halfExtents=half.tolist(), rgbaColor=[0.9, 0.5, 0.1, 1])
        self._obstacle_body = p.createMultiBody(baseMass=0, baseCollisionShapeIndex=collision,
                                                baseVisualShapeIndex=visual, basePosition=centre.tolist(),
                                                baseOrientation=orientation)
        self._obstacle_box = np.concatenate([centre, half])
        self._obstacle_yaw = yaw

    def _segment_blocked(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the segment a-b (3,) passes through the obstacle grown by _CLEARANCE_M (slab test)."""
        c, s = np.cos(self._obstacle_yaw), np.sin(self._obstacle_yaw)
        to_local = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        centre, half = self._obstacle_box[:3], self._obstacle_box[3:] + _CLEARANCE_M
        start, direction = to_local @ (a - centre), to_local @ (b - a)
        t0, t1 = 0.0, 1.0
        for axis in range(3):
            if abs(direction[axis]) < 1e-12:
                if abs(start[axis]) > half[axis]:
                    return False
                continue
            ta, tb = sorted(((-half[axis] - start[axis]) / direction[axis], (half[axis] - start[axis]) / direction[axis]))
            t0, t1 = max(t0, ta), min(t1, tb)
            if t0 > t1:
                return False
        return True

    def _path_length(self, flange: np.ndarray) -> float:
        """Distance to the target along the straight line, or over the obstacle when the line is blocked."""
        if not self.obstacle or not self._segment_blocked(flange, self._target):
            return float(np.linalg.norm(self._target - flange))
        over = self._obstacle_box[:3] + np.array([0.0, 0.0, self._obstacle_box[5] + 1.5 * _CLEARANCE_M])
        return float(np.linalg.norm(over - flange) + np.linalg.norm(self._target - over))

    def _flange_position(self) -> np.ndarray:
        return np.array(self._p.getLinkState(self._arm, _FLANGE_LINK, computeForwardKinematics=True)[4])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        start_pose = _REST_POSE + rng.uniform(-0.1, 0.1, size=_N_JOINTS)
        self._build_scene(start_pose)
        start = self._flange_position()
        min_distance = 0.25 if self.obstacle else 0.15
        while True:
            self._target = rng.uniform(_TARGET_LOW, _TARGET_HIGH)
            if np.linalg.norm(self._target - start) >= min_distance:
                break
        self._p.resetBasePositionAndOrientation(self._marker, self._target.tolist(), [0, 0, 0, 1])
        if self.obstacle:
            self._add_obstacle(start)
        self._collisions = 0
        return self._observe(), self._info(collision=False)

    def step(self, action):
        delta = checked_action(action, self.action_space.low, self.action_space.high) * _STEP_M
        p = self._p
        goal = np.clip(self._flange_position() + delta, _WORKSPACE_LOW, _WORKSPACE_HIGH)
        joints = p.calculateInverseKinematics(self._arm, _FLANGE_LINK, goal.tolist(), self._flange_down,
                                              maxNumIterations=20)
        p.setJointMotorControlArray(self._arm, list(range(_N_JOINTS)), p.POSITION_CONTROL,
                                    targetPositions=list(joints[:_N_JOINTS]), forces=[_JOINT_FORCE_N] * _N_JOINTS)
        collision = False
        for _ in range(_SUBSTEPS):
            p.stepSimulation()
            if self.obstacle:
                collision = collision or bool(p.getContactPoints(bodyA=self._arm, bodyB=self._obstacle_body))
        self._collisions += int(collision)
        obs = self._observe()
        info = self._info(collision=collision)
        reward = -self._path_length(obs[14:17].astype(np.float64))
        if self.obstacle:
            reward -= (0.0 if info["is_success"] else _NOT_REACHED_COST) + (_CONTACT_PENALTY if collision else 0.0)
        return obs, reward, False, False, info

    def _observe(self) -> np.ndarray:
        states = self._p.getJointStates(self._arm, list(range(_N_JOINTS)))
        q = np.array([s[0] for s in states])
        dq = np.array([s[1] for s in states])
        flange = self._flange_position()
        parts = [q, dq, flange, self._target, self._target - flange]
        if self.obstacle:
            parts.append(self._obstacle_box)
        return np.concatenate(parts).astype(np.float32)

    def _info(self, *, collision: bool) -> dict[str, Any]:
        distance = float(np.linalg.norm(self._target - self._flange_position()))
        info: dict[str, Any] = {"distance": distance, "is_success": distance < _SUCCESS_M}
        if self.obstacle:
            info.update(collision=collision, collisions=self._collisions)
        return info

    def render(self) -> np.ndarray | None:
        """A fixed-camera RGB frame (240, 320, 3) uint8, or None when render_mode is None."""
        if self.render_mode != "rgb_array":
            return None
        return camera_image(self._p, eye=np.array([1.6, -1.0, 1.1]), target=np.array([0.45, 0.0, 0.35]),
                            width=320, height=240, fov_deg=50.0)
