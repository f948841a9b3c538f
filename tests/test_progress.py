import pytest

from policykd.errors import PolicyKDError
from policykd.progress import Progress, RoundMetrics


def _metrics(round_index: int, **kw) -> RoundMetrics:
    return RoundMetrics(round=round_index, beta=0.5 ** round_index, labelled_steps=100 * (round_index + 1), loss=1.0, kl=0.5,
                        value_mse=0.1, student_acted=0.25, collect_steps_per_s=900.0, wall_s=2.0 * (round_index + 1), **kw)


def test_progress_accumulates_rounds_and_round_trips_through_json():
    progress = Progress()
    progress = progress.after_round(_metrics(0), buffer_chunks=1, episodes=3, gradient_steps=10)
    progress = progress.after_round(_metrics(1, eval_return_mean=12.0, eval_return_std=1.0), buffer_chunks=2, episodes=7,
                                    gradient_steps=20)
    assert (progress.rounds_done, progress.buffer_chunks, progress.gradient_steps, progress.wall_s) == (2, 2, 30, 4.0)
    record = progress.to_json()
    assert record["history"][0]["distill/kl"] == 0.5 and "eval/student_return_mean" not in record["history"][0]
    assert record["history"][1]["eval/student_return_mean"] == 12.0
    assert Progress.from_json(record, source="p.json") == progress


@pytest.mark.parametrize("damage", [
    lambda r: r.pop("rounds_done"),
    lambda r: r.update(history="x"),
    lambda r: r.update(episodes="many"),
    lambda r: r.update(rounds_done=5),          # history of 1 round
    lambda r: r.update(buffer_chunks=-1),
    lambda r: r["history"][0].pop("distill/kl"),
])
def test_a_damaged_progress_record_is_one_line_naming_the_file(damage):
    record = Progress().after_round(_metrics(0), buffer_chunks=1, episodes=3, gradient_steps=10).to_json()
    damage(record)
    with pytest.raises(PolicyKDError, match="p.json is corrupt.*another --run-name"):
        Progress.from_json(record, source="p.json")
