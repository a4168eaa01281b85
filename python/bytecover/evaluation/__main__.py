"""``python -m bytecover.evaluation`` = ``bytecover eval fim`` (see `completion_eval`).

``--methods reference,empty`` checks the harness without a model: the reference completion must
pass everywhere.
"""

from __future__ import annotations

from .completion_eval import main_fim as main

if __name__ == "__main__":
    raise SystemExit(main())
