"""Animations in notebooks: the GIF for Jupyter, a still PNG of the last frame for renderers without it."""

import base64
import io

import torch
from PIL import Image

import diffusion_lib as dl


def test_show_gif_offers_the_animation_and_a_png_of_its_last_frame(tmp_path):
    frames = [(t, torch.full((20, 2), float(t))) for t in range(3)]
    path = dl.plotting.save_gif(frames, tmp_path / "a.gif", title="test")
    bundle = dl.plotting.show_gif(path)._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert bundle["text/plain"] == "<animation a.gif: 3 frames>"
    assert base64.b64encode(path.read_bytes()).decode() in bundle["text/html"]  # the whole GIF, animated
    still = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert still.format == "PNG"
    with Image.open(path) as gif:
        gif.seek(gif.n_frames - 1)
        last = gif.convert("RGB")
    assert still.size == last.size and still.convert("RGB").tobytes() == last.tobytes()
