"""Shared fixtures: the demo catalogue and a small, fast version of the demo manifest
(few walkers and steps, a small start library) so the suite runs in minutes on 2 cores."""

import os
import shutil
from pathlib import Path

import pytest

import popcosmos

#: Galaxies per batch: the 100 demo galaxies make 3 batches (40, 40, 20), so the fits cross
#: batch boundaries and the first 40 galaxies are one whole batch.
BATCH = 40


def fast_manifest(directory: Path) -> dict:
    m = popcosmos.demo.manifest(directory)
    m["sampler"].update(kind="ensemble", walkers=32, steps=16, burn_in=8)
    m["init"]["library_size"] = 1000
    m["galaxies_per_batch"] = BATCH
    m["output"]["chain_thin"] = 2
    return m


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="session")
def manifest(demo_dir) -> dict:
    return fast_manifest(demo_dir)


@pytest.fixture(scope="session")
def pipe(manifest) -> popcosmos.Pipeline:
    return popcosmos.Pipeline.from_manifest(manifest)


@pytest.fixture(scope="session")
def catalogue():
    return popcosmos.demo.catalogue()


@pytest.fixture(scope="session")
def fitted(pipe, catalogue) -> popcosmos.Fit:
    """The whole demo catalogue, with chains (the reference every other fit is compared to)."""
    return pipe.fit(catalogue, chains=True, progress=False)


def cli_binary():
    """The popcosmos-cli binary: $POPCOSMOS_CLI (then it must exist), else a built one."""
    env = os.environ.get("POPCOSMOS_CLI")
    if env:
        assert Path(env).is_file(), f"POPCOSMOS_CLI={env} does not exist"
        return env
    root = Path(__file__).resolve().parents[2]
    for p in (root / "target" / "release" / "popcosmos-cli", root / "target" / "debug" / "popcosmos-cli"):
        if p.is_file():
            return str(p)
    return shutil.which("popcosmos-cli")
