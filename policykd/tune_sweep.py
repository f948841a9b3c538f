"""Sweeps on Ray Tune: the local sweep's grid as Tune trials, with random search and ASHA early stopping as options.

`policykd sweep TEACHER -c RECIPE --grid ... --backend ray [--search random --num-samples N] [--asha] [--wandb]`

- The driver loads the teacher and runs it once on the evaluation seeds; every trial (a Tune function trainable,
  one CPU) gets those episodes, loads the teacher from its file and runs the same `SweepContext.run` as the local
  sweep, so a trial's row is the local sweep's row for that combination.
- `--search random`: each of `--num-samples` trials draws one value per key (tune.choice); default: every
  combination once (tune.grid_search).
- `--asha`: each round reports the student's return on `eval_every_round` seeds (5 when the recipe has 0) and Tune's
  ASHA scheduler stops the weaker trials early; a stopped trial has no row.
- `--wandb`: W&B logging through Ray Tune's integration (WandbLoggerCallback; offline without an API key).
- Trials live in OUT/tune (Tune's experiment folder); running the same command again resumes an interrupted sweep
  (Tuner.restore: finished trials are kept, unfinished and errored ones run again).
- Outputs: the same results.json, results.md and pareto.png as the local sweep.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from policykd.config import load_config
from policykd.errors import PolicyKDError
from policykd.sweep import SweepContext, check_outputs_replaceable, check_same_sweep, combinations, load_results, run_name, validate_grid

EXPERIMENT = "tune"
ASHA_EVAL_EPISODES = 5


def _trial(combo: dict[str, Any], *, base_config: str | None, overrides: dict[str, Any], out_dir: str, grid: dict[str, list[Any]],
           teacher_episodes, latency_calls: int, asha: bool) -> None:
    """One Tune trial: distil and evaluate `combo`, report per round (with ASHA) and the results row at the end."""
    from ray import tune

    context = SweepContext(Path(base_config) if base_config else None, overrides, Path(out_dir), teacher_episodes=teacher_episodes)
    all_combos = combinations(grid)
    index = all_combos.index(combo) if combo in all_combos else 0
    name = run_name(index, combo) + f"__{tune.get_context().get_trial_id()}"
    on_round = None
    if asha:
        combo = {"eval_every_round": context.base.eval_every_round or ASHA_EVAL_EPISODES, **combo}

        def on_round(metrics) -> None:
            tune.report({"round": metrics.round + 1, "eval_return": metrics.eval_return_mean})
    row = context.run(name, combo, latency_calls=latency_calls, on_round=on_round)
    tune.report({"round": context.base.rounds + 1, "eval_return": row["student_return"], "ratio": row["ratio"],
                 "row": json.dumps(row)})


def run_tune_sweep(base_config: Path | None, overrides: dict[str, Any], grid: dict[str, list[Any]], out_dir: Path, *,
                   search: str = "grid", num_samples: int = 1, asha: bool = False, wandb: bool = False,
                   address: str | None = None, latency_calls: int = 2_000) -> list[dict[str, Any]]:
    """Run the sweep as Ray Tune trials; returns the rows (also written as results.json / .md / pareto.png)."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise PolicyKDError('--backend ray needs Ray Tune: pip install "policykd[ray]"') from None
    if search not in ("grid", "random"):
        raise PolicyKDError(f"--search must be grid or random, got {search!r}")
    validate_grid(load_config(base_config, overrides), grid, out_dir)
    out_dir = out_dir.resolve()
    check_outputs_replaceable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = SweepContext(base_config, overrides, out_dir, grid=grid)
    context.search = {"search": search, "num_samples": num_samples, "asha": asha}
    check_same_sweep(out_dir, context, grid, context.search)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **({} if address else {"num_cpus": os.cpu_count()}))
    trainable = tune.with_parameters(_trial, base_config=str(base_config) if base_config else None, overrides=overrides,
                                     out_dir=str(out_dir), grid=grid, teacher_episodes=context.teacher_episodes,
                                     latency_calls=latency_calls, asha=asha)
    experiment = out_dir / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        space = {k: (tune.grid_search(v) if search == "grid" else tune.choice(v)) for k, v in grid.items()}
        scheduler = None
        if asha:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="round", metric="eval_return", mode="max", max_t=context.base.rounds + 1,
                                      grace_period=1, reduction_factor=2)
        callbacks = []
        if wandb:
            from ray.air.integrations.wandb import WandbLoggerCallback

            mode = "online" if os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE", "") != "offline" else "offline"
            callbacks.append(WandbLoggerCallback(project=context.base.wandb_project, mode=mode, dir=str(out_dir)))
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(num_samples=num_samples if search == "random" else 1, scheduler=scheduler),
                           run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out_dir), callbacks=callbacks, verbose=0))
    results = tuner.fit()
    rows = {row["name"]: row for row in load_results(out_dir)}  # rows of earlier sweeps here are kept
    rows.update((row["name"], row) for row in (json.loads(r.metrics["row"]) for r in results if r.metrics and "row" in r.metrics))
    merged = sorted(rows.values(), key=lambda row: row["name"])
    context.save(merged, grid)
    context.write_outputs(merged, grid)
    return merged
