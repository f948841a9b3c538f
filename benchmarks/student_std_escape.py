"""Where a student's deterministic action parts from its teacher's, by how saturated the teacher's action is, and how
wide the student's std is there (docs/techniques.md, `kl_mean_scale: teacher`). The forward KL lets a student widen
its std where its mean is off (the best std there is sqrt(var_T + error^2)), which weakens the pull on that mean.

Each student acts deterministically on 30 evaluation seeds (from 1,000,000); at every state it visits the teacher is
asked too. States are binned by the teacher's |mean| (pre-tanh for squashed Gaussians). Per bin: states, mean
|student action - teacher action| (env units, largest over action dimensions), median student std / teacher std.
Writes benchmarks/results/student_std_escape.json.

    python benchmarks/student_std_escape.py agents/sac-Pendulum-v1 kl=runs/a/student bc=runs/b/student
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from one_recipe import EVAL_SEED, ROOT  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.students import load_student
from policykd.teachers import load_teacher

RESULTS = ROOT / "benchmarks" / "results" / "student_std_escape.json"
EPISODES = 30
MEAN_EDGES = (0.5, 1.0, 2.0, 3.0)  # bins of the teacher's |mean|: < 0.5, < 1, < 2, < 3, >= 3


def visited_states(teacher, student) -> tuple[float, np.ndarray]:
    """Mean return of the deterministic student and, per visited state, [|a_S - a_T|, |mean_T|, std_S / std_T] [N, 3]."""
    env, returns, rows = teacher.make_env(), [], []
    for episode in range(EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED + episode)
        done, total = False, 0.0
        while not done:
            action = student.act(obs[None])[0]
            target = teacher.action_dist(obs[None]).params
            with torch.no_grad():
                dist, _ = student(torch.as_tensor(obs[None], dtype=torch.float32))
            std_ratio = np.exp(dist.params["log_std"][0].numpy() - target["log_std"][0].numpy())
            rows.append((np.abs(action - teacher.act(obs[None])[0]).max(), np.abs(target["mean"][0].numpy()).max(),
                         float(np.median(std_ratio))))
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), np.asarray(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher")
    parser.add_argument("students", nargs="+", help="NAME=STUDENT_FOLDER")
    args = parser.parse_args()
    teacher = load_teacher(args.teacher)
    rows = []
    for entry in args.students:
        name, path = entry.split("=", 1)
        mean_return, states = visited_states(teacher, load_student(path))
        bins = np.digitize(states[:, 1], MEAN_EDGES)
        per_bin = [{"teacher_abs_mean_below": (list(MEAN_EDGES) + [None])[b], "states": int((bins == b).sum()),
                    "action_error": float(states[bins == b, 0].mean()) if (bins == b).any() else None,
                    "std_ratio_median": float(np.median(states[bins == b, 2])) if (bins == b).any() else None}
                   for b in range(len(MEAN_EDGES) + 1)]
        rows.append({"student": name, "path": path, "return": mean_return, "action_error": float(states[:, 0].mean()),
                     "bins": per_bin})
        print(f"{name}: return {mean_return:.1f}, |a_S - a_T| {states[:, 0].mean():.4f}; per |mean_T| bin "
              + ", ".join(f"<{b['teacher_abs_mean_below']}: n {b['states']} err {b['action_error'] or 0:.3f} "
                          f"std S/T {b['std_ratio_median'] or 0:.2f}" for b in per_bin), flush=True)
    atomic_write_json(RESULTS, {"teacher": args.teacher, "episodes": EPISODES, "eval_seed": EVAL_SEED, "rows": rows,
                                "versions": package_versions()})


if __name__ == "__main__":
    main()
