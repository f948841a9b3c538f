"""Reading rl-baselines3-zoo run folders: config.yml, args.yml, and 2021-era pickles naming `gym`.

An rl-zoo run folder looks like::

    <algo>/<env_id>_1/<env_id>.zip                 the SB3 model
    <algo>/<env_id>_1/<env_id>/config.yml          hyperparameters (normalize, env_wrapper, ...)
    <algo>/<env_id>_1/<env_id>/vecnormalize.pkl    VecNormalize statistics, when normalize is true
    <algo>/<env_id>_1/<env_id>/args.yml            the training command's arguments
    <algo>/<env_id>_1/best_model.zip               with evaluation during training (rl-zoo's --load-best)
    <algo>/<env_id>_1/rl_model_<N>_steps.zip       with --save-freq, and rl_model_vecnormalize_<N>_steps.pkl

A Hugging Face Hub snapshot of an sb3/<algo>-<env_id> repository is read as it is: <algo>-<env_id>.zip beside
config.yml, args.yml and vec_normalize.pkl in one folder.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.safe_pickle import GYM_TO_GYMNASIUM, load_vecnormalize_pickle

_GYM_TO_GYMNASIUM = GYM_TO_GYMNASIUM


def default_teachers_dir() -> Path:
    """$POLICYKD_TEACHERS, else ../shared/teachers beside the checkout: where rl-zoo run folders live (rl-zoo/<algo>/<env>_1)."""
    configured = os.environ.get("POLICYKD_TEACHERS", "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "teachers"


@contextlib.contextmanager
def gym_module_alias() -> Iterator[None]:
    """Map the old `gym` module names onto gymnasium while a legacy pickle is loaded, then undo it."""
    added = []
    for old, new in _GYM_TO_GYMNASIUM.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
            added.append(old)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


class _ZooYamlLoader(yaml.SafeLoader):
    """Safe YAML loader that understands rl-zoo's `!!python/object/apply:collections.OrderedDict`."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    (pairs,) = loader.construct_sequence(node, deep=True)
    return {key: value for key, value in pairs}


_ZooYamlLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)


def read_zoo_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_ZooYamlLoader)  # noqa: S506 - safe loader subclass
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:  # not UTF-8; a malformed OrderedDict
        raise PolicyKDError(f"{path} is not valid YAML ({e.__class__.__name__}); restore it from the rl-zoo run") from e
    if not isinstance(data, dict | None):
        raise PolicyKDError(f"{path} is not a mapping of option: value; restore it from the rl-zoo run")
    return data or {}


@dataclass(frozen=True)
class ZooRun:
    """The files of one rl-zoo run folder."""

    root: Path
    algo: str
    env_id: str
    model_zip: Path
    config: dict[str, Any]
    args: dict[str, Any]
    vecnormalize: Path | None

    @property
    def env_wrapper(self) -> str | dict | list | None:
        return self.config.get("env_wrapper")

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.args.get("env_kwargs") or {})

    @property
    def gym_packages(self) -> tuple[str, ...]:
        """The packages rl-zoo imports to register the env (args.yml gym_packages)."""
        packages = self.args.get("gym_packages") or ()
        return (packages,) if isinstance(packages, str) else tuple(packages)


def settings_folder(folder: Path) -> Path | None:
    """Where the run's args.yml / config.yml are: the sub folder rl-zoo names after the env (with several, the one a
    model in `folder` is named after), or `folder` itself when it holds args.yml (a flat Hugging Face snapshot of
    sb3/<algo>-<env>); None when there are none."""
    if (folder / "args.yml").is_file():  # args.yml, not a config.yml alone: many tools write one of those
        return folder
    subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and ((p / "args.yml").is_file() or (p / "config.yml").is_file())]
    named = [p for p in subs if (folder / f"{p.name}.zip").is_file()]
    if len(named) == 1:
        return named[0]
    return subs[0] if len(subs) == 1 else None


def is_zoo_run_model(path: Path) -> bool:
    """`path` is a model inside an rl-zoo run folder: its final model (named after the settings folder), best_model.zip,
    a checkpoint (`<prefix>_<N>_steps.zip`), any model of a folder rl-zoo named `<env_id>_<n>` or of a flat snapshot
    (args.yml beside it). A zip that merely sits beside some other run's settings folder is not one of its models."""
    if path.suffix != ".zip" or not path.is_file():
        return False
    sub = settings_folder(path.parent)
    if sub is None:
        return False
    return (sub == path.parent or path.stem == sub.name or path.name == "best_model.zip"
            or re.fullmatch(r".*_\d+_steps", path.stem) is not None
            or re.fullmatch(rf"{re.escape(sub.name)}_\d+", path.parent.name) is not None)


def _is_sb3_model(path: Path) -> bool:
    """An SB3 save (a zip with a `data` member), not another archive (the Hub's train_eval_metrics.zip)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "data" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _final_model(folder: Path, sub: Path | None) -> Path:
    """The model rl-zoo saved at the end of training, `<env_id>.zip`; else the folder's only SB3 model."""
    zips = sorted(folder.glob("*.zip"))
    if not zips:
        raise PolicyKDError(f"{folder} holds no .zip model; pass an SB3 .zip or an rl-zoo run folder")
    if sub is not None and (folder / f"{sub.name}.zip").is_file():
        return folder / f"{sub.name}.zip"
    if len(zips) == 1:
        return zips[0]
    models = [z for z in zips if _is_sb3_model(z)]
    if len(models) == 1:
        return models[0]
    names = ", ".join(z.name for z in (models or zips)[:5]) + (", ..." if len(models or zips) > 5 else "")
    raise PolicyKDError(f"{folder} holds {len(models or zips)} models ({names}) and none is the run's final one; pass the one "
                        f"to distil, e.g. {folder / (models or zips)[0].name}")


def _checkpoint_vecnormalize(model_zip: Path) -> Path | None:
    """SB3's CheckpointCallback saves `<prefix>_vecnormalize_<N>_steps.pkl` beside `<prefix>_<N>_steps.zip`."""
    match = re.fullmatch(r"(.*)_(\d+)_steps", model_zip.stem)
    if match is None:
        return None
    path = model_zip.with_name(f"{match.group(1)}_vecnormalize_{match.group(2)}_steps.pkl")
    return path if path.is_file() else None


def normalizes_observations(setting: Any) -> bool:
    """Whether rl-zoo's `normalize` hyperparameter (true/false, a {norm_obs: ..., ...} mapping, or that mapping as the
    string rl-zoo writes to config.yml) normalises observations; VecNormalize's norm_obs defaults to true."""
    if isinstance(setting, str) and setting.strip().startswith("{"):
        try:
            setting = ast.literal_eval(setting)
        except (ValueError, SyntaxError):
            return True  # unreadable: as if observations were normalised, so that the statistics are asked for
    if isinstance(setting, dict):
        return bool(setting.get("norm_obs", True))
    return bool(setting)


def find_zoo_run(folder: Path, model_zip: Path | None = None) -> ZooRun:
    """Recognise `folder` as an rl-zoo run folder (`<algo>/<env_id>_<n>/`). model_zip: one of its models (best_model.zip,
    a checkpoint) instead of the final one; a checkpoint's own VecNormalize statistics are used where SB3 saved them."""
    sub = settings_folder(folder)
    model_zip = model_zip if model_zip is not None else _final_model(folder, sub)
    sub = sub if sub is not None else folder / model_zip.stem
    config = read_zoo_yaml(sub / "config.yml") if (sub / "config.yml").exists() else {}
    args = read_zoo_yaml(sub / "args.yml") if (sub / "args.yml").exists() else {}
    algo = str(args.get("algo") or folder.parent.name).lower()
    vecnorm = _checkpoint_vecnormalize(model_zip) or next(
        (sub / name for name in ("vecnormalize.pkl", "vec_normalize.pkl") if (sub / name).exists()), sub / "vecnormalize.pkl")
    if normalizes_observations(config.get("normalize")) and not vecnorm.exists():
        raise PolicyKDError(f"{sub / 'config.yml'} says normalize: {config['normalize']} but vecnormalize.pkl is missing; copy it "
                            "from the rl-zoo run")
    return ZooRun(
        root=folder,
        algo=algo,
        env_id=str(args.get("env") or (model_zip.stem if sub == folder else sub.name)),
        model_zip=model_zip,
        config=config,
        args=args,
        vecnormalize=vecnorm if vecnorm.exists() else None,
    )


def load_vecnormalize_stats(path: Path, *, trust_pickle: bool = False) -> ObsNormalizer:
    """Read observation statistics from an SB3 VecNormalize pickle (old `gym` pickles included).

    Safe mode (default): only allowlisted types are built and no VecNormalize code runs (policykd.safe_pickle);
    trust_pickle=True: plain pickle.load, which runs whatever the file names."""
    if trust_pickle:
        try:
            with gym_module_alias(), open(path, "rb") as f:
                vec_normalize = pickle.load(f)  # noqa: S301 - the user vouched for this file (--trust-pickle)
        except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ValueError) as e:
            raise PolicyKDError(f"cannot read VecNormalize statistics {path}: {e}; the file is corrupt or truncated") from e
    else:
        vec_normalize = load_vecnormalize_pickle(path)
    try:
        if not getattr(vec_normalize, "norm_obs", False):
            return ObsNormalizer.identity(int(np.prod(vec_normalize.observation_space.shape)))
        rms = vec_normalize.obs_rms
        return ObsNormalizer(mean=rms.mean, var=rms.var, clip=float(vec_normalize.clip_obs), epsilon=float(vec_normalize.epsilon))
    except (AttributeError, TypeError, ValueError, IndexError) as e:
        raise PolicyKDError(f"{path} does not hold VecNormalize statistics ({e}); restore it from the rl-zoo run") from e
