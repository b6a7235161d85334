"""The bundled demo of ``popcosmos-cli demo``: 100 COSMOS2020 galaxies with spectroscopic
redshifts (2.5 ≤ z_spec < 8.3) and the manifest ``examples/cosmos-demo.yaml``."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

from . import _popcosmos as _rs

__all__ = ["catalogue", "manifest"]


def manifest(directory: Optional[Union[str, "os.PathLike[str]"]] = None) -> Dict[str, Any]:
    """The demo manifest as a dict. Its catalogue and calibration file are written to
    ``directory`` (default: a new temporary folder) so that ``catalogue.path`` and
    ``survey.calibration_file`` name real files, and ``output.dir`` is ``directory/out``."""
    text, csv, calibration = _rs.demo_files()
    folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="popcosmos-demo-"))
    m = json.loads(_rs.yaml_to_json(text))
    data = folder / m["catalogue"]["path"]
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(csv)
    cal = folder / m["survey"]["calibration_file"]
    cal.parent.mkdir(parents=True, exist_ok=True)
    cal.write_text(calibration)
    m["catalogue"]["path"] = str(data.resolve())
    m["survey"]["calibration_file"] = str(cal.resolve())
    m["output"]["dir"] = str((folder / "out").resolve())
    return m


def catalogue():
    """The demo catalogue as a pandas DataFrame (fluxes in mJy, ``zspec`` the truth)."""
    import pandas as pd

    # Correctly rounded parsing, as the Rust reader's: pandas' default before 3.0 was not.
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    return pd.read_csv(io.StringIO(_rs.demo_files()[1]), **exact)
