"""Client config resolution and the config file: pure, no hub needed."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from tether.hubclient import config as cc
from tether.hubclient.config import ConfigError, config_path, normalize_hub, resolve, save


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home")}


def write_cfg(env: dict[str, str], **values: str) -> Path:
    return save(values["hub"], values["token"], values.get("ca_bundle"), env=env)


# -- where the file lives --------------------------------------------------------


def test_config_path_defaults_to_home_dot_config(env):
    assert config_path(env) == Path(env["HOME"]) / ".config" / "tether" / "config.toml"


def test_config_path_honours_xdg_config_home(env, tmp_path):
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    assert config_path(env) == tmp_path / "xdg" / "tether" / "config.toml"


def test_relative_xdg_config_home_is_ignored(env):
    env["XDG_CONFIG_HOME"] = "relative/dir"
    assert config_path(env) == Path(env["HOME"]) / ".config" / "tether" / "config.toml"


# -- precedence -------------------------------------------------------------------


def test_nothing_configured(env):
    cfg = resolve(env=env)
    assert cfg.hub is None and cfg.token is None and cfg.ca_bundle is None
    with pytest.raises(ConfigError, match="no hub configured"):
        cfg.require_hub()


def test_file_values_are_used(env):
    write_cfg(env, hub="https://hub.example", token="tth_file")
    cfg = resolve(env=env)
    assert (cfg.hub, cfg.token, cfg.hub_source, cfg.token_source) == ("https://hub.example", "tth_file", "file", "file")


def test_env_beats_file(env):
    write_cfg(env, hub="https://hub.example", token="tth_file")
    env.update(TETHER_HUB="https://hub.example/", TETHER_TOKEN="tth_env")
    cfg = resolve(env=env)
    assert (cfg.hub, cfg.token, cfg.hub_source, cfg.token_source) == ("https://hub.example", "tth_env", "env", "env")


def test_flag_beats_env(env):
    env.update(TETHER_HUB="https://env.example", TETHER_TOKEN="tth_env", TETHER_CA_BUNDLE="/env/ca.pem")
    cfg = resolve("https://flag.example", "tth_flag", "/flag/ca.pem", env=env)
    assert (cfg.hub, cfg.token, cfg.ca_bundle) == ("https://flag.example", "tth_flag", "/flag/ca.pem")
    assert cfg.hub_source == cfg.token_source == "flag"


def test_env_token_with_file_hub(env):
    write_cfg(env, hub="https://hub.example", token="tth_file")
    env["TETHER_TOKEN"] = "tth_env"
    cfg = resolve(env=env)
    assert (cfg.hub, cfg.token) == ("https://hub.example", "tth_env")


def test_saved_token_stays_with_its_hub(env):
    """A TETHER_HUB pointing elsewhere must not receive the saved token."""
    write_cfg(env, hub="https://hub.example", token="tth_file", ca_bundle="/etc/ca.pem")
    env["TETHER_HUB"] = "https://other.example"
    cfg = resolve(env=env)
    assert cfg.hub == "https://other.example"
    assert cfg.token is None and cfg.ca_bundle is None
    assert cfg.file_hub_skipped == "https://hub.example"


def test_saved_token_used_when_env_names_same_hub(env):
    write_cfg(env, hub="https://hub.example", token="tth_file")
    env["TETHER_HUB"] = "HTTPS://hub.example/"
    assert resolve(env=env).token == "tth_file"


def test_ca_bundle_from_file_and_env(env, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    write_cfg(env, hub="https://hub.example", token="t", ca_bundle=str(ca))
    assert resolve(env=env).ca_bundle == str(ca.resolve())
    env["TETHER_CA_BUNDLE"] = "/other.pem"
    assert resolve(env=env).ca_bundle == "/other.pem"


def test_repr_hides_token(env):
    cfg = resolve("https://h", "tth_supersecret", env=env)
    assert "supersecret" not in repr(cfg)


def test_bad_toml_is_a_config_error(env):
    p = config_path(env)
    p.parent.mkdir(parents=True)
    p.write_text("hub = \n")
    with pytest.raises(ConfigError, match="cannot parse"):
        resolve(env=env)


def test_wrong_type_is_a_config_error(env):
    p = config_path(env)
    p.parent.mkdir(parents=True)
    p.write_text("hub = 3\n")
    with pytest.raises(ConfigError, match="must be a string"):
        resolve(env=env)


# -- hub URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("https://hub.example", "https://hub.example"),
        ("https://hub.example/", "https://hub.example"),
        ("hub.example", "https://hub.example"),
        ("HTTP://127.0.0.1:8580/", "http://127.0.0.1:8580"),
        ("https://hub.example/tether/", "https://hub.example/tether"),
    ],
)
def test_normalize_hub(given, expected):
    assert normalize_hub(given) == expected


@pytest.mark.parametrize("bad", ["", "ftp://hub", "https://", "https://u:p@hub", "https://hub?x=1", "https://hub:port"])
def test_normalize_hub_rejects(bad):
    with pytest.raises(ConfigError):
        normalize_hub(bad)


@pytest.mark.parametrize(
    "url, loopback",
    [
        ("http://localhost:1", True),
        ("http://127.0.0.1", True),
        ("http://127.5.0.1", True),
        ("http://[::1]:8580", True),
        ("http://10.0.0.1", False),
        ("http://hub.example", False),
    ],
)
def test_is_loopback_url(url, loopback):
    assert cc.is_loopback_url(url) is loopback


# -- the file ---------------------------------------------------------------------


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_save_modes(env):
    old = os.umask(0o022)
    try:
        p = write_cfg(env, hub="https://hub.example", token="tth_x")
    finally:
        os.umask(old)
    assert p == config_path(env)
    assert mode(p) == 0o600
    assert mode(p.parent) == 0o700
    assert tomllib.loads(p.read_text()) == {"hub": "https://hub.example", "token": "tth_x"}


def test_save_tightens_existing_loose_file(env):
    p = config_path(env)
    p.parent.mkdir(parents=True)
    p.write_text('hub = "https://old"\n')
    p.chmod(0o644)
    save("https://hub.example", "tth_x", env=env)
    assert mode(p) == 0o600


def test_save_keeps_other_keys_and_drops_stale_ca_bundle(env):
    p = config_path(env)
    p.parent.mkdir(parents=True)
    p.write_text('hub = "https://old"\ntoken = "old"\nca_bundle = "/old/ca.pem"\ncolor = "never"\n')
    save("https://new.example", "tth_new", env=env)
    assert tomllib.loads(p.read_text()) == {"hub": "https://new.example", "token": "tth_new", "color": "never"}


def test_save_is_atomic_on_failure(env, monkeypatch):
    p = write_cfg(env, hub="https://hub.example", token="tth_old")
    before = p.read_bytes()

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(cc.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save("https://hub.example", "tth_new", env=env)
    assert p.read_bytes() == before
    assert sorted(x.name for x in p.parent.iterdir()) == ["config.toml"], "temp file left behind"


def test_save_writes_through_a_temp_file_and_rename(env, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        src, dst = Path(src), Path(dst)
        seen.append((src.parent, mode(src), dst))
        real_replace(src, dst)

    monkeypatch.setattr(cc.os, "replace", spy)
    p = write_cfg(env, hub="https://hub.example", token="tth_x")
    [(tmp_dir, tmp_mode, dst)] = seen
    assert tmp_dir == p.parent and tmp_mode == 0o600 and dst == p


def test_roundtrip_through_resolve(env):
    save("hub.example", "tth_x", env=env)
    cfg = resolve(env=env)
    assert (cfg.hub, cfg.token) == ("https://hub.example", "tth_x")
