"""Truncated backpropagation through time (TBPTT) for recurrent students, on the buffer's episodes.

Every episode's rows (in collection order: every step labelled, label_every 1) are cut into chunks of L
consecutive steps. A minibatch is a random set of chunks, unrolled together from the state each chunk starts in;
gradients flow within a chunk only. The start states come from the current student: before every epoch one pass
without gradients runs every episode from a zero state, chunk after chunk (all first chunks together, then all
second chunks, ...), so a chunk in the middle of an episode starts where the student would be after its prefix.
"""

from __future__ import annotations

import numpy as np
import torch

from policykd.distributions import DistParams


def _take(dist: DistParams, index: torch.Tensor) -> DistParams:
    return DistParams(dist.family, {k: v[index] for k, v in dist.params.items()})


class EpisodeSequences:
    """The rows of a dataset as chunks of consecutive steps of its episodes.

    rows [n_chunks, L]: row indices, -1 after an episode's last step; previous [n_chunks]: the same episode's chunk
    before (-1 for its first); position [n_chunks]: the chunk's place in its episode (0, 1, ...)."""

    def __init__(self, obs: torch.Tensor, episode_id: np.ndarray, length: int) -> None:
        self.obs, self.length = obs, length
        order = np.argsort(episode_id, kind="stable")  # each episode's rows, still in time order
        ids = np.asarray(episode_id)[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(ids)].astype(np.int64)
        rows, previous, position = [], [], []
        for start, end in zip(starts, ends):
            for k, first in enumerate(range(start, end, length)):
                chunk = np.full(length, -1, dtype=np.int64)
                segment = order[first : min(first + length, end)]
                chunk[: len(segment)] = segment
                rows.append(chunk)
                previous.append(len(rows) - 2 if k > 0 else -1)
                position.append(k)
        self.rows = torch.as_tensor(np.stack(rows)) if rows else torch.zeros(0, length, dtype=torch.long)
        self.previous = torch.as_tensor(np.array(previous, dtype=np.int64))
        self.position = torch.as_tensor(np.array(position, dtype=np.int64))
        self.start_states: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def refresh(self, student) -> None:
        """The state each chunk starts in, under the student as it is now ([n_chunks, G], no gradient)."""
        start = student.initial_state(len(self.rows))
        final = torch.zeros_like(start)  # each chunk's last state; only read for a chunk that another one follows
        for k in range(int(self.position.max()) + 1 if len(self.rows) else 0):
            chunk_ids = torch.nonzero(self.position == k).squeeze(1)
            if k > 0:
                start[chunk_ids] = final[self.previous[chunk_ids]]
            final[chunk_ids] = student.unroll(self._inputs(chunk_ids), start[chunk_ids])[2]
        self.start_states = start

    def _inputs(self, chunk_ids: torch.Tensor) -> torch.Tensor:
        """[L, b, obs_dim] time-major inputs of the chunks (padding repeats row 0, its outputs are dropped)."""
        return self.obs[self.rows[chunk_ids].clamp_min(0)].transpose(0, 1)

    def minibatches(self, rng: np.random.Generator, batch_rows: int) -> list[torch.Tensor]:
        """Chunk ids in random groups of max(1, batch_rows // L) chunks, about batch_rows steps each."""
        per = max(1, batch_rows // self.length)
        order = torch.as_tensor(rng.permutation(len(self.rows)))
        return [order[i : i + per] for i in range(0, len(order), per)]

    def forward(self, student, chunk_ids: torch.Tensor) -> tuple[torch.Tensor, DistParams, torch.Tensor]:
        """Unroll the chunks from their start states -> (row indices [M] of their steps, the student's distribution
        and value [M] at those rows), padding dropped."""
        assert self.start_states is not None, "refresh() first"
        dist, value, _ = student.unroll(self._inputs(chunk_ids), self.start_states[chunk_ids])
        rows = self.rows[chunk_ids].transpose(0, 1).reshape(-1)  # time-major, as unroll returns them
        valid = torch.nonzero(rows >= 0).squeeze(1)
        return rows[valid], _take(dist, valid), value[valid]
