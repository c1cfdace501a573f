"""Secrets at rest: users' Spotify tokens, workflows' webhook signing secrets.

Encrypted with Fernet (authenticated, so a tampered value fails to decrypt instead of
yielding garbage). TOKEN_ENCRYPTION_KEY may list several keys, comma-separated: the first
encrypts, all decrypt, so keys rotate without a flag day.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.errors import PermanentError
from worker.settings import Settings


class SecretKeyError(PermanentError):
    """No key to encrypt with, or a stored secret that no key decrypts."""


class SecretCipher:
    def __init__(self, keys: str | None) -> None:
        if not keys:
            raise SecretKeyError(
                "TOKEN_ENCRYPTION_KEY is not set: user tokens and webhook secrets cannot be "
                "stored or read (make a key with `automation spotify new-key`)"
            )
        self._fernet = MultiFernet([Fernet(key.strip()) for key in keys.split(",")])

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretCipher:
        key = settings.token_encryption_key
        return cls(key.get_secret_value() if key is not None else None)

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret does not decrypt with TOKEN_ENCRYPTION_KEY "
                "(was the key replaced instead of rotated?)"
            ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()
