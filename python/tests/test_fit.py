"""Pipeline.fit on the demo catalogue: results identical to the command line for the same
manifest and seed, and the same from every input type."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import popcosmos
from conftest import BATCH, cli_binary, fast_manifest


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame):
    """Same columns in the same order and bit-identical values (NaN where NaN)."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), f"column {c} differs"
        else:
            assert list(x) == list(y), f"column {c} differs"


def test_summaries_have_the_run_columns(pipe, catalogue, fitted):
    s = fitted.summaries
    assert list(s.columns) == ["id", *pipe._inner.result_columns(), "flags"]
    assert list(s["id"]) == [str(i) for i in catalogue["id"]]
    # 16 steps are far too few to converge: every galaxy carries the R-hat flag of `run`.
    assert s["flags"].str.contains(r"rhat \d+\.\d+ > 1\.1").all()
    assert np.all(s["z_p16"] <= s["z_p50"]) and np.all(s["z_p50"] <= s["z_p84"])
    assert np.all((s["z_p50"] > 0) & (s["z_p50"] < 20))


def test_chains_are_draws_by_galaxies_by_parameters(manifest, fitted):
    walkers, kept = manifest["sampler"]["walkers"], manifest["sampler"]["steps"] - manifest["sampler"]["burn_in"]
    draws = walkers * -(-kept // manifest["output"]["chain_thin"])
    assert fitted.draws.shape == (draws, 100, 16)
    assert fitted.log_prob.shape == (draws, 100)
    assert fitted.parameter_names == popcosmos.PARAMETER_NAMES
    z = fitted.draws[:, :, popcosmos.PARAMETER_NAMES.index("z")]
    s = fitted.summaries
    # The median of every galaxy's thinned draws lies inside the 95% interval of all its draws.
    inside = (np.median(z, axis=0) >= s["z_p2.5"]) & (np.median(z, axis=0) <= s["z_p97.5"])
    assert inside.all()


def test_fit_equals_run(manifest, fitted, tmp_path):
    """Pipeline.run (the function behind `popcosmos-cli run`) writes the same numbers."""
    m = json.loads(json.dumps(manifest))
    m["output"]["dir"] = str(tmp_path / "run")
    out = popcosmos.Pipeline.from_manifest(m).run()
    assert_same_table(popcosmos.read_results(out), fitted.summaries)


def test_fit_equals_cli(manifest, fitted, tmp_path):
    """`popcosmos-cli run` on the same manifest (written as a file) and seed: identical
    summaries and chains."""
    cli = cli_binary()
    if cli is None:
        pytest.skip("no popcosmos-cli binary (set POPCOSMOS_CLI)")
    m = json.loads(json.dumps(manifest))
    m["output"]["dir"] = str(tmp_path / "cli")
    path = tmp_path / "manifest.yaml"
    path.write_text(json.dumps(m, indent=1))  # JSON is YAML
    subprocess.run([cli, "run", str(path), "--quiet"], check=True)
    assert_same_table(popcosmos.read_results(tmp_path / "cli"), fitted.summaries)
    chains = popcosmos.read_results(tmp_path / "cli" / "chains")
    g = len(fitted.summaries)
    for p, name in enumerate(popcosmos.PARAMETER_NAMES):
        long = chains[name].to_numpy().reshape(g, -1)  # rows grouped by galaxy
        assert np.array_equal(long.T, fitted.draws[:, :, p]), name
    assert np.array_equal(chains["log_prob"].to_numpy().reshape(g, -1).T, fitted.log_prob)


def test_astropy_table_equals_dataframe(pipe, catalogue, fitted):
    from astropy.table import Table

    t = Table.from_pandas(catalogue.iloc[:BATCH])
    assert_same_table(pipe.fit(t, progress=False), fitted.summaries.iloc[:BATCH].reset_index(drop=True))


def test_masked_astropy_column_is_a_missing_band(pipe, catalogue):
    """A masked Table entry is a missing band, as NaN in a DataFrame (or an empty CSV cell)."""
    from astropy.table import MaskedColumn, Table

    flux = f"flux_{pipe.bands[3]}"
    sub = catalogue.iloc[:BATCH].copy()
    t = Table.from_pandas(sub)
    t[flux] = MaskedColumn(t[flux], mask=np.ones(len(t), bool))
    sub[flux] = np.nan
    masked = pipe.fit(t, progress=False)
    assert_same_table(masked, pipe.fit(sub, progress=False))
    assert (masked["n_bands_used"] < len(pipe.bands)).all()


def test_arrays_equal_dataframe(pipe, catalogue, fitted):
    sub = catalogue.iloc[:BATCH]
    flux = np.column_stack([sub[f"flux_{b}"] for b in pipe.bands])
    err = np.column_stack([sub[f"fluxerr_{b}"] for b in pipe.bands])
    s = pipe.fit(flux, err, bands=pipe.bands, ids=sub["id"], progress=False)
    assert_same_table(s, fitted.summaries.iloc[:BATCH].reset_index(drop=True))
    # Without ids rows are numbered from 1, as for a file without an id column.
    s = pipe.fit(flux, err, bands=pipe.bands, progress=False)
    assert list(s["id"]) == [str(i) for i in range(1, BATCH + 1)]


def test_arrays_with_a_band_subset(pipe, catalogue):
    sub = catalogue.iloc[:4]
    bands = pipe.bands[::-1][:10]  # any order, ten bands
    flux = np.column_stack([sub[f"flux_{b}"] for b in bands])
    err = np.column_stack([sub[f"fluxerr_{b}"] for b in bands])
    s = pipe.fit(flux, err, bands=bands, progress=False)
    assert (s["n_bands_used"] <= 10).all() and len(s) == 4


def test_gil_is_released_during_a_fit(pipe, catalogue):
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    start = time.perf_counter()
    pipe.fit(catalogue.iloc[:BATCH], progress=False)
    elapsed = time.perf_counter() - start
    done.set()
    t.join()
    # A thread that got the GIL only between batches would tick a handful of times.
    assert len(ticks) > min(50, 20 * elapsed), (len(ticks), elapsed)


def test_plain_progress_line(pipe, catalogue, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    pipe.fit(catalogue.iloc[:5], progress=True)
    err = capsys.readouterr().err
    assert "5/5 galaxies" in err


CTRL_C = r"""
import json, os, signal, sys, threading, time
import popcosmos
# A shell that starts this in the background (CI under `nohup … &`) hands it SIGINT ignored,
# and Python then installs no KeyboardInterrupt handler: install it, as a terminal would have.
signal.signal(signal.SIGINT, signal.default_int_handler)
m = json.loads(sys.argv[1])
# 50 batches of 400 steps: far longer than the signal's delay on any machine.
m["galaxies_per_batch"] = 2
m["sampler"].update(kind="ensemble", steps=400, burn_in=200)
pipe = popcosmos.Pipeline.from_manifest(m)
cat = popcosmos.demo.catalogue()
threading.Timer(float(sys.argv[2]), lambda: os.kill(os.getpid(), signal.SIGINT)).start()
start = time.perf_counter()
try:
    pipe.fit(cat, progress=False)
except KeyboardInterrupt:
    print("interrupted after", time.perf_counter() - start)
    pipe.fit(cat.iloc[:2], progress=False)  # the pipeline is still usable
    print("fit again")
    sys.exit(0)
print("not interrupted")
sys.exit(1)
"""


def test_ctrl_c_stops_a_fit_cleanly(manifest):
    """SIGINT during a fit raises KeyboardInterrupt at the next batch boundary."""
    m = json.loads(json.dumps(manifest))
    p = subprocess.run(
        [sys.executable, "-c", CTRL_C, json.dumps(m), "2"],
        capture_output=True, text=True, timeout=900,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fit again" in p.stdout
    after = float(p.stdout.split("interrupted after")[1].split()[0])
    # The signal comes 2 s in; one batch of 2 galaxies is a few seconds on 2 cores.
    assert 1.5 <= after < 60, after
