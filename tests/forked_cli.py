"""Run `python -m <module> <args>` in a fresh process forked from one that has already imported
videogen's entry points.

Every CLI test would otherwise spend ~6 s of its run importing torch, Lightning and Hydra
before doing anything; a forkserver imports them once per test worker and forks a clean child
per run. The child is what `python -m` would be: its own process, working directory,
environment, `sys.argv` and `__main__`, stdout / stderr to their own files, and an exit status
(negative for a signal) as `subprocess` reports it. The server has run no torch op, so no
thread pool is forked. Only the standard library is imported here: the server imports this
module to run its children.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# What `python -m videogen[.evaluate|.generate]` imports before it reads its arguments.
PRELOAD = ["videogen.train", "videogen.evaluate", "videogen.generate", __name__]


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _exit_status(code: object) -> int:
    """The status `sys.exit(code)` gives a Python process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(module: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:  # read by torch at import, which the server did without it
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for fd, path in ((1, out), (2, err)):
        file_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file_fd, fd)
        os.close(file_fd)
    sys.path.insert(0, cwd)  # as `python -m` puts the working directory first
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException:
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()  # what the interpreter runs at exit (os._exit below does not)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_forked(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """`subprocess.run([python, -m, module, *args], capture_output=True, text=True)`, forked."""
    with tempfile.TemporaryDirectory() as scratch:
        out, err = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        process = _context().Process(target=_child, args=(module, args, str(cwd), env, out, err))
        process.start()
        process.join(timeout)
        command = [sys.executable, "-m", module, *args]
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(
            command,
            process.exitcode,
            Path(out).read_text(errors="replace") if os.path.exists(out) else "",
            Path(err).read_text(errors="replace") if os.path.exists(err) else "",
        )
