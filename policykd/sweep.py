"""Local grid sweeps over distillation settings: every combination is distilled, evaluated on the same seeds,
timed on the numpy runtime, and tabulated with a Pareto plot (return ratio vs parameters and vs latency).

    policykd sweep TEACHER -c configs/distill/bench_10k.yaml --grid 'hidden=[32,32]|[64,64]' --grid 'data_mode=teacher|dagger'
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions  # noqa: E402
from policykd.config import DistillConfig, build_config, load_config  # noqa: E402
from policykd.errors import PolicyKDError  # noqa: E402
from policykd.plots import pareto_chart  # noqa: E402
from policykd.run_dir import CONFIG_FILE, RunLock  # noqa: E402
from policykd.yaml_files import parse_yaml_value  # noqa: E402

OUTPUTS = ("results.md", "pareto.png")  # rewritten at the end of every sweep; their sha256 are kept in results.json
SWEPT_COLUMNS = ("ratio", "student_return", "teacher_return", "student_params", "numpy_p50_us", "kl", "wall_s")


MAX_COMBINATIONS = 1_000  # each one a full distillation and evaluation: minutes to hours apiece


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['hidden=[32,32]|[64,64]', 'tau=0.5|1'] -> {'hidden': [[32, 32], [64, 64]], 'tau': [0.5, 1]} (values as YAML).

    A key given twice, a value given twice for one key, and a product of more than MAX_COMBINATIONS are refused
    (counted without building the product)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise PolicyKDError(f"--grid {item!r} must look like KEY=V1|V2 (values in YAML, e.g. hidden=[32,32]|[64,64])")
        key = key.strip()
        if key in grid:
            raise PolicyKDError(f"--grid gives {key} twice; give all its values in one --grid {key}=V1|V2")
        parsed = [parse_yaml_value(v, where=f"--grid {item!r}") for v in values.split("|")]
        seen = [json.dumps(_canonical(v), sort_keys=True) for v in parsed]
        repeated = sorted({v for v in seen if seen.count(v) > 1})
        if repeated:
            raise PolicyKDError(f"--grid {key} lists {', '.join(repeated)} more than once; each value would be distilled twice")
        grid[key] = parsed
    count = combination_count(grid)
    if count > MAX_COMBINATIONS:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in grid.items())
        raise PolicyKDError(f"--grid has {count:,} combinations ({sizes}), more than {MAX_COMBINATIONS:,}; each is a full "
                            "distillation: sweep fewer values, or split the grid into several sweeps")
    return grid


def _canonical(value: Any) -> Any:
    """A grid value as the config will see it: a whole float is its int (tau=1|1.0 is one value twice); bools stay."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def combination_count(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


_NOT_SWEPT = ("teacher", "out_dir", "run_name", "env_id", "algo")
_SAME_EVALUATION = ("eval_seed", "eval_episodes")  # the teacher is run once, on the base recipe's seeds


def combination_config(base: DistillConfig, combo: dict[str, Any], out_dir: Path, name: str) -> DistillConfig:
    """The validated config of one combination (PolicyKDError naming the key and the value otherwise)."""
    fixed = sorted(set(combo) & set(_NOT_SWEPT))
    if fixed:
        raise PolicyKDError(f"--grid cannot sweep {', '.join(fixed)}; a sweep distils one teacher into {out_dir}")
    evaluation = sorted(set(combo) & set(_SAME_EVALUATION))
    if evaluation:
        raise PolicyKDError(f"--grid cannot sweep {', '.join(evaluation)}: every student of a sweep is compared with its "
                            "teacher on the same seeds; set it once in the base recipe (--config or the flags)")
    return build_config({**base.to_dict(), **combo, "out_dir": str(out_dir / "runs"), "run_name": name},
                        source=f"--grid combination {combo}")


def validate_grid(base: DistillConfig, grid: dict[str, list[Any]], out_dir: Path) -> None:
    """Build every combination's config before any work starts, so a bad key or value fails at once."""
    for index, combo in enumerate(combinations(grid)):
        combination_config(base, combo, out_dir, run_name(index, combo))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower cost x, higher value y) by any other point."""
    return [i for i, (x, y) in enumerate(points)
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)]


# The recipe settings policykd.distill.check_recipe_fits_teacher reads (with the teacher the ensemble keys make).
_JUDGED_BY_TEACHER = ("ensemble", "ensemble_mode", "ensemble_weighting", "tau", "loss", "student_view", "conv", "image_shape")


class SweepContext:
    """What every combination of a sweep shares: the base config, the teacher and its evaluation episodes."""

    def __init__(self, base_config: Path | None, overrides: dict[str, Any], out_dir: Path, *, teacher_episodes=None,
                 grid: dict[str, list[Any]] | None = None):
        """teacher_episodes: the teacher already run on the sweep's evaluation seeds (a Ray Tune trial gets the
        driver's), else it is run here. grid: every combination is checked against its teacher first
        (check_recipe_fits_teacher), so a value that only fails with this teacher stops the sweep before any work."""
        from policykd.ensemble import load_teacher_for
        from policykd.rollout import run_episodes

        self.out_dir = out_dir
        self.search: dict[str, Any] = {}  # Ray Tune's search settings (tune_sweep), recorded in results.json
        self.outputs = recorded_outputs(out_dir)
        self.base = load_config(base_config, overrides)
        if not self.base.teacher:
            raise PolicyKDError("no teacher given; pass TEACHER or a --config with a `teacher:` key")
        self.teacher = load_teacher_for(self.base)  # an EnsembleTeacher when the base recipe lists `ensemble`
        self._teachers = {self._ensemble_key(self.base): self.teacher}
        if grid is not None:
            self.check_fits_teacher(grid)
        self.seeds = [self.base.eval_seed + i for i in range(self.base.eval_episodes)]
        self.teacher_episodes = teacher_episodes or run_episodes(self.teacher.act, self.teacher.env_spec, self.seeds,
                                                                 n_envs=self.base.n_envs)
        self._episodes = {self._ensemble_key(self.base): self.teacher_episodes}

    @staticmethod
    def _ensemble_key(config) -> tuple:
        return tuple(config.ensemble), config.ensemble_mode, config.ensemble_weighting

    def _teacher_of(self, config):
        """The base teacher, or, for a combination that sweeps the ensemble keys, that ensemble (loaded once)."""
        from policykd.ensemble import load_teacher_for

        key = self._ensemble_key(config)
        if key not in self._teachers:
            self._teachers[key] = load_teacher_for(config)
        return self._teachers[key]

    def check_fits_teacher(self, grid: dict[str, list[Any]]) -> None:
        """check_recipe_fits_teacher for every combination of the grid's values of the settings it reads, a
        one-line error naming the combination otherwise."""
        from policykd.distill import check_recipe_fits_teacher

        judged = {key: values for key, values in grid.items() if key in _JUDGED_BY_TEACHER}
        for index, combo in enumerate(combinations(judged)):
            config = combination_config(self.base, combo, self.out_dir, run_name(index, combo))
            try:
                check_recipe_fits_teacher(config, self._teacher_of(config))
            except PolicyKDError as e:
                raise PolicyKDError(f"--grid combination {combo}: {e}") from e

    def teacher_for(self, config):
        """The base teacher and its episodes, or, for a combination that sweeps the ensemble keys, that ensemble
        (loaded and evaluated on the same seeds once per distinct ensemble)."""
        from policykd.rollout import run_episodes

        key = self._ensemble_key(config)
        if key not in self._episodes:
            teacher = self._teacher_of(config)
            self._episodes[key] = run_episodes(teacher.act, teacher.env_spec, self.seeds, n_envs=self.base.n_envs)
        return self._teachers[key], self._episodes[key]

    def run(self, name: str, combo: dict[str, Any], *, latency_calls: int = 2_000, on_round=None) -> dict[str, Any]:
        """Distil, evaluate and time one combination; returns its results row. on_round(RoundMetrics) after each round."""
        import policykd.runtime as runtime
        from policykd.latency import measure_latency
        from policykd.pipeline import distill_and_evaluate

        config = combination_config(self.base, {"latency_calls": 100, **combo}, self.out_dir, name)
        teacher, teacher_episodes = self.teacher_for(config)
        started = (Path(config.out_dir) / name / CONFIG_FILE).exists()  # an interrupted sweep's run: continue it
        result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=teacher_episodes, quiet=True, on_round=on_round,
                                      resume=started)
        report = result.report
        policy = runtime.load(result.student_dir)
        probe = self.teacher_episodes.states[0]
        return {
            "name": name, **{f"param/{k}": v for k, v in combo.items()}, "ratio": report.ratio,
            "student_return": report.student.mean, "teacher_return": report.teacher.mean,
            "student_params": report.student_params, "teacher_actor_params": report.teacher_actor_params,
            "numpy_p50_us": measure_latency(lambda: policy(probe), calls=latency_calls)["p50"],
            "kl": report.agreement.get("kl"), "wall_s": result.distillation.wall_s, "labelled_steps": config.labelled_steps,
            "seed": config.seed,
        }

    def save(self, results: list[dict[str, Any]], grid: dict[str, list[Any]]) -> None:
        atomic_write_json(self.out_dir / "results.json", {
            "teacher": self.teacher.identity(), "base_config": self.base.to_dict(), "grid": grid,
            "search": self.search, "eval_seeds": self.seeds, "runs": results, "outputs": self.outputs,
            "versions": package_versions()})

    def write_outputs(self, results: list[dict[str, Any]], grid: dict[str, list[Any]]) -> None:
        """results.md and pareto.png, their sha256 recorded in results.json before they replace the last ones."""
        def record(shas: dict[str, str]) -> None:
            self.outputs = shas
            self.save(results, grid)

        write_outputs(self.out_dir, results, env_id=self.teacher.env_spec.env_id, record=record)


def recorded_outputs(out_dir: Path) -> dict[str, str]:
    """{file name: sha256} of the OUTPUTS a sweep last wrote in out_dir (from its results.json; {} if none)."""
    try:
        outputs = json.loads((out_dir / "results.json").read_text()).get("outputs") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in outputs.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(outputs, dict) else {}


def check_outputs_replaceable(out_dir: Path) -> None:
    """Refuse, before any work, a folder whose results.md or pareto.png a sweep did not write, or that was edited
    since: the sweep rewrites both when it ends."""
    recorded = recorded_outputs(out_dir)
    for name in OUTPUTS:
        path = out_dir / name
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() != recorded.get(name):
            raise PolicyKDError(f"{path} was not written by a sweep here or was edited since, and the sweep would "
                                "replace it: move it away, or choose another --out")


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    """The rows of the sweep in out_dir ([] when it has none yet); a corrupt results.json is one line."""
    path = out_dir / "results.json"
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text())["runs"]
        if not isinstance(runs, list) or not all(isinstance(r, dict) and "name" in r for r in runs):
            raise TypeError("runs is not a list of results rows")
        return runs
    except (ValueError, KeyError, TypeError) as e:
        raise PolicyKDError(f"{path} is corrupt ({e.__class__.__name__}); move it away to start the sweep over, "
                            "or restore it") from e


def check_same_sweep(out_dir: Path, context: SweepContext, grid: dict[str, list[Any]], search: dict[str, Any] | None = None) -> None:
    """Refuse to continue, in out_dir, a sweep of another teacher, base recipe, grid or search (Ray Tune's search,
    samples, ASHA): its finished rows would be reported as this sweep's, or its runs named for other combinations."""
    path = out_dir / "results.json"
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text())
        teacher, base = recorded["teacher"]["sha256"], recorded["base_config"]
    except (ValueError, KeyError, TypeError) as e:
        raise PolicyKDError(f"{path} is corrupt ({e.__class__.__name__}); move it away to start the sweep over, "
                            "or restore it") from e
    unrelated = ("out_dir", "run_name", "trust_pickle")
    now = context.base.to_dict()
    changed = sorted(k for k in set(base) | set(now) if k not in unrelated and base.get(k) != now.get(k))
    if teacher != context.teacher.identity()["sha256"] or changed:
        what = "another teacher" if teacher != context.teacher.identity()["sha256"] else f"another base recipe ({', '.join(changed)})"
        raise PolicyKDError(f"{out_dir} holds a sweep of {what}; its results would be reported as this one's: choose another --out")
    for name, now_value in (("grid", grid), ("search", search or {})):
        before = recorded.get(name)  # absent in the results of a sweep before it was recorded
        if before is not None and json.dumps(before, sort_keys=True) != json.dumps(now_value, sort_keys=True, default=str):
            raise PolicyKDError(f"{out_dir} holds a sweep of another {'--grid' if name == 'grid' else 'search'} ({json.dumps(before)}); "
                                f"continue it with the same {'--grid' if name == 'grid' else '--search, --num-samples and --asha'}, "
                                "or choose another --out")


def run_name(index: int, combo: dict[str, Any]) -> str:
    """sweep003__hidden=[32,32]__tau=0.5: a folder name (path separators in values become '-')."""
    name = f"sweep{index:03d}__" + "__".join(f"{k}={json.dumps(v, separators=(',', ''))}" for k, v in combo.items())
    return name.replace("/", "-").replace("\\", "-")


def run_sweep(base_config: Path | None, overrides: dict[str, Any], grid: dict[str, list[Any]], out_dir: Path,
              *, latency_calls: int = 2_000) -> list[dict[str, Any]]:
    """Distil and evaluate every grid combination; results.json is rewritten after each (resumable: done ones are kept)."""
    validate_grid(load_config(base_config, overrides), grid, out_dir)
    check_outputs_replaceable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):  # a second sweep here would rewrite results.json without the first one's rows
        results = load_results(out_dir)
        context = SweepContext(base_config, overrides, out_dir, grid=grid)
        check_same_sweep(out_dir, context, grid)
        names = [run_name(index, combo) for index, combo in enumerate(combinations(grid))]
        done = {r["name"] for r in results}
        _say(f"sweep: {len(names)} combinations in {out_dir}, {sum(n in done for n in names)} already done")
        for index, combo in enumerate(combinations(grid)):
            name = names[index]
            if name in done:
                continue
            where = f"sweep [{index + 1}/{len(names)}] {name}"
            _say(f"{where}: distilling")
            row = context.run(name, combo, latency_calls=latency_calls, on_round=lambda m, where=where: _say(
                f"{where}: round {m.round + 1} done, {m.labelled_steps:,} labelled steps, KL {m.kl:.3g}, {m.wall_s:.0f} s"))
            _say(f"{where}: ratio {row['ratio']:.3f}, {row['wall_s']:.0f} s")
            results.append(row)
            context.save(results, grid)
        context.write_outputs(results, grid)
    return results


def _say(line: str) -> None:
    """A plain progress line on stderr (a sweep's runs are quiet; this says which one is working)."""
    print(line, file=sys.stderr, flush=True)


def wandb_sweep_config(grid: dict[str, list[Any]], *, name: str) -> dict[str, Any]:
    """The W&B sweep definition of a grid: every combination once, ranked by the return ratio."""
    return {"name": name, "method": "grid", "metric": {"name": "ratio", "goal": "maximize"},
            "parameters": {key: {"values": values} for key, values in grid.items()}}


def wandb_online() -> bool:
    """True when W&B can reach its server: an API key is configured and WANDB_MODE does not say offline/disabled."""
    from policykd.tracking import wandb_has_api_key

    return wandb_has_api_key() and os.environ.get("WANDB_MODE", "online") not in ("offline", "dryrun", "disabled")


def wandb_sweep_run(context: SweepContext, grid: dict[str, list[Any]], *, project: str,
                    defaults: dict[str, Any] | None = None, mode: str | None = None) -> dict[str, Any]:
    """One W&B sweep run: read the combination from the run's config (set by the sweep controller; `defaults`
    fill keys it leaves out), distil and evaluate it, log the row as the run's summary and history."""
    import wandb

    with wandb.init(project=project, config=defaults or {}, dir=str(context.out_dir), mode=mode,
                    settings=wandb.Settings(silent=True)) as run:
        combo = {key: run.config[key] for key in grid}
        results = load_results(context.out_dir)
        name = run_name(len(results), combo)
        row = context.run(name, combo)
        run.name = name
        run.log({k: v for k, v in row.items() if isinstance(v, (int, float))})
        run.summary.update({k: v for k, v in row.items() if isinstance(v, (int, float))})
        results.append(row)
        context.save(results, grid)
    return row


def run_wandb_sweep(base_config: Path | None, overrides: dict[str, Any], grid: dict[str, list[Any]], out_dir: Path,
                    *, project: str) -> list[dict[str, Any]]:
    """Register the grid as a W&B sweep and run its agent here until every combination is done; the same
    results.json, results.md and pareto.png as a local sweep are written too."""
    import wandb

    if not wandb_online():
        raise PolicyKDError("a W&B sweep needs the W&B server: run `wandb login` (or set WANDB_API_KEY) with network "
                            "access, or drop --wandb-sweep to run the same grid locally")
    validate_grid(load_config(base_config, overrides), grid, out_dir)
    check_outputs_replaceable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = SweepContext(base_config, overrides, out_dir, grid=grid)
    check_same_sweep(out_dir, context, grid)
    sweep_id = wandb.sweep(wandb_sweep_config(grid, name=out_dir.name), project=project)
    wandb.agent(sweep_id, function=lambda: wandb_sweep_run(context, grid, project=project), project=project,
                count=len(combinations(grid)))
    results = load_results(out_dir)
    context.write_outputs(results, grid)
    return results


def write_outputs(out_dir: Path, results: list[dict[str, Any]], *, env_id: str,
                  record: Callable[[dict[str, str]], None]) -> None:
    """results.md (a table, Pareto-optimal rows marked) and pareto.png; record({name: sha256}) is called once both
    are rendered and before either replaces the file there (so results.json vouches for what the folder holds)."""
    params_front = set(pareto_front([(r["student_params"], r["ratio"]) for r in results]))
    latency_front = set(pareto_front([(r["numpy_p50_us"], r["ratio"]) for r in results]))
    swept = sorted({k for r in results for k in r if k.startswith("param/")})
    varied = [k for k in swept if len({json.dumps(r[k]) for r in results}) > 1] or swept
    columns = [k.removeprefix("param/") for k in swept] + list(SWEPT_COLUMNS) + ["Pareto"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, r in enumerate(results):
        marks = ("params " if i in params_front else "") + ("latency" if i in latency_front else "")
        cells = [json.dumps(r[k]) for k in swept] + [f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in SWEPT_COLUMNS]
        lines.append("| " + " | ".join(cells + [marks.strip() or "-"]) + " |")
    table = ("\n".join(lines) + "\n").encode()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".pareto-") as tmp:
        chart = pareto_chart(results, Path(tmp) / "pareto.png", fronts=(params_front, latency_front), varied=varied,
                             env_id=env_id).read_bytes()
    record({"results.md": hashlib.sha256(table).hexdigest(), "pareto.png": hashlib.sha256(chart).hexdigest()})
    atomic_write_bytes(out_dir / "results.md", table)
    atomic_write_bytes(out_dir / "pareto.png", chart)
