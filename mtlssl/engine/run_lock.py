"""One run at a time in a run directory: an exclusive lock on ``<dir>/.lock``, held for the whole job.

Two runs launched into one directory at once would replace each other's checkpoints, metrics and config and
interleave their logs. ``acquire`` takes ``flock(LOCK_EX)`` on ``<dir>/.lock`` and writes the holder (host, PID,
start time, what it runs) into it for the refusal message; the lock of a process that dies, SIGKILL included,
is released by the kernel, so a relaunch (a SLURM requeue, the kill test) takes it over with nothing to clean.

- A launch into a directory in use, into a directory inside one in use (a pipeline's ``pretrain/`` while the
  pipeline runs) or over one in use inside it is refused with one message naming the holder.
- ``release`` deletes the file while still holding the lock, so a run leaves nothing behind; an acquirer that
  opened the file just before checks, once locked, that its path still names that file, and starts over if not.
- A lock is per open file, not per process: a second acquisition in the same process is refused as well.
- A forked child (a DataLoader worker) closes its inherited copy without unlocking (the parent keeps the lock).
- On a file system without locks (e.g. Lustre mounted without ``flock``), the holder written in the file is
  checked instead: a live process of that PID on this host refuses the launch; a holder on another host cannot
  be checked, and the run goes on with a warning (``RunLock.unchecked``).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mtlssl.errors import UserError

LOCK_NAME = ".lock"
# A probe of another directory's lock (``in_use``) holds it shared for a moment; an acquirer that meets that
# moment tries again for this long before it calls the directory busy.
BUSY_RETRY_S = 0.5
BUSY_POLL_S = 0.02
NESTED_DEPTH = 2  # run dirs looked for below a directory: a pipeline's stages (1), a sweep's jobs (2)
NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}  # flock on a file system without locks


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in its file."""

    host: str
    pid: int
    started: str
    what: str

    def describe(self) -> str:
        return f"{self.what}, PID {self.pid} on host {self.host}, started {self.started}"


@dataclass
class RunLock:
    """A held lock: its directory, the open file the kernel lock belongs to, and the holder it replaced."""

    directory: Path
    fd: int
    took_over: Holder | None = None  # the holder of a lock left by a process that died without releasing it
    unchecked: str | None = None  # why no kernel lock is held (a file system without locks)

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def release(self) -> None:
        """Delete the file, then unlock: a waiting acquirer finds the path gone and makes a new file."""
        if _held.get(self.directory) is not self:
            return
        del _held[self.directory]
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # a read-only filesystem by now: the kernel lock still goes with the close
            pass
        os.close(self.fd)


_held: dict[Path, RunLock] = {}  # this process's locks, by resolved directory


def held_here(directory: Path) -> RunLock | None:
    return _held.get(directory.resolve())


def parse_holder(text: str) -> Holder | None:
    """The holder a lock file's text names; None when it names none (being written, or not mtlssl's)."""
    try:
        data = json.loads(text)
        return Holder(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]),
                      what=str(data["what"]))
    except (ValueError, KeyError, TypeError):
        return None


def read_holder(path: Path) -> Holder | None:
    try:
        return parse_holder(path.read_text())
    except OSError:
        return None


def alive_here(holder: Holder | None) -> bool:
    """Whether ``holder`` is a live process of this host (where the file system cannot lock)."""
    if holder is None or holder.host != socket.gethostname() or holder.pid == os.getpid():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def in_use(directory: Path) -> Holder | None:
    """The holder of ``directory``'s lock when another open file holds it (another process, or another launch in
    this one), else None. A shared lock for a moment tells, without waiting and without making a file."""
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path)  # None for a foreign program's .lock: not a run of ours
    except OSError as err:
        if err.errno not in NO_LOCKS:
            raise
        holder = read_holder(path)
        return holder if alive_here(holder) else None
    finally:
        os.close(fd)  # closing releases the shared lock, if taken
    return None


def _busy(directory: Path, holder: Holder | None, where: str, key: str) -> UserError:
    who = holder.describe() if holder else "another process (it has not written its name yet)"
    stop = f"stop it (kill {holder.pid} on {holder.host})" if holder else "stop it"
    return UserError(f"{where} '{directory}' is in use by another mtlssl run ({who}); two runs in one directory "
                     f"would overwrite each other's checkpoints and records. Wait for it to end or {stop}, or "
                     f"launch into another directory with {key}=<dir>")


def _check_nested(directory: Path, ignore: tuple[Path, ...], key: str) -> None:
    """Refuse a directory inside a run in use, or holding one in use, e.g. a pipeline's stage dir."""
    inside = list(directory.parents)
    below = [p.parent for depth in range(1, NESTED_DEPTH + 1)
             for p in directory.glob("/".join(["*"] * depth) + f"/{LOCK_NAME}")]
    for other in [*inside, *below]:
        if other in ignore or held_here(other) is not None:  # this job's own sweep, or this process's
            continue
        holder = in_use(other)
        if holder is not None:
            where = "it lies inside" if other in inside else "it holds"
            raise UserError(f"{key}='{directory}': {where} the run directory '{other}', which is in use by another "
                            f"mtlssl run ({holder.describe()}); wait for it to end, or launch into another "
                            f"directory with {key}=<dir>")


class LocksUnsupported(OSError):
    """The file system refuses ``flock``."""


def _open_locked(path: Path) -> tuple[int, str] | None:
    """The open, exclusively locked lock file at ``path`` and what it held before; None while another holds it."""
    deadline = time.monotonic() + BUSY_RETRY_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(BUSY_POLL_S)
            continue
        except OSError as err:
            os.close(fd)
            if err.errno in NO_LOCKS:
                raise LocksUnsupported(err.errno, err.strerror) from err
            raise
        try:  # still the file at ``path``? (its holder may have deleted it between our open and our lock)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, os.pread(fd, 4096, 0).decode(errors="replace")
        os.close(fd)


def acquire(directory: Path, what: str, key: str = "hydra.run.dir", ignore: tuple[Path, ...] = ()) -> RunLock:
    """Hold ``directory``'s lock for this process (the directory must exist), or refuse naming the holder.
    ``ignore``: directories above whose lock is this job's own (a sweep's, held by the launching process)."""
    directory = directory.resolve()
    if held_here(directory) is not None:
        raise _busy(directory, _self(what), "run directory", key)
    _check_nested(directory, tuple(p.resolve() for p in ignore), key)
    path = directory / LOCK_NAME
    unchecked = None
    try:
        opened = _open_locked(path)
    except LocksUnsupported as err:  # no kernel lock: the holder's PID, where it is on this host
        if alive_here(read_holder(path)):
            raise _busy(directory, read_holder(path), "run directory", key) from None
        unchecked = f"its file system does not support locks ({err.strerror})"
        opened = _open_unlocked(path, key)
    except OSError as err:
        raise UserError(f"{directory} is not writable ({err.strerror or err}); choose another with {key}=<dir>") \
            from err
    if opened is None:
        raise _busy(directory, read_holder(path), "run directory", key)
    fd, before = opened
    lock = _held[directory] = RunLock(directory, fd, unchecked=unchecked)
    if before.strip():  # a killed holder's file: the kernel released its lock when it died
        lock.took_over = parse_holder(before) or Holder("?", 0, "?", before.strip()[:80])
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                         "started": datetime.now().astimezone().isoformat(timespec="seconds"), "what": what})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode(), 0)
    except OSError as err:  # e.g. a full disk
        lock.release()
        raise UserError(f"{directory} is not writable ({err.strerror or err}); choose another with {key}=<dir>") \
            from err
    return lock


def _open_unlocked(path: Path, key: str) -> tuple[int, str]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"{path.parent} is not writable ({err.strerror or err}); choose another with {key}=<dir>") \
            from err
    return fd, os.pread(fd, 4096, 0).decode(errors="replace")


def _self(what: str) -> Holder:
    return Holder(socket.gethostname(), os.getpid(), "earlier in this process", what)


def release_all() -> None:
    for lock in list(_held.values()):
        lock.release()


def _forget_in_child() -> None:
    """A forked child inherits the lock files' descriptors: close its copies without unlocking or deleting."""
    for lock in list(_held.values()):
        try:
            os.close(lock.fd)
        except OSError:
            pass
    _held.clear()


atexit.register(release_all)  # sys.exit, a preemption's exit 75, an error: the file goes; SIGKILL: the kernel's
os.register_at_fork(after_in_child=_forget_in_child)
