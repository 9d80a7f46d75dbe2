# The two commands a newcomer needs:  make notebooks   and   make test
# Both create .venv from a bare Python 3.11 with pip and install the exact versions in .ci/constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
# the recipe of data/digits_unet.pt (notebook 10)
# (the schedule: the cosine cut to the 17 levels, dl.cosine_log_snr_betas(1000, *dl.log_snr_range_for_levels(17)))
DIGITS_RECIPE := --data digits --prediction eps --betas build/digits_levels_betas.npy --width 16 --block resnet \
	--fourier-features 3 4 --conditional --label-drop 0.2 --batch-size 128 --lr 2e-3 --steps 6000 --seed 0 --quiet
PYTEST_NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg
# two pytest-xdist workers, one OpenMP thread each; conftest.py says which tests stay together on one worker
PYTEST_XDIST := -n 2

.PHONY: venv notebooks bench bench-notebooks refresh-notebooks test test-fast lab constraints clean
.PHONY: venv-site exercises assignments lint site test-site digits-checkpoint digits-variants vlb-seeds

venv: $(STAMP)

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the constraints: a CPU wheel, never the CUDA build
	$(BIN)/pip install --disable-pip-version-check -q -c .ci/constraints.txt -e ".[notebooks,test,classroom]"
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

## execute every notebook into build/ (the committed ones are not touched); one line per notebook
notebooks: venv
	$(BIN)/python .ci/execute_notebooks.py --out build/notebooks notebooks/[0-9]*.ipynb

## the same, as a benchmark: the time each notebook takes on OMP_NUM_THREADS=2
bench-notebooks: notebooks

## the reverse-process benchmark of issue 4: train 60 s and 20 s, sample 5000, evaluate; one table
bench: venv
	$(BIN)/python .ci/bench.py

## maintainers: the digits checkpoint and U-Net variants table in data/ (notebook 10; see data/README.md)
digits-checkpoint: venv
	mkdir -p build && $(BIN)/python -c "import numpy, diffusion_lib as dl; numpy.save('build/digits_levels_betas.npy', \
		dl.cosine_log_snr_betas(1000, *dl.log_snr_range_for_levels(dl.DIGIT_LEVELS)).numpy())"
	OMP_NUM_THREADS=2 $(BIN)/python -m diffusion_lib train $(DIGITS_RECIPE) --out build/digits_unet --force
	cp build/digits_unet/model.pt data/digits_unet.pt
	cd data && sha256sum digits_unet.pt

digits-variants: venv
	OMP_NUM_THREADS=2 $(BIN)/python .ci/digits_variants.py
	cd data && sha256sum digits_variants.csv

## maintainers: notebook 07's headline rows over seeds 0, 1, 2 (data/vlb_seeds.csv, a few minutes; see data/README.md)
vlb-seeds: venv
	OMP_NUM_THREADS=2 $(BIN)/python .ci/vlb_seeds.py
	cd data && sha256sum vlb_seeds.csv

## maintainers: re-execute the committed notebooks in place (after changing one, or the library)
NB ?= notebooks/[0-9]*.ipynb
refresh-notebooks: venv
	$(BIN)/python .ci/refresh_notebooks.py $(NB)

## unit tests, then every notebook re-executed and compared strictly by nbval
test: venv
	$(BIN)/python -m pytest $(PYTEST_NBVAL) $(PYTEST_XDIST) --durations=25 tests notebooks

## unit tests only
test-fast: venv
	$(BIN)/python -m pytest tests -m "not slow"

## graded assignments: nbgrader generate_assignment on classroom/ into build/classroom/release/ (temporary gradebook)
assignments: venv
	$(BIN)/python .ci/make_assignments.py

## the same, and copy the release to notebooks/exercises/ (the student copies that are committed and rendered)
exercises: venv
	$(BIN)/python .ci/make_assignments.py --exercises

## the pre-commit checks without pre-commit: ruff, nbstripout --verify, exercises current
lint: venv
	$(BIN)/python -m pytest -q tests/test_hygiene.py tests/test_classroom.py -k "ruff or stripped or metadata or current"

## the packages that build the book (Sphinx, myst-nb, a book theme, MathJax for offline reading)
SITE_STAMP := $(VENV)/.installed-site
venv-site: $(SITE_STAMP)

$(SITE_STAMP): $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -c .ci/constraints.txt -e ".[site]"
	touch $(SITE_STAMP)

## the HTML book of all notebooks with their stored outputs, offline: build/site/index.html
site: venv-site
	$(BIN)/python .ci/build_site.py

## build the book and check it in headless Chromium (apt-get install chromium); screenshots in build/site-check/
test-site: venv-site
	REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -m site tests/test_site.py

lab: venv
	$(BIN)/jupyter lab notebooks

## regenerate the exact versions after changing pyproject.toml
constraints: venv
	( echo "# Exact versions CI and 'make' install (pip install -c .ci/constraints.txt ...)."; \
	  echo "# The stored notebook outputs were made with these. Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' ) > .ci/constraints.txt

clean:
	rm -rf build .pytest_cache
