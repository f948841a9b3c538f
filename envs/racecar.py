"""PolicyKD/RacecarTrack-v0 and PolicyKD/RacecarObstacles-v0: pybullet's MIT racecar driving a closed track.

Observation (float32, shape (5 + n_rays,); n_rays is 11 on RacecarTrack-v0 and 21 on RacecarObstacles-v0, where
the rays must not miss an obstacle between them):
    0 speed: forward velocity of the chassis, m/s (negative when reversing)
    1 yaw rate, rad/s
    2 heading error: car heading minus the track's direction at the closest centreline point, rad in [-pi, pi]
    3 lateral offset from the centreline, m, positive to the left
    4 steering angle currently commanded, rad
    5.. range rays: distance to the first barrier or obstacle along n_rays horizontal rays fanned evenly over
        [-90, +90] degrees around the heading, m, capped at ray_range
Action (float32, shape (2,), each in [-1, 1]; values outside are clipped, NaN or inf raise ValueError):
    0 steering: -1 full right, +1 full left (0.45 rad at the front wheels)
    1 throttle: target rear-wheel speed as a fraction of 50 rad/s (about 2.3 m/s); negative brakes and reverses
Reward: metres driven along the centreline this step (negative when going backwards); -1 extra on a crash.
Termination: the chassis leaves the track (|lateral offset| > half_width: 0.6 m, or 0.9 m on RacecarObstacles-v0),
    touches a barrier or an obstacle, or rolls over. Truncation: 500 steps (25 s at 20 Hz) through gymnasium's TimeLimit.
Info: progress (m driven along the track), laps (completed laps), lap_completed (at least one full lap so far),
    is_success (same as lap_completed), crashed (touched a barrier or obstacle), off_track.
Student views (policykd.views, recipe key `student_view`): `rays` drops the centreline knowledge a real car does not
    have (heading error, lateral offset) and adds the last action: [speed, yaw rate, steering, throttle, rays...];
    `camera` is a 64x48 RGB image from a camera on the car, and its speed.
Randomised from the reset seed: the track's shape, the start point along it, the start offset and heading, and
    (RacecarObstacles) the obstacles' positions. Physics: 100 Hz, 5 substeps per action (20 Hz control).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ._bullet import BulletEnv, camera_image, checked_action
from .track import Track

_REAR_WHEELS = (2, 3)
_FRONT_WHEELS = (5, 7)
_STEERING_HINGES = (4, 6)
_MAX_STEER_RAD = 0.45
_MAX_WHEEL_RAD_S = 50.0
_WHEEL_FORCE_N = 10.0
_PHYSICS_DT = 0.01
_SUBSTEPS = 5
_BARRIER_HEIGHT = 0.2
_OBSTACLE_RADIUS = 0.2
_RAY_HEIGHT = 0.1
_CRASH_PENALTY = 1.0
_STATIC_GROUP = 2  # Bullet's collision filter group of static bodies: rays see barriers and obstacles, not the car


class RaysView:
    """Student view `rays`: what the car itself can sense. [speed, yaw rate, last steering, last throttle, rays...]
    (float32, 4 + n_rays): the teacher's observation without the centreline knowledge (heading error, lateral
    offset), plus the last action (zeros after a reset). See policykd.views."""

    @staticmethod
    def space(env: RacecarEnv) -> spaces.Box:
        n = len(env._ray_angles)
        low = np.array([-np.inf, -np.inf, -1.0, -1.0] + [0.0] * n, dtype=np.float32)
        high = np.array([np.inf, np.inf, 1.0, 1.0] + [env.ray_range] * n, dtype=np.float32)
        return spaces.Box(low, high, dtype=np.float32)

    @staticmethod
    def observe(env: RacecarEnv, obs: np.ndarray, last_action: np.ndarray) -> np.ndarray:
        action = np.clip(np.asarray(last_action, dtype=np.float32).reshape(2), -1.0, 1.0)
        return np.concatenate([obs[:2], action, obs[5:]]).astype(np.float32)


class CameraView:
    """Student view `camera`: a forward-facing camera on the car and its speed. float32 [H * W * 3 + 1]: the RGB
    image (H, W, 3) from pybullet's CPU renderer, flattened row by row, in [0, 1], then the speed in m/s. The
    camera sits 0.25 m above the front axle and looks 1.5 m ahead, 60 degrees field of view. See policykd.views."""

    def __init__(self, height: int = 48, width: int = 64) -> None:
        self.image_shape = (height, width, 3)

    def space(self, env: RacecarEnv) -> spaces.Box:
        size = int(np.prod(self.image_shape))
        low = np.array([0.0] * size + [-np.inf], dtype=np.float32)
        high = np.array([1.0] * size + [np.inf], dtype=np.float32)
        return spaces.Box(low, high, dtype=np.float32)

    def observe(self, env: RacecarEnv, obs: np.ndarray, last_action: np.ndarray) -> np.ndarray:
        return np.concatenate([env.car_camera(*self.image_shape[:2]).reshape(-1) / np.float32(255.0),
                               obs[:1]]).astype(np.float32)


class RacecarEnv(BulletEnv):
    """The MIT racecar URDF from pybullet_data on a random closed track with barriers at both edges."""

    # sensor-only views for privileged-teacher distillation (policykd.views)
    student_views = {"rays": RaysView(), "camera": CameraView()}

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / (_PHYSICS_DT * _SUBSTEPS)))}

    def __init__(self, render_mode: str | None = None, n_obstacles: int = 0, n_rays: int = 11,
                 ray_range: float = 5.0, half_width: float = 0.6):
        if not (isinstance(n_obstacles, int) and 0 <= n_obstacles <= 12):
            raise ValueError(f"n_obstacles={n_obstacles!r} must be an integer in [0, 12]")
        if not (isinstance(n_rays, int) and n_rays >= 2):
            raise ValueError(f"n_rays={n_rays!r} must be an integer >= 2")
        if not (ray_range > 0 and 0.4 <= half_width <= 2.0):
            raise ValueError(f"ray_range={ray_range!r} must be > 0 and half_width={half_width!r} in [0.4, 2.0] m")
        super().__init__(render_mode)
        self.n_obstacles = n_obstacles
        self.ray_range = float(ray_range)
        self.half_width = float(half_width)
        self._ray_angles = np.linspace(-np.pi / 2, np.pi / 2, n_rays)
        inf = np.float32(np.inf)
        low = np.array([-inf, -inf, -np.pi, -inf, -_MAX_STEER_RAD] + [0.0] * n_rays, dtype=np.float32)
        high = np.array([inf, inf, np.pi, inf, _MAX_STEER_RAD] + [self.ray_range] * n_rays, dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.track: Track | None = None
        self._car = -1
        self._hazards: list[int] = []
        self._steer = 0.0
        self._s = 0.0
        self._progress = 0.0

    # -- scene -----------------------------------------------------------------------------------------------
    def _build_scene(self) -> None:
        p = self._p
        p.resetSimulation()
        p.setGravity(0, 0, -9.81)
        p.setTimeStep(_PHYSICS_DT)
        p.loadURDF("plane.urdf")
        track = self.track
        self._add_strip(track.edges(track.half_width), track.edges(-track.half_width), z=0.002,
                        rgba=(0.25, 0.25, 0.27, 1.0))
        self._hazards = [self._add_barrier(track.edges(side * (track.half_width + 0.05)))
                         for side in (1.0, -1.0)]

    def _add_strip(self, left: np.ndarray, right: np.ndarray, *, z: float, rgba: tuple) -> None:
        """Visual-only road surface between two edge polylines (N, 2)."""
        n = len(left)
        vertices = np.concatenate([np.c_[left, np.full(n, z)], np.c_[right, np.full(n, z)]])
        indices = []
        for i in range(n):
            j = (i + 1) % n
            indices += [i, n + i, n + j, i, n + j, j]
        visual = self._p.createVisualShape(self._p.GEOM_MESH, vertices=vertices.tolist(), indices=indices,
                                           rgbaColor=list(rgba))
        self._p.createMultiBody(baseMass=0, baseVisualShapeIndex=visual)

    def _add_barrier(self, edge: np.ndarray) -> int:
        """A static wall along a closed polyline (N, 2), as one concave triangle mesh; returns its body id."""
        n = len(edge)
        vertices = np.concatenate([np.c_[edge, np.zeros(n)], np.c_[edge, np.full(n, _BARRIER_HEIGHT)]]).tolist()
        indices = []
        for i in range(n):
            j = (i + 1) % n
            indices += [i, j, n + j, i, n + j, n + i, i, n + j, j, i, n + i, n + j]  # both faces visible
        p = self._p
        collision = p.createCollisionShape(p.GEOM_MESH, vertices=vertices, indices=indices,
                                           flags=p.GEOM_FORCE_CONCAVE_TRIMESH)
        visual = p.createVisualShape(p.GEOM_MESH, vertices=vertices, indices=indices, rgbaColor=[0.85, 0.1, 0.1, 1])
        body = p.createMultiBody(baseMass=0, baseCollisionShapeIndex=collision, baseVisualShapeIndex=visual)
        return body

    def _add_obstacles(self, s0: float) -> None:
        """n_obstacles cylinders spread along the lap after the start, each leaving a gap wide enough to pass."""
        p, track, rng = self._p, self.track, self.np_random
        collision = p.createCollisionShape(p.GEOM_CYLINDER, radius=_OBSTACLE_RADIUS, height=0.3)
        visual = p.createVisualShape(p.GEOM_CYLINDER, radius=_OBSTACLE_RADIUS, length=0.3, rgbaColor=[1, 0.6, 0, 1])
        spacing = (track.length - 3.0) / self.n_obstacles
        for k in range(self.n_obstacles):
            s = s0 + 3.0 + spacing * (k + rng.uniform(0.2, 0.8))
            lateral = rng.uniform(-0.4, 0.4) * track.half_width
            xy, _ = track.point_at(s, lateral)
            body = p.createMultiBody(baseMass=0, baseCollisionShapeIndex=collision, baseVisualShapeIndex=visual,
                                     basePosition=[xy[0], xy[1], 0.15])
            self._hazards.append(body)

    def _add_car(self, xy: np.ndarray, yaw: float) -> None:
        p = self._p
        self._car = p.loadURDF("racecar/racecar.urdf", [xy[0], xy[1], 0.05], p.getQuaternionFromEuler([0, 0, yaw]))
        for wheel in _REAR_WHEELS + _FRONT_WHEELS:
            p.setJointMotorControl2(self._car, wheel, p.VELOCITY_CONTROL, targetVelocity=0, force=0)

    # -- gymnasium API ---------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        self.track = Track.random(rng, half_width=self.half_width)
        self._build_scene()
        s0 = float(rng.uniform(0, self.track.length))
        xy, heading = self.track.point_at(s0, lateral=float(rng.uniform(-0.15, 0.15)))
        self._add_car(xy, heading + float(rng.uniform(-0.15, 0.15)))
        if self.n_obstacles:
            self._add_obstacles(s0)
        self._steer = 0.0
        self._s = self.track.project(xy).s
        self._progress = 0.0
        obs, _ = self._observe()
        return obs, self._info(crashed=False, off_track=False)

    def step(self, action):
        steer, throttle = checked_action(action, self.action_space.low, self.action_space.high)
        p = self._p
        self._steer = float(steer) * _MAX_STEER_RAD
        for wheel in _REAR_WHEELS:
            p.setJointMotorControl2(self._car, wheel, p.VELOCITY_CONTROL,
                                    targetVelocity=float(throttle) * _MAX_WHEEL_RAD_S, force=_WHEEL_FORCE_N)
        for hinge in _STEERING_HINGES:
            p.setJointMotorControl2(self._car, hinge, p.POSITION_CONTROL, targetPosition=self._steer)
        crashed = False
        for _ in range(_SUBSTEPS):
            p.stepSimulation()
            crashed = crashed or any(p.getContactPoints(bodyA=self._car, bodyB=h) for h in self._hazards)
        obs, projection = self._observe()
        ds = self.track.progress(self._s, projection.s)
        self._s = projection.s
        self._progress += ds
        off_track = abs(projection.lateral) > self.track.half_width
        up_z = p.getMatrixFromQuaternion(p.getBasePositionAndOrientation(self._car)[1])[8]
        terminated = crashed or off_track or up_z < 0.5
        reward = ds - (_CRASH_PENALTY if terminated else 0.0)
        return obs, float(reward), terminated, False, self._info(crashed=crashed, off_track=off_track)

    def _observe(self):
        p = self._p
        pos, orn = p.getBasePositionAndOrientation(self._car)
        linear, angular = p.getBaseVelocity(self._car)
        yaw = p.getEulerFromQuaternion(orn)[2]
        forward = np.array([np.cos(yaw), np.sin(yaw)])
        xy = np.array(pos[:2])
        projection = self.track.project(xy)
        heading_error = float(np.angle(np.exp(1j * (yaw - projection.heading))))
        origin = np.array([xy[0] + 0.2 * forward[0], xy[1] + 0.2 * forward[1], _RAY_HEIGHT])
        angles = yaw + self._ray_angles
        ends = origin + self.ray_range * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
        hits = p.rayTestBatch([origin.tolist()] * len(angles), ends.tolist(), collisionFilterMask=_STATIC_GROUP)
        rays = np.array([hit[2] for hit in hits]) * self.ray_range
        obs = np.concatenate([[float(np.dot(linear[:2], forward)), angular[2], heading_error,
                               projection.lateral, self._steer], rays]).astype(np.float32)
        return obs, projection

    def _info(self, *, crashed: bool, off_track: bool) -> dict[str, Any]:
        laps = int(max(self._progress, 0.0) // self.track.length)
        return {"progress": self._progress, "laps": laps, "lap_completed": laps >= 1, "is_success": laps >= 1,
                "crashed": crashed, "off_track": off_track}

    def car_camera(self, height: int, width: int) -> np.ndarray:
        """RGB (height, width, 3) uint8 from a camera on the car, looking ahead along its heading."""
        pos, orn = self._p.getBasePositionAndOrientation(self._car)
        yaw = self._p.getEulerFromQuaternion(orn)[2]
        forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        eye = np.array(pos) + 0.2 * forward + np.array([0.0, 0.0, 0.25])
        return camera_image(self._p, eye=eye, target=eye + 1.5 * forward - np.array([0.0, 0.0, 0.25]),
                            width=width, height=height, fov_deg=60.0)

    def render(self) -> np.ndarray | None:
        """An RGB frame (240, 320, 3) uint8 of the whole track seen from high above its centre, or None when
        render_mode is None."""
        if self.render_mode != "rgb_array":
            return None
        centre = self.track.centre.mean(axis=0)
        extent = float(np.max(np.abs(self.track.centre - centre))) + self.track.half_width
        target = np.array([centre[0], centre[1], 0.0])
        eye = target + np.array([0.0, -0.5 * extent, 1.9 * extent])
        return camera_image(self._p, eye=eye, target=target, width=320, height=240, fov_deg=60.0)
