"""The bench's CPU accounting: a job's processes by kind, the rest of the machine apart."""

from __future__ import annotations

import subprocess
import sys
import time

from pipeline.bench.cpu_use import ELSE, cpu_use

SPIN = "import sys, time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"


def test_a_model_actors_cpu_is_credited_to_model_actors():
    with cpu_use(interval=0.1) as used:
        # Ray titles the model actor's process after ClipScorer; here its argv says so.
        subprocess.run([sys.executable, "-c", SPIN, "MapWorker(ClipScorer)"], check=True)
    assert used.by_kind["model actors"] * used.seconds > 0.7
    assert used.by_kind["read + tokenize"] == 0
    assert "model actors" in used.describe()


def test_cpu_used_outside_the_job_is_told_apart(tmp_path):
    done = tmp_path / "done"
    spin = SPIN + f"open({str(done)!r}, 'w').close()\n"
    with cpu_use(interval=0.1) as used:
        # The shell leaves at once: its child spins on, no longer a descendant of this process.
        subprocess.run(
            ["sh", "-c", f'"{sys.executable}" -c "$0" ClipScorer >/dev/null 2>&1 &', spin],
            check=True,
        )
        while not done.exists():
            time.sleep(0.05)
    assert used.by_kind["model actors"] == 0
    assert used.by_kind[ELSE] * used.seconds > 0.7
