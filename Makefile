# prodmon: two commands on a fresh machine.
#   make run    install, migrate, create the admin (printed once), run demo jobs, serve :8000
#   make test   run the test suite (SQLite by default; DATABASE_URL=postgres://… for PostgreSQL)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
URL    := http://$(HOST):$(PORT)
STAMP  := $(VENV)/.installed

.PHONY: install run serve demo test lint browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py bootstrap_admin
	@PRODMON_BIND=$(HOST):$(PORT) $(BIN)/gunicorn prodmon.wsgi -c deploy/gunicorn.conf.py & \
	  pid=$$!; trap 'kill $$pid 2>/dev/null' INT TERM EXIT; \
	  for i in $$(seq 1 60); do curl -fs $(URL)/healthz >/dev/null 2>&1 && break; sleep 0.5; done; \
	  $(BIN)/python manage.py demo --url $(URL) || echo "demo data could not be loaded (see above)"; \
	  echo ""; echo "prodmon is serving at $(URL)/  (log in with the admin account printed above; Ctrl-C stops)"; \
	  wait $$pid

serve: install
	PRODMON_BIND=$(HOST):$(PORT) $(BIN)/gunicorn prodmon.wsgi -c deploy/gunicorn.conf.py

# Debian tools the tests use: Chromium for the browser tests (Playwright cannot
# download its own browser here) and nginx for `nginx -t` of deploy/.
DEBIAN_TOOLS := chromium:chromium nginx:nginx-light
browser:
	@missing=""; for t in $(DEBIAN_TOOLS); do \
	  command -v $${t%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${t%%:*} ] || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for the tests:$$missing"; \
	    apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	      (apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null); \
	  else echo "missing$$missing and not root: those tests will be skipped"; fi; fi

test: install browser
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
