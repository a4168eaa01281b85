"""Run a candidate program plus its unit tests in a separate, resource-limited Python process.

Generated code is never executed in the harness process. Each run gets

* a fresh ``python -I`` interpreter (isolated mode: no user site, ``PYTHON*`` variables ignored),
* a fresh temporary directory as its working directory (removed afterwards),
* a stripped environment (``PATH``, ``LANG``, ``HOME``/``TMPDIR`` pointing into the temp dir),
* stdin connected to ``/dev/null``, stdout/stderr written to size-limited files,
* ``setrlimit`` limits set in ``preexec_fn``: address space, CPU seconds, file size, no core dumps,
* its own process group (``start_new_session``), killed as a whole on timeout and after exit,
* a wall-clock timeout,
* a *reliability guard* prelude (as in OpenAI's human-eval) that disables destructive functions
  such as ``os.system``, ``os.remove``, ``shutil.rmtree``, ``subprocess.Popen`` before the candidate
  runs.

A run passes only if the process exits with status 0 **and** prints a random per-run sentinel that
the harness appends after ``check(entry_point)``: a program that calls ``sys.exit(0)`` or
``os._exit(0)`` before the tests, or that never reaches them, does not pass.

This is a guard against accidents of model-generated code, not a security boundary against
adversarial code (use a container or VM for that).
"""

from __future__ import annotations

import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable

__all__ = [
    "ExecResult",
    "build_program",
    "run_program",
    "run_many",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_MEMORY_BYTES",
]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 2 * 1024**3
DEFAULT_FILE_SIZE_BYTES = 16 * 1024**2
STDERR_TAIL_CHARS = 2000

# Executed inside the child before the candidate code. Every name is looked up defensively so
# the prelude works on any platform / Python version.
_GUARD = r'''
def _bytecover_guard():
    import builtins, faulthandler, os, shutil, subprocess, sys
    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    for mod in (os, getattr(os, "posix", None) or sys.modules.get("posix")):
        if mod is None:
            continue
        for name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir",
                     "unlink", "rename", "renames", "replace", "truncate", "fork", "forkpty",
                     "setuid", "setgid", "chroot", "fchdir", "chdir", "chmod", "fchmod", "lchmod",
                     "chown", "fchown", "lchown", "lchflags", "execv", "execve", "execvp",
                     "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
                     "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                     "posix_spawn", "posix_spawnp", "popen", "setrlimit"):
            if hasattr(mod, name):
                setattr(mod, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput",
                 "getstatusoutput"):
        setattr(subprocess, name, None)
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "_ctypes"):
        sys.modules[name] = None
_bytecover_guard()
del _bytecover_guard
'''


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed run.

    status: ``"passed"`` (exit 0 and the sentinel after ``check`` was printed), ``"failed"`` (the
    tests ran and an assertion failed, or the program exited cleanly without running them),
    ``"timeout"`` (wall-clock or CPU limit), ``"error"`` (any other exception: syntax error,
    name error, memory limit, killed by a signal ...).
    """

    passed: bool
    status: str
    returncode: int | None
    duration_s: float
    stderr_tail: str = ""
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def build_program(candidate: str, test: str, entry_point: str, sentinel: str, guard: bool = True) -> str:
    """The full program text run in the child: guard, candidate, test code, ``check``, sentinel."""
    parts = []
    if guard:
        parts.append(_GUARD)
    parts.append(candidate)
    parts.append(test)
    parts.append(
        f"check({entry_point})\n"
        "import sys as _bytecover_sys\n"
        f"_bytecover_sys.stdout.write({sentinel!r} + '\\n')\n"
        "_bytecover_sys.stdout.flush()\n"
    )
    return "\n\n".join(p if p.endswith("\n") else p + "\n" for p in parts)


def _set_limits(memory_bytes: int | None, cpu_s: int | None, file_size_bytes: int | None) -> None:
    # Runs in the forked child before exec; keep it to plain syscalls.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if cpu_s:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    if file_size_bytes:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_bytes, file_size_bytes))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4 * n))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-n:]


def _last_exception_line(stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        line = line.strip()
        if line and not line.startswith(("File ", "^", "~")) and not line.startswith(" "):
            return line
    return ""


def run_program(
    candidate: str,
    test: str,
    entry_point: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
    file_size_bytes: int | None = DEFAULT_FILE_SIZE_BYTES,
    guard: bool = True,
    python: str | None = None,
) -> ExecResult:
    """Run ``candidate`` followed by ``test`` and ``check(entry_point)`` in a sandboxed subprocess.

    ``candidate`` is the complete program under test (e.g. prompt + completion + suffix).
    """
    sentinel = "__bytecover_check_done_" + secrets.token_hex(16)
    program = build_program(candidate, test, entry_point, sentinel, guard=guard)
    cpu_s = max(1, int(timeout_s + 0.999)) + 1
    with tempfile.TemporaryDirectory(prefix="bytecover-sbx-", ignore_cleanup_errors=True) as tmp:
        prog_path = os.path.join(tmp, "program.py")
        out_path = os.path.join(tmp, ".stdout")
        err_path = os.path.join(tmp, ".stderr")
        with open(prog_path, "w", encoding="utf-8") as f:
            f.write(program)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": tmp,
            "TMPDIR": tmp,
            "OMP_NUM_THREADS": "1",
        }
        t0 = time.perf_counter()
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            try:
                proc = subprocess.Popen(
                    [python or sys.executable, "-I", "-B", prog_path],
                    cwd=tmp,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_f,
                    stderr=err_f,
                    close_fds=True,
                    start_new_session=True,
                    preexec_fn=lambda: _set_limits(memory_bytes, cpu_s, file_size_bytes),
                )
            except OSError as e:  # could not even start
                return ExecResult(False, "error", None, time.perf_counter() - t0, "", f"spawn failed: {e}")
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                rc = proc.wait()
            finally:
                _kill_group(proc.pid)  # leftovers (forked children) of this run
        duration = time.perf_counter() - t0
        stderr_tail = _tail(err_path, STDERR_TAIL_CHARS)
        stdout_tail = _tail(out_path, 4096)
    ran_check = sentinel in stdout_tail
    if timed_out or rc == -signal.SIGXCPU:
        return ExecResult(False, "timeout", rc, duration, stderr_tail, f"timed out after {timeout_s:g} s")
    if rc == 0 and ran_check:
        return ExecResult(True, "passed", rc, duration, stderr_tail, "")
    if rc == 0:
        return ExecResult(False, "failed", rc, duration, stderr_tail, "exited before check() ran")
    last = _last_exception_line(stderr_tail)
    if rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = str(-rc)
        return ExecResult(False, "error", rc, duration, stderr_tail, f"killed by {sig}")
    if last.startswith("AssertionError"):
        return ExecResult(False, "failed", rc, duration, stderr_tail, last[:200])
    return ExecResult(False, "error", rc, duration, stderr_tail, last[:200] or f"exit status {rc}")


def run_many(
    jobs: Iterable[tuple[str, str, str]],
    *,
    max_workers: int | None = None,
    **kwargs,
) -> list[ExecResult]:
    """Run several ``(candidate, test, entry_point)`` jobs concurrently (threads, one subprocess each).

    Results come back in the order of ``jobs``. ``kwargs`` are passed to :func:`run_program`.
    """
    jobs = list(jobs)
    if max_workers is None:
        max_workers = max(1, min(8, (os.cpu_count() or 2)))
    if max_workers <= 1 or len(jobs) <= 1:
        return [run_program(*j, **kwargs) for j in jobs]
    with ThreadPoolExecutor(max_workers=max_workers) as ex:
        return list(ex.map(lambda j: run_program(*j, **kwargs), jobs))

