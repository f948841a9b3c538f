"""Distillation recipes: a dataclass of every knob, read from YAML in configs/ and overridden by CLI flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policykd.errors import PolicyKDError
from policykd.yaml_files import read_yaml_mapping

DATA_MODES = ("teacher", "dagger")
KL_DIRECTIONS = ("forward", "reverse")
KL_MEAN_SCALES = ("state", "dimension", "teacher")
KL_STUDENT_STDS = ("state", "shared", "mixed")
ACTION_LOSSES = ("kl", "bc", "mse")
LR_SCHEDULES = ("constant", "cosine")
ACTIVATION_NAMES = ("relu", "tanh", "elu")  # the student activations every runtime and export implements
ENSEMBLE_MODES = ("mixture", "product")  # policykd.ensemble: how the teachers' distributions are combined per state
ENSEMBLE_WEIGHTINGS = ("uniform", "agreement", "value", "return")
BACKENDS = ("local", "ray")
GRADIENT_STEPS_PER_ROUND = 6_000  # the default recipe's target of minibatch updates per round (decided_epochs_per_round)
DECIDED_EPOCHS_RANGE = (10, 200)  # ... within this many epochs per round


@dataclass
class DistillConfig:
    teacher: str = ""
    env_id: str | None = None           # needed only for a bare SB3 zip
    algo: str | None = None             # inferred when absent
    ensemble: list[str] = field(default_factory=list)  # more teachers of the same env (paths): distil all of them into
                                        # one student (policykd.ensemble); empty: the teacher alone
    ensemble_mode: str = "mixture"      # mixture (moment-matched) or product (weighted product of experts)
    ensemble_weighting: str = "uniform"  # member weights: uniform, agreement, value (per state) or return (measured)
    seed: int = 0
    out_dir: str = "runs"
    run_name: str | None = None         # default: {env}__{data_mode}__{seed}__{time}
    # data
    data_mode: str = "dagger"           # teacher: the teacher always acts; dagger: beta-mixture per round
    labelled_steps: int = 50_000        # budget: teacher-labelled env steps, over all rounds
    rounds: int = 5
    beta0: float = 1.0                  # round r uses beta = beta0 * beta_decay**r (dagger); 1 (teacher)
    beta_decay: float = 0.5
    n_envs: int = 2                     # envs per collecting process (each its own worker process when > 1)
    backend: str = "local"              # local: collect in this process; ray: on Ray actors (policykd.ray_backend)
    num_workers: int = 2                # backend ray: rollout actors, each with n_envs envs and its own teacher copy
    ray_address: str | None = None      # backend ray: the cluster to join (None: start a local one)
    sample_actions: bool = True         # acting policy samples its distribution (broader state coverage)
    noise_scale: float = 1.0            # multiplies the acting policy's std when sampling
    label_every: int = 3                # label every k-th state of each episode (random offset), step past the rest: k times
                                        # the episodes per labelled step, for k times the env steps (docs/techniques.md)
    student_view: str = ""              # the student's view of the env when it sees less than the teacher (policykd.views),
                                        # e.g. rays on the racecar; "": the teacher's observation
    collect_max_episode_steps: int = 0  # > 0: truncate collection episodes after this many steps (more distinct
                                        # starts per labelled step; for envs that reach a goal then hold, e.g. Reacher)
    # student
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    conv: list[list[int]] = field(default_factory=list)  # CNN student: [[channels, kernel, stride], ...] convolutions (no
                                        # padding) on the image that starts the observation, before the hidden layers
    gru: int = 0                        # > 0: a recurrent student, a GRU state of this size after the hidden layers
                                        # (memory for views that see less); trained by truncated backprop through time
    tbptt_steps: int = 32               # gru: steps per truncated-backprop chunk of an episode
    image_shape: list[int] | None = None  # conv: [height, width, channels] of that image (rows, channels last); None:
                                        # the student view's own (e.g. camera: [48, 64, 3])
    # optimisation
    epochs_per_round: int | None = None  # None (null): decided per round from its data (decided_epochs_per_round); else this many
    validation_fraction: float = 0.1    # > 0: hold out this fraction of episodes; keep the epoch with the lowest held-out KL
    early_stopping_patience: int = 0    # > 0 (with validation): stop a round after this many epochs without improvement
    batch_size: int | None = None       # None (null): decided from the budget (decided_batch_size); else this many rows
    lr: float = 1e-3
    lr_schedule: str = "cosine"         # cosine: annealed to 0 over all gradient steps of the run; or constant
    kl_direction: str = "forward"
    kl_mean_scale: str = "state"        # Gaussian forward KL: the mean error weighted by 1/var_student per state (the KL),
                                        # or by one shared var per action dimension (dimension: states count alike),
                                        # or by the teacher's var per state (teacher: no escape by a wider student std)
    kl_student_std: str = "state"       # Gaussian KL: the student's std per state, or shared: one per action dimension (the
                                        # batch mean of its log_std, as hard-label BC and imitation's policies have),
                                        # or mixed: the mean of the two KLs (per-state std, plus a pull on every mean)
    std_head_detached: bool = False     # Gaussian students: the log_std head reads the trunk's features without training
                                        # them, so fitting the teacher's std per state takes no trunk capacity from the means
    tau: float = 1.0                    # temperature: teacher std * tau (Gaussian), logits / tau (categorical)
    loss: str = "kl"                    # action term: kl (soft targets), bc (hard-label NLL, as `imitation`), mse (means)
    lambda_v: float = 0.5
    hint_weight: float = 0.0            # > 0: FitNets hints, a student layer regressed onto a teacher layer (policykd.transfer)
    hint_teacher_layer: str = ""        # a name from Teacher.features(); "": the actor's last hidden activation
    hint_student_layer: int = -1        # index of the student's hidden layer (negative: from the last)
    attention_weight: float = 0.0       # > 0: match the student's input saliency to the teacher's (policykd.transfer)
    quantise_aware_rounds: int = 0      # > 0: the last this many rounds train the action path as c-int8 computes it
                                        # (int8 weights and activations, straight-through gradients)
    bounded_means: bool = True          # Gaussian teachers: compare means beyond the action bounds as the bound itself
                                        # (the env clips actions, so a mean beyond a bound acts as the bound)
    torch_threads: int = 1
    # tracking
    wandb: bool = False                 # log to Weights & Biases (offline when no API key is configured)
    wandb_project: str = "policykd"
    tensorboard: bool = False           # scalars into RUN_DIR/tensorboard
    # evaluation after distillation
    eval_episodes: int = 20
    eval_every_round: int = 0           # > 0: also evaluate the student on this many seeds after each round (curve)
    eval_seed: int = 1_000_000
    latency_calls: int = 2_000
    rollout_steps: int = 0              # > 0: film teacher and student on eval_seed for this many steps (PNG + GIF)

    trust_pickle: bool = False          # load teacher pickles without the allowlist (only for files you trust)

    def __post_init__(self) -> None:
        validate(self)

    def beta(self, round_index: int) -> float:
        """Probability that the teacher acts at a step of round `round_index`."""
        if self.data_mode == "teacher":
            return 1.0
        return self.beta0 * self.beta_decay**round_index

    def round_steps(self, round_index: int) -> int:
        """Labelled steps collected in round `round_index` (the budget split evenly, remainder last)."""
        base = self.labelled_steps // self.rounds
        return base + (self.labelled_steps - base * self.rounds if round_index == self.rounds - 1 else 0)

    def decided_batch_size(self) -> int:
        """batch_size, or when None the default recipe's: a power of two near labelled_steps / 64, within [64, 256]
        (10k steps: 128, 20k and more: 256), so that small budgets still get many updates per epoch."""
        if self.batch_size is not None:
            return self.batch_size
        return int(min(max(2 ** round(math.log2(self.labelled_steps / 64)), 64), 256))

    def decided_epochs_per_round(self, round_index: int) -> int:
        """epochs_per_round, or when None the default recipe's for round `round_index`: about GRADIENT_STEPS_PER_ROUND
        minibatch updates on the rows gathered by then (rounds 0..round_index), within DECIDED_EPOCHS_RANGE, so the
        first rounds' small data is fitted as far as the last round's (10k steps: 200, 188, 128, 96, 76 epochs; 50k:
        150, 76, 51, 39, 31). With validation on (the default) the epoch with the lowest held-out KL is kept, so extra
        epochs cannot overfit the student that is returned."""
        if self.epochs_per_round is not None:
            return self.epochs_per_round
        rows = sum(self.round_steps(r) for r in range(round_index + 1))
        batches = math.ceil(rows / self.decided_batch_size())
        low, high = DECIDED_EPOCHS_RANGE
        return int(min(max(math.ceil(GRADIENT_STEPS_PER_ROUND / batches), low), high))

    def decisions(self) -> dict[str, Any]:
        """What this run uses for the keys the default recipe decides (written in the run record): epochs per round
        (one entry per round) and batch size."""
        return {"epochs_per_round": [self.decided_epochs_per_round(r) for r in range(self.rounds)],
                "batch_size": self.decided_batch_size(),
                "decided_from_budget": [k for k in ("epochs_per_round", "batch_size") if getattr(self, k) is None]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> DistillConfig:
    """Defaults <- YAML file <- overrides (None values in overrides are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        values = read_yaml_mapping(path, what="config", examples="configs/distill/")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(values, source=str(path) if path is not None else "the flags")


MAX_SEED = 2**32 - 1  # numpy and gymnasium seeds; torch.manual_seed overflowed beyond 2**64 (the catch-all)
MAX_ENVS = 256  # n_envs: each env is a worker process; thousands would exhaust the machine before the first step

# -- validation: every key checked when the config is built, before any teacher is loaded or folder created --------

_CHOICES: dict[str, tuple[str, ...]] = {
    "data_mode": DATA_MODES, "kl_direction": KL_DIRECTIONS, "kl_mean_scale": KL_MEAN_SCALES, "kl_student_std": KL_STUDENT_STDS, "loss": ACTION_LOSSES, "lr_schedule": LR_SCHEDULES, "activation": ACTIVATION_NAMES,
    "ensemble_mode": ENSEMBLE_MODES, "ensemble_weighting": ENSEMBLE_WEIGHTINGS, "backend": BACKENDS,
}
# (minimum, minimum is inclusive) per numeric key; no entry: any value of the right type
_MINIMUM: dict[str, tuple[float, bool]] = {
    "seed": (0, True), "labelled_steps": (1, True), "rounds": (1, True), "n_envs": (1, True), "epochs_per_round": (1, True),
    "batch_size": (1, True), "torch_threads": (1, True), "collect_max_episode_steps": (0, True), "label_every": (1, True), "num_workers": (1, True), "eval_episodes": (1, True),
    "eval_every_round": (0, True), "eval_seed": (0, True), "latency_calls": (10, True), "rollout_steps": (0, True),
    "lr": (0.0, False), "tau": (0.0, False), "lambda_v": (0.0, True), "noise_scale": (0.0, True),
    "beta0": (0.0, True), "beta_decay": (0.0, True), "validation_fraction": (0.0, True), "early_stopping_patience": (0, True),
    "quantise_aware_rounds": (0, True), "hint_weight": (0.0, True), "gru": (0, True), "tbptt_steps": (1, True), "attention_weight": (0.0, True),
}
MAX_EVAL_EPISODES = 100_000       # per policy; each episode's return, length and seed are kept and written
MAX_LATENCY_CALLS = 10_000_000    # timed calls per latency path; each call's time is kept (80 MB at the maximum)
_MAXIMUM = {"beta0": 1.0, "beta_decay": 1.0, "validation_fraction": 0.5, "n_envs": MAX_ENVS, "seed": MAX_SEED,
            "eval_seed": MAX_SEED, "eval_episodes": MAX_EVAL_EPISODES, "latency_calls": MAX_LATENCY_CALLS}
_HINTS = {"hidden": "a list of positive layer widths, e.g. [64, 64]",
          "ensemble": "a list of teacher paths (rl-zoo run folders, agents/ folders or SB3 zips), e.g. [teachers/a2c/ENV_1]", "labelled_steps": "a whole number of env steps, e.g. 20000"}


def _type_error(name: str, value: Any, expected: str) -> PolicyKDError:
    hint = _HINTS.get(name, expected)
    return PolicyKDError(f"config key {name} must be {hint}, got {value!r}; fix it in the recipe or the flag")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """The value converted to the field's declared type, or a one-line error naming the key."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None:
        if optional:
            return None
        raise _type_error(name, value, f"a {base}")
    if base == "bool":
        if not isinstance(value, bool):
            raise _type_error(name, value, "true or false")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise _type_error(name, value, "a whole number")
        return int(value)
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise _type_error(name, value, "a finite number")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise _type_error(name, value, "a string")
        return value
    if base == "list[int]":
        if not isinstance(value, (list, tuple)) or not value or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
            raise _type_error(name, value, "a list of positive whole numbers")
        return [int(v) for v in value]
    if base == "list[list[int]]":
        if not isinstance(value, (list, tuple)) or any(
                not isinstance(row, (list, tuple)) or len(row) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in row)
                for row in value):
            raise _type_error(name, value, "a list of [channels, kernel, stride] triples of positive whole numbers, e.g. [[8, 5, 2], [16, 3, 2]]")
        return [[int(v) for v in row] for row in value]
    if base == "list[str]":
        if not isinstance(value, (list, tuple)) or any(not isinstance(v, str) or not v.strip() for v in value):
            raise _type_error(name, value, "a list of non-empty strings")
        return [str(v) for v in value]
    raise AssertionError(f"no validation for {name}: {annotation}")  # a new field needs a rule here


def is_plain_folder_name(name: str) -> bool:
    """A name that stays one folder inside its parent: no separators, no '..', not absolute, not hidden, no control
    characters (a newline or tab in a folder name breaks every log and shell command that names it)."""
    return (bool(name) and name not in (".", "..") and not any(c in name for c in "/\\") and not name.startswith(".")
            and name.isprintable())


def check_run_name(name: str) -> None:
    """A run name is a folder name inside out_dir."""
    if not is_plain_folder_name(name):
        raise PolicyKDError(f"run_name {name!r} must be a plain folder name (no '/', no '..', not absolute); "
                            "choose where runs go with --out-dir")


MAX_HIDDEN_WIDTH = 8_192  # units per hidden layer: students are compact (a 8192x8192 layer is already 67M weights)
MAX_HIDDEN_LAYERS = 64


def validate(config: DistillConfig) -> None:
    """Check and normalise every field of `config` in place; raises PolicyKDError (one line) on the first bad one."""
    for f in dataclasses.fields(config):
        name = f.name
        value = _coerce(name, getattr(config, name), str(f.type))
        object.__setattr__(config, name, value)
        if value is None:
            continue
        if name in _CHOICES and value not in _CHOICES[name]:
            raise PolicyKDError(f"config key {name} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
        if name in _MINIMUM:
            low, inclusive = _MINIMUM[name]
            if value < low or (value == low and not inclusive):
                bound = f">= {low:g}" if inclusive else f"> {low:g}"
                raise PolicyKDError(f"config key {name} must be {bound}, got {value!r}")
        if name in _MAXIMUM and value > _MAXIMUM[name]:
            raise PolicyKDError(f"config key {name} must be <= {_MAXIMUM[name]}, got {value!r}")
    if config.run_name is not None:
        check_run_name(config.run_name)
    if not config.out_dir.strip():
        raise PolicyKDError("config key out_dir is empty; name the folder runs go in (default: runs)")
    if config.loss != "kl":
        for key, neutral in (("kl_direction", "forward"), ("tau", 1.0)):
            if getattr(config, key) != neutral:
                raise PolicyKDError(f"{key} {getattr(config, key)!r} shapes the KL to the teacher's distribution, which loss "
                                    f"{config.loss!r} does not use; use loss: kl or leave {key} at {neutral!r}")
    if max(config.hidden) > MAX_HIDDEN_WIDTH or len(config.hidden) > MAX_HIDDEN_LAYERS:
        raise PolicyKDError(f"hidden {config.hidden} is beyond a student policykd trains (at most {MAX_HIDDEN_LAYERS} layers of "
                            f"at most {MAX_HIDDEN_WIDTH:,} units; a 2x64 student matches most teachers); give smaller widths")
    if config.backend == "local" and (config.ray_address is not None or config.num_workers != DistillConfig.num_workers):
        given = [key for key, default in (("num_workers", DistillConfig.num_workers), ("ray_address", None))
                 if getattr(config, key) != default]
        raise PolicyKDError(f"{' and '.join(given)} (--num-workers, --address) {'is' if len(given) == 1 else 'are'} for backend: "
                            "ray, which is not given; add --backend ray or drop them")
    if not -len(config.hidden) <= config.hint_student_layer < len(config.hidden):
        raise PolicyKDError(f"hint_student_layer must index the student's {len(config.hidden)} hidden layers "
                            f"(-{len(config.hidden)} to {len(config.hidden) - 1}), got {config.hint_student_layer}")
    for key in ("kl_mean_scale", "kl_student_std"):
        if getattr(config, key) != "state" and (config.loss != "kl" or config.kl_direction != "forward"):
            raise PolicyKDError(f"{key} {getattr(config, key)!r} changes the forward KL; it needs loss: kl and kl_direction: "
                                f"forward (or leave {key} at 'state')")
    if config.kl_student_std == "mixed" and config.kl_mean_scale != "state":
        raise PolicyKDError(f"kl_student_std 'mixed' averages two plain KLs, which kl_mean_scale {config.kl_mean_scale!r} would "
                            "replace; leave kl_mean_scale at 'state' or choose kl_student_std 'state' or 'shared'")
    if config.quantise_aware_rounds > config.rounds:
        raise PolicyKDError(f"quantise_aware_rounds ({config.quantise_aware_rounds}) must be at most rounds ({config.rounds})")
    if config.student_view:
        from policykd.views import parse_view

        parse_view(config.student_view)
    if config.student_view and (config.hint_weight > 0 or config.attention_weight > 0):
        raise PolicyKDError(f"student_view {config.student_view!r} gives the student other inputs than the teacher's, "
                            "which hints and attention transfer compare layer by layer; set hint_weight and attention_weight to 0")
    if config.image_shape is not None and len(config.image_shape) != 3:
        raise PolicyKDError(f"config key image_shape must be [height, width, channels], got {config.image_shape}")
    if config.image_shape is not None and not config.conv:
        raise PolicyKDError("image_shape tells a CNN student where its image is, but conv is empty (an MLP student); "
                            "set conv, e.g. [[8, 5, 2], [16, 3, 2]], or drop image_shape")
    if config.conv and config.quantise_aware_rounds > 0:
        raise PolicyKDError("a CNN student (conv) cannot yet train quantisation-aware; set quantise_aware_rounds to 0 "
                            "(its int8 exports are refused too: deploy it as c, onnx or torchscript)")
    if config.gru and config.label_every != 1:
        raise PolicyKDError(f"a recurrent student (gru: {config.gru}) trains on whole episodes, every step labelled; set label_every: 1")
    if config.gru and (config.quantise_aware_rounds > 0 or config.hint_weight > 0 or config.attention_weight > 0 or config.ensemble):
        raise PolicyKDError("a recurrent student (gru) cannot yet train quantisation-aware, with hints or attention, or from an "
                            "ensemble; set quantise_aware_rounds, hint_weight and attention_weight to 0 and use one teacher")
    if config.labelled_steps < config.rounds:
        raise PolicyKDError(f"labelled_steps ({config.labelled_steps}) must be at least rounds ({config.rounds})")
    _refuse_unused_keys(config)


def _set(config: DistillConfig, *keys: str) -> list[str]:
    """Those of `keys` the recipe or flags set to other than their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig)}
    return [key for key in keys if getattr(config, key) != defaults[key]]


def _named(keys: list[str], config: DistillConfig, verb: str) -> str:
    """'beta0 0.5 and beta_decay 0.9 set': the keys with the values given, and the verb agreeing with them."""
    return " and ".join(f"{key} {getattr(config, key)!r}" for key in keys) + f" {verb}{'' if len(keys) > 1 else 's'}"


def _refuse_unused_keys(config: DistillConfig) -> None:
    """Keys set to other than their default that the rest of the recipe makes no-ops: one line naming them."""
    unused = _set(config, "beta0", "beta_decay") if config.data_mode == "teacher" else []
    if unused:
        raise PolicyKDError(f"{_named(unused, config, 'set')} DAgger's beta per round, but data_mode: teacher always lets the "
                            f"teacher act (beta 1); use data_mode: dagger or drop {'them' if len(unused) > 1 else 'it'}")
    if config.early_stopping_patience > 0 and config.validation_fraction == 0:
        raise PolicyKDError(f"early_stopping_patience {config.early_stopping_patience} stops a round on the held-out KL, but "
                            "validation_fraction is 0 (nothing held out), so it never triggers; set validation_fraction "
                            "above 0 (e.g. 0.1) or early_stopping_patience: 0")
    if not config.gru and _set(config, "tbptt_steps"):
        raise PolicyKDError(f"tbptt_steps {config.tbptt_steps} chunks a recurrent student's backprop through time, but gru "
                            "is 0 (a feed-forward student); set gru above 0 (e.g. 64) or drop tbptt_steps")
    unused = _set(config, "ensemble_mode", "ensemble_weighting") if not config.ensemble else []
    if unused:
        raise PolicyKDError(f"{_named(unused, config, 'combine')} the teachers of an ensemble, but ensemble is empty (one "
                            f"teacher); list the other teachers in ensemble or drop {'them' if len(unused) > 1 else 'it'}")
    if not config.sample_actions and _set(config, "noise_scale"):
        raise PolicyKDError(f"noise_scale {config.noise_scale:g} scales the acting policy's sampling noise, but "
                            "sample_actions is false (the acting policy takes its mode); set sample_actions: true or "
                            "drop noise_scale")
    unused = _set(config, "hint_teacher_layer", "hint_student_layer") if config.hint_weight == 0 else []
    if unused:
        raise PolicyKDError(f"{_named(unused, config, 'choose')} the layers of the FitNets hint, but hint_weight is 0 (no hint "
                            f"term); set hint_weight above 0 (e.g. 1) or drop {'them' if len(unused) > 1 else 'it'}")


def build_config(values: dict[str, Any], *, source: str = "the config") -> DistillConfig:
    """A validated DistillConfig from a mapping of keys (unknown keys refused, listing the valid ones)."""
    known = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(values) - known, key=str)  # YAML keys may be numbers or null too
    if unknown:
        raise PolicyKDError(f"unknown config keys {unknown} in {source}; valid keys: {', '.join(sorted(known))}")
    return DistillConfig(**values)
