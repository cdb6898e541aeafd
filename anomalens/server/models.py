"""The REST API's request and response models and the server's configuration (``ServeConfig``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from anomalens.schema import Explanation, Report

__all__ = ["AnalyzeRequest", "AnalyzeResponse", "Health", "HistoryOut", "InvestigatorInfo", "MessageOut",
           "MessageRequest", "Problem", "Ready", "ServeConfig", "SessionOut", "SessionRequest", "TriageResponse",
           "VerdictOut"]


class ServeConfig(BaseModel):
    """Limits and security of a served app."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=list)  # empty: no key needed (only with no_auth)
    no_auth: bool = False
    workers: int = Field(2, ge=1, le=64)  # scoring threads
    queue: int = Field(16, ge=0, le=10_000)  # requests that may wait for a worker; beyond: 429
    timeout: float = Field(60.0, gt=0)  # seconds a request may run; beyond: 504
    max_body: int = Field(32 * 1024 * 1024, ge=1024)  # bytes of a request body; beyond: 413
    max_rows: int = Field(100_000, ge=1)  # rows of one analyze request
    max_lines: int = Field(1_000_000, ge=1)  # log lines of one triage request
    max_unpacked: int = Field(256 * 1024 * 1024, ge=1024)  # bytes a .gz upload may unpack to; beyond: 413
    cors_origins: list[str] = Field(default_factory=list)  # empty: CORS off
    state_dir: str | None = None  # where chat sessions persist (SQLite); None: a temporary folder
    mcp: bool = True  # the MCP tools over streamable HTTP at /mcp (their workspaces live in this process)
    host: str = "127.0.0.1"  # the address served: on loopback /mcp refuses other Host and Origin headers
    # torch threads of a server process (``use_threads``): a request is a few rows, too small for
    # intra-op parallelism, and the cores are shared by the workers and processes
    torch_threads: int = Field(1, ge=1, le=256)


class InvestigatorInfo(BaseModel):
    name: str
    modality: str
    detector: str
    units: int
    unit_kind: str
    n_train: int
    exemplars: int
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "metrics", "modality": "tabular", "detector": "ensemble", "units": 4, "unit_kind": "feature",
        "n_train": 600, "exemplars": 600}]})


class AnalyzeRequest(BaseModel):
    """Rows to analyze: each a mapping of feature name to value (a series: a time column and channels,
    in time order; logs: use the triage route)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "rows": [{"cpu": 0.2, "memory": 9.0, "latency": 0.1, "errors": 0.0}], "alpha": 0.05, "top": 5,
        "explain": True}]})

    rows: list[dict[str, float | int | str | None]] = Field(min_length=1)
    ids: list[str] | None = None  # one per row (default: "0", "1", ...)
    alpha: float = Field(0.05, gt=0, lt=1)  # false discovery rate of the batch (per-case level for one row)
    top: int = Field(5, ge=1, le=50)  # units per report
    limit: int | None = Field(20, ge=1, le=1000)  # reports for the most anomalous cases only (verdicts: every case)
    only_anomalous: bool = False
    explain: bool = True  # False: verdicts only


class VerdictOut(BaseModel):
    case_id: str
    anomalous: bool
    score: float
    p_value: float
    cutoff: float
    approximate: bool
    note: str | None = None


class AnalyzeResponse(BaseModel):
    investigator: str
    n_cases: int
    n_flagged: int
    verdicts: list[VerdictOut]
    reports: list[Report]  # verified reports (the same JSON as the library's); empty with explain=false
    seconds: float
    # e.g. that this batch is too large for one anomalous row alone to be flagged (Investigator.batch_note)
    note: str | None = None
    # a drawn case's picture by case id (images: the image, its map, its restoration, the nearest normal), a PNG data URL
    pictures: dict[str, str] = Field(default_factory=dict)


class ImagesRequest(BaseModel):
    """Images to judge as JSON: each one's encoded file (PNG, JPEG, TIFF, ...) in base64, by name."""

    model_config = ConfigDict(extra="forbid")

    images: dict[str, str] = Field(..., min_length=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    top: int = Field(5, ge=1, le=100)
    limit: int | None = Field(20, ge=1)
    explain: bool = True
    only_anomalous: bool = False
    pictures: bool = True  # each reported image's picture in the response (``pictures``)


class TriageResponse(BaseModel):
    investigator: str
    summary: str
    triage: dict[str, Any]  # ``Triage.to_json()``: counters, incidents (Report JSON), timelines
    seconds: float


class SessionRequest(BaseModel):
    """The case a chat session investigates: a row (tabular), a series and one of its events, log
    text and one of its incidents (as triage ranks them), or an image file (base64) and its name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "investigator": "metrics", "row": {"cpu": 0.2, "memory": 9.0, "latency": 0.1, "errors": 0.0}}]})

    investigator: str
    row: dict[str, float | int | str | None] | None = None  # the modality checks the values
    series: list[dict[str, float | int | str | None]] | None = None
    # or the series as the CSV text that was uploaded: read as analyze/upload reads it, so the session's
    # event is the upload's, p-value included (rows parsed by a browser can differ in the last digit)
    series_csv: str | None = Field(None, max_length=50_000_000)
    event: int | None = Field(None, ge=1)
    logs: str | None = Field(None, max_length=50_000_000)
    incident: int | None = Field(None, ge=1)
    image: str | None = Field(None, max_length=70_000_000)  # an image file (PNG, JPEG, TIFF, ...) in base64
    image_name: str | None = Field(None, min_length=1, max_length=200)  # the case's id (default "image")


class SessionOut(BaseModel):
    id: str
    investigator: str
    case_id: str
    verdict: VerdictOut


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "why is this anomalous?"},
                                                                             {"text": "/neighbors 3"}]})

    text: str = Field(min_length=1, max_length=2000)  # a question, or a command such as /why, /neighbors 3


class MessageOut(BaseModel):
    text: str  # the verified answer as shown to the analyst (or a tool's text, or an error observation)
    explanation: Explanation | None  # the verified claims with their citations
    tools: list[str]


class HistoryOut(BaseModel):
    id: str
    investigator: str
    case_id: str
    messages: list[dict[str, str]]  # {"role": "user" | "assistant" | "call" | "tool", "text": ...}


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "about:blank", "title": "Bad input", "status": 400,
        "detail": "case columns must be the training features; missing ['latency'], unexpected []"}]})


class Health(BaseModel):
    status: str
    version: str


class Ready(BaseModel):
    ready: bool
    investigators: dict[str, str]  # name -> "ok" or why not
    reasoner: str
