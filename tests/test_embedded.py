"""Cross-compiled students under emulation (skipped, with the reason, when a toolchain is absent)."""

import numpy as np
import pytest
import torch

from policykd.embedded import load_target, missing_tools, run_on_target
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    torch.manual_seed(0)
    spec = StudentSpec(obs_dim=26, action_dim=6, family="gaussian", activation="relu", action_low=(-1.0,) * 6,
                       action_high=(1.0,) * 6, normalizer=ObsNormalizer(np.zeros(26), np.ones(26), clip=10.0).to_json())
    directory = tmp_path_factory.mktemp("student")
    Student(spec).save(directory)
    return directory


def _target_or_skip(name):
    target = load_target(name)
    missing = missing_tools(target)
    if missing:
        pytest.skip(f"{name}: {', '.join(missing)} not installed (scripts/install-toolchains.sh installs them)")
    return target


@pytest.mark.parametrize("export_format", ["c", "c-int16", "c-int8"])
@pytest.mark.parametrize("name", ["cortex-m4", "aarch64"])
def test_target_output_equals_host_and_fits(student_dir, tmp_path, name, export_format):
    target = _target_or_skip(name)
    obs = np.random.default_rng(0).normal(size=(8, 26)).astype(np.float32)
    result = run_on_target(student_dir, target, obs, tmp_path, n_infer=5, export_format=export_format)
    assert result["outputs_equal_host"], result["max_abs_diff_vs_host"]  # same C, IEEE floats, exact integer sums
    weight_bytes = (26 * 64 + 64 * 64 + 64 * 6) * {"c": 4, "c-int16": 2, "c-int8": 1}[export_format]
    assert weight_bytes <= result["flash_bytes"] < 64 * 1024  # the weights are in flash
    assert result["ram_bytes"] < 4 * 1024
    if name == "cortex-m4":
        assert 6_000 < result["instructions_per_inference"] < 100_000  # at least one instruction per MAC
        assert result["us_per_inference"] == pytest.approx(result["cycles_per_inference"] / 168.0, rel=1e-9)


@pytest.mark.parametrize("export_format, kernel", [("c", "policykd_m4_mac8"), ("c-int8", "policykd_m4_dense_s8")])
def test_cortex_m_kernels_are_linked_and_match_the_portable_c_on_every_shape(tmp_path, export_format, kernel):
    """The hand-written Cortex-M4 loops (policykd/c_cortex_m.py) against the host's portable C: float layer inputs
    below, at and past a multiple of 4 (the kernel takes the first multiple of 4, C the rest), odd and even numbers
    of int8 input groups (one group alone, pairs, pairs and one), one and several 4-row blocks."""
    import subprocess

    target = _target_or_skip("cortex-m4")
    torch.manual_seed(0)
    for obs_dim, hidden in ((3, (4,)), (5, (9, 16)), (12, (33, 8))):
        spec = StudentSpec(obs_dim=obs_dim, action_dim=2, family="gaussian", hidden=hidden, action_low=(-1.0, -1.0),
                           action_high=(1.0, 1.0))
        directory = Student(spec).save(tmp_path / f"s{obs_dim}")
        obs = np.random.default_rng(obs_dim).normal(size=(4, obs_dim)).astype(np.float32)
        work = tmp_path / f"build{obs_dim}"
        result = run_on_target(directory, target, obs, work, n_infer=1, export_format=export_format)
        assert result["outputs_equal_host"], (obs_dim, result["max_abs_diff_vs_host"])
        assert len({tuple(row) for row in result["host_outputs"]}) == 4  # the observations reach the actions
        symbols = subprocess.run([target["compiler"].replace("gcc", "nm"), str(work / "firmware.elf")], capture_output=True,
                                 text=True, check=True).stdout
        assert kernel in symbols  # the firmware runs the hand-written loop, not the portable C


def test_unknown_target_is_reported():
    with pytest.raises(PolicyKDError, match="unknown target 'esp32'.*cortex-m4"):
        load_target("esp32")


def test_a_target_with_an_unknown_key_is_refused_naming_it(tmp_path):
    """A typo in an optional key (flash_byte for flash_bytes) silently dropped the flash check."""
    from importlib import resources

    board = tmp_path / "typo.yaml"
    board.write_text((resources.files("policykd") / "targets" / "cortex-m4.yaml").read_text().replace("flash_bytes:", "flash_byte:"))
    with pytest.raises(PolicyKDError, match=r"unknown key 'flash_byte' \(a typo would drop its check\); the keys are .*flash_bytes"):
        load_target(board)


def test_targets_ship_in_the_package_and_load_by_name_or_path(tmp_path):
    """The built-in targets are package data (policykd/targets/), found through importlib.resources."""
    from importlib import resources

    from policykd.embedded import target_names

    assert {"cortex-m4", "aarch64"} <= set(target_names())
    assert (resources.files("policykd") / "targets" / "cortex-m4.yaml").is_file()
    assert load_target("cortex-m4")["kind"] == "mcu" and load_target("aarch64")["kind"] == "linux"
    custom = tmp_path / "board.yaml"
    custom.write_text(BOARD)
    assert load_target(custom)["name"] == "board" and load_target(str(custom))["emulator"] == ["qemu-aarch64"]
    with pytest.raises(PolicyKDError, match="target file .*missing.yaml not found"):
        load_target(tmp_path / "missing.yaml")


BOARD = ("name: board\nkind: linux\ndescription: a board\nclock_hz: 1.0e+9\nram_bytes: 1048576\ncompiler: gcc\n"
         "size_tool: size\ncflags: [-O2]\nemulator: [qemu-aarch64]\n")


def test_a_missing_tool_of_a_users_own_target_is_not_sent_to_the_install_script(tmp_path):
    from policykd.embedded import check_target_tools

    custom = tmp_path / "board.yaml"
    custom.write_text(BOARD.replace("compiler: gcc", "compiler: riscv64-unknown-elf-gcc-nowhere"))
    with pytest.raises(PolicyKDError, match=r"needs riscv64-unknown-elf-gcc-nowhere.*not found on PATH; install them, or give their full paths"):
        check_target_tools(load_target(custom))


@pytest.mark.parametrize(("text", "message"), [
    ("name: board\nkind: linux\n", r"target .*board\.yaml lacks description, compiler, size_tool, clock_hz, ram_bytes, cflags, emulator"),
    (BOARD.replace("kind: linux", "kind: mcu"), r"lacks cpi"),
    (BOARD.replace("kind: linux", "kind: fpga"), r"kind must be one of mcu, linux, got 'fpga'"),
    (BOARD.replace("clock_hz: 1.0e+9", "clock_hz: fast"), r"clock_hz must be a number > 0, got 'fast'"),
    (BOARD.replace("ram_bytes: 1048576", "ram_bytes: 0"), r"ram_bytes must be a number > 0, got 0"),
    (BOARD.replace("emulator: [qemu-aarch64]", "emulator: qemu-aarch64"), r"emulator must be a list of strings"),
    (BOARD + "cflags: [-O3]\n", r"not valid YAML: .*key 'cflags' is given twice"),
    ("- a\n- b\n", r"must be a mapping of option: value"),
])
def test_a_malformed_target_file_is_one_line_naming_its_key(tmp_path, text, message):
    custom = tmp_path / "board.yaml"
    custom.write_text(text)
    with pytest.raises(PolicyKDError, match=message):
        load_target(custom)



@pytest.mark.parametrize("name", ["cortex-m4", "aarch64"])
def test_recurrent_and_cnn_students_run_bit_identical_on_the_targets(tmp_path, name):
    """The GRU state (static, policykd_reset), the CNN's ping-pong buffers, and tanh, sigmoid and expm1 computed by the
    export itself (the C libraries' tanhf and expm1f differ in their last bits): the same bits on host and target."""
    target = _target_or_skip(name)
    torch.manual_seed(0)
    students = {
        "gru": StudentSpec(obs_dim=15, action_dim=2, family="squashed_gaussian", hidden=(16,), action_low=(-1.0, -1.0),
                           action_high=(1.0, 1.0), gru=8),
        "cnn": StudentSpec(obs_dim=12 * 16 * 3 + 1, action_dim=2, family="gaussian", hidden=(16,), action_low=(-1.0, -1.0),
                           action_high=(1.0, 1.0), conv={"image_shape": [12, 16, 3], "layers": [[4, 3, 2], [4, 3, 2]]}),
        "elu": StudentSpec(obs_dim=15, action_dim=2, family="squashed_gaussian", hidden=(16, 16), activation="elu",
                           action_low=(-1.0, -1.0), action_high=(1.0, 1.0)),
    }
    for kind, spec in students.items():
        directory = Student(spec).save(tmp_path / kind)
        obs = np.random.default_rng(1).random((6, spec.obs_dim)).astype(np.float32)  # one episode: the state carries over
        result = run_on_target(directory, target, obs, tmp_path / f"{kind}-build", n_infer=2, export_format="c")
        assert result["outputs_equal_host"], (kind, result["max_abs_diff_vs_host"])
        host = np.array(result["host_outputs"])
        assert not np.allclose(host[0], host[1:])  # different observations (and states): different actions


def test_a_student_larger_than_the_targets_memory_is_reported_as_not_fitting(student_dir, tmp_path):
    """The aarch64 target with 256 bytes of RAM and 4 KiB of flash: the 2x64 student fits in neither, and says so."""
    import json

    import yaml
    from typer.testing import CliRunner

    from policykd.cli import app

    target = _target_or_skip("aarch64")
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**target, "name": "small", "ram_bytes": 256, "flash_bytes": 4096}))
    result = CliRunner().invoke(app, ["embedded", str(student_dir), "--target", str(small), "--target", "aarch64",
                                      "--observations", "2", "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    small_row, full_row = json.loads((tmp_path / "e.json").read_text())["results"]
    assert small_row["fits_flash"] is False and small_row["fits_ram"] is False and small_row["flash_fraction"] > 1
    assert full_row["fits_ram"] is True
    assert "NO" in result.output  # the table (wrapped to the terminal's width) marks the cells
