"""Collection on Ray: rollout workers as Ray actors, each with its own vector env and its own copy of the teacher.

`distill` with `backend: ray` (CLI `--backend ray --num-workers N [--address ADDR]`) collects every round here
instead of in this process; the rows are the same buffer fields, and training is the same code.

- Each worker loads the teacher from its file (`ensemble.load_teacher_for(config)`, safe mode unless the recipe
  says trust_pickle): the teacher object is never pickled across.
- A round's budget is split over the workers as the local backend splits it (`policykd.collectors.share_jobs`):
  worker w collects its share with seed `worker_seed(round_seed, w, n)` and its own range of episode ids. The same
  --seed and worker count give the same buffer, and N Ray workers with one env each (`n_envs: 1`) collect exactly
  the rows of the local backend with `n_envs: N`.
- DAgger rounds send the current student to the workers as safetensors bytes plus its spec (no pickle).
- Progress during a round: each worker reports its labelled rows to a small `ProgressCounter` actor at most every
  PROGRESS_INTERVAL_S; the driver polls it while it waits for the shares (`collect_round(on_progress=...)`).
- A worker that dies mid-round (`RayActorError`) is replaced by a new actor, which collects the dead worker's share
  again from the same seed: the round gets exactly its budget, nothing lost or counted twice, and the same rows as
  without the failure. `RayCollector.failures` counts replacements; the run's history records them per round.

Ray is optional: `pip install "policykd[ray]"`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from policykd.collectors import collect_options, concatenate, share_jobs
from policykd.config import DistillConfig
from policykd.errors import PolicyKDError

MAX_RETRIES = 3  # replacements per share and round before the round fails
LOCAL_WORKERS_PER_CPU = 4  # a local Ray instance runs at most this many rollout actors per CPU core
CONNECT_TIMEOUT_S = 5.0  # how long the address check waits for the Ray head to answer
PROGRESS_INTERVAL_S = 0.5  # how often a worker reports its rows, and the driver polls them, during a round


def _ray():
    try:
        import ray
    except ImportError:
        raise PolicyKDError('--backend ray needs Ray: pip install "policykd[ray]"') from None
    return ray


def student_payload(student) -> tuple[dict[str, Any], bytes]:
    """(spec as JSON, safetensors bytes of the weights) of a Student: what workers rebuild it from."""
    from safetensors.torch import save

    return asdict(student.spec), save({k: v.contiguous() for k, v in student.state_dict().items()})


class ProgressCounter:
    """A Ray actor holding each share's labelled rows so far in the current round (share index -> rows)."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}

    def report(self, share: int, rows: int) -> None:
        self.rows[share] = rows

    def restart(self, share: int) -> None:
        """A share being redone from its start (its worker died) counts from zero again."""
        self.rows[share] = 0

    def snapshot(self) -> dict[int, int]:
        return dict(self.rows)


class RolloutWorker:
    """One Ray actor: a teacher loaded from its file and policykd.rollout.collect on its own vector env."""

    def __init__(self, config: DistillConfig) -> None:
        import torch

        from policykd.ensemble import load_teacher_for

        torch.set_num_threads(1)
        self.config = config
        self.teacher = load_teacher_for(config)

    def collect(self, *, steps: int, beta: float, seed: int, round_index: int, episode_offset: int,
                student: tuple[dict[str, Any], bytes] | None, progress=None, share: int = 0) -> dict[str, np.ndarray]:
        """policykd.rollout.collect of `steps` rows; reports its rows so far to the ProgressCounter `progress`."""
        import time

        from safetensors.torch import load

        from policykd.rollout import collect
        from policykd.students import Student, StudentSpec

        acting = None
        if student is not None:
            spec, weights = student
            acting = Student(StudentSpec.from_json(spec))
            acting.load_state_dict(load(weights), strict=True)
            acting.eval()
        rows, last_report = 0, time.monotonic()

        def on_progress(n: int) -> None:
            nonlocal rows, last_report
            rows += n
            if progress is not None and time.monotonic() - last_report >= PROGRESS_INTERVAL_S:
                progress.report.remote(share, rows)
                last_report = time.monotonic()

        return collect(self.teacher, steps=steps, beta=beta, seed=seed, n_envs=self.config.n_envs, student=acting,
                       round_index=round_index, episode_offset=episode_offset, on_progress=on_progress,
                       **collect_options(self.config))


def check_ray_target(config: DistillConfig) -> None:
    """Before any work: a local Ray instance gets at most LOCAL_WORKERS_PER_CPU actors per core (ray.init would start
    one with num_workers CPU slots and wait on that many processes), and a host:port address must answer within
    CONNECT_TIMEOUT_S and speak gRPC (ray.init retries an unreachable one, or one that is not Ray, for minutes).
    Nothing to check once Ray is running here."""
    if _ray().is_initialized():
        return
    address = config.ray_address
    if not address:
        cpus = os.cpu_count() or 1
        if config.num_workers > LOCAL_WORKERS_PER_CPU * cpus:
            raise PolicyKDError(f"--num-workers {config.num_workers} is more than a local Ray instance runs on {cpus} CPU cores "
                                f"(at most {LOCAL_WORKERS_PER_CPU * cpus}); lower --num-workers or join a cluster with --address")
        return
    if address in ("auto", "local"):
        return  # a cluster started on this machine (`ray start --head`), or a new local one
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise PolicyKDError(f"--address {address} is not a Ray address; give host:port (e.g. 10.0.0.5:6379, what "
                            "`ray start --head` prints), ray://host:port or auto")
    try:
        grpc = speaks_grpc(host, int(port), timeout=CONNECT_TIMEOUT_S)
    except OSError as e:
        raise PolicyKDError(f"cannot reach Ray at {address}: {e.strerror or e}; check the address (`ray start --head` "
                            "prints it) and that the cluster is up, or drop --address for a local instance") from None
    if not grpc:  # ray.init would retry a server that is not Ray's for minutes
        raise PolicyKDError(f"{address} answers but is not a Ray head (no gRPC there); check the port (`ray start --head` "
                            "prints host:port, 6379 by default; ray:// addresses use 10001)")


# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113, section 3.4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def speaks_grpc(host: str, port: int, *, timeout: float) -> bool:
    """Whether the server at host:port speaks HTTP/2, as gRPC servers do (a Ray head's GCS and Ray client server
    are gRPC): its connection preface is a SETTINGS frame (frame type 4). OSError when nothing answers at all."""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(_HTTP2_PREFACE)
        header = b""
        try:
            while len(header) < 9:
                data = connection.recv(9 - len(header))
                if not data:
                    break
                header += data
        except (TimeoutError, ConnectionResetError):
            return False
    return len(header) == 9 and header[3] == 4


class RayCollector:
    """num_workers RolloutWorker actors on the Ray cluster at `address` (None: a local one, started if needed)."""

    def __init__(self, config: DistillConfig, *, worker_class: type = RolloutWorker) -> None:
        ray = _ray()
        check_ray_target(config)
        if not ray.is_initialized():
            try:
                ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                         **({} if config.ray_address else {"num_cpus": max(config.num_workers, os.cpu_count() or 1)}))
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise PolicyKDError(f"cannot start or reach Ray at {config.ray_address or 'a local instance'}: "
                                    f"{str(e).splitlines()[0][:160]}") from e
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < config.num_workers:  # each actor takes one CPU: more would wait for ever to be scheduled
            raise PolicyKDError(f"--num-workers {config.num_workers} needs {config.num_workers} CPUs on the Ray cluster, which has "
                                f"{cpus:g}; lower --num-workers or add nodes")
        self.ray, self.config, self.failures = ray, config, 0
        self._remote = ray.remote(num_cpus=1)(worker_class)
        self._counter = ray.remote(num_cpus=0)(ProgressCounter)
        self.workers = [self._remote.remote(config) for _ in range(config.num_workers)]

    def collect_round(self, *, steps: int, beta: float, seed: int, round_index: int, episode_offset: int,
                      student, on_progress: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], int]:
        """All workers' rows of one round, in worker order, as one dict of buffer fields; and the replacements made.
        on_progress(n) is called with newly labelled rows while the workers run (n summing to `steps`)."""
        ray = self.ray
        n = min(len(self.workers), max(steps, 1))  # as the local backend: no worker without a row to collect
        payload = ray.put(student_payload(student)) if student is not None and beta < 1.0 else None
        jobs = [dict(job, beta=beta, round_index=round_index, share=w) for w, job in enumerate(share_jobs(
            steps=steps, seed=seed, workers=n, episode_offset=episode_offset, label_every=self.config.label_every,
            envs_per_worker=self.config.n_envs))]
        counter = self._counter.remote() if on_progress is not None else None
        futures = {self.workers[w].collect.remote(**job, student=payload, progress=counter): w for w, job in enumerate(jobs)}
        results: dict[int, dict[str, np.ndarray]] = {}
        attempts, replaced, shown = [0] * n, 0, 0
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=1, timeout=PROGRESS_INTERVAL_S)
            for future in ready:
                w = futures.pop(future)
                try:
                    results[w] = ray.get(future)
                except ray.exceptions.RayActorError as e:
                    if attempts[w] == MAX_RETRIES:
                        raise PolicyKDError(f"Ray rollout worker {w} died {MAX_RETRIES + 1} times in round {round_index + 1}; "
                                            f"last error: {str(e).splitlines()[0][:160]}") from e
                    attempts[w] += 1
                    replaced += 1
                    if counter is not None:
                        counter.restart.remote(w)
                    self.workers[w] = self._remote.remote(self.config)  # a new actor redoes the share from its seed
                    futures[self.workers[w].collect.remote(**jobs[w], student=payload, progress=counter)] = w
            if counter is not None:
                reported = ray.get(counter.snapshot.remote())
                now = min(steps, sum(len(results[w]["obs"]) if w in results else reported.get(w, 0) for w in range(n)))
                if now > shown:  # a bar never goes back; a redone share catches up before it advances again
                    on_progress(now - shown)
                    shown = now
        if on_progress is not None and shown < steps:
            on_progress(steps - shown)
        if counter is not None:
            ray.kill(counter)
        self.failures += replaced
        return concatenate([results[w] for w in range(n)]), replaced

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []
