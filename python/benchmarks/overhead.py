"""Overhead of the Python package over the command line on the same run.

    python benchmarks/overhead.py /path/to/popcosmos-cli [--repeat 3]

Times `popcosmos-cli run` on the demo manifest (100 galaxies; settings as shipped unless
--fast) against `Pipeline.from_manifest` + `fit` on the demo DataFrame in this process, and
prints both wall times and their ratio. Both use RAYON_NUM_THREADS from the environment.
"""

import argparse
import json
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
    cli_times, py_times = [], []
    for _ in range(args.repeat):
        shutil.rmtree(work / "out", ignore_errors=True)
        (work / "manifest.yaml").write_text(json.dumps(m))
        t = time.perf_counter()
        subprocess.run([args.cli, "run", str(work / "manifest.yaml"), "--quiet"], check=True)
        cli_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        popcosmos.Pipeline.from_manifest(m).fit(catalogue, progress=False)
        py_times.append(time.perf_counter() - t)
    c, p = min(cli_times), min(py_times)
    print(f"cli run       {c:8.2f} s  (best of {args.repeat}: {', '.join(f'{x:.2f}' for x in cli_times)})")
    print(f"python fit    {p:8.2f} s  (best of {args.repeat}: {', '.join(f'{x:.2f}' for x in py_times)})")
    print(f"ratio python/cli = {p / c:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
