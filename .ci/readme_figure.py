"""Make data/forward_process.png, the figure at the top of README.md (see data/README.md)."""

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

import diffusion_lib as dl  # noqa: E402

sched = dl.make_schedule("linear", 1000)
x0 = dl.swiss_roll_scaling(0.5).to_model(dl.swiss_roll(2000, noise=0.5, seed=0))
keep = (50, 100, 250, 1000)
snapshots = [(0, x0)] + [(t, x) for t, x in dl.q_chain(sched, x0, torch.Generator().manual_seed(0)) if t in keep]
fig = dl.plotting.plot_snapshots(snapshots, suptitle="the forward process destroys the swiss roll (linear schedule, T = 1000)")
fig.savefig("data/forward_process.png", dpi=80, bbox_inches="tight", metadata={"Software": None})
