"""A closed race track in the plane: a smooth random loop of given width, and projection of a point onto it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Projection:
    """Where a point lies relative to the track."""

    s: float  # arc length of the closest centreline point, metres in [0, length)
    lateral: float  # signed distance from the centreline, metres, positive to the left of the driving direction
    heading: float  # direction of the centreline there, radians


class Track:
    """Centreline points (N, 2) in metres, driven counter-clockwise, with a constant half width."""

    def __init__(self, centre: np.ndarray, half_width: float):
        self.centre = np.asarray(centre, dtype=np.float64)
        self.half_width = float(half_width)
        nxt = np.roll(self.centre, -1, axis=0)
        seg = nxt - self.centre  # (N, 2) segment i goes from point i to point i+1
        self.segment_length = np.linalg.norm(seg, axis=1)  # (N,)
        self.tangent = seg / self.segment_length[:, None]  # (N, 2)
        self.normal = np.stack([-self.tangent[:, 1], self.tangent[:, 0]], axis=1)  # (N, 2) left normal
        self.s_start = np.concatenate([[0.0], np.cumsum(self.segment_length)[:-1]])  # (N,)
        self.length = float(self.segment_length.sum())

    @classmethod
    def random(cls, rng: np.random.Generator, *, n_points: int = 160, radius: float = 4.0,
               half_width: float = 0.6, min_turn_radius: float = 1.6) -> Track:
        """A loop r(theta) = radius * (1 + a2 cos(2 theta + p2) + a3 cos(3 theta + p3)), stretched by (sx, sy).

        Shapes whose tightest curve is below `min_turn_radius` metres are redrawn from the same generator.
        """
        theta = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
        while True:
            a2, a3 = rng.uniform(-0.16, 0.16, size=2)
            p2, p3 = rng.uniform(0, 2 * np.pi, size=2)
            sx, sy = rng.uniform(0.8, 1.25, size=2)
            r = radius * (1 + a2 * np.cos(2 * theta + p2) + a3 * np.cos(3 * theta + p3))
            centre = np.stack([sx * r * np.cos(theta), sy * r * np.sin(theta)], axis=1)
            track = cls(centre, half_width)
            if track.min_turn_radius() >= min_turn_radius:
                return track

    def min_turn_radius(self) -> float:
        """Smallest radius of curvature along the centreline, metres."""
        turn = np.angle(np.exp(1j * (np.arctan2(self.tangent[:, 1], self.tangent[:, 0])
                                      - np.arctan2(np.roll(self.tangent, 1, 0)[:, 1], np.roll(self.tangent, 1, 0)[:, 0]))))
        return float(np.min(self.segment_length / np.maximum(np.abs(turn), 1e-9)))

    def edges(self, offset: float) -> np.ndarray:
        """Points (N, 2) at `offset` metres left of the centreline (negative: right)."""
        miter = self.normal + np.roll(self.normal, 1, axis=0)  # average normal at each vertex
        miter /= np.linalg.norm(miter, axis=1, keepdims=True)
        return self.centre + offset * miter

    def point_at(self, s: float, lateral: float = 0.0) -> tuple[np.ndarray, float]:
        """Position (2,) and centreline heading at arc length `s` (wrapped) and `lateral` offset."""
        s = s % self.length
        i = int(np.searchsorted(self.s_start, s, side="right") - 1)
        t = s - self.s_start[i]
        xy = self.centre[i] + t * self.tangent[i] + lateral * self.normal[i]
        return xy, float(np.arctan2(self.tangent[i, 1], self.tangent[i, 0]))

    def project(self, xy: np.ndarray) -> Projection:
        """Closest centreline point to `xy` (2,)."""
        rel = xy[None, :] - self.centre  # (N, 2)
        t = np.clip(np.einsum("ij,ij->i", rel, self.tangent), 0.0, self.segment_length)  # (N,)
        foot = self.centre + t[:, None] * self.tangent
        dist2 = np.sum((xy[None, :] - foot) ** 2, axis=1)
        i = int(np.argmin(dist2))
        lateral = float(np.dot(xy - foot[i], self.normal[i]))
        heading = float(np.arctan2(self.tangent[i, 1], self.tangent[i, 0]))
        return Projection(s=float(self.s_start[i] + t[i]), lateral=lateral, heading=heading)

    def progress(self, s_from: float, s_to: float) -> float:
        """Signed distance driven along the track from `s_from` to `s_to`, across the start line if needed."""
        ds = s_to - s_from
        if ds > self.length / 2:
            ds -= self.length
        elif ds < -self.length / 2:
            ds += self.length
        return ds
