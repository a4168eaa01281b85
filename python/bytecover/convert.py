"""Converting a registry GGUF into a plain Hugging Face checkpoint folder in the cache, once.

Loading a GGUF dequantises it (20-60 s); the converted checkpoint loads in seconds. transformers
refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are copied into a model built
from the cleaned config first.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import building_dir, cache_root, file_lock, is_complete
from .install import gguf_file
from .registry import ModelSpec, get_spec

if TYPE_CHECKING:  # heavy imports stay lazy so the registry and the CLI start instantly
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["CONVERSION_VERSION", "MANIFEST", "model_dir", "is_converted", "ensure_model"]

log = logging.getLogger("bytecover.convert")

#: Bump when the conversion output changes so stale cache entries are rebuilt.
CONVERSION_VERSION = 1
MANIFEST = "bytecover.json"


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
        found = tok.convert_tokens_to_ids(token)
        return found if isinstance(found, int) else -1

    problems = []
    if len(tok) != spec.vocab_size:
        problems.append(f"len(tokenizer)={len(tok)} != {spec.vocab_size}")
    for token, expected in zip(spec.eos_tokens, spec.eos_token_ids):
        if tid(token) != expected:
            problems.append(f"{token} has id {tid(token)}, expected {expected}")
    if spec.fim is not None:
        f, t = spec.fim, spec.fim.template
        pairs = [(t.prefix, f.prefix_id), (t.suffix, f.suffix_id), (t.middle, f.middle_id)]
        for token, expected in pairs + list(zip(t.end, f.end_ids)):
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
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc=f"convert {spec.name}", unit="step")
    timings: dict[str, float] = {}
    with gguf_file(spec) as gguf, building_dir(final, CONVERSION_VERSION) as tmp:
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
