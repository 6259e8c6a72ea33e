"""The hub's TOML file: settings at top level, under [hub], or both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import ConfigError, load_settings
from tether.hub.capabilities import check_settings


def _load(tmp_path: Path, text: str, monkeypatch):
    for name in ("TETHER_GC_GRACE", "TETHER_BLOB_LEASE_SECONDS", "TETHER_PUBLISH_TYPES"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "hub.toml"
    path.write_text(text)
    settings = load_settings(path, data_dir=tmp_path)
    check_settings(settings)  # what `tether hub` does next: each capability checks its own
    return settings


def test_top_level_keys_count_beside_hub_tables(tmp_path, monkeypatch):
    s = _load(tmp_path, 'gc_grace = "2h"\nblob_lease_seconds = 120\n'
                        '[hub.publish_types.android]\npath = "android/{build_id}"\n', monkeypatch)
    assert (s.blob_lease_seconds, s.gc_grace) == (120, "2h")
    assert s.publish_types["android"].path == "android/{build_id}"


def test_top_level_keys_beside_hub_tables_are_still_checked(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="blob_lease_seconds"):
        _load(tmp_path, "blob_lease_seconds = 2\n[hub.publish_types.a]\npath = \"a/{build_id}\"\n", monkeypatch)


def test_the_same_key_at_top_level_and_under_hub_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="gc_grace both at top level and under \\[hub\\]"):
        _load(tmp_path, 'gc_grace = "2h"\n[hub]\ngc_grace = "3h"\n', monkeypatch)


def test_hub_must_be_a_table(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="must be a table"):
        _load(tmp_path, 'hub = "x"\n', monkeypatch)


@pytest.mark.parametrize("path, said", [
    ("android/{buildid}", "'buildid'; only {type} and {build_id} are known"),
    ("android/{}", "only {type} and {build_id} are known"),
    ("android/latest", "must contain {build_id}"),
    ("../{build_id}", "does not make a valid path"),
    ("/abs/{build_id}", "does not make a valid path"),
    ("a/{build_id", "is not a valid template: expected '}'"),
])
def test_a_type_path_template_that_cannot_work_is_refused_at_start(tmp_path, monkeypatch, path, said):
    text = f'[hub.publish_types.android]\npath = "{path}"\n'
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text, monkeypatch)
    assert said in str(e.value), str(e.value)


def test_good_type_path_templates_load(tmp_path, monkeypatch):
    s = _load(tmp_path, '[hub.publish_types.a]\npath = "builds/{type}/{build_id}"\n'
                        '[hub.publish_types.b]\npath = "b-{build_id}"\n', monkeypatch)
    assert s.publish_types["a"].path == "builds/{type}/{build_id}" and s.publish_types["b"].path == "b-{build_id}"
