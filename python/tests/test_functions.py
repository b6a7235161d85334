"""predict, sample_prior, evaluate, models, read_results: the other commands as functions."""

import subprocess

import numpy as np
import pandas as pd
import pytest

import popcosmos
from conftest import cli_binary


def test_sample_prior_columns_and_seed():
    a = popcosmos.sample_prior("prospector-alpha", 50, seed=3)
    names = list(popcosmos.PARAMETER_NAMES)
    assert list(a.columns) == ["id", *names, "log10M_formed", *[f"phi_{n}" for n in names]]
    assert len(a) == 50 and a["id"].iloc[0] == "draw00000000"
    assert a.equals(popcosmos.sample_prior("prospector-alpha", 50, seed=3))
    assert not a["z"].equals(popcosmos.sample_prior("prospector-alpha", 50, seed=4)["z"])
    u = popcosmos.sample_prior({"kind": "uniform"}, 20)
    assert np.isfinite(u[names].to_numpy()).all()


def test_sample_prior_bad_kind():
    with pytest.raises(popcosmos.ManifestError, match="prior: .*no-such-prior"):
        popcosmos.sample_prior("no-such-prior", 5)
    with pytest.raises(ValueError, match="n: at least one draw"):
        popcosmos.sample_prior("uniform", 0)


def test_predict_magnitudes_and_fluxes():
    draws = popcosmos.sample_prior("prospector-alpha", 8, seed=5)
    out = popcosmos.predict(draws)
    bands = [c[len("mag_"):] for c in out.columns if c.startswith("mag_")]
    assert len(bands) == 26 and len(out) == 8
    for prefix in ("mag_", "flux_nmgy_", "asinh_mag_", "flux_lines_nmgy_", "line_sigma_nmgy_"):
        assert all(f"{prefix}{b}" in out for b in bands)
    mag, flux = out[f"mag_{bands[5]}"], out[f"flux_nmgy_{bands[5]}"]
    assert np.allclose(flux, 10 ** (-0.4 * (mag - 22.5)), rtol=1e-5)
    # log10M instead of N: the same photometry up to the two distance moduli (the prior's
    # Padé form for log10M_formed, astropy Planck18 in predict), < 0.01 mag apart.
    alt = draws.drop(columns=["N"]).rename(columns={"log10M_formed": "log10M"})
    assert np.allclose(popcosmos.predict(alt)[f"mag_{bands[5]}"], mag, atol=1e-2)
    assert not any(c.startswith("line_") for c in popcosmos.predict(draws, lines=False))


def test_predict_bad_parameters():
    draws = popcosmos.sample_prior("prospector-alpha", 3, seed=5)
    with pytest.raises(ValueError, match="params: missing column 'dust2'"):
        popcosmos.predict(draws.drop(columns=["dust2"]))
    bad = draws.copy()
    bad.loc[1, "z"] = 99.0
    with pytest.raises(ValueError, match=r"params: row 2, column 'z': 99 is outside the emulators' range"):
        popcosmos.predict(bad)
    with pytest.raises(popcosmos.ManifestError, match="survey"):
        popcosmos.predict(draws, survey="no-such-survey")


def test_predict_equals_cli(tmp_path):
    cli = cli_binary()
    if cli is None:
        pytest.skip("no popcosmos-cli binary (set POPCOSMOS_CLI)")
    draws = popcosmos.sample_prior("prospector-alpha", 6, seed=9)
    params = draws[list(popcosmos.PARAMETER_NAMES)]
    params.to_csv(tmp_path / "params.csv", index=False, float_format="%.17g")
    subprocess.run([cli, "predict", str(tmp_path / "params.csv"), "-o", str(tmp_path / "out.csv")], check=True)
    ours = popcosmos.predict(params)
    theirs = pd.read_csv(tmp_path / "out.csv")
    assert list(ours.columns) == list(theirs.columns)
    # The CLI prints 8 significant digits.
    assert np.allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-6, atol=0)


def test_sample_prior_equals_cli(tmp_path):
    cli = cli_binary()
    if cli is None:
        pytest.skip("no popcosmos-cli binary (set POPCOSMOS_CLI)")
    subprocess.run([cli, "sample-prior", "--prior", "prospector-alpha", "-n", "40", "--seed", "2",
                    "-o", str(tmp_path / "draws.parquet")], check=True)
    theirs = popcosmos.read_results(tmp_path / "draws.parquet")
    ours = popcosmos.sample_prior("prospector-alpha", 40, seed=2)
    assert list(ours.columns) == ["id", *theirs.columns[1:]] or set(ours.columns) == set(theirs.columns)
    for c in ours.columns:
        assert np.array_equal(ours[c].to_numpy(), theirs[c].to_numpy()), c


def test_evaluate_metrics():
    zs = np.array([0.5, 1.0, 2.0, 3.0, np.nan])
    m = popcosmos.evaluate(zs, zs)
    assert m == {"bias": 0.0, "sigma_nmad": 0.0, "outlier_fraction": 0.0, "n": 4}
    zp = np.array([0.5, 1.2, 2.0, 3.0, 1.0])
    m = popcosmos.evaluate(zp, pd.Series(zs))
    dz = (zp[:4] - zs[:4]) / (1 + zs[:4])
    assert m["n"] == 4
    assert m["bias"] == np.median(dz)
    assert np.isclose(m["sigma_nmad"], 1.4826 * np.median(np.abs(dz - np.median(dz))))
    assert m["outlier_fraction"] == 0.0  # |Δz| = 0.1 at z = 1
    assert popcosmos.evaluate([1.5], [1.0])["outlier_fraction"] == 1.0
    with pytest.raises(ValueError, match="z_phot has 2 values, z_spec has 3"):
        popcosmos.evaluate([1, 2], [1, 2, 3])


def test_evaluate_on_a_fit(fitted, catalogue):
    m = popcosmos.evaluate(fitted.summaries["z_p50"], catalogue["zspec"])
    assert m["n"] > 90 and np.isfinite(m["sigma_nmad"])


def test_models_list_and_fetch(monkeypatch, tmp_path):
    models = popcosmos.models.list()
    refs = [m["reference"] for m in models]
    assert "builtin:photulator_cosmos26" in refs
    card = models[refs.index("builtin:photulator_cosmos26")]
    assert card["kind"] == "photulator" and len(card["bands"]) == 26 and len(card["sha256"]) == 64
    with pytest.raises(ValueError, match="hf://ORG/REPO"):
        popcosmos.models.fetch("builtin:photulator_cosmos26")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="hf://nobody/nothing/x.safetensors"):
        popcosmos.models.fetch("hf://nobody/nothing/x.safetensors")


def test_manifest_round_trip(pipe, manifest):
    m = pipe.manifest
    assert m["seed"] == manifest["seed"] and m["sampler"]["walkers"] == 32
    assert pipe.survey == "cosmos" and len(pipe.bands) == 26
    assert "Pipeline(survey='cosmos'" in repr(pipe)
    # The manifest it reports builds the same pipeline.
    again = popcosmos.Pipeline.from_manifest(m)
    assert again.manifest == m


def test_type_stubs_match_the_modules():
    """Every name the .pyi stubs declare exists, and the extension has nothing undeclared."""
    import ast
    from pathlib import Path

    import popcosmos._popcosmos as ext

    def declared(stub):
        tree = ast.parse((Path(popcosmos.__file__).parent / stub).read_text())
        return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
            n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)
        }

    public = {n for n in dir(ext) if not n.startswith("__")} | {"__version__"}
    assert declared("_popcosmos.pyi") == public
    assert declared("__init__.pyi") <= set(dir(popcosmos))
    assert {"Pipeline", "Fit", "predict", "sample_prior", "evaluate", "read_results"} <= declared("__init__.pyi")
