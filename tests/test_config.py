import dataclasses

import pytest

from policykd.config import ACTIVATION_NAMES, DistillConfig, build_config, check_run_name, load_config
from policykd.errors import PolicyKDError
from policykd.student_format import ACTIVATION_NAMES as RUNTIME_ACTIVATIONS


@pytest.mark.parametrize("key, value, message", [
    ("labelled_steps", "many", "whole number"),
    ("labelled_steps", 1000.7, "whole number"),
    ("labelled_steps", True, "whole number"),
    ("rounds", 0, ">= 1"),
    ("hidden", 64, "list of positive layer widths"),
    ("hidden", [], "list of positive layer widths"),
    ("hidden", [64, "x"], "list of positive layer widths"),
    ("kl_direction", "sideways", "one of forward, reverse"),
    ("data_mode", "bc", "one of teacher, dagger"),
    ("activation", "swish", "one of"),
    ("lr_schedule", "linear", "one of constant, cosine"),
    ("eval_episodes", 0, ">= 1"),
    ("latency_calls", 5, ">= 10"),
    ("lr", 0.0, "> 0"),
    ("lr", float("inf"), "finite"),
    ("tau", -1.0, "> 0"),
    ("lambda_v", -0.1, ">= 0"),
    ("beta0", 1.01, "<= 1"),
    ("beta_decay", -0.5, ">= 0"),
    ("wandb", "yes", "true or false"),
    ("wandb", 1, "true or false"),
    ("teacher", 3, "a string"),
    ("env_id", ["CartPole-v1"], "a string"),
    ("seed", -1, ">= 0"),
    ("run_name", "../x", "plain folder name"),
    ("batch_size", 0, ">= 1"),
    ("epochs_per_round", 0, ">= 1"),
    ("label_every", 0, ">= 1"),
    ("num_workers", 0, ">= 1"),
    ("backend", "spark", "one of local, ray"),
    ("hint_weight", -1.0, ">= 0"),
    ("attention_weight", float("nan"), "finite"),
    ("hint_student_layer", 5, "index the student's 2 hidden layers"),
    ("quantise_aware_rounds", 6, "at most rounds"),
    ("validation_fraction", 0.9, "<= 0.5"),
    ("hidden", [100_000_000], r"at most 64 layers of at most 8,192 units"),
    ("num_workers", 7, r"\(--num-workers, --address\) is for backend: ray, which is not given"),
    ("ray_address", "1.2.3.4:1", r"\(--num-workers, --address\) is for backend: ray"),
])
def test_every_key_is_validated_when_the_config_is_built(key, value, message):
    with pytest.raises(PolicyKDError, match=f"{key}.*{message}" if key != "run_name" else message):
        DistillConfig(**{"teacher": "t", key: value})


def test_every_field_has_a_validation_rule():
    """A new field without a rule fails here, not in a user's hands."""
    DistillConfig(teacher="t")
    assert {f.name for f in dataclasses.fields(DistillConfig)}


def test_values_are_normalised():
    config = DistillConfig(teacher="t", labelled_steps=2e4, lr=1, hidden=(32, 32))
    assert (config.labelled_steps, type(config.labelled_steps)) == (20000, int)
    assert isinstance(config.lr, float) and config.hidden == [32, 32]


def test_unknown_keys_name_the_source_and_the_valid_keys(tmp_path):
    with pytest.raises(PolicyKDError, match=r"unknown config keys \['nokey'\] in --grid.*valid keys: .*labelled_steps"):
        build_config({"teacher": "t", "nokey": 1}, source="--grid")
    path = tmp_path / "r.yaml"
    path.write_text("teacher: t\nlabeled_steps: 5\n")
    with pytest.raises(PolicyKDError, match=f"in {path}"):
        load_config(path, {})


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "..\\x", ".hidden"])
def test_run_names_are_plain_folder_names(name):
    with pytest.raises(PolicyKDError, match="plain folder name"):
        check_run_name(name)


def test_config_activations_are_the_ones_every_runtime_implements():
    assert set(ACTIVATION_NAMES) == set(RUNTIME_ACTIVATIONS)


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads `lr: 3e-4` as the string '3e-4': refused as 'must be a finite number, got '3e-4''."""
    from policykd.config import load_config
    from policykd.sweep import parse_grid

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 3e-4\nlabelled_steps: 1e5\nrounds: 5\nlambda_v: -0\n")
    config = load_config(recipe, {})
    assert config.lr == 3e-4 and config.labelled_steps == 100_000 and isinstance(config.labelled_steps, int)
    assert parse_grid(["lr=3e-4|1E-3|2.5e-4", "labelled_steps=2e4"]) == {"lr": [3e-4, 1e-3, 2.5e-4], "labelled_steps": [20_000.0]}
    recipe.write_text("seed: 1e-3\n")
    with pytest.raises(PolicyKDError, match=r"seed must be a whole number, got 0\.001"):
        load_config(recipe, {})
    with pytest.raises(PolicyKDError, match=r"--grid 'hidden=\[32': '\[32' is not a YAML value"):
        parse_grid(["hidden=[32"])


@pytest.mark.parametrize("keys, message", [
    ({"data_mode": "teacher", "beta0": 0.5}, r"beta0 0\.5 sets DAgger's beta per round, but data_mode: teacher .*use data_mode: dagger or drop it"),
    ({"data_mode": "teacher", "beta0": 0.8, "beta_decay": 0.9}, r"beta0 0\.8 and beta_decay 0\.9 set DAgger's beta.*drop them"),
    ({"data_mode": "teacher", "beta_decay": 0.7}, r"beta_decay 0\.7 sets DAgger's beta"),
    ({"early_stopping_patience": 3, "validation_fraction": 0.0}, r"early_stopping_patience 3 .*validation_fraction is 0 .*never triggers"),
    ({"tbptt_steps": 16}, r"tbptt_steps 16 .*gru is 0 .*set gru above 0 .*or drop tbptt_steps"),
    ({"ensemble_mode": "product"}, r"ensemble_mode 'product' combines the teachers of an ensemble, but ensemble is empty"),
    ({"ensemble_mode": "product", "ensemble_weighting": "value"}, r"ensemble_mode 'product' and ensemble_weighting 'value' combine"),
    ({"noise_scale": 1.5, "sample_actions": False}, r"noise_scale 1\.5 .*sample_actions is false .*drop noise_scale"),
    ({"hint_teacher_layer": "pi.0"}, r"hint_teacher_layer 'pi\.0' chooses the layers of the FitNets hint, but hint_weight is 0"),
    ({"hint_student_layer": 0}, r"hint_student_layer 0 chooses .*hint_weight is 0 .*set hint_weight above 0"),
])
def test_keys_the_rest_of_the_recipe_makes_no_ops_are_refused(keys, message):
    with pytest.raises(PolicyKDError, match=message):
        DistillConfig(teacher="t", **keys)


@pytest.mark.parametrize("keys", [
    {"data_mode": "teacher"}, {"data_mode": "dagger", "beta0": 0.5, "beta_decay": 0.9},
    {"data_mode": "teacher", "beta0": 1.0, "beta_decay": 0.5},  # the defaults, written out
    {"early_stopping_patience": 3}, {"validation_fraction": 0.0},
    {"gru": 8, "label_every": 1, "tbptt_steps": 16}, {"tbptt_steps": 32},
    {"ensemble": ["t2"], "ensemble_mode": "product", "ensemble_weighting": "value"},
    {"sample_actions": False}, {"noise_scale": 1.5},
    {"hint_weight": 1.0, "hint_teacher_layer": "pi.0", "hint_student_layer": 0},
])
def test_meaningful_combinations_and_written_out_defaults_are_kept(keys):
    DistillConfig(teacher="t", **keys)


def test_a_yaml_merge_key_reads_as_yaml_does_and_its_keys_may_be_overridden(tmp_path):
    """`<<: *base` is YAML's merge key, not a key given twice."""
    from policykd.yaml_files import read_yaml_mapping

    path = tmp_path / "recipe.yaml"
    path.write_text("defaults: &d {lr: 0.001, tau: 2.0}\n<<: *d\ntau: 3.0\n")
    assert read_yaml_mapping(path, what="config", examples="configs/distill/") == {"defaults": {"lr": 0.001, "tau": 2.0}, "lr": 0.001, "tau": 3.0}
