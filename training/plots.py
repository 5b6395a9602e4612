"""The run's figures, drawn on bare matplotlib Figures (no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from training.evaluate import coverage_curve

# name -> (labels, scores) on the same rows
Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]


def roc_pr_figure(curves: Curves) -> Figure:
    """ROC and precision-recall curves of every scorer, side by side."""
    figure = Figure(figsize=(11, 4.8))
    roc_ax, pr_ax = figure.subplots(1, 2)
    for name, (bad, scores) in curves.items():
        fpr, tpr, _ = roc_curve(bad, scores)
        roc_ax.plot(fpr, tpr, label=name)
        precision, recall, _ = precision_recall_curve(bad, scores)
        pr_ax.plot(recall, precision, label=name)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    pr_ax.set(xlabel="recall (bad buyers caught)", ylabel="precision", title="PR (test)")
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def calibration_figure(curves: Curves, bins: int = 10) -> Figure:
    """Mean predicted P(bad) against the observed bad rate, in equal-count bins."""
    figure = Figure(figsize=(5.5, 5))
    ax = figure.subplots()
    top = 0.0
    for name, (bad, scores) in curves.items():
        order = np.argsort(scores, kind="stable")
        parts = zip(
            np.array_split(np.asarray(scores)[order], bins),
            np.array_split(np.asarray(bad, dtype=float)[order], bins),
            strict=True,
        )
        points = [(s.mean(), b.mean()) for s, b in parts if len(s)]
        predicted, observed = zip(*points, strict=True)
        ax.plot(predicted, observed, marker="o", label=name)
        top = max(top, *predicted, *observed)
    ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="mean predicted P(bad)", ylabel="observed bad rate", title="Calibration (test)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def coverage_figure(
    curves: Curves, thresholds: Mapping[str, float], target_bad_rate: float
) -> Figure:
    """Share of buyers flagged premium against their bad rate, with each chosen threshold."""
    figure = Figure(figsize=(6.5, 5))
    ax = figure.subplots()
    for name, (bad, scores) in curves.items():
        _, coverage, bad_rate = coverage_curve(scores, bad)
        (line,) = ax.plot(coverage, bad_rate, label=name)
        if name in thresholds:
            premium = np.asarray(scores) <= thresholds[name]
            if premium.any():
                chosen_rate = np.asarray(bad, dtype=float)[premium].mean()
                ax.plot(premium.mean(), chosen_rate, marker="o", color=line.get_color())
    ax.axhline(target_bad_rate, color="red", linestyle="--", linewidth=1, label="target bad rate")
    ax.set(
        xlabel="premium coverage (share of buyers)",
        ylabel="bad rate among premium buyers",
        title="Coverage against bad rate (test; dots: thresholds from validation)",
        ylim=(0, max(4 * target_bad_rate, 0.01)),
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def shap_values(booster, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row SHAP contributions (log-odds) from LightGBM's own TreeSHAP."""
    columns = booster.feature_name()
    contrib = booster.predict(frame[columns].to_numpy(np.float64), pred_contrib=True)
    return pd.DataFrame(np.asarray(contrib)[:, :-1], columns=columns, index=frame.index)


def shap_summary_figure(
    contributions: pd.DataFrame, frame: pd.DataFrame, max_features: int = 15, seed: int = 0
) -> Figure:
    """A beeswarm-style summary: each dot a buyer, colour the feature's value rank."""
    importance = contributions.abs().mean().sort_values(ascending=False)
    top = list(importance.index[:max_features])
    rng = np.random.default_rng(seed)
    figure = Figure(figsize=(8, 0.4 * len(top) + 1.5))
    ax = figure.subplots()
    for row, name in enumerate(reversed(top)):
        values = frame[name].rank(pct=True).fillna(0.5).to_numpy()
        jitter = rng.uniform(-0.3, 0.3, size=len(values))
        ax.scatter(
            contributions[name],
            row + jitter,
            c=values,
            cmap="coolwarm",
            s=4,
            alpha=0.6,
            vmin=0,
            vmax=1,
            rasterized=True,
        )
    ax.set_yticks(range(len(top)), list(reversed(top)), fontsize=8)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set(
        xlabel="SHAP value (log-odds of bad; right = riskier)",
        title="SHAP summary (test; colour: feature value, blue low, red high)",
    )
    figure.tight_layout()
    return figure
