# The artifact's two commands:  `make reproduce`  and  `make test`.
# Both create/refresh the virtualenv and install the system packages the local testbed needs.
# Needs: Linux (Debian/Ubuntu with apt), root, Python 3.11+.

PYTHON   ?= python3
VENV     ?= .venv
TESTBED  ?= testbeds/local.yaml
PROFILE  ?= default
BIN      := $(VENV)/bin

# containerd + runc + CNI plugins: the local testbed; gcc/libc6-dev: static pause and workload images;
# iproute2/iptables: network namespaces, veth, bridge; chromium: the notebook browser test;
# qemu-system-x86/busybox-static/cpio/xz-utils: the virtual SR-IOV host.
APT_PACKAGES := containerd runc containernetworking-plugins iproute2 iptables gcc libc6-dev \
                ca-certificates chromium qemu-system-x86 busybox-static cpio xz-utils kmod \
                git make golang-1.19-go libseccomp-dev pkg-config util-linux \
                meson ninja-build libglib2.0-dev libpixman-1-dev libcurl4-openssl-dev \
                libattr1-dev libcap-ng-dev librbd-dev libpmem-dev
# second and third lines: the builds of the paper's components (containerd 1.3 and the kata runtime
# with Debian's Go 1.19; QEMU 6.2.0 with the options of 0001-qemu.patch's kata.cfg)

.PHONY: reproduce test setup system-packages venv clean-testbed

reproduce: setup
	$(BIN)/fastiov-artifact reproduce --testbed $(TESTBED) --profile $(PROFILE)

# nbval re-executes the notebooks on the local testbed; its containerd is stopped afterwards either way.
test: setup
	status=0; $(BIN)/pytest -q -p no:cacheprovider --nbval-lax --sanitize-with notebooks/nbval_sanitize.cfg tests notebooks || status=$$?; \
	$(BIN)/fastiov-artifact testbed down --testbed $(TESTBED) >/dev/null 2>&1 || true; exit $$status

setup: system-packages venv

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(BIN)/.installed

# exact versions from the lock file, then the package itself without re-resolving anything
$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

clean-testbed: venv
	$(BIN)/fastiov-artifact testbed cleanup --testbed $(TESTBED)
