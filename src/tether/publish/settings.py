"""Publishing's own settings rules, checked when the hub starts (not at the first
publish, where a typo in a type's path template would be a 500)."""

from __future__ import annotations

import string

from tether.config import ConfigError, HubSettings
from tether.publish.core import PathError, validate_path


def template_problem(path: str) -> str | None:
    """Why a type's path template cannot work, or None when it can."""
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(path) if field is not None}
    except ValueError as exc:  # an unbalanced brace
        return f"path {path!r} is not a valid template: {exc}"
    unknown = names - {"type", "build_id"}
    if unknown:
        return (f"path {path!r} names {', '.join(sorted(map(repr, unknown)))}; "
                "only {type} and {build_id} are known")
    if "build_id" not in names:
        return f"path {path!r} must contain {{build_id}}: every build needs a place of its own"
    try:
        validate_path(path.format(type="t", build_id="b"))
    except (PathError, ValueError, IndexError) as exc:
        return f"path {path!r} does not make a valid path: {exc}"
    return None


def check(settings: HubSettings) -> None:
    """:class:`ConfigError` naming the first publish setting that cannot work."""
    for name, cfg in settings.publish_types.items():
        why = template_problem(cfg.path)
        if why is not None:
            raise ConfigError(f"invalid hub configuration: publish_types.{name}.path: {why}")
