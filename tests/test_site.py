"""The rendered book: `make site` builds it offline, and headless Chromium shows typeset formulas and images.

The test builds build/site/ (.ci/build_site.py), then opens the landing page and a notebook page in
Debian's Chromium. A copy of each page with a small probe script is written beside it (same folder, so
every relative link still works); after MathJax has finished, the probe writes what it found into the
DOM, which `--dump-dom` prints: the number of typeset formulas (mjx-container elements), MathJax errors
(merror), and images that failed to load (naturalWidth 0). A screenshot of each page is saved to
build/site-check/ for a person to look at.

Marked `site`; skipped without Sphinx or Chromium unless REQUIRE_CHROMIUM=1 (set by `make test-site`
and CI), where a missing browser is a failure.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "site-check"
REQUIRED = os.environ.get("REQUIRE_CHROMIUM") == "1"
# a page's images load and MathJax typesets within this much virtual time
BUDGET_MS = 20_000
PROBE = """
<script>
window.addEventListener("load", function () {
  var done = function () {
    var images = Array.from(document.images);
    var report = {
      formulas: document.querySelectorAll("mjx-container").length,
      math_errors: document.querySelectorAll("mjx-merror, merror").length,
      images: images.length,
      broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).map(function (i) { return i.src; }),
      toc_links: document.querySelectorAll("nav a.reference.internal, .bd-sidebar a.reference.internal").length
    };
    var out = document.createElement("pre");
    out.id = "site-check";
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  };
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(done);
  } else {
    setTimeout(done, 2000);
  }
});
</script>
"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if REQUIRED:
        pytest.fail("Chromium is not installed: apt-get update && apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium); `make test-site` requires it")


def _browser(chromium, tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--allow-file-access-from-files",
             f"--virtual-time-budget={BUDGET_MS}"]
    result = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def site():
    if importlib.util.find_spec("myst_nb") is None:
        if REQUIRED:
            pytest.fail("the site packages are missing: pip install -c .ci/constraints.txt -e '.[site]'")
        pytest.skip("Sphinx and myst-nb are not installed (make site installs them)")
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "build_site.py")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (SITE / "index.html").exists()
    return SITE


def _check(page, chromium, tmp_path, shot_name):
    """(report from the probe, path of a screenshot) for one built page."""
    html = page.read_text()
    probe_page = page.with_name(f"_check_{page.name}")
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"))
    try:
        dom = _browser(chromium, tmp_path, "--dump-dom", probe_page.as_uri())
    finally:
        probe_page.unlink()
    found = re.search(r'<pre id="site-check"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "the probe never reported: the page did not finish loading"
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / shot_name
    _browser(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000, "the screenshot is missing or blank"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), shot


def test_pages_load_nothing_from_the_network(site):
    for page in [site / "index.html", *sorted((site / "notebooks").glob("*.html"))]:
        html = page.read_text()
        remote = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="(https?://[^"]+)"', html)
        remote = [url for url in remote if not url.endswith((".html", "/"))]  # plain links are fine
        assert not remote, f"{page.name} loads {remote[:3]} from the network"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax is bundled with the site"


def test_landing_page_shows_the_readme_figure_and_the_table_of_contents(site, tmp_path):
    report, _ = _check(site / "index.html", _chromium(), tmp_path, "index.png")
    assert report["images"] >= 1 and not report["broken"], report
    assert report["toc_links"] >= 8, report  # every chapter is linked


def test_notebook_page_typesets_formulas_and_shows_figures(site, tmp_path):
    report, _ = _check(site / "notebooks" / "04_posterior.html", _chromium(), tmp_path, "04_posterior.png")
    assert report["formulas"] >= 20, report
    assert report["math_errors"] == 0, report
    assert report["images"] >= 3 and not report["broken"], report


def test_gif_animation_is_shown(site, tmp_path):
    html = (site / "notebooks" / "01_forward_process.html").read_text()
    # a linked file or, from dl.plotting.show_gif, the GIF inlined as a data URI
    assert re.search(r'<img[^>]+src="(data:image/gif;base64,[^"]+|[^"]+\.gif)"', html), "the forward-process GIF is on the page"
    report, _ = _check(site / "notebooks" / "01_forward_process.html", _chromium(), tmp_path, "01_forward_process.png")
    assert report["formulas"] > 0 and not report["broken"], report
