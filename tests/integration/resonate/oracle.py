"""Resonate's server semantics as the Python SDK ships them (``resonate.connections.local.
ServerState``), served as JSON lines for tests/integration/resonate/test_differential.py.
Run with the SDK's venv (.tools/resonate-py, Python >= 3.12).

Each input line is ``{"now": MS, "envelope": {...}}``; each output line is
``{"answer": <response envelope>, "pushes": [[address, message], ...]}``.
"""

from __future__ import annotations

import json
import sys

from resonate.connections.local import (
    ServerState,
    unwrap_request_envelope,
    wrap_response_envelope,
)
from resonate.error import ServerError


def main() -> None:
    oracle = ServerState()
    for line in sys.stdin:
        request = json.loads(line)
        envelope = request["envelope"]
        try:
            flat = oracle.apply(request["now"], unwrap_request_envelope(envelope))
            answer = wrap_response_envelope(flat)
        except ServerError as exc:
            answer = {
                "kind": envelope["kind"],
                "head": {"corrId": envelope["head"]["corrId"], "status": exc.code},
                "data": str(exc),
            }
        pushes = [[m.address, m.message] for m in oracle.outgoing]
        oracle.outgoing = []
        sys.stdout.write(json.dumps({"answer": answer, "pushes": pushes}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
