"""The registry of detectors: names, families, what each score means, and a factory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from anomalens.errors import InputError

__all__ = ["DetectorInfo", "list_detectors", "make_detector", "get_detector_class", "register"]


@dataclass(frozen=True)
class DetectorInfo:
    name: str  # factory name, lower case ("vae")
    cls: type
    family: str  # "reconstruction" or "density"
    modalities: tuple[str, ...]
    score: str  # one line on what the score means

    @property
    def params(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.cls.Config)]


_REGISTRY: dict[str, DetectorInfo] = {}


def register(name: str, cls: type, family: str, modalities: tuple[str, ...], score: str) -> None:
    _REGISTRY[name] = DetectorInfo(name, cls, family, modalities, score)


def list_detectors() -> list[DetectorInfo]:
    """Every registered detector, in registration order."""
    return list(_REGISTRY.values())


def get_detector_class(name: str) -> type:
    """The class registered as ``name`` (factory name like "vae" or class name like "VAE")."""
    for info in _REGISTRY.values():
        if name in (info.name, info.cls.__name__):
            return info.cls
    raise InputError(f"unknown detector {name!r}; valid detectors are {sorted(_REGISTRY)}")


def make_detector(name: str, **params: Any):
    """Build a detector by name, e.g. ``make_detector("vae", epochs=50)``.

    Raises:
        InputError: for an unknown name (the message lists the valid ones).
        ConfigError: for an unknown parameter (the message lists the valid ones).
    """
    cls = get_detector_class(name)
    return cls(**params)
