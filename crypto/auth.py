"""What a contact member signs to authenticate to a relay's journalist API.

The message names the relay (its directory key) and a single-use random challenge, under
a label no other signature in Amanah uses: an answer is good for one relay, one time.
"""

from __future__ import annotations

from .keys import VerifyKey

AUTH_LABEL = b"amanah-journalist-auth-v1\n"
CHALLENGE_SIZE = 32


def auth_message(relay_key: VerifyKey, challenge: bytes) -> bytes:
    """The bytes a member signs. Raises ValueError for a challenge of the wrong size."""
    if len(challenge) != CHALLENGE_SIZE:
        raise ValueError("a challenge is 32 bytes")
    return AUTH_LABEL + relay_key.public_key + challenge
