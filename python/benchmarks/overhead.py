"""Overhead of the Python package over the command line on the same run.

    python benchmarks/overhead.py /path/to/popcosmos-cli [--repeat 3]

Times `popcosmos-cli run` on the demo manifest (100 galaxies; settings as shipped unless
--fast) against `Pipeline.from_manifest` + `fit` on the demo DataFrame in this process, and
prints the wall and CPU times (all threads) and their ratios. Both use RAYON_NUM_THREADS from
the environment. On a shared machine the CPU time is the steadier measure.
"""

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import popcosmos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cli")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fast", action="store_true", help="the test suite's small sampler settings")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="popcosmos-overhead-"))
    m = popcosmos.demo.manifest(work)
    m["output"]["chains"] = False
    if args.fast:
        m["sampler"].update(walkers=32, steps=16, burn_in=8)
        m["init"]["library_size"] = 1000
    catalogue = popcosmos.demo.catalogue()
    def children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    cli, py = [], []  # (wall, cpu) per repeat
    for _ in range(args.repeat):
        shutil.rmtree(work / "out", ignore_errors=True)
        (work / "manifest.yaml").write_text(json.dumps(m))
        t, c = time.perf_counter(), children_cpu()
        subprocess.run([args.cli, "run", str(work / "manifest.yaml"), "--quiet"], check=True)
        cli.append((time.perf_counter() - t, children_cpu() - c))
        t, c = time.perf_counter(), time.process_time()
        popcosmos.Pipeline.from_manifest(m).fit(catalogue, progress=False)
        py.append((time.perf_counter() - t, time.process_time() - c))
    for k, what in enumerate(("wall", "cpu")):
        c, p = min(x[k] for x in cli), min(x[k] for x in py)
        runs = lambda xs: ", ".join(f"{x[k]:.2f}" for x in xs)  # noqa: E731
        print(f"{what}: cli run {c:8.2f} s ({runs(cli)}), python fit {p:8.2f} s ({runs(py)}), "
              f"ratio python/cli = {p / c:.3f} (best of {args.repeat})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
