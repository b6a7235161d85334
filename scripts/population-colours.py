"""Colours of real COSMOS2020 z > 2.5 galaxies beside a simulated population's, at the same
redshift and i-band magnitude (docs/population.md, "What the COSMOS z > 2.5 galaxies look
like under Prospector-α").

Usage: python scripts/population-colours.py SHARED_DATA_DIR DEMO_CSV LABEL=MOCK.csv ...
MOCK.csv from `popcosmos-cli simulate-population` (fluxes in nanomaggies, true_z column) on a
COSMOS manifest. The demo galaxies (DEMO_CSV ids) are left out of the real set. The spec-z
bin the real galaxies only, for this evaluation; nothing is fitted. Needs numpy and pandas."""
import sys
import numpy as np
import pandas as pd

data, demo = sys.argv[1:3]
mocks = [a.split('=', 1) for a in sys.argv[3:]]
real = pd.read_csv(f'{data}/cosmos2020_specz_zgt2p5/cosmos2020_specz_zgt2p5.csv')
real = real[~real.id.isin(pd.read_csv(demo).id)].copy()
# A negative error marks an upper limit (the flux column then holds the limit): not a flux.
for c in [c for c in real.columns if c.startswith('flux_')]:
    real.loc[real['fluxerr_' + c[5:]] < 0, c] = np.nan
NMGY_TO_MJY = 3.631e-3
# (real column, mock band label) of the colours shown.
PAIRS = [(('u_megaprime_sagem', 'hsc_g'), ('u', 'g')), (('hsc_g', 'hsc_r'), ('g', 'r')),
         (('hsc_r', 'hsc_i'), ('r', 'i')), (('hsc_i', 'uvista_ks_cosmos'), ('i', 'Ks')),
         (('uvista_ks_cosmos', 'irac1_cosmos'), ('Ks', 'Ch1'))]
I_RANGE = (24.0, 25.5)


def ab(f_mjy):
    """AB magnitude of a flux in mJy; NaN where it is not positive (noise, limits)."""
    f = np.asarray(f_mjy, float)
    return np.where(f > 0, -2.5 * np.log10(np.where(f > 0, f, 1.0)) + 16.4, np.nan)


def in_window(i_mag):
    return (i_mag > I_RANGE[0]) & (i_mag < I_RANGE[1])


mock_tables = [(label, pd.read_csv(path)) for label, path in mocks]
head = ' | '.join(f'{mb[0]}−{mb[1]}' for _, mb in PAIRS)
print(f'| z bin | set | n ({I_RANGE[0]} < i < {I_RANGE[1]}) | {head} |')
print('|---|---|---|' + '---|' * len(PAIRS))
for lo, hi in [(2.5, 3.0), (3.0, 3.5), (3.5, 4.5)]:
    r = real[(real.zspec >= lo) & (real.zspec < hi)]
    r = r[in_window(ab(r.flux_hsc_i))]
    cols = [np.nanmedian(ab(r['flux_' + a]) - ab(r['flux_' + b])) for (a, b), _ in PAIRS]
    print(f'| {lo}–{hi} | real | {len(r)} | ' + ' | '.join(f'{c:+.2f}' for c in cols) + ' |')
    for label, m in mock_tables:
        mm = m[(m.true_z >= lo) & (m.true_z < hi)]
        mm = mm[in_window(ab(mm.flux_i * NMGY_TO_MJY))]
        cols = [np.nanmedian(ab(mm['flux_' + a] * NMGY_TO_MJY) - ab(mm['flux_' + b] * NMGY_TO_MJY))
                for _, (a, b) in PAIRS]
        print(f'| | {label} | {len(mm)} | ' + ' | '.join(f'{c:+.2f}' for c in cols) + ' |')
for label, m in mock_tables:
    mm = m[in_window(ab(m.flux_i * NMGY_TO_MJY))]
    q = np.percentile(mm.true_z, [25, 50, 75])
    print(f'{label}: {len(mm)} of {len(m)} draws at {I_RANGE[0]} < i < {I_RANGE[1]}; their z '
          f'quartiles {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}, {np.mean(mm.true_z > 2.5):.1%} at z > 2.5')
