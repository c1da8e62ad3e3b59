"""Decoded-frame cache of `video-frames`: building the scenario from a cold cache (PyAV decode
of the shipped clips) vs a warm one (checksummed arrays), one ratio measured in this run.

    python benchmarks/bench_video_cache.py [--repeats 3] [--image-size 32]

Each repetition uses a fresh temporary cache folder: the cold build decodes, resizes and
writes the cache; the warm build (same process, per-file hashes memoized as in any run) reads
it back and verifies its checksum. The two streams must have the same hash. Needs the `video`
extra. Writes benchmarks/results/bench_video_cache.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from record import Printer, write

from scenarios.video import VideoFramesConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    args = ap.parse_args()
    # No pre-training pool: its Omniglot load is cached in-process and would flatter "warm".
    cfg = VideoFramesConfig(image_size=args.image_size, pretrain_pool="none")
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            os.environ["HARNESS_CACHE_DIR"] = d
            t0 = time.perf_counter()
            a = cfg.build(0)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = cfg.build(0)
            warm.append(time.perf_counter() - t0)
            assert a.stream_hash == b.stream_hash, "cached frames differ from decoded ones"
    c, w = min(cold), min(warm)
    n = sum(e.n_train + e.n_test for e in a.experiences + a.val_experiences)
    say = Printer()
    say(f"video-frames build, shipped clips (4 videos, {n} frames used), {args.image_size}px")
    say(f"  cold cache (decode + resize + write): {c:6.2f} s")
    say(f"  warm cache (read + checksum):         {w:6.2f} s")
    say(f"ratio cold/warm: {c / w:.1f}x")
    write("bench_video_cache", ap, args,
          {"frames": n, "cold_s": cold, "warm_s": warm, "cold_best_s": c, "warm_best_s": w,
           "ratio_cold_warm": c / w},
          say.lines, ("cold-cache build time / warm-cache build time (best of repeats)", c / w,
                      "none"))


if __name__ == "__main__":
    main()
