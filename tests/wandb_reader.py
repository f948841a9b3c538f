"""Read a W&B run file (`run-<id>.wandb`, as written offline) back without the W&B service: history, summary, config.

The file is a LevelDB-style log (32 KiB blocks; each chunk has a 7-byte header: crc32, length, type) of
`wandb_internal_pb2.Record` protobufs, after a 7-byte ':W&B' header. Used by the tests to check what a run logged.

W&B's service process may still be writing the file for a moment after `run.finish()` returns, so `read_run`
waits (up to `timeout_s`) for the run's closing `exit` record before it reads anything.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_FILE_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    records, pending, pos = [], b"", _FILE_HEADER
    while pos + 7 <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        if pos + 7 + length > len(data):
            break  # a chunk still being written
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            records.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            records.append(pending + payload)
    return records


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _finished_records(path: Path, timeout_s: float) -> list[Any]:
    """The file's parsed records once its `exit` record is there; polls every 0.1 s until `timeout_s`."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout_s
    while True:
        records = [pb.Record.FromString(raw) for raw in _records(path)]
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no exit record after {timeout_s:.0f} s: the run did not finish")
        time.sleep(0.1)


def read_run(run_file: str | Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """{'history': [{metric: value} per log call], 'summary': {...}, 'config': {...}, 'artifacts': [names]}."""
    history, summary, config, artifacts = [], {}, {}, []
    for record in _finished_records(Path(run_file), timeout_s):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "run":
            config.update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "artifact":
            artifacts.append(record.artifact.name)
    return {"history": history, "summary": summary, "config": config, "artifacts": artifacts}
