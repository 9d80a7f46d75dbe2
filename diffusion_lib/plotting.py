"""Plot helpers shared by every notebook, so figures look the same everywhere.

Each takes `ax=None` (a new figure if omitted) and returns its Axes or Figure. None of them calls
`plt.show()` or `savefig`, and importing this module changes no matplotlib settings.
"""

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.animation import FuncAnimation, PillowWriter

DATA_COLOR = "#1f4e79"
NOISE_COLOR = "#c0504d"
SCHEDULE_COLORS = {"linear": "#1f77b4", "quadratic": "#ff7f0e", "sigmoid": "#2ca02c", "cosine": "#d62728"}
POINT_SIZE = 2
LIMITS = (-3.5, 3.5)  # axis limits for standardised data: the roll and N(0, I) both fit
DPI = 80


def _axes(ax, figsize=(4, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, dpi=DPI)
    return ax


def plot_points(x, ax=None, title=None, color=DATA_COLOR, limits=LIMITS, label=None, alpha=0.5):
    """Scatter 2-D points (N, 2) with equal axes; returns the Axes."""
    ax = _axes(ax)
    x = x.detach().cpu()
    ax.scatter(x[:, 0], x[:, 1], s=POINT_SIZE, color=color, alpha=alpha, label=label, linewidths=0)
    if limits is not None:
        ax.set_xlim(limits)
        ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel("$x^{(1)}$")
    ax.set_ylabel("$x^{(2)}$")
    if title:
        ax.set_title(title)
    return ax


def plot_snapshots(snapshots, limits=LIMITS, suptitle=None, color=DATA_COLOR):
    """One panel per (t, x_t) pair in `snapshots`, side by side; returns the Figure."""
    fig, axes = plt.subplots(1, len(snapshots), figsize=(2.2 * len(snapshots), 2.5), dpi=DPI,
                             squeeze=False, sharex=True, sharey=True)
    for ax, (t, x) in zip(axes[0], snapshots):
        plot_points(x, ax=ax, title=f"$t = {t}$", limits=limits, color=color)
        ax.label_outer()
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_gif(snapshots, path, limits=LIMITS, title="forward process", fps=8, color=DATA_COLOR):
    """Write an animation of (t, x_t) frames to a GIF file (Pillow) and return its path.

    GIFs stay small (about 100 KB for 40 frames) and carry no random ids, unlike HTML animations.
    """
    fig, ax = plt.subplots(figsize=(3, 3), dpi=72)
    t0, x0 = snapshots[0]
    # opaque points keep the palette small, so the GIF compresses well
    scatter = ax.scatter(x0[:, 0], x0[:, 1], s=1, color=color, linewidths=0)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel("$x^{(1)}$")
    ax.set_ylabel("$x^{(2)}$")

    def update(i):
        t, x = snapshots[i]
        scatter.set_offsets(x.detach().cpu().numpy())
        ax.set_title(f"{title}, $t = {t}$")
        return (scatter,)

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    anim = FuncAnimation(fig, update, frames=len(snapshots), blit=False)
    anim.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def plot_schedule_curve(sched, values, ax=None, ylabel=None, logy=False, label=None, title=None):
    """Plot a length-(T + 1) schedule quantity against t = 1..T (slot 0 is padding, not drawn)."""
    ax = _axes(ax, figsize=(5, 3.5))
    ts = range(1, sched.T + 1)
    color = SCHEDULE_COLORS.get(sched.name)
    ax.plot(ts, values[1:].detach().cpu(), label=label or f"{sched.name}, T={sched.T}", color=color)
    ax.set_xlabel("timestep $t$")
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    return ax
