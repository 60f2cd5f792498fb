"""Plots for the report, rendered by matplotlib (Agg, no display) into ``data:image/png`` URIs."""

from __future__ import annotations

import base64
import io
import logging

import numpy as np

log = logging.getLogger(__name__)

# Colour-blind-friendly qualitative palette (Okabe-Ito, then tab20 for more groups).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def available() -> bool:
    return _pyplot() is not None


def colours(n: int) -> list[str]:
    if n <= len(PALETTE):
        return PALETTE[:n]
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    return [PALETTE[i] if i < len(PALETTE) else cmap((i - len(PALETTE)) % 20) for i in range(n)]


def _to_uri(fig) -> str:
    plt = _pyplot()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def scatter_map(xy: np.ndarray, groups: list[str], title: str, *, highlight: np.ndarray | None = None,
                max_legend: int = 12) -> str | None:
    """The 2-D map coloured by ``groups`` (one name per point); ``highlight`` rings flagged points."""
    plt = _pyplot()
    if plt is None:
        return None
    names = [name for name, _ in sorted(_counts(groups).items(), key=lambda kv: -kv[1])]
    palette = dict(zip(names, colours(len(names))))
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    size = float(np.clip(3000 / max(len(xy), 1), 4, 30))
    groups_arr = np.asarray(groups, dtype=object)
    if highlight is not None and highlight.any():  # a dark halo drawn under the points, so colours stay visible
        ax.scatter(xy[highlight, 0], xy[highlight, 1], s=size * 5, c="#d62728", alpha=0.35, linewidths=0,
                   zorder=1, label=f"flagged ({int(highlight.sum())})")
    for name in names:
        mask = groups_arr == name
        ax.scatter(xy[mask, 0], xy[mask, 1], s=size, c=[palette[name]], alpha=0.85, linewidths=0, zorder=2,
                   label=f"{name} ({int(mask.sum())})" if names.index(name) < max_legend else None)
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False, markerscale=2)
    return _to_uri(fig)


def _counts(groups: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    return counts


def silhouette_curve(scores: dict, chosen: int) -> str | None:
    """Silhouette against k for the k-means search, the chosen k marked."""
    plt = _pyplot()
    if plt is None or len(scores) < 2:
        return None
    ks = sorted(int(k) for k in scores)
    values = [scores[k] if k in scores else scores[str(k)] for k in ks]
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.plot(ks, values, marker="o", ms=3, color=PALETTE[0])
    if chosen in ks:
        ax.axvline(chosen, color="#d62728", lw=1, ls="--")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("silhouette")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _to_uri(fig)


def attack_curves(attacks: list[dict], title: str) -> str | None:
    """Accuracy against eps (1/255) for each attack, with the 95 % intervals shaded."""
    plt = _pyplot()
    if plt is None or not attacks:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for k, name in enumerate(sorted({a["attack"] for a in attacks})):
        rows = sorted((a for a in attacks if a["attack"] == name), key=lambda a: a["eps"])
        eps = [a["eps"] for a in rows]
        ax.plot(eps, [a["accuracy"] for a in rows], marker="o", color=PALETTE[k % len(PALETTE)], label=name)
        ax.fill_between(eps, [a["low"] for a in rows], [a["high"] for a in rows], color=PALETTE[k % len(PALETTE)],
                        alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("eps (1/255, L-inf)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _to_uri(fig)


def corruption_curves(corruptions: dict[str, dict[str, float]], clean: float, title: str) -> str | None:
    """Accuracy against severity per corruption (severity 0 = clean), the mean in black."""
    plt = _pyplot()
    if plt is None or not corruptions:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    names = list(corruptions)
    palette = colours(len(names))
    for colour, name in zip(palette, names):
        severities = [0] + [int(s) for s in corruptions[name]]
        ax.plot(severities, [clean] + list(corruptions[name].values()), color=colour, linewidth=1, label=name)
    mean = np.mean([list(per.values()) for per in corruptions.values()], axis=0)
    ax.plot(range(len(mean) + 1), [clean, *mean], color="black", linewidth=2.5, label="mean")
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    return _to_uri(fig)
