"""One Prefect test API per test session, shared by every flow test that asks for it.

``prefect_api`` starts ``prefect_test_harness`` (a temporary Prefect server on a free port with a
fresh SQLite database, ~10 s) the first time a test needs it and stops it after the session.
``prefect_api_url`` is its URL, for ``sgilo`` subprocesses that should report to the same server
instead of each starting their own.
"""

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_api) -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def write_studies(folder, names, *, coils: int = 4, seed: int = 0) -> list:
    """Tiny fastMRI-format k-space files ``folder/<name>`` (4 slices of 32x32, ``coils`` birdcage
    coils, a random column mask R = 3 with 20 % centre, 30 dB SNR): a disc plus noise texture,
    different for each file."""
    from pathlib import Path

    import numpy as np

    from sgilo.pipeline.io.fastmri import write_kspace
    from sgilo.pipeline.simulate import simulate_acquisition

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    paths = []
    for i, name in enumerate(names):
        disc = ((yy - 16 - i % 3) ** 2 + (xx - 15) ** 2 < 90).astype(np.float32)
        magnitude = disc[None] * (1 + 0.1 * i) + 0.1 * rng.random((4, 32, 32), np.float32)
        acq = simulate_acquisition(
            magnitude, acceleration=3, center_fraction=0.2, num_coils=coils, seed=seed + i
        )
        kspace = acq.kspace if coils > 1 else acq.kspace[:, 0]
        paths.append(write_kspace(folder / name, kspace, mask=acq.mask))
    return paths


@pytest.fixture(scope="session")
def studies():
    """The :func:`write_studies` builder, for tests in other modules of this folder."""
    return write_studies
