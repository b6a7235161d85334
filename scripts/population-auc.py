#!/usr/bin/env python3
"""Two-sample check of two catalogues (docs/population.md): 5-fold AUC of gradient-boosted
trees telling catalogue A from B by their asinh magnitudes; 0.5 = indistinguishable.
Usage: population-auc.py A.csv B.csv [N_PER_SIDE]"""
import sys, numpy as np, pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import cross_val_predict
from sklearn.metrics import roc_auc_score
a, b = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
n = min(len(a), len(b), int(sys.argv[3]) if len(sys.argv) > 3 else 10**9)
a, b = a.sample(n, random_state=0), b.sample(n, random_state=1)
bands = [c[5:] for c in a.columns if c.startswith('flux_') and c in b.columns]
def feats(d):
    out = []
    for bd in bands:
        f, e = d['flux_'+bd].to_numpy(float), d['fluxerr_'+bd].to_numpy(float)
        bad = ~np.isfinite(f) | ~np.isfinite(e) | (e <= 0) | (np.abs(f) > 1e20) | (f == -99)
        soft = np.nanmedian(np.where(bad, np.nan, e))
        m = -2.5/np.log(10)*(np.arcsinh(f/(2*soft)) + np.log(soft))
        m[bad] = np.nan
        out.append(m)
    return np.stack(out, 1)
X = np.vstack([feats(a), feats(b)]); y = np.r_[np.zeros(n), np.ones(n)]
p = cross_val_predict(HistGradientBoostingClassifier(max_iter=300), X, y, cv=5, method='predict_proba')[:, 1]
print(f"AUC {roc_auc_score(y, p):.3f}  n={n} per side, bands {bands}")
