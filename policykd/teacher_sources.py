"""Where a teacher comes from: a policykd agents/ folder, an rl-zoo run folder or a bare SB3 zip.

`resolve_source` recognises the three, reads the algorithm (model card, rl-zoo args.yml, or inferred from
the zip's saved hyperparameters), the env to rebuild and the observation statistics; an explicit `algo`
that contradicts what the checkpoint holds is a one-line error. Nothing here unpickles a model zip;
VecNormalize statistics are read in safe mode unless trust_pickle=True (see policykd.safe_pickle).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from policykd.env_factory import EnvSpec, parse_wrappers
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.zoo import ZooRun, find_zoo_run, is_zoo_run_model, load_vecnormalize_stats

ON_POLICY = ("ppo", "a2c", "trpo")
SQUASHED = ("sac", "tqc", "crossq")
DETERMINISTIC = ("td3", "ddpg")
Q_BASED = ("dqn", "qrdqn")
SEARCH_BASED = ("ars",)  # a policy found by random search: no value function, no action distribution
ALGOS = ON_POLICY + SQUASHED + DETERMINISTIC + Q_BASED + SEARCH_BASED
ALGO_NAMES = {"crossq": "CrossQ", "qrdqn": "QR-DQN"}  # as the libraries spell them; the rest in capitals
MODEL_CARD = "model_card.json"
UNSUPPORTED_ZOO_SETTINGS = ("frame_stack", "vec_env_wrapper")  # rl-zoo's VecEnv-level observation changes

# Algorithms whose checkpoints are interchangeable (DDPG is TD3 with policy_delay=1 and one critic).
_SAME_CHECKPOINT = ({"td3", "ddpg"},)
# Policy modules that name the algorithm outright (on-policy algorithms share stable_baselines3.common.policies).
_POLICY_MODULE_ALGO = (
    ("sb3_contrib.qrdqn", "qrdqn"), ("sb3_contrib.tqc", "tqc"), ("sb3_contrib.crossq", "crossq"), ("sb3_contrib.ars", "ars"), ("stable_baselines3.sac", "sac"),
    ("stable_baselines3.td3", "td3"), ("stable_baselines3.ddpg", "td3"), ("stable_baselines3.dqn", "dqn"),
)


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class for an algorithm name."""
    import sb3_contrib
    import stable_baselines3 as sb3

    classes = {
        "ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG, "dqn": sb3.DQN,
        "trpo": sb3_contrib.TRPO, "tqc": sb3_contrib.TQC, "crossq": sb3_contrib.CrossQ, "qrdqn": sb3_contrib.QRDQN,
        "ars": sb3_contrib.ARS,
    }
    if not isinstance(algo, str) or algo not in classes:
        raise PolicyKDError(f"unknown algorithm {algo!r}; policykd loads {', '.join(ALGOS)}")
    return classes[algo]


def read_zip_data(model_zip: Path) -> dict[str, Any]:
    """The parsed "data" JSON of an SB3 zip (hyperparameters; pickled entries stay base64 strings)."""
    return parse_zip_data(model_zip, _read_bytes(model_zip))


def _read_bytes(model_zip: Path) -> bytes:
    try:
        return Path(model_zip).read_bytes()
    except FileNotFoundError as e:
        raise PolicyKDError(f"teacher file {model_zip} does not exist; check the path") from e
    except IsADirectoryError as e:
        raise PolicyKDError(f"{model_zip} is a folder, not an SB3 .zip; pass the .zip or the run folder") from e


def parse_zip_data(model_zip: Path, raw: bytes) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            if "data" not in archive.namelist() and any(name.endswith("/data.pkl") for name in archive.namelist()):
                raise PolicyKDError(f"{model_zip} is a torch archive (as policy.save() or torch.save write), not a whole SB3 "
                                    "model; save the model with model.save(PATH) and pass that .zip")
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, EOFError, ValueError, RecursionError) as e:
        raise PolicyKDError(f"{model_zip} is not a readable SB3 checkpoint ({e}); re-download or re-save it") from e
    if not isinstance(data, dict):
        raise PolicyKDError(f"{model_zip} is not a readable SB3 checkpoint (its data is not a JSON object); re-download or re-save it")
    return data


def read_checkpoint(model_zip: Path) -> tuple[bytes, dict[str, Any]]:
    """The zip's bytes and its parsed data, read once (so what is checked is what gets loaded)."""
    raw = _read_bytes(model_zip)
    return raw, parse_zip_data(model_zip, raw)


def policy_class_name(data: dict[str, Any]) -> str:
    """`module.Class` of the saved policy, read from the JSON description SB3 writes next to the pickle."""
    entry = data.get("policy_class")
    if not isinstance(entry, dict):
        return "an unknown policy"
    module = str(entry.get("__module__", "?"))
    match = re.search(r"<function (\w+)\.__init__", str(entry.get("__init__", "")))
    return f"{module}.{match.group(1)}" if match else module


# Policy modules of checkpoints policykd cannot distil, with why: a one-line refusal instead of a wrong teacher.
_UNSUPPORTED_POLICY_MODULES = (
    (("sb3_contrib.common.recurrent", "sb3_contrib.ppo_recurrent"),
     "a RecurrentPPO (LSTM) checkpoint: its action depends on a hidden state carried across steps, which policykd's "
     "teachers do not have yet"),
    (("sb3_contrib.common.maskable", "sb3_contrib.ppo_mask"),
     "a MaskablePPO checkpoint: its actions are chosen under per-state action masks from the env, which a student "
     "without the masks would not respect"),
)


def check_supported_policy(data: dict[str, Any], model_zip: Path) -> None:
    """Fail in one line for checkpoints policykd cannot distil (whatever --algo says): algorithms it does not load,
    and observations that are not one flat Box (goal-conditioned HER teachers, MultiInputPolicy), read from the type
    SB3 writes beside the pickled space, so nothing is unpickled to refuse them."""
    entry = data.get("policy_class")
    policy_module = str(entry.get("__module__", "")) if isinstance(entry, dict) else ""
    for prefix, why in _UNSUPPORTED_POLICY_MODULES:
        if policy_module.startswith(prefix):
            raise PolicyKDError(f"{model_zip} is {why}; policykd distils {', '.join(ALGO_NAMES.get(a, a.upper()) for a in ALGOS)} teachers")
    space = data.get("observation_space")
    space_type = str(space.get(":type:", "")) if isinstance(space, dict) else ""
    match = re.search(r"spaces\.\w+\.(Dict|Tuple|Graph|Sequence|Text)'", space_type)
    if match:
        raise PolicyKDError(f"{model_zip} observes a {match.group(1)} space (a goal-conditioned HER or MultiInputPolicy "
                            "teacher); policykd distils teachers of one flat Box observation")


def infer_algo_from_data(data: dict[str, Any]) -> str | None:
    """The algorithm that saved this "data" JSON, or None when it cannot be told."""
    entry = data.get("policy_class")
    policy_module = str(entry.get("__module__", "")) if isinstance(entry, dict) else ""
    for prefix, algo in _POLICY_MODULE_ALGO:
        if policy_module.startswith(prefix):
            return "ddpg" if algo == "td3" and _is_ddpg(data) else algo
    keys = set(data)
    if "qrdqn" in policy_module:
        return "qrdqn"
    if "tqc" in policy_module or "top_quantiles_to_drop_per_net" in keys:
        return "tqc"
    if "n_delta" in keys and "delta_std" in keys:
        return "ars"
    if "exploration_rate" in keys or "exploration_final_eps" in keys:
        return "dqn"
    if "target_entropy" in keys or "ent_coef_optimizer" in keys:
        return "sac"
    if "policy_delay" in keys:
        return "ddpg" if _is_ddpg(data) else "td3"
    if "cg_max_steps" in keys or "target_kl" in keys and "n_critic_updates" in keys:
        return "trpo"
    if "n_epochs" in keys and "clip_range" in keys:
        return "ppo"
    if "n_steps" in keys:
        return "a2c"
    return None


def _is_ddpg(data: dict[str, Any]) -> bool:
    """SB3's DDPG is TD3 (same policy class) with policy_delay 1 and no target policy smoothing (target_noise_clip 0)."""
    return data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0


def infer_algo(model_zip: Path) -> str:
    """Guess the algorithm of a bare SB3 zip from the policy class and hyperparameters it saved."""
    data = read_zip_data(model_zip)
    check_supported_policy(data, model_zip)
    algo = infer_algo_from_data(data)
    if algo is None:
        raise PolicyKDError(f"cannot tell which algorithm saved {model_zip}; pass --algo (one of {', '.join(ALGOS)})")
    return algo


def check_algo(model_zip: Path, requested: str, *, recorded: str | None = None, recorded_where: str = "") -> None:
    """Fail in one line when `requested` contradicts the algorithm the checkpoint holds."""
    algo_class(requested)  # unknown names first
    if recorded is not None and not _compatible(requested, recorded):
        raise PolicyKDError(f"{recorded_where} says the teacher is {recorded}, not {requested}; "
                            f"drop --algo or pass --algo {recorded}")
    data = read_zip_data(model_zip)
    check_supported_policy(data, model_zip)
    actual = infer_algo_from_data(data)
    if actual is not None and not _compatible(requested, actual):
        raise PolicyKDError(f"{model_zip} holds a {actual.upper()} checkpoint (policy {policy_class_name(data)}), "
                            f"not {requested}; pass --algo {actual} or leave --algo out")


def _compatible(a: str, b: str) -> bool:
    return a == b or any(a in group and b in group for group in _SAME_CHECKPOINT)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [e.__class__.__name__])[0][:160]


def _checked_env(env: EnvSpec) -> EnvSpec:
    """The env record with the types EnvSpec.make needs (a str id and wrapper paths, str kwargs names), else TypeError."""
    if not isinstance(env.env_id, str) or not all(isinstance(k, str) for k in env.env_kwargs) or not all(
            isinstance(w.path, str) and isinstance(w.kwargs, dict) and all(isinstance(k, str) for k in w.kwargs) for w in env.wrappers):
        raise TypeError(f"env {str(env.env_id)[:40]!r}: ids, wrapper paths and keyword names must be strings")
    return env


def read_model_card(card_path: Path, *, trusted: bool = False) -> tuple[dict[str, Any], EnvSpec, ObsNormalizer | None]:
    """(card, env, normaliser) of an agents/ folder's model_card.json, checked; one-line PolicyKDError otherwise.
    trusted: its env may name wrappers from any module (env_factory.wrapper_class)."""
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PolicyKDError(f"{card_path} is corrupt ({e.__class__.__name__}); restore the agent folder") from e
    if not isinstance(card, dict) or not isinstance(card.get("model_file"), str) or not isinstance(card.get("algo"), str):
        raise PolicyKDError(f"{card_path} lacks its model_file or algo; restore the agent folder")
    try:
        env = _checked_env(EnvSpec.from_json(card["env"], trusted=trusted))
        normalizer = ObsNormalizer.from_json(card["normalizer"]) if card.get("normalizer") else None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise PolicyKDError(f"{card_path} has a malformed env or normalizer ({e.__class__.__name__}: {_first_line(e)}); "
                            f"restore the agent folder") from e
    return card, env, normalizer


@dataclass(frozen=True)
class TeacherSource:
    """Where a teacher came from and how to rebuild its env."""

    path: Path
    model_zip: Path
    algo: str
    env: EnvSpec
    normalizer: ObsNormalizer | None
    card: dict[str, Any]
    trust_pickle: bool = False


def _zoo_source(path: Path, run: ZooRun, *, algo: str | None, env_id: str | None, trust_pickle: bool) -> TeacherSource:
    """The teacher of an rl-zoo run: its model, the env its args.yml / config.yml name, its VecNormalize statistics."""
    for key in UNSUPPORTED_ZOO_SETTINGS:
        if run.config.get(key):
            raise PolicyKDError(f"{path}: config.yml sets {key}: {run.config[key]}, which policykd does not apply to the "
                                f"teacher's env (its observations would differ from training); use a run trained without {key}")
    if algo is not None:
        check_algo(run.model_zip, algo)
    try:
        packages = run.gym_packages
        if not all(isinstance(p, str) and p for p in packages):
            raise ValueError(f"gym_packages {list(packages)} is not a list of package names")
        env = _checked_env(EnvSpec(env_id or run.env_id, run.env_kwargs, parse_wrappers(run.env_wrapper), trust_pickle, packages))
    except (TypeError, ValueError, AttributeError) as e:
        raise PolicyKDError(f"{path}: env_kwargs or gym_packages (args.yml) or env_wrapper (config.yml) is malformed ({_first_line(e)}); "
                            f"restore them from the rl-zoo run") from e
    env.check_wrappers()
    normalizer = load_vecnormalize_stats(run.vecnormalize, trust_pickle=trust_pickle) if run.vecnormalize else None
    recorded = run.algo if run.algo in ALGOS else infer_algo(run.model_zip)  # no args.yml, a folder not named after it
    if algo is None and run.algo in ALGOS:  # the run's record against what the checkpoint itself says it is
        data = read_zip_data(run.model_zip)
        actual = infer_algo_from_data(data)
        if actual is not None and not _compatible(run.algo, actual):
            where = "args.yml" if run.args.get("algo") else f"its folder name ({run.root.parent.name})"
            raise PolicyKDError(f"{path}: the rl-zoo run says the teacher is {run.algo} ({where}), but {run.model_zip.name} holds "
                                f"a {actual.upper()} checkpoint (policy {policy_class_name(data)}); "
                                f"pass --algo {actual} if that file is the teacher, or the run's own model")
    return TeacherSource(path, run.model_zip, algo or recorded, env, normalizer, {"config": run.config}, trust_pickle)


def resolve_source(path: str | Path, *, algo: str | None = None, env_id: str | None = None,
                   trust_pickle: bool = False) -> TeacherSource:
    """Recognise a policykd agent folder, an rl-zoo run folder (or one of its models: best_model.zip, a checkpoint),
    or a bare SB3 zip.

    trust_pickle: read vecnormalize.pkl with plain pickle (runs any code it names) instead of the allowlist, and let
    the env name wrappers from any module (env_factory.wrapper_class)."""
    path = Path(path)
    if not path.exists():
        raise PolicyKDError(f"teacher path {path} does not exist; pass an SB3 .zip, an rl-zoo run folder or an agents/ folder")
    if path.is_dir() and (path / MODEL_CARD).exists():
        card, env, normalizer = read_model_card(path / MODEL_CARD, trusted=trust_pickle)
        if env_id is not None and env_id != env.env_id:  # as for rl-zoo runs: another env, the card's kwargs and wrappers
            env = replace(env, env_id=env_id)
        env.check_wrappers()
        model_zip = path / card["model_file"]
        if algo is not None:
            check_algo(model_zip, algo, recorded=card["algo"], recorded_where=str(path / MODEL_CARD))
        return TeacherSource(path, model_zip, card["algo"], env, normalizer, card, trust_pickle)
    if path.is_dir():
        return _zoo_source(path, find_zoo_run(path), algo=algo, env_id=env_id, trust_pickle=trust_pickle)
    if is_zoo_run_model(path):  # best_model.zip or a checkpoint, read with its run's env and statistics
        return _zoo_source(path, find_zoo_run(path.parent, model_zip=path), algo=algo, env_id=env_id, trust_pickle=trust_pickle)
    if path.suffix in (".pth", ".pt"):
        raise PolicyKDError(f"{path} is a torch file (as policy.save() or torch.save write), not a whole SB3 model; save the "
                            "model with model.save(PATH) and pass that .zip")
    if path.suffix != ".zip":
        raise PolicyKDError(f"{path} is neither a .zip checkpoint nor a folder; pass an SB3 .zip or an rl-zoo run folder")
    if env_id is None:
        raise PolicyKDError(f"a bare SB3 zip does not record its env; pass --env ENV_ID for {path}")
    if algo is not None:
        check_algo(path, algo)
    return TeacherSource(path, path, algo or infer_algo(path), EnvSpec(env_id), None, {}, trust_pickle)
