"""policykd's own pybullet environments, registered with gymnasium under the `PolicyKD/` namespace on import.

    import gymnasium as gym
    import policykd_envs  # noqa: F401  (registers the ids below; nothing else happens on import)
    env = gym.make("PolicyKD/RacecarTrack-v0", render_mode="rgb_array")

The modules themselves (and pybullet) load only when an env is made.
"""

from gymnasium.envs.registration import register, registry

ENV_IDS = ("PolicyKD/RacecarTrack-v0", "PolicyKD/RacecarObstacles-v0", "PolicyKD/KukaReach-v0",
           "PolicyKD/KukaReachObstacle-v0")


def _register(env_id: str, entry_point: str, max_episode_steps: int, **kwargs) -> None:
    if env_id not in registry:
        register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=kwargs)


_register("PolicyKD/RacecarTrack-v0", "policykd_envs.racecar:RacecarEnv", 500)
_register("PolicyKD/RacecarObstacles-v0", "policykd_envs.racecar:RacecarEnv", 500, n_obstacles=4, n_rays=21,
          half_width=0.9)
_register("PolicyKD/KukaReach-v0", "policykd_envs.kuka:KukaReachEnv", 100)
_register("PolicyKD/KukaReachObstacle-v0", "policykd_envs.kuka:KukaReachEnv", 100, obstacle=True)
