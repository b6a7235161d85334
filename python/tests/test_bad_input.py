"""Bad input raises a Python exception whose message names the problem; nothing crashes."""

import json

import numpy as np
import pytest

import popcosmos
from popcosmos import ManifestError


def arrays(pipe, catalogue, n=3):
    sub = catalogue.iloc[:n]
    flux = np.column_stack([sub[f"flux_{b}"] for b in pipe.bands])
    err = np.column_stack([sub[f"fluxerr_{b}"] for b in pipe.bands])
    return flux, err


def test_wrong_array_shapes(pipe, catalogue):
    flux, err = arrays(pipe, catalogue)
    with pytest.raises(ValueError, match=r"flux: expected a 2-D array \[galaxies, bands\], got shape \(78,\)"):
        pipe.fit(flux.ravel(), err.ravel(), bands=pipe.bands)
    with pytest.raises(ValueError, match=r"flux_err: shape \(3, 25\) differs from flux's \(3, 26\)"):
        pipe.fit(flux, err[:, :25], bands=pipe.bands)
    with pytest.raises(ValueError, match=r"bands: 25 names for 26 flux columns"):
        pipe.fit(flux, err, bands=pipe.bands[:25])
    with pytest.raises(ValueError, match=r"ids: 2 ids for 3 galaxies"):
        pipe.fit(flux, err, bands=pipe.bands, ids=["a", "b"])
    with pytest.raises(ValueError, match="flux_err: needed"):
        pipe.fit(flux, bands=pipe.bands)


def test_band_not_in_the_survey(pipe, catalogue):
    flux, err = arrays(pipe, catalogue)
    bands = ["sdss_q", *pipe.bands[1:]]
    with pytest.raises(ValueError, match=r"band 'sdss_q' is not a band of the survey \(bands: u_megaprime_sagem, hsc_g"):
        pipe.fit(flux, err, bands=bands)


def test_band_named_twice(pipe, catalogue):
    flux, err = arrays(pipe, catalogue)
    bands = [pipe.bands[1], *pipe.bands[1:]]
    with pytest.raises(ValueError, match=f"band '{pipe.bands[1]}' listed twice"):
        pipe.fit(flux, err, bands=bands)


def test_nan_error_in_arrays(pipe, catalogue):
    flux, err = arrays(pipe, catalogue)
    err[1, 2] = np.nan
    b = pipe.bands[2]
    with pytest.raises(ValueError, match=rf"arrays: row 2, column 'flux_err\[{b}\]': missing \(NaN\) uncertainty on a present measurement"):
        pipe.fit(flux, err, bands=pipe.bands)


def test_nan_error_in_a_dataframe(pipe, catalogue):
    sub = catalogue.iloc[:5].copy()
    sub.loc[sub.index[2], "fluxerr_hsc_r"] = np.nan
    with pytest.raises(ValueError, match=r"DataFrame: row 3, column 'fluxerr_hsc_r': missing \(NaN\) uncertainty"):
        pipe.fit(sub)


def test_zero_and_negative_errors(pipe, catalogue):
    flux, err = arrays(pipe, catalogue)
    err[0, 0] = 0.0
    with pytest.raises(ValueError, match="row 1, column 'flux_err.*': zero uncertainty"):
        pipe.fit(flux, err, bands=pipe.bands)


def test_missing_and_non_numeric_columns(pipe, catalogue):
    with pytest.raises(ValueError, match=r"DataFrame: no column 'fluxerr_hsc_g' \(available: 'id', 'zspec'"):
        pipe.fit(catalogue.drop(columns=["fluxerr_hsc_g"]))
    with pytest.raises(ValueError, match="DataFrame: no column 'id'"):
        pipe.fit(catalogue.drop(columns=["id"]))
    bad = catalogue.iloc[:3].astype({"flux_hsc_g": object})
    bad.loc[bad.index[0], "flux_hsc_g"] = "bright"
    with pytest.raises(ValueError, match="DataFrame: column 'flux_hsc_g' is not numeric"):
        pipe.fit(bad)


def test_duplicate_ids(pipe, catalogue):
    sub = catalogue.iloc[:3].copy()
    sub["id"] = [7, 8, 7]
    with pytest.raises(ValueError, match=r"duplicate id '7' \(rows 1 and 3\)"):
        pipe.fit(sub)


def test_not_a_catalogue(pipe):
    with pytest.raises(TypeError, match="expected a pandas DataFrame, an astropy Table or a flux array"):
        pipe.fit("catalogue.csv")


def test_unknown_units(pipe, catalogue):
    flux, err = arrays(pipe, catalogue)
    with pytest.raises(ValueError, match="units: unknown unit 'furlongs'"):
        pipe.fit(flux, err, bands=pipe.bands, units="furlongs")


def test_dict_manifest_with_an_unknown_key(manifest):
    m = json.loads(json.dumps(manifest))
    m["colour"] = "blue"
    with pytest.raises(ManifestError, match="colour") as e:
        popcosmos.Pipeline.from_manifest(m)
    assert e.value.key == "colour"
    m = json.loads(json.dumps(manifest))
    m["sampler"]["wlakers"] = 32
    with pytest.raises(ManifestError, match="wlakers") as e:
        popcosmos.Pipeline.from_manifest(m)
    assert e.value.key == "wlakers"
    assert isinstance(e.value, ValueError)


def test_dict_manifest_with_a_bad_value(manifest):
    m = json.loads(json.dumps(manifest))
    m["sampler"]["walkers"] = 3
    with pytest.raises(ManifestError, match=r"sampler.walkers: must be an even number ≥ 4, got 3") as e:
        popcosmos.Pipeline.from_manifest(m)
    assert e.value.key == "sampler.walkers"


def test_dict_manifest_without_a_section(manifest):
    m = json.loads(json.dumps(manifest))
    del m["prior"]
    with pytest.raises(ManifestError, match="prior") as e:
        popcosmos.Pipeline.from_manifest(m)
    assert e.value.key == "prior"


def test_manifest_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.yaml"):
        popcosmos.Pipeline.from_manifest(tmp_path / "no-such.yaml")


def test_manifest_naming_missing_weights(manifest, tmp_path):
    m = json.loads(json.dumps(manifest))
    m["sps"]["weights"] = str(tmp_path / "missing.safetensors")
    with pytest.raises((ManifestError, FileNotFoundError), match="missing.safetensors"):
        popcosmos.Pipeline.from_manifest(m)
