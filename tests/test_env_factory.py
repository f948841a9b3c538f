import pytest

from policykd.env_factory import EnvSpec, QuietReset, WrapperSpec, parse_wrappers
from policykd.errors import PolicyKDError


def test_parse_rl_zoo_wrapper_forms():
    assert parse_wrappers(None) == ()
    assert parse_wrappers("a.B") == (WrapperSpec("a.B"),)
    assert parse_wrappers([{"a.B": {"k": 1}}, "c.D"]) == (WrapperSpec("a.B", {"k": 1}), WrapperSpec("c.D"))
    with pytest.raises(PolicyKDError, match="neither an import path"):
        parse_wrappers([3])


def test_env_spec_roundtrip_and_wrappers_applied():
    spec = EnvSpec("Pendulum-v1", {"g": 9.81}, (WrapperSpec("sb3_contrib.common.wrappers.TimeFeatureWrapper"),))
    again = EnvSpec.from_json(spec.to_json())
    assert again == spec
    env = again.make()
    assert env.observation_space.shape == (4,)  # 3 + the time feature
    env.close()


def test_a_time_limit_in_env_kwargs_is_the_episode_length():
    """rl-zoo's env_kwargs may hold max_episode_steps, gym.make's own argument (given once, not twice)."""
    spec = EnvSpec("Pendulum-v1", {"max_episode_steps": 7}, (WrapperSpec("sb3_contrib.common.wrappers.TimeFeatureWrapper"),))
    env = spec.make()
    env.reset(seed=0)
    steps = 1
    while not env.step(env.action_space.sample())[3]:
        steps += 1
    assert steps == spec.time_limit() == 7
    assert spec.make(max_episode_steps=3).spec.max_episode_steps == 3  # a caller's limit wins
    env.close()


def test_the_packages_a_teacher_names_register_its_env(tmp_path, monkeypatch):
    """rl-zoo's gym_packages: imported when the env id is not registered yet; one line when one is not installed."""
    package = tmp_path / "site" / "policykd_probe_envs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import gymnasium\ngymnasium.register('PolicyKDProbePendulum-v0', "
                                         "entry_point='gymnasium.envs.classic_control:PendulumEnv', max_episode_steps=5)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = EnvSpec.from_json(EnvSpec("PolicyKDProbePendulum-v0", packages=("policykd_probe_envs",)).to_json())
    assert spec.packages == ("policykd_probe_envs",) and spec.time_limit() == 5
    assert "packages" not in EnvSpec("Pendulum-v1").to_json()  # records written before the field read the same
    with pytest.raises(PolicyKDError, match=r"lists gym_packages \['policykd_no_such_envs'\], and policykd_no_such_envs is "
                                            r"not installed here: install it"):
        EnvSpec("PolicyKDNoSuchEnv-v0", packages=("policykd_no_such_envs",)).make()


def test_bad_env_kwargs_and_wrappers_are_one_line_errors():
    with pytest.raises(PolicyKDError, match="rejected its kwargs"):
        EnvSpec("CartPole-v1", {"bogus": 1}).make()
    with pytest.raises(PolicyKDError, match="cannot import 'nowhere.Wrapper'"):
        EnvSpec("CartPole-v1", wrappers=(WrapperSpec("nowhere.Wrapper"),), trusted=True).make()
    with pytest.raises(PolicyKDError, match="cannot import 'gymnasium.wrappers.NoSuchWrapper'"):
        EnvSpec("CartPole-v1", wrappers=(WrapperSpec("gymnasium.wrappers.NoSuchWrapper"),)).make()


@pytest.mark.parametrize("path", ["os.system", "subprocess:Popen", "builtins.exec", "tests.conftest.zoo_run"])
def test_a_wrapper_named_by_a_file_runs_no_code_outside_the_safe_wrapper_modules(path, monkeypatch):
    """A crafted config.yml or card could name any callable as its env wrapper; make() would call it with the env."""
    called = []
    monkeypatch.setattr("os.system", lambda *a, **k: called.append(a))
    spec = EnvSpec("CartPole-v1", wrappers=(WrapperSpec(path),))
    with pytest.raises(PolicyKDError, match=f"env wrapper '{path}' is outside the packages.*--trust-pickle") as info:
        spec.make()
    assert "\n" not in str(info.value) and not called
    with pytest.raises(PolicyKDError, match=f"env wrapper '{path}' is not a gymnasium.Wrapper class"):
        EnvSpec.from_json(spec.to_json(), trusted=True).make()  # trusted: imported, but still never called
    assert not called


def test_gymnasium_and_sb3_contrib_wrappers_need_no_trust():
    spec = EnvSpec("Pendulum-v1", wrappers=(WrapperSpec("gymnasium.wrappers:ClipAction"),
                                            WrapperSpec("sb3_contrib.common.wrappers.TimeFeatureWrapper")))
    spec.check_wrappers()
    env = spec.make()
    assert env.observation_space.shape == (4,)
    env.close()


def test_bullet_envs_are_wrapped_to_keep_native_banners_quiet(capfd):
    env = EnvSpec("HopperBulletEnv-v0").make()
    assert isinstance(env, QuietReset)
    env.reset(seed=0)
    env.close()
    assert "argv[0]" not in capfd.readouterr().out
    assert not isinstance(EnvSpec("CartPole-v1").make(), QuietReset)


def test_an_env_namespace_never_imports_a_module_from_the_current_folder(tmp_path, monkeypatch):
    """An env id comes from files (a student card): `Pwnmod/X-v0` must not run ./pwnmod.py, which nobody vouched for."""
    import sys

    from policykd.env_factory import ensure_registered
    from policykd.errors import PolicyKDError

    (tmp_path / "pwnmod.py").write_text("open('PWNED', 'w').write('ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")
    with pytest.raises(PolicyKDError, match="unknown env id 'Pwnmod/X-v0'"):
        ensure_registered("Pwnmod/X-v0")
    assert not (tmp_path / "PWNED").exists() and "pwnmod" not in sys.modules
    ensure_registered("PolicyKD/RacecarTrack-v0")  # an installed namespace package still registers its envs
