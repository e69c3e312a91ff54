"""The message every design fans out: the shape and size of Candor's `update` (SPEC 5)."""

import json


def payload_text(round_no: int, displayed: str = "10") -> str:
    return json.dumps(
        {
            "type": "update",
            # A notification's public id: 22 url-safe characters, like secrets.token_urlsafe(16).
            "id": f"bench-{round_no:016d}",
            "text": f"{displayed} other people are viewing this",
            "claim": {"metric": "viewing_now", "window_s": 30, "displayed": displayed},
        },
        separators=(",", ":"),
    )
