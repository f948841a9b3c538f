"""The saved student format, without torch: file names, the card, weight names and shapes, activations, and the
checks every runtime applies to what it loads and to the observations it is given.

A student folder holds two files:

    student.safetensors   the weights (float32), named as below
    student.json          the card: {"format": "policykd-student", "format_version": 1, "spec": {...}, ...}
                          (plus provenance: "teacher" with its "env" record, "config", "history", ...)

Weights (the state_dict of students.Student, whose trunk is Sequential(Linear, act, Linear, act, ...)):

    obs_mean [obs_dim], obs_std [obs_dim], obs_clip []    raw obs -> clip((obs - mean) / std, -clip, clip)
    action_low [A], action_high [A]                       env action bounds ([0] for categorical students)
    value_mean [], value_std []                           scale of the value head's output
    encoder.{2i}.weight [c_i, c_(i-1), k_i, k_i], encoder.{2i}.bias [c_i]    (CNN students only, see below)
    trunk.{2i}.weight [hidden[i], in_i], trunk.{2i}.bias [hidden[i]]      (in_0 = obs_dim, in_i = hidden[i - 1])
    gru.weight_ih [3G, hidden[-1]], gru.weight_hh [3G, G], gru.bias_ih [3G], gru.bias_hh [3G]   (recurrent only)
    action_head.weight [action_dim, hidden[-1]], action_head.bias [action_dim]
    log_std_head.weight, log_std_head.bias                (gaussian and squashed_gaussian only; as action_head)
    value_head.weight [1, hidden[-1]], value_head.bias [1]

CNN students (spec "conv": {"image_shape": [H, W, C], "layers": [[c_1, k_1, s_1], ...]}): the first H * W * C
entries of the (normalised) observation are an image, row by row with channels last (as policykd's camera views
give it); the rest are vector inputs (e.g. speed). The image goes through the convolutions (no padding, stride s_i,
each followed by the activation), is flattened channel-first ([c, h, w], as torch flattens), and the vector inputs
are appended: in_0 = c_n * h_n * w_n + obs_dim - H * W * C (conv_output_shape gives [c_n, h_n, w_n]).

Recurrent students (spec "gru": G): a GRU cell (torch.nn.GRUCell; gates r, z, n in that order) after the hidden
layers carries a state h [G] from step to step, zero at the start of every episode; the heads read the new state
(their input width is G instead of hidden[-1]):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h

Every runtime keeps the state itself (reset() to start an episode; the C export's policykd_reset()).

Every tensor must be finite, except obs_clip, which is +inf when observations are not clipped; obs_std must be
positive. The card's action bounds and normaliser (when it has one; null for a student that fits its own) must equal
the weights' to float32 rounding. `read_student` (used by students.load_student and runtime.load) checks the card
against the weights and raises PolicyKDError in one line naming the file.

Observations: every Python runtime (torch Student.act / predict, runtime.NumpyPolicy, runtime.CPolicy) raises
errors.InvalidObservation (a PolicyKDError and a ValueError) for an observation of any other shape than the one it
takes (nothing is broadcast or reshaped), for non-numbers, and for NaN or +-inf entries; the C export's
policykd_act returns -1 for NaN/inf entries.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policykd.distributions import FAMILIES, family_strategy
from policykd.errors import InvalidObservation, PolicyKDError

WEIGHTS_FILE = "student.safetensors"
CARD_FILE = "student.json"
SPEC_METADATA_KEY = "policykd_spec"  # safetensors metadata: the spec the weights were saved with (spec_metadata)
CARD_FORMAT = "policykd-student"
CARD_VERSION = 1

# Buffer names.
OBS_MEAN, OBS_STD, OBS_CLIP = "obs_mean", "obs_std", "obs_clip"
# Every runtime clips the normalised observation to +-min(obs_clip, NORMALISED_LIMIT): no real observation lies 1e15
# standard deviations out, and the bound keeps every layer's sums finite in float32 (an observation near float32's
# largest value, e.g. a driver's FLT_MAX for "no reading", would otherwise overflow the first layer into a NaN action).
NORMALISED_LIMIT = 1e15


def effective_clip(obs_clip: float) -> float:
    """The bound every runtime clips the normalised observation to (obs_clip is +inf for a student without one)."""
    return min(float(obs_clip), NORMALISED_LIMIT)
ACTION_LOW, ACTION_HIGH = "action_low", "action_high"
VALUE_MEAN, VALUE_STD = "value_mean", "value_std"
BUFFER_NAMES = (OBS_MEAN, OBS_STD, OBS_CLIP, ACTION_LOW, ACTION_HIGH, VALUE_MEAN, VALUE_STD)
# Module names (each a Linear: "<name>.weight", "<name>.bias").
TRUNK, ACTION_HEAD, LOG_STD_HEAD, VALUE_HEAD = "trunk", "action_head", "log_std_head", "value_head"
ENCODER = "encoder"  # CNN students: Sequential(Conv2d, act, Conv2d, act, ...)
GRU = "gru"  # recurrent students: GRUCell(hidden[-1], G)
GRU_WEIGHTS = (f"{GRU}.weight_ih", f"{GRU}.weight_hh", f"{GRU}.bias_ih", f"{GRU}.bias_hh")
ACTION_HEAD_WEIGHT, ACTION_HEAD_BIAS = f"{ACTION_HEAD}.weight", f"{ACTION_HEAD}.bias"


def trunk_index(i: int) -> int:
    """Position of the i-th hidden Linear in the trunk Sequential (each Linear is followed by its activation)."""
    return 2 * i


def trunk_weight_name(i: int) -> str:
    """Name of the i-th hidden layer's weight [hidden[i], in_i]."""
    return f"{TRUNK}.{trunk_index(i)}.weight"


def trunk_bias_name(i: int) -> str:
    """Name of the i-th hidden layer's bias [hidden[i]]."""
    return f"{TRUNK}.{trunk_index(i)}.bias"


def encoder_weight_name(i: int) -> str:
    """Name of the i-th convolution's weight [c_out, c_in, k, k] (CNN students)."""
    return f"{ENCODER}.{trunk_index(i)}.weight"


def encoder_bias_name(i: int) -> str:
    """Name of the i-th convolution's bias [c_out] (CNN students)."""
    return f"{ENCODER}.{trunk_index(i)}.bias"


def conv_shapes(conv: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """[c, h, w] of the image and of every convolution's output, first to last (no padding)."""
    height, width, channels = conv["image_shape"]
    shapes = [(channels, height, width)]
    for out_channels, kernel, stride in conv["layers"]:
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
        shapes.append((out_channels, height, width))
    return shapes


def conv_output_shape(spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """[c, h, w] of the last convolution's output of a CNN student's (valid) spec."""
    return conv_shapes(spec["conv"])[-1]


def trunk_input_dim(spec: Mapping[str, Any]) -> int:
    """in_0: obs_dim for an MLP student; the flattened image features plus the vector inputs for a CNN student."""
    conv = spec.get("conv")
    if not conv:
        return spec["obs_dim"]
    c, h, w = conv_output_shape(spec)
    return c * h * w + spec["obs_dim"] - int(np.prod(conv["image_shape"]))


def recurrent_size(spec: Mapping[str, Any]) -> int:
    """G, the size of a recurrent student's GRU state; 0 for a feed-forward student."""
    return int(spec.get("gru") or 0)


def layer_names(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(weight, bias) names of the layers that compute the action: the hidden layers, then the action head."""
    return [(trunk_weight_name(i), trunk_bias_name(i)) for i in range(len(spec["hidden"]))] + [(ACTION_HEAD_WEIGHT, ACTION_HEAD_BIAS)]


# Activations: name -> numpy function on a float32 array, computed in place and returned. students.py keys its
# torch modules and c_codegen.py its C expressions by the same names (tests check all three agree).


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)


def _elu(x: np.ndarray) -> np.ndarray:
    """x if x > 0 else expm1(x) (torch.nn.ELU with alpha 1)."""
    negative = np.expm1(np.minimum(x, 0.0))  # 0 where x > 0
    np.maximum(x, 0.0, out=x)
    x += negative  # exactly one of the two terms is non-zero
    return x


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": _tanh, "relu": _relu, "elu": _elu}
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)

_SPEC_REQUIRED = ("obs_dim", "action_dim", "family", "hidden", "activation", "action_low", "action_high")
_SPEC_OPTIONAL = ("normalizer", "extra", "conv", "gru")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    """A real number that converts to a float (an int beyond float's range, e.g. 10**400, does not)."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _prefix(source: str | None) -> str:
    return f"{source}: " if source else ""


def validate_spec(spec: Any, source: str | None = None) -> None:
    """Check a student spec (the card's "spec", or a StudentSpec as a dict): keys, types and consistency.

    source names the file in the one-line PolicyKDError (None for a spec built in code)."""
    where = _prefix(source)
    if not isinstance(spec, Mapping):
        raise PolicyKDError(f"{where}spec must be a JSON object, got {type(spec).__name__}")
    missing = [k for k in _SPEC_REQUIRED if k not in spec]
    if missing:
        raise PolicyKDError(f"{where}spec lacks {', '.join(missing)}; re-export the student")
    unknown = sorted(set(spec) - set(_SPEC_REQUIRED) - set(_SPEC_OPTIONAL))
    if unknown:
        raise PolicyKDError(f"{where}spec has unknown keys {', '.join(map(str, unknown))} (written by a newer policykd?)")
    for key in ("obs_dim", "action_dim"):
        if not _is_int(spec[key]) or spec[key] <= 0:
            raise PolicyKDError(f"{where}spec.{key} must be a positive integer, got {spec[key]!r}")
    if not isinstance(spec["family"], str) or spec["family"] not in FAMILIES:
        raise PolicyKDError(f"{where}unknown student family {spec['family']!r}; use one of {', '.join(FAMILIES)}")
    if not isinstance(spec["activation"], str) or spec["activation"] not in ACTIVATIONS:
        raise PolicyKDError(f"{where}unknown activation {spec['activation']!r}; use one of {', '.join(ACTIVATION_NAMES)}")
    hidden = spec["hidden"]
    if not isinstance(hidden, (list, tuple)) or not hidden or not all(_is_int(h) and h > 0 for h in hidden):
        raise PolicyKDError(f"{where}student hidden sizes must be positive integers, got {list(hidden) if isinstance(hidden, (list, tuple)) else hidden!r}")
    bounds_dim = 0 if family_strategy(spec["family"]).discrete else spec["action_dim"]
    for key in ("action_low", "action_high"):
        bound = spec[key]
        if not isinstance(bound, (list, tuple)) or not all(_is_number(v) for v in bound):
            raise PolicyKDError(f"{where}spec.{key} must be a list of numbers, got {bound!r}")
        if len(bound) != bounds_dim:
            what = "empty for a categorical student" if bounds_dim == 0 else f"{bounds_dim} numbers (action_dim)"
            raise PolicyKDError(f"{where}spec.{key} has {len(bound)} entries, it must be {what}")
        if not all(math.isfinite(v) for v in bound):
            raise PolicyKDError(f"{where}spec.{key} must be finite, got {list(bound)}; a student needs a bounded action space")
    if any(lo > hi for lo, hi in zip(spec["action_low"], spec["action_high"])):
        raise PolicyKDError(f"{where}spec.action_low exceeds spec.action_high somewhere: {list(spec['action_low'])} > {list(spec['action_high'])}")
    normalizer = spec.get("normalizer")
    if normalizer is not None:
        if not isinstance(normalizer, Mapping) or any(k not in normalizer for k in ("mean", "var", "clip", "epsilon")):
            raise PolicyKDError(f"{where}spec.normalizer must be null or an object with mean, var, clip and epsilon")
        for key in ("mean", "var"):
            values = normalizer[key]
            if not isinstance(values, (list, tuple)) or len(values) != spec["obs_dim"] or not all(_is_number(v) for v in values):
                raise PolicyKDError(f"{where}spec.normalizer.{key} must be {spec['obs_dim']} numbers (obs_dim)")
            if not all(math.isfinite(v) and (key == "mean" or v >= 0) for v in values):
                raise PolicyKDError(f"{where}spec.normalizer.{key} must be finite{' and non-negative' if key == 'var' else ''}")
        if not (normalizer["clip"] is None or _is_number(normalizer["clip"])) or not _is_number(normalizer["epsilon"]):
            raise PolicyKDError(f"{where}spec.normalizer.clip must be a number or null and epsilon a number")
    if not isinstance(spec.get("extra", {}), Mapping):
        raise PolicyKDError(f"{where}spec.extra must be an object")
    if spec.get("conv") is not None:
        validate_conv(spec["conv"], spec["obs_dim"], source)
    gru = spec.get("gru")
    if gru is not None and not (_is_int(gru) and gru >= 0):
        raise PolicyKDError(f"{where}spec.gru must be the size of a GRU state (a positive integer) or 0 for none, got {gru!r:.40}")


def validate_conv(conv: Any, obs_dim: int, source: str | None = None) -> None:
    """Check a CNN student's "conv" ({"image_shape": [H, W, C], "layers": [[channels, kernel, stride], ...]}) against
    obs_dim: positive integers, an image that fits in the observation, every layer's output at least 1x1."""
    where = _prefix(source)
    if not isinstance(conv, Mapping) or set(conv) != {"image_shape", "layers"}:
        raise PolicyKDError(f"{where}spec.conv must be null or {{\"image_shape\": [H, W, C], \"layers\": [[channels, kernel, stride], ...]}}")
    image, layers = conv["image_shape"], conv["layers"]
    if not isinstance(image, (list, tuple)) or len(image) != 3 or not all(_is_int(v) and v > 0 for v in image):
        raise PolicyKDError(f"{where}conv image_shape must be three positive integers [height, width, channels], got {image!r:.80}")
    if int(np.prod(image)) > obs_dim:
        raise PolicyKDError(f"{where}conv image_shape {list(image)} has {int(np.prod(image))} entries, more than the "
                            f"observation's {obs_dim}; the image must be the observation's first H * W * C entries")
    if (not isinstance(layers, (list, tuple)) or not layers
            or not all(isinstance(layer, (list, tuple)) and len(layer) == 3 and all(_is_int(v) and v > 0 for v in layer) for layer in layers)):
        raise PolicyKDError(f"{where}conv layers must be a non-empty list of [channels, kernel, stride] positive integers, "
                            f"e.g. [[8, 5, 2], [16, 3, 2]], got {layers!r:.80}")
    height, width = image[0], image[1]
    for i, (_, kernel, stride) in enumerate(layers):
        if kernel > height or kernel > width:
            raise PolicyKDError(f"{where}conv layer {i} has kernel {kernel}, larger than its {height}x{width} input; "
                                "use fewer layers, smaller kernels or strides")
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1


def validate_card(card: Any, source: str | None = CARD_FILE) -> None:
    """Check a card dict without the weights: format, version, and the spec."""
    where = _prefix(source)
    if not isinstance(card, Mapping) or card.get("format") != CARD_FORMAT:
        raise PolicyKDError(f"{source or 'card'} is not a policykd student card (no \"format\": {CARD_FORMAT!r})")
    version = card.get("format_version")
    if not _is_int(version) or version < 1:
        raise PolicyKDError(f"{where}format_version must be a positive integer, got {version!r}")
    if version > CARD_VERSION:
        raise PolicyKDError(f"{where}card format version {version} is newer than this policykd reads ({CARD_VERSION}); upgrade policykd")
    if "spec" not in card:
        raise PolicyKDError(f"{where}the card lacks its spec; re-export the student")
    validate_spec(card["spec"], source)
    view_name(card, source)
    validate_teacher_record(card.get("teacher"), source)


_TEACHER_RECORD_STRINGS = ("path", "algo", "sha256", "family")


def validate_teacher_record(teacher: Any, source: str | None = CARD_FILE) -> None:
    """The card's teacher record (absent for a hand-built student): an object whose path, algo, sha256 and family are
    strings (an ensemble's path: its members' paths), env an object with a string env_id, members a list of records."""
    if teacher is None:
        return
    where = _prefix(source)
    if not isinstance(teacher, Mapping):
        raise PolicyKDError(f"{where}teacher must be an object (the teacher's record), got {type(teacher).__name__}; re-export the student")
    ensemble = teacher.get("members") is not None
    for key in _TEACHER_RECORD_STRINGS:
        value = teacher.get(key)
        if key == "path" and ensemble:  # an ensemble's record: the members' paths
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise PolicyKDError(f"{where}teacher.path of an ensemble must be a list of strings, got {value!r:.60}; re-export the student")
        elif value is not None and not isinstance(value, str):
            raise PolicyKDError(f"{where}teacher.{key} must be a string, got {value!r:.60}; re-export the student")
    env = teacher.get("env")
    if env is not None and not (isinstance(env, Mapping) and isinstance(env.get("env_id"), str)):
        raise PolicyKDError(f"{where}teacher.env must be an object with a string env_id, got {env!r:.80}; re-export the student")
    members = teacher.get("members")
    if members is not None:
        if not isinstance(members, list):
            raise PolicyKDError(f"{where}teacher.members must be a list of teacher records, got {type(members).__name__}")
        for member in members:
            validate_teacher_record(member, source)


def view_name(card: Mapping[str, Any], source: str | None = CARD_FILE, *, resolving: bool = False) -> str:
    """The student view (policykd.views) the card's student sees, "" for the teacher's observation. resolving: the
    caller is about to build the view, which policykd does only for views an env provides (NAME or NAME*k), never
    for an import path a card names (that would run code the card names)."""
    view = card.get("student_view")
    if view is None:
        return ""
    name = view.get("name") if isinstance(view, Mapping) else None
    if not isinstance(name, str) or not name or len(name) > 200:
        raise PolicyKDError(f"{_prefix(source)}student_view must be {{\"name\": VIEW}}, e.g. rays or rays*3, got {view!r:.120}")
    if resolving and ":" in name:
        raise PolicyKDError(f"{_prefix(source)}the student sees view {name!r}, an import path; policykd does not import code a "
                            "card names: build its env with policykd.views.StudentViewObservation(env, VIEW) yourself")
    return name


def expected_shapes(spec: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of a student with this (valid) spec, name -> shape."""
    obs_dim, action_dim, hidden = spec["obs_dim"], spec["action_dim"], list(spec["hidden"])
    strategy = family_strategy(spec["family"])
    bounds = 0 if strategy.discrete else action_dim
    shapes: dict[str, tuple[int, ...]] = {
        OBS_MEAN: (obs_dim,), OBS_STD: (obs_dim,), OBS_CLIP: (), ACTION_LOW: (bounds,), ACTION_HIGH: (bounds,),
        VALUE_MEAN: (), VALUE_STD: (),
    }
    if spec.get("conv"):
        for i, ((c_in, _, _), (c_out, kernel, _)) in enumerate(zip(conv_shapes(spec["conv"]), spec["conv"]["layers"])):
            shapes[encoder_weight_name(i)], shapes[encoder_bias_name(i)] = (c_out, c_in, kernel, kernel), (c_out,)
    width = trunk_input_dim(spec)
    for i, h in enumerate(hidden):
        shapes[trunk_weight_name(i)], shapes[trunk_bias_name(i)] = (h, width), (h,)
        width = h
    if recurrent_size(spec):
        g = recurrent_size(spec)
        shapes.update(dict(zip(GRU_WEIGHTS, [(3 * g, width), (3 * g, g), (3 * g,), (3 * g,)])))
        width = g
    shapes[ACTION_HEAD_WEIGHT], shapes[ACTION_HEAD_BIAS] = (action_dim, width), (action_dim,)
    if strategy.has_log_std:
        shapes[f"{LOG_STD_HEAD}.weight"], shapes[f"{LOG_STD_HEAD}.bias"] = (action_dim, width), (action_dim,)
    shapes[f"{VALUE_HEAD}.weight"], shapes[f"{VALUE_HEAD}.bias"] = (1, width), (1,)
    return shapes


def _names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def validate_weights(spec: Mapping[str, Any], weights: Mapping[str, Any], *, weights_name: str = WEIGHTS_FILE,
                     card_name: str = CARD_FILE) -> None:
    """Check the weights (name -> array) against a valid spec: names, shapes, float dtypes, finite values."""
    expected = expected_shapes(spec)
    missing = [n for n in expected if n not in weights]
    unexpected = sorted(n for n in weights if n not in expected)
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise PolicyKDError(f"{weights_name} does not match the architecture in {card_name}: {'; '.join(parts)}")
    for name, shape in expected.items():
        array = np.asarray(weights[name])
        if tuple(array.shape) != shape:
            raise PolicyKDError(f"{weights_name} does not match the architecture in {card_name}: {name} has shape "
                                f"{tuple(array.shape)}, the card's spec needs {shape}")
        if array.dtype.kind != "f":
            raise PolicyKDError(f"{weights_name}: {name} has dtype {array.dtype}, a student's weights are floats")
        if name == OBS_CLIP:
            clip = float(array)
            if not clip > 0:  # also refuses NaN; +inf means "no clipping"
                raise PolicyKDError(f"{weights_name}: obs_clip is {clip}, it must be positive (inf: no clipping); re-export the student")
            continue
        finite = np.isfinite(array)
        if not finite.all():
            raise PolicyKDError(f"{weights_name} holds non-finite weights: {name} has {int(array.size - finite.sum())} NaN/inf "
                                f"entries (a diverged training run or a damaged file); re-distil or re-export the student")
        if name == OBS_STD and not (array > 0).all():
            raise PolicyKDError(f"{weights_name}: obs_std must be positive, it has {int((array <= 0).sum())} entries <= 0")
    _check_weights_agree_with_card(spec, weights, weights_name, card_name)


def _card_values(spec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """What the card's spec says the action bounds and (when it has one) the normaliser tensors hold."""
    values = {ACTION_LOW: np.asarray(spec["action_low"], np.float64), ACTION_HIGH: np.asarray(spec["action_high"], np.float64)}
    normalizer = spec.get("normalizer")
    if normalizer:  # null for a student that fits its own (a student view): the weights alone hold it
        values[OBS_MEAN] = np.asarray(normalizer["mean"], np.float64)
        values[OBS_STD] = np.sqrt(np.asarray(normalizer["var"], np.float64) + float(normalizer["epsilon"]))
        values[OBS_CLIP] = np.asarray(np.inf if normalizer["clip"] is None else float(normalizer["clip"]))
    return values


def _check_weights_agree_with_card(spec: Mapping[str, Any], weights: Mapping[str, Any], weights_name: str, card_name: str) -> None:
    """The card and the weights are written together: action bounds and normaliser must agree (to float32 rounding),
    else one of the two was edited or swapped and the runtimes (which act on the weights) would not do what the card
    (which evaluation and deployment read) says."""
    for name, expected in _card_values(spec).items():
        actual = np.asarray(weights[name], np.float64)
        if expected.shape != actual.shape or not np.allclose(actual, expected.astype(np.float32), rtol=1e-5, atol=1e-6):
            raise PolicyKDError(f"{weights_name} and {card_name} disagree on {name} (weights {_short(actual)}, card "
                                f"{_short(expected)}): one of them was edited or comes from another student; re-export the student")


def _short(values: np.ndarray, limit: int = 4) -> str:
    flat = [f"{v:.4g}" for v in np.asarray(values, np.float64).reshape(-1)]
    return "[" + ", ".join(flat[:limit]) + (f", ... ({len(flat)} values)" if len(flat) > limit else "") + "]"


def not_a_student_folder(path: Path) -> PolicyKDError:
    """The error for a folder without a student's card and weights; a multi-task student (policykd.multitask) is named as one."""
    if (path / "multitask.json").is_file():
        return PolicyKDError(f"{path} is a multi-task student (`policykd distill-multi`), and this takes a single-task student "
                             "folder; load it in Python with policykd.multitask.load_multitask, or distil one task with `policykd distill`")
    return PolicyKDError(f"{path} is not a student folder (needs {CARD_FILE} and {WEIGHTS_FILE}); pass a folder written by `policykd distill`")


def read_card(path: str | Path) -> dict[str, Any]:
    """The checked card of a student folder (or the card file itself)."""
    path = Path(path)
    card_path = path / CARD_FILE if path.is_dir() else path
    if not card_path.exists():
        raise not_a_student_folder(path)
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PolicyKDError(f"{card_path} is corrupt ({e}); re-export the student") from e
    except RecursionError as e:
        raise PolicyKDError(f"{card_path} is corrupt (nested too deeply to read); re-export the student") from e
    except OSError as e:
        raise PolicyKDError(f"cannot read {card_path} ({e.strerror or e})") from e
    validate_card(card, str(card_path))
    return card


def read_student(directory: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(card, weights as numpy arrays) of a student folder, the card checked against the weights. Never unpickles."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not isinstance(directory, (str, os.PathLike)):
        raise PolicyKDError(f"a student folder is a path (str or pathlib.Path), got {type(directory).__name__}")
    directory = Path(directory)
    card_path, weights_path = directory / CARD_FILE, directory / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise not_a_student_folder(directory)
    card = read_card(card_path)
    try:
        weights = load_file(str(weights_path))
        with safe_open(str(weights_path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PolicyKDError(f"{weights_path} is not a readable safetensors file ({detail}); re-export the student") from e
    validate_weights(card["spec"], weights, weights_name=str(weights_path), card_name=CARD_FILE)
    _check_spec_agrees_with_weights(card["spec"], metadata, str(weights_path))
    return card, weights


def spec_metadata(spec: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors metadata a student's weights carry: its spec as JSON, so that a card edited afterwards (an
    activation, a family, a stride: nothing the weights' shapes would show) is caught at load."""
    return {SPEC_METADATA_KEY: json.dumps(spec, sort_keys=True)}


def _check_spec_agrees_with_weights(spec: Mapping[str, Any], metadata: Mapping[str, str], weights_name: str) -> None:
    """The card's spec must be the one saved with the weights (students saved before the weights carried it: not checked)."""
    if SPEC_METADATA_KEY not in metadata:
        return
    try:
        saved = json.loads(metadata[SPEC_METADATA_KEY])
    except ValueError as e:
        raise PolicyKDError(f"{weights_name} holds an unreadable spec in its metadata; re-export the student") from e
    card = json.loads(json.dumps(spec, sort_keys=True))
    differ = sorted(k for k in set(saved) | set(card) if saved.get(k) != card.get(k)) if isinstance(saved, dict) else ["spec"]
    if differ:
        key = differ[0]
        shown = "" if not isinstance(saved, dict) else f" (weights {_brief(saved.get(key))}, card {_brief(card.get(key))})"
        raise PolicyKDError(f"{weights_name} was saved with another spec than {CARD_FILE} holds: {', '.join(differ)} differ{shown}; "
                            "the card was edited or comes from another student; re-export the student")


def _brief(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def env_record(card: Mapping[str, Any], source: str = "the student's card") -> dict[str, Any]:
    """The card's teacher.env record (policykd.env_factory.EnvSpec.to_json), or a one-line PolicyKDError."""
    teacher = card.get("teacher")
    env = teacher.get("env") if isinstance(teacher, Mapping) else None
    if not isinstance(env, Mapping) or not isinstance(env.get("env_id"), str):
        raise PolicyKDError(f"{source} has no teacher env record (teacher.env with env_id, env_kwargs, wrappers), so the "
                            f"env cannot be rebuilt; build it yourself, as the teacher was trained")
    return dict(env)


# Observations.


def non_finite_error(array: np.ndarray, what: str = "observation") -> InvalidObservation:
    """The error for an observation array with NaN/inf entries (naming the first)."""
    bad = np.argwhere(~np.isfinite(array))
    first = tuple(int(i) for i in bad[0])
    where = first[0] if len(first) == 1 else list(first)
    more = f" ({len(bad)} non-finite entries)" if len(bad) > 1 else ""
    return InvalidObservation(f"{what} entry {where} is {array[first]}{more}; NaN/inf observations are refused")


def as_float32(obs: Any, what: str = "observation") -> np.ndarray:
    """obs as a float32 array (no copy when it is one), or InvalidObservation for non-numbers, masked arrays and
    floats beyond float32's range. Shape unchecked."""
    if isinstance(obs, np.ma.MaskedArray) and np.ma.is_masked(obs):
        raise InvalidObservation(f"{what} is a masked array with masked entries, whose values would be used as they are; "
                                 "fill them first (obs.filled(value))")
    try:
        array = np.asarray(obs)
    except (TypeError, ValueError) as e:
        raise InvalidObservation(f"{what} must be an array of numbers ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if array.dtype.kind not in "biuf":
        raise InvalidObservation(f"{what} must be an array of numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
        cast = array.astype(np.float32, copy=False)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and not np.isfinite(cast).all():
        beyond = np.isfinite(array) & ~np.isfinite(cast)
        if beyond.any():
            first = tuple(int(i) for i in np.argwhere(beyond)[0])
            raise InvalidObservation(f"{what} entry {first[0] if len(first) == 1 else list(first)} is {array[first]:.3g}, beyond "
                                     "float32's range (+-3.4e38) that students compute in; check the env or its units")
    return cast


def check_observation(obs: Any, obs_dim: int, *, batch_hint: str = "", finite: bool = True) -> np.ndarray:
    """One observation [obs_dim] (array-like of numbers) -> float32 [obs_dim]. Raises InvalidObservation on any other
    shape (a scalar, a flat array of another length, a batch), on non-numbers and (unless finite=False) on NaN/inf
    entries. batch_hint is appended to the message for a [B, obs_dim] batch."""
    array = as_float32(obs, "observation")
    if array.shape != (obs_dim,):
        hint = batch_hint if array.ndim == 2 and array.shape[1] == obs_dim else ""
        raise InvalidObservation(f"observation has shape {array.shape}, this student takes ({obs_dim},){hint}")
    if finite and not np.isfinite(array).all():
        raise non_finite_error(array, "observation")
    return array


def check_observations(obs: Any, obs_dim: int) -> np.ndarray:
    """A batch of observations [B, obs_dim] -> float32 [B, obs_dim]; raises as check_observation does."""
    array = as_float32(obs, "observations")
    if array.ndim != 2 or array.shape[1] != obs_dim:
        hint = " (one observation: pass obs[None])" if array.shape == (obs_dim,) else ""
        raise InvalidObservation(f"observations have shape {array.shape}, this student takes [B, {obs_dim}]{hint}")
    if not np.isfinite(array).all():
        raise non_finite_error(array, "observation")
    return array
