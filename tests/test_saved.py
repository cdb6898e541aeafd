"""Models and reports saved before a change still load and answer the same.

``tests/fixtures/saved/`` holds one small model per modality and the Report of an anomalous case,
written by the code before the one-Investigator change (commit e88ad22; ``make.py`` there says how)
with what that code answered. The current code loads each model (from a copy: opening a chroma
store may write to it) and must give the same scores, p-values and verdicts, and the saved Report
must load, verify and render.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_modalities import SAMPLES

from anomalens import Investigator
from anomalens.grounding.verifier import verify
from anomalens.schema import Report

FIXTURES = Path(__file__).parent / "fixtures" / "saved"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_model_saved_before_the_change_loads_and_answers_the_same(name, tmp_path):
    shutil.copytree(FIXTURES / name, tmp_path / name)
    inv = Investigator.load(tmp_path / name)
    assert inv.modality.name == name and inv.flow.__class__.__name__ != "CaseFlow"
    sample, expected = SAMPLES[name](), EXPECTED[name]
    normal, anomalous = inv.evidence(sample.normal), inv.analyze(sample.anomalous)
    for got, want in ((normal.verdict, expected["normal"]), (anomalous.verdict, expected["anomalous"])):
        assert got.anomalous is want["anomalous"]
        assert got.score == pytest.approx(want["score"], rel=1e-5)
        assert got.p_value == pytest.approx(want["p_value"], rel=1e-5, abs=1e-12)
    old = Report.model_validate(expected["report"])
    assert anomalous.evidence.case_id == old.evidence.case_id
    assert [a.unit for a in anomalous.evidence.attributions] == [a.unit for a in old.evidence.attributions]
    _, rejected = verify(old.explanation.claims, old.evidence)
    assert old.explanation.claims and rejected == []
    text = old.to_markdown()
    assert old.evidence.case_id in text and ("**anomalous**" in text or "anomalous" in text.lower())
    assert Report.model_validate_json(old.model_dump_json()) == old  # the JSON round trip keeps every field
    # saved with "feature" / "feature_names"; read into the units' names and written as such (issue 42 item 4)
    assert '"feature":' in json.dumps(expected["report"]) and '"feature_names":' in json.dumps(expected["report"])
    dumped = json.loads(old.model_dump_json())
    assert dumped["evidence"]["context"]["unit_names"] == old.evidence.context.unit_names != []
    assert dumped["evidence"]["attributions"][0]["unit"] == old.evidence.attributions[0].unit
    assert '"feature":' not in old.model_dump_json() and '"feature_names":' not in old.model_dump_json()


def test_a_saved_report_loads_with_only_the_schema_imported():
    """The modalities register their item types when imported; a report read by a process that
    imported only ``anomalens.schema`` still gets its series and log items back typed."""
    import subprocess
    import sys

    code = ("import json, sys; from anomalens.schema import Report; e = json.load(open(sys.argv[1])); "
            "print(*[type(p).__name__ for k in ('series', 'logs') for p in Report.model_validate(e[k]['report']).evidence.parts][:3])")
    out = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "expected.json")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Event", "Segment", "LogLine"]
