"""An interactive schedule explorer: pick a schedule, T and t; see x_t and where t sits on alpha_bar.

Contents: `draw_explorer_frame` (one frame, a plain matplotlib Figure: tested without a frontend) and
`ScheduleExplorer` (ipywidgets controls that redraw the frame). In a notebook:

    explorer = dl.explorer.ScheduleExplorer(x0, eps)
    explorer.show()

Without ipywidgets, or without a widget frontend (nbval, papermill, a static web page), nothing
breaks: `show()` displays the controls if it can and one static frame in every case, so a reader of
the rendered page still sees the picture.
"""

import matplotlib.pyplot as plt

from .forward import q_sample
from .plotting import DPI, NOISE_COLOR, SCHEDULE_COLORS, plot_points, plot_schedule_curve
from .schedules import SCHEDULES, make_schedule

T_CHOICES = (10, 20, 50, 100, 200, 500, 1000)  # chain lengths offered by the T slider


def draw_explorer_frame(schedule, T, t, x0, eps, fig=None):
    """Two panels: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, and alpha_bar_t against t.

    Args: schedule one of SCHEDULES; T the number of steps; t in 1..T; x0, eps (N, 2) points and the
    noise reused for every t (so moving the slider changes only alpha_bar_t). `fig` is cleared and
    reused if given. Returns the Figure.
    """
    sched = make_schedule(schedule, T)
    if fig is None:
        fig = plt.figure(figsize=(9, 3.6), dpi=DPI)
    fig.clear()
    ax_points, ax_curve = fig.subplots(1, 2, width_ratios=(1, 1.5))
    alpha_bar_t = float(sched.alpha_bar[t])
    plot_points(q_sample(sched, x0, t, eps), ax=ax_points, color=SCHEDULE_COLORS.get(schedule, NOISE_COLOR),
                title=f"$x_t$ at t = {t} of {T}", alpha=1.0)
    plot_schedule_curve(sched, sched.alpha_bar, ax=ax_curve, ylabel=r"$\bar\alpha_t$",
                        title=rf"{schedule}: $\bar\alpha_t$ = {alpha_bar_t:.3f}, signal left {alpha_bar_t ** 0.5:.3f}")
    ax_curve.axvline(t, color="grey", linewidth=0.8, linestyle=":")
    ax_curve.plot([t], [alpha_bar_t], "o", color="black", markersize=5)
    ax_curve.set_ylim(-0.03, 1.03)
    fig.tight_layout()
    return fig


class ScheduleExplorer:
    """ipywidgets controls (schedule, T, t) that redraw `draw_explorer_frame` in an Output widget.

    The t slider keeps the same fraction of the chain when T changes. `frame()` draws the current
    settings as a plain Figure, so everything but the display can be tested without a frontend.
    """

    def __init__(self, x0, eps, schedule="cosine", T=1000, t=None):
        import ipywidgets as widgets

        self.x0, self.eps = x0, eps
        self.schedule = widgets.Dropdown(options=SCHEDULES, value=schedule, description="schedule")
        self.T = widgets.SelectionSlider(options=sorted(set(T_CHOICES) | {T}), value=T, description="T")
        self.t = widgets.IntSlider(value=t or max(1, T // 2), min=1, max=T, description="t",
                                   continuous_update=False)
        self.output = widgets.Output()
        self.T.observe(self._rescale_t, names="value")
        for control in (self.schedule, self.T, self.t):
            control.observe(self._redraw, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.schedule, self.T, self.t]), self.output])
        self.redraws = 0  # how often the picture was redrawn (tests read it)

    def _rescale_t(self, change):
        fraction = self.t.value / change["old"]
        with self.t.hold_trait_notifications():
            self.t.max = change["new"]
            self.t.value = min(change["new"], max(1, round(fraction * change["new"])))

    def frame(self, fig=None):
        """The picture for the current settings, as a Figure."""
        return draw_explorer_frame(self.schedule.value, self.T.value, self.t.value, self.x0, self.eps, fig=fig)

    def _redraw(self, change=None):
        fig = self.frame()
        # set the Output widget's outputs directly: its capture context (`with self.output:`) hooks the
        # kernel's streams and hung a papermill run without a frontend (cosine, T = 1000)
        self.output.outputs = ()
        self.output.append_display_data(fig)
        plt.close(fig)
        self.redraws += 1

    def show(self):
        """Display the controls and the first picture (shown by the Output widget)."""
        from IPython.display import display

        display(self.widget)
        self._redraw()
        return self


def explore(x0, eps, schedule="cosine", T=1000, t=None):
    """The explorer if ipywidgets is installed, else one static frame; returns the explorer or the Figure."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        print("ipywidgets is not installed: showing one static frame (pip install ipywidgets for sliders)")
        return draw_explorer_frame(schedule, T, t or max(1, T // 2), x0, eps)
    return ScheduleExplorer(x0, eps, schedule=schedule, T=T, t=t).show()
