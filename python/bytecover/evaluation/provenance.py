"""What produced a result: code commit, date, machine, command line and model variant.

Every results JSON the harnesses write carries ``provenance()`` under ``config["provenance"]``
so that a number can be traced to the code, the machine and the exact model file behind it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["GGUF_FACTS", "QUANTISATION", "FILE_TYPES", "TENSOR_TYPES", "gguf_header", "git_state", "machine", "model_variant", "provenance", "source_digest"]

#: What each registry model's GGUF file holds, read from its header (``general.name``,
#: ``general.file_type`` and the tensor types); the weights are dequantised to float32 on load.
GGUF_FACTS: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "quantisation": "Q4_1",
        "gguf_general_name": "Smollm2 135M 8k Lc100K Mix1 Ep2",
        "tensors": "Q4_1 x210, Q8_0 x1, F32 x61",
    },
    "qwen2.5-coder-0.5b": {
        # file type 15 (MOSTLY_Q4_K_M); most matrices fall back to Q5_0 (896 columns are not a
        # multiple of the 256-wide k-quant blocks). The GGUF was made from the AWQ release.
        "quantisation": "Q4_K_M",
        "gguf_general_name": "Qwen2.5 Coder 0.5B Instruct AWQ",
        "tensors": "Q5_0 x133, Q8_0 x13, Q6_K x12, Q4_K x12, F32 x121",
    },
    "gemma3-270m": {"quantisation": "Q4_K_M"},
}
QUANTISATION: dict[str, str] = {k: v["quantisation"] for k, v in GGUF_FACTS.items()}


#: llama.cpp ``general.file_type`` values (``llama_ftype``) and ggml tensor types used here.
FILE_TYPES: dict[int, str] = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
                              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
                              15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}
TENSOR_TYPES: dict[int, str] = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
                                10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_header(path: str | os.PathLike, max_bytes: int = 32 << 20) -> dict[str, Any]:
    """The ``general.*`` metadata and the count of tensors per type of a GGUF file (v2/v3),
    read from its first `max_bytes` (the header; a file split in chunks: its first chunk)."""
    with open(path, "rb") as f:
        data = f.read(max_bytes)
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    _version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    off = 24

    def text(o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, o)
        return data[o + 8 : o + 8 + n].decode("utf-8", "replace"), o + 8 + n

    def value(kind: int, o: int) -> tuple[Any, int]:
        if kind == 8:
            return text(o)
        if kind == 9:  # array: skipped
            inner, n = struct.unpack_from("<IQ", data, o)
            o += 12
            for _ in range(n):
                _, o = value(inner, o)
            return None, o
        fmt = _SCALAR[kind]
        return struct.unpack_from(fmt, data, o)[0], o + struct.calcsize(fmt)

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key, off = text(off)
        (kind,) = struct.unpack_from("<I", data, off)
        val, off = value(kind, off + 4)
        if key.startswith("general.") and val is not None:
            meta[key] = val
    counts: dict[str, int] = {}
    for _ in range(n_tensors):
        _, off = text(off)
        (n_dims,) = struct.unpack_from("<I", data, off)
        off += 4 + 8 * n_dims
        (kind,) = struct.unpack_from("<I", data, off)
        off += 4 + 8
        name = TENSOR_TYPES.get(kind, str(kind))
        counts[name] = counts.get(name, 0) + 1
    ft = meta.get("general.file_type")
    return {"general": meta, "file_type": FILE_TYPES.get(ft, str(ft)) if ft is not None else None, "tensor_types": counts}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(where: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit of `where` (else of the checkout holding this package, else of the working
    directory), whether files differ from it (changed or untracked, not ignored), and which (at
    most 20 named)."""
    candidates = [Path(where)] if where is not None else []
    candidates += [Path(__file__).resolve().parent, Path.cwd()]
    for cwd in candidates:
        head = _git(["rev-parse", "HEAD"], cwd)
        if head:
            # tracked files that differ from the commit, and untracked files git does not ignore
            status = _git(["status", "--porcelain", "--untracked-files=normal"], cwd) or ""
            changed = [line[3:] for line in status.splitlines() if line.strip()]
            top = (_git(["rev-parse", "--show-toplevel"], cwd) or "").strip()
            return {"commit": head.strip(), "dirty": bool(changed), "changed_files": changed[:20],
                    "n_changed_files": len(changed), "repository": top or None}
    return {"commit": None, "dirty": None, "changed_files": [], "n_changed_files": 0, "repository": None}


def machine() -> dict[str, Any]:
    """Platform, CPU counts and, when torch is already imported, its version and thread count."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    torch = sys.modules.get("torch")  # never import torch just to describe the machine
    if torch is not None:
        info["torch"] = getattr(torch, "__version__", None)
        info["torch_threads"] = torch.get_num_threads()
        cuda = getattr(torch, "cuda", None)
        info["cuda"] = bool(cuda and cuda.is_available())
    return info


def model_variant(name: str | None) -> dict[str, Any] | None:
    """Registry facts of a model: description, GGUF file, its sha256, quantisation, dtype."""
    if not name:
        return None
    try:
        from ..models import get_spec
    except ImportError:
        try:
            from ..registry import get_spec
        except ImportError:
            return {"name": name}
    try:
        spec = get_spec(name)
    except (ValueError, KeyError):
        return {"name": name, "local": True}
    source = getattr(spec, "source", None)
    desc = getattr(spec, "description", "")
    facts = GGUF_FACTS.get(spec.name, {})
    quant = facts.get("quantisation")
    m = re.search(r"\b(Q\d[A-Z0-9_]*|F16|BF16|F32)\b", desc)
    if quant is None and m:
        quant = m.group(1)
    return {
        "name": spec.name,
        "description": desc,
        "gguf_file": getattr(source, "file_name", None),
        "gguf_sha256": getattr(source, "sha256", None),
        "quantisation": quant,
        **{k: v for k, v in facts.items() if k != "quantisation"},
        "weights": f"GGUF {quant or '?'} dequantised to float32",
    }


def source_digest() -> dict[str, Any]:
    """sha256 of the package's Python sources (paths and contents) and of its native module: the
    code that ran, even when the checkout was dirty or was a copy outside git."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    n = 0
    for path in sorted(p for p in pkg.rglob("*") if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(pkg)).encode() + b"\0" + path.read_bytes() + b"\0")
        n += 1
    native = {}
    for so in sorted(pkg.glob("_core*.so")) + sorted(pkg.glob("_core*.pyd")):
        native[so.name] = hashlib.sha256(so.read_bytes()).hexdigest()
    return {"package_dir": str(pkg), "python_sources_sha256": h.hexdigest(), "python_files": n, "native_sha256": native}


def provenance(command_line: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Everything above in one dict, with the UTC date."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "source": source_digest(),
        "machine": machine(),
        "command_line": command_line,
        "model": model_variant(model),
    }
