"""Fitted n(z) beside the spec-z histogram (docs/population.md, docs/figures/population_nz.png).

Usage: python scripts/population-nz.py SHARED_DATA_DIR DRAWS_DIR OUT.png
DRAWS_DIR holds `popcosmos-cli sample-prior --prior '{kind: flow, weights: W}' -n 20000 --seed 3`
tables: kids_draws.csv, kidskl_draws.csv, cosmos_draws.csv, cosmoskl_draws.csv (fits with
--prior-weight 0 and 0.1) and init_draws.csv (the bundled flow). The spec-z enter the plot
only, for evaluation. Needs pandas and matplotlib."""
import sys, pandas as pd, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
data, draws, out = sys.argv[1:4]
ks = pd.read_csv(f'{data}/kids_kv450_steppz/kids_kv450_steppz.csv').zspec
cs = pd.read_csv(f'{data}/cosmos2020_specz_zgt2p5/cosmos2020_specz_zgt2p5.csv').zspec
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
panels = [('KiDS+VIKING', ks, 'kids', (0, 1.5)), ('COSMOS2020 z > 2.5', cs, 'cosmos', (0, 6))]
for a, (title, spec, name, rng) in zip(ax, panels):
    a.hist(spec, bins=60, range=rng, density=True, color='0.75', label='spec-z (evaluation only)')
    for f, l in [(f'{name}_draws.csv', 'fit, λ = 0'), (f'{name}kl_draws.csv', 'fit, λ = 0.1'),
                 ('init_draws.csv', 'start (bundled flow)')]:
        a.hist(pd.read_csv(f'{draws}/{f}').z, bins=60, range=rng, density=True,
               histtype='step', lw=1.6, label=l)
    a.set_xlabel('redshift'); a.set_title(title); a.legend(fontsize=7)
fig.tight_layout(); fig.savefig(out, dpi=90)
