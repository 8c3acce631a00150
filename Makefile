# The two commands of DESIGN.md (`make run`, `make test`) and the linters.
UV := ./scripts/uv.sh
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: run test lint format sync env demo bench

sync:
	@$(UV) sync --frozen --quiet

run: sync
	@$(PY) -m scripts.bootstrap run
	@$(PY) -m honcho -f Procfile -e .run/procfile.env start

# `.env` with fresh keys and secrets, all `docker compose up --build` needs.
env: sync
	@$(PY) -m scripts.bootstrap env

test: sync
	@$(PY) -m scripts.bootstrap test
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: sync
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy .

format: sync
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .
