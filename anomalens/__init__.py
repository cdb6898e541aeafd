"""anomalens: explainable anomaly analysis with generative detectors, calibrated verdicts and evidence.

``Investigator`` and ``Report`` are imported lazily (they pull in torch and chromadb).
"""

__version__ = "0.1.0"

__all__ = ["Investigator", "Report", "__version__"]


def __getattr__(name: str):
    if name == "Investigator":
        from anomalens.investigator import Investigator

        return Investigator
    if name == "Report":
        from anomalens.schema import Report

        return Report
    raise AttributeError(f"module 'anomalens' has no attribute {name!r}")
