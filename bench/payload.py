"""The message every design fans out: the shape and size of Candor's `update` (SPEC 5)."""

import json


def payload_text(round_no: int, displayed: str = "10") -> str:
    return json.dumps(
        {
            "type": "update",
            "id": 100_000 + round_no,
            "text": f"{displayed} other people are viewing this",
            "claim": {"metric": "viewing_now", "window_s": 30, "displayed": displayed},
        },
        separators=(",", ":"),
    )
