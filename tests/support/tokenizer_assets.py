"""Tokenizer-only fixtures for tests: real vocabularies of many families, with golden encodings.

Sources (all from PyPI, nothing from a model hub):

* ``llama-cpp-python==0.3.36`` *source archive* (never built): llama.cpp's
  ``vendor/llama.cpp/models/ggml-vocab-<name>.gguf`` vocabularies plus ``.gguf.inp`` /
  ``.gguf.out`` golden pairs (hard cases: whitespace runs, emoji, CJK, code) that llama.cpp's own
  tokenizer test uses. Each vocabulary is turned into a Hugging Face fast tokenizer with the
  transformers GGUF loader, then repaired where that loader loses information the upstream
  ``tokenizer.json`` has (see ``_FIXUPS``).
* ``mistral-common==1.13.1``: Mistral 7B v0.1's SentencePiece model; its goldens come from
  ``sentencepiece`` itself, run over the llama-spm inputs.

Cache layout (root ``$BYTECOVER_CACHE``, default ``~/.cache/bytecover``)::

    sdist/llama_cpp_python-0.3.36.tar.gz
    llama-vocab/ggml-vocab-<name>.gguf{,.inp,.out}     extracted, nothing else from the archive
    tokenizers/<name>/tokenizer.json                   what the Rust core reads
                     /tokenizer_config.json ...        so AutoTokenizer.from_pretrained(dir) works
                     /bytecover_tokenizer.json         bos/eos ids, add_bos, family, fixups applied
                     /.complete
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bytecover.cache import building_dir, cache_root, file_lock, is_complete, sha256_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "tokenizer_names",
    "ensure_tokenizer",
    "tokenizer_dir",
    "tokenizer_json",
    "tokenizer_meta",
    "load_tokenizer",
    "golden_cases",
    "golden_report",
    "ensure_sdist",
    "ensure_vocab_files",
]

log = logging.getLogger("bytecover.tokenizer_assets")

#: Bump when the conversion or the fixups change so stale cache entries are rebuilt.
ASSET_VERSION = 2
META = "bytecover_tokenizer.json"

_SDIST_PIN = "llama-cpp-python==0.3.36"
_SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Last resort when pip cannot fetch it; the pinned sha256 above still has to match.
_SDIST_URL = (
    "https://files.pythonhosted.org/packages/ec/e9/"
    "e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/" + _SDIST_NAME
)
_VOCAB_MEMBER_DIR = "vendor/llama.cpp/models/"
_VOCAB_PREFIX = "ggml-vocab-"
_GOLDEN_SEP = "\n__ggml_vocab_test__\n"  # llama.cpp tests/test-tokenizer-0.cpp

_MISTRAL_PIN = "mistral-common==1.13.1"
_MISTRAL_FILE = ("mistral_common", "data/tokenizer.model.v1")
_MISTRAL_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"

# GGUF token types (llama.cpp llama_token_type).
_CONTROL = 3

JsonDict = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Pre-tokenizer repairs
# --------------------------------------------------------------------------------------------
# transformers' GGUF loader knows the split regex of some `tokenizer.ggml.pre` types (llama-bpe,
# qwen2, ...) and falls back to GPT-2's ByteLevel regex for the rest. The pre-tokenizers below are
# the ones the upstream tokenizer.json files use; each mirrors llama.cpp's regex list for that pre
# type (src/llama-vocab.cpp), which is how the golden ids were made.


def _byte_level(use_regex: bool) -> JsonDict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> JsonDict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def _digits(individual: bool) -> JsonDict:
    return {"type": "Digits", "individual_digits": individual}


def _sequence(*steps: JsonDict) -> JsonDict:
    return {"type": "Sequence", "pretokenizers": list(steps)}


#: StarCoder / SmolLM: every digit alone (`\p{N}`), then the GPT-2 regex.
STARCODER_PRE_TOKENIZER = _sequence(_digits(True), _byte_level(True))

_FALCON_PRE_TOKENIZER = _sequence(
    {"type": "Punctuation", "behavior": "Contiguous"},
    _byte_level(True),
    _digits(False),
    _split("[0-9][0-9][0-9]"),
)

_DEEPSEEK_CODER_PRE_TOKENIZER = _sequence(
    _split("[\r\n]"),
    _split(r"\s?\p{L}+"),
    _split(r"\s?\p{P}+"),
    _split("[一-龥ࠀ-一가-퟿]+"),
    _digits(True),
    _byte_level(False),
)

#: Llama-2 / Mistral (legacy sentencepiece): the dummy prefix comes from a normalizer, so a text
#: that starts with spaces keeps all of them (" " -> "▁▁"); `Metaspace(prepend_scheme="first")`,
#: which the GGUF loader writes for llama-spm, swallows one of them.
LEGACY_SPM_NORMALIZER: JsonDict = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ],
}


def _set_pre_tokenizer(pre: JsonDict) -> Callable[[JsonDict], None]:
    def fix(tj: JsonDict) -> None:
        tj["pre_tokenizer"] = pre

    return fix


def _legacy_spm(tj: JsonDict) -> None:
    tj["normalizer"] = LEGACY_SPM_NORMALIZER
    tj["pre_tokenizer"] = None


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerAsset:
    name: str
    family: str  # "byte-level-bpe" or "sentencepiece-bpe"
    fixups: tuple[tuple[str, Callable[[JsonDict], None]], ...] = field(default=())


_FIXUPS: dict[str, tuple[tuple[str, Callable[[JsonDict], None]], ...]] = {
    "starcoder": (("pre_tokenizer=Digits(individual)+ByteLevel", _set_pre_tokenizer(STARCODER_PRE_TOKENIZER)),),
    "falcon": (("pre_tokenizer=falcon (Punctuation, ByteLevel, Digits, 3-digit split)", _set_pre_tokenizer(_FALCON_PRE_TOKENIZER)),),
    "deepseek-coder": (("pre_tokenizer=deepseek-coder splits", _set_pre_tokenizer(_DEEPSEEK_CODER_PRE_TOKENIZER)),),
    "llama-spm": (("normalizer=Prepend+Replace, no pre_tokenizer (legacy Llama-2)", _legacy_spm),),
}

_GGUF_NAMES = (
    "gpt-2", "llama-bpe", "starcoder", "deepseek-coder", "phi-3", "qwen2", "falcon",
    "llama-spm",
)
_SPM_GGUF = {"phi-3", "llama-spm"}
_ASSETS: dict[str, TokenizerAsset] = {
    n: TokenizerAsset(n, "sentencepiece-bpe" if n in _SPM_GGUF else "byte-level-bpe", _FIXUPS.get(n, ()))
    for n in _GGUF_NAMES
}
_ASSETS["mistral-v1"] = TokenizerAsset("mistral-v1", "sentencepiece-bpe")


def tokenizer_names() -> list[str]:
    """Names of every tokenizer fixture."""
    return list(_ASSETS)


def _asset(name: str) -> TokenizerAsset:
    if name not in _ASSETS:
        raise ValueError(f"unknown tokenizer {name!r}; known tokenizers: {', '.join(_ASSETS)}")
    return _ASSETS[name]


# --------------------------------------------------------------------------------------------
# The llama-cpp-python source archive
# --------------------------------------------------------------------------------------------


def _sha256_ok(path: Path) -> bool:
    return path.is_file() and sha256_file(path) == _SDIST_SHA256


def _pip_download(dest: Path) -> Path | None:
    """Fetch the sdist with pip. `--no-binary` names only this package: with `:all:` pip would
    also compile cmake and ninja from source just to read the archive's metadata."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--no-binary", "llama-cpp-python", "-d", str(dest), _SDIST_PIN,
    ]
    try:
        subprocess.run(cmd, check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("pip download of %s failed: %s", _SDIST_PIN, exc)
        return None
    found = dest / _SDIST_NAME
    return found if found.is_file() else None


def _url_download(dest: Path) -> Path:
    out = dest / _SDIST_NAME
    log.info("downloading %s", _SDIST_URL)
    with urllib.request.urlopen(_SDIST_URL, timeout=300) as resp, open(out, "wb") as fh:
        shutil.copyfileobj(resp, fh)
    return out


def ensure_sdist() -> Path:
    """Path of the verified llama-cpp-python 0.3.36 source archive in the cache.

    Reuses ``$BYTECOVER_LLAMA_SDIST`` or ``/tmp/llamasrc/`` when they hold it, else downloads it.
    The archive is only ever read, never built.
    """
    target = cache_root() / "sdist" / _SDIST_NAME
    if target.is_file():
        return target
    with file_lock(target.parent / ".sdist.lock"):
        if target.is_file():
            return target
        local = [os.environ.get("BYTECOVER_LLAMA_SDIST", ""), f"/tmp/llamasrc/{_SDIST_NAME}"]
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            source = next((Path(p) for p in local if p and _sha256_ok(Path(p))), None)
            source = source or _pip_download(Path(tmp)) or _url_download(Path(tmp))
            if not _sha256_ok(source):
                raise RuntimeError(f"{source}: sha256 differs from the pinned {_SDIST_SHA256}")
            staged = Path(tmp) / "staged"
            shutil.copyfile(source, staged)
            os.replace(staged, target)
    return target


def vocab_dir() -> Path:
    return cache_root() / "llama-vocab"


def ensure_vocab_files() -> Path:
    """Folder with ``ggml-vocab-*.gguf*`` from the archive (only those files are extracted)."""
    out = vocab_dir()
    if is_complete(out, ASSET_VERSION):
        return out
    with file_lock(out.parent / ".llama-vocab.lock"):
        if is_complete(out, ASSET_VERSION):
            return out
        sdist = ensure_sdist()
        with building_dir(out, ASSET_VERSION) as tmp, tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                in_models = member.name.split("/", 1)[-1].startswith(_VOCAB_MEMBER_DIR)
                if member.isfile() and in_models and base.startswith(_VOCAB_PREFIX):
                    src = tar.extractfile(member)
                    assert src is not None
                    with src, open(tmp / base, "wb") as fh:
                        shutil.copyfileobj(src, fh)
    return out


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def tokenizer_dir(name: str) -> Path:
    return cache_root() / "tokenizers" / _asset(name).name


def _gguf_tokenizer_meta(path: Path) -> JsonDict:
    """The GGUF's own ids and flags: they are the truth the converted tokenizer must keep."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def get(key: str) -> Any:
        f = fields.get(f"tokenizer.ggml.{key}")
        return None if f is None else f.contents()

    tokens = get("tokens")
    return {
        "tokens": tokens,
        "token_type": get("token_type"),
        "model": get("model"),
        "pre": get("pre"),
        "bos_token_id": get("bos_token_id"),
        "eos_token_id": get("eos_token_id"),
        # llama.cpp's default: SentencePiece ("llama") vocabularies add BOS unless told otherwise.
        "add_bos": bool(get("add_bos_token") if get("add_bos_token") is not None else get("model") == "llama"),
    }


def _restore_control_tokens(tj: JsonDict, gguf: JsonDict) -> list[str]:
    """Put control tokens back at their GGUF ids as special added tokens.

    The GGUF loader re-spells raw-text control tokens such as ``<｜begin▁of▁sentence｜>`` in the
    byte alphabet (so they become ordinary tokens), then appends the special tokens again under new
    ids past the end of the vocabulary. Upstream tokenizer.json files keep them at their ids with the
    raw spelling; so do we, and we drop the appended duplicates.
    """
    n = len(gguf["tokens"])
    vocab: dict[str, int] = tj["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    added = [a for a in tj["added_tokens"] if a["id"] < n]
    have = {a["id"] for a in added}
    restored = []
    for i, (raw, kind) in enumerate(zip(gguf["tokens"], gguf["token_type"])):
        if kind != _CONTROL or i in have:
            continue
        spelled = by_id.get(i)
        if spelled is not None and spelled != raw:
            del vocab[spelled]
        vocab[raw] = i
        added.append({"id": i, "content": raw, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        restored.append(raw)
    tj["added_tokens"] = sorted(added, key=lambda a: a["id"])
    return restored


def _patched_tokenizer_json(asset: TokenizerAsset, tj: JsonDict, gguf: JsonDict | None) -> list[str]:
    """Apply every repair to the tokenizer.json dict in place; return descriptions of them."""
    applied = []
    if gguf is not None and asset.family == "byte-level-bpe":
        dropped = [a["content"] for a in tj["added_tokens"] if a["id"] >= len(gguf["tokens"])]
        restored = _restore_control_tokens(tj, gguf)
        if restored or dropped:
            applied.append(f"control tokens restored at GGUF ids {restored}; appended duplicates dropped {dropped}")
    for description, fix in asset.fixups:
        fix(tj)
        applied.append(description)
    return applied


def _save(tok: PreTrainedTokenizerBase, tj: JsonDict, meta: JsonDict, out: Path) -> None:
    from tokenizers import Tokenizer

    tok.save_pretrained(out)
    # Overwrite the loader's tokenizer.json with the repaired one; the config files still name
    # the special tokens by content, which resolves to the restored ids.
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    Tokenizer.from_file(str(out / "tokenizer.json"))  # must load where the Rust core's oracle does
    (out / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def _convert_gguf(asset: TokenizerAsset, out: Path) -> None:
    from transformers import AutoTokenizer

    folder = ensure_vocab_files()
    file = f"{_VOCAB_PREFIX}{asset.name}.gguf"
    gguf = _gguf_tokenizer_meta(folder / file)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    tj = json.loads(tok.backend_tokenizer.to_str())
    fixes = _patched_tokenizer_json(asset, tj, gguf)
    ids = gguf["tokens"]
    meta = {
        "name": asset.name,
        "family": asset.family,
        "source": f"{_SDIST_PIN} sdist: vendor/llama.cpp/models/{file}",
        "gguf_pre": gguf["pre"],
        "n_tokens": len(ids),
        "bos_token_id": gguf["bos_token_id"],
        "bos_token": None if gguf["bos_token_id"] is None else ids[gguf["bos_token_id"]],
        "eos_token_id": gguf["eos_token_id"],
        "eos_token": None if gguf["eos_token_id"] is None else ids[gguf["eos_token_id"]],
        "add_bos": gguf["add_bos"],
        "fixups": fixes,
        "version": ASSET_VERSION,
    }
    _save(tok, tj, meta, out)


def _mistral_model_file() -> Path:
    module, rel = _MISTRAL_FILE
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        from bytecover.install import install_packages

        install_packages([_MISTRAL_PIN])
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _MISTRAL_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest}, expected {_MISTRAL_SHA256}")
    return path


def _spm_bpe_merges(ids: dict[str, int]) -> list[list[str]]:
    """Merges of a SentencePiece BPE model, as HF's converter derives them: every split of a
    piece into two pieces of the vocabulary, ordered by the id of the merged piece (a piece's id
    is its merge priority), then by the ids of the two halves."""
    ranked: list[tuple[int, int, int, str, str]] = []
    for merged, i in ids.items():
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            if left in ids and right in ids:
                ranked.append((i, ids[left], ids[right], left, right))
    ranked.sort()
    return [[left, right] for _, _, _, left, right in ranked]


def _spm_tokenizer_json(sp: Any) -> JsonDict:
    """A fast-tokenizer description of a loaded SentencePiece BPE model with byte fallback, in the
    legacy Llama-2 shape that Mistral 7B v0.1's upstream tokenizer.json has."""
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    controls = [i for i in range(len(pieces)) if sp.is_control(i) or sp.is_unknown(i)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i in controls
        ],
        "normalizer": LEGACY_SPM_NORMALIZER,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE", "dropout": None, "unk_token": pieces[sp.unk_id()],
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab,
            "merges": _spm_bpe_merges(vocab),
        },
    }


def _convert_mistral(asset: TokenizerAsset, out: Path) -> None:
    """SentencePiece model -> tokenizer.json (our own conversion; transformers' needs protobuf)."""
    import sentencepiece as spm
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    sp = spm.SentencePieceProcessor(model_file=str(_mistral_model_file()))
    tj = _spm_tokenizer_json(sp)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(tj)),
                                  unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    meta = {
        "name": asset.name,
        "family": asset.family,
        "source": f"{_MISTRAL_PIN}: mistral_common/data/tokenizer.model.v1",
        "n_tokens": sp.get_piece_size(),
        "bos_token_id": sp.bos_id(),
        "bos_token": sp.id_to_piece(sp.bos_id()),
        "eos_token_id": sp.eos_id(),
        "eos_token": sp.id_to_piece(sp.eos_id()),
        "add_bos": True,
        "fixups": [],
        "version": ASSET_VERSION,
    }
    _save(tok, tj, meta, out)


def ensure_tokenizer(name: str) -> Path:
    """Folder with ``tokenizer.json`` and ``bytecover_tokenizer.json`` for fixture ``name``."""
    asset = _asset(name)
    out = tokenizer_dir(name)
    if is_complete(out, ASSET_VERSION):
        return out
    with file_lock(out.parent / f".{asset.name}.lock"):
        if not is_complete(out, ASSET_VERSION):
            log.info("converting tokenizer %s", asset.name)
            with building_dir(out, ASSET_VERSION) as tmp:
                convert = _convert_mistral if asset.name == "mistral-v1" else _convert_gguf
                convert(asset, tmp)
    return out


def tokenizer_json(name: str) -> str:
    """Text of the fixture's ``tokenizer.json``."""
    return (ensure_tokenizer(name) / "tokenizer.json").read_text(encoding="utf-8")


def tokenizer_meta(name: str) -> JsonDict:
    """``bytecover_tokenizer.json``: bos/eos ids and tokens, add_bos, family, fixups applied."""
    return json.loads((ensure_tokenizer(name) / META).read_text(encoding="utf-8"))


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The fixture as a transformers fast tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_tokenizer(name))


# --------------------------------------------------------------------------------------------
# Golden encodings
# --------------------------------------------------------------------------------------------


def _parse_golden(inp: bytes, out: str) -> list[tuple[str, list[int]]]:
    """Cases as llama.cpp's test-tokenizer-0 reads them.

    ``.inp``: texts, each followed by ``"\\n__ggml_vocab_test__\\n"`` (texts may be empty or be
    only newlines). ``.out``: one line per text, ids separated by spaces (a leading space, an empty
    line for an empty text). Ids come from llama.cpp with add_special=False, parse_special=False.
    """
    text = inp.decode("utf-8")
    texts = text.split(_GOLDEN_SEP)
    if text.endswith(_GOLDEN_SEP):
        texts.pop()  # the archive's files end with a separator, not a text
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise ValueError(f"{len(texts)} golden texts but {len(lines)} id lines")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


def golden_cases(name: str) -> list[tuple[str, list[int]]]:
    """``(text, ids)`` pairs: llama.cpp's goldens, or for ``mistral-v1`` the ids ``sentencepiece``
    gives for the llama-spm texts. Ids exclude BOS/EOS (encode with add_special_tokens=False)."""
    _asset(name)
    folder = ensure_vocab_files()
    if name == "mistral-v1":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(_mistral_model_file()))
        texts = [t for t, _ in golden_cases("llama-spm")]
        return [(t, list(sp.encode(t))) for t in texts]
    stem = folder / f"{_VOCAB_PREFIX}{name}.gguf"
    inp = Path(f"{stem}.inp").read_bytes()
    out = Path(f"{stem}.out").read_bytes().decode("utf-8")
    return _parse_golden(inp, out)


def golden_report(name: str) -> tuple[int, int, list[tuple[str, list[int], list[int]]]]:
    """``(matches, cases, mismatches)`` of the fixture's tokenizer.json against its goldens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ensure_tokenizer(name) / "tokenizer.json"))
    cases = golden_cases(name)
    bad = []
    for text, ids in cases:
        got = tok.encode(text, add_special_tokens=False).ids
        if got != ids:
            bad.append((text, ids, got))
    return len(cases) - len(bad), len(cases), bad


def prepare_all() -> None:
    """Build every fixture (the test command runs this once before pytest)."""
    import time

    for name in tokenizer_names():
        t0 = time.perf_counter()
        path = ensure_tokenizer(name)
        print(f"[bytecover] tokenizer fixture {name}: {path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[bytecover] %(message)s")
    prepare_all()
