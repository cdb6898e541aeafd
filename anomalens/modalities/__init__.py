"""Modalities: one room per kind of data, behind one contract (``Modality``).

    get_modality("tabular")      # the class registered under that name
    list_modalities()            # ["tabular"]

Each modality is a package (``tabular/``, ``series/``, ``logs/``) that owns its input, cases, flow,
evidence items and claims; it joins with one ``register`` line here. The Investigator, the tools,
the template reasoner and the verifier reach a modality only through this contract.
"""

from __future__ import annotations

from anomalens.errors import InputError
from anomalens.modalities.base import CaseItems, Modality, ModelInput
from anomalens.modalities.tabular import TabularModality

__all__ = ["CaseItems", "ImageModality", "LogModality", "Modality", "ModelInput", "SeriesModality", "TabularModality", "get_modality", "list_modalities", "modality_of",
           "register"]

_REGISTRY: dict[str, type[Modality]] = {}


def register(cls: type[Modality]) -> type[Modality]:
    """Add a modality class under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Modality)):
        raise InputError(f"register takes a Modality subclass, got {cls!r}")
    _REGISTRY[cls.name] = cls
    return cls


def get_modality(name: str) -> type[Modality]:
    """The modality class registered as ``name``."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError(f"modality must be one of {list_modalities()}, got {name!r}")
    return _REGISTRY[name]


def modality_of(evidence) -> type[Modality]:
    """The modality class a case's evidence was built by (``evidence.context.modality``)."""
    return get_modality(evidence.context.modality)


def list_modalities() -> list[str]:
    return sorted(_REGISTRY)


register(TabularModality)

from anomalens.modalities.series import SeriesModality  # noqa: E402 - after the registry it registers into

register(SeriesModality)

from anomalens.modalities.logs import LogModality  # noqa: E402

register(LogModality)

from anomalens.modalities.images import ImageModality  # noqa: E402

register(ImageModality)
