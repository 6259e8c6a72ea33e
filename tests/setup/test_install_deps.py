"""scripts/install-system-deps leaves the machine as it was: while apt-get installs, a
policy-rc.d refuses every service start, and afterwards the services of the packages it
installed are disabled; the policy file goes again, and one that was there stays.
apt-get, systemctl, update-rc.d and invoke-rc.d are stand-ins that write down what they
were asked (a test must not install or disable anything on the machine running it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps"
FAKES = {
    "apt-get": 'echo "apt-get $*" >> "$LOG"\n'
               'if [ "$1" = install ]; then "$POLICY_RC_D" ssh start; echo "policy says $?" >> "$LOG"; fi\n',
    "systemctl": 'echo "systemctl $*" >> "$LOG"\n',
    "update-rc.d": 'echo "update-rc.d $*" >> "$LOG"\n',
    "invoke-rc.d": 'echo "invoke-rc.d $*" >> "$LOG"\n',
}


def _run(tmp_path: Path, packages: str, policy: Path) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("the script runs apt-get as root (or through sudo)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "POLICY_RC_D": str(policy),
           "TETHER_SYSTEM_DEPS": packages}
    r = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines()


def test_no_service_starts_during_the_install_and_none_stays_enabled(tmp_path):
    policy = tmp_path / "policy-rc.d"
    said = _run(tmp_path, "openssh-server postgresql lava-coordinator nginx rsync", policy)
    install = said.index("apt-get install -y -qq --no-install-recommends openssh-server postgresql "
                         "lava-coordinator nginx rsync")
    assert said[install - 1] == "apt-get update -qq"  # the index first
    assert said[install + 1] == "policy says 101"  # a start asked for during the install is refused
    disabled = {line.split()[-1] for line in said if line.startswith("systemctl disable")}
    assert disabled == {"ssh.service", "ssh.socket", "postgresql.service", "lava-coordinator.service",
                        "nginx.service"}
    assert not policy.exists()  # ours, so removed again


def test_a_policy_already_there_is_kept_and_other_services_are_not_touched(tmp_path):
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the machine's own\nexit 101\n")
    policy.chmod(0o755)
    said = _run(tmp_path, "rsync curl", policy)
    assert "policy says 101" in said
    assert not [line for line in said if line.startswith(("systemctl", "update-rc.d", "invoke-rc.d"))]
    assert "the machine's own" in policy.read_text()
