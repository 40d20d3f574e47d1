"""Figures of an aggregate, each written as PNG and PDF, all registered in FIGURES.

Adding a figure: write a function of a `Drawing` that returns a matplotlib Figure (or None when
the runs hold no data for it) and decorate it with `@register_figure(name, description)`. The
description is its line in docs/aggregation.md's list (a test keeps the two equal: `figure_table`).
Only `done` runs are drawn (fig_stabilization also marks conditions whose runs all diverged).
Figures use matplotlib's object API (no pyplot, no display needed).
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from asymbp.config import CONFIG_DIR
from asymbp.registry import Registry
from asymbp.report.labels import (
    CONCORDANCE,
    METRIC_TEXT,
    rule_label,
    sort_rows,
    value_label,
    varying_keys,
    with_rule,
)
from asymbp.report.select import winners
from asymbp.report.summary import condition_columns, run_errors
from asymbp.robustness import ATTACKERS
from asymbp.runs import NON_IDENTITY_KEYS

ANGLES = {
    "angle_VW": "angle(V, W) (degrees)",
    "angle_error": "angle(asymmetric error,\ntrue error) (degrees)",
}
MAX_LAYERS = 6


@dataclass(frozen=True)
class Drawing:
    """What every figure draws from: the finished runs (done or diverged) with their labels and
    `error` (%), the done ones, every history in long form, the shared layout and the metric."""

    finished: pd.DataFrame
    done: pd.DataFrame
    history: pd.DataFrame
    layout: FigureLayout
    metric: str
    #: robustness.csv's rows (asymbp.report.robustness.summarize); empty without attack results
    robustness: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class FigureEntry:
    name: str
    description: str
    draw: Callable[[Drawing], Figure | None]


#: Every figure, in the order they are drawn and listed: name -> entry.
FIGURES: Registry[FigureEntry] = Registry("figure")


def register_figure(name: str, description: str):
    """Decorator: add a figure function to FIGURES under `name` (its file name, no suffix)."""

    def register(draw: Callable[[Drawing], Figure | None]):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES.register(name, FigureEntry(name, description, draw))
        return draw

    return register


def figure_table() -> str:
    """docs/aggregation.md's list of figures, as a Markdown table, from the registry."""
    rows = [f"| `{entry.name}` | {entry.description} |" for entry in FIGURES.values()]
    return "\n".join(["| file | content |", "|---|---|", *rows]) + "\n"


@dataclass
class FigureLayout:
    """Panel and line order shared by all figures, in the paper's order, and line colours."""

    datasets: list[str]
    stabilizations: list[str]
    series: list[str]
    colors: dict[str, tuple]

    @classmethod
    def of(cls, done: pd.DataFrame, extra: Sequence[str]) -> FigureLayout:
        series = _order(done, [*with_rule(["feedback"], done.columns), *extra], "series")
        palette = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"].colors
        colors = {name: palette[i % len(palette)] for i, name in enumerate(series)}
        return cls(
            datasets=_order(done, ["dataset"], "dataset"),
            stabilizations=_order(done, ["norm"], "stabilization"),
            series=series,
            colors=colors,
        )


def _order(frame: pd.DataFrame, keys: Sequence[str], label: str) -> list[str]:
    return sort_rows(frame.drop_duplicates(label), keys)[label].tolist()


def figure_runs(
    runs: pd.DataFrame,
    metric: str = "final",
    ignore: Sequence[str] = NON_IDENTITY_KEYS,
    select: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """Finished runs (done or diverged: see `status`) with `error` (%) and labels:
    `stabilization`, `series` (the feedback rule, plus any other config key that varies within a
    dataset x stabilization x rule, so that different conditions are never averaged together).
    Also returns those extra keys. With `select` keys (asymbp-aggregate --select), only each
    condition's runs at the values chosen on validation are kept, and the selected keys do not
    split lines or bars."""
    if select:
        runs = runs.loc[sorted(winners(runs, metric, ignore, select))]
        ignore = (*ignore, *select)
    done = runs[runs["status"].isin(["done", "diverged"])]
    done = done.assign(error=100 * run_errors(done, metric))
    fixed = with_rule(["dataset", "norm", "feedback"], done.columns)
    extra = varying_keys(done, fixed, condition_columns(runs, ignore))
    # A label names only the options that vary among its own rule's runs (brsf's magnitude, not
    # the scale every brsf run shares), so that bars and lines read at a glance.
    own = {
        rule: [key for key in extra if group[key].nunique(dropna=False) > 1]
        for rule, group in done.groupby("feedback", sort=False)
    }
    records = done.to_dict("records")
    extras = [_extra_label(record, own[record["feedback"]]) for record in records]
    rules = [rule_label(r["feedback"], r.get(CONCORDANCE)) for r in records]
    done = done.assign(
        stabilization=[value_label("norm", r["norm"]) for r in records],
        extra=extras,
        series=[", ".join(filter(None, pair)) for pair in zip(rules, extras, strict=True)],
    )
    return sort_rows(done, [*fixed, *extra]), extra


def _extra_label(record: dict, keys: Sequence[str]) -> str:
    """What tells this run's condition from its rule's others, briefly: a feedback option's value
    where it is not the rule's default (`half_normal`, `init_bound`; nothing for the defaults),
    any other key as `name=value` ('lr=0.01'), group prefixes dropped."""
    defaults = _rule_defaults(str(record["feedback"]))
    parts = []
    for key in keys:
        text = value_label(key, record[key])
        group, _, name = key.rpartition(".")
        if not text:
            continue
        if group == "feedback":
            if name not in defaults or not _same_value(defaults[name], record[key]):
                parts.append(text)
        else:
            parts.append(f"{name}={text}")
    return ", ".join(parts)


def _same_value(a, b) -> bool:
    """Equal as numbers when both are (1.0 and '1' alike), else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


@functools.cache
def _rule_defaults(rule: str) -> dict:
    """conf/feedback/<rule>.yaml's option values ({} for a rule without a shipped config)."""
    path = CONFIG_DIR / "feedback" / f"{rule}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}


def _mean_std(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    return frame.groupby(by, sort=False)[value].agg(["mean", "std"]).reset_index()


def _figure(rows: int, cols: int, **subplots) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(3.4 * cols + 2.2, 2.8 * rows + 0.8), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def _legend(fig: Figure, colors: dict[str, tuple], title: str, **line) -> None:
    handles = [Line2D([], [], color=color, **line) for color in colors.values()]
    # Below the panels: a long legend beside them would crowd the title and narrow the panels.
    fig.legend(
        handles, list(colors), title=title, loc="outside lower center", ncols=min(4, len(colors))
    )


def _title(fig: Figure, text: str) -> None:
    fig.suptitle("\n".join(textwrap.wrap(text, 70)), fontsize="medium")


@register_figure(
    "fig_curves",
    "test error against epoch, a line per feedback rule (shaded: std over seeds), a panel per "
    "dataset x stabilization",
)
def curves_figure(d: Drawing) -> Figure | None:
    done, history, layout = d.done, d.history, d.layout
    accuracy = history[history["metric"] == "test_acc"]
    data = accuracy.merge(done[["run", "dataset", "stabilization", "series"]], on="run")
    if data.empty:
        return None
    data = data.assign(error=100 * (1 - data["value"]))
    stats = _mean_std(data, ["dataset", "stabilization", "series", "epoch"], "error")
    stats = stats.sort_values("epoch", kind="stable")
    # Datasets may train for different numbers of epochs: share the epoch axis within a row only.
    fig, axes = _figure(len(layout.datasets), len(layout.stabilizations), sharex="row")
    panels = product(enumerate(layout.datasets), enumerate(layout.stabilizations))
    for (i, dataset), (j, stabilization) in panels:
        ax = axes[i, j]
        panel = stats[(stats["dataset"] == dataset) & (stats["stabilization"] == stabilization)]
        for series, line in panel.groupby("series", sort=False):
            color = layout.colors[series]
            low, high = line["mean"] - line["std"], line["mean"] + line["std"]
            ax.plot(line["epoch"], line["mean"], color=color, marker=".")
            ax.fill_between(line["epoch"], low, high, color=color, alpha=0.2, linewidth=0)
        ax.set(title=f"{dataset}, {stabilization}", xlabel="epoch", ylabel="test error (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(fig, layout.colors, "feedback rule")
    _title(fig, "Test error during training (mean, shaded: std over seeds)")
    return fig


@register_figure(
    "fig_stabilization",
    "grouped bars: rule x none/BN/BM/BN+BM, a panel per dataset, error bars: std over seeds; "
    "`div.` marks a condition whose runs all diverged",
)
def stabilization_figure(d: Drawing) -> Figure:
    """Bars over the done runs; a condition whose runs all diverged is marked 'div.'."""
    finished, layout, metric = d.finished, d.layout, d.metric
    # Partial concordance (sc) runs only under one stabilization: fig_concordance shows them.
    if (finished["feedback"] != "sc").any():
        finished = finished[finished["feedback"] != "sc"]
    done = finished[finished["status"] == "done"]
    stats = _mean_std(done, ["dataset", "series", "stabilization"], "error")
    diverged = set(
        finished[finished["status"] == "diverged"][
            ["dataset", "series", "stabilization"]
        ].itertuples(index=False, name=None)
    )
    series = [s for s in layout.series if s in set(finished["series"])]
    fig, axes = _figure(1, len(layout.datasets))
    positions = np.arange(len(series))
    width = 0.8 / len(layout.stabilizations)
    palette = matplotlib.colormaps["Set2"].colors
    colors = {s: palette[i % len(palette)] for i, s in enumerate(layout.stabilizations)}
    for ax, dataset in zip(axes[0], layout.datasets, strict=True):
        for k, stabilization in enumerate(layout.stabilizations):
            rows = stats[(stats["dataset"] == dataset) & (stats["stabilization"] == stabilization)]
            bars = rows.set_index("series").reindex(series)
            offset = (k - (len(layout.stabilizations) - 1) / 2) * width
            ax.bar(
                positions + offset,
                bars["mean"],
                width,
                yerr=bars["std"].fillna(0),
                color=colors[stabilization],
                capsize=2,
            )
            for x, name, mean in zip(positions + offset, series, bars["mean"], strict=True):
                if np.isnan(mean) and (dataset, name, stabilization) in diverged:
                    ax.text(x, 0, "div.", rotation=90, ha="center", va="bottom", fontsize="small")
        ax.set_xticks(positions, series, rotation=30, ha="right")
        ax.set(title=dataset, xlabel="feedback rule", ylabel="test error (%)")
    _legend(fig, colors, "stabilization", linewidth=8)
    _title(fig, f"Test error {METRIC_TEXT[metric]} by stabilization (bars: std over seeds)")
    return fig


@register_figure(
    "fig_concordance",
    "test accuracy against the percentage of concordant feedback signs "
    "(`100 * feedback.concordance`), a line per stabilization, std error bars, random "
    "feedback (`rndf`) as a dashed reference (only when `sc` runs are present)",
)
def concordance_figure(d: Drawing) -> Figure | None:
    done, layout, metric = d.done, d.layout, d.metric
    if CONCORDANCE not in done.columns:
        return None
    sc = done[(done["feedback"] == "sc") & done[CONCORDANCE].notna()]
    if sc.empty:
        return None
    pairs = zip(sc["stabilization"], sc["extra"], strict=True)
    labels = [", ".join(filter(None, pair)) for pair in pairs]
    sc = sc.assign(concordant=100 * sc[CONCORDANCE].astype(float), line=labels)
    sc = sort_rows(sc, ["dataset", "norm", "extra", "concordant"])
    stats = _mean_std(
        sc.assign(accuracy=100 - sc["error"]), ["dataset", "line", "concordant"], "accuracy"
    )
    datasets = [d for d in layout.datasets if d in set(sc["dataset"])]
    fig, axes = _figure(1, len(datasets))
    palette = matplotlib.colormaps["Set1"].colors
    colors = {s: palette[i % len(palette)] for i, s in enumerate(pd.unique(stats["line"]))}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for line, points in stats[stats["dataset"] == dataset].groupby("line", sort=False):
            ax.errorbar(
                points["concordant"],
                points["mean"],
                yerr=points["std"].fillna(0),
                color=colors[line],
                marker="o",
                capsize=3,
            )
        _reference_line(ax, done, dataset, set(sc["norm"]))
        ax.set(title=dataset, xlabel="concordant signs (%)", ylabel="test accuracy (%)")
    colors["rndf (random feedback), same stabilization"] = REFERENCE_COLOR
    _legend(fig, colors, "stabilization", marker="o")
    _title(fig, f"Test accuracy {METRIC_TEXT[metric]} against sign concordance (sc feedback)")
    return fig


REFERENCE_COLOR = (0.4, 0.4, 0.4)


def _reference_line(ax, done: pd.DataFrame, dataset: str, norms: set) -> None:
    """Random feedback's accuracy (dashed, shaded: std over seeds) under the sc runs' norm."""
    rndf = done[(done["dataset"] == dataset) & (done["feedback"] == "rndf")]
    rndf = rndf[rndf["norm"].isin(norms)]
    if rndf.empty:
        return
    accuracy = 100 - rndf["error"]
    mean, std = accuracy.mean(), accuracy.std() if len(accuracy) > 1 else 0.0
    ax.axhline(mean, color=REFERENCE_COLOR, linestyle="--")
    ax.axhspan(mean - std, mean + std, color=REFERENCE_COLOR, alpha=0.15, linewidth=0)


@register_figure(
    "fig_alignment",
    "angle(V, W) and angle(asymmetric error, true error) over epochs, a panel per layer, a line "
    "per rule, on one dataset",
)
def alignment_figure(d: Drawing) -> Figure | None:
    """Angles on one dataset (the first in the paper's order that has them), a panel per layer
    (at most MAX_LAYERS, evenly spread over depth), a line per rule (mean over its runs)."""
    done, history, layout = d.done, d.history, d.layout
    angles = history[history["metric"].isin(list(ANGLES))].dropna(subset=["value"])
    angles = angles.merge(done[["run", "dataset", "series"]], on="run")
    if angles.empty:
        return None
    dataset = next(d for d in layout.datasets if d in set(angles["dataset"]))
    angles = angles[angles["dataset"] == dataset]
    layers = _spread(list(pd.unique(angles["layer"])), MAX_LAYERS)
    angles = angles[angles["layer"].isin(layers)]
    by = ["metric", "layer", "series", "epoch"]
    stats = angles.groupby(by, sort=False)["value"].mean().reset_index()
    stats = stats.sort_values("epoch", kind="stable")
    fig, axes = _figure(len(ANGLES), len(layers), sharex=True, sharey=True)
    for (i, (quantity, name)), (j, layer) in product(enumerate(ANGLES.items()), enumerate(layers)):
        panel = stats[(stats["metric"] == quantity) & (stats["layer"] == layer)]
        for series, line in panel.groupby("series", sort=False):
            axes[i, j].plot(line["epoch"], line["value"], color=layout.colors[series], marker=".")
        axes[i, j].set(title=f"layer {layer}", xlabel="epoch", ylabel=name)
    present = set(stats["series"])
    _legend(fig, {s: c for s, c in layout.colors.items() if s in present}, "feedback rule")
    _title(fig, f"Alignment per layer on {dataset} (mean over seeds and stabilizations)")
    return fig


#: The last epoch's per-layer measures of `fig_depth_alignment`, by history metric name.
DEPTH_MEASURES = {
    "angle_error": "angle(asymmetric error,\ntrue error) (degrees)",
    "grad_cosine": "cosine(weight gradient,\nbackprop's)",
}


@register_figure(
    "fig_depth_alignment",
    "last epoch's error angle and cosine between the rule's and backprop's weight gradients "
    "against layer depth, a panel per stabilization, a line per rule, on one dataset",
)
def depth_alignment_figure(d: Drawing) -> Figure | None:
    """The final alignment of every layer (input side left), mean over seeds, on the first
    dataset in the paper's order that has it; rules without a measure (bp's angles are 0) are
    drawn as well, so that backprop marks the ideal."""
    done, history, layout = d.done, d.history, d.layout
    values = history[history["metric"].isin(list(DEPTH_MEASURES))].dropna(subset=["value"])
    values = values.merge(done[["run", "dataset", "series", "stabilization"]], on="run")
    if values.empty:
        return None
    dataset = next(name for name in layout.datasets if name in set(values["dataset"]))
    values = values[values["dataset"] == dataset]
    last = values.groupby("run")["epoch"].transform("max")
    values = values[values["epoch"] == last]
    # Depth = the layer's position in its own run (input side first): layer names differ
    # between stabilizations (BN shifts the indices), positions do not.
    order = {run: list(pd.unique(rows["layer"])) for run, rows in values.groupby("run")}
    pairs = zip(values["run"], values["layer"], strict=True)
    values = values.assign(depth=[order[run].index(layer) + 1 for run, layer in pairs])
    depths = sorted(set(values["depth"]))
    stabilizations = [s for s in layout.stabilizations if s in set(values["stabilization"])]
    fig, axes = _figure(len(DEPTH_MEASURES), len(stabilizations), sharex=True, sharey="row")
    by = ["metric", "stabilization", "series", "depth"]
    stats = values.groupby(by, sort=False)["value"].mean().reset_index().sort_values("depth")
    for (i, (metric, name)), (j, stab) in product(
        enumerate(DEPTH_MEASURES.items()), enumerate(stabilizations)
    ):
        panel = stats[(stats["metric"] == metric) & (stats["stabilization"] == stab)]
        for series in layout.series:
            line = panel[panel["series"] == series]
            if not line.empty:
                axes[i, j].plot(line["depth"], line["value"], color=layout.colors[series],
                                marker="o")  # fmt: skip
        axes[i, j].set(title=f"stabilization {stab}", xlabel="layer (1 = input side)",
                       ylabel=name)  # fmt: skip
        axes[i, j].set_xticks(depths)
    present = set(stats["series"])
    _legend(fig, {s: c for s, c in layout.colors.items() if s in present}, "feedback rule")
    _title(fig, f"Alignment by depth at the last epoch on {dataset} (mean over seeds)")
    return fig


@register_figure(
    "fig_robustness",
    "test accuracy under attack against epsilon, a line per condition (error bars: std over "
    "seeds), a column per attacker (exact, rule, transfer) side by side, a row per dataset x "
    "stabilization x attack setting (only with asymbp-eval results)",
)
def robustness_figure(d: Drawing) -> Figure | None:
    data = d.robustness
    if data.empty:
        return None
    panels = list(data.groupby(["dataset", "stabilization", "attack", "settings"], sort=False))
    attackers = [a for a in ATTACKERS if a in set(data["attacker"])]
    fig, axes = _figure(len(panels), len(attackers), sharey=True)
    colors = {s: c for s, c in d.layout.colors.items() if s in set(data["condition"])}
    for i, ((dataset, stabilization, attack, _), panel) in enumerate(panels):
        for j, attacker in enumerate(attackers):
            ax = axes[i, j]
            rows = panel[panel["attacker"] == attacker]
            for condition, line in rows.groupby("condition", sort=False):
                ax.errorbar(
                    line["epsilon"], 100 * line["accuracy_mean"],
                    yerr=100 * line["accuracy_std"].fillna(0), color=colors.get(condition),
                    marker=".", capsize=2,
                )  # fmt: skip
            ax.set(
                title=f"{dataset}, {stabilization}: {attack.upper()}, {attacker}",
                xlabel="epsilon (pixels in [0, 1])", ylabel="test accuracy (%)",
            )  # fmt: skip
    _legend(fig, colors, "condition")
    _title(fig, "Accuracy under attack: true gradients (exact), the rule's own (rule), by transfer")
    return fig


def _spread(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spaced, first and last included."""
    if len(items) <= count:
        return items
    return [
        items[i] for i in sorted(set(np.linspace(0, len(items) - 1, count).round().astype(int)))
    ]


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})  # no timestamp
    return paths


def write_figures(
    runs: pd.DataFrame,
    history: pd.DataFrame,
    out: Path,
    metric: str = "final",
    ignore: Sequence[str] = NON_IDENTITY_KEYS,
    select: Sequence[str] = (),
    robustness: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw every figure the runs allow into `out`; say on stderr which ones had no data.
    `select`: as in `figure_runs`; `robustness`: robustness.csv's rows, if any."""
    finished, extra = figure_runs(runs, metric, ignore, select)
    done = finished[finished["status"] == "done"]
    if done.empty:
        print("no finished runs: no figures", file=sys.stderr)
        return []
    robustness = pd.DataFrame() if robustness is None else robustness
    drawing = Drawing(finished, done, history, FigureLayout.of(done, extra), metric, robustness)
    written = []
    for name, entry in FIGURES.items():
        fig = entry.draw(drawing)
        if fig is None:
            print(f"{name}: no data for it, skipped", file=sys.stderr)
        else:
            written += save(fig, out, name)
    return written
