"""Photo-z metrics of result folders beside EAZY/LePhare on the same galaxies, and seed agreement.

Usage: python scripts/smc-eval-report.py metrics kids|cosmos CATALOGUE.csv PEERS_DIR RUN...
       python scripts/smc-eval-report.py agree RUN_A RUN_B
(docs/validation.md, "Real galaxies: SMC vs ensemble"; needs pandas + pyarrow)."""
import sys, glob, pandas as pd, numpy as np
def load(d):
    fs = sorted(glob.glob(d + '/part-*.parquet'))
    return pd.concat([pd.read_parquet(f) for f in fs]).set_index('id') if fs else None
def metrics(zp, zs, lo68=None, hi68=None, lo95=None, hi95=None):
    ok = np.isfinite(zs)
    n_all = ok.sum()
    zp = np.where(np.isfinite(zp), zp, -1.0)  # galaxies without a result count as outliers
    dz = (zp - zs) / (1 + zs)
    dz = dz[ok]
    bias = np.median(dz); nmad = 1.4826 * np.median(np.abs(dz - bias)); out = np.mean(np.abs(dz) > 0.15)
    r = dict(n=n_all, bias=bias, nmad=nmad, out=out, out_se=np.sqrt(out * (1 - out) / n_all))
    if lo68 is not None:
        r['c68'] = np.mean(((zs >= lo68) & (zs <= hi68))[ok])
    if lo95 is not None:
        r['c95'] = np.mean(((zs >= lo95) & (zs <= hi95))[ok])
    return r
def fmt(name, r):
    c68 = f"{100*r['c68']:.1f} %" if 'c68' in r else '–'
    c95 = f"{100*r['c95']:.1f} %" if 'c95' in r else '–'
    return f"| {name} | {r['n']} | {r['bias']:+.4f} | {r['nmad']:.4f} | {100*r['out']:.1f} ± {100*r['out_se']:.1f} % | {c68} / {c95} |"
def agree(ra, rb):
    a, b = load(ra), load(rb)
    j = a[['z_p50']].join(b[['z_p50']], rsuffix='_b', how='inner')
    ok = np.isfinite(j.z_p50) & np.isfinite(j.z_p50_b)
    d = np.abs(j.z_p50 - j.z_p50_b)[ok] / (1 + 0.5 * (j.z_p50 + j.z_p50_b)[ok])
    print(f"| {ra} vs {rb} | {ok.sum()} | {100*np.mean(d < 0.01):.1f} % | {100*np.mean(d > 0.15):.1f} % | {np.median(d):.4f} |")
if sys.argv[1] == 'agree':
    agree(sys.argv[2], sys.argv[3]); sys.exit()
survey, cat, peers_dir, runs = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
c = pd.read_csv(cat)
key = 'row_id' if survey == 'kids' else 'id'
c = c.set_index('id')
print("| run | n | bias | σ_NMAD | outliers | z_spec in 68 % / 95 % |\n|---|---|---|---|---|---|")
for r in runs:
    d = load(r)
    if d is None: continue
    d.index = d.index.astype(c.index.dtype)
    j = c.join(d, how='left')
    print(fmt(r, metrics(j.z_p50.values, j.zspec.values, j['z_p16'].values, j['z_p84'].values, j['z_p2.5'].values, j['z_p97.5'].values)))
    fl = j['flags'].fillna('missing')
    print(f"|  ↳ flagged {(fl != '').sum()} of {len(j)} | | | | | |")
peers = {'kids': [('EAZY', 'eazy_kids_kv450_steppz.csv', 'z_p16', 'z_p84'), ('LePhare', 'lephare_kids_kv450_steppz.csv', 'z_best68_low', 'z_best68_high')],
         'cosmos': [('EAZY', 'eazy_cosmos2020_specz_zgt2p5.csv', 'z_p16', 'z_p84')]}[survey]
for name, f, lo, hi in peers:
    p = pd.read_csv(peers_dir + '/' + f).set_index(key)
    ids = c[key] if key in c else c.index.to_series()
    j = p.reindex(ids.values)
    print(fmt(name + ' (same galaxies)', metrics(j.z_phot.values, c.zspec.values, j[lo].values, j[hi].values)))
