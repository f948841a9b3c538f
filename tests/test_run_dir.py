import json
import subprocess
import sys

import pytest

from policykd.errors import PolicyKDError
from policykd.run_dir import RunLock, check_same_teacher, read_run_record, resolve_run_dir


def test_run_dir_stays_inside_out_dir(tmp_path):
    assert resolve_run_dir(tmp_path, "a") == tmp_path / "a"
    for name in ("..", "../x", "a/../../x"):
        with pytest.raises(PolicyKDError, match="would leave --out-dir"):
            resolve_run_dir(tmp_path / "runs", name)


def test_only_a_policykd_run_record_is_accepted(tmp_path):
    with pytest.raises(PolicyKDError, match="not a policykd run"):
        read_run_record(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(PolicyKDError, match="corrupt"):
        read_run_record(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"config": {}, "teacher": {}, "format": "something-else"}))
    with pytest.raises(PolicyKDError, match="not a policykd run record"):
        read_run_record(tmp_path)
    record = {"config": {"seed": 0}, "teacher": {"sha256": "a" * 64, "env": {"env_id": "CartPole-v1"}}}
    (tmp_path / "config.json").write_text(json.dumps(record))  # runs saved before the format key existed
    assert read_run_record(tmp_path) == record


def test_same_teacher_means_same_file_and_env(tmp_path):
    record = {"teacher": {"sha256": "a" * 64, "env": {"env_id": "CartPole-v1"}}}
    same = {"path": "t.zip", "sha256": "a" * 64, "env": {"env_id": "CartPole-v1"}}
    check_same_teacher(tmp_path, record, same)
    with pytest.raises(PolicyKDError, match="not the file"):
        check_same_teacher(tmp_path, record, {**same, "sha256": "b" * 64})
    with pytest.raises(PolicyKDError, match="started on CartPole-v1"):
        check_same_teacher(tmp_path, record, {**same, "env": {"env_id": "Acrobot-v1"}})


def test_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path):
    with RunLock(tmp_path):
        with RunLock(tmp_path):  # the pipeline holds it around distill(), which takes it again
            pass
        other = subprocess.run(
            [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom policykd.run_dir import RunLock\n"
             "try:\n    RunLock(Path(sys.argv[1])).acquire()\nexcept Exception as e:\n    print(e)\n    sys.exit(3)\n", str(tmp_path)],
            capture_output=True, text=True)
        assert other.returncode == 3 and "another policykd process" in other.stdout
    free = subprocess.run([sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom policykd.run_dir import RunLock\n"
                           "RunLock(Path(sys.argv[1])).acquire()\n", str(tmp_path)], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_report_on_a_run_another_process_is_distilling_says_so(tmp_path):
    from policykd.errors import PolicyKDError
    from policykd.report import write_report
    from policykd.run_dir import RunLock, run_in_progress

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert not run_in_progress(run)
    with RunLock(run):  # flock: a second open file of the lock conflicts as another process's would
        assert run_in_progress(run)
        with pytest.raises(PolicyKDError, match=r"is being distilled now by another policykd process"):
            write_report(run)
    assert not run_in_progress(run)
    with pytest.raises(PolicyKDError, match=r"did not finish .* --resume"):
        write_report(run)
