"""Where a sampled process spent its time: the top frames of a py-spy raw profile.

gpu_check samples the GPU actor during the benchmark's job with
`py-spy record --format raw --function`; this prints, per function, the share
of samples it was on the stack (inclusive) and at the top (self), so the log
itself says where an actor's host time goes.

    python -m jobs.stack_summary actor-stacks.txt [--top 25]
"""

from __future__ import annotations

import argparse
import signal
from collections import Counter
from pathlib import Path


def shares(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, and samples per frame on the stack and at its top."""
    total, inclusive, top = 0, Counter[str](), Counter[str]()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        top[frames[-1]] += int(count)
    return total, inclusive, top


def main() -> None:
    # Piped into `head`, end quietly when it has read enough, as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=25, help="frames listed per table")
    args = parser.parse_args()
    total, inclusive, top = shares(args.stacks.read_text().splitlines())
    if not total:
        raise SystemExit(f"{args.stacks}: no samples")
    for title, counts in (("on the stack", inclusive), ("at the top", top)):
        print(f"{total:,} samples; share of them with the frame {title}:")
        for frame, count in counts.most_common(args.top):
            print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
