"""Photo-z of two runs over the same galaxies under different priors, and of their
evidence-weighted average (Bayesian model averaging with equal prior odds, i.e. the
posterior under the mixture prior ½ p_A + ½ p_B):

    p(z | d) = [Z_A p_A(z | d) + Z_B p_B(z | d)] / (Z_A + Z_B)

from each run's p(z) grid (`output.pz_step`) and `log_evidence` (SMC: ln Z of the
normalised prior, so runs under different priors compare directly). All three rows are
computed from the p(z) grids the same way (median and 16/84/2.5/97.5 % points by linear
interpolation of the cumulative p(z)), so they differ only by the prior.

Usage: python scripts/bma-photoz.py CATALOGUE.csv RUN_A RUN_B
(docs/population.md, "Model averaging"; needs pandas + pyarrow)."""
import sys, glob, pandas as pd, numpy as np


def load(d):
    fs = sorted(glob.glob(d + '/part-*.parquet'))
    return pd.concat([pd.read_parquet(f) for f in fs]).set_index('id')


def quantiles(pz, grid, step, qs):
    # pz [n, bins] of bins centred on grid; cumulative at the bins' upper edges.
    p = np.clip(np.nan_to_num(pz), 0, None)
    p = p / p.sum(axis=1, keepdims=True)
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    edges = np.concatenate([[grid[0] - step / 2], grid + step / 2])
    return {q: np.array([np.interp(q, c, edges) for c in cdf]) for q in qs}


def metrics(name, zs, q):
    dz = (q[0.5] - zs) / (1 + zs)
    bias = np.median(dz)
    nmad = 1.4826 * np.median(np.abs(dz - bias))
    out = np.mean(np.abs(dz) > 0.15)
    c68 = np.mean((zs >= q[0.16]) & (zs <= q[0.84]))
    c95 = np.mean((zs >= q[0.025]) & (zs <= q[0.975]))
    half = np.median((q[0.84] - q[0.16]) / 2 / (1 + q[0.5]))
    print(f"| {name} | {len(zs)} | {bias:+.4f} | {nmad:.4f} | {100*out:.1f} ± {100*np.sqrt(out*(1-out)/len(zs)):.1f} % "
          f"| {100*c68:.1f} / {100*c95:.1f} % | {half:.3f} |")


cat, ra, rb = sys.argv[1], sys.argv[2], sys.argv[3]
c = pd.read_csv(cat).set_index('id')
a, b = load(ra), load(rb)
a.index = a.index.astype(c.index.dtype)
b.index = b.index.astype(c.index.dtype)
ids = c.index.intersection(a.index).intersection(b.index)
cols = [k for k in a.columns if k.startswith('pz_')]
grid = np.array([float(k[3:]) for k in cols])
step = grid[1] - grid[0]
pa, pb = a.loc[ids, cols].to_numpy(float).copy(), b.loc[ids, cols].to_numpy(float).copy()
pa /= pa.sum(1, keepdims=True)
pb /= pb.sum(1, keepdims=True)
la, lb = a.loc[ids, 'log_evidence'].to_numpy(float), b.loc[ids, 'log_evidence'].to_numpy(float)
wb = 1 / (1 + np.exp(la - lb))  # posterior probability of prior B, equal prior odds
mix = (1 - wb)[:, None] * pa + wb[:, None] * pb
zs = c.loc[ids, 'zspec'].to_numpy(float)
qs = [0.025, 0.16, 0.5, 0.84, 0.975]
print("| prior | n | bias | σ_NMAD | outliers | z_spec in 68 / 95 % | median 68 % half-width / (1+z) |\n|---|---|---|---|---|---|---|")
metrics(f"A: {ra}", zs, quantiles(pa, grid, step, qs))
metrics(f"B: {rb}", zs, quantiles(pb, grid, step, qs))
metrics("evidence-weighted average", zs, quantiles(mix, grid, step, qs))
print(f"\nP(B | d): median {np.median(wb):.2f}, 10–90 % {np.percentile(wb, 10):.2f}–{np.percentile(wb, 90):.2f}; "
      f"ln Z_B − ln Z_A median {np.median(lb - la):+.2f}, mean {np.mean(lb - la):+.2f}")
