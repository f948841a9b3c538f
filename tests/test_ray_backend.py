"""Collection on a real local Ray instance (ray.init(num_cpus=2)): the same rows as the local backend, and a killed
worker's share redone with nothing lost or counted twice."""

import os

import numpy as np
import pytest
import torch

from policykd.buffer import Buffer
from policykd.config import DistillConfig
from policykd.distill import distill
from policykd.tracking import Tracker

ray = pytest.importorskip("ray", reason='pip install "policykd[ray]"')

from policykd.collectors import shares, worker_seed  # noqa: E402
from policykd.ray_backend import RayCollector, RolloutWorker  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(tiny_teachers, tmp_path, **kw):
    base = dict(teacher=str(tiny_teachers["sac"]), env_id="Pendulum-v1", labelled_steps=400, rounds=2, epochs_per_round=2,
                out_dir=str(tmp_path), run_name="run", seed=3, hidden=[16, 16])
    base.update(kw)
    return DistillConfig(**base)


def test_shares_and_worker_seeds():
    assert shares(10, 3) == [3, 3, 4] and sum(shares(7, 2)) == 7
    assert worker_seed(123, 0, 1) == 123  # one worker: the local backend's seed
    assert len({worker_seed(123, w, 4) for w in range(4)}) == 4


def test_two_ray_workers_distil_exactly_what_two_local_workers_do(tiny_teachers, tmp_path, local_ray):
    local = distill(_config(tiny_teachers, tmp_path / "local", n_envs=2), tracker=Tracker(None, quiet=True))
    on_ray = distill(_config(tiny_teachers, tmp_path / "ray", backend="ray", num_workers=2, n_envs=1),
                     tracker=Tracker(None, quiet=True))
    a, b = Buffer.open(local.run_dir / "buffer").load(), Buffer.open(on_ray.run_dir / "buffer").load()
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for k, v in local.student.state_dict().items():
        torch.testing.assert_close(v, on_ray.student.state_dict()[k], rtol=0, atol=0)
    assert [m.worker_failures for m in on_ray.history] == [0, 0]
    assert [m.worker_failures for m in local.history] == [None, None]


def test_more_workers_than_cluster_cpus_is_one_line(tiny_teachers, tmp_path, local_ray):
    from policykd.errors import PolicyKDError

    with pytest.raises(PolicyKDError, match="--num-workers 3 needs 3 CPUs on the Ray cluster, which has 2; lower --num-workers"):
        RayCollector(_config(tiny_teachers, tmp_path, backend="ray", num_workers=3))


def test_a_killed_worker_is_replaced_and_its_share_redone(tiny_teachers, tmp_path, local_ray):
    marker = tmp_path / "died"

    class DiesOnce(RolloutWorker):  # the first collect() anywhere kills its actor's process
        def collect(self, **kwargs):
            if not marker.exists():
                marker.write_text("x")
                os._exit(1)
            return super().collect(**kwargs)

    config = _config(tiny_teachers, tmp_path, backend="ray", num_workers=2)
    reference = RayCollector(config)
    expected, replaced = reference.collect_round(steps=300, beta=1.0, seed=11, round_index=0, episode_offset=0, student=None)
    reference.close()
    assert replaced == 0 and len(expected["obs"]) == 300
    faulty = RayCollector(config, worker_class=DiesOnce)
    advanced: list[int] = []
    rows, replaced = faulty.collect_round(steps=300, beta=1.0, seed=11, round_index=0, episode_offset=0, student=None,
                                          on_progress=advanced.append)
    faulty.close()
    assert marker.exists() and replaced == 1 and faulty.failures == 1
    assert sum(advanced) == 300 and min(advanced) > 0  # the bar ends at the budget; the redone share is not counted twice
    assert len(rows["obs"]) == 300  # the budget exactly: nothing lost, nothing counted twice
    for key in expected:
        np.testing.assert_array_equal(rows[key], expected[key], err_msg=key)  # the share was redone from its seed
    assert len(np.unique(rows["episode_id"])) == len(np.unique(expected["episode_id"]))


def test_two_trial_sweep_on_ray_tune_writes_the_local_outputs_and_resumes(tiny_teachers, tmp_path, local_ray):
    from policykd.tune_sweep import run_tune_sweep

    overrides = {"teacher": str(tiny_teachers["sac"]), "env_id": "Pendulum-v1", "labelled_steps": 300, "rounds": 2,
                 "epochs_per_round": 2, "eval_episodes": 2, "seed": 1}
    grid = {"hidden": [[8, 8], [16, 16]]}
    rows = run_tune_sweep(None, overrides, grid, tmp_path / "sweep", latency_calls=20)
    assert sorted(r["param/hidden"] for r in rows) == [[8, 8], [16, 16]]
    assert rows[0]["student_params"] < rows[1]["student_params"]
    for name in ("results.json", "results.md", "pareto.png"):
        assert (tmp_path / "sweep" / name).exists(), name
    again = run_tune_sweep(None, overrides, grid, tmp_path / "sweep", latency_calls=20)  # restored: nothing runs again
    assert [r["name"] for r in again] == [r["name"] for r in rows]


def test_random_search_with_asha_reports_every_round(tiny_teachers, tmp_path, local_ray):
    """--search random --asha: trials draw their values, report each round's evaluation to ASHA, and the ones that
    finish write rows (ASHA may stop some early: those have none)."""
    from policykd.tune_sweep import run_tune_sweep

    overrides = {"teacher": str(tiny_teachers["sac"]), "env_id": "Pendulum-v1", "labelled_steps": 300, "rounds": 2,
                 "epochs_per_round": 2, "eval_episodes": 2, "seed": 1}
    rows = run_tune_sweep(None, overrides, {"tau": [0.5, 1.0, 2.0]}, tmp_path / "sweep", search="random", num_samples=2,
                          asha=True, latency_calls=20)
    assert 1 <= len(rows) <= 2 and all(r["param/tau"] in (0.5, 1.0, 2.0) for r in rows)
    progress = sorted((tmp_path / "sweep" / "tune").glob("*/progress.csv"))
    assert len(progress) == 2  # two trials drawn
    assert any(len(p.read_text().strip().splitlines()) >= 3 for p in progress)  # header + per-round reports


def test_collect_on_ray_is_the_local_buffer_and_reproducible(tiny_teachers, tmp_path, local_ray):
    from typer.testing import CliRunner

    from policykd.cli import app

    def collect(out, *extra):
        args = ["collect", str(tiny_teachers["sac"]), "--env", "Pendulum-v1", "--out", str(tmp_path / out), "--steps", "500",
                "--seed", "4", *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return Buffer.open(tmp_path / out)

    local = collect("local", "--n-envs", "2").load()
    on_ray = collect("ray", "--backend", "ray", "--num-workers", "2", "--n-envs", "1")
    assert on_ray.metadata["config"]["backend"] == "ray" and on_ray.metadata["config"]["num_workers"] == 2
    for key in local:  # two Ray workers collect exactly what two local workers do, in the same buffer format
        np.testing.assert_array_equal(on_ray.load()[key], local[key], err_msg=key)
    a = collect("ray2a", "--backend", "ray", "--num-workers", "2", "--chunk-steps", "200")
    b = collect("ray2b", "--backend", "ray", "--num-workers", "2", "--chunk-steps", "200")
    assert a.rows == 500 and len(a.metadata["chunks"]) == 3  # one Ray round per chunk, each committed
    for key, values in a.load().items():  # same --seed and worker count: the same buffer
        np.testing.assert_array_equal(b.load()[key], values, err_msg=key)
    chunks = np.split(a.load()["episode_id"], np.cumsum([c["rows"] for c in a.metadata["chunks"]])[:-1])
    assert all(later.min() > earlier.max() for earlier, later in zip(chunks, chunks[1:]))  # each chunk: new episodes


def test_a_local_worker_count_or_an_address_ray_cannot_serve_is_refused_before_the_run_folder(tiny_teachers, tmp_path, monkeypatch):
    """ray.init would start a local instance with 100,000 CPU slots and wait on its actors, or retry an unreachable
    address for minutes; both are one line before anything is written."""
    import socket

    from policykd.errors import PolicyKDError

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(PolicyKDError, match=r"--num-workers 100000 is more than a local Ray instance runs on 2 CPU cores \(at most 8\)"):
        distill(_config(tiny_teachers, tmp_path, backend="ray", num_workers=100_000), tracker=Tracker(None, quiet=True))
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(PolicyKDError, match=rf"cannot reach Ray at 127\.0\.0\.1:{port}: .*drop --address for a local instance"):
        distill(_config(tiny_teachers, tmp_path, backend="ray", ray_address=f"127.0.0.1:{port}"), tracker=Tracker(None, quiet=True))
    assert not (tmp_path / "run").exists()


def test_the_address_check_tells_a_ray_head_from_another_server(tiny_teachers, tmp_path, local_ray, monkeypatch):
    import socket
    import threading

    from policykd.errors import PolicyKDError
    from policykd.ray_backend import check_ray_target, speaks_grpc

    host, port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
    assert speaks_grpc(host, int(port), timeout=5.0)  # the running head's GCS: gRPC
    web = socket.create_server(("127.0.0.1", 0))

    def answer_http1() -> None:
        connection, _ = web.accept()
        with connection:
            connection.recv(64)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_http1, daemon=True).start()
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as a fresh process joining a cluster would check
    config = _config(tiny_teachers, tmp_path, backend="ray", ray_address=f"127.0.0.1:{web.getsockname()[1]}")
    with pytest.raises(PolicyKDError, match=r"answers but is not a Ray head"):
        check_ray_target(config)
    web.close()
