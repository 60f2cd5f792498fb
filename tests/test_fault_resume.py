"""Fault test: every stage (ingest, extract, discover, train) SIGKILLed at random moments leaves no process
behind and a whole catalog, and the same command then resumes to exactly the uninterrupted result.
``benchmarks/faults.py`` runs the same campaign with ten moments per stage."""

from __future__ import annotations

import pytest
from faultkit import STAGES, campaign
from imagefactory import photo, save

pytestmark = pytest.mark.fault


def test_sigkill_at_random_moments_of_every_stage_resumes_identically(tmp_path):
    images = tmp_path / "images"
    for k in range(160):
        save(photo(k, (640, 480)), images / ("a" if k % 2 else "b") / f"p{k:04d}.jpg", quality=90)
    reports = campaign(images, tmp_path / "states", moments=2, seed=11, backbone="tiny_test", log=lambda _: None)
    assert [r.stage for r in reports] == list(STAGES)
    for report in reports:
        assert report.orphans == [], (report.stage, report.orphans)
        assert report.damaged == [], (report.stage, report.damaged)
        assert report.different == [], (report.stage, report.different)
    assert sum(r.kills for r in reports) >= 4  # most moments caught the stage mid-run
