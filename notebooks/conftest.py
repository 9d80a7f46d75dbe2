"""nbval settings for every notebook in this folder.

Outputs that change from run to run without meaning anything are not compared: stderr (warnings,
progress bars), HTML (widgets, tables with ids), SVG (timestamps) and GIF animations (encoder
details). Numbers a reader should check are printed as rounded text, and those are compared strictly.
"""


def pytest_collectstart(collector):
    if collector.path is not None and collector.path.suffix == ".ipynb":
        collector.skip_compare += ("stderr", "text/html", "image/svg+xml", "image/gif")
