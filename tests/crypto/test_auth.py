from __future__ import annotations

import os

import pytest

from crypto.auth import AUTH_LABEL, auth_message
from crypto.errors import SignatureError
from crypto.keys import SigningKey


def test_auth_message_binds_relay_and_challenge() -> None:
    relay, member = SigningKey.generate(), SigningKey.generate()
    challenge = os.urandom(32)
    message = auth_message(relay.verify_key, challenge)
    assert message.startswith(AUTH_LABEL)
    signature = member.sign(message)
    member.verify_key.verify(message, signature)
    with pytest.raises(SignatureError):  # the same answer is worth nothing at another relay
        member.verify_key.verify(
            auth_message(SigningKey.generate().verify_key, challenge), signature
        )
    with pytest.raises(ValueError):
        auth_message(relay.verify_key, challenge[:31])
