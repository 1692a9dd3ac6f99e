"""The run directory's lock: one holder at a time, named when it refuses another; a killed holder's lock is
taken over; a directory inside or around one in use is refused; nothing is left behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtlssl.engine import run_lock
from mtlssl.errors import UserError

# Holds the locks of argv[1] (directories joined by os.pathsep, each inside the ones before it, as a sweep's
# launching process and its job), naming itself argv[3]; prints "held", then waits for its stdin to close; or,
# with argv[2] "kill", is SIGKILLed while holding them.
HOLDER = r"""
import os, signal, sys
from pathlib import Path
from mtlssl.engine import run_lock
held = []
for directory in sys.argv[1].split(os.pathsep):
    run_lock.acquire(Path(directory), sys.argv[3], ignore=tuple(held))
    held.append(Path(directory))
print("held", flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def hold(*directories: Path, then: str = "wait", what: str = "mtlssl train-mtl") -> subprocess.Popen:
    """Another process holding the ``directories``' locks (until its stdin closes), or killed while holding them."""
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, os.pathsep.join(map(str, directories)), then, what],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    if then == "kill":
        assert holder.wait(timeout=60) == -signal.SIGKILL
    return holder


def let_go(holder: subprocess.Popen) -> None:
    holder.communicate(timeout=60)
    assert holder.returncode == 0


@pytest.fixture(autouse=True)
def nothing_held() -> Iterator[None]:
    yield
    run_lock.release_all()  # a failed test must not leave this process holding a directory


def test_a_held_directory_is_refused_in_this_process_too(tmp_path: Path) -> None:
    run_dir, link = tmp_path / "run", tmp_path / "link"
    run_dir.mkdir()
    link.symlink_to(run_dir)
    lock = run_lock.acquire(run_dir, "mtlssl pretrain")
    record = json.loads((run_dir / ".lock").read_text())
    assert (record["pid"], record["host"], record["what"]) == (os.getpid(), socket.gethostname(), "mtlssl pretrain")
    for again in (run_dir, link, Path(os.path.relpath(run_dir))):  # the same directory, however named
        with pytest.raises(UserError, match=f"is in use by another mtlssl run \\(mtlssl pretrain, PID {os.getpid()} "):
            run_lock.acquire(again, "mtlssl pretrain")
    lock.release()
    assert not (run_dir / ".lock").exists()  # released: nothing left in the run directory
    run_lock.acquire(link, "mtlssl pretrain").release()  # and free again


def test_a_live_holder_is_named_with_its_host_and_pid_and_keeps_its_lock(tmp_path: Path) -> None:
    holder = hold(tmp_path)
    before = (tmp_path / ".lock").read_bytes()
    with pytest.raises(UserError) as err:
        run_lock.acquire(tmp_path, "mtlssl train-mtl")
    message = str(err.value)
    for phrase in (f"'{tmp_path}' is in use by another mtlssl run (mtlssl train-mtl, PID {holder.pid} on host "
                   f"{socket.gethostname()}, started ", f"kill {holder.pid} on {socket.gethostname()}",
                   "hydra.run.dir=<dir>"):
        assert phrase in message, message
    assert (tmp_path / ".lock").read_bytes() == before  # the refused one wrote nothing
    assert run_lock.in_use(tmp_path) is not None
    let_go(holder)
    assert not (tmp_path / ".lock").exists() and run_lock.in_use(tmp_path) is None


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    dead = hold(tmp_path, then="kill")
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == dead.pid  # its file stays: SIGKILL runs nothing
    assert run_lock.in_use(tmp_path) is None  # but the kernel released its lock when it died
    lock = run_lock.acquire(tmp_path, "mtlssl train-mtl")
    assert lock.took_over is not None and lock.took_over.pid == dead.pid
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_a_directory_inside_or_around_one_in_use_is_refused(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline"
    holder = hold(pipeline, what="mtlssl pipeline")
    stage = pipeline / "pretrain"
    stage.mkdir()
    with pytest.raises(UserError, match=f"it lies inside the run directory '{pipeline}', which is in use by another "
                                        f"mtlssl run \\(mtlssl pipeline, PID {holder.pid} "):
        run_lock.acquire(stage, "mtlssl pretrain")
    run_lock.acquire(stage, "mtlssl train-mtl sweep job", ignore=(pipeline,)).release()  # a sweep's own job
    let_go(holder)

    holder = hold(stage, what="mtlssl pretrain")
    with pytest.raises(UserError, match=f"it holds the run directory '{stage}', which is in use"):
        run_lock.acquire(pipeline, "mtlssl pipeline")
    let_go(holder)
    run_lock.acquire(pipeline, "mtlssl pipeline").release()


def test_a_foreign_lock_file_above_is_not_taken_for_a_run(tmp_path: Path) -> None:
    """A ``.lock`` that another program holds, without mtlssl's record in it, does not make a directory busy."""
    (tmp_path / ".lock").write_text("some other program's lock\n")
    with open(tmp_path / ".lock") as f:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX)
        (tmp_path / "run").mkdir()
        run_lock.acquire(tmp_path / "run", "mtlssl pretrain").release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_keeps_nor_releases_the_lock(tmp_path: Path) -> None:
    """A DataLoader worker is a fork: its copy of the descriptor is closed, without unlocking the parent's."""
    lock = run_lock.acquire(tmp_path, "mtlssl pretrain")
    pid = os.fork()
    if pid == 0:  # the child: exit at once (the fork hook has already closed its copy)
        os._exit(0 if not run_lock._held else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the child held nothing
    assert run_lock.in_use(tmp_path) is not None and (tmp_path / ".lock").exists()  # the parent still does
    lock.release()


def test_where_the_file_system_cannot_lock_the_holders_pid_is_checked(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """E.g. Lustre mounted without flock: a live holder on this host still refuses; a dead one, or one on another
    host (which cannot be checked), is taken over, and the lock says it is unchecked."""
    live, dead, elsewhere = tmp_path / "live", tmp_path / "dead", tmp_path / "elsewhere"
    holder = hold(live)  # (the holders lock for real: only this process's file system "cannot")
    killed = hold(dead, then="kill")
    elsewhere.mkdir()
    (elsewhere / ".lock").write_text(json.dumps({"host": "node-7", "pid": 1, "started": "?", "what": "mtlssl x"}))

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    with pytest.raises(UserError, match=f"is in use by another mtlssl run \\(mtlssl train-mtl, PID {holder.pid} "):
        run_lock.acquire(live, "mtlssl train-mtl")
    assert run_lock.in_use(live) is not None and run_lock.in_use(dead) is None
    for directory, previous in ((dead, killed.pid), (elsewhere, 1)):
        lock = run_lock.acquire(directory, "mtlssl train-mtl")
        assert lock.took_over is not None and lock.took_over.pid == previous
        assert lock.unchecked == "its file system does not support locks (Function not implemented)"
        lock.release()
        assert not (directory / ".lock").exists()
    monkeypatch.undo()
    let_go(holder)
