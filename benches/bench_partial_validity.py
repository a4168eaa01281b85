"""The known cost of docs/design.md ("a partial character after a whitespace run"): validity of a
token ending inside a UTF-8 character tries every completion of the character when none works.

Two measurements, each against its twin without the whitespace run:
  * `is_valid` of [ab, \\n\\n, <lead byte>] on the byte-level toy tokenizer, per lead byte;
  * the full next-byte distribution of a real model after "def f():\\n\\n" vs "def f():\\n"
    (engine seconds from the state's own statistics, model time apart).

    ./.ci/bootstrap python benches/bench_partial_validity.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bytecover import ByteLM, _core
from bytecover.evaluation.provenance import provenance

OUT_DIR = Path(__file__).resolve().parent / "results" / "partial-validity"
REPO = Path(__file__).resolve().parents[1]


def toy_is_valid() -> list[dict[str, Any]]:
    sys.path.insert(0, str(REPO / "tests"))
    from reference.toy import toy_tokenizers  # the tests' toy tokenizers (not part of the package)

    tok = _core.Tokenizer.from_json(json.dumps(toy_tokenizers()["ws_bytelevel"]))
    rows = []
    for lead in (0xC3, 0xE2, 0xF0):
        [lead_id] = [i for i in range(tok.n_ids) if tok.token_bytes(i) == bytes([lead])]
        for context in (b"ab\n\n", b"ab\n"):
            ids = tok.encode(context) + [lead_id]
            t0 = time.perf_counter()
            valid = tok.is_valid(ids)
            rows.append({"context": context.decode(), "lead": f"{lead:#x}", "ids": ids, "valid": valid, "seconds": time.perf_counter() - t0})
            print(f"toy {context!r} + {lead:#x}: valid={valid} {rows[-1]['seconds']:.4f} s", file=sys.stderr)
    return rows


def model_distribution(model: str) -> list[dict[str, Any]]:
    lm = ByteLM.from_pretrained(model)
    lm.state("warm up").distribution()
    rows = []
    for prefix in ("def f():\n", "def f():\n\n"):
        state = lm.state(prefix)
        t0 = time.perf_counter()
        state.distribution()
        rows.append({"prefix": prefix, "wall_s": time.perf_counter() - t0, "engine_s": state.stats.engine_seconds,
                     "model_s": state.stats.model_seconds, "model_calls": state.stats.model_calls})
        print(f"{model} {prefix!r}: engine {state.stats.engine_seconds:.3f} s, model {state.stats.model_seconds:.3f} s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = {"toy_is_valid": toy_is_valid(), "distribution": model_distribution(args.model), "model": args.model,
              "provenance": provenance(" ".join(["python", *sys.argv]), args.model)}
    out = args.out or OUT_DIR / f"{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
