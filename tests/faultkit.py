"""SIGKILL campaigns: kill a stage's command at random moments, check that no process of it is left and the
catalog is whole, run the same command again and compare its result with an uninterrupted run's.

Used by ``tests/test_fault_resume.py`` (a few moments per stage) and ``benchmarks/faults.py`` (ten)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

STAGES = ("ingest", "extract", "discover", "train")


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "pixelmine", *map(str, args), "--quiet"]


def stage_command(stage: str, images: Path, workspace: Path, backbone: str) -> list[str]:
    if stage == "ingest":
        return cli("ingest", images, "--labels-from-folders", "-w", workspace, "--workers", "2")
    if stage == "extract":
        return cli("extract", "--backbone", backbone, "--workers", "2", "-w", workspace)
    if stage == "discover":
        return cli("discover", "--backbone", backbone, "--workers", "2", "-w", workspace)
    return cli("train", "--head", "logreg", "--backbone", backbone, "-w", workspace)


def run_to_end(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    return time.perf_counter() - started


def kill_at(cmd: list[str], at_s: float) -> tuple[list[int], bool]:
    """Start ``cmd``, SIGKILL it ``at_s`` seconds later; (every descendant pid seen, whether it had already
    finished by itself)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + at_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen.update(child.pid for child in parent.children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return sorted(seen), finished


def survivors(pids: list[int], within_s: float = 5.0) -> list[str]:
    """The processes among ``pids`` still alive ``within_s`` seconds later (killed, so none is left behind)."""
    deadline = time.monotonic() + within_s
    while True:
        alive = []
        for pid in pids:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            for line in alive:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            return alive
        time.sleep(0.05)


def integrity(workspace: Path) -> str:
    path = workspace / "catalog.sqlite"
    if not path.exists():
        return "ok"  # killed before the catalog was created: nothing to check
    with sqlite3.connect(path) as conn:
        return ";".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


def outcome(stage: str, workspace: Path, backbone: str):
    """What a stage produced, in a form two runs can be compared by (==, or allclose for features)."""
    import pixelmine

    with pixelmine.open_workspace(workspace) as ws:
        if stage == "ingest":
            return sorted(tuple(r) for r in ws.catalog.query(
                "SELECT p.path, p.status, p.label, p.image_id, i.size, i.width, i.height, i.phash "
                "FROM paths p LEFT JOIN images i ON i.id = p.image_id"))
        if stage == "extract":
            features = ws.features(backbone)
            order = np.argsort(np.asarray(features.ids))
            return np.asarray(features.ids)[order].tolist(), np.asarray(features.vectors)[order]
        if stage == "discover":
            return sorted((f.kind, f.image_id, f.is_issue, round(float(f.score), 4)) for f in ws.findings())
        model = ws.model()
        test = model.metrics["test"]
        return model.name, sorted(test["classes"]), {k: round(float(v), 6) for k, v in test["metrics"].items() if not isinstance(v, dict)}, \
            test["confusion"]


def same(stage: str, a, b) -> bool:
    if stage == "extract":
        return a[0] == b[0] and np.allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    return a == b


@dataclass
class StageReport:
    stage: str
    duration_s: float  # of the uninterrupted run
    kills: int = 0  # moments the command was still running when killed
    finished_first: int = 0  # moments it had finished before the kill
    orphans: list = field(default_factory=list)
    damaged: list = field(default_factory=list)  # integrity_check answers other than ok
    different: list = field(default_factory=list)  # moments whose resumed result differed


def campaign(images: Path, root: Path, *, moments: int, seed: int = 0, backbone: str = "mobilenet_v2",
             stages=STAGES, log=print) -> list[StageReport]:
    """For each stage: run it uninterrupted once (the reference), then ``moments`` times start it from the
    same workspace state, SIGKILL it at a random moment of its reference duration, check for orphans and
    catalog integrity, run it again to the end and compare with the reference."""
    rng = np.random.default_rng(seed)
    before = root / "state-empty"
    before.mkdir(parents=True, exist_ok=True)
    reports = []
    for stage in stages:
        reference = root / f"state-{stage}"
        shutil.rmtree(reference, ignore_errors=True)
        shutil.copytree(before, reference)
        report = StageReport(stage, run_to_end(stage_command(stage, images, reference, backbone)))
        expected = outcome(stage, reference, backbone)
        for moment in np.sort(rng.uniform(0.05, 0.95, size=moments)):
            trial = root / f"trial-{stage}"
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(before, trial)
            pids, finished = kill_at(stage_command(stage, images, trial, backbone), moment * report.duration_s)
            report.finished_first += finished
            report.kills += not finished
            report.orphans += survivors(pids)
            state = integrity(trial)
            if state != "ok":
                report.damaged.append(state)
            run_to_end(stage_command(stage, images, trial, backbone))
            if not same(stage, outcome(stage, trial, backbone), expected):
                report.different.append(round(float(moment), 3))
            log(f"  {stage}: killed at {moment:.2f} of {report.duration_s:.1f} s"
                f"{' (had finished)' if finished else ''}: {len(pids)} child processes, "
                f"catalog {state}, resumed {'identical' if not report.different or report.different[-1] != round(float(moment), 3) else 'DIFFERENT'}")
            shutil.rmtree(trial, ignore_errors=True)
        reports.append(report)
        before = reference
    return reports
