"""The MLP and its sinusoidal timestep embedding: shapes, the embedding's formula, the model contract."""

import math

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.models import MLP, timestep_embedding


def test_embedding_matches_the_transformer_formula():
    t = torch.tensor([1, 7, 500])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    for i in range(4):
        w = 10_000.0 ** (-i / 4)
        assert torch.allclose(emb[:, i], torch.cos(t * w).float(), atol=1e-5)
        assert torch.allclose(emb[:, 4 + i], torch.sin(t * w).float(), atol=1e-5)


def test_embedding_needs_an_even_size():
    with pytest.raises(ValueError, match="must be even"):
        timestep_embedding(torch.tensor([1]), 7)


@pytest.mark.parametrize("learn_var", [False, True])
def test_mlp_shapes(learn_var):
    torch.manual_seed(0)
    model = MLP(hidden=(16, 16), emb_dim=8, learn_var=learn_var)
    out = model(torch.randn(5, 2), torch.tensor([1, 2, 3, 4, 5]))
    if learn_var:
        pred, v = out
        assert pred.shape == v.shape == (5, 2)
    else:
        assert out.shape == (5, 2)


def test_mlp_is_reproducible_from_the_seed():
    x, t = torch.randn(4, 2), torch.tensor([1, 10, 100, 1000])
    torch.manual_seed(3)
    a = MLP(hidden=(32,))(x, t)
    torch.manual_seed(3)
    b = MLP(hidden=(32,))(x, t)
    torch.manual_seed(4)
    c = MLP(hidden=(32,))(x, t)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_learned_v_starts_near_one_half():
    # v = sigmoid(raw) with a small raw output at initialisation, and always inside (0, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        _, v = MLP(hidden=(64, 64), learn_var=True)(torch.randn(256, 2), torch.randint(1, 1001, (256,)))
    assert abs(float(v.mean()) - 0.5) < 0.1 and 0 < float(v.min()) and float(v.max()) < 1


def test_bad_hidden_sizes_are_refused():
    with pytest.raises(ValueError, match="positive widths"):
        MLP(hidden=())
    with pytest.raises(ValueError, match="positive widths"):
        MLP(hidden=(16, 0))


def test_the_mlp_fulfils_the_library_model_contract():
    # bound_terms calls model(xt, t) with t an int64 (B,) tensor; the bound must be finite
    sched = dl.make_schedule("cosine", 10)
    torch.manual_seed(0)
    model = MLP(hidden=(8,), emb_dim=4, learn_var=True)
    terms = dl.bound_terms(sched, model, torch.randn(6, 2), var="learned",
                           generator=torch.Generator().manual_seed(0))
    assert terms.steps.shape == (10, 6) and torch.isfinite(terms.total).all()
    assert math.isfinite(float(terms.total.mean()))
