"""Buffers as Minari datasets, with the real minari package: a round trip keeps every value."""

import numpy as np
import pytest

from policykd.buffer import Buffer
from policykd.collection import collect_to_buffer
from policykd.collectors import LocalCollector
from policykd.config import DistillConfig
from policykd.errors import PolicyKDError
from policykd.teachers import load_teacher
from policykd.tracking import Tracker

minari = pytest.importorskip("minari", reason='pip install "policykd[minari]"')

from policykd.minari_io import buffer_from_minari, export_minari  # noqa: E402


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _buffer(teacher, path):
    settings = {"steps": 500, "beta": 1.0, "seed": 0, "n_envs": 2, "deterministic": False, "student": None}
    return collect_to_buffer(teacher, path, settings, student=None, chunk_steps=200, resume=False,
                             progress=Tracker(None, quiet=True).progress, collector=LocalCollector(teacher, DistillConfig(label_every=1)))


def test_round_trip_keeps_every_value(tiny_teachers, tmp_path, datasets):
    teacher = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    original = _buffer(teacher, tmp_path / "buffer")
    data = original.load()
    dataset = export_minari(tmp_path / "buffer", "policykd/pendulum/test-v0")
    episodes = list(dataset.iterate_episodes())
    assert dataset.total_steps == 500 == sum(len(e.rewards) for e in episodes)
    assert len(episodes) == len(np.unique(data["episode_id"]))
    first = episodes[0]
    rows = data["episode_id"] == data["episode_id"][0]
    np.testing.assert_array_equal(first.observations[:-1], data["obs"][rows])
    np.testing.assert_array_equal(first.observations[-1], data["next_obs"][rows][-1])
    np.testing.assert_array_equal(first.infos["teacher_mean"], data["dist_mean"][rows])
    assert set(first.infos) == {"teacher_mean", "teacher_log_std", "teacher_value", "actor", "round", "episode_id", "row",
                                "buffer_truncated"}
    for episode in episodes:  # every episode ends flagged: those the buffer holds in part (cut) as truncated, as Minari does
        assert episode.terminations[-1] or episode.truncations[-1]
    cut = [e for e in episodes if not (e.terminations[-1] or e.infos["buffer_truncated"][-1])]
    assert cut  # 500 steps on two envs of Pendulum's 200-step episodes: the last episodes are cut

    back = buffer_from_minari("policykd/pendulum/test-v0", tmp_path / "back", teacher)
    assert back.metadata["config"]["labels"] == "dataset"
    again = back.load()
    assert set(again) == set(data)
    for key in data:
        np.testing.assert_array_equal(again[key], data[key], err_msg=key)
        assert again[key].dtype == data[key].dtype, key


def test_another_teacher_labels_the_observations_itself(tiny_teachers, tmp_path, datasets):
    sac = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    td3 = load_teacher(tiny_teachers["td3"], env_id="Pendulum-v1")
    _buffer(sac, tmp_path / "buffer")
    export_minari(tmp_path / "buffer", "policykd/pendulum/sac-v0")
    relabelled = buffer_from_minari("policykd/pendulum/sac-v0", tmp_path / "td3", td3).load()
    dist, value = td3.dist_and_value(relabelled["obs"])
    np.testing.assert_allclose(relabelled["dist_action"], dist["action"].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(relabelled["value"], value.numpy(), rtol=0, atol=1e-5)
    assert Buffer.open(tmp_path / "td3").metadata["config"]["labels"] == "teacher"


def test_bad_minari_input_is_one_line(tiny_teachers, tmp_path, datasets):
    sac = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    _buffer(sac, tmp_path / "buffer")
    export_minari(tmp_path / "buffer", "policykd/pendulum/one-v0")
    with pytest.raises(PolicyKDError, match="already exists; choose another --dataset-id"):
        export_minari(tmp_path / "buffer", "policykd/pendulum/one-v0")
    with pytest.raises(PolicyKDError, match="no local Minari dataset 'nope/x-v0'.*local ones: policykd/pendulum/one-v0"):
        buffer_from_minari("nope/x-v0", tmp_path / "x", sac)
    dqn = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    with pytest.raises(PolicyKDError, match="the teacher takes 4 values: use a dataset of the teacher's env"):
        buffer_from_minari("policykd/pendulum/one-v0", tmp_path / "y", dqn)
    assert not (tmp_path / "y").exists()  # nothing written for a refused dataset


def test_a_damaged_dataset_is_one_line_naming_what_is_wrong(tiny_teachers, tmp_path, datasets):
    """An episode whose labels are shorter than its steps met an IndexError 'policykd bug'; a truncated data file read
    'cannot use: ...; choose another location'."""
    import h5py

    sac = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    _buffer(sac, tmp_path / "buffer")
    export_minari(tmp_path / "buffer", "policykd/pendulum/shape-v0")
    data_file = next((datasets / "policykd" / "pendulum" / "shape-v0").rglob("*.hdf5"))
    with h5py.File(data_file, "r+") as f:
        labels = f["episode_0/infos/teacher_mean"][:]
        del f["episode_0/infos/teacher_mean"]
        f["episode_0/infos/teacher_mean"] = labels[:-50]
    with pytest.raises(PolicyKDError, match=r"Minari dataset policykd/pendulum/shape-v0, episode 0: dist_mean has shape "
                                            r"\(\d+, 1\), expected \(\d+, \.\.\.\).*malformed, re-create it"):
        buffer_from_minari("policykd/pendulum/shape-v0", tmp_path / "x", sac)
    assert not (tmp_path / "x").exists()
    with h5py.File(data_file, "r+") as f:  # a NaN among the dataset's labels: the dataset's damage, not the teacher's
        labels[5, 0] = np.nan
        del f["episode_0/infos/teacher_mean"]
        f["episode_0/infos/teacher_mean"] = labels
    with pytest.raises(PolicyKDError, match=r"shape-v0, episode 0: dist_mean holds NaN or inf \(step 5\); the dataset is damaged"):
        buffer_from_minari("policykd/pendulum/shape-v0", tmp_path / "x", sac)
    assert not (tmp_path / "x").exists()
    with open(data_file, "r+b") as f:
        f.truncate(20_000)
    with pytest.raises(PolicyKDError, match=r"cannot read Minari dataset 'policykd/pendulum/shape-v0' \(.*\); its files are damaged"):
        buffer_from_minari("policykd/pendulum/shape-v0", tmp_path / "x", sac)


def test_a_dataset_whose_metadata_is_corrupt_is_named_as_such(tiny_teachers, tmp_path, datasets, recwarn):
    """Minari skips it with a warning per dataset; policykd said 'no local Minari dataset' although it is there."""
    sac = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    _buffer(sac, tmp_path / "buffer")
    export_minari(tmp_path / "buffer", "policykd/pendulum/meta-v0")
    (datasets / "policykd" / "pendulum" / "meta-v0" / "data" / "metadata.json").write_text("{")
    with pytest.raises(PolicyKDError, match=r"Minari dataset 'policykd/pendulum/meta-v0' exists but Minari cannot read its "
                                            r"data/metadata\.json"):
        buffer_from_minari("policykd/pendulum/meta-v0", tmp_path / "x", sac)
    assert not [w for w in recwarn if "Misconfigured dataset" in str(w.message)]


@pytest.mark.parametrize("dataset_id", ["bad id", "noversion", "", "../outside-v0", "a/b.c-v0"])
def test_a_malformed_dataset_id_is_refused_before_anything_is_written(tiny_teachers, tmp_path, datasets, dataset_id):
    _buffer(load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1"), tmp_path / "buffer")
    with pytest.raises(PolicyKDError, match="is not a Minari dataset id: .*e.g. policykd/hopper/dagger-v0"):
        export_minari(tmp_path / "buffer", dataset_id)
    assert not datasets.exists() or not any(datasets.iterdir())


def test_a_failed_export_leaves_no_half_dataset_behind(tiny_teachers, tmp_path, datasets, monkeypatch):
    """A half-written dataset folder makes every later Minari call on the folder fail."""
    _buffer(load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1"), tmp_path / "buffer")
    export_minari(tmp_path / "buffer", "policykd/pendulum/kept-v0")
    real = minari.create_dataset_from_buffers

    def fails_halfway(dataset_id, *args, **kwargs):
        (datasets / dataset_id / "data").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", fails_halfway)
    with pytest.raises(OSError, match="disk full"):
        export_minari(tmp_path / "buffer", "policykd/pendulum/half-v0")
    monkeypatch.setattr(minari, "create_dataset_from_buffers", real)
    assert not (datasets / "policykd/pendulum/half-v0").exists()
    assert set(minari.list_local_datasets()) == {"policykd/pendulum/kept-v0"}


def test_an_export_into_a_users_folder_is_refused_and_leaves_it_as_it_was(tiny_teachers, tmp_path, datasets):
    _buffer(load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1"), tmp_path / "buffer")
    notes = datasets / "pk" / "b-v0" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    with pytest.raises(PolicyKDError, match=r"b-v0 exists and is not a Minari dataset.*choose another --dataset-id"):
        export_minari(tmp_path / "buffer", "pk/b-v0")
    assert [p.name for p in notes.parent.iterdir()] == ["notes.txt"] and notes.read_text() == "mine"


def test_an_unreadable_folder_among_the_datasets_is_one_line(tiny_teachers, tmp_path, datasets):
    (datasets / "not a dataset" / "data").mkdir(parents=True)
    with pytest.raises(PolicyKDError, match=r"Minari datasets folder .* holds a folder Minari cannot read .*move it out"):
        buffer_from_minari("policykd/x-v0", tmp_path / "x", load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1"))


def test_cli_export_and_collect_from_minari(tiny_teachers, tmp_path, datasets):
    from typer.testing import CliRunner

    from policykd.cli import app

    runner = CliRunner()
    sac = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    _buffer(sac, tmp_path / "buffer")
    result = runner.invoke(app, ["buffer", "export", str(tmp_path / "buffer"), "--dataset-id", "policykd/pendulum/cli-v0"])
    assert result.exit_code == 0, result.output
    assert "Minari dataset policykd/pendulum/cli-v0:" in result.output and "500 steps" in result.output
    result = runner.invoke(app, ["collect", str(tiny_teachers["sac"]), "--env", "Pendulum-v1", "--from-minari",
                                 "policykd/pendulum/cli-v0", "--out", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    assert "500 labelled states (dataset labels)" in result.output
    result = runner.invoke(app, ["buffer", "export", str(tmp_path / "buffer"), "--dataset-id", "x/y-v0", "--format", "d4rl"])
    assert result.exit_code == 2 and "unknown buffer export format 'd4rl'; choose minari" in result.output


@pytest.mark.parametrize("options,named", [(["--steps", "50"], "--steps"), (["--beta", "0.5", "--student", "s"], "--beta, --student"),
                                           (["--resume"], "--resume")])
def test_rollout_options_with_from_minari_are_refused_naming_them(tiny_teachers, tmp_path, options, named):
    from typer.testing import CliRunner

    from policykd.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["collect", str(tiny_teachers["sac"]), "--env", "Pendulum-v1", "--out", str(out),
                                      "--from-minari", "policykd/pendulum/x-v0", *options])
    assert result.exit_code == 2, result.output
    assert f"--from-minari builds the buffer from the dataset's rows: {named} (rollout option" in result.output
    assert not out.exists()


def test_a_dataset_of_other_actions_is_refused():
    """Observations of the right shape are not enough: a Box(2) or Discrete(5) dataset is not a Discrete(2) teacher's."""
    import gymnasium as gym

    from policykd.minari_io import _check_action_space

    _check_action_space("d", gym.spaces.Discrete(2), gym.spaces.Discrete(2))
    _check_action_space("d", gym.spaces.Box(-2, 2, (1,)), gym.spaces.Box(-1, 1, (1,)))  # bounds may differ
    for theirs in (gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(5)):
        with pytest.raises(PolicyKDError, match=r"dataset d has actions .*; the teacher acts in Discrete\(2\)"):
            _check_action_space("d", theirs, gym.spaces.Discrete(2))
