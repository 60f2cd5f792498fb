"""Association rules: a planted association is found, chance and trivial ones are not."""

from __future__ import annotations

import csv
import json
import random

import pytest
from imagefactory import photo, save

import pixelmine
from pixelmine.discover.rules import RulesConfig, build_transactions, mine_rules
from pixelmine.errors import InputError


def planted(n: int = 600, seed: int = 0):
    """camera=B images are labelled x 90 % of the time; camera A/C and 'lens' are unrelated to the label."""
    rng = random.Random(seed)
    ids = [f"{i:064x}" for i in range(n)]
    labels, predicted, metadata = {}, {}, {}
    for i in ids:
        camera = rng.choice("ABC")
        labels[i] = ("x" if rng.random() < 0.9 else rng.choice("yz")) if camera == "B" else rng.choice("xyz")
        predicted[i] = labels[i]  # a perfect model: label=x => predicted=x is trivial, never a rule
        metadata[i] = {"camera": camera, "lens": rng.choice(["wide", "tele"]), "serial": i,
                       "iso": rng.randint(100, 3200)}
    return ids, labels, predicted, metadata


def rule_texts(result):
    return {r.text() for r in result.rules}


def test_planted_association_is_found_with_its_numbers():
    ids, labels, predicted, metadata = planted()
    transactions = build_transactions(ids, labels=labels, predicted=predicted, metadata=metadata)
    result = mine_rules(transactions)
    found = {r.text(): r for r in result.rules}
    assert "camera=B ⇒ label=x" in found
    rule = found["camera=B ⇒ label=x"]
    b = sum(m["camera"] == "B" for m in metadata.values())
    both = sum(metadata[i]["camera"] == "B" and labels[i] == "x" for i in ids)
    assert rule.count == both and rule.confidence == pytest.approx(both / b)
    assert rule.lift == pytest.approx((both / b) / (sum(v == "x" for v in labels.values()) / len(ids)))
    assert rule.lift > 1.2 and rule.p_value < 0.05
    # chance and trivial rules are filtered out
    assert not any("lens=" in r.text() and "label=" in r.consequent for r in result.rules)
    assert not any(r.consequent.startswith("predicted=") and any(a.startswith("label=") for a in r.antecedent)
                   for r in result.rules)
    assert not any("serial=" in item for t in transactions for item in t)  # an id column is no pattern
    assert {item for t in transactions for item in t if item.startswith("iso=")} == {"iso=low", "iso=mid", "iso=high"}


def test_issues_and_misclassification_become_items():
    ids, labels, predicted, metadata = planted(seed=1)
    issues = {i: ["blurry"] for i in ids if metadata[i]["lens"] == "tele" and random.Random(i).random() < 0.8}
    predicted = {i: ("y" if metadata[i]["camera"] == "C" and labels[i] == "x" else labels[i]) for i in ids}
    transactions = build_transactions(ids, labels=labels, predicted=predicted, metadata=metadata, issues=issues)
    texts = rule_texts(mine_rules(transactions, min_support=0.05))
    assert "lens=tele ⇒ issue=blurry" in texts
    assert any(t.endswith("⇒ misclassified") and "camera=C" in t for t in texts)
    ordered = mine_rules(transactions, min_support=0.05).rules
    assert ordered[0].consequent.startswith("issue=")  # issues rank first


def test_config_is_checked():
    with pytest.raises(InputError, match=r"'min_support' parameter of RulesConfig must be in \(0, 1\]\. Got 0"):
        RulesConfig(min_support=0)
    assert mine_rules([]).rules == []


def test_workspace_rules_from_manifest_metadata(tmp_path):
    rng = random.Random(3)
    rows = []
    for k in range(120):
        camera = rng.choice("AB")
        label = "x" if camera == "B" else rng.choice("xyz")
        path = save(photo(k, (40, 32)), tmp_path / "img" / f"{k:03d}.png")
        rows.append({"path": str(path), "label": label, "camera": camera})
    manifest = tmp_path / "labels.csv"
    with open(manifest, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["path", "label", "camera"])
        writer.writeheader()
        writer.writerows(rows)
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(manifest=manifest, progress=False, workers=1)
    data = ws.rules(min_support=0.05)
    assert "camera=B ⇒ label=x" in {r["rule"] for r in data["rules"]}
    assert data["n_transactions"] == 120
    stored = json.loads((ws.root / "reports" / "rules.json").read_text())
    assert stored["rules"] == data["rules"]
    assert ws.rules(refresh=False) == stored
    assert ws.catalog.runs("rules", 1)[0]["counts"]["rules"] == len(data["rules"])
