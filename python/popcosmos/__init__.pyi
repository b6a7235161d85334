# Type stubs of the public API (popcosmos/__init__.py).
from os import PathLike
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union, overload, Literal

import numpy as np
import pandas as pd

from . import demo as demo, models as models
from ._popcosmos import ManifestError as ManifestError

__version__: str
PARAMETER_NAMES: Tuple[str, ...]

class Fit(NamedTuple):
    summaries: pd.DataFrame
    draws: np.ndarray  # [draws, galaxies, 16] physical parameters
    parameter_names: Tuple[str, ...]
    log_prob: np.ndarray  # [draws, galaxies]

class Pipeline:
    @classmethod
    def from_manifest(cls, manifest: Union[str, PathLike[str], Mapping[str, Any]]) -> Pipeline: ...
    @property
    def manifest(self) -> Dict[str, Any]: ...
    @property
    def bands(self) -> List[str]: ...
    @property
    def survey(self) -> str: ...
    @overload
    def fit(
        self,
        catalogue: Any,
        flux_err: Optional[Any] = None,
        *,
        bands: Optional[Sequence[str]] = None,
        ids: Optional[Sequence[Any]] = None,
        units: Optional[str] = None,
        chains: Literal[False] = False,
        progress: bool = True,
    ) -> pd.DataFrame: ...
    @overload
    def fit(
        self,
        catalogue: Any,
        flux_err: Optional[Any] = None,
        *,
        bands: Optional[Sequence[str]] = None,
        ids: Optional[Sequence[Any]] = None,
        units: Optional[str] = None,
        chains: Literal[True],
        progress: bool = True,
    ) -> Fit: ...
    def run(self, resume: bool = False) -> Path: ...

def read_results(path: Union[str, PathLike[str]]) -> pd.DataFrame: ...
def sample_prior(kind: Union[str, Mapping[str, Any]] = "prospector-alpha", n: int = 1000, seed: int = 1) -> pd.DataFrame: ...
def predict(params: Any, survey: Union[str, Mapping[str, Any]] = "cosmos", lines: bool = True) -> pd.DataFrame: ...
def evaluate(z_phot: Any, z_spec: Any) -> Dict[str, float]: ...
