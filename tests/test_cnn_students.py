"""CNN students (spec "conv"): an image at the start of the observation, convolutions, then the MLP; the same
deterministic action from torch, the numpy runtime, ONNX, TorchScript and the float C export."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from policykd import runtime
from policykd import student_format as fmt
from policykd.config import DistillConfig
from policykd.distill import distill
from policykd.errors import PolicyKDError
from policykd.export import export_with_parity
from policykd.students import Student, StudentSpec, load_student

RACECAR_TEACHER = Path(__file__).resolve().parents[1] / "agents" / "sac-RacecarTrack-v0"
CONV = {"image_shape": [12, 16, 3], "layers": [[4, 3, 2], [6, 3, 1]]}


def cnn_spec(family: str = "gaussian", activation: str = "tanh", conv: dict = CONV, extra_inputs: int = 2) -> StudentSpec:
    bounded = family != "categorical"
    return StudentSpec(obs_dim=int(np.prod(conv["image_shape"])) + extra_inputs, action_dim=2 if bounded else 3, family=family,
                       hidden=(16,), activation=activation, action_low=(-1.0, -2.0) if bounded else (),
                       action_high=(1.0, 2.0) if bounded else (), conv=conv)


def saved(tmp_path: Path, spec: StudentSpec, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    student = Student(spec)
    with torch.no_grad():  # a normaliser that is not the identity, so the runtimes must apply it
        student.obs_mean.uniform_(0.2, 0.6)
        student.obs_std.uniform_(0.1, 0.5)
        student.obs_clip.fill_(5.0)
    return student.save(tmp_path / f"{spec.family}-{spec.activation}")


def observations(spec: StudentSpec, n: int = 32) -> np.ndarray:
    return np.random.default_rng(1).random((n, spec.obs_dim)).astype(np.float32)


def test_the_encoder_reads_the_image_channels_last_and_appends_the_vector_entries():
    spec = cnn_spec()
    student = Student(spec)
    # 12x16 -> (12-3)//2+1 = 5 x 7 with 4 channels -> 3 x 5 with 6 channels: 90 features, then the 2 vector entries
    assert fmt.conv_shapes(spec.conv) == [(3, 12, 16), (4, 5, 7), (6, 3, 5)] and fmt.trunk_input_dim(json.loads(json.dumps(spec.__dict__))) == 92
    assert student.trunk[0].weight.shape == (16, 92)
    obs = torch.from_numpy(observations(spec, 4))
    features = student.encode(obs)
    image = student.normalize(obs)[:, :12 * 16 * 3].reshape(4, 12, 16, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(features[:, :90], student.encoder(image).flatten(1))
    torch.testing.assert_close(features[:, 90:], student.normalize(obs)[:, -2:])
    # a pixel's channels are neighbours in the observation: changing one pixel changes only what its window sees
    changed = obs.clone()
    changed[:, 0:3] += 1.0  # pixel (0, 0)
    first = student.encoder[:2](image)
    moved = student.encoder[:2](student.normalize(changed)[:, :576].reshape(4, 12, 16, 3).permute(0, 3, 1, 2))
    assert (first - moved).abs()[:, :, 0, 0].sum() > 0 and torch.equal(first[:, :, 1:, :], moved[:, :, 1:, :])


@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "categorical"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_numpy_runtime_computes_the_torch_students_actions(tmp_path, family, activation):
    spec = cnn_spec(family, activation)
    directory = saved(tmp_path, spec)
    student, policy = load_student(directory), runtime.load(directory)
    obs = observations(spec)
    expected = student.act(obs)
    if family == "categorical":
        np.testing.assert_array_equal(policy.batch(obs), expected)
        assert [policy(o) for o in obs] == list(expected)
    else:
        np.testing.assert_allclose(policy.batch(obs), expected, atol=1e-5)
        np.testing.assert_allclose(np.stack([policy(o) for o in obs]), expected, atol=1e-5)
    with pytest.raises(PolicyKDError, match=r"observation has shape \(577,\), this student takes \(578,\)"):
        policy(obs[0, :-1])


@pytest.mark.parametrize("family", ["gaussian", "categorical"])
@pytest.mark.parametrize("export_format", ["c", "onnx", "torchscript"])
def test_float_exports_of_a_cnn_student_pass_parity(tmp_path, family, export_format):
    directory = saved(tmp_path, cnn_spec(family, "relu"))
    files, parity = export_with_parity(directory, tmp_path / export_format, export_format, observations=200)
    assert parity["passed"] is True
    if family != "categorical":
        assert parity["max_abs_diff"] <= 1e-5
    if export_format == "c":  # the C export agrees with the numpy runtime on observations of the real range
        policy, c_policy = runtime.load(directory), runtime.load_c(directory, tmp_path / "c")
        obs = observations(cnn_spec(family, "relu"), 8)
        for o in obs:
            np.testing.assert_allclose(c_policy(o), policy(o), atol=1e-5)
        source = (tmp_path / "c" / "policykd_student.c").read_text()
        assert "malloc" not in source and "static float CONV_A[576], CONV_B[576]" in source


@pytest.mark.parametrize("export_format", ["c-int16", "c-int8", "onnx-int8"])
def test_quantised_exports_refuse_a_cnn_student_in_one_line(tmp_path, export_format):
    directory = saved(tmp_path, cnn_spec())
    with pytest.raises(PolicyKDError, match=f"is a CNN student and {export_format} export supports MLP students only; export it with --format c") as e:
        export_with_parity(directory, tmp_path / "out", export_format)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("conv", "message"), [
    ({"image_shape": [12, 16], "layers": [[4, 3, 2]]}, "image_shape must be three positive integers"),
    ({"image_shape": [40, 40, 3], "layers": [[4, 3, 2]]}, "has 4800 entries, more than the observation's 578"),
    ({"image_shape": [12, 16, 3], "layers": []}, "layers must be a non-empty list of"),
    ({"image_shape": [12, 16, 3], "layers": [[4, 3]]}, "layers must be a non-empty list of"),
    ({"image_shape": [12, 16, 3], "layers": [[4, 5, 4], [4, 5, 1]]}, "conv layer 1 has kernel 5, larger than its 2x3 input"),
    ({"image_shape": [12, 16, 3], "layers": [[4, 3, 2]], "padding": 1}, "spec.conv must be null or"),
])
def test_a_card_with_a_bad_conv_is_refused_in_one_line(tmp_path, conv, message):
    directory = saved(tmp_path, cnn_spec())
    card = json.loads((directory / "student.json").read_text())
    card["spec"]["conv"] = conv
    (directory / "student.json").write_text(json.dumps(card))
    for load in (load_student, runtime.load):
        with pytest.raises(PolicyKDError, match=message) as e:
            load(directory)
        assert "\n" not in str(e.value)


def test_weights_that_do_not_match_the_cards_convolutions_are_refused(tmp_path):
    directory = saved(tmp_path, cnn_spec())
    weights = load_file(str(directory / "student.safetensors"))
    weights["encoder.2.weight"] = weights["encoder.2.weight"][:, :, :2, :2].copy()
    save_file(weights, str(directory / "student.safetensors"))
    with pytest.raises(PolicyKDError, match=r"encoder.2.weight has shape \(6, 4, 2, 2\), the card's spec needs \(6, 4, 3, 3\)"):
        runtime.load(directory)


def test_recipe_conv_keys_are_checked_before_anything_runs():
    with pytest.raises(PolicyKDError, match=r"config key conv must be a list of \[channels, kernel, stride\] triples"):
        DistillConfig(teacher="x", conv=[[8, 5]])
    with pytest.raises(PolicyKDError, match="image_shape must be \\[height, width, channels\\]"):
        DistillConfig(teacher="x", conv=[[8, 5, 2]], image_shape=[48, 64])
    with pytest.raises(PolicyKDError, match="a CNN student \\(conv\\) cannot yet train quantisation-aware"):
        DistillConfig(teacher="x", conv=[[8, 5, 2]], quantise_aware_rounds=1)


def test_conv_on_a_view_without_an_image_is_one_line(tmp_path):
    config = DistillConfig(teacher=str(RACECAR_TEACHER), student_view="rays", conv=[[4, 3, 2]], labelled_steps=100, rounds=1,
                           out_dir=str(tmp_path))
    with pytest.raises(PolicyKDError, match="conv needs to know where the image is: .*view 'rays' has none"):
        distill(config)


def test_a_camera_student_is_distilled_and_runs_the_same_in_torch_numpy_and_c(tmp_path):
    config = DistillConfig(teacher=str(RACECAR_TEACHER), student_view="camera", conv=[[4, 5, 2], [8, 3, 2]], hidden=[32],
                           labelled_steps=150, rounds=2, epochs_per_round=2, label_every=1, out_dir=str(tmp_path), run_name="camera")
    result = distill(config)
    card = json.loads((result.run_dir / "student" / "student.json").read_text())
    assert card["spec"]["conv"] == {"image_shape": [48, 64, 3], "layers": [[4, 5, 2], [8, 3, 2]]}
    assert card["student_view"]["name"] == "camera" and card["spec"]["obs_dim"] == 48 * 64 * 3 + 1
    student_dir = result.run_dir / "student"
    student, policy = load_student(student_dir), runtime.load(student_dir)
    export_with_parity(student_dir, tmp_path / "c", "c", observations=50)
    c_policy = runtime.load_c(student_dir, tmp_path / "c")
    env = runtime.make_env(student_dir)  # the camera frames and speed, as the car sees them
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            action = policy(obs)
            np.testing.assert_allclose(action, student.act(obs[None])[0], atol=1e-5)
            np.testing.assert_allclose(c_policy(obs), action, atol=1e-5)
            obs, *_ = env.step(action)
    finally:
        env.close()


def test_a_camera_student_teaches_a_smaller_camera_student(tmp_path):
    """The Roach chain: privileged teacher -> camera student -> tiny camera student, which sees the same camera."""
    first = distill(DistillConfig(teacher=str(RACECAR_TEACHER), student_view="camera", conv=[[4, 5, 2], [8, 3, 2]], hidden=[32],
                                  labelled_steps=150, rounds=1, epochs_per_round=2, label_every=1, out_dir=str(tmp_path), run_name="big"))
    from policykd.teachers import load_teacher

    camera_teacher = load_teacher(first.run_dir / "student")
    assert camera_teacher.algo == "policykd-student" and camera_teacher.obs_dim == 48 * 64 * 3 + 1
    assert camera_teacher.image_shape == (48, 64, 3)
    features = camera_teacher.features(np.zeros((2, camera_teacher.obs_dim), dtype=np.float32))
    assert {name: tuple(f.shape) for name, f in features.items()} == {"encoder.1": (2, 4 * 22 * 30), "encoder.3": (2, 8 * 10 * 14),
                                                                       "trunk.1": (2, 32)}
    second = distill(DistillConfig(teacher=str(first.run_dir / "student"), conv=[[2, 5, 4]], hidden=[8], labelled_steps=120,
                                   rounds=2, epochs_per_round=2, label_every=1, attention_weight=1.0, hint_weight=1.0,
                                   hint_teacher_layer="encoder.3", out_dir=str(tmp_path), run_name="tiny"))
    assert all(0.0 < r.attention_loss < 2.0 for r in second.history)  # spatial attention maps of both CNNs compared
    assert all(0.0 < r.hint_loss < 10.0 for r in second.history)  # its convolutions' features through the regressor
    card = json.loads((second.run_dir / "student" / "student.json").read_text())
    assert card["spec"]["conv"]["image_shape"] == [48, 64, 3] and card["teacher"]["algo"] == "policykd-student"
    assert second.student.parameter_count() < first.student.parameter_count() / 5
    env = runtime.make_env(second.run_dir / "student")  # the camera again: the first student's view is this one's env
    try:
        obs, _ = env.reset(seed=1)
        assert obs.shape == (48 * 64 * 3 + 1,) and 0.0 <= obs[:-1].min() and obs[:-1].max() <= 1.0
        assert runtime.load(second.run_dir / "student")(obs).shape == (2,)
    finally:
        env.close()


def test_spatial_attention_maps_are_normalised_pooled_and_zero_for_the_same_activations():
    from policykd.transfer import attention_map, spatial_attention_loss

    activation = torch.rand(3, 8, 6, 10)
    flat = attention_map(activation)
    assert flat.shape == (3, 60)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(3))
    pooled = torch.nn.functional.avg_pool2d(activation.pow(2).mean(1, keepdim=True), 2).flatten(1)
    torch.testing.assert_close(attention_map(activation, (3, 5)), pooled / pooled.norm(dim=1, keepdim=True))
    other = torch.rand(3, 4, 3, 5)
    assert float(spatial_attention_loss([activation], [activation * 2.0])) < 1e-10  # the map's scale does not matter
    assert float(spatial_attention_loss([other, activation], [activation])) > 0.0
    with pytest.raises(PolicyKDError, match="attention_weight with a CNN student needs a CNN teacher"):
        from policykd.teachers import load_teacher
        from policykd.transfer import Transfer

        Transfer(DistillConfig(teacher="x", conv=[[4, 3, 2]], attention_weight=1.0), load_teacher(RACECAR_TEACHER), Student(cnn_spec()))
