"""Fuzzing the loaders: real student, buffer, teacher (bare SB3 zip, rl-zoo run, agents/ folder), vecnormalize and
recipe files, damaged byte by byte (and, for JSON, YAML, zip and pickle content, structurally), must load or raise
policykd's documented error.

Every loader under test either returns a usable result (a student that acts, a runtime policy that answers a valid
observation, a buffer whose fields line up, a teacher that acts, finite-shaped statistics, a config) or raises
errors.PolicyKDError (or a subclass) with a one-line message. Anything else (KeyError, struct.error, zipfile
errors, OverflowError, RecursionError, torch / safetensors / pickle errors, ...) is a bug in the loader. While a
loader runs, an audit hook records any file written, removed or renamed and any process started, and the current
directory is an empty temporary folder that must stay empty: loading damaged files never runs code or writes files.

Zip members are damaged inside and the zip rebuilt (so the damage gets past the zip's CRC check and reaches the
parser), buffer chunks are damaged and their sha256 re-recorded (so the damage gets past the hash check), the
safetensors header and SB3's pickled ":serialized:" entries are damaged as JSON / pickle bytes.

FOUND_PICKLES keeps the pickles the fuzzer found that crashed the interpreter (numpy on a malformed dtype state),
made it allocate gigabytes or leaked a non-PolicyKDError; they run in a child process with limited memory.

The examples are derandomized (the same inputs on every run). For a deeper, random search set
POLICYKD_FUZZ_EXAMPLES to a multiplier, e.g. `POLICYKD_FUZZ_EXAMPLES=20 pytest tests/test_fuzz_loading.py`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.conftest as conftest
from policykd import runtime
from policykd.buffer import Buffer
from policykd.config import DistillConfig, load_config
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec, load_student
from policykd.teachers import Teacher, load_teacher
from policykd.zoo import load_vecnormalize_stats

REPO = Path(__file__).resolve().parents[1]
_SCALE = int(os.environ.get("POLICYKD_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(examples: int):
    """Settings of one fuzz test: `examples` inputs (times POLICYKD_FUZZ_EXAMPLES, then random ones), no
    deadline (the first load imports modules), no example database (nothing written into the checkout)."""
    return settings(max_examples=examples * max(_SCALE, 1), deadline=None, database=None, derandomize=not _SCALE,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large], print_blob=True)


# -- mutations ------------------------------------------------------------------------------------------------

# A position is an absolute offset (small ints: the headers) or a fraction of the length (anywhere).
_POSITION = st.one_of(st.integers(0, 600), st.floats(0, 1, exclude_max=True, allow_nan=False))
_BYTE = st.one_of(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01, 0x22, 0x5B, 0x7B, 0x5C, 0x2D, 0x39, 0x65, 0x2E, 0xC3]),
                  st.integers(0, 255))
BYTE_OPS = st.lists(st.one_of(
    st.tuples(st.just("flip"), _POSITION, st.integers(1, 255)),
    st.tuples(st.just("set"), _POSITION, _BYTE),
    st.tuples(st.just("truncate"), _POSITION),
    st.tuples(st.just("insert"), _POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _POSITION, st.integers(1, 64)),
), min_size=1, max_size=4)


def mutate_bytes(data: bytes, ops: list[tuple]) -> bytes:
    """`data` with each op applied in turn (flip bits, set a byte, truncate, insert or delete bytes)."""
    buf = bytearray(data)
    for op, position, *args in ops:
        i = min(position if isinstance(position, int) else int(position * len(buf)), len(buf))
        if op == "flip" and i < len(buf):
            buf[i] ^= args[0]
        elif op == "set" and i < len(buf):
            buf[i] = args[0]
        elif op == "truncate":
            del buf[i:]
        elif op == "insert":
            buf[i:i] = args[0]
        elif op == "delete":
            del buf[i:i + args[0]]
    return bytes(buf)


DEEP = "DEEPLY_NESTED_LIST"  # stands for a 100 000-deep nested list (a RecursionError for naive parsers)
_DEEP_TEXT = "[" * 100_000 + "]" * 100_000
ODD_VALUES = st.sampled_from([
    "x", "", "1", "NaN", 0, 1, -1, 2**31, 2**64, -(2**63), 10**400, 0.5, -0.0, 1e308, -1e308, float("nan"),
    float("inf"), float("-inf"), None, True, False, [], [None], [1, "a"], [[1.0]], {}, {"x": 1}, DEEP,
])
ODD_KEYS = st.sampled_from(["x", "", "format", "spec", "chunks", "hidden", "__class__", "1"])


def json_paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (a tuple of keys and indices) into a JSON-like document, the root included."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from json_paths(value, (*prefix, i))


@st.composite
def json_mutations(draw, doc: Any, *, max_ops: int = 3) -> list[tuple]:
    """Structured edits of `doc`: drop a key or item, change a value's type, add or rename a key."""
    paths = list(json_paths(doc))
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["drop", "set", "set", "set", "add", "rename"] if path else ["set", "add"]))
        if kind == "set":
            ops.append(("set", path, draw(ODD_VALUES)))
        elif kind == "add":
            ops.append(("add", path, draw(ODD_KEYS), draw(ODD_VALUES)))
        elif kind == "rename":
            ops.append(("rename", path, draw(ODD_KEYS)))
        else:
            ops.append(("drop", path))
    return ops


def mutate_json(doc: Any, ops: list[tuple]) -> Any:
    """A deep copy of `doc` with the ops of json_mutations applied (ops whose path no longer exists are skipped)."""
    doc = copy.deepcopy(doc)
    for op, path, *args in ops:
        args = copy.deepcopy(args)  # a fresh value per op: an inserted list must never end up inside itself
        if op == "set" and not path:
            doc = args[0]
            continue
        parent = doc
        try:
            for key in (path[:-1] if op != "add" else path):
                parent = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        if op == "add":
            if isinstance(parent, dict):
                parent[args[0]] = args[1]
            elif isinstance(parent, list):
                parent.append(args[1])
            continue
        last = path[-1]
        if not isinstance(parent, (dict, list)) or (isinstance(parent, dict) and last not in parent) or (
                isinstance(parent, list) and not (isinstance(last, int) and last < len(parent))):
            continue
        if op == "set":
            parent[last] = args[0]
        elif op == "drop":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            parent[args[0]] = parent.pop(last)
    return doc


def dump_json(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).replace(json.dumps(DEEP), _DEEP_TEXT).encode()


def dump_yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).replace(DEEP, _DEEP_TEXT).encode()


def rezip(raw: bytes, member: str, change: Callable[[bytes], bytes]) -> bytes:
    """The zip `raw` with `member`'s bytes replaced by change(bytes), the rest kept, written afresh (valid CRCs)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, change(data) if item.filename == member else data)
    return out.getvalue()


def zip_members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


# -- the guard: no process, no file written, nothing in the current directory ------------------------------------

_FORBIDDEN_EVENTS = {
    "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.symlink", "os.link", "os.chmod",
    "shutil.rmtree", "shutil.copyfile", "shutil.move", "pty.spawn", "webbrowser.open", "socket.connect",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class _Guard:
    active = False
    events: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if not _Guard.active:
        return
    if any("__pycache__" in str(a) for a in args):  # the import system caching bytecode of a lazy import
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
        if writes and not isinstance(path, int) and str(path) != os.devnull:  # pybullet's banner goes to /dev/null
            _Guard.events.append(f"open({path!r}, {mode!r})")
    elif event in _FORBIDDEN_EVENTS:
        _Guard.events.append(f"{event}{tuple(str(a)[:80] for a in args)}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run the body in an empty temporary cwd, recording forbidden audit events; fail if any, or if cwd changed."""
    with tempfile.TemporaryDirectory(prefix="fuzz_cwd_") as cwd:
        previous = os.getcwd()
        os.chdir(cwd)  # contextlib.chdir needs Python 3.11
        _Guard.events = []
        _Guard.active = True
        try:
            yield
        finally:
            _Guard.active = False
            os.chdir(previous)
            left = os.listdir(cwd)
        assert not _Guard.events, f"loading wrote files or ran processes: {_Guard.events[:5]}"
        assert not left, f"loading left files in the current directory: {left}"


def check_load(load: Callable[[], Any], check: Callable[[Any], None], *, names: tuple[str, ...]) -> Any:
    """load() in the guard: it raises PolicyKDError (one line, naming one of `names`), or its result passes check."""
    with guarded(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = load()
        except PolicyKDError as e:
            message = str(e)
            assert message and "\n" not in message, f"{type(e).__name__} is not one line: {message!r}"
            assert any(name in message for name in names), f"{type(e).__name__} names none of {names}: {message!r}"
            return None
        check(result)
    return result


@contextlib.contextmanager
def copy_of(folder: Path) -> Iterator[Path]:
    """A fresh temporary copy of `folder` (each example damages its own copy)."""
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        target = Path(tmp) / folder.name
        shutil.copytree(folder, target)
        yield target


def file_listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the real files -------------------------------------------------------------------------------------------

STUDENT_KINDS = {
    "categorical": (StudentSpec(obs_dim=4, action_dim=2, family="categorical", hidden=(8,), activation="relu"), "CartPole-v1"),
    "gaussian": (StudentSpec(obs_dim=3, action_dim=1, family="gaussian", hidden=(8, 8), activation="tanh",
                             action_low=(-2.0,), action_high=(2.0,),
                             normalizer={"mean": [0.1, -0.2, 0.3], "var": [1.0, 2.0, 0.5], "clip": 10.0, "epsilon": 1e-8}),
                 "Pendulum-v1"),
}


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict[str, Path]:
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("fuzz_students")
    return {kind: Student(spec).save(root / kind, card_extra={"teacher": {"env": EnvSpec(env_id).to_json()}})
            for kind, (spec, env_id) in STUDENT_KINDS.items()}


def _buffer_rows(n: int, start: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(start)
    return {
        "obs": rng.normal(size=(n, 3)), "value": rng.normal(size=n), "reward": rng.normal(size=n),
        "terminated": rng.random(n) < 0.2, "truncated": np.zeros(n, bool), "episode_id": np.arange(start, start + n),
        "actor": np.zeros(n), "round": np.zeros(n), "dist_mean": rng.normal(size=(n, 1)), "dist_log_std": np.zeros((n, 1)),
    }


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory) -> Path:
    import gymnasium as gym

    root = tmp_path_factory.mktemp("fuzz_buffer") / "buffer"
    buffer = Buffer.create(root, observation_space=gym.spaces.Box(-8, 8, (3,)), action_space=gym.spaces.Box(-2, 2, (1,)),
                           family="gaussian", teacher={"algo": "sac", "sha256": "0" * 64}, normalizer=None)
    buffer.append(_buffer_rows(6, 0))
    buffer.append(_buffer_rows(4, 6))  # two chunks: their fields must also agree with each other
    return root


TEACHER_KINDS = ["dqn", "sac", "zoo-ppo"]


@pytest.fixture(scope="module", params=TEACHER_KINDS)
def teacher_zip(request, tmp_path_factory) -> tuple[Path, str]:
    """(SB3 zip, env id): a fresh DQN (CartPole) and SAC (Pendulum), small, and rl-zoo's 2021 PPO Pendulum."""
    if request.param == "zoo-ppo":
        return conftest.zoo_run("ppo", "Pendulum-v1") / "Pendulum-v1.zip", "Pendulum-v1"
    import stable_baselines3 as sb3

    cls, env_id = {"dqn": (sb3.DQN, "CartPole-v1"), "sac": (sb3.SAC, "Pendulum-v1")}[request.param]
    model = cls("MlpPolicy", env_id, seed=0, device="cpu", buffer_size=100, policy_kwargs={"net_arch": [8]})
    path = tmp_path_factory.mktemp("fuzz_teachers") / f"{request.param}.zip"
    model.save(path)
    return path, env_id


@pytest.fixture(scope="module", params=["fresh", "zoo-halfcheetah"])
def vecnormalize_pkl(request, tmp_path_factory) -> Path:
    """A vecnormalize.pkl saved by the installed SB3 (CartPole), and rl-zoo's 2021 one (naming `gym`)."""
    if request.param == "zoo-halfcheetah":
        return conftest.zoo_run("ppo", "HalfCheetahBulletEnv-v0") / "HalfCheetahBulletEnv-v0" / "vecnormalize.pkl"
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), clip_obs=7.0)
    venv.reset()
    for _ in range(10):
        venv.step(np.array([venv.action_space.sample()]))
    path = tmp_path_factory.mktemp("fuzz_vecnormalize") / "vecnormalize.pkl"
    venv.save(path)
    venv.close()
    return path


RECIPE = REPO / "configs" / "distill" / "default.yaml"


# -- what a successful load must give -----------------------------------------------------------------------

def _obs(dim: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, dim, dtype=np.float32)


def check_student(student: Student) -> None:
    spec = student.spec
    action = student.act(_obs(spec.obs_dim)[None])
    if spec.family == "categorical":
        assert action.shape == (1,) and action.dtype == np.int64 and 0 <= action[0] < spec.action_dim
    else:
        assert action.shape == (1, spec.action_dim) and action.dtype == np.float32


def check_policy(policy: runtime.NumpyPolicy) -> None:
    spec = policy.card["spec"]
    action = policy(_obs(policy.obs_dim))
    batch = policy.batch(_obs(policy.obs_dim)[None])
    if spec["family"] == "categorical":
        assert isinstance(action, int) and 0 <= action < spec["action_dim"] and batch.shape == (1,)
    else:
        assert action.shape == (spec["action_dim"],) and batch.shape == (1, spec["action_dim"])


def check_buffer_data(buffer: Buffer, data: dict[str, np.ndarray]) -> None:
    assert set(data) == set(buffer.fields)
    lengths = {name: len(array) for name, array in data.items()}
    assert set(lengths.values()) == {buffer.rows}, f"fields of different lengths or not the {buffer.rows} rows listed: {lengths}"


def check_teacher(teacher: Teacher) -> None:
    action = teacher.act(_obs(teacher.obs_dim)[None])
    assert len(action) == 1


def check_normalizer(normalizer: ObsNormalizer) -> None:
    assert isinstance(normalizer, ObsNormalizer)
    assert normalizer.mean.shape == normalizer.var.shape and normalizer.mean.ndim == 1
    normalizer(np.zeros(normalizer.mean.shape))


def check_config(config: DistillConfig) -> None:
    assert isinstance(config, DistillConfig)


# -- students: load_student and the numpy runtime ----------------------------------------------------------------

STUDENT_LOADERS = {"load_student": (load_student, check_student), "runtime.load": (runtime.load, check_policy)}


def _check_student_folder(folder: Path, loader: str) -> None:
    load, check = STUDENT_LOADERS[loader]
    before = file_listing(folder)
    check_load(lambda: load(folder), check, names=(str(folder),))
    assert file_listing(folder) == before, "loading changed the student folder"


def _damage_student(source: Path, file: str, change: Callable[[bytes], bytes], loader: str) -> None:
    with copy_of(source) as folder:
        (folder / file).write_bytes(change((folder / file).read_bytes()))
        _check_student_folder(folder, loader)


@pytest.mark.parametrize("loader", STUDENT_LOADERS)
@pytest.mark.parametrize("kind", STUDENT_KINDS)
def test_pristine_student_loads(students, kind, loader):
    load, check = STUDENT_LOADERS[loader]
    assert check_load(lambda: load(students[kind]), check, names=()) is not None


@pytest.mark.parametrize("loader", STUDENT_LOADERS)
@pytest.mark.parametrize("kind", STUDENT_KINDS)
@pytest.mark.parametrize("file", ["student.json", "student.safetensors"])
@fuzz_settings(40)
@given(ops=BYTE_OPS)
def test_student_with_damaged_bytes(students, kind, loader, file, ops):
    _damage_student(students[kind], file, lambda raw: mutate_bytes(raw, ops), loader)


@pytest.mark.parametrize("loader", STUDENT_LOADERS)
@pytest.mark.parametrize("kind", STUDENT_KINDS)
@fuzz_settings(60)
@given(data=st.data())
def test_student_with_a_damaged_card(students, kind, loader, data):
    card = json.loads((students[kind] / "student.json").read_text())
    ops = data.draw(json_mutations(card), label="ops")
    _damage_student(students[kind], "student.json", lambda _raw: dump_json(mutate_json(card, ops)), loader)


@pytest.mark.parametrize("loader", STUDENT_LOADERS)
@pytest.mark.parametrize("kind", STUDENT_KINDS)
@fuzz_settings(40)
@given(data=st.data())
def test_student_with_a_damaged_safetensors_header(students, kind, loader, data):
    raw = (students[kind] / "student.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header, body = json.loads(raw[8:8 + size]), raw[8 + size:]
    ops = data.draw(json_mutations(header), label="ops")

    def change(_raw: bytes) -> bytes:
        text = dump_json(mutate_json(header, ops))
        return struct.pack("<Q", len(text)) + text + body

    _damage_student(students[kind], "student.safetensors", change, loader)


# -- buffers ------------------------------------------------------------------------------------------------------

def _check_buffer(root: Path) -> None:
    before = file_listing(root)

    def load() -> tuple[Buffer, dict[str, np.ndarray]]:
        buffer = Buffer.open(root)
        return buffer, buffer.load()

    check_load(load, lambda result: check_buffer_data(*result), names=(str(root),))
    assert file_listing(root) == before, "loading changed the buffer folder"


def _reseal(root: Path, chunk: str) -> None:
    """Record the chunk's current sha256 in metadata.json (as if the damage happened before it was hashed)."""
    metadata = json.loads((root / "metadata.json").read_text())
    for entry in metadata["chunks"]:
        if entry["file"] == chunk:
            entry["sha256"] = hashlib.sha256((root / chunk).read_bytes()).hexdigest()
    (root / "metadata.json").write_text(json.dumps(metadata))


def test_pristine_buffer_loads(buffer_dir):
    def load() -> tuple[Buffer, dict[str, np.ndarray]]:
        buffer = Buffer.open(buffer_dir)
        return buffer, buffer.load()

    buffer, data = check_load(load, lambda result: check_buffer_data(*result), names=())
    assert buffer.rows == 10 and data["obs"].shape == (10, 3)


@fuzz_settings(50)
@given(ops=BYTE_OPS)
def test_buffer_with_damaged_metadata_bytes(buffer_dir, ops):
    with copy_of(buffer_dir) as root:
        (root / "metadata.json").write_bytes(mutate_bytes((root / "metadata.json").read_bytes(), ops))
        _check_buffer(root)


@fuzz_settings(60)
@given(data=st.data())
def test_buffer_with_damaged_metadata(buffer_dir, data):
    metadata = json.loads((buffer_dir / "metadata.json").read_text())
    ops = data.draw(json_mutations(metadata), label="ops")
    with copy_of(buffer_dir) as root:
        (root / "metadata.json").write_bytes(dump_json(mutate_json(metadata, ops)))
        _check_buffer(root)


@fuzz_settings(50)
@given(chunk=st.sampled_from(["chunk_000000.npz", "chunk_000001.npz"]), ops=BYTE_OPS, reseal=st.booleans())
def test_buffer_with_a_damaged_chunk(buffer_dir, chunk, ops, reseal):
    with copy_of(buffer_dir) as root:
        (root / chunk).write_bytes(mutate_bytes((root / chunk).read_bytes(), ops))
        if reseal:
            _reseal(root, chunk)
        _check_buffer(root)


@fuzz_settings(60)
@given(chunk=st.sampled_from(["chunk_000000.npz", "chunk_000001.npz"]), data=st.data())
def test_buffer_with_a_damaged_array_in_a_chunk(buffer_dir, chunk, data):
    """An .npy member of a chunk damaged, the npz re-zipped and its sha256 re-recorded: reaches numpy's parser."""
    member = data.draw(st.sampled_from(zip_members(buffer_dir / chunk)), label="member")
    ops = data.draw(BYTE_OPS, label="ops")
    with copy_of(buffer_dir) as root:
        (root / chunk).write_bytes(rezip((root / chunk).read_bytes(), member, lambda raw: mutate_bytes(raw, ops)))
        _reseal(root, chunk)
        _check_buffer(root)


# -- teachers: a bare SB3 zip, safe mode ----------------------------------------------------------------------------

def _check_teacher_zip(source: Path, env_id: str, change: Callable[[bytes], bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        path = Path(tmp) / source.name
        path.write_bytes(change(source.read_bytes()))
        check_load(lambda: load_teacher(path, env_id=env_id, algo=None), check_teacher, names=(str(path), "--algo", "--env"))
        assert os.listdir(tmp) == [source.name], "loading wrote beside the teacher"


def test_pristine_teachers_load(teacher_zip):
    path, env_id = teacher_zip
    assert check_load(lambda: load_teacher(path, env_id=env_id), check_teacher, names=()) is not None


@fuzz_settings(25)
@given(ops=BYTE_OPS)
def test_teacher_zip_with_damaged_bytes(teacher_zip, ops):
    path, env_id = teacher_zip
    _check_teacher_zip(path, env_id, lambda raw: mutate_bytes(raw, ops))


@fuzz_settings(25)
@given(ops=BYTE_OPS)
def test_teacher_zip_with_damaged_data_bytes(teacher_zip, ops):
    path, env_id = teacher_zip
    _check_teacher_zip(path, env_id, lambda raw: rezip(raw, "data", lambda member: mutate_bytes(member, ops)))


@fuzz_settings(40)
@given(data=st.data())
def test_teacher_zip_with_damaged_data_json(teacher_zip, data):
    path, env_id = teacher_zip
    with zipfile.ZipFile(path) as archive:
        doc = json.loads(archive.read("data"))
    ops = data.draw(json_mutations(doc), label="ops")
    _check_teacher_zip(path, env_id, lambda raw: rezip(raw, "data", lambda _member: dump_json(mutate_json(doc, ops))))


@fuzz_settings(40)
@given(data=st.data())
def test_teacher_zip_with_damaged_pickled_entries(teacher_zip, data):
    """A ":serialized:" entry of the data JSON (a base64 pickle: spaces, policy class, kwargs) damaged as bytes."""
    path, env_id = teacher_zip
    with zipfile.ZipFile(path) as archive:
        doc = json.loads(archive.read("data"))
    keys = sorted(k for k, v in doc.items() if isinstance(v, dict) and ":serialized:" in v)
    key = data.draw(st.sampled_from(keys), label="key")
    ops = data.draw(BYTE_OPS, label="ops")
    damaged = copy.deepcopy(doc)
    pickled = base64.b64decode(doc[key][":serialized:"])
    damaged[key][":serialized:"] = base64.b64encode(mutate_bytes(pickled, ops)).decode()
    _check_teacher_zip(path, env_id, lambda raw: rezip(raw, "data", lambda _member: json.dumps(damaged).encode()))


@fuzz_settings(25)
@given(data=st.data())
def test_teacher_zip_with_damaged_weights(teacher_zip, data):
    """policy.pth (torch's own zip) damaged as bytes, or its pickle (data.pkl) damaged and both zips rebuilt."""
    path, env_id = teacher_zip
    with zipfile.ZipFile(path) as archive:
        inner = [n for n in zipfile.ZipFile(io.BytesIO(archive.read("policy.pth"))).namelist() if n.endswith("data.pkl")]
    ops = data.draw(BYTE_OPS, label="ops")
    if data.draw(st.booleans(), label="inside data.pkl"):
        def change(pth: bytes) -> bytes:
            return rezip(pth, inner[0], lambda pkl: mutate_bytes(pkl, ops))
    else:
        def change(pth: bytes) -> bytes:
            return mutate_bytes(pth, ops)
    _check_teacher_zip(path, env_id, lambda raw: rezip(raw, "policy.pth", change))


# -- teacher folders: rl-zoo runs (config.yml, args.yml) and policykd agents (model_card.json) -----------------------

@pytest.fixture(scope="module")
def zoo_run_dir() -> Path:
    return conftest.zoo_run("ppo", "Pendulum-v1")


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    """A policykd agents/ folder: the shipped sac-Pendulum-v1 card, with a small fresh SAC as its model.zip."""
    import stable_baselines3 as sb3

    root = tmp_path_factory.mktemp("fuzz_agent") / "sac-Pendulum-v1"
    root.mkdir()
    sb3.SAC("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", buffer_size=100, policy_kwargs={"net_arch": [8]}).save(root / "model.zip")
    shutil.copy(REPO / "agents" / "sac-Pendulum-v1" / "model_card.json", root / "model_card.json")
    return root


def _check_teacher_folder(source: Path, file: str, change: Callable[[bytes], bytes]) -> None:
    with copy_of(source) as folder:
        (folder / file).write_bytes(change((folder / file).read_bytes()))
        before = file_listing(folder)
        check_load(lambda: load_teacher(folder), check_teacher,
                   names=(str(folder), "--algo", "--env", "unknown algorithm", "unknown env id"))
        assert file_listing(folder) == before, "loading changed the teacher folder"


ZOO_YAMLS = ["Pendulum-v1/config.yml", "Pendulum-v1/args.yml"]


def test_pristine_teacher_folders_load(zoo_run_dir, agent_dir):
    for folder in (zoo_run_dir, agent_dir):
        assert check_load(lambda: load_teacher(folder), check_teacher, names=()) is not None


@fuzz_settings(25)
@given(file=st.sampled_from(ZOO_YAMLS), ops=BYTE_OPS)
def test_zoo_run_with_damaged_yaml_bytes(zoo_run_dir, file, ops):
    _check_teacher_folder(zoo_run_dir, file, lambda raw: mutate_bytes(raw, ops))


@fuzz_settings(30)
@given(file=st.sampled_from(ZOO_YAMLS), data=st.data())
def test_zoo_run_with_damaged_yaml_values(zoo_run_dir, file, data):
    from policykd.zoo import read_zoo_yaml

    doc = read_zoo_yaml(zoo_run_dir / file)
    ops = data.draw(json_mutations(doc), label="ops")
    _check_teacher_folder(zoo_run_dir, file, lambda _raw: dump_yaml(mutate_json(doc, ops)))


@fuzz_settings(25)
@given(ops=BYTE_OPS)
def test_agent_with_damaged_card_bytes(agent_dir, ops):
    _check_teacher_folder(agent_dir, "model_card.json", lambda raw: mutate_bytes(raw, ops))


@fuzz_settings(40)
@given(data=st.data())
def test_agent_with_damaged_card(agent_dir, data):
    card = json.loads((agent_dir / "model_card.json").read_text())
    ops = data.draw(json_mutations(card), label="ops")
    _check_teacher_folder(agent_dir, "model_card.json", lambda _raw: dump_json(mutate_json(card, ops)))


# -- pickles the fuzzer found: each once crashed, exhausted memory or leaked a non-PolicyKDError -----------------------

_BOOL_ARRAY = pickle.dumps(np.zeros(2, bool), protocol=5)  # _frombuffer(bytearray, dtype('b1') + its state, ...)
_DTYPE_STATE = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # (3, '|', None, None, None, -1, -1, flags 0)
FOUND_PICKLES = {
    # numpy segfaults on this dtype state ("N" -> "M" turned None into 20046 where the subarray belongs)
    "dtype-state-segfault": _BOOL_ARRAY.replace(_DTYPE_STATE, b"M" + _DTYPE_STATE[1:]),
    # flags claiming object references: numpy then fails on every release of the array ("get_clear_loop")
    "dtype-flags": _BOOL_ARRAY.replace(_DTYPE_STATE, _DTYPE_STATE[:-2] + b"\x01t"),
    # a BYTEARRAY8 length of 2**62: the unpickler would allocate it before reading
    "bytearray8-length": b"\x80\x05\x96" + struct.pack("<Q", 2**62) + b"abc.",
    # a memo index of 2**31 - 1: the C unpickler sizes (and zeroes) its memo by the largest index
    "memo-index": b"\x80\x05N r\xff\xff\xff\x7f.".replace(b" ", b""),
    # a global whose damaged name holds a newline (the refusal must stay one line)
    "newline-in-name": b"\x80\x04\x8c\x06os\nsys\x94\x8c\x06system\x94\x93\x94.",
}


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a regression fails fast instead of filling the RAM


@pytest.mark.parametrize("name", FOUND_PICKLES)
def test_found_pickles_load_or_are_refused_in_one_line(name):
    """In a child process with 3 GiB of address space, so that a regression (a segfault, a huge allocation) fails
    this test instead of ending the test run or exhausting the machine's memory."""
    code = ("import sys\nfrom policykd.errors import PolicyKDError\nfrom policykd.safe_pickle import safe_loads\n"
            "try:\n    safe_loads(sys.stdin.buffer.read(), source='found.pkl')\n    print('loaded')\n"
            "except PolicyKDError as e:\n    print('PolicyKDError', str(e))\n")
    with tempfile.TemporaryDirectory(prefix="fuzz_cwd_") as cwd:
        result = subprocess.run([sys.executable, "-c", code], input=FOUND_PICKLES[name], capture_output=True, cwd=cwd,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, preexec_fn=_limit_memory)
        assert not os.listdir(cwd)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.decode()[-800:]}"
    assert not result.stderr, result.stderr.decode()[-800:]  # nor numpy's "Exception ignored" on a damaged dtype
    lines = result.stdout.decode().splitlines()
    assert lines == ["loaded"] or (len(lines) == 1 and lines[0].startswith("PolicyKDError ") and "found.pkl" in lines[0]), lines


# -- vecnormalize.pkl ---------------------------------------------------------------------------------------------

def test_pristine_vecnormalize_loads(vecnormalize_pkl):
    assert check_load(lambda: load_vecnormalize_stats(vecnormalize_pkl), check_normalizer, names=()) is not None


@fuzz_settings(60)
@given(ops=BYTE_OPS)
def test_vecnormalize_with_damaged_bytes(vecnormalize_pkl, ops):
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        path = Path(tmp) / "vecnormalize.pkl"
        path.write_bytes(mutate_bytes(vecnormalize_pkl.read_bytes(), ops))
        check_load(lambda: load_vecnormalize_stats(path), check_normalizer, names=(str(path),))


# -- distill recipes (YAML) -------------------------------------------------------------------------------------------

def _check_recipe(text: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_bytes(text)
        check_load(lambda: load_config(path, {}), check_config, names=(str(path), "config key", "labelled_steps"))


def test_pristine_recipe_loads():
    assert check_load(lambda: load_config(RECIPE, {}), check_config, names=()) is not None


@fuzz_settings(50)
@given(ops=BYTE_OPS)
def test_recipe_with_damaged_bytes(ops):
    _check_recipe(mutate_bytes(RECIPE.read_bytes(), ops))


@fuzz_settings(60)
@given(data=st.data())
def test_recipe_with_damaged_values(data):
    recipe = yaml.safe_load(RECIPE.read_text())
    ops = data.draw(json_mutations(recipe), label="ops")
    _check_recipe(dump_yaml(mutate_json(recipe, ops)))


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['touch pwned']\n", "hidden: !!python/name:os.system\n", "[" * 100_000 + "]" * 100_000,
    "1: 2\nseed: 3\n", "1: 2\nfoo: 3\nnull: 4\n", "? [a, b]\n: 1\n", "seed: &a 1\nrounds: *a\n", "- 1\n- 2\n", "\x00\x01",
    "seed: 1e999\n", "lr: 1e999\n", "seed: 100000000000000000000000000000000000000000000000000000000000000000000000\n",
    "lr: 1" + "0" * 400 + "\n", "hidden: [" + "1" * 5000 + "]\n",
], ids=["object-apply", "python-name", "deep", "int-key", "mixed-keys", "list-key", "alias", "list", "binary", "inf-int",
        "inf-float", "huge-int", "huge-float-as-int", "over-4300-digits"])
def test_recipe_edge_cases(text):
    _check_recipe(text.encode())
