"""The investigators a server holds: ``/v1/investigators``."""

from __future__ import annotations

from fastapi import APIRouter

from anomalens.server.models import InvestigatorInfo
from anomalens.server.runtime import Runtime, problem_responses

__all__ = ["router"]


def router(rt: Runtime) -> APIRouter:
    """This area's routes over the served app's state ``rt``."""
    api = APIRouter()
    loaded, _get = rt.loaded, rt.get

    def _info(name: str) -> InvestigatorInfo:
        inv = loaded[name]
        return InvestigatorInfo(name=name, modality=inv.modality.name, detector=inv.detector_name,
                                units=len(inv.feature_names), unit_kind=inv.modality.unit_kind, n_train=inv.n_train,
                                exemplars=inv.store.count())

    @api.get("/v1/investigators", response_model=list[InvestigatorInfo], tags=["investigators"],
             responses=problem_responses(401))
    async def list_investigators() -> list[InvestigatorInfo]:
        """The investigators this server holds."""
        return [_info(n) for n in sorted(loaded)]

    @api.get("/v1/investigators/{name}", response_model=InvestigatorInfo, tags=["investigators"],
             responses=problem_responses(401, 404))
    async def get_investigator(name: str) -> InvestigatorInfo:
        """One investigator."""
        _get(name)
        return _info(name)

    return api
