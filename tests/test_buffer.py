import json
import warnings

import gymnasium as gym
import numpy as np
import pytest

from policykd.buffer import Buffer, check_room, row_bytes
from policykd.errors import PolicyKDError


def _rows(n, start=0):
    rng = np.random.default_rng(start)
    return {
        "obs": rng.normal(size=(n, 3)).astype(np.float32), "value": rng.normal(size=n), "reward": rng.normal(size=n),
        "terminated": np.zeros(n, bool), "truncated": np.zeros(n, bool), "episode_id": np.arange(start, start + n),
        "actor": np.zeros(n), "round": np.zeros(n), "dist_mean": rng.normal(size=(n, 2)), "dist_log_std": np.zeros((n, 2)),
    }


def _create(root):
    return Buffer.create(root, observation_space=gym.spaces.Box(-1, 1, (3,)), action_space=gym.spaces.Box(-1, 1, (2,)),
                         family="gaussian", teacher={"sha256": "abc"}, normalizer=None)


def test_append_and_load_roundtrip_with_dtypes(tmp_path):
    buf = _create(tmp_path / "b")
    buf.append(_rows(5))
    buf.append(_rows(7, start=5))
    data = Buffer.open(tmp_path / "b").load()
    assert data["obs"].shape == (12, 3) and data["obs"].dtype == np.float32
    assert data["terminated"].dtype == np.bool_ and data["episode_id"].dtype == np.int64
    np.testing.assert_array_equal(data["episode_id"], np.arange(12))


def test_buffer_is_readable_with_numpy_and_json_alone(tmp_path):
    buf = _create(tmp_path / "b")
    rows = _rows(4)
    buf.append(rows)
    meta = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert meta["format"] == "policykd-buffer" and meta["family"] == "gaussian"
    assert meta["observation_space"]["shape"] == [3]
    with np.load(tmp_path / "b" / meta["chunks"][0]["file"]) as chunk:
        np.testing.assert_allclose(chunk["dist_mean"], rows["dist_mean"].astype(np.float32))


def test_torn_or_modified_chunk_is_detected(tmp_path):
    buf = _create(tmp_path / "b")
    buf.append(_rows(5))
    chunk = tmp_path / "b" / buf.metadata["chunks"][0]["file"]
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(PolicyKDError, match="sha256"):
        Buffer.open(tmp_path / "b").load()


def test_uncommitted_chunk_is_ignored_with_a_warning(tmp_path):
    buf = _create(tmp_path / "b")
    buf.append(_rows(5))
    (tmp_path / "b" / "chunk_000001.npz").write_bytes(b"partial")
    with pytest.warns(UserWarning, match="not committed"):
        reopened = Buffer.open(tmp_path / "b")
    assert reopened.rows == 5 and len(reopened.load()["obs"]) == 5


def test_truncate_drops_later_chunks(tmp_path):
    buf = _create(tmp_path / "b")
    buf.append(_rows(5))
    buf.append(_rows(5, start=5))
    buf.truncate(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Buffer.open(tmp_path / "b").rows == 5
    assert not (tmp_path / "b" / "chunk_000001.npz").exists()


def test_bad_input_errors(tmp_path):
    with pytest.raises(PolicyKDError, match="not a policykd buffer"):
        Buffer.open(tmp_path)
    buf = _create(tmp_path / "b")
    with pytest.raises(PolicyKDError, match="already holds"):
        _create(tmp_path / "b")
    with pytest.raises(ValueError, match="lacks fields"):
        buf.append({"obs": np.zeros((1, 3))})


def test_an_orphan_chunk_is_never_overwritten(tmp_path):
    """A chunk left by an interrupted append (written, not yet in metadata.json) keeps its bytes."""
    buffer = _create(tmp_path / "b")
    buffer.append(_rows(10))
    orphan = tmp_path / "b" / "chunk_000001.npz"
    orphan.write_bytes(b"someone's half-written chunk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = Buffer.open(tmp_path / "b")
    buffer.append(_rows(5, start=10))
    assert orphan.read_bytes() == b"someone's half-written chunk"
    assert [c["file"] for c in buffer.metadata["chunks"]] == ["chunk_000000.npz", "chunk_000002.npz"]
    assert len(Buffer.open(tmp_path / "b").load()["obs"]) == 15


def test_a_buffer_is_not_created_inside_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(PolicyKDError, match="not an empty folder"):
        _create(tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "mine.npz", x=np.zeros(3))  # a user's own arrays: a foreign folder too
    with pytest.raises(PolicyKDError, match="not an empty folder"):
        _create(tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mine.npz"]


def test_row_bytes_is_what_a_chunk_holds(tmp_path):
    """The estimate the disk and memory checks use is the bytes a written row really takes (uncompressed npz)."""
    buf = _create(tmp_path / "b")
    buf.append(_rows(10_000))
    chunk = tmp_path / "b" / buf.metadata["chunks"][0]["file"]
    per_row = row_bytes(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,)), "gaussian", transitions=False)
    assert per_row == 23 + 4 * (3 + 2 * 2)
    assert per_row <= chunk.stat().st_size / 10_000 < per_row + 1  # npz headers: a few hundred bytes a chunk
    assert row_bytes(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4), "categorical", transitions=True) == 23 + 4 * (3 + 4 + 1 + 3)


def test_check_room_refuses_what_memory_cannot_hold(tmp_path, monkeypatch):
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1000}  # a 4 MB machine
    monkeypatch.setattr("os.sysconf", lambda name: pages[name])
    check_room(tmp_path / "new" / "run", 10_000, 100, held_in_memory=True, what="labelled_steps")  # 2 MB in memory: fits
    with pytest.raises(PolicyKDError, match=r"labelled_steps 30,000 needs about 6\.0 MB of memory .* 4\.1 MB; lower it"):
        check_room(tmp_path / "new" / "run", 30_000, 100, held_in_memory=True, what="labelled_steps")
    check_room(tmp_path, 30_000, 100, held_in_memory=False, what="--steps")  # collection alone keeps nothing in memory
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("field, message", [
    ("obs", r"an observation the env returned is NaN or inf \(obs, row 3, episode 3, 2 rows in all\); check the env"),
    ("dist_log_std", r"the teacher's action distribution on a finite observation is NaN or inf \(dist_log_std, row 3"),
    ("value", r"the teacher's value of a finite observation is NaN or inf \(value, row 3"),
])
def test_a_chunk_with_nan_or_inf_is_refused_and_nothing_written(tmp_path, field, message):
    buf = _create(tmp_path / "b")
    buf.append(_rows(5))
    rows = _rows(6, start=5)
    rows["episode_id"] = np.arange(6)
    rows[field] = np.asarray(rows[field], dtype=np.float32)
    rows[field][3] = np.nan
    rows[field][5] = np.inf
    with pytest.raises(PolicyKDError, match=message):
        buf.append(rows)
    assert Buffer.open(tmp_path / "b").rows == 5
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["chunk_000000.npz", "metadata.json"]
