"""What a new operator met walking through the README and the docs, kept fixed: the
commands run as a user types them (the real `tether` executable, a real hub where one is
needed), careless input included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.hubproc import HubProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
TETHER = str(Path(sys.executable).parent / "tether")


def _tether(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    full = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / ".config"), **env}
    return subprocess.run([TETHER, *args], cwd=tmp, env=full, capture_output=True, text=True, timeout=60)


def test_make_run_takes_the_port_the_readme_says(tmp_path):
    """The README's way to run the hub on another port (`make run LISTEN=...`) reaches
    `tether hub --listen`."""
    readme = (ROOT / "README.md").read_text()
    assert "make run LISTEN=127.0.0.1:8590" in readme
    r = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'v'}", "run", "LISTEN=127.0.0.1:8590",
                        "DATA=/srv/tether"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "tether hub --data /srv/tether --listen 127.0.0.1:8590" in r.stdout, r.stdout


def test_forward_says_what_failed_and_nothing_else(tmp_path):
    """`tether forward` to a hub whose SSH port is closed: exit 3 naming the address, and
    no Python warnings (asyncssh's DSA deprecation printed ten lines on every start)."""
    port = free_port()
    r = _tether("forward", "demo", "--tcp", "--ssh", f"alice@127.0.0.1:{port}", "--",
                sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}", tmp=tmp_path)
    assert r.returncode == 3, r.stderr
    assert f"cannot reach the hub at 127.0.0.1:{port}" in r.stderr, r.stderr
    assert "Warning" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_forward_of_an_app_that_never_listens_says_where_it_should(tmp_path):
    """A command that ignores {socket} (the commonest slip: `uvicorn app:app` without
    --uds {socket}) fails after --start-timeout, exit 3, saying where the app must listen."""
    r = _tether("forward", "demo", "--ssh", f"127.0.0.1:{free_port()}", "--start-timeout", "1", "--",
                "sleep", "30", tmp=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "did not accept connections within 1 s" in r.stderr and "{socket} ($TETHER_SOCKET)" in r.stderr, r.stderr
    r = _tether("forward", "demo", "--tcp", "--ssh", f"127.0.0.1:{free_port()}", "--start-timeout", "1", "--",
                "sleep", "30", tmp=tmp_path)
    assert r.returncode == 3 and "{port} ($TETHER_PORT)" in r.stderr, r.stderr


def test_forward_with_an_unusable_key_says_why_before_starting_the_app(tmp_path):
    """`-i KEY.pub` (the public half, a common slip) or a key with a passphrase: exit 2
    saying what to give instead, and the app never starts. Both ended in a traceback."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(tmp_path / "pw")], check=True)
    (tmp_path / "junk").write_text("not a key\n")
    said = {"k.pub": "it is a public key: give the private half", "pw": "ssh-add",
            "junk": "not a private key tether can use"}
    for key, words in said.items():
        r = _tether("forward", "demo", "--ssh", f"127.0.0.1:{free_port()}", "-i", key, "--",
                    "sh", "-c", "touch started; sleep 30", tmp=tmp_path)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (key, r.stderr)
        assert not (tmp_path / "started").exists(), "the app was started before the key was checked"


def test_login_to_the_api_address_says_which_address_to_use(tmp_path):
    """`tether hub` prints the hub's URL and, beside it, its API's (`.../api/v1`): logging in
    to the latter is refused, exit 2, naming the former, and nothing is saved (it said
    'no such endpoint: /api/v1/api/v1/whoami')."""
    r = _tether("login", f"http://127.0.0.1:{free_port()}/api/v1/", "--token", "tth_0123456789abcdef_x", tmp=tmp_path)
    assert r.returncode == 2 and "is the hub's API" in r.stderr, r.stderr
    assert "tether login http://127.0.0.1:" in r.stderr and "/api/v1 ..." not in r.stderr, r.stderr
    assert not (tmp_path / "home" / ".config" / "tether").exists()


def test_job_install_helpers_into_a_place_it_cannot_write(tmp_path):
    """A directory that cannot be made: exit 2 with what to do, no traceback."""
    (tmp_path / "file").write_text("")
    r = _tether("job", "install-helpers", str(tmp_path / "file" / "bin"), tmp=tmp_path)
    assert r.returncode == 2 and "cannot write the helpers into" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_app_register_with_an_option_after_cmd_says_to_put_cmd_last(tmp_path):
    """Everything after --cmd is the app's command: a --dir typed after it is named, not
    reported missing; nothing reaches the hub (there is none here)."""
    (tmp_path / "demo").mkdir()
    hub = {"TETHER_HUB": f"http://127.0.0.1:{free_port()}", "TETHER_TOKEN": "tth_0123456789abcdef_x"}
    r = _tether("app", "register", "demo", "--space", "apps", "--cmd", "python3", "app.py", "--dir", "demo",
                tmp=tmp_path, **hub)
    assert r.returncode == 2, r.stderr
    assert "--dir came after --cmd" in r.stderr and "put --cmd last" in r.stderr, r.stderr
    r = _tether("app", "register", "demo", "--space", "apps", "--cmd", "python3", "app.py", tmp=tmp_path, **hub)
    assert r.returncode == 2 and "either --dir DIR or --build" in r.stderr, r.stderr


def test_token_inspect_and_revoke_take_the_whole_token(tmp_path):
    """A scheduler holding only the token it handed out ($T) inspects and revokes it with
    `tether token inspect/revoke "$T"`; the secret is never printed; a wrong id (the
    help's examples once said `42`) is refused, exit 2, and revokes nothing."""
    hub = HubProcess(tmp_path / "data").start()
    try:
        admin = {"TETHER_HUB": hub.url, "TETHER_TOKEN": hub.admin_token}
        t = _tether("token", "mint", "--expires", "1h", "--label", "job-9", tmp=tmp_path, **admin)
        assert t.returncode == 0, t.stderr
        token = t.stdout.strip()
        tid, secret = token.split("_")[1], token.split("_", 2)[2]
        for args in (["token", "revoke", "42"], ["token", "revoke", "tth_zz"], ["token", "inspect", "nope"]):
            bad = _tether(*args, tmp=tmp_path, **admin)
            assert bad.returncode == 2 and "16 hex digits" in bad.stderr, (args, bad.stderr)
        shown = _tether("token", "inspect", token, tmp=tmp_path, **admin)
        assert shown.returncode == 0 and tid in shown.stdout and "job-9" in shown.stdout, shown.stderr
        still = _tether("whoami", tmp=tmp_path, TETHER_HUB=hub.url, TETHER_TOKEN=token)
        assert still.returncode == 0, still.stderr  # nothing was revoked by the refused ids
        gone = _tether("token", "revoke", token, tmp=tmp_path, **admin)
        assert gone.returncode == 0 and f"revoked 1 token: {tid}" in gone.stdout, gone.stderr
        for out in (shown, gone):
            assert secret not in out.stdout + out.stderr
        refused = _tether("whoami", tmp=tmp_path, TETHER_HUB=hub.url, TETHER_TOKEN=token)
        assert refused.returncode == 4 and "revoked" in refused.stderr, refused.stderr
    finally:
        hub.stop()

