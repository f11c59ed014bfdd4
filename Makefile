# The two commands a person needs:  make run  and  make test
# Extra arguments:  make test ARGS="-k digest -x"   (to pytest)     make run ARGS="--port 8001"   (to newsletter dev)
ARGS ?=

.PHONY: help run test lint format

help:
	@echo "make run      start everything for development: SQLite, embedded Redis, web, worker, beat"
	@echo "make test     lint, unit tests, then real Redis/PostgreSQL/Chromium for integration and e2e tests"
	@echo "make lint     ruff check, ruff format --check, mypy"
	@echo "make format   ruff format and ruff check --fix"
	@echo 'extra arguments: make test ARGS="-k digest -x", make run ARGS="..."'

run:
	@bash scripts/run.sh $(ARGS)

test:
	@bash scripts/test.sh $(ARGS)

lint:
	@bash scripts/test.sh --lint-only

format:
	@bash scripts/venv.sh test
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
