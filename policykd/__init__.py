"""policykd: distil large stable-baselines3 teacher policies into compact, verified students."""

__version__ = "0.1.0"
