"""Test-only fault injection, loaded through PYTHONPATH by the kill tests.

WINNOW_KILL_AT=<folder>:<n>:<before|after> makes the driver SIGKILL itself at
its n-th commit into <folder> (scored, stats, ...), before or after the move.
Workers never are: only the process that runs the job counts commits.
"""

import os
import signal

_spec = os.environ.get("WINNOW_KILL_AT")
if _spec:
    from pipeline.io import layout

    _folder, _count, _when = _spec.split(":")
    _seen = [0]
    _original = layout.commit_file

    def _commit(fs, temporary, final):
        import ray

        driver = ray.is_initialized() and ray._private.worker.global_worker.mode == ray.SCRIPT_MODE
        hit = driver and f"/{_folder}/" in final
        if hit:
            _seen[0] += 1
        if hit and _seen[0] == int(_count) and _when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        _original(fs, temporary, final)
        if hit and _seen[0] == int(_count) and _when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    layout.commit_file = _commit
