"""Secrets stored encrypted at rest: the sites' signing secrets and platform webhook secrets.

HMAC verification needs the secret itself, so these cannot be hashed the way a password is (a
hash only answers "is this the same value?"). They are encrypted instead, with Fernet (AES-128-CBC
and HMAC-SHA256, a random IV each time) under a key derived from SECRET_KEY: a database dump or a
staff user's SQL console shows ciphertext. Someone with both the database and SECRET_KEY can
still decrypt them (docs/security.md, "Secrets at rest").

Rotating SECRET_KEY follows Django's own scheme: the new key encrypts, the new key and every
SECRET_KEY_FALLBACKS entry decrypt, and `manage.py candor_reencrypt_secrets` moves every stored
secret to the new key so the old one can be dropped from the fallbacks.
"""

import base64
from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models

# Its own label, so this key is unrelated to the other keys derived from SECRET_KEY (visitor
# tokens, erasure tombstones): none of them can decrypt or forge the others' values.
STORED_SECRETS_INFO = b"candor stored secrets v1"


class SecretUnreadable(Exception):
    """A stored value that is not a token of any configured key. Never answered with the raw value:
    a plaintext left behind (a database restored from before migration 0014) or a key dropped too
    early must be seen, not silently used."""


def _fernet_derive(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=STORED_SECRETS_INFO).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


# Keyed on the keys themselves, so a settings change (a test's override_settings, a rotation in a
# long-lived shell) gets a new cipher; the HKDF runs once per key set, not once per request.
@lru_cache(maxsize=8)
def _cipher_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet_derive(key) for key in keys])


def secrets_cipher(*, secret_key: str | None = None, fallbacks: Sequence[str] | None = None) -> MultiFernet:
    """Encrypts under the current SECRET_KEY; decrypts under it and each fallback, in order."""
    current = settings.SECRET_KEY if secret_key is None else secret_key
    older = settings.SECRET_KEY_FALLBACKS if fallbacks is None else fallbacks
    return _cipher_for((current, *older))


def secret_encrypt(*, plain: str) -> str:
    return secrets_cipher().encrypt(plain.encode()).decode("ascii")


def secret_decrypt(*, stored: str) -> str:
    try:
        return secrets_cipher().decrypt(stored.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise SecretUnreadable(
            "A stored secret could not be decrypted with DJANGO_SECRET_KEY or any of "
            "DJANGO_SECRET_KEY_FALLBACKS: was the key changed without keeping the old one in the "
            "fallbacks, or does the column still hold plaintext (run `manage.py migrate`)?"
        ) from exc


def secret_is_current(*, stored: str) -> bool:
    """Whether `stored` is already a token of the current key alone (re-encryption can skip it)."""
    try:
        secrets_cipher(fallbacks=()).decrypt(stored.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError):
        return False
    return True


class EncryptedTextField(models.TextField):
    """A text column holding a Fernet token; the model attribute is the plaintext.

    "" stays "" (a blank platform secret means "not configured", and `filter(field="")` keeps
    working). A stored value no configured key decrypts raises SecretUnreadable. Ciphertexts are
    random, so the column cannot be unique or looked up by value: such a lookup raises TypeError
    rather than silently matching nothing.
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return secret_decrypt(stored=value)

    def get_db_prep_save(self, value, connection):
        if value is None or hasattr(value, "as_sql"):
            return value
        value = self.to_python(value)
        return "" if value == "" else secret_encrypt(plain=value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        raise TypeError(f"{self.name} is stored encrypted with a random IV: it cannot be looked up by value.")
