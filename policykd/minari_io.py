"""Buffers as Minari datasets (https://minari.farama.org), the offline-RL format others read, and back.

Export (`policykd buffer export BUFFER --format minari --dataset-id ID`): one Minari episode per buffer episode,
in buffer order, with observations [T + 1] (the buffer's obs, then the last step's next_obs), actions [T], rewards,
terminations and truncations [T]; the teacher's labels ride along as per-step infos (T entries each):
`teacher_<param>` for each distribution parameter (e.g. teacher_mean, teacher_log_std), `teacher_value`, and the
buffer's `actor`, `round`, `episode_id` and `row` (the buffer interleaves the episodes of its parallel envs). An
episode the buffer holds only in part (cut where its chunk or the collection ended, neither terminated nor truncated)
ends with truncations[-1] = True, as Minari's own DataCollector marks it; the buffer's flags ride along as
`buffer_truncated`, so import restores them. The dataset's description ends with one line
`policykd: {json}` (family, spaces, teacher identity, normaliser), so a round trip keeps every value.

Import (`policykd collect TEACHER --from-minari ID --out BUFFER`): a policykd buffer from a Minari dataset. Labels
come from its teacher_* infos when policykd exported it from this same teacher (same checkpoint sha256);
otherwise TEACHER labels every observation, so any dataset of the teacher's env becomes teacher-labelled data.

Minari is an optional dependency: `pip install "policykd[minari]"`.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policykd.buffer import TRANSITION_FIELDS, Buffer
from policykd.distributions import PARAM_NAMES
from policykd.errors import PolicyKDError
from policykd.run_dir import same_label_scale

MARKER = "policykd: "
LABEL_CHUNK = 4096  # observations labelled per teacher call on import


def _minari():
    try:
        import minari
    except ImportError:
        raise PolicyKDError('Minari datasets need the minari package: pip install "policykd[minari]"') from None
    return minari


def _local_datasets(minari) -> dict[str, Any]:
    """minari.list_local_datasets(), or a one-line PolicyKDError when a folder there is not a dataset Minari can read."""
    from minari.storage import get_dataset_path

    try:
        with warnings.catch_warnings():  # Minari warns of, and skips, each dataset whose metadata it cannot read
            warnings.filterwarnings("ignore", message="Misconfigured dataset")
            return minari.list_local_datasets()
    except (ValueError, TypeError, OSError) as e:
        raise PolicyKDError(f"the Minari datasets folder {get_dataset_path()} holds a folder Minari cannot read "
                            f"({(str(e).splitlines() or [''])[0][:200]}); move it out of there") from None


def _check_dataset_id(dataset_id: str) -> None:
    """A Minari id, (namespace/)name-vVERSION, that names a folder inside the datasets folder."""
    from minari.dataset.minari_dataset import DATASET_ID_RE

    match = DATASET_ID_RE.fullmatch(dataset_id)
    if match is None or match.group("version") is None:
        raise PolicyKDError(f"--dataset-id {dataset_id!r} is not a Minari dataset id: (namespace/)name-vVERSION of letters, "
                            "digits, '-' and '_', e.g. policykd/hopper/dagger-v0")


def _episodes(data: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Row indices of each episode, episodes in order of first appearance, rows in buffer order."""
    ids = data["episode_id"]
    _, first = np.unique(ids, return_index=True)
    return [np.flatnonzero(ids == ids[i]) for i in np.sort(first)]


def export_minari(buffer_dir: str | Path, dataset_id: str, *, author: str | None = None) -> Any:
    """Write the buffer in buffer_dir as Minari dataset `dataset_id` (under $MINARI_DATASETS_PATH, default
    ~/.minari/datasets); returns the MinariDataset. One-line PolicyKDError for a buffer without transitions or an
    id that already exists."""
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    minari = _minari()
    buffer = Buffer.open(buffer_dir)
    missing = [f for f in TRANSITION_FIELDS if f not in buffer.fields]
    if missing:
        raise PolicyKDError(f"{buffer_dir} has no {', '.join(missing)} (written by an older policykd): a dataset needs "
                            "full transitions; collect the buffer again with this version")
    if buffer.metadata.get("config", {}).get("label_every", 1) > 1:
        raise PolicyKDError(f"{buffer_dir} labels one state in {buffer.metadata['config']['label_every']} only, so its rows "
                            "are not consecutive transitions; export a buffer collected with label_every 1")
    _check_dataset_id(dataset_id)
    if dataset_id in _local_datasets(minari):
        raise PolicyKDError(f"Minari dataset {dataset_id} already exists; choose another --dataset-id (nothing was changed)")
    from minari.storage import get_dataset_path

    folder = Path(get_dataset_path()) / dataset_id
    if folder.exists():
        raise PolicyKDError(f"{folder} exists and is not a Minari dataset, and Minari does not write into it; choose another "
                            "--dataset-id or move that folder away (nothing was changed)")
    meta = buffer.metadata
    family = meta["family"]
    observation_space, action_space = _space(meta["observation_space"]), _space(meta["action_space"])
    data = buffer.load()
    discrete = isinstance(action_space, gym.spaces.Discrete)
    actions_fit = ((data["action"].ndim == 1 and data["action"].min(initial=0) >= 0 and data["action"].max(initial=0) < action_space.n)
                   if discrete else data["action"].shape[1:] == action_space.shape)
    if data["obs"].shape[1:] != observation_space.shape or not actions_fit:
        raise PolicyKDError(f"{buffer_dir}/metadata.json states {observation_space} and {action_space}, and its rows hold "
                            f"observations of shape {list(data['obs'].shape[1:])} and actions of shape {list(data['action'].shape[1:])}: "
                            "the metadata was edited or the buffer is damaged; collect it again")
    episodes = []
    for number, rows in enumerate(_episodes(data)):
        actions = data["action"][rows]
        infos = {f"teacher_{n}": data[f"dist_{n}"][rows] for n in PARAM_NAMES[family]}
        infos.update({"teacher_value": data["value"][rows], "actor": data["actor"][rows], "round": data["round"][rows],
                      "episode_id": data["episode_id"][rows], "row": rows.astype(np.int64),
                      "buffer_truncated": data["truncated"][rows]})
        truncations = data["truncated"][rows].copy()
        if not (data["terminated"][rows[-1]] or truncations[-1]):  # cut where its chunk ended: truncated, as Minari marks it
            truncations[-1] = True
        episodes.append(EpisodeBuffer(
            id=number, observations=np.concatenate([data["obs"][rows], data["next_obs"][rows[-1:]]]),
            actions=actions.astype(np.int64) if discrete else actions, rewards=list(data["reward"][rows]),
            terminations=list(data["terminated"][rows]), truncations=list(truncations), infos=infos))
    record = {"family": family, "observation_space": meta["observation_space"], "action_space": meta["action_space"],
              "teacher": meta["teacher"], "normalizer": meta["normalizer"]}
    teacher_name = meta["teacher"].get("path", "a teacher")
    description = (f"Teacher-labelled states collected by policykd from {teacher_name}: per-step infos hold the "
                   f"teacher's action distribution (teacher_*), its value, who acted and the DAgger round.\n"
                   f"{MARKER}{json.dumps(record, sort_keys=True)}")
    try:
        with warnings.catch_warnings():  # minari warns that no env spec or eval env is given: the record above has the env
            warnings.filterwarnings("ignore", category=UserWarning, module=r"minari\.")
            return minari.create_dataset_from_buffers(
                dataset_id, episodes, observation_space=observation_space, action_space=action_space,
                algorithm_name="policykd teacher-labelled collection", author=author or "policykd", author_email="n/a",
                code_permalink="https://github.com/policykd/policykd", description=description, data_format="hdf5")
    except BaseException:  # a half-written dataset would break every later Minari call on this folder (ours: it did not exist)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _space(record: dict[str, Any]):
    import gymnasium as gym

    if record["type"] == "Discrete":
        return gym.spaces.Discrete(record["n"], start=record.get("start", 0))
    return gym.spaces.Box(np.asarray(record["low"], dtype=record["dtype"]), np.asarray(record["high"], dtype=record["dtype"]),
                          dtype=record["dtype"])


def load_dataset(dataset: str):
    """A MinariDataset by id (as minari.load_dataset), or one-line PolicyKDError naming the local ids."""
    minari = _minari()
    local = _local_datasets(minari)
    if dataset not in local:
        from minari.storage import get_dataset_path

        if (Path(get_dataset_path()) / dataset / "data" / "metadata.json").is_file():
            raise PolicyKDError(f"Minari dataset {dataset!r} exists but Minari cannot read its data/metadata.json (corrupt, or "
                                "written for another dataset id); re-create or re-download it")
        raise PolicyKDError(f"no local Minari dataset {dataset!r} (in $MINARI_DATASETS_PATH or ~/.minari/datasets); "
                            f"local ones: {', '.join(sorted(local)) or 'none'}")
    try:
        return minari.load_dataset(dataset)
    except OSError as e:  # h5py: a truncated or damaged data file
        raise _damaged(dataset, e) from e


def _damaged(dataset_id: str, error: OSError) -> PolicyKDError:
    return PolicyKDError(f"cannot read Minari dataset {dataset_id!r} ({(str(error).splitlines() or [type(error).__name__])[0][:160]}); "
                         "its files are damaged: re-create or re-download it")


def _read_episodes(dataset, dataset_id: str) -> Iterator:
    """dataset.iterate_episodes(), with h5py's OSError on a damaged data file as one PolicyKDError line."""
    episodes = iter(dataset.iterate_episodes())
    while True:
        try:
            episode = next(episodes)
        except StopIteration:
            return
        except OSError as e:
            raise _damaged(dataset_id, e) from e
        yield episode


def _policykd_record(dataset) -> dict[str, Any] | None:
    description = dataset.storage.metadata.get("description") or ""
    lines = [line for line in description.splitlines() if line.startswith(MARKER)]
    return json.loads(lines[-1][len(MARKER):]) if lines else None


def _check_action_space(dataset_id: str, theirs: gym.Space, ours: gym.Space) -> None:
    """The dataset's actions must be the teacher's kind: Discrete of the same n, or a Box of the same shape."""
    same = ((isinstance(ours, gym.spaces.Discrete) and isinstance(theirs, gym.spaces.Discrete) and int(theirs.n) == int(ours.n))
            or (isinstance(ours, gym.spaces.Box) and isinstance(theirs, gym.spaces.Box) and theirs.shape == ours.shape))
    if not same:
        raise PolicyKDError(f"dataset {dataset_id} has actions {theirs}; the teacher acts in {ours}: use a dataset of the "
                            "teacher's env")


def buffer_from_minari(dataset_id: str, out_dir: str | Path, teacher) -> Buffer:
    """A new policykd buffer in out_dir from Minari dataset `dataset_id`, labelled as the module docstring says."""
    dataset = load_dataset(dataset_id)
    obs_shape = dataset.spec.observation_space.shape
    if obs_shape is None or len(obs_shape) != 1 or obs_shape[0] != teacher.obs_dim:
        raise PolicyKDError(f"dataset {dataset_id} has observations {dataset.spec.observation_space}; the teacher takes "
                            f"{teacher.obs_dim} values: use a dataset of the teacher's env")
    _check_action_space(dataset_id, dataset.spec.action_space, teacher.action_space)
    record = _policykd_record(dataset)
    identity = teacher.identity()
    # the dataset's labels are used when this teacher made them at today's scale: else it labels the observations again
    same_teacher = (record is not None and record["teacher"].get("sha256") == identity["sha256"]
                    and same_label_scale(record["teacher"], identity))
    names = PARAM_NAMES[teacher.family]
    parts: dict[str, list[np.ndarray]] = {}
    for episode in _read_episodes(dataset, dataset_id):
        infos = episode.infos or {}
        steps = len(episode.rewards)
        fields = {"obs": episode.observations[:-1], "next_obs": episode.observations[1:], "action": episode.actions,
                  "reward": episode.rewards, "terminated": episode.terminations, "truncated": episode.truncations}
        own = ["obs", "next_obs", "action", "reward"]  # the fields whose values are the dataset's own (NaN: its damage)
        if same_teacher and all(f"teacher_{n}" in infos for n in names):
            fields.update({f"dist_{n}": infos[f"teacher_{n}"] for n in names})
            fields["value"] = infos["teacher_value"]
            fields.update({k: infos[k] for k in ("actor", "round", "episode_id")})
            own += [*(f"dist_{n}" for n in names), "value"]
        else:
            fields.update(_label(teacher, np.asarray(episode.observations[:-1], dtype=np.float32)))
            fields.update({"actor": np.zeros(steps, np.int8), "round": np.zeros(steps, np.int32),
                           "episode_id": np.full(steps, int(episode.id), np.int64)})
        actions = np.asarray(episode.actions)
        if isinstance(teacher.action_space, gym.spaces.Discrete) and len(actions) and not (
                (actions == np.round(actions)).all() and actions.min() >= 0 and actions.max() < teacher.action_space.n):
            raise PolicyKDError(f"Minari dataset {dataset_id}, episode {episode.id}: actions outside the teacher's "
                                f"{teacher.action_space} (from {actions.min()} to {actions.max()}); use a dataset of the teacher's env")
        if "row" in infos:
            fields["row"] = infos["row"]
        if "buffer_truncated" in infos:  # policykd's export: the buffer's own flags (a cut episode is marked truncated there)
            fields["truncated"] = infos["buffer_truncated"]
        for key, value in fields.items():
            value = np.asarray(value)
            if value.ndim == 0 or len(value) != steps or (key in parts and value.shape[1:] != parts[key][0].shape[1:]):
                expected = f"({steps}, ...)" if key not in parts else str((steps, *parts[key][0].shape[1:]))
                raise PolicyKDError(f"Minari dataset {dataset_id}, episode {episode.id}: {key} has shape {value.shape}, expected "
                                    f"{expected} (the episode has {steps} steps); the dataset is malformed, re-create it")
            if key in own and value.dtype.kind in "fc" and not np.isfinite(value).all():
                raise PolicyKDError(f"Minari dataset {dataset_id}, episode {episode.id}: {key} holds NaN or inf (step "
                                    f"{int(np.flatnonzero(~np.isfinite(value.reshape(steps, -1)).all(axis=1))[0])}); the dataset "
                                    "is damaged, re-create it")
            parts.setdefault(key, []).append(value)
    if not parts:
        raise PolicyKDError(f"Minari dataset {dataset_id} holds no episodes; nothing to label")
    rows = {k: np.concatenate(v) for k, v in parts.items()}
    if "row" in rows:  # exported by policykd: back in the buffer's row order
        order = np.argsort(rows.pop("row"), kind="stable")
        rows = {k: v[order] for k, v in rows.items()}
    buffer = Buffer.create(out_dir, observation_space=teacher.observation_space, action_space=teacher.action_space,
                           family=teacher.family, teacher=teacher.identity(), normalizer=teacher.normalizer.to_json(),
                           config={"from_minari": dataset_id, "labels": "dataset" if same_teacher else "teacher"},
                           transitions=True)
    buffer.append(rows)
    return buffer


def _label(teacher, obs: np.ndarray) -> dict[str, np.ndarray]:
    """The teacher's distribution parameters (dist_<name>) and value for obs [N, obs_dim]."""
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(obs), LABEL_CHUNK):
        dist, value = teacher.dist_and_value(obs[start : start + LABEL_CHUNK])
        for name in PARAM_NAMES[teacher.family]:
            out.setdefault(f"dist_{name}", []).append(dist[name].numpy())
        out.setdefault("value", []).append(value.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
