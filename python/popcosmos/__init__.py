"""popcosmos from Python: Bayesian photo-z and galaxy properties with the Rust engine.

The package mirrors the manifest of ``popcosmos-cli run``::

    import popcosmos
    pipe = popcosmos.Pipeline.from_manifest(popcosmos.demo.manifest())
    catalogue = popcosmos.demo.catalogue()
    summaries = pipe.fit(catalogue)
    popcosmos.evaluate(summaries["z_p50"], catalogue["zspec"])

Every computation runs in the Rust crates (``popcosmos._popcosmos``); this module only
turns tables into columns and columns into pandas DataFrames and numpy arrays.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _popcosmos as _rs
from ._popcosmos import ManifestError

__version__: str = _rs.__version__

#: The 16 parameters in sampling order (the last axis of ``Fit.draws``).
PARAMETER_NAMES: Tuple[str, ...] = tuple(_rs.parameter_names())

__all__ = [
    "Fit",
    "ManifestError",
    "PARAMETER_NAMES",
    "Pipeline",
    "demo",
    "evaluate",
    "models",
    "predict",
    "read_results",
    "sample_prior",
]


# ---------------------------------------------------------------- columns


def _f64_bytes(values: Any) -> bytes:
    """Native-endian float64 bytes of a 1-D array (one copy; what the extension reads)."""
    return np.ascontiguousarray(values, dtype=np.float64).tobytes()


def _from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float64)


def _is_astropy_table(obj: Any) -> bool:
    return any(c.__module__.startswith("astropy.table") and c.__name__ == "Table"
               for c in type(obj).__mro__)


def _is_dataframe(obj: Any) -> bool:
    return any(c.__module__.startswith("pandas") and c.__name__ == "DataFrame"
               for c in type(obj).__mro__)


def _table_names(table: Any) -> List[str]:
    if _is_dataframe(table):
        return [str(c) for c in table.columns]
    if _is_astropy_table(table):
        return list(table.colnames)
    return [str(k) for k in table.keys()]


def _numeric_column(table: Any, name: str, source: str) -> np.ndarray:
    """A column as float64 with masked / null entries as NaN (missing, as in a file)."""
    col = table[name]
    try:
        if _is_dataframe(table):
            return col.to_numpy(dtype=np.float64, na_value=np.nan)
        values = getattr(col, "value", col)  # astropy Quantity columns: their numbers
        return np.ma.filled(np.ma.asarray(values).astype(np.float64), np.nan)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: column '{name}' is not numeric: {e}") from None


def _id_strings(values: Any) -> List[str]:
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # ids read back from a float column: 17.0 is galaxy 17
    return [str(v) for v in arr.tolist()]


def _missing_column(source: str, column: str, available: Sequence[str]) -> ValueError:
    # The catalogue reader's message for a file without the column.
    shown = [f"'{c}'" for c in available[:60]]
    if len(available) > 60:
        shown.append(f"… {len(available) - 60} more")
    return ValueError(f"{source}: no column '{column}' (available: {', '.join(shown)})")


# ---------------------------------------------------------------- progress


class _Progress:
    """tqdm when it is installed (a widget in notebooks), else a line on stderr."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.total = 0
        self.done = 0
        self.stage = ""

    def __call__(self, event: str, value: Any) -> None:
        if not self.enabled:
            return
        if event == "total":
            self.total = int(value)
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.bar = None
            else:
                self.bar = tqdm(total=self.total, unit="galaxy", desc="popcosmos")
        elif event == "stage":
            self.stage = str(value).split()[0]
            if self.bar is not None:
                self.bar.set_postfix_str(self.stage)
            else:
                self._line()
        elif event == "done":
            self.done += int(value)
            if self.bar is not None:
                self.bar.update(int(value))
            else:
                self._line()

    def _line(self) -> None:
        sys.stderr.write(f"\rpopcosmos {self.stage:<10} {self.done}/{self.total} galaxies")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.total:
            sys.stderr.write("\n")


# ---------------------------------------------------------------- pipeline


class Fit(NamedTuple):
    """``Pipeline.fit(..., chains=True)``: summaries and posterior draws."""

    #: One row per galaxy, the columns of ``popcosmos-cli run``'s results.
    summaries: Any
    #: Physical parameters of the kept (thinned) draws, ``[draws, galaxies, 16]``.
    draws: np.ndarray
    #: Names of the last axis of ``draws`` (``PARAMETER_NAMES``).
    parameter_names: Tuple[str, ...]
    #: Log posterior of every draw, ``[draws, galaxies]``.
    log_prob: np.ndarray


def _dataframe(table: Mapping[str, Any], order: Optional[Sequence[str]] = None):
    import pandas as pd

    data: Dict[str, Any] = {"id": list(table["ids"])}
    for name, values in table["ints"]:
        data[name] = np.asarray(values, dtype=np.int64)
    for name, raw in table["columns"]:
        data[name] = _from_bytes(raw)
    for name, values in table["strings"]:
        data[name] = list(values)
    return pd.DataFrame(data)


class Pipeline:
    """A manifest and everything built from it: survey, emulators, prior, likelihood."""

    def __init__(self, inner: "_rs.Pipeline"):
        self._inner = inner

    @classmethod
    def from_manifest(cls, manifest: Union[str, "os.PathLike[str]", Mapping[str, Any]]) -> "Pipeline":
        """Build from a manifest file (relative paths against its folder) or a dict with the
        same sections (relative paths against the working directory).

        Raises ``ManifestError`` (a ``ValueError`` whose ``key`` names the manifest key) and
        ``FileNotFoundError``.
        """
        if isinstance(manifest, Mapping):
            try:
                text = json.dumps(manifest, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ManifestError(f"manifest: not representable as YAML: {e}") from None
            return cls(_rs.Pipeline.from_text(text, "manifest dict", os.getcwd()))
        return cls(_rs.Pipeline.from_path(os.fspath(manifest)))

    @property
    def manifest(self) -> Dict[str, Any]:
        """The manifest with paths resolved and defaults filled in."""
        return json.loads(self._inner.manifest_json())

    @property
    def bands(self) -> List[str]:
        """The survey's band names, in order."""
        return list(self._inner.band_names())

    @property
    def survey(self) -> str:
        return self._inner.survey_name()

    def fit(
        self,
        catalogue: Any,
        flux_err: Optional[Any] = None,
        *,
        bands: Optional[Sequence[str]] = None,
        ids: Optional[Sequence[Any]] = None,
        units: Optional[str] = None,
        chains: bool = False,
        progress: bool = True,
    ):
        """Posterior summaries of every galaxy, as ``popcosmos-cli run`` writes them.

        ``catalogue`` is a pandas DataFrame or an astropy Table with the manifest's
        ``catalogue:`` columns (id, flux and error per band, in its ``units``), or a flux
        array ``[galaxies, bands]`` with ``flux_err`` of the same shape and ``bands`` naming
        its columns (survey bands left out are missing; ``units`` default: the manifest's).
        Returns a DataFrame; with ``chains=True`` a ``Fit`` with the posterior draws too.
        The same manifest and seed give the same numbers as the command line.
        """
        if isinstance(catalogue, (np.ndarray, list, tuple)):
            name, id_list, columns, band_map = self._arrays(catalogue, flux_err, bands, ids)
        else:
            if flux_err is not None or bands is not None:
                raise ValueError(
                    "flux_err and bands go with a flux array; a table names its columns "
                    "through the manifest's catalogue section"
                )
            name, id_list, columns = self._table(catalogue)
            band_map = None
            if ids is not None:
                id_list = _id_strings(ids)
        bar = _Progress(progress)
        try:
            out = self._inner.fit(name, id_list, columns, band_map, units, chains, bar)
        finally:
            bar.close()
        summaries = _dataframe(out)
        if not chains:
            return summaries
        g, d = len(out["ids"]), out["draws"]
        draws = _from_bytes(out["chains"]).reshape(d, g, len(PARAMETER_NAMES))
        log_prob = _from_bytes(out["chain_log_prob"]).reshape(d, g)
        return Fit(summaries, draws, PARAMETER_NAMES, log_prob)

    def _table(self, table: Any):
        if _is_dataframe(table):
            name = "DataFrame"
        elif _is_astropy_table(table):
            name = "Table"
        else:
            raise TypeError(
                "catalogue: expected a pandas DataFrame, an astropy Table or a flux array, "
                f"got {type(table).__name__}"
            )
        available = _table_names(table)
        id_column, band_columns = self._inner.catalogue_columns()
        columns = []
        for _, flux, err in band_columns:
            for c in (flux, err):
                if c not in available:
                    raise _missing_column(name, c, available)
                columns.append((c, _f64_bytes(_numeric_column(table, c, name))))
        if id_column not in available:
            raise _missing_column(name, id_column, available)
        return name, _id_strings(table[id_column]), columns

    def _arrays(self, flux: Any, flux_err: Any, bands: Optional[Sequence[str]], ids: Any):
        flux = np.asarray(flux, dtype=np.float64)
        if flux.ndim != 2:
            raise ValueError(f"flux: expected a 2-D array [galaxies, bands], got shape {flux.shape}")
        if flux_err is None:
            raise ValueError("flux_err: needed with a flux array (same shape as flux)")
        flux_err = np.asarray(flux_err, dtype=np.float64)
        if flux_err.shape != flux.shape:
            raise ValueError(f"flux_err: shape {flux_err.shape} differs from flux's {flux.shape}")
        if bands is None:
            raise ValueError("bands: needed with a flux array (one survey band name per column)")
        bands = [str(b) for b in bands]
        if len(bands) != flux.shape[1]:
            raise ValueError(
                f"bands: {len(bands)} names for {flux.shape[1]} flux columns (flux shape {flux.shape})"
            )
        n = flux.shape[0]
        id_list = None
        if ids is not None:
            id_list = _id_strings(ids)
            if len(id_list) != n:
                raise ValueError(f"ids: {len(id_list)} ids for {n} galaxies")
        columns, band_map = [], []
        for i, b in enumerate(bands):
            columns.append((f"flux[{b}]", _f64_bytes(flux[:, i])))
            columns.append((f"flux_err[{b}]", _f64_bytes(flux_err[:, i])))
            band_map.append((b, f"flux[{b}]", f"flux_err[{b}]"))
        # Survey bands without a column are missing for every galaxy (masked, as NaN in a file).
        for b in self.bands:
            if b not in bands:
                nan = _f64_bytes(np.full(n, np.nan))
                columns += [(f"flux[{b}]", nan), (f"flux_err[{b}]", nan)]
                band_map.append((b, f"flux[{b}]", f"flux_err[{b}]"))
        return "arrays", id_list, columns, band_map

    def run(self, resume: bool = False) -> Path:
        """``popcosmos-cli run MANIFEST [--resume]``: writes ``output.dir``, returns it."""
        return Path(self._inner.run(resume))

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Pipeline(survey={self.survey!r}, prior={m['prior'].get('kind')!r}, "
                f"sampler={m['sampler'].get('kind')!r}, seed={m['seed']})")


# ---------------------------------------------------------------- functions


def read_results(path: Union[str, "os.PathLike[str]"]):
    """A results folder (or file) written by ``run`` as a DataFrame (``chains/`` too)."""
    return _dataframe(_rs.read_results(os.fspath(path)))


def sample_prior(kind: Union[str, Mapping[str, Any]] = "prospector-alpha", n: int = 1000, seed: int = 1):
    """``n`` prior draws as ``popcosmos-cli sample-prior``: ids, the 16 physical parameters,
    ``log10M_formed`` and the latent coordinates ``phi_<name>``. ``kind`` is a prior kind
    or a dict like a manifest's ``prior:`` section."""
    if n < 1:
        raise ValueError(f"n: at least one draw is needed, got {n}")
    spec = json.dumps(dict(kind)) if isinstance(kind, Mapping) else str(kind)
    _, table = _rs.sample_prior(spec, int(n), int(seed))
    return _dataframe(table)


def predict(params: Any, survey: Union[str, Mapping[str, Any]] = "cosmos", lines: bool = True):
    """Forward model of ``popcosmos-cli predict``: magnitudes and fluxes per band.

    ``params`` (DataFrame, astropy Table or dict of arrays) has ``N`` or ``log10M`` (stellar
    mass formed) and the 15 other parameters by name. Returns ``mag_<band>``,
    ``flux_nmgy_<band>``, ``asinh_mag_<band>`` and, with ``lines``, ``flux_lines_nmgy_<band>``
    and ``line_sigma_nmgy_<band>`` columns.
    """
    import pandas as pd

    available = _table_names(params)
    wanted = ["N", "log10M", *PARAMETER_NAMES[1:]]
    columns = [(c, _f64_bytes(_numeric_column(params, c, "params"))) for c in wanted if c in available]
    spec = {"name": survey} if isinstance(survey, str) else dict(survey)
    out = _rs.predict(columns, json.dumps(spec), lines)
    index = params.index if _is_dataframe(params) else None
    return pd.DataFrame({name: _from_bytes(raw) for name, raw in out}, index=index)


def evaluate(z_phot: Any, z_spec: Any) -> Dict[str, float]:
    """Photo-z metrics of ``popcosmos-cli evaluate``: bias (median Δz), σ_NMAD, the outlier
    fraction (|Δz| > 0.15) and n, with Δz = (z_phot − z_spec)/(1 + z_spec); pairs with a
    non-finite value are left out."""
    p = np.asarray(z_phot, dtype=np.float64).ravel()
    s = np.asarray(z_spec, dtype=np.float64).ravel()
    return dict(_rs.evaluate(_f64_bytes(p), _f64_bytes(s)))


from . import demo, models  # noqa: E402  (they use the names above)
