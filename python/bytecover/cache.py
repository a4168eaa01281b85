"""The local cache (``$BYTECOVER_CACHE``, default ``~/.cache/bytecover``) and the helpers that
keep it consistent when several processes fill it at once: file locks, atomic build folders,
sha256 with a progress bar.

Layout::

    models/<name>/          config.json, model.safetensors, tokenizer.json, ...,
                            bytecover.json (the registry entry + source sha256), .complete
    models/.<name>.lock     serialises concurrent conversions of one model
    gguf/                   GGUF files assembled from chunks (deleted after conversion)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["MARKER", "cache_root", "file_lock", "is_complete", "building_dir", "sha256_file", "sha256_stream"]

MARKER = ".complete"
_CHUNK = 1 << 22


def cache_root() -> Path:
    """``$BYTECOVER_CACHE`` or ``~/.cache/bytecover``."""
    env = os.environ.get("BYTECOVER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bytecover"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock so parallel processes (pytest-xdist, two shells) build once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_complete(directory: Path, version: int) -> bool:
    """True when ``directory`` holds a finished build of format ``version``."""
    marker = directory / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("version") == version
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def building_dir(final: Path, version: int) -> Iterator[Path]:
    """Yield a temp dir beside ``final``; on success mark it complete and rename it into place.

    The rename is atomic, so readers see either nothing or a whole build, never half of one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"version": version, "finished": time.time()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path, desc: str | None = None) -> str:
    """Hex sha256 of a file, with a byte progress bar when ``desc`` is given."""
    return sha256_stream([path], desc)


def sha256_stream(paths: Sequence[Path], desc: str | None, out: Path | None = None) -> str:
    """sha256 of the concatenation of ``paths``, optionally writing that concatenation to ``out``."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in paths)
    sink = open(out, "wb") if out is not None else contextlib.nullcontext()
    with sink as fh, tqdm(
        total=total, unit="B", unit_scale=True, desc=desc, disable=desc is None, leave=False
    ) as bar:
        for path in paths:
            with open(path, "rb") as src:
                while block := src.read(_CHUNK):
                    digest.update(block)
                    if fh is not None:
                        fh.write(block)
                    bar.update(len(block))
    return digest.hexdigest()
