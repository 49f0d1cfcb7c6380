"""Keep the KubeRay RayService in step with ``serve_config.yaml`` — one source of truth for the Serve app.

``serve_config.yaml`` (repo root) is what ``serve run`` / ``serve deploy`` use locally; the RayService in
``ray_cluster/rayservice.yaml`` must carry the same applications in ``spec.serveConfigV2``. Editing both by
hand drifts, so the block is generated::

    python -m fraudgen.k8s render            # rewrite the serveConfigV2 block in ray_cluster/rayservice.yaml
    python -m fraudgen.k8s render --check    # exit 1 (naming the file) when the manifest is stale
    python -m fraudgen.k8s validate          # schema-validate every ray_cluster/*.yaml (see k8s_schema.py)

The only differences allowed are the production values in ``ray_cluster/serve_overrides.yaml``, merged over
the serve config (:func:`merge_overrides`): e.g. inside a pod the Serve proxy must listen on all interfaces
(KubeRay's ``<name>-serve-svc`` targets the pod IP) and the app must not believe it is on loopback, while the
local config binds 127.0.0.1. Everything else is copied (comments are dropped by the YAML round trip). The
manifest is edited as text so its comments and the other documents in it survive.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG_PATH = REPO_ROOT / "serve_config.yaml"
RAYSERVICE_PATH = REPO_ROOT / "ray_cluster" / "rayservice.yaml"
OVERRIDES_PATH = REPO_ROOT / "ray_cluster" / "serve_overrides.yaml"
#: lists whose entries are merged by their ``name`` key
_NAMED_LISTS = ("applications", "deployments")

_BLOCK_HEADER = re.compile(r"^(?P<indent>[ ]*)serveConfigV2:[ ]*\|[-+]?[ ]*$", re.MULTILINE)
#: indentation of the block's content relative to the ``serveConfigV2:`` key
_BLOCK_STEP = 2


class RenderError(ValueError):
    """The serve config or the manifest cannot be rendered (message names the file and the problem)."""


def merge_overrides(base: Any, overrides: Any, where: str = "") -> Any:
    """``overrides`` deep-merged over ``base``: mappings by key, ``applications``/``deployments`` by name.

    A named entry in ``overrides`` that ``base`` lacks raises :class:`RenderError`, so a rename in
    serve_config.yaml cannot leave a production override silently unused.
    """
    if isinstance(base, dict) and isinstance(overrides, dict):
        merged = dict(base)
        for key, value in overrides.items():
            path = f"{where}.{key}" if where else str(key)
            if key in _NAMED_LISTS and isinstance(value, list):
                merged[key] = _merge_named(base.get(key) or [], value, path)
            else:
                merged[key] = merge_overrides(base.get(key), value, path) if key in base else value
        return merged
    return overrides


def _merge_named(base: list[Any], overrides: list[Any], where: str) -> list[Any]:
    merged = [dict(item) if isinstance(item, dict) else item for item in base]
    index = {item.get("name"): i for i, item in enumerate(merged) if isinstance(item, dict)}
    for override in overrides:
        name = override.get("name") if isinstance(override, dict) else None
        if name not in index:
            raise RenderError(f"serve_overrides {where}: no entry named {name!r} in serve_config.yaml")
        merged[index[name]] = merge_overrides(merged[index[name]], override, f"{where}[{name}]")
    return merged


def _load_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise RenderError(f"{source}: top level must be a mapping")
    return loaded


def serve_config_v2(
    serve_config_text: str, overrides_text: str | None = None, source: str = "serve_config.yaml"
) -> str:
    """The YAML text to embed as ``serveConfigV2``: the serve config with the production overrides merged."""
    config = _load_mapping(serve_config_text, source)
    applications = config.get("applications")
    if not isinstance(applications, list) or not applications:
        raise RenderError(
            f"{source}: 'applications' must be a non-empty list (Serve multi-app config format)"
        )
    for index, app in enumerate(applications):
        if not isinstance(app, dict) or not app.get("import_path"):
            raise RenderError(f"{source}: applications[{index}] has no import_path")
    if overrides_text is None:
        overrides_text = OVERRIDES_PATH.read_text(encoding="utf-8")
    config = merge_overrides(config, _load_mapping(overrides_text, "serve_overrides.yaml"))
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)


def expected_serve_config(serve_config_text: str, overrides_text: str | None = None) -> dict[str, Any]:
    """The parsed mapping that ``serveConfigV2`` must equal for ``serve_config_text``."""
    loaded: dict[str, Any] = yaml.safe_load(serve_config_v2(serve_config_text, overrides_text))
    return loaded


def _block_span(manifest_text: str, source: str) -> tuple[int, int, str]:
    """(start, end, indent) of the literal block following the single ``serveConfigV2: |`` key."""
    headers = list(_BLOCK_HEADER.finditer(manifest_text))
    if len(headers) != 1:
        raise RenderError(f"{source}: expected exactly one 'serveConfigV2: |' block, found {len(headers)}")
    header = headers[0]
    indent = header.group("indent")
    start = header.end() + 1
    end = start
    for line in manifest_text[start:].splitlines(keepends=True):
        stripped = line.strip()
        if stripped and len(line) - len(line.lstrip(" ")) <= len(indent):
            break
        end += len(line)
    return start, end, indent


def render_rayservice(
    manifest_text: str,
    serve_config_text: str,
    overrides_text: str | None = None,
    source: str = "rayservice.yaml",
) -> str:
    """``manifest_text`` with its serveConfigV2 block replaced by the rendered serve config."""
    start, end, indent = _block_span(manifest_text, source)
    pad = indent + " " * _BLOCK_STEP
    rendered = serve_config_v2(serve_config_text, overrides_text)
    body = "".join(f"{pad}{line}\n" if line else "\n" for line in rendered.splitlines())
    return manifest_text[:start] + body + manifest_text[end:]


def embedded_serve_config(manifest_text: str) -> dict[str, Any]:
    """The parsed ``spec.serveConfigV2`` of the RayService document in ``manifest_text``."""
    for doc in yaml.safe_load_all(manifest_text):
        if isinstance(doc, dict) and doc.get("kind") == "RayService":
            loaded: dict[str, Any] = yaml.safe_load(doc["spec"]["serveConfigV2"])
            return loaded
    raise RenderError("no RayService document found")


def render_file(
    serve_config: Path = SERVE_CONFIG_PATH,
    rayservice: Path = RAYSERVICE_PATH,
    check: bool = False,
    overrides: Path = OVERRIDES_PATH,
) -> bool:
    """Render ``rayservice`` from ``serve_config``; return True when the file was already up to date.

    With ``check`` the file is never written (CI mode).
    """
    if not serve_config.is_file():
        raise RenderError(f"{serve_config}: not found (the Serve config is the source of serveConfigV2)")
    current = rayservice.read_text(encoding="utf-8")
    rendered = render_rayservice(
        current,
        serve_config.read_text(encoding="utf-8"),
        overrides.read_text(encoding="utf-8"),
        source=str(rayservice),
    )
    if rendered == current:
        return True
    if not check:
        rayservice.write_text(rendered, encoding="utf-8")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraudgen.k8s", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="regenerate serveConfigV2 in the RayService manifest")
    render.add_argument("--serve-config", type=Path, default=SERVE_CONFIG_PATH)
    render.add_argument("--rayservice", type=Path, default=RAYSERVICE_PATH)
    render.add_argument("--overrides", type=Path, default=OVERRIDES_PATH)
    render.add_argument("--check", action="store_true", help="do not write; exit 1 if the manifest is stale")
    validate = commands.add_parser("validate", help="schema-validate KubeRay/Kubernetes manifests")
    validate.add_argument("paths", nargs="*", type=Path, help="default: ray_cluster/*.yaml")
    args = parser.parse_args(argv)

    if args.command == "render":
        try:
            fresh = render_file(
                args.serve_config, args.rayservice, check=args.check, overrides=args.overrides
            )
        except RenderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if fresh:
            print(f"{args.rayservice}: serveConfigV2 matches {args.serve_config}")
            return 0
        if args.check:
            print(
                f"{args.rayservice}: serveConfigV2 differs from {args.serve_config}; "
                "run `python -m fraudgen.k8s render`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.rayservice}: serveConfigV2 rewritten from {args.serve_config}")
        return 0

    from fraudgen.k8s_schema import validate_paths

    paths = args.paths or sorted((REPO_ROOT / "ray_cluster").glob("*.yaml"))
    problems = validate_paths(paths)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{len(paths)} manifest file(s) valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
