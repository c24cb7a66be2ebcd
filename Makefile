# radicale-crm: `make run` serves on http://127.0.0.1:5232, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Fresh machine -> venv, install, SQLite database migrated, an `admin` user (password from
# $$CRM_ADMIN_PASSWORD, else generated and printed once), server on 127.0.0.1:5232.
run: $(STAMP)
	$(BIN)/crm-admin db upgrade
	@if [ -n "$$CRM_ADMIN_PASSWORD" ]; then \
	  printf '%s\n' "$$CRM_ADMIN_PASSWORD" | $(BIN)/crm-admin user add admin --role admin --if-missing --password-stdin; \
	else \
	  $(BIN)/crm-admin user add admin --role admin --if-missing; \
	fi
	$(BIN)/crm-server

# Fresh machine -> all tests. PostgreSQL tests run when $$CRM_TEST_DATABASE_URL is set.
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
