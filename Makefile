# `make demo`: set up and run the workbench's main job on its embedded defaults.
# `make test`: set up and run the test suite (what CI runs).
.PHONY: setup setup-test demo test bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

demo: setup
	.venv/bin/deepe init
	.venv/bin/deepe demo

test: setup-test
	.venv/bin/ruff check .
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site  # not --quiet: it hides the warnings --strict counts
	.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup --no-loadscope-reorder  # two workers: the suite waits on kernels half the time
