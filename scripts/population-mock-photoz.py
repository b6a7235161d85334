#!/usr/bin/env python3
"""Photo-z and coverage of mock galaxies against their true z and log M (docs/population.md,
"Photo-z of held-out mocks").

Usage: population-mock-photoz.py MOCK.csv RUN_DIR[,RUN_DIR…] [RUN_DIR …]

MOCK.csv is a `simulate-population` catalogue (columns id, true_z, true_log10M_formed);
each RUN_DIR is the output folder of `popcosmos-cli run` on it (several, comma-joined, are
pooled). Only galaxies present in every run are compared. Metrics as docs/evaluation.md:
Δz = (z_p50 − z_true)/(1 + z_true), σ_NMAD = 1.4826 median|Δz − median Δz|, outliers
|Δz| > 0.15, and the share of true values inside the 68 % and 95 % intervals.
"""
import glob
import sys

import numpy as np
import pandas as pd


def load(spec):
    files = [f for d in spec.split(",") for f in sorted(glob.glob(d + "/part-*.parquet"))]
    if not files:
        sys.exit(f"{spec}: no part-*.parquet")
    d = pd.concat([pd.read_parquet(f) for f in files])
    d["id"] = d.id.astype(str)
    return d


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    truth = pd.read_csv(sys.argv[1])[["id", "true_z", "true_log10M_formed"]]
    truth["id"] = truth.id.astype(str)
    runs = {r: load(r) for r in sys.argv[2:]}
    ids = set.intersection(*(set(d.id) for d in runs.values()))
    print("| run | n | bias | σ_NMAD | outliers | z in 68 / 95 % | log M in 68 / 95 % | median 68 % half-width / (1+z) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, d in runs.items():
        m = d[d.id.isin(ids)].merge(truth, on="id")
        dz = (m.z_p50 - m.true_z) / (1 + m.true_z)
        nmad = 1.4826 * np.median(np.abs(dz - np.median(dz)))
        inside = lambda lo, hi, t: ((m[lo] <= t) & (t <= m[hi])).mean() * 100
        M = "log10M_formed"
        cz = (inside("z_p16", "z_p84", m.true_z), inside("z_p2.5", "z_p97.5", m.true_z))
        cm = (inside(M + "_p16", M + "_p84", m.true_log10M_formed),
              inside(M + "_p2.5", M + "_p97.5", m.true_log10M_formed))
        hw = ((m.z_p84 - m.z_p16) / 2 / (1 + m.z_p50)).median()
        out = (np.abs(dz) > 0.15).mean()
        err = np.sqrt(out * (1 - out) / len(m)) * 100
        print(f"| {name} | {len(m)} | {np.median(dz):+.3f} | {nmad:.3f} | {out*100:.1f} ± {err:.1f} % "
              f"| {cz[0]:.0f} / {cz[1]:.0f} % | {cm[0]:.0f} / {cm[1]:.0f} % | {hw:.3f} |")


if __name__ == "__main__":
    main()
