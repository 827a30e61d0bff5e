PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= gateway.example.toml
TOOLS := .venv-tools
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE := compliance-gateway:$(VERSION)

.PHONY: run test lint bench clean browser prometheus k8s-rules rules-table postfix postgresql screenshots \
	dkim-verifier oidc-provider saml-idp audit tools lock sbom image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -e . -c constraints.txt
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]' -c constraints.txt
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/compliance-gateway serve --config $(CONFIG)

test: $(VENV)/.installed-test audit tools browser prometheus postgresql dkim-verifier \
	  oidc-provider saml-idp
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	GATEWAY_SPEEDUPS=0 $(BIN)/python -m pytest -q tests/mail tests/speedups tests/ingress \
	  tests/upstream tests/rewrite tests/e2e/test_hostile_input.py tests/e2e/test_dkim_signing.py

# The review page's picture in docs/ comes from the browser test, only when asked for.
screenshots: $(VENV)/.installed-test browser
	GATEWAY_SCREENSHOT_DIR=$(CURDIR)/docs $(BIN)/python -m pytest -q tests/web/test_console_activity_browser.py

# Debian's Chromium for the review page's browser test; where it cannot be installed (not
# root, no apt), the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "not root or no apt-get: chromium not installed, the browser test will skip"; fi; }

# Debian's PostgreSQL server binaries for the PostgreSQL store tests (the tests start their
# own throwaway server); where they cannot be installed, those tests skip and say why.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "*** postgresql could not be installed: the PostgreSQL tests will SKIP ***"; \
	  else echo "*** not root or no apt-get: PostgreSQL not installed, its tests will SKIP ***"; fi; }

# Perl's Mail::DKIM, the DKIM verifier the tests check the gateway's signatures with besides
# dkimpy (tests/tools/dkim_verify.pl); where it cannot be installed, those checks skip.
dkim-verifier:
	@perl -MMail::DKIM::Verifier -e 1 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends libmail-dkim-perl >/dev/null) \
	      || echo "*** Mail::DKIM could not be installed: the independent DKIM checks will SKIP ***"; \
	  else echo "*** not root or no apt-get: Mail::DKIM not installed, its checks will SKIP ***"; fi; }

OIDC_PROVIDER := tests/tools/oidc_provider

# panva's oidc-provider, the real OpenID Provider the SSO tests sign in at (tests/sso), run by
# Debian's Node.js: nodejs and npm from apt where node is missing, then the version pinned in
# its package-lock.json from the npm registry (again when the lock file is newer than the
# install). Where that cannot be done, the OIDC tests skip and the run's summary says why.
oidc-provider:
	@if ! command -v node >/dev/null 2>&1; then NEED="nodejs npm"; \
	elif ! command -v npm >/dev/null 2>&1; then NEED=npm; else NEED=; fi; \
	if [ -n "$$NEED" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$NEED >/dev/null) \
	      || echo "*** $$NEED could not be installed: the OIDC tests will SKIP ***"; \
	  else echo "*** not root or no apt-get: $$NEED not installed, the OIDC tests will SKIP ***"; fi; \
	fi; \
	if command -v node >/dev/null 2>&1 \
	    && ! node -e 'process.exit(process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then \
	  echo "*** Node.js $$(node --version) is older than 18: the OIDC tests will SKIP ***"; \
	elif command -v npm >/dev/null 2>&1; then \
	  if [ ! -f $(OIDC_PROVIDER)/node_modules/.package-lock.json ] \
	      || [ $(OIDC_PROVIDER)/package-lock.json -nt $(OIDC_PROVIDER)/node_modules/.package-lock.json ]; then \
	    (cd $(OIDC_PROVIDER) && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null) \
	      || echo "*** npm ci in $(OIDC_PROVIDER) failed: the OIDC tests will SKIP ***"; \
	  fi; \
	fi

# Debian's Prometheus (prometheus and promtool) for the alert-rule checks and the scrape test.
# The package's post-install may try to start a service: harmless without systemd, and any
# failure only makes those tests skip with a reason.
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus >/dev/null) \
	      || echo "prometheus could not be installed: the promtool and scrape tests will skip"; \
	  else echo "not root or no apt-get: prometheus not installed, its tests will skip"; fi; }

# Debian's xmlsec1, which pysaml2's IdP in tests/saml signs its responses with (pysaml2 comes
# with the test extras; python3-saml, which the gateway checks them with, is a dependency and
# brings its own xmlsec binding); where it cannot be installed, the SAML tests skip.
saml-idp:
	@command -v xmlsec1 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends xmlsec1 >/dev/null) \
	      || echo "*** xmlsec1 could not be installed: the SAML tests will SKIP ***"; \
	  else echo "*** not root or no apt-get: xmlsec1 not installed, the SAML tests will SKIP ***"; fi; }

# The Kubernetes rules ConfigMap is generated from rules/ (tests fail when it is stale).
k8s-rules: $(VENV)/.installed-test
	$(BIN)/python deploy/k8s/rules_configmap.py > deploy/k8s/configmap-rules.yaml

# The rules tables in rules/README.md are generated from rules/calling.toml and
# rules/mailboxes.toml (tests fail when they are stale).
rules-table: $(VENV)/.installed
	$(BIN)/compliance-gateway rules table --write --config $(CONFIG)

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]' -c constraints.txt
	touch $@ $(VENV)/.installed

# Every benchmark under bench/ (about 10 minutes); `make bench ONLY="smtp memory"` runs some
# and keeps the others' last results. Writes bench/results.json, docs/benchmarks.md, docs/img.
bench: $(VENV)/.installed-bench postfix
	cd bench && ../$(BIN)/python run.py $(ONLY)

# Debian's Postfix, the SMTP benchmark's second baseline. It is run from a private config
# directory by the benchmark; the system instance the package may start is stopped. Where it
# cannot be installed (not root, no apt), the benchmark skips that baseline and says why.
postfix:
	@command -v postfix >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends postfix >/dev/null) \
	      || echo "postfix could not be installed: the SMTP benchmark skips that baseline"; \
	    if postfix status >/dev/null 2>&1; then postfix stop; fi; \
	  else echo "not root or no apt-get: postfix not installed, the SMTP benchmark skips that baseline"; fi; }

# pip-audit over the installed environment and deploy/requirements.lock (policy and the
# ignore file: deploy/audit_dependencies.py); `make test` runs it too.
audit: $(VENV)/.installed-test
	$(BIN)/python deploy/audit_dependencies.py

$(TOOLS)/.installed: deploy/tools-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet -r deploy/tools-requirements.txt
	touch $@

# The same pinned tools for `make test`, whose SBOM test runs cyclonedx-py: where they cannot
# be installed (no network to PyPI), the tests still run, that one skips, and this says why.
tools:
	@$(MAKE) --no-print-directory $(TOOLS)/.installed || echo "*** the pinned tools of" \
	  "deploy/tools-requirements.txt could not be installed in $(TOOLS): the SBOM test will SKIP ***"

# The image's dependencies, hashed: pyproject's runtime dependencies (no extras) and the build
# backend, resolved for the image's Python 3.11 on Linux within constraints.txt.
lock: $(TOOLS)/.installed
	$(TOOLS)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	  --python-platform linux --constraint constraints.txt --custom-compile-command "make lock" \
	  --output-file deploy/requirements.lock pyproject.toml deploy/build-backend.in

# CycloneDX SBOM of what the image installs (deploy/requirements.lock), in dist/.
sbom: $(TOOLS)/.installed
	mkdir -p dist
	$(TOOLS)/bin/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible \
	  --of JSON -o dist/sbom.cdx.json deploy/requirements.lock

# The image the compose stack and deploy/k8s run (their tag is checked against this one).
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) -f deploy/Dockerfile .

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(TOOLS) var
