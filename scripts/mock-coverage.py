#!/usr/bin/env python3
"""Coverage of the true redshift and stellar mass by the posterior intervals of runs on a mock
catalogue (`popcosmos-cli mock`), e.g. the high-S/N check of docs/validation.md:

    scripts/mock-coverage.py mock.csv RESULTS_DIR [RESULTS_DIR ...]

Every run is scored on the galaxies the first one has results for. Truth: `true_z`, and
log10 M_formed = (μ(z) − N)/2.5 from `true_N` with astropy's Planck18 distance modulus
(the cosmology popcosmos uses). Needs numpy, pandas, pyarrow, astropy and scipy."""
import glob
import sys

import numpy as np
import pandas as pd
from astropy.cosmology import Planck18


def load(d):
    parts = sorted(glob.glob(d + "/part-*.parquet"))
    if not parts:
        sys.exit(f"{d}: no part-*.parquet results")
    return pd.concat([pd.read_parquet(f) for f in parts]).set_index("id")


def main(mock, dirs):
    truth = pd.read_csv(mock).set_index("id")
    ids = load(dirs[0]).index
    print("| run | n | z in 68 % / 95 % | log M in 68 % / 95 % | N in 68 % | outliers | σ_NMAD |")
    print("|---|---|---|---|---|---|---|")
    for d in dirs:
        r = load(d).loc[ids].join(truth[["true_z", "true_N"]])
        z = r.true_z.values
        log_m = (Planck18.distmod(z).value - r.true_N.values) / 2.5
        cover = lambda lo, hi, x: 100 * np.mean((r[lo].values <= x) & (x <= r[hi].values))
        dz = (r.z_p50.values - z) / (1 + z)
        nmad = 1.4826 * np.median(np.abs(dz - np.median(dz)))
        print(
            f"| {d} | {len(r)} | {cover('z_p16', 'z_p84', z):.1f} % / {cover('z_p2.5', 'z_p97.5', z):.1f} % "
            f"| {cover('log10M_formed_p16', 'log10M_formed_p84', log_m):.1f} % / "
            f"{cover('log10M_formed_p2.5', 'log10M_formed_p97.5', log_m):.1f} % "
            f"| {cover('N_p16', 'N_p84', r.true_N.values):.1f} % | {100 * np.mean(np.abs(dz) > 0.15):.1f} % | {nmad:.4f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
