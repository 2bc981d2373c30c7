"""HMAC signatures that tie an Azure ML job to the bridge that submitted it.

The job carries `bridge_signature = HMAC-SHA256(key, submission id)` as a tag, and run events echo
the job's tags: an event claiming to be about a bridge job whose signature does not verify is
ignored, so a forged webhook call cannot fire effects for a job name it guessed.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(key: str, submission_id: str) -> str:
    return hmac.new(key.encode(), submission_id.encode(), hashlib.sha256).hexdigest()


def verify(key: str, submission_id: str, signature: str) -> bool:
    return hmac.compare_digest(sign(key, submission_id), signature)
