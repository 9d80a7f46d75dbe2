"""Sphinx configuration of the rendered book: `make site` builds build/site/index.html offline.

.ci/build_site.py stages README.md (the landing page, with the table of contents appended) and the
notebooks with their stored outputs into build/site-src/, then runs Sphinx there. Nothing is executed:
the pages show exactly what nbval checked. MathJax 3 comes from the sphinx-mathjax-offline package
and is copied into the site, so formulas typeset without a network.
"""

project = "diffusion_lib"
author = "diffusion_lib contributors"
copyright = "diffusion_lib contributors, MIT licence"

extensions = ["myst_nb", "sphinx-mathjax-offline"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# notebooks: render the stored outputs, never execute
nb_execution_mode = "off"
# widget views need JavaScript from a CDN; the explorer's static frame is shown in the next cell instead
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "diffusion_lib: denoising diffusion, derived and checked"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
html_static_path = []
html_last_updated_fmt = None
# notebooks use the stored execution counts; keep the page source out of the site
html_copy_source = False
html_show_sourcelink = False
