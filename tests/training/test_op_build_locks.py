"""A DeepSpeed op build killed half-way leaves torch's lock file behind, and every later build would wait
for it forever: a training process that finds no other one alive clears such files, one that does not
leaves them to the live builder."""

from __future__ import annotations

import fcntl
from pathlib import Path

from twin.training.trainer import deepspeed_op_builds


def stale_lock(extensions_dir: Path) -> Path:
    lock = extensions_dir / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    return lock


def test_a_lock_left_by_a_killed_build_is_cleared(tmp_path: Path) -> None:
    lock = stale_lock(tmp_path)
    with deepspeed_op_builds(tmp_path):
        assert not lock.exists()


def test_a_lock_is_kept_while_another_training_process_runs(tmp_path: Path) -> None:
    lock = stale_lock(tmp_path)
    with open(tmp_path / "twin-training.lock", "a") as other:  # another open file: flock sees two holders
        fcntl.flock(other, fcntl.LOCK_SH)
        with deepspeed_op_builds(tmp_path):
            assert lock.exists()
    with deepspeed_op_builds(tmp_path):  # the other one ended: now the lock is stale
        assert not lock.exists()


def test_a_second_rank_leaves_the_first_ranks_build_alone(tmp_path: Path) -> None:
    with deepspeed_op_builds(tmp_path):
        lock = stale_lock(tmp_path)  # rank 0 is building
        with deepspeed_op_builds(tmp_path):  # rank 1 starts: it neither waits nor clears rank 0's lock
            assert lock.exists()
