"""Model weights: the bundled ones and the Hugging Face cache (``popcosmos-cli models``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from . import _popcosmos as _rs

__all__ = ["fetch", "list"]

_list = list


def list() -> List[Dict[str, Any]]:  # noqa: A001  (the CLI's verb)
    """Every bundled model (``builtin:NAME``) and every model in the Hugging Face cache:
    reference, kind, bands, size_bytes, license, sha256, location."""
    return _list(_rs.list_models())


def fetch(reference: str, refresh: bool = False) -> Path:
    """Download ``hf://ORG/REPO[@REVISION]/FILE`` and its model card into the cache (``HF_HOME``,
    ``HF_ENDPOINT`` honoured; ``HF_HUB_OFFLINE=1`` never touches the network), verify its
    sha256 against the card and return the weights' path."""
    return Path(_rs.fetch_model(reference, refresh))
