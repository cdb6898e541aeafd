"""Investigator: fit on normal data, then answer "is this anomalous, and why?" with a Report.

It composes the parts and computes nothing itself: the modality (input checks, normal profile,
evidence units), a detector (score, attribution, restoration, embedding), its calibration stage
(p-values), the exemplar store (nearest normal cases), a reasoner and the verifier (the explanation).

    inv = Investigator.fit(train_df)    # detector="ensemble" (AE + VAE + autoregressive + PCA) by default
    report = inv.analyze(row)            # one case -> Report
    reports = inv.analyze_batch(df)      # FDR-controlled verdicts for a batch
    inv.save("model/"); Investigator.load("model/")
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomalens import __version__
from anomalens.config import DEFAULT_DETECTOR, MAX_TRAIN_ROWS
from anomalens.detectors import (
    BaseDetector,
    check_int,
    check_probability,
    make_detector,
)
from anomalens.errors import BackendError, CheckpointError, InputError
from anomalens.grounding.drafting import explain_evidence, explain_many
from anomalens.llm.base import Reasoner
from anomalens.modalities import Modality, get_modality, list_modalities
from anomalens.modalities.flow import CaseFlow, Scored, check_limit
from anomalens.schema import Comparison, Evidence, FeatureProfile, Report, Verdict, fmt
from anomalens.store import ExemplarStore
from anomalens.store.members import MemberIndex
from anomalens.text import names as names_of

__all__ = ["Investigator", "Scored"]

log = logging.getLogger(__name__)

_CONFIG = "investigator.json"
_MEMBERS = "members.npz"  # the member index: every training row under its exemplar (when the store keeps a sample)
MAX_EXEMPLARS = Modality.max_exemplars  # default exemplar sample of a table (each modality sets its own)


class Investigator:
    """A fitted detector with its exemplar store and modality; produces case Reports.

    It composes: modality (input -> model array; evidence units) -> detector (scores, attribution,
    restoration, embedding) -> calibration (p-values) -> store (nearest exemplars) -> modality
    (evidence items) -> reasoner -> verifier. Nothing in it knows the kind of data: what a case is
    (a row, an event of a series, a session of a log) is the modality's **flow**
    (``Modality.flow_class``, see ``anomalens/modalities/flow.py``), held as ``self.flow``; verbs
    only some kinds have (a series' ``point_table``, a log's ``read_cases``) are the flow's, reached
    by name on the Investigator.
    """

    def __init__(self, detector: BaseDetector, store: ExemplarStore, modality: Modality, n_train: int, *,
                 detector_name: str, reasoner: Reasoner | None = None, exemplar_coverage: float | None = None,
                 rows_seen: int | None = None, **parts: Any) -> None:
        if not isinstance(modality, Modality):
            raise InputError(f"modality must be a Modality (see anomalens.modalities), got {type(modality).__name__}")
        self.detector, self.store, self.modality = detector, store, modality
        self.n_train, self.detector_name = n_train, detector_name
        # rows offered to fit; more than n_train when the detector trained on a uniform sample of them
        self.rows_seen = max(int(rows_seen or 0), n_train)
        self.reasoner = reasoner
        # median (nearest kept exemplar distance) / (nearest training row distance); None: every row is kept
        self.exemplar_coverage = exemplar_coverage
        self.fit_seconds: dict[str, float] = {}  # time of fit's steps (detector, exemplars, total); empty after load
        self.flow: CaseFlow = modality.flow_class(self, **parts)

    def __getattr__(self, name: str) -> Any:
        """A verb of this investigator's flow (``CaseFlow.verbs``), e.g. a series' ``point_table``."""
        flow = self.__dict__.get("flow")
        if flow is not None and not name.startswith("_") and name in flow.verbs:
            return getattr(flow, name)
        owners = [n for n in list_modalities() if name in get_modality(n).flow_class.verbs]
        if owners:
            raise AttributeError(f"{name} applies to {' and '.join(owners)} data; this investigator reads "
                                 f"{self.modality.name} data")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def feature_names(self) -> list[str]:
        """The names of the evidence units (a table's feature columns)."""
        return self.modality.unit_names

    def __repr__(self) -> str:
        return self.flow.summary()

    # ------------------------------------------------------------------ fit
    @property
    def calibrator(self):
        """The calibration stage whose p-values the verdicts use (the detector's, for rows)."""
        return self.flow.calibrator

    @classmethod
    def fit(cls, data: Any, modality: str | Modality = "tabular", detector: str | BaseDetector | None = None, *,
            store_path: str | Path | None = None, chroma_url: str | None = None, source: str | None = None,
            ids: Sequence[str] | None = None, reasoner: Reasoner | None = None, max_exemplars: int | None = None,
            max_train_rows: int | None = MAX_TRAIN_ROWS, rows_seen: int | None = None,
            **detector_params: Any) -> "Investigator":
        """Fit on normal data.

        Args:
            data: normal data in a form the modality reads; tabular: (n, d) rows, a DataFrame (its
                columns name the features; a non-default index gives the row ids) or an array.
            modality: a registered name (``anomalens.modalities.list_modalities()``) or an unfitted
                ``Modality``.
            detector: a registered name (see ``list_detectors()``) or an unfitted detector; None:
                the modality's default (tabular: ``DEFAULT_DETECTOR``, the Ensemble, see
                evals/results/tabular_all.md; series: ``conv_ae``).
            store_path: folder of the embedded exemplar store (None: in memory until ``save``).
            chroma_url: a chroma server to hold the exemplars instead (default: ``ANOMALENS_CHROMA_URL``).
            source: provenance recorded with every exemplar (e.g. the file name).
            ids: n row ids for the exemplars (default: the DataFrame index, else 0..n-1).
            reasoner: drafts explanations (None: the template; see ``anomalens.llm.make_reasoner``).
            max_exemplars: at most this many training rows (None: the modality's ``max_exemplars``: 5,000
                rows, 1,000 windows of a series or log cases) are stored as exemplars: beyond it, the
                rows nearest to k-means centres of the embeddings, each with the number of rows it
                stands for (``exemplar_coverage`` says how much nearer the true nearest row is).
            max_train_rows: tabular rows to train on at most (None: every row); beyond it a
                uniform sample (seeded by the detector's ``random_state``), recorded as
                ``rows_seen`` / ``n_train``.
            rows_seen: when ``data`` is already a sample of a larger input (``anomalens fit`` on a
                big file samples while reading), the input's row count, recorded beside ``n_train``.
            **detector_params: hyper-parameters for a detector given by name.
        """
        if isinstance(modality, str):
            if modality not in list_modalities():
                raise InputError(f"modality must be one of {list_modalities()}, got {modality!r}")
            modality = get_modality(modality)()
        elif not isinstance(modality, Modality):
            raise InputError(f"modality must be a name in {list_modalities()} or a Modality, got {type(modality).__name__}")
        if max_exemplars is None:
            max_exemplars = modality.max_exemplars
        if isinstance(max_exemplars, bool) or not isinstance(max_exemplars, (int, np.integer)) or max_exemplars < 1:
            raise InputError(f"max_exemplars must be a positive int, got {max_exemplars!r}")
        from anomalens.config import get_settings

        settings = get_settings()
        if detector is None:
            detector = modality.default_detector or DEFAULT_DETECTOR
        data = modality.begin_fit(data)  # e.g. a series is checked and split first: the detector needs its window
        if isinstance(detector, str):
            from anomalens.detectors import get_detector_class

            klass = get_detector_class(detector)
            fields = {f.name for f in dataclasses.fields(klass.Config)}
            for k, v in modality.detector_defaults(fields).items():
                detector_params.setdefault(k, v)
            defaults = {"device": settings.device, "verbose": settings.progress}  # ANOMALENS_DEVICE, ANOMALENS_PROGRESS
            for k, v in defaults.items():
                if k not in detector_params and (k in fields or klass.__name__ == "Ensemble") and v != {"device": "auto", "verbose": False}[k]:
                    detector_params[k] = v
            det, det_name = make_detector(detector, **detector_params), detector
        else:
            if detector_params:
                raise InputError(f"detector params {sorted(detector_params)} apply only to a detector given by name")
            det, det_name = detector, type(detector).__name__
        det.validate_params()  # a bad hyper-parameter fails before any work
        if chroma_url is None:
            chroma_url = settings.chroma_url
        store = ExemplarStore(store_path, url=chroma_url)
        fitted = modality.flow_class.fit(
            modality, data, det, det_name, store=store, max_exemplars=int(max_exemplars), source=source, ids=ids,
            max_train_rows=max_train_rows, rows_seen=rows_seen,
            # bars for slow steps (reading logs, the next-event model) too when the detector shows its own
            progress=settings.progress or bool(getattr(det.config, "verbose", False)))
        inv = cls(det, store, modality, fitted.n_train, detector_name=det_name, reasoner=reasoner,
                  exemplar_coverage=fitted.exemplar_coverage, rows_seen=fitted.rows_seen, **fitted.parts)
        inv.fit_seconds = fitted.seconds
        return inv

    # ------------------------------------------------------------------ evidence
    def evidence(self, case: Any, *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                 case_id: str | None = None) -> Evidence:
        """The evidence for one case (tabular: a row, a one-row DataFrame, a Series or a dict; a
        series: a stretch, its strongest event; logs: one session or window); ``top=None`` keeps
        every unit's attribution."""
        alpha, top = self._checked_args(alpha, k, top)
        return self.flow.evidence(case, alpha=alpha, k=k, top=top, case_id=case_id)

    def _checked_args(self, alpha: float, k: int, top: int | None) -> tuple[float, int | None]:
        alpha = check_probability(alpha, "alpha")
        check_int(k, "k", error=InputError)  # counts of at least 1 (top=0 and top=2.5 were taken)
        return alpha, None if top is None else check_int(top, "top", error=InputError)

    def unit_profile(self, name: str) -> FeatureProfile:
        """The training distribution of one unit (tabular: quantiles of a feature over the normal rows)."""
        return self.flow.unit_profile(name)

    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float = 0.05, top: int = 5) -> Comparison:
        """The case beside another one: embedding distance, the other's verdict, and the ``top``
        units that differ most."""
        alpha = check_probability(alpha, "alpha")
        return self.flow.compare(case, other, other_id=other_id, alpha=alpha, top=top)

    def exemplar_row(self, row_id: str) -> Any:
        """The stored normal exemplar ``row_id`` in the form a case has (a (d,) row; a series' (channels,
        window) array; a log's sequence of events)."""
        return self.flow.exemplar(row_id)

    # ------------------------------------------------------------------ reports
    def analyze(self, case: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5, case_id: str | None = None,
                reasoner: Reasoner | None = None, plot_dir: str | Path | None = None) -> Report:
        """A Report for one case: verdict (p < alpha), evidence and a verified explanation
        (``plot_dir``: a kind of case that draws, a series event, writes its picture there)."""
        alpha, top = self._checked_args(alpha, k, top)
        self._check_plot_dir(plot_dir)
        ev = self.flow.evidence(case, alpha=alpha, k=k, top=top, case_id=case_id, plot_dir=plot_dir)
        return self._reports([ev], reasoner, plot_dir)[0]

    def report(self, evidence: Evidence, *, reasoner: Reasoner | None = None) -> Report:
        """The Report of a case's evidence: the evidence and its verified explanation."""
        return Report(evidence=evidence, explanation=explain_evidence(evidence, reasoner or self.reasoner))

    def _check_plot_dir(self, plot_dir: Any) -> None:
        if plot_dir is not None and not self.flow.plots:
            raise InputError(f"plot_dir applies to cases that are drawn (a series' events); {self.modality.name} "
                             f"cases are not, got plot_dir={str(plot_dir)!r}")

    def _reports(self, evs: list[Evidence], reasoner: Reasoner | None, plot_dir: Any = None, *,
                 on_progress: Callable[[int, int], None] | None = None, share_failure: bool = True) -> list[Report]:
        """The reports of evidence: each explained (the reasoner, then the verifier), with its picture's name."""
        explanations = explain_many(evs, reasoner or self.reasoner, on_done=on_progress,
                                    share_failure=share_failure) if evs else []
        return [Report(evidence=ev, explanation=ex,
                       **({"plot": self.flow.plot_name(ev)} if plot_dir is not None else {}))
                for ev, ex in zip(evs, explanations)]

    def evidence_each(self, cases: Sequence[Any], *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                      case_ids: Sequence[str] | None = None) -> list[Evidence]:
        """The evidence for several cases, each judged on its own as ``evidence`` judges one (p <
        alpha, no false discovery rate control across them: they are separate questions, such as the
        concurrent requests of a server), with the detector, the calibration and the store run once
        over all of them (rows: on the default detector eight one-row cases cost about twice one).
        Each is ``evidence``'s for its case, up to floating-point rounding. A case's id: its
        ``case_ids`` entry, else its own (a named Series), else its position ("case" when it is the
        only one).

        Raises:
            InputError: a case that is not one case, or not the training data's units (the message
                names its position among several).
        """
        alpha, top = self._checked_args(alpha, k, top)
        return self.flow.evidence_each(cases, alpha=alpha, k=k, top=top, case_ids=case_ids)

    def analyze_each(self, cases: Sequence[Any], *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                     case_ids: Sequence[str] | None = None, reasoner: Reasoner | None = None) -> list[Report]:
        """Reports for several cases, each judged on its own as ``analyze`` judges one (see
        ``evidence_each``); each explanation is drafted as ``analyze`` drafts it, whatever happened
        to the others'."""
        evs = self.evidence_each(cases, alpha=alpha, k=k, top=top, case_ids=case_ids)
        return self._reports(evs, reasoner, share_failure=False)

    def batch_limit(self, alpha: float = 0.05) -> int | None:
        """The largest batch in which one anomalous case, alone among normal ones, can be flagged at a
        false discovery rate ``alpha``. Without a tail the smallest p-value is 1 / (n_cal + 1), and
        Benjamini-Hochberg flags a lone case only when its p <= alpha / m: batches of more than
        alpha * (n_cal + 1) cases cannot flag it (several anomalies together still can). None: no such
        limit (a tail takes p-values below the floor), or a calibration of another kind (series)."""
        return self.flow.batch_limit(alpha)

    def batch_note(self, m: int, alpha: float = 0.05) -> str | None:
        """What to tell the user of a batch of ``m`` cases that ``batch_limit`` says is too large, else None."""
        limit = self.batch_limit(alpha)
        if limit is None or m <= limit:
            return None
        cal = self.calibrator
        return (f"with {cal.n} calibration scores and no tail beyond them, no p-value is below {fmt(cal.floor)}: in a "
                f"batch of {m} cases one anomalous case alone cannot be flagged at a false discovery rate of {alpha:g} "
                f"(batches of up to {limit} can flag it); analyze fewer cases at once, or a case alone, or fit on "
                "more normal data")

    def verdicts(self, X: Any, *, alpha: float = 0.05, ids: Sequence[str] | None = None) -> dict[str, Verdict]:
        """Verdicts for a batch by case id, controlling the false discovery rate at ``alpha``
        (Benjamini-Hochberg), without the rest of the evidence."""
        return self.assess(X, alpha=alpha, ids=ids, explain=False)[0]

    def score(self, X: Any, *, name: str | None = None, progress: bool = False) -> Any:
        """Scores and p-values and nothing else (no attribution, no exemplars). Rows: a ``Scored``
        (scores, p-values, which are the tail's approximation, in input order), the cheap pass that
        streamed scoring (``anomalens.scale``) runs over every chunk; verdicts need the whole input's
        p-values (Benjamini-Hochberg), and ``reports_in_batch`` gives them afterwards. A series: its
        points' scores, p-values and channel x time attribution."""
        return self.flow.score(X, **({} if name is None else {"name": name}), progress=progress)

    def reports_in_batch(self, X: Any, *, m: int, cutoff: float, alpha: float = 0.05, k: int = 5, top: int = 5,
                         ids: Sequence[str] | None = None, reasoner: Reasoner | None = None) -> list[Report]:
        """Reports for some rows of a larger batch whose verdicts were decided over all of it: the
        batch had ``m`` rows and its Benjamini-Hochberg p-value cut-off was ``cutoff`` (a row is
        flagged when p <= cutoff). Streamed scoring explains its top flagged rows with this."""
        alpha, top = self._checked_args(alpha, k, top)
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InputError(f"m must be a positive int (the batch's size), got {m!r}")
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.floating)) or not 0 <= cutoff <= alpha:
            raise InputError(f"cutoff must be a number in [0, alpha = {alpha}], got {cutoff!r}")
        evs = self.flow.evidence_in_batch(X, m=int(m), cutoff=float(cutoff), alpha=alpha, k=k, top=top, ids=ids)
        return self._reports(evs, reasoner)

    def analyze_batch(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                      ids: Sequence[str] | None = None, reasoner: Reasoner | None = None,
                      only_anomalous: bool = False, limit: int | None = None,
                      on_progress: Callable[[int, int], None] | None = None, plot_dir: str | Path | None = None,
                      progress: bool = False) -> list[Report]:
        """Reports for a batch, with verdicts that control the false discovery rate at ``alpha``
        (Benjamini-Hochberg over the batch's p-values). Rows: reports keep the input order;
        ``only_anomalous`` keeps just the flagged ones; ``limit`` keeps the ``limit`` highest
        scores, most anomalous first (the verdicts are still those of the whole batch). A series:
        one report per event, in time order (every event is flagged; ``limit`` keeps the highest
        peaks, each keeping its number; ``plot_dir`` writes ``event-<n>.png`` for each). Logs: a
        report per case. When the reasoner's backend fails, the rest of the batch is explained by
        the template (said once, in each report's note). ``on_progress(done, total)``: called once
        the batch is scored (0 of the reports to explain) and as each report's explanation is
        finished."""
        return self.assess(X, alpha=alpha, k=k, top=top, ids=ids, reasoner=reasoner, only_anomalous=only_anomalous,
                           limit=limit, on_progress=on_progress, plot_dir=plot_dir, progress=progress)[1]

    def assess(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5, ids: Sequence[str] | None = None,
               reasoner: Reasoner | None = None, only_anomalous: bool = False, limit: int | None = None,
               explain: bool = True, on_progress: Callable[[int, int], None] | None = None,
               plot_dir: str | Path | None = None, progress: bool = False,
               ) -> tuple[dict[str, Verdict], list[Report]]:
        """A batch checked and scored once: every case's verdict by id (false discovery rate at
        ``alpha``) and the reports ``analyze_batch`` gives (``explain=False``: none, no evidence built,
        nothing drafted)."""
        check_limit(limit)
        alpha, top = self._checked_args(alpha, k, top)
        self._check_plot_dir(plot_dir)
        verdicts, evs = self.flow.assess(X, alpha=alpha, k=k, top=top, ids=ids, only_anomalous=only_anomalous,
                                         limit=limit, explain=explain, plot_dir=plot_dir, progress=progress)
        if not explain:
            return verdicts, []
        if on_progress is not None:
            on_progress(0, len(evs))
        return verdicts, self._reports(evs, reasoner, plot_dir, on_progress=on_progress)

    def triage(self, sources: Any, *, alpha: float = 0.05, limit: int | None = 10, k: int = 3, top: int = 5,
               reasoner: Reasoner | None = None, progress: bool = False, engine: str = "local",
               model_dir: str | Path | None = None, address: str | None = None, workers: int | None = None) -> Any:
        """Ranked incidents of new data read as a stream (logs: files, ``-``, or sequences of event
        ids; see ``anomalens/modalities/logs/flow.py``): a verb of the modalities that read text."""
        run = getattr(self.flow, "triage", None)
        if run is None:
            raise InputError(f"triage applies to logs; this investigator reads {self.modality.name} data "
                             "(use analyze_batch)")
        return run(sources, alpha=alpha, limit=limit, k=k, top=top, progress=progress, engine=engine,
                   model_dir=model_dir, address=address, workers=workers,
                   explain=lambda evs: self._reports(evs, reasoner))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the detector, feature metadata and (for an embedded store) the exemplars to ``path``.

        All or nothing: the new model is written to a fresh version folder inside ``path`` and
        ``investigator.json``, which names that folder, is replaced last (``os.replace``); earlier
        versions (and, for a chroma server, their collections) are removed after the switch. A
        reader sees the complete old model or the complete new one, whenever the writer stops.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"path must be a folder (or a new name), got the file {str(path)!r}")
        path.mkdir(parents=True, exist_ok=True)
        old = _read_config(path) if (path / _CONFIG).is_file() else None
        version = f"v-{uuid.uuid4().hex[:12]}"
        root = path / version
        root.mkdir()
        self.detector.save(root / "detector")
        self.flow.save_parts(root)
        store = self.store
        if store.url is None:  # a server collection stays where it is; an embedded one is copied in
            copy = ExemplarStore(root / "store", collection=store.collection_name)
            store.copy_to(copy)
            copy.attach_members(store.members, source=store.member_source)
            store = copy
        members = {}
        if store.members is not None:
            store.members.save(root / _MEMBERS)
            members = {"members": len(store.members), "member_source": store.member_source}
        config = {
            "anomalens_version": __version__, "modality": self.modality.name, "detector": self.detector_name,
            **self.modality.to_config(), "n_train": self.n_train, "rows_seen": self.rows_seen, "root": version,
            "store": {"url": store.url, "collection": store.collection_name, "count": store.count(), **members,
                      **({} if store.url else {"files": _store_files(root / "store")})},
            "exemplar_coverage": self.exemplar_coverage,
        }
        _publish_tree(root)
        tmp = path / f".{_CONFIG}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(config, indent=1))
        _publish_tree(tmp)
        os.replace(tmp, path / _CONFIG)  # the switch: before it the old model, after it the new one
        self.store = store
        _remove_old_versions(path, keep=version, old=old, new_store=config["store"])
        return path

    @classmethod
    def load(cls, path: str | Path, *, reasoner: Reasoner | None = None) -> "Investigator":
        """Load an Investigator written by ``save``; needs read access only (a read-only folder's
        exemplar store is opened from a private copy)."""
        path = Path(path)
        config = _read_config(path)
        root = path / config.get("root", ".")
        try:
            modality = get_modality(config.get("modality", "tabular")).from_config(config)
        except (InputError, CheckpointError) as exc:  # an unknown modality, or its part of the config is corrupted
            raise CheckpointError(f"{path / _CONFIG}: {exc}") from exc
        from anomalens.detectors import load as load_detector

        if not (root / "detector").is_dir():
            raise CheckpointError(f"{path} is incomplete: its detector folder {str(root / 'detector')!r} is missing")
        det = load_detector(root / "detector")
        if det.n_features_in_ != modality.model_width:
            raise CheckpointError(f"{path}: the {modality.name} metadata does not match the detector "
                                  f"({modality.model_width} values per row, detector expects {det.n_features_in_})")
        mismatch = modality.detector_mismatch(det)
        if mismatch:
            raise CheckpointError(f"{path / _CONFIG}: {mismatch}; the file was edited or mixed with another model's")
        store = _open_store(path, root, config["store"])
        return cls(det, store, modality, int(config["n_train"]), detector_name=config["detector"], reasoner=reasoner,
                   exemplar_coverage=config.get("exemplar_coverage"), rows_seen=config.get("rows_seen"),
                   **modality.flow_class.load_parts(root))


def _read_config(path: Path) -> dict:
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"a saved Investigator is a folder (written by save or `anomalens fit --out`), got the file "
                              f"{str(path)!r}")
    try:
        config = json.loads((path / _CONFIG).read_text())
        config["n_train"], config["store"]["collection"]  # noqa: B018 - required keys
        if not isinstance(config.get("root", "."), str) or "/" in config.get("root", ".") or ".." in config.get("root", "."):
            raise ValueError(f"root {config.get('root')!r} is not a version folder name")
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} holds no saved Investigator ({_CONFIG} is missing)") from exc
    except PermissionError as exc:
        raise CheckpointError(f"{path / _CONFIG} cannot be read: permission denied") from exc
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / _CONFIG} is corrupted: {exc}") from exc
    return config


def _store_files(folder: Path) -> list[str]:
    """The files of an embedded store as saved (its SQLite file and its nearest-neighbour index),
    relative to the folder; SQLite's transient journal files left out."""
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*")
                  if f.is_file() and not f.name.endswith(("-wal", "-shm", "-journal")))


def _open_store(path: Path, root: Path, cfg: dict) -> ExemplarStore:
    """The saved exemplar store, checked complete; a read-only folder's store is opened from a copy."""
    expected = cfg.get("count")
    if cfg.get("url"):
        store = ExemplarStore(url=cfg["url"], collection=cfg["collection"], create=False)
    else:
        folder = root / "store"
        if not folder.is_dir() or not any(folder.iterdir()):
            raise CheckpointError(f"{path} is incomplete: its exemplar store {str(folder)!r} is missing")
        gone = [f for f in cfg.get("files", []) if not (folder / f).is_file()]
        if gone:  # chroma answered from what was left (a far exemplar, no error) when its index was deleted
            raise CheckpointError(f"{path} is incomplete: {len(gone)} file(s) of its exemplar store are missing, "
                                  f"e.g. {names_of(gone, 3)}")
        if not os.access(folder, os.W_OK) or not all(os.access(f, os.W_OK) for f in folder.rglob("*") if f.is_file()):
            private = Path(tempfile.mkdtemp(prefix="anomalens-store-"))
            atexit.register(shutil.rmtree, private, ignore_errors=True)  # the copy lives as long as the process
            shutil.copytree(folder, private / "store")
            for f in [private / "store", *(private / "store").rglob("*")]:
                f.chmod(0o700 if f.is_dir() else 0o600)
            folder = private / "store"
        try:
            store = ExemplarStore(folder, collection=cfg["collection"], create=False)
        except BackendError as exc:
            raise CheckpointError(f"{path}: the exemplar store cannot be opened ({str(exc).splitlines()[0]})") from exc
    try:
        count = store.count()
    except BackendError as exc:
        raise CheckpointError(f"{path}: the exemplar store is corrupted ({str(exc).splitlines()[0]})") from exc
    if expected is not None and count != expected:
        raise CheckpointError(f"{path} is incomplete: its exemplar store holds {count} exemplars, {expected} were saved")
    if count == 0:
        raise CheckpointError(f"{path} is incomplete: its exemplar store is empty")
    if cfg.get("members") is not None:
        try:
            members = MemberIndex.load(root / _MEMBERS)
        except CheckpointError as exc:
            raise CheckpointError(f"{path} is incomplete: {exc}") from exc
        if len(members) != cfg["members"] or len(members.exemplar_ids) != count:
            raise CheckpointError(f"{path} is incomplete: its member index holds {len(members)} rows of "
                                  f"{len(members.exemplar_ids)} exemplars, {cfg['members']} rows of {count} were saved")
        store.attach_members(members, source=cfg.get("member_source"))
    return store


def _publish_tree(p: Path) -> None:
    """Give what a save wrote the modes a plain file write would (umask applied): readable by
    others where the umask allows, as a model folder is meant to be shared."""
    mask = os.umask(0)
    os.umask(mask)
    paths = [p] if p.is_file() else [p, *p.rglob("*")]
    for f in paths:
        f.chmod((0o777 if f.is_dir() else 0o666) & ~mask)


def _remove_old_versions(path: Path, *, keep: str, old: dict | None, new_store: dict) -> None:
    """After the switch: remove version folders other than ``keep`` (left by earlier saves or by
    a save that was interrupted), the pre-versioning layout, and an old server collection."""
    for child in path.iterdir():
        if child.name.startswith("v-") and child.name != keep and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(f".{_CONFIG}.") and child.name.endswith(".tmp"):
            child.unlink(missing_ok=True)
    if old is not None and old.get("root", ".") == ".":
        for legacy in ("detector", "store"):
            shutil.rmtree(path / legacy, ignore_errors=True)
    if old is not None and old["store"].get("url") and (old["store"]["url"], old["store"]["collection"]) != \
            (new_store.get("url"), new_store["collection"]):
        try:
            ExemplarStore(url=old["store"]["url"], collection=old["store"]["collection"], create=False).delete()
        except Exception as exc:  # the new model is in place; an orphan collection is only a warning
            log.warning("could not remove the old exemplar collection %r: %s", old["store"]["collection"], exc)
