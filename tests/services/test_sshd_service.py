"""The test sshd really starts, lets an authorized key in (and only it), and stops."""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest

from tests.services.sshd import (
    SshServer,
    make_key,
    port_accepts,
    sshd_available,
    temporary_user,
)

USER = "tetherbench"


def test_sshd_key_login_and_stop(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not sshd_available():
        pytest.fail("/usr/sbin/sshd not found: run `make test`, which installs openssh-server")
    base = tmp_path_factory.mktemp("sshd")
    with temporary_user(USER) as user:  # removed again at the end
        _key_login_and_stop(base, user)


def _key_login_and_stop(base, user: str) -> None:
    key = make_key(base / "client" / "id_ed25519")
    stranger = make_key(base / "client" / "id_other")
    server = SshServer(base / "server")
    server.start()
    try:
        port = server.port
        assert server.pid is not None and port_accepts(port)
        assert server.known_hosts_line().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
        assert server.host_key_pub.split()[1] in server.known_hosts.read_text()
        server.authorize(user, key.with_suffix(".pub").read_text())

        argv = server.ssh_argv(user, key)
        for opt in ("StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "BatchMode=yes"):
            assert opt in argv
        ok = subprocess.run([*argv, "true"], check=False, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr + server.log_text()
        who = subprocess.run([*argv, "id", "-un"], check=False, capture_output=True, text=True, timeout=30)
        assert who.stdout.strip() == user

        # a key that was never authorized is refused
        no = subprocess.run([*server.ssh_argv(user, stranger), "true"], check=False, capture_output=True, text=True, timeout=30)
        assert no.returncode == 255 and "Permission denied" in no.stderr
    finally:
        server.stop()
    assert server.pid is None
    assert not port_accepts(port)
    server.stop()  # idempotent


def test_a_test_account_is_removed_when_its_test_ends() -> None:
    """The accounts the SSH tests make (tetherhub, tetherbench) can log in by key; one the
    tests created is gone afterwards, with its home; one that was there before stays."""
    if os.geteuid() != 0:
        pytest.skip("creating accounts needs root")
    name = f"tthfh{os.getpid() % 100000}"
    with temporary_user(name) as user:
        home = pwd.getpwnam(user).pw_dir
        assert os.path.isdir(home)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert not os.path.exists(home)
    with temporary_user("nobody"):
        pass
    assert pwd.getpwnam("nobody")  # not ours: left as it was
