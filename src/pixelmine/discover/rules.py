"""Association rules: which properties of an image go together (``camera=B ∧ label=local ⇒ label_issue``).

One transaction per image holds items ``attribute=value``:

- ``label=<label>`` and ``predicted=<label>`` (a model's out-of-fold prediction) and ``misclassified``
  when they differ;
- ``tag=<ImageNet class>`` for the top-1 tag and any other tag with probability >= ``tag_min_prob``;
- ``cluster=<id>`` (from the cluster finder);
- ``issue=<kind>`` for every finding kind that flags the image (blurry, outlier, label_issue, ...);
- ``<column>=<value>`` for user metadata (``images.metadata``): strings and booleans as they are (columns
  with more than ``max_metadata_values`` distinct values are skipped: an id is no pattern), numbers with
  many values cut into three quantile bins (low / mid / high).

Frequent itemsets come from FP-growth (mlxtend), rules from them with support, confidence and lift.
Kept: single-item consequents, lift >= ``min_lift``, confidence >= ``min_confidence``; dropped as trivial:
``label=x ⇒ predicted=x`` style agreement, rules whose consequent is implied by the antecedent's own
attribute, and rules whose extra antecedent item adds less than ``min_improvement`` confidence over a
shorter rule with the same consequent, rules whose co-occurrence chance explains (Bonferroni-adjusted
hypergeometric p-value above ``alpha``), and of ``a ⇒ b`` / ``b ⇒ a`` the one ending in the less telling
attribute. Rules about labels and issues rank first, then by lift.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from ..optional import needs_extras
from ..config import build_config

log = logging.getLogger(__name__)

# Consequent attributes that answer "what goes wrong / what is it": shown first.
PREFERRED = ("issue", "misclassified", "label", "predicted")


@dataclass(frozen=True)
class RulesConfig:
    min_support: float = 0.02  # share of images an itemset must cover
    min_confidence: float = 0.5  # P(consequent | antecedent)
    min_lift: float = 1.2  # confidence / P(consequent); 1 = independent
    max_antecedent: int = 2  # items on the left-hand side
    min_improvement: float = 0.05  # confidence an extra antecedent item must add over the shorter rule
    tag_min_prob: float = 0.3  # tags besides the top-1 enter a transaction above this probability
    max_metadata_values: int = 30  # metadata columns with more distinct values are skipped
    alpha: float = 0.05  # family-wise error rate: a rule's one-sided hypergeometric p-value times the number
    #                      of rules tested (Bonferroni) must stay below it, so chance co-occurrences drop out
    max_rules: int = 200

    def __post_init__(self):
        for name in ("min_support", "min_confidence"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise InputError(f"The '{name}' parameter of RulesConfig must be in (0, 1]. Got {value!r} instead.")
        if self.max_antecedent < 1:
            raise InputError(f"The 'max_antecedent' parameter of RulesConfig must be at least 1. "
                             f"Got {self.max_antecedent!r} instead.")


@dataclass
class Rule:
    antecedent: list[str]
    consequent: str
    support: float  # share of images holding antecedent and consequent
    confidence: float
    lift: float
    count: int  # images holding both
    p_value: float = 1.0  # Bonferroni-adjusted chance of >= count co-occurrences under independence

    def text(self) -> str:
        return f"{' ∧ '.join(self.antecedent)} ⇒ {self.consequent}"

    def to_dict(self) -> dict:
        return {**asdict(self), "rule": self.text()}


@dataclass
class RulesResult:
    rules: list[Rule]
    n_transactions: int
    item_counts: dict[str, int]
    config: RulesConfig = field(default_factory=RulesConfig)

    def to_dict(self) -> dict:
        return {"n_transactions": self.n_transactions, "config": asdict(self.config),
                "item_counts": self.item_counts, "rules": [r.to_dict() for r in self.rules]}


def _attribute(item: str) -> str:
    return item.split("=", 1)[0]


def _value_items(column: str, values: list, config: RulesConfig) -> list[str | None]:
    """Items of one metadata column, one per image (None where the image has no usable value)."""
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return [None] * len(values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    distinct = set(map(str, present))
    if numeric and len(distinct) > 5:
        low, high = np.quantile(np.asarray(present, dtype=float), [1 / 3, 2 / 3])
        return [None if v is None or v == "" else
                f"{column}={'low' if v <= low else 'high' if v > high else 'mid'}" for v in values]
    if len(distinct) > config.max_metadata_values:
        log.info("rules: metadata column %r skipped (%d distinct values)", column, len(distinct))
        return [None] * len(values)
    return [None if v is None or v == "" else f"{column}={str(v).lower() if isinstance(v, bool) else v}"
            for v in values]


def build_transactions(ids: Sequence[str], *, labels: Mapping[str, str | None] | None = None,
                       predicted: Mapping[str, str] | None = None, tags: Mapping[str, list[tuple[str, float]]] | None = None,
                       clusters: Mapping[str, int] | None = None, issues: Mapping[str, Sequence[str]] | None = None,
                       metadata: Mapping[str, dict] | None = None, config: RulesConfig | None = None) -> list[list[str]]:
    """One item list per image id; every mapping is keyed by image id and may miss ids."""
    config = config or RulesConfig()
    transactions: list[list[str]] = [[] for _ in ids]
    for row, image_id in enumerate(ids):
        items = transactions[row]
        label = labels.get(image_id) if labels else None
        if label is not None:
            items.append(f"label={label}")
        guess = predicted.get(image_id) if predicted else None
        if guess is not None:
            items.append(f"predicted={guess}")
            if label is not None and guess != label:
                items.append("misclassified")
        for rank, (name, prob) in enumerate((tags or {}).get(image_id, [])):
            if rank == 0 or prob >= config.tag_min_prob:
                items.append(f"tag={name}")
        if clusters and image_id in clusters:
            items.append(f"cluster={clusters[image_id]}")
        for kind in sorted(set((issues or {}).get(image_id, ()))):
            items.append(f"issue={kind}")
    if metadata:
        columns = sorted({key for meta in metadata.values() for key in (meta or {})} - {"label", "path"})
        for column in columns:
            values = [(metadata.get(image_id) or {}).get(column) for image_id in ids]
            if any(isinstance(v, (dict, list)) for v in values):
                continue
            for row, item in enumerate(_value_items(column, values, config)):
                if item is not None:
                    transactions[row].append(item)
    return [sorted(set(items)) for items in transactions]


def mine_rules(transactions: Sequence[Sequence[str]], config: RulesConfig | None = None, **options) -> RulesResult:
    """Frequent itemsets (FP-growth) and the interesting single-consequent rules among them."""
    config = build_config(RulesConfig, config, options, stage="rules")
    with needs_extras("Association rules"):
        import pandas as pd
        from mlxtend.frequent_patterns import association_rules, fpgrowth
        from mlxtend.preprocessing import TransactionEncoder
    n = len(transactions)
    counts = Counter(item for items in transactions for item in set(items))
    if n == 0 or not counts:
        return RulesResult([], n, {}, config)
    encoder = TransactionEncoder()
    onehot = encoder.fit(transactions).transform(transactions, sparse=True)
    frame = pd.DataFrame.sparse.from_spmatrix(onehot, columns=encoder.columns_)
    itemsets = fpgrowth(frame, min_support=config.min_support, use_colnames=True,
                        max_len=config.max_antecedent + 1)
    if itemsets.empty or itemsets["itemsets"].map(len).max() < 2:
        return RulesResult([], n, dict(counts.most_common()), config)
    # Every rule, not only the strong ones: the shorter rules are needed to judge a longer rule's improvement.
    table = association_rules(itemsets, metric="confidence", min_threshold=0.0, num_itemsets=n)
    table = table[table["consequents"].map(len) == 1]
    columns = [table[c].tolist() for c in ("antecedents", "consequents", "support", "confidence", "lift",
                                           "antecedent support", "consequent support")]
    confidence_of = {(frozenset(a), next(iter(c))): float(conf) for a, c, _, conf, *_ in zip(*columns)}
    tested = max(1, len(table))
    rules = []
    for antecedents, consequents, support, confidence, lift, left, right in zip(*columns):
        if confidence < config.min_confidence or lift < config.min_lift:
            continue
        antecedent, consequent = sorted(antecedents), next(iter(consequents))
        if _trivial(antecedent, consequent):
            continue
        if len(antecedent) > 1 and any(
                confidence < confidence_of.get((frozenset(antecedent) - {item}, consequent), 0.0)
                + config.min_improvement for item in antecedent):
            continue  # an extra condition that barely changes the confidence is noise, not knowledge
        count = int(round(support * n))
        p_value = min(1.0, _p_value(count, int(round(left * n)), int(round(right * n)), n) * tested)
        if p_value > config.alpha:
            continue
        rules.append(Rule(antecedent, consequent, float(support), float(confidence), float(lift), count, p_value))
    rules = _drop_reverse(rules)
    rules.sort(key=lambda r: (_priority(r.consequent), -r.lift, -r.support, r.text()))
    return RulesResult(rules[:config.max_rules], n, dict(counts.most_common()), config)


def _p_value(both: int, left: int, right: int, n: int) -> float:
    """P(X >= both) for X ~ Hypergeometric(n, right, left): co-occurrence at least this large by chance."""
    from scipy.stats import hypergeom

    return float(hypergeom.sf(both - 1, n, right, left))


def _trivial(antecedent: list[str], consequent: str) -> bool:
    attribute = _attribute(consequent)
    attributes = {_attribute(item) for item in antecedent}
    if attribute in attributes:  # one value per attribute: the antecedent already fixes it
        return True
    value = consequent.partition("=")[2]
    # label=x => predicted=x (or the reverse): the model agreeing with the labels is its accuracy, not a finding
    if attribute in ("label", "predicted") and any(
            _attribute(item) in ("label", "predicted") and item.partition("=")[2] == value for item in antecedent):
        return True
    # "misclassified" is defined by label != predicted: given both, it is implied
    return consequent == "misclassified" and {"label", "predicted"} <= attributes


def _drop_reverse(rules: list[Rule]) -> list[Rule]:
    """Of ``a ⇒ b`` and ``b ⇒ a`` keep one: the one ending in the more telling attribute (issue, label, ...),
    else the more confident. Both say that a and b go together, with the same support and lift."""
    single = {(r.antecedent[0], r.consequent): r for r in rules if len(r.antecedent) == 1}
    kept = []
    for rule in rules:
        reverse = single.get((rule.consequent, rule.antecedent[0])) if len(rule.antecedent) == 1 else None
        if reverse is not None and (_priority(reverse.consequent), -reverse.confidence, reverse.text()) < \
                (_priority(rule.consequent), -rule.confidence, rule.text()):
            continue
        kept.append(rule)
    return kept


def _priority(consequent: str) -> int:
    attribute = _attribute(consequent)
    return PREFERRED.index(attribute) if attribute in PREFERRED else len(PREFERRED)
