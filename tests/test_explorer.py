"""The schedule explorer of notebook 03, without a widget frontend: the drawing and the controls."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import diffusion_lib as dl  # noqa: E402
from diffusion_lib import explorer  # noqa: E402


@pytest.fixture
def points():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    return x0, torch.randn(50, 2, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("schedule", dl.SCHEDULES)
@pytest.mark.parametrize("T,t", [(10, 1), (10, 10), (1000, 250)])
def test_frame_draws_x_t_and_marks_t_on_alpha_bar(schedule, T, t, points):
    x0, eps = points
    fig = explorer.draw_explorer_frame(schedule, T, t, x0, eps)
    ax_points, ax_curve = fig.axes
    sched = dl.make_schedule(schedule, T)
    drawn = torch.as_tensor(ax_points.collections[0].get_offsets().data)
    assert torch.allclose(drawn, dl.q_sample(sched, x0, t, eps).float().double(), atol=1e-6)
    curve, marker = ax_curve.lines[0], ax_curve.lines[-1]
    assert len(curve.get_xdata()) == T
    assert tuple(marker.get_xdata()) == (t,)
    assert marker.get_ydata()[0] == pytest.approx(float(sched.alpha_bar[t]))
    assert f"{float(sched.alpha_bar[t]):.3f}" in ax_curve.get_title()
    plt.close(fig)


def test_frame_reuses_a_figure(points):
    fig = explorer.draw_explorer_frame("linear", 100, 50, *points)
    again = explorer.draw_explorer_frame("cosine", 100, 60, *points, fig=fig)
    assert again is fig and len(fig.axes) == 2
    plt.close(fig)


def test_controls_redraw_and_t_follows_T(points):
    pytest.importorskip("ipywidgets")
    ex = explorer.ScheduleExplorer(*points, schedule="linear", T=1000, t=250)
    ex._redraw()
    before = ex.redraws
    ex.schedule.value = "cosine"
    assert ex.redraws > before
    ex.T.value = 100  # the same fraction of the chain: t 250 of 1000 -> 25 of 100
    assert (ex.t.max, ex.t.value) == (100, 25)
    ex.T.value = 10
    assert (ex.t.max, ex.t.value) == (10, 2)
    ex.t.value = 10
    fig = ex.frame()
    assert "t = 10 of 10" in fig.axes[0].get_title() and "cosine" in fig.axes[1].get_title()
    plt.close(fig)


def test_explore_without_ipywidgets_shows_one_frame(points, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ipywidgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    fig = explorer.explore(*points, schedule="sigmoid", T=10)
    assert isinstance(fig, matplotlib.figure.Figure) and "ipywidgets is not installed" in capsys.readouterr().out
    plt.close(fig)
