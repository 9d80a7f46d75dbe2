"""The shared figures of `plotting`: what each helper draws (axes, labels, colours), checked on the Agg backend."""

import matplotlib
import pytest
import torch

import diffusion_lib as dl

matplotlib.use("Agg")


def test_plot_snapshot_grid_shapes():
    import matplotlib.pyplot as plt

    pts = torch.randn(20, 2, dtype=torch.float64)
    rows = [("linear", [(1, pts), (5, pts), (10, pts)]), ("cosine", [(1, pts), (5, pts)])]
    fig = dl.plotting.plot_snapshot_grid(rows, suptitle="test", colors=dl.plotting.SCHEDULE_COLORS)
    axes = fig.axes
    assert len(axes) == 6
    assert not axes[5].get_visible()
    assert axes[0].get_title() == "$t = 1$"
    assert "linear" in axes[0].get_ylabel() and "cosine" in axes[3].get_ylabel()
    assert axes[3].get_xlabel() == "$x^{(1)}$"
    plt.close(fig)


def test_plot_schedule_curve_fraction_axis():
    import matplotlib.pyplot as plt

    sched = dl.make_schedule("cosine", 10)
    ax = dl.plotting.plot_schedule_curve(sched, sched.alpha_bar, fraction=True, linestyle="--", marker="o")
    line = ax.get_lines()[0]
    assert line.get_xdata()[0] == pytest.approx(0.1) and line.get_xdata()[-1] == pytest.approx(1.0)
    assert line.get_linestyle() == "--" and line.get_color() == dl.plotting.SCHEDULE_COLORS["cosine"]
    assert "t / T" in ax.get_xlabel()
    plt.close(ax.figure)



def test_plot_arrows_draws_magnified_arrows():
    import matplotlib.pyplot as plt

    start = torch.zeros(3, 2, dtype=torch.float64)
    end = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1]], dtype=torch.float64)
    ax = dl.plotting.plot_arrows(start, end, magnify=10.0, title="arrows")
    quiver = ax.collections[-1]
    assert quiver.U.tolist() == pytest.approx([1.0, 0.0, 1.0]) and quiver.V.tolist() == pytest.approx([0.0, 1.0, 1.0])
    assert ax.get_title() == "arrows" and ax.get_xlabel() and ax.get_ylabel()
    plt.close("all")


def test_plot_curves_one_line_per_entry_with_legend():
    import matplotlib.pyplot as plt

    x = list(range(1, 6))
    curves = {"linear": torch.arange(5.0), "custom": [1, 2, 3, 4, 5]}
    ax = dl.plotting.plot_curves(x, curves, xlabel="t", ylabel="y", title="curves", logy=True,
                                 styles={"custom": "--"})
    assert [line.get_label() for line in ax.get_lines()] == ["linear", "custom"]
    assert ax.get_lines()[0].get_color() == dl.plotting.SCHEDULE_COLORS["linear"]
    assert ax.get_lines()[1].get_linestyle() == "--"
    assert ax.get_legend() is not None and ax.get_yscale() == "log"
    single = dl.plotting.plot_curves(x, {"only": x})
    assert single.get_legend() is None
    plt.close("all")

