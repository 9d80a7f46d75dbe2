"""Plot helpers shared by every notebook, so figures look the same everywhere.

Each takes `ax=None` (a new figure if omitted) and returns its Axes or Figure. None of them calls
`plt.show()` or `savefig`, and importing this module changes no matplotlib settings.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import torch
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


def _style_plane(ax, limits, title):
    """Equal axes over `limits` (None: automatic), labelled x^(1), x^(2); returns the Axes."""
    if limits is not None:
        ax.set_xlim(limits)
        ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel("$x^{(1)}$")
    ax.set_ylabel("$x^{(2)}$")
    if title:
        ax.set_title(title)
    return ax


def plot_points(x, ax=None, title=None, color=DATA_COLOR, limits=LIMITS, label=None, alpha=0.5, size=POINT_SIZE):
    """Scatter 2-D points (N, 2) with equal axes (marker area `size`); returns the Axes."""
    ax = _axes(ax)
    x = x.detach().cpu()
    ax.scatter(x[:, 0], x[:, 1], s=size, color=color, alpha=alpha, label=label, linewidths=0)
    return _style_plane(ax, limits, title)


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


class AnimatedGif:
    """A GIF file for display in a notebook, with a still PNG of its last frame for static renderers.

    Jupyter shows the animation (an HTML <img> of the GIF, its preferred type); a renderer that shows
    only images (a PNG-only viewer, a PDF export) shows the last frame instead of a text placeholder.
    """

    def __init__(self, path):
        self.path = Path(path)

    def _repr_mimebundle_(self, include=None, exclude=None):
        import base64
        import io

        from PIL import Image

        data = self.path.read_bytes()
        with Image.open(io.BytesIO(data)) as gif:
            frames = getattr(gif, "n_frames", 1)
            gif.seek(frames - 1)
            buffer = io.BytesIO()
            gif.convert("RGB").save(buffer, format="PNG", optimize=True)
        gif64 = base64.b64encode(data).decode("ascii")
        return {"text/html": f'<img src="data:image/gif;base64,{gif64}" alt="{self.path.name}"/>',
                "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                "text/plain": f"<animation {self.path.name}: {frames} frames>"}


def show_gif(path):
    """The GIF at `path` as an AnimatedGif (animation in Jupyter, last frame as PNG elsewhere)."""
    return AnimatedGif(path)


def plot_schedule_curve(sched, values, ax=None, ylabel=None, logy=False, label=None, title=None,
                        fraction=False, **line_kwargs):
    """Plot a length-(T + 1) schedule quantity against t = 1..T (slot 0 is padding, not drawn).

    With fraction=True the x axis is t / T, so schedules of different lengths line up. Extra keyword
    arguments (linestyle, marker, color...) go to `ax.plot`.
    """
    ax = _axes(ax, figsize=(5, 3.5))
    ts = torch.arange(1, sched.T + 1, dtype=torch.float64)
    if fraction:
        ts = ts / sched.T
    line_kwargs.setdefault("color", SCHEDULE_COLORS.get(sched.name))
    ax.plot(ts, values[1:].detach().cpu(), label=label or f"{sched.name}, T={sched.T}", **line_kwargs)
    ax.set_xlabel("fraction of the chain $t / T$" if fraction else "timestep $t$")
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    return ax


def plot_snapshot_grid(rows, limits=LIMITS, suptitle=None, colors=None, alpha=1.0):
    """One row of panels per (label, snapshots) pair, snapshots a list of (t, x_t); returns the Figure.

    Rows share axes and columns, so the same steps line up for a side-by-side comparison (for
    example one row per schedule). `colors` maps a row label to its colour (default DATA_COLOR).
    Opaque points (alpha=1) keep the PNG small: a 24-panel grid stays near 100 KB.
    """
    ncols = max(len(snapshots) for _, snapshots in rows)
    height = 2.0 * len(rows) + (0.35 if suptitle else 0.0)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, height), dpi=DPI,
                             squeeze=False, sharex=True, sharey=True)
    for r, (label, snapshots) in enumerate(rows):
        color = (colors or {}).get(label, DATA_COLOR)
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(snapshots):
                ax.set_visible(False)
                continue
            t, x = snapshots[c]
            plot_points(x, ax=ax, title=f"$t = {t}$", limits=limits, color=color, alpha=alpha)
            ax.set_ylabel(f"{label}\n$x^{{(2)}}$")
            ax.label_outer()
    if suptitle:
        fig.suptitle(suptitle)
    # tight_layout renders a many-panel grid twice as fast as constrained layout; keep room for the title
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.35 / height if suptitle else 0.0)))
    return fig


def plot_arrows(start, end, ax=None, magnify=1.0, color=DATA_COLOR, title=None, limits=LIMITS, label=None):
    """Arrows from 2-D points start (N, 2) towards end (N, 2), lengths multiplied by `magnify`; returns the Axes.

    Diffusion steps are short, so arrows are usually magnified: say by how much in the title.
    """
    ax = _axes(ax)
    start = start.detach().cpu()
    delta = (end.detach().cpu() - start) * magnify
    ax.quiver(start[:, 0], start[:, 1], delta[:, 0], delta[:, 1], angles="xy", scale_units="xy", scale=1,
              color=color, width=0.004, label=label)
    return _style_plane(ax, limits, title)


def plot_curves(x, curves, ax=None, xlabel=None, ylabel=None, title=None, logx=False, logy=False,
                colors=None, styles=None):
    """One line per entry of `curves` (a dict label -> y values, each as long as x); returns the Axes.

    Labels that name a schedule get its colour from SCHEDULE_COLORS unless `colors` (label -> colour)
    says otherwise; `styles` (label -> line style) tells apart curves that share a colour. A legend is
    drawn when there are several curves.
    """
    ax = _axes(ax, figsize=(5, 3.5))
    colors, styles = colors or {}, styles or {}
    for label, y in curves.items():
        y = y.detach().cpu() if hasattr(y, "detach") else y
        ax.plot(x, y, label=label, color=colors.get(label, SCHEDULE_COLORS.get(label)),
                linestyle=styles.get(label, "-"))
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize="small")
    return ax


IMAGE_CMAP = "gray_r"  # digits: ink dark on white paper, as scikit-learn shows them


def tile_images(images, ncols, pad=1, fill=float("nan")):
    """(N, 1, H, W) images -> one (rows (H + pad), ncols (W + pad)) array, row by row, NaN between tiles."""
    images = torch.as_tensor(images).double()[:, 0]
    n, h, w = images.shape
    nrows = -(-n // ncols)
    canvas = torch.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), fill, dtype=torch.float64)
    for k, image in enumerate(images):
        r, c = divmod(k, ncols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return canvas


def plot_image_grid(images, ax=None, ncols=10, title=None, vmax=16):
    """Digits in raw intensities (N, 1, 8, 8) (0..vmax; values outside are clipped) as a grid."""
    n = torch.as_tensor(images).shape[0]
    ax = _axes(ax, figsize=(0.45 * min(n, ncols) + 0.5, 0.45 * -(-n // ncols) + 0.6))
    ax.imshow(tile_images(images, ncols).numpy(), cmap=IMAGE_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_image_strip(columns, suptitle=None, vmax=16):
    """{label: images (k, 1, 8, 8)} as k rows of images, one column per label (e.g. per t); the Figure."""
    labels, stacks = list(columns), [torch.as_tensor(v) for v in columns.values()]
    k = stacks[0].shape[0]
    fig, axes = plt.subplots(1, len(labels), figsize=(0.75 * len(labels) + 0.4, 0.55 * k + 0.8), dpi=DPI,
                             squeeze=False)
    for ax, label, stack in zip(axes[0], labels, stacks):
        ax.imshow(tile_images(stack, 1).numpy(), cmap=IMAGE_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(str(label), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
