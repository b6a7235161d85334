"""Fitted n(z) of the shipped populations beside the spec-z histogram (docs/population.md,
docs/figures/population_nz.png).

Usage: python scripts/population-nz.py SHARED_DATA_DIR DRAWS_DIR OUT.png
DRAWS_DIR holds `popcosmos-cli sample-prior --prior '{kind: flow, weights: builtin:W}' -n 20000
--seed 3` tables: kids_draws.csv (W = population_kids_kv450), kids_specz_r2_draws.csv
(population_kids_kv450_specz_r2, the KiDS example's prior), cosmos_draws.csv (population_cosmos2020_zgt2p5) and
init_draws.csv (popcosmos_prior_flow, the start). The spec-z enter the plot only, for
evaluation. Needs pandas and matplotlib."""
import sys, pandas as pd, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
data, draws, out = sys.argv[1:4]
ks = pd.read_csv(f'{data}/kids_kv450_steppz/kids_kv450_steppz.csv').zspec
cs = pd.read_csv(f'{data}/cosmos2020_specz_zgt2p5/cosmos2020_specz_zgt2p5.csv').zspec
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
panels = [('KiDS+VIKING', ks, (0, 1.5), [('kids_specz_r2_draws.csv', 'population_kids_kv450_specz_r2'),
                                         ('kids_draws.csv', 'population_kids_kv450')]),
          ('COSMOS2020 z > 2.5', cs, (0, 6), [('cosmos_draws.csv', 'population_cosmos2020_zgt2p5')])]
for a, (title, spec, rng, fits) in zip(ax, panels):
    a.hist(spec, bins=60, range=rng, density=True, color='0.75', label='spec-z (evaluation only)')
    for (f, l), colour in zip(fits + [('init_draws.csv', 'start (bundled flow)')],
                              ['C0', 'C1'][:len(fits)] + ['C2']):
        a.hist(pd.read_csv(f'{draws}/{f}').z, bins=60, range=rng, density=True,
               histtype='step', lw=1.6, label=l, color=colour)
    a.set_xlabel('redshift'); a.set_title(title); a.legend(fontsize=7)
fig.tight_layout(); fig.savefig(out, dpi=90)
