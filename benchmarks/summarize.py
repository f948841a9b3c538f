"""Turn benchmarks/results/*.json into the markdown tables of docs/benchmarks.md (between the RESULTS markers) and
README's headline table (between the HEADLINE markers).

    python benchmarks/summarize.py            # rewrites both blocks
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TIME_LIMIT = 1000  # Hopper's episode limit: an episode that ends sooner is a fall
BEGIN, END = "<!-- RESULTS:BEGIN (benchmarks/summarize.py) -->", "<!-- RESULTS:END -->"
HEADLINE_BEGIN, HEADLINE_END = "<!-- HEADLINE:BEGIN (benchmarks/summarize.py) -->", "<!-- HEADLINE:END -->"
PRIVILEGED_BEGIN, PRIVILEGED_END = "<!-- PRIVILEGED:BEGIN (benchmarks/summarize.py) -->", "<!-- PRIVILEGED:END -->"
ABLATION_BEGIN, ABLATION_END = "<!-- ABLATION:BEGIN (benchmarks/summarize.py) -->", "<!-- ABLATION:END -->"
ABLATION_PLOT = RESULTS / "ablation_techniques.png"


def one_recipe_table(name: str = "one_recipe.json") -> str:
    """The headline: the default recipe (no recipe file) and hard-label BC on every teacher benchmarked so far, one
    row per teacher, budget and loss, from benchmarks/results/NAME (benchmarks/one_recipe.py)."""
    path = RESULTS / name
    if not path.exists():
        return ""
    results = json.loads(path.read_text())
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results["runs"]:
        groups[(r["teacher"], r["labelled_steps"], r["loss"])].append(r)
    lines = ["| teacher | labelled steps | recipe | ratio per seed [95% CI] | mean ratio | worst seed | student failures / 100 (per seed) | teacher failures / 100 | teacher noise floor | held-out KL | wall s |",
             "|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for (teacher, steps, loss), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "kl")):
        rs = sorted(rs, key=lambda r: r["seed"])  # the default recipe's row first, then its BC baseline
        t = results["teachers"][teacher]
        per_100 = 100.0 / rs[0]["episodes"]
        recipe = "default (`policykd distill TEACHER --steps N`)" if loss == "kl" else "hard-label BC (`loss: bc`)"
        cells = " / ".join(f"{r['ratio']:.3f} [{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]" for r in rs)
        ratios = [r["ratio"] for r in rs]
        failures = " / ".join(f"{r['student_failures'] * per_100:g}" for r in rs)
        teacher_failures = f"{t['stats']['failures'] * per_100:g}"
        if t.get("noise_floor_failures", t["stats"]["failures"]) != t["stats"]["failures"]:  # the teacher's own spread
            teacher_failures += f" ({t['noise_floor_failures'] * per_100:g} one env at a time)"
        lines.append(
            f"| {teacher} | {steps:,} | {recipe} | {cells} | {np.mean(ratios):.3f} | {min(ratios):.3f} | "
            f"{failures} | {teacher_failures} | "
            f"{t['noise_floor_ratio']:.3f} | {np.mean([r['heldout_kl'] for r in rs]):.3g} | {max(r['wall_s'] for r in rs):.0f} |")
    episodes = next(iter(groups.values()))[0]["episodes"] if groups else 0
    return (f"Teacher and student on the same {episodes} evaluation seeds (from 1,000,000); ratio = student mean return / "
            "teacher mean return (teacher / student where the teacher's mean is negative, as for Pendulum: 1 is a match, "
            "below 1 worse either way), with a paired bootstrap 95% interval; a failure is an episode the env ended early (a "
            "fall) or a missed target; the noise floor is the teacher against itself stepped one env at a time (its "
            "actions change in the last float bits only). Held-out KL: KL(teacher || student) on held-out teacher-labelled "
            "episodes of the last round. Wall time: collection + training on 2 cores. Raw records: "
            f"`benchmarks/results/{name}` (`python benchmarks/one_recipe.py`).\n\n" + "\n".join(lines))


def default_vs_bc_table(name: str = "one_recipe.json", resamples: int = 4000) -> str:
    """Per teacher and budget where the default recipe and hard-label BC both have the same distillation seeds: the
    difference of their mean ratios with a 95% interval from a bootstrap that resamples distillation seeds and then
    evaluation episodes, both paired (the same seed, the same evaluation episode), and their failures in total."""
    runs = _runs_by_seed(name)
    lines = ["| teacher | labelled steps | seeds | default - BC, mean ratio [95% CI] | failures default / BC (teacher) | reading |",
             "|---|---:|---:|---:|---:|---|"]
    for (teacher, steps, loss), default in sorted(runs.items()):
        bc = runs.get((teacher, steps, "bc"), {})
        seeds = sorted(set(default) & set(bc))
        if loss != "kl" or len(seeds) < 2:
            continue
        diff = _ratio_differences(default, bc, seeds)
        low, high = _paired_interval(diff, resamples, row=f"{teacher} {steps} default-bc")
        reading = ("equal returns" if not diff.any() else "default better" if low > 0 else "BC better" if high < 0
                   else "no difference resolved")
        failures = (f"{sum(default[s]['student_failures'] for s in seeds)} / {sum(bc[s]['student_failures'] for s in seeds)} "
                    f"({default[seeds[0]]['teacher_failures'] * len(seeds)})")
        lines.append(f"| {teacher} | {steps:,} | {len(seeds)} | {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}] | {failures} | {reading} |")
    if len(lines) == 2:
        return ""
    return ("The default recipe against hard-label BC, paired: the difference of mean ratios over the distillation seeds "
            "both have run, with a bootstrap 95% interval (seeds resampled, then evaluation episodes; the same seed and "
            "episode for both), and failures summed over those seeds (the teacher's for as many runs). *No difference "
            "resolved*: the interval holds 0, so 3 seeds cannot tell the two apart.\n\n" + "\n".join(lines))


def _runs_by_seed(name: str) -> dict[tuple, dict[int, dict]]:
    """The runs of benchmarks/results/NAME as {(teacher, labelled steps, loss): {seed: run}}; empty when absent."""
    path = RESULTS / name
    runs: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in json.loads(path.read_text())["runs"] if path.exists() else []:
        runs[(r["teacher"], r["labelled_steps"], r["loss"])][r["seed"]] = r
    return runs


def _ratio_differences(a: dict[int, dict], b: dict[int, dict], seeds: list[int]) -> np.ndarray:
    """[seeds, episodes]: run a's return minus run b's on the same evaluation episode, over the teacher's mean return."""
    teacher_mean = a[seeds[0]]["teacher_return"]
    return np.array([np.asarray(a[s]["student_returns"]) - np.asarray(b[s]["student_returns"]) for s in seeds]) / abs(teacher_mean)


def _paired_interval(diff: np.ndarray, resamples: int, *, row: str) -> tuple[float, float]:
    """95% bootstrap interval of diff.mean(), resampling distillation seeds (rows), then evaluation episodes within them.
    The resampling stream is seeded by the table row's name, so a row's interval does not move when rows are added."""
    rng = np.random.default_rng(zlib.crc32(row.encode()))
    n_seeds, n_episodes = diff.shape
    rows = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    cols = rng.integers(0, n_episodes, size=(resamples, n_seeds, n_episodes))
    low, high = np.percentile(diff[rows[:, :, None], cols].mean(axis=(1, 2)), [2.5, 97.5])
    return float(low), float(high)


def more_data_table(name: str = "one_recipe.json", resamples: int = 4000, tolerance: float = 0.01) -> str:
    """Per teacher with the default recipe at 10k and 50k on the same distillation seeds: the 50k mean ratio minus the
    10k one, with a bootstrap 95% interval (seeds, then evaluation episodes; the same seed and episode for both)."""
    runs = _runs_by_seed(name)
    lines = ["| teacher | seeds | 10k mean ratio | 50k mean ratio | 50k - 10k [95% CI] | reading |", "|---|---:|---:|---:|---:|---|"]
    for teacher in sorted({t for t, _, loss in runs if loss == "kl"}):
        small, large = runs.get((teacher, 10_000, "kl"), {}), runs.get((teacher, 50_000, "kl"), {})
        seeds = sorted(set(small) & set(large))
        if len(seeds) < 2:
            continue
        diff = _ratio_differences(large, small, seeds)
        low, high = _paired_interval(diff, resamples, row=f"{teacher} 50k-10k")
        reading = (f"holds (>= -{tolerance})" if diff.mean() >= -tolerance
                   else f"fails (interval below -{tolerance})" if high < -tolerance else "below, within noise")
        lines.append(f"| {teacher} | {len(seeds)} | {np.mean([small[s]['ratio'] for s in seeds]):.3f} | "
                     f"{np.mean([large[s]['ratio'] for s in seeds]):.3f} | {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}] | {reading} |")
    if len(lines) == 2:
        return ""
    return ("More data, the same recipe: the default recipe's 50k students against its 10k students with the same "
            "distillation seeds, on the same evaluation episodes (bootstrap as above). *Below, within noise*: the mean "
            f"falls more than {tolerance} but the interval reaches -{tolerance}.\n\n" + "\n".join(lines))


def _student_shape(config: dict) -> str:
    """A student's layers in words, from its recipe: e.g. `CNN 8@5x5/2, 16@3x3/2 + 2x64` or `64 + GRU 32`."""
    hidden = config.get("hidden", [64, 64])
    mlp = f"{len(hidden)}x{hidden[0]}" if len(set(hidden)) == 1 and len(hidden) > 1 else "-".join(map(str, hidden))
    conv = config.get("conv") or []
    parts = [("CNN " + ", ".join(f"{c}@{k}x{k}/{st}" for c, k, st in conv) + " + " + mlp) if conv else f"{mlp} MLP"]
    if config.get("gru"):
        parts.append(f"GRU {config['gru']}")
    return " + ".join(parts)


def _cycles(cycles: float, us: float) -> str:
    return f"{cycles / 1e6:.2f} M cycles ({us / 1000:.1f} ms)" if cycles >= 5e5 else f"{cycles:,.0f} cycles ({us:,.0f} µs)"


def _kilobytes(n: int) -> str:
    return f"{n / 1000:.1f} KB" if n < 10_000 else f"{n / 1000:.0f} KB"


def privileged_racecar_table() -> str:
    """README's table for the privileged-teacher story: every record of benchmarks/results/privileged_racecar.json
    with its Cortex-M4 figures from privileged_racecar_m4.json (where measured)."""
    path = RESULTS / "privileged_racecar.json"
    if not path.exists():
        return ""
    results = json.loads(path.read_text())
    m4_path = RESULTS / "privileged_racecar_m4.json"
    m4 = {r["student_dir"]: r for r in json.loads(m4_path.read_text())["students"]} if m4_path.exists() else {}
    order = ["teacher-view", "rays", "rays*3", "rays-gru", "camera-cnn", "camera-tiny", "camera-tiny-attention"]
    lines = ["| env | student (sees) | params | labelled steps | laps: student / teacher | return ratio | distillation wall s | numpy p50 | Cortex-M4 (float C, 168 MHz) |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    runs = sorted(results["runs"], key=lambda r: (r["env"], order.index(r.get("student", r["student_view"]))))
    for r in runs:
        config = r["config"]
        chain = "privileged_teacher_lap_rate" in r  # a chain's second step: its teacher is the camera-cnn student
        sees = (f"`{config['student_view']}`" if config.get("student_view") else
                "`camera`, its teacher's view" if chain else "the teacher's own observation")
        what = f"{_student_shape(config)} (sees {sees})"
        laps = f"{r['student_lap_rate']:.0%} / {r['teacher_lap_rate']:.0%}"
        ratio = f"{r['ratio']:.3f}"
        if chain:
            what = f"chain step 2: {what}, distilled from the camera CNN above"
            if config.get("attention_weight"):
                what += f" with spatial attention transfer (`attention_weight: {config['attention_weight']:g}`)"
            laps += f" (privileged teacher: {r['privileged_teacher_lap_rate']:.0%})"
            ratio += " vs the camera CNN"
        if not isinstance(r.get("decided", {}).get("epochs_per_round"), list):
            what += " *"  # run before the default recipe decided epochs per round
        target = m4.get(r.get("student_dir", ""))
        on_m4 = (f"{_cycles(target['cycles_per_inference'], target['us_per_inference'])}, flash "
                 f"{_kilobytes(target['flash_bytes'])}, RAM {_kilobytes(target['ram_bytes'])}"
                 + (", bit-identical to the host" if target["outputs_equal_host"] else ", DIFFERS from the host")
                 + ("" if target.get("float_loop") else " †") if target else "")
        lines.append(f"| {r['env']} | {what} | {r['student_params']:,} | {r['labelled_steps'] // 1000}k | {laps} | {ratio} | "
                     f"{r['wall_s']:.0f} | {r['numpy_latency_us']['p50']:.0f} µs | {on_m4} |")
    return ("Teacher and student on the same " f"{runs[0]['episodes'] if runs else 50}"
            " seeded tracks (from 1,000,000), one distillation seed; each student is the default recipe plus the keys "
            "in `STUDENTS` of `benchmarks/privileged_racecar.py` (its record's `config`); wall time is collection + "
            "training on the 2 cores, shared with another benchmark. *: run with the default recipe of before 2026-11-30, "
            "which decided the epochs once from the last round's data (docs/techniques.md). †: Cortex-M4 figures measured "
            "with GCC's float loop of before 2026-12-01 (one VLDR per weight); the hand-scheduled loop since "
            "(policykd/c_cortex_m.py) takes a fifth off the HalfCheetah MLP's cycles (docs/deployment.md); "
            "`python benchmarks/privileged_racecar_m4.py` re-measures a student whose record is removed. Raw records: "
            "`benchmarks/results/privileged_racecar.json`, `privileged_racecar_m4.json`.\n\n" + "\n".join(lines))


def distill_table() -> str:
    records = json.loads((RESULTS / "distill_zoo.json").read_text())
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["env"], r["labelled_steps"], r["data_mode"])].append(r)
    lines = ["| env | labelled steps | data | ratio per seed | mean ratio | student return (mean of seeds) | teacher return | distill wall s (max) | student / teacher actor params |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for (env, steps, mode), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        rs = sorted(rs, key=lambda r: r["seed"])
        ratios = [r["ratio"] for r in rs]
        lines.append(
            f"| {env} | {steps:,} | {mode} | {' / '.join(f'{x:.3f}' for x in ratios)} | {np.mean(ratios):.3f} | "
            f"{np.mean([r['student_return'] for r in rs]):.1f} | {rs[0]['teacher_return']:.1f} | {max(r['wall_s'] for r in rs):.0f} | "
            f"{rs[0]['student_params']:,} / {rs[0]['teacher_actor_params']:,} |")
    return "\n".join(lines)


def throughput_table() -> str:
    path = RESULTS / "collection_throughput.json"
    if not path.exists():
        return ""
    lines = ["| teacher | envs | raw env steps/s (random actions) | one labelling process: steps/s (fraction) | "
             "local backend: steps/s (fraction) |", "|---|---:|---:|---:|---:|"]
    for t in json.loads(path.read_text())["rows"]:
        lines.append(f"| {t['teacher']} | {t['n_envs']} | {t['raw_steps_per_s']:.0f} | "
                     f"{t['one_labelling_process_steps_per_s']:.0f} ({t['one_labelling_process_fraction']:.2f}) | "
                     f"{t['local_backend_steps_per_s']:.0f} ({t['local_backend_fraction']:.2f}) |")
    return "\n".join(lines)


def action_noise_table() -> str:
    path = RESULTS / "teacher_action_noise.json"
    if not path.exists():
        return ""
    records = json.loads(path.read_text())["records"]
    sigmas = sorted({r["sigma"] for r in records if r["perturbation"] == "gaussian"})
    lines = ["| teacher | episodes | batch 1 | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |",
             "|---|---:|" + "---:|" * (1 + len(sigmas))]
    for env, episodes in dict.fromkeys((r["env"], r["episodes"]) for r in records):
        rows = [r for r in records if (r["env"], r["episodes"]) == (env, episodes)]

        def cell(rs: list[dict]) -> str:
            rs = sorted(rs, key=lambda r: r["noise_seed"] or 0)
            if not rs:
                return "-"
            return (f"{' / '.join(format(r['ratio'], '.3f') for r in rs)} "
                    f"({' / '.join(str(r['short_episodes']) for r in rs)})")
        cells = [cell([r for r in rows if r["perturbation"] == "batch-1"])]
        cells += [cell([r for r in rows if r["perturbation"] == "gaussian" and r["sigma"] == s]) for s in sigmas]
        lines.append(f"| ppo {env} | {episodes} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hopper_long_table() -> str:
    path = RESULTS / "hopper_long_eval.json"
    if not path.exists():
        return ""
    d = json.loads(path.read_text())
    n = d["eval_seeds"][1] - d["eval_seeds"][0] + 1
    lines = [f"| policy | ratio on the benchmark's 20 seeds | ratio on {n} seeds | falls in 20 | falls in {n} |",
             "|---|---:|---:|---:|---:|",
             f"| teacher | 1.000 | 1.000 | {d['teacher_falls_first_20']} | {d['teacher_falls_all']} |"]
    noise_path = RESULTS / "teacher_action_noise.json"
    perturbed = [r for r in json.loads(noise_path.read_text())["records"] if r["env"] == d["env"] and r["episodes"] == n
                 and r["eval_seeds"] == d["eval_seeds"]] if noise_path.exists() else []
    for r in sorted(perturbed, key=lambda r: (r["perturbation"], r["sigma"] or 0, r["noise_seed"] or 0)):
        returns, lengths = np.array(r["perturbed_returns"]), np.array(r["perturbed_lengths"])
        label = ("teacher, batch 1 (one env at a time)" if r["perturbation"] == "batch-1"
                 else f"teacher + noise sigma {r['sigma']:g}, noise seed {r['noise_seed']}")
        lines.append(f"| {label} | {returns[:20].mean() / np.mean(d['teacher_returns'][:20]):.3f} | "
                     f"{returns.mean() / np.mean(d['teacher_returns']):.3f} | {int((lengths[:20] < TIME_LIMIT).sum())} | "
                     f"{int((lengths < TIME_LIMIT).sum())} |")
    lines += [f"| student, distillation seed {r['seed']} | {r['ratio_first_20']:.3f} | {r['ratio_all']:.3f} | "
              f"{r['falls_first_20']} | {r['falls_all']} |" for r in d["students"]]
    return "\n".join(lines)


def hopper_recipes_table() -> str:
    path = RESULTS / "hopper_recipes.json"
    if not path.exists():
        return ""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in json.loads(path.read_text()):
        groups[(r["labelled_steps"], r["variant"])].append(r)
    lines = ["| labelled steps | recipe change | ratio per seed | falls in 20 per seed | held-out KL (mean of seeds) | distill wall s (max) |",
             "|---:|---|---|---|---:|---:|"]
    for steps in sorted({k[0] for k in groups}, reverse=True):
        variants = sorted((v for s, v in groups if s == steps), key=lambda v: v != "recipe")
        for variant in variants:
            rs = sorted(groups[(steps, variant)], key=lambda r: r["seed"])
            lines.append(f"| {steps:,} | {variant if variant != 'recipe' else '(none: the benchmark recipe)'} | "
                         f"{' / '.join(format(r['ratio'], '.3f') for r in rs)} | {' / '.join(str(r['student_falls']) for r in rs)} | "
                         f"{np.mean([r['agreement_kl'] for r in rs]):.3f} | {max(r['wall_s'] for r in rs):.0f} |")
        small = [r for v in variants for r in groups[(steps, v)] if r["config"]["hidden"] == [64, 64]]
        falls, episodes = sum(r["student_falls"] for r in small), sum(len(r["student_returns"]) for r in small)
        lines.append(f"| {steps:,} | every 2x64 student above | {len(small)} students | {falls} falls in {episodes} episodes "
                     f"({falls / episodes:.1%}); students with no fall: {sum(r['student_falls'] == 0 for r in small)} | | |")
    return "\n".join(lines)


def teacher_table() -> str:
    path = RESULTS / "zoo_teacher_eval.json"
    if not path.exists():
        return ""
    lines = ["| teacher | published return | `policykd teacher eval` (10 episodes) | within published std |", "|---|---:|---:|---|"]
    for r in json.loads(path.read_text())["records"]:
        lines.append(f"| {r['algo']} {r['env']} | {r['published_mean']} +- {r['published_std']} | {r['mean']:.1f} +- {r['std']:.1f} | "
                     f"{'yes' if r['within_published_std'] else 'no'} |")
    return "\n".join(lines)


def agents_table() -> str:
    rows = []
    for card_path in sorted((ROOT / "agents").glob("*/model_card.json")):
        card = json.loads(card_path.read_text())
        ev, tr = card["evaluation"], card["training"]
        success = f"{ev['success_rate']:.0%}" if "success_rate" in ev else "-"
        rows.append(f"| `agents/{card['name']}` | {card['env']['env_id']} | {card['algo'].upper()} {tr['config']['policy_kwargs'].get('net_arch')} | "
                    f"{tr['n_timesteps']:,} | {tr['wall_s']:.0f} | {ev['mean']:.1f} +- {ev['std']:.1f} | {success} |")
    if not rows:
        return ""
    return "\n".join(["| teacher | env | algo, net | env steps | train wall s | return (20 seeded episodes) | success |",
                      "|---|---|---|---:|---:|---:|---:|", *rows])


def agents_distill_table() -> str:
    path = RESULTS / "distill_agents.json"
    if not path.exists():
        return ""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in json.loads(path.read_text()):
        groups[(r["teacher"], r["labelled_steps"], r["data_mode"])].append(r)
    lines = ["| teacher | labelled steps | data | ratio per seed | teacher return | student return (mean of seeds) | "
             "success teacher / student per seed | distill wall s (max) |", "|---|---:|---|---|---:|---:|---|---:|"]
    for (teacher, steps, mode), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        success = ("-" if rs[0]["teacher_success_rate"] is None else
                   " / ".join(f"{r['teacher_success_rate']:.0%} vs {r['student_success_rate']:.0%}" for r in rs))
        lines.append(f"| `{teacher}` | {steps:,} | {mode} | {' / '.join(format(r['ratio'], '.3f') for r in rs)} | "
                     f"{rs[0]['teacher_return']:.1f} | {np.mean([r['student_return'] for r in rs]):.1f} | {success} | "
                     f"{max(r['wall_s'] for r in rs):.0f} |")
    return "\n".join(lines)


def env_throughput_table() -> str:
    path = RESULTS / "env_throughput.json"
    if not path.exists():
        return ""
    lines = ["| env | raw steps/s (one process, random actions, resets included) |", "|---|---:|"]
    lines += [f"| {r['env']}{f' + `{v}` student view' if (v := r.get('view')) else ''} | {r['steps_per_s']:.0f} |"
              for r in json.loads(path.read_text())]
    return "\n".join(lines)


def deploy_tables() -> str:
    path = RESULTS / "deploy_halfcheetah.json"
    if not path.exists():
        return ""
    d = json.loads(path.read_text())
    lines = [f"Deployment of a 2x64 student ({d['student_params']:,} parameters) of the rl-zoo PPO HalfCheetahBullet teacher "
             f"({d['teacher_actor_params']:,} actor parameters), `python benchmarks/deploy.py` "
             "(`benchmarks/results/deploy_halfcheetah.json`, histograms in `benchmarks/results/latency_halfcheetah.png`). "
             "Batch 1, one thread, pinned, 10,000 calls after warm-up, one run:", "",
             "| path | p50 us | p99 us | max us | p50 speed-up vs SB3 predict() |", "|---|---:|---:|---:|---:|"]
    for name, lat in d["latency_us"].items():
        lines.append(f"| {name} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.1f} | {d['speedup_vs_sb3_predict_p50'][name]:.1f}x |")
    lines += ["", "`c` is timed from C (16 calls per clock reading); `c-ctypes` and `numpy` from Python. On this shared 2-core VM "
              "the tails move between runs (three runs of the same build gave numpy p99 8.7, 15.6 and 8.7 us, p50 7.7, 12.1 and 7.7 us; the middle run was slower on every path, SB3 predict included), so compare "
              "paths within one run. "
              "Parity, max |action - torch student action| over 1,000 real + 1,000 random observations:", "",
              "| " + " | ".join(d["parity_max_abs_diff"]) + " |", "|" + "---:|" * len(d["parity_max_abs_diff"]),
              "| " + " | ".join(f"{v:.2g}" for v in d["parity_max_abs_diff"].values()) + " |", "",
              "| target | export | flash | RAM (static + stack) | instructions / inference | estimated time | output vs host |", "|---|---|---:|---:|---:|---:|---|"]
    for t in d["embedded"]:
        est = (f"{t['us_per_inference']:.0f} us at {t['clock_hz'] / 1e6:.0f} MHz ({t['cycles_per_inference']:,.0f} cycles, TRM model; "
               f"{t['us_per_inference_flat_cpi']:.0f} us at a flat CPI of {t['cpi_flat']})" if "us_per_inference" in t else "not timed (user-mode qemu)")
        instr = f"{t['instructions_per_inference']:,.0f}" if "instructions_per_inference" in t else "-"
        lines.append(f"| {t['target']} | {t['export_format']} | {t['flash_bytes'] / 1024:.1f} KiB | {t['ram_bytes']} B | {instr} | {est} | "
                     f"{'bit-identical' if t['outputs_equal_host'] else 'max diff ' + format(t['max_abs_diff_vs_host'], '.2g')} |")
    return "\n".join(lines)


def _ablation_groups() -> tuple[dict, dict[tuple, list[dict]]]:
    """benchmarks/results/ablation_techniques.json: (teachers, {(teacher, labelled steps, hidden, variant): runs})."""
    path = RESULTS / "ablation_techniques.json"
    results = json.loads(path.read_text()) if path.exists() else {"teachers": {}, "runs": []}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results["runs"]:
        groups[(r["teacher"], r["labelled_steps"], tuple(r["hidden"]), r["variant"])].append(r)
    return results["teachers"], {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def ablation_techniques_table() -> str:
    """README's ablation table (benchmarks/ablation_techniques.py): per teacher, budget and student, each variant's
    ratio per seed, mean with its change against `base` (the default recipe, same seeds), worst seed, failures, the
    held-out KL and wall time."""
    teachers, groups = _ablation_groups()
    if not groups:
        return ""
    variant_order = ["base", "bc", "mse", "no-value", "kl-mean-per-dim", "kl-mean-teacher", "kl-shared-std", "std-head-detached", "no-sampling", "tau=2", "hints", "attention", "teacher-data", "label_every=1", "ensemble", "ensemble-agreement", "ensemble-mixture", "ensemble-return"]
    lines = ["| teacher (noise floor) | labelled steps | student | variant | ratio per seed | mean ratio (vs base) | worst seed | "
             "failures / 100 per seed (teacher) | held-out KL | wall s |",
             "|---|---:|---|---|---|---:|---:|---|---:|---:|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] != (64, 64), k[2], variant_order.index(k[3]) if k[3] in variant_order else 99)):
        teacher, steps, hidden, variant = key
        rs = groups[key]
        ratios = [r["ratio"] for r in rs]
        base = groups.get((teacher, steps, hidden, "base"), [])
        paired = {r["seed"]: r["ratio"] for r in base}
        delta = [r["ratio"] - paired[r["seed"]] for r in rs if r["seed"] in paired]
        change = f" ({np.mean(delta):+.3f})" if variant != "base" and delta else ""
        t = teachers.get(teacher, {})
        floor = f" ({t['noise_floor_ratio']:.3f})" if "noise_floor_ratio" in t else ""
        failures = " / ".join(f"{r['student_failures'] * 100 / r['episodes']:g}" for r in rs) + \
            f" ({rs[0]['teacher_failures'] * 100 / rs[0]['episodes']:g})"
        lines.append(f"| {teacher}{floor} | {steps:,} | {'x'.join(map(str, hidden))} | {variant} | "
                     f"{' / '.join(f'{x:.3f}' for x in ratios)} | {np.mean(ratios):.3f}{change} | {min(ratios):.3f} | "
                     f"{failures} | {np.mean([r['heldout_kl'] for r in rs]):.3g} | {np.mean([r['wall_s'] for r in rs]):.0f} |")
    episodes = next(iter(groups.values()))[0]["episodes"]
    return (f"One change at a time from the default recipe (KL + value, DAgger, 2x64), each on the teacher's {episodes} "
            "evaluation seeds (from 1,000,000) with distillation seeds 0-2; (vs base): the mean change of the ratio against "
            "the default recipe with the same distillation seed. Raw records: `benchmarks/results/ablation_techniques.json` "
            "(`python benchmarks/ablation_techniques.py`), plot `benchmarks/results/ablation_techniques.png`.\n\n"
            + "\n".join(lines))


def ablation_techniques_plot() -> Path | None:
    """One panel per teacher: each variant's ratio per distillation seed (dots) and mean (bar), per budget."""
    from matplotlib.figure import Figure

    _, groups = _ablation_groups()
    teachers = sorted({k[0] for k in groups})
    if not teachers:
        return None
    fig = Figure(figsize=(5.2 * len(teachers), 4.4), layout="constrained")
    axes = fig.subplots(1, len(teachers), squeeze=False)[0]
    budgets = sorted({k[1] for k in groups})
    for ax, teacher in zip(axes, teachers):
        keys = sorted((k for k in groups if k[0] == teacher), key=lambda k: (k[2] != (64, 64), k[3] != "base", k[2], k[3]))
        labels = list(dict.fromkeys(f"{k[3]}" + ("" if k[2] == (64, 64) else f" {'x'.join(map(str, k[2]))}") for k in keys))
        for b, budget in enumerate(budgets):
            offset = (b - (len(budgets) - 1) / 2) * 0.35
            for key in (k for k in keys if k[1] == budget):
                row = labels.index(key[3] + ("" if key[2] == (64, 64) else f" {'x'.join(map(str, key[2]))}"))
                ratios = [r["ratio"] for r in groups[key]]
                ax.barh(row + offset, np.mean(ratios), height=0.32, color=f"C{b}", alpha=0.35,
                        label=f"{budget // 1000}k labelled steps" if row == 0 or key[3] == "base" else None)
                ax.plot(ratios, [row + offset] * len(ratios), "o", color=f"C{b}", ms=3)
        ax.axvline(1.0, color="gray", lw=1)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)  # the first variant (base) on top
        ratios = [r["ratio"] for k in keys for r in groups[k]]
        ax.set_xlim(max(0.0, min(0.9, min(ratios) - 0.02)), max(1.08, max(ratios) + 0.02))
        ax.set(xlabel="student / teacher return (dots: seeds, bar: mean)", title=teacher)
        ax.grid(axis="x", alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))
        ax.legend(unique.values(), unique.keys(), loc="lower left", fontsize=8)
    fig.savefig(ABLATION_PLOT, dpi=110)
    return ABLATION_PLOT


def ablation_tables() -> str:
    root = ROOT / "benchmarks" / "ablation_halfcheetah"
    parts = []
    for name, title in (("size_and_data", "student size x data mode"), ("loss", "loss variants (DAgger data)")):
        table = root / name / "results.md"
        if table.exists():
            parts += [f"Ablation on the zoo HalfCheetahBullet teacher, 10k labelled steps, distillation seed 0, 20 seeds: {title} "
                      f"(`benchmarks/ablation_halfcheetah/{name}/`, plot `pareto.png`):", "", table.read_text().strip(), ""]
    return "\n".join(parts)


def main() -> None:
    blocks = [
        "The default recipe on every teacher, against hard-label behaviour cloning with the same data, student and seeds:",
        one_recipe_table(),
        default_vs_bc_table(),
        more_data_table(),
        "The same benchmark with the default recipe of before the per-round epochs (epochs decided once from the last "
        "round's data; docs/techniques.md), kept for comparison:",
        one_recipe_table("one_recipe_epochs_from_last_round.json"),
        "Earlier, tuned recipes: distillation of the rl-zoo PPO Bullet teachers into 2x64 students (`python benchmarks/distill_zoo.py`; raw records in "
        "`benchmarks/results/distill_zoo.json`). Teacher and student run deterministically on the same 20 seeds "
        "(1000000-1000019) in the same run; ratio = student mean return / teacher mean return; wall time is collection + "
        "training on this 2-core machine, evaluation excluded. Recipes: `configs/distill/bench_10k.yaml`, `bench_50k.yaml`, "
        "with per-teacher settings on top for Reacher (listed in each record's `env_overrides`; the default recipe "
        "above needs none).",
        distill_table(),
        "The noise floor of that ratio: each teacher against itself, on the same seeds, with its actions changed a little "
        "(`python benchmarks/teacher_action_noise.py`; `benchmarks/results/teacher_action_noise.json`). *batch 1*: the same "
        "teacher run one env at a time instead of two, so its actions differ in the last float32 bits only; *sigma*: i.i.d. "
        "Gaussian noise of that std added to every action, noise seeds 0 / 1 / 2. Each cell: ratio to the teacher's "
        "reference run (episodes that ended early). A student whose actions are off by about sigma can be expected near "
        "these ratios:",
        action_noise_table(),
        "Hopper at 50k (DAgger) on 100 evaluation seeds instead of 20 (`python benchmarks/hopper_long_eval.py`; "
        "`benchmarks/results/hopper_long_eval.json`); a fall is an episode that ends before its 1000 steps. Ratios are "
        "to the teacher's reference run; the perturbed-teacher rows come from `benchmarks/teacher_action_noise.py "
        "--envs HopperBulletEnv-v0 --episodes 100 --sigmas 1e-6`:",
        hopper_long_table(),
        "Hopper recipe changes side by side, one setting at a time, DAgger, on the benchmark's 20 seeds (the teacher "
        "falls in none of them) (`python benchmarks/hopper_recipes.py`; `benchmarks/results/hopper_recipes.json`):",
        hopper_recipes_table(),
        "Labelled collection against the raw vector env, side by side (`python benchmarks/collection_throughput.py`; "
        "`benchmarks/results/collection_throughput.json`):",
        throughput_table(),
        "Loading the third-party rl-zoo teachers reproduces their published returns (`python benchmarks/zoo_teacher_eval.py`):",
        teacher_table(),
        "Teachers policykd trained itself (`policykd teacher train configs/teachers/*.yaml`, model cards in `agents/*/`):",
        agents_table(),
        "Their distillation into 2x64 students (`python benchmarks/distill_agents.py`, recipe `configs/distill/agents.yaml`; "
        "raw records in `benchmarks/results/distill_agents.json`), teacher and student on the same 20 seeds; success is the "
        "env's final `info['is_success']`: a completed lap for the racecar, the flange within 5 cm of the target for the arm:",
        agents_distill_table(),
        "Raw speed of the envs (`python benchmarks/env_throughput.py`):",
        env_throughput_table(),
        deploy_tables(),
        ablation_tables(),
    ]
    text = "\n\n".join(b for b in blocks if b)
    _replace_block(ROOT / "docs" / "benchmarks.md", BEGIN, END, text)
    _replace_block(ROOT / "README.md", HEADLINE_BEGIN, HEADLINE_END, "\n\n".join(b for b in (one_recipe_table(), default_vs_bc_table(), more_data_table()) if b))
    _replace_block(ROOT / "README.md", PRIVILEGED_BEGIN, PRIVILEGED_END, privileged_racecar_table())
    _replace_block(ROOT / "README.md", ABLATION_BEGIN, ABLATION_END, ablation_techniques_table())
    ablation_techniques_plot()


def _replace_block(page: Path, begin: str, end: str, text: str) -> None:
    content = page.read_text()
    start, stop = content.index(begin) + len(begin), content.index(end)
    page.write_text(content[:start] + "\n" + text + "\n" + content[stop:])


if __name__ == "__main__":
    main()
