"""Where a round's labelled rows are collected: worker processes on this machine (`LocalCollector`), or Ray actors
(`policykd.ray_backend.RayCollector`). `round_collector(config, teacher)` gives the one a recipe's `backend` names.

Both split a round's budget into shares, one per worker (`shares`), and collect each with
`policykd.rollout.collect` from its own seed (`worker_seed`) and its own range of episode ids (`share_jobs`), so
the rows depend on the seed and the number of workers only: N local workers give the rows of N Ray workers with
one env each.

The local backend runs `n_envs` worker processes (forked: each inherits the teacher and the current student,
nothing is pickled across but the rows it sends back), each stepping one env and labelling its own states. The
teacher's forward then runs beside the env in every worker, instead of in one parent process that leaves the
cores idle while it labels and pays a pipe round trip per step: about 0.9 of the raw env's steps per second
(benchmarks/collection_throughput.py), against 0.4-0.6 for one labelling process driving a vector env.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from policykd.config import DistillConfig
from policykd.errors import PolicyKDError
from policykd.rollout import collect
from policykd.students import Student
from policykd.teachers import Teacher

PROGRESS_INTERVAL_S = 0.25  # how often the parent reads the workers' row counts during a round
PARENT_CHECK_INTERVAL_S = 1.0  # how often a worker checks that its parent is alive
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def shares(steps: int, workers: int) -> list[int]:
    """steps split over workers, the remainder to the last."""
    base = steps // workers
    return [base] * (workers - 1) + [steps - base * (workers - 1)]


def worker_seed(round_seed: int, worker: int, workers: int) -> int:
    """The seed of worker `worker` of `workers` in a round seeded `round_seed`: the round's seed itself when there
    is one worker, else SeedSequence([round_seed, worker])."""
    if workers == 1:
        return round_seed
    return int(np.random.SeedSequence([round_seed, worker]).generate_state(1)[0])


def share_jobs(*, steps: int, seed: int, workers: int, episode_offset: int, label_every: int,
               envs_per_worker: int) -> list[dict[str, int]]:
    """collect() arguments per worker: its share of `steps`, its seed, and the first of its episode ids (ranges
    wide enough that no two workers' ids meet)."""
    span = steps * max(label_every, 1) + envs_per_worker  # more episodes than a share can have
    return [dict(steps=share, seed=worker_seed(seed, w, workers), episode_offset=episode_offset + w * span)
            for w, share in enumerate(shares(steps, workers))]


def collect_options(config: DistillConfig) -> dict[str, Any]:
    """The recipe's collect() settings other than the budget, seed and student. A student trained by `loss: mse`
    (means only) explores with the teacher's std, as the default recipe's student does once it matches it."""
    return dict(sample_actions=config.sample_actions, noise_scale=config.noise_scale,
                student_std_from_teacher=config.loss == "mse",
                max_episode_steps=config.collect_max_episode_steps or None, label_every=config.label_every,
                student_view=config.student_view)


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class LocalCollector:
    """config.n_envs worker processes on this machine, one env each (n_envs 1: this process)."""

    def __init__(self, teacher: Teacher, config: DistillConfig) -> None:
        self.teacher, self.config, self.failures = teacher, config, 0

    def collect_round(self, *, steps: int, beta: float, seed: int, round_index: int, episode_offset: int,
                      student: Student | None, on_progress: Callable[[int], None] | None = None
                      ) -> tuple[dict[str, np.ndarray], int]:
        """The round's rows, worker by worker, as buffer fields; and 0 (workers are not replaced here: a failed
        round is an error, and `distill --resume` collects it again). on_progress(n): newly labelled rows."""
        workers = min(self.config.n_envs, max(steps, 1))  # no worker without a row to collect
        jobs = share_jobs(steps=steps, seed=seed, workers=workers, episode_offset=episode_offset,
                          label_every=self.config.label_every, envs_per_worker=1)
        options = dict(collect_options(self.config), beta=beta, round_index=round_index, student=student, n_envs=1)
        if workers == 1:
            return collect(self.teacher, **jobs[0], **options, on_progress=on_progress), 0
        with _worker_processes(self.teacher, jobs, options) as (conns, counts):
            rows: dict[int, dict[str, np.ndarray]] = {}
            shown = 0
            while len(rows) < workers:
                waiting = [conn for w, conn in enumerate(conns) if w not in rows]
                for conn in multiprocessing.connection.wait(waiting, timeout=PROGRESS_INTERVAL_S):
                    w = conns.index(conn)
                    rows[w] = _receive(conn, w, round_index)
                if on_progress is not None:
                    now = sum(len(rows[w]["obs"]) if w in rows else counts[w] for w in range(workers))
                    if now > shown:
                        on_progress(now - shown)
                        shown = now
        return concatenate([rows[w] for w in range(workers)]), 0


@contextlib.contextmanager
def _worker_processes(teacher: Teacher, jobs: list[dict[str, int]], options: dict[str, Any]
                      ) -> Iterator[tuple[list[multiprocessing.connection.Connection], Any]]:
    """One forked process per job; yields (a pipe per worker to receive its rows from, a shared array of each
    worker's labelled rows so far). On leaving, early (an error, Ctrl-C) or not, no worker outlives the round."""
    context = multiprocessing.get_context("fork")
    counts = context.Array("q", len(jobs), lock=False)  # one writer per slot: the worker; the parent only reads
    processes, conns = [], []
    try:
        for w, job in enumerate(jobs):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_collect_share, args=(sender, counts, w, teacher, job, options, os.getpid()),
                                      daemon=True)
            with _stop_signals_deferred():
                process.start()
                processes.append(process)
                conns.append(receiver)
            sender.close()
        yield conns, counts
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for conn in conns:
            conn.close()


@contextlib.contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends: none interrupts a fork halfway (an exception inside the fork's
    at-fork handlers can leave the logging module's lock held, and a later log call hanging), and none reaches a
    new worker before it has its own handlers (the child inherits the mask; _collect_share unblocks it)."""
    deferred: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # elsewhere (a Ray Tune trial) Python handlers cannot be set,
        # nor do they run in this thread: the mask, which the child inherits from this thread, is all that is needed
        handlers = {signum: signal.signal(signum, lambda s, _f: deferred.append(s)) for signum in _STOP_SIGNALS}
    masked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in deferred[:1]:  # delivered now, to the handlers the caller had
            signal.raise_signal(signum)


def _collect_share(sender: multiprocessing.connection.Connection, counts: Any, w: int, teacher: Teacher,
                   job: dict[str, int], options: dict[str, Any], parent_pid: int) -> None:
    """A worker process: collect one share and send ("rows", fields) or ("error", one line) to the parent. Ctrl-C
    is left to the parent, which stops the workers with SIGTERM (silent, the default action)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by the parent around the fork
    _exit_with_parent(parent_pid)

    def counted(n: int) -> None:
        counts[w] += n

    try:
        message = ("rows", collect(teacher, **job, **options, on_progress=counted))
    except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as one line
        message = ("error", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}")
    sender.send(message)
    sender.close()


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as its parent is gone. A parent killed outright (SIGKILL, the OOM killer, a job
    timeout) cannot terminate its workers, and a worker with a large share would collect on, unseen, for hours."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit with parent", daemon=True).start()


def _receive(conn: multiprocessing.connection.Connection, w: int, round_index: int) -> dict[str, np.ndarray]:
    try:
        kind, payload = conn.recv()
    except EOFError:
        raise PolicyKDError(f"collection worker {w} died in round {round_index + 1} (killed, or out of memory); "
                            "resume the run to collect the round again") from None
    if kind == "error":
        if payload.startswith("PolicyKDError: "):
            raise PolicyKDError(payload.removeprefix("PolicyKDError: "))
        raise PolicyKDError(f"collection worker {w} failed in round {round_index + 1}: {payload}")
    return payload


@contextlib.contextmanager
def round_collector(config: DistillConfig, teacher: Teacher):
    """The collector config.backend names: a LocalCollector, or a RayCollector (closed afterwards)."""
    if config.backend != "ray":
        yield LocalCollector(teacher, config)
        return
    from policykd.ray_backend import RayCollector

    collector = RayCollector(config)
    try:
        yield collector
    finally:
        collector.close()
