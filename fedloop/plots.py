"""PNG plots of one run and of a comparison (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .history import History

__all__ = [
    "panel_colours",
    "panel_styles",
    "plot_accuracy_bands",
    "plot_accuracy_panels",
    "plot_comparison",
    "plot_draws",
    "plot_history",
    "plot_intervals",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: History, path: str | Path) -> Path:
    """Accuracy, expert-load CV and traffic per round of one run."""
    plt = _pyplot()
    rounds = np.array(history.rounds) + 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(rounds, history.column("accuracy"), marker=".")
    axes[0].set(xlabel="round", ylabel="test accuracy", title="accuracy")
    axes[1].plot(rounds, history.column("load_cv"), marker=".", color="tab:orange")
    axes[1].set(xlabel="round", ylabel="load CV", title="expert load imbalance")
    mb = np.array(history.cumulative("bytes_down")) / 1e6 + np.array(history.cumulative("bytes_up")) / 1e6
    axes[2].plot(rounds, mb, marker=".", color="tab:green")
    axes[2].set(xlabel="round", ylabel="MB (down + up)", title="cumulative traffic")
    cfg = history.config
    fig.suptitle(f"{cfg.get('dataset')} / {cfg.get('policy')} ({cfg.get('method')}), seed {cfg.get('seed')}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(ax, x: np.ndarray, curves: np.ndarray, label: str, color: str | None = None, linestyle: str = "-") -> None:
    """The mean of ``curves`` (seeds, points) against ``x``, with a band from their min to their max."""
    (line,) = ax.plot(x, curves.mean(axis=0), label=label, color=color, linestyle=linestyle)
    ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.15)


def plot_accuracy_bands(
    curves: Mapping[str, np.ndarray], path: str | Path, *, targets: Sequence[float] = (), title: str = ""
) -> Path:
    """Accuracy against rounds from ``curves`` {name: (seeds, rounds)}: mean, min-max band, targets dotted."""
    return plot_accuracy_panels({title: curves}, path, targets=targets)


def plot_accuracy_panels(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    *,
    targets: Sequence[float] = (),
    ylabel: str = "test accuracy",
    sharey: bool = True,
    legend_loc: str = "upper left",
) -> Path:
    """One panel per entry {title: {name: (seeds, rounds)}}, side by side, sharing the accuracy axis.

    Each curve is the mean over seeds with a band from min to max; the ``targets`` are dotted. A name keeps
    one colour and line style in every panel (``panel_colours``, ``panel_styles``): beyond twenty names colours
    repeat, each time with another line style.
    Panels of other per-round quantities than accuracy: ``sharey=False`` and their titles say what each shows;
    ``legend_loc`` as matplotlib's ``loc`` (accuracy curves start low: the top left is where they are not), or
    ``"below"``: under each panel, where it hides no curve.
    """
    plt = _pyplot()
    colours, styles = panel_colours(panels), panel_styles(panels)
    below = legend_loc == "below"
    # a legend below takes a row of three names per 0.22 in; the tight bounding box at saving keeps any excess
    height = 4.5 + (0.22 * math.ceil(max(len(c) for c in panels.values()) / 3) + 0.4 if below else 0)
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), height), sharey=sharey, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for name, acc in curves.items():
            _band(ax, np.arange(1, acc.shape[1] + 1), acc, name, colours[name], styles[name])
        for target in targets:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="round", title=title)
        if not below:
            ax.legend(loc=legend_loc, fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    if below:
        renderer = fig.canvas.get_renderer()
        for ax in axes[0]:
            # three names a row, fewer where long names would make the legend wider than its panel
            for ncol in (3, 2, 1):
                legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, fontsize=8)
                if legend.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width:
                    break
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight" if below else None)
    plt.close(fig)
    return path


def plot_intervals(
    panels: Mapping[str, Sequence[tuple[float, float, float] | None]],
    labels: Sequence[str],
    path: str | Path,
    *,
    percent: Sequence[bool] = (),
    title: str = "",
) -> Path:
    """A forest plot: one panel per entry {title: [(point, lower, upper) or None per label]}, side by side.

    Row ``k`` of every panel is ``labels[k]``; an interval that excludes 0 is drawn in blue, one that holds it in
    grey, and a None cell says "not estimable". ``percent[i]`` formats panel i's axis as signed percentages.
    """
    plt = _pyplot()
    y = np.arange(len(labels))[::-1]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 2.5, 0.3 * len(labels) + 1.5), sharey=True, squeeze=False
    )
    for i, (ax, (name, cells)) in enumerate(zip(axes[0], panels.items())):
        if len(cells) != len(labels):
            raise ValueError(f"panels[{name!r}]: must hold one cell per label ({len(labels)}); got {len(cells)}")
        for yi, cell in zip(y, cells):
            if cell is None:
                ax.text(0, yi, "not estimable", fontsize=7, va="center", ha="center", color="grey")
                continue
            point, lo, hi = cell
            colour = "tab:blue" if lo > 0 or hi < 0 else "tab:grey"
            ax.errorbar(point, yi, xerr=[[point - lo], [hi - point]], fmt="o", ms=4, capsize=2, color=colour)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(name, fontsize=9)
        if i < len(percent) and percent[i]:
            ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}"))
    axes[0][0].set_yticks(y, labels, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_draws(
    panels: Mapping[str, tuple[Sequence[int], Mapping[str, tuple[Sequence[float], Sequence[bool]]]]],
    path: str | Path,
    *,
    columns: int = 3,
    title: str = "",
) -> Path:
    """Runs of one seed side by side: one panel per entry {title: (seeds, {run name: (values, missed)})}.

    Each seed is a column of points, one per run, offset a little so that equal values stay visible, joined by a
    line from the lowest to the highest (the seed's range); ``missed[k]`` True draws run k's point hollow (a target
    missed, its value the budget). Panels fill a grid ``columns`` wide; a run keeps its colour in every panel.
    """
    plt = _pyplot()
    rows = max(1, math.ceil(len(panels) / columns))
    width = min(columns, max(1, len(panels)))
    colours = panel_colours({name: dict(runs) for name, (_, runs) in panels.items()})
    # the legend's rows (four names a row) get the height they need below the panels, and no more
    legend_in = 0.15 + 0.2 * math.ceil(len(colours) / 4)
    height = 3.0 * rows + 0.35 + legend_in
    fig, axes = plt.subplots(rows, width, figsize=(4.6 * width, height), squeeze=False)
    for ax, (name, (seeds, runs)) in zip(axes.flat, panels.items()):
        seeds = list(seeds)
        for k, (label, (values, missed)) in enumerate(runs.items()):
            if len(values) != len(seeds) or len(missed) != len(seeds):
                raise ValueError(
                    f"panels[{name!r}][{label!r}]: need one value and one missed flag per seed ({len(seeds)}); "
                    f"got {len(values)} and {len(missed)}"
                )
            x = np.arange(len(seeds)) + (k - (len(runs) - 1) / 2) * 0.12
            hit = ~np.asarray(missed, dtype=bool)
            v = np.asarray(values, dtype=float)
            ax.scatter(x[hit], v[hit], s=18, color=colours[label], label=label, zorder=3)
            ax.scatter(x[~hit], v[~hit], s=18, facecolors="none", edgecolors=colours[label], zorder=3)
        stacked = np.array([values for values, _ in runs.values()], dtype=float)
        ax.vlines(np.arange(len(seeds)), stacked.min(0), stacked.max(0), color="lightgrey", linewidth=3, zorder=1)
        ax.set_xticks(np.arange(len(seeds)), [str(s) for s in seeds], fontsize=7)
        ax.set_xlabel("seed", fontsize=8)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def panel_colours(panels: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """One colour per curve name, in the order names first appear across ``panels``.

    Up to ten names: matplotlib's cycle colours C0-C9. More: twenty colours of the ``tab20`` map, the ten cycle
    hues first and then their light shades, so that no two of the first twenty names share a colour (the first ten
    keep the colours they have with fewer names); beyond twenty the colours repeat.
    """
    names = _curve_names(panels)
    if len(names) <= 10:
        return {name: f"C{i}" for i, name in enumerate(names)}
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    shades = colormaps["tab20"].colors
    palette = [to_hex(shades[i]) for i in (*range(0, 20, 2), *range(1, 20, 2))]
    return {name: palette[i % 20] for i, name in enumerate(names)}


def panel_styles(panels: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """One line style per curve name, in the order of :func:`panel_colours`: solid for the first twenty names, then
    dashed, dotted and dash-dotted for each further twenty, so that two names sharing a colour never share a style
    (up to eighty names)."""
    styles = ("-", "--", ":", "-.")
    return {name: styles[min(i // 20, len(styles) - 1)] for i, name in enumerate(_curve_names(panels))}


def _curve_names(panels: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Every curve name once, in the order names first appear across ``panels``: the order colours and styles follow."""
    return list(dict.fromkeys(name for curves in panels.values() for name in curves))


def plot_comparison(runs: Mapping[str, Sequence[History]], path: str | Path, *, target: float | None = None) -> Path:
    """Mean accuracy (band: min to max over seeds) against rounds, traffic and simulated time, per policy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, histories in runs.items():
        acc = np.array([h.column("accuracy") for h in histories])
        traffic = (
            np.array([np.array(h.cumulative("bytes_down")) + np.array(h.cumulative("bytes_up")) for h in histories])
            / 1e6
        )
        seconds = np.array([h.cumulative("latency_s") for h in histories])
        rounds = np.arange(1, acc.shape[1] + 1)
        for ax, x in zip(axes, (rounds, traffic.mean(axis=0), seconds.mean(axis=0))):
            _band(ax, x, acc, name)
    for ax, label in zip(axes, ("round", "cumulative MB (down + up)", "simulated seconds")):
        ax.set(xlabel=label, ylabel="test accuracy")
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    axes[1].set_xscale("log")
    axes[2].set_xscale("log")
    axes[0].legend(loc="lower right")
    fig.suptitle("accuracy against rounds, traffic and simulated time (mean over seeds, band: min to max)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
