"""How much each Gaussian teacher's std varies from state to state: the weight the forward KL gives a state's mean
error is 1 / sigma^2 there, so a teacher whose std spans a wide range gets its unsure states' means barely matched
(docs/techniques.md, `kl_mean_scale`). Per teacher: 3,000 states of its own deterministic rollouts (one env, seed 0),
the 5th / 50th / 95th percentile of sigma per action dimension and the ratio of KL weights between its 5th and 95th
percentile states ((p95 / p5)^2, the largest over action dimensions). Writes benchmarks/results/teacher_std_spread.json.

    python benchmarks/teacher_std_spread.py
"""

from __future__ import annotations

import numpy as np
from one_recipe import ROOT, discover_teachers  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.rollout import collect
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

RESULTS = ROOT / "benchmarks" / "results" / "teacher_std_spread.json"
STATES = 3000


def main() -> None:
    rows = []
    for name, path in discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents").items():
        teacher = load_teacher(path)
        if teacher.family not in ("gaussian", "squashed_gaussian"):
            continue
        data = collect(teacher, steps=STATES, beta=1.0, seed=0, n_envs=1, sample_actions=False)
        std = np.exp(data["dist_log_std"])  # [STATES, A]
        p5, p50, p95 = np.percentile(std, [5, 50, 95], axis=0)
        rows.append({"teacher": name, "family": teacher.family, "states": STATES, "std_p5": p5.tolist(),
                     "std_p50": p50.tolist(), "std_p95": p95.tolist(), "kl_weight_ratio_p5_p95": float(np.max((p95 / p5) ** 2))})
        print(f"{name}: std p5 {p5.round(3).tolist()} p95 {p95.round(3).tolist()}, KL weight ratio {rows[-1]['kl_weight_ratio_p5_p95']:.1f}",
              flush=True)
    atomic_write_json(RESULTS, {"rows": rows, "versions": package_versions()})


if __name__ == "__main__":
    main()
