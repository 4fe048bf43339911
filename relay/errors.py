"""Every error the relay raises on purpose, as one tree.

    RelayError                 never raised itself; `status` is the HTTP answer it hints
    ├── ConfigError            amanah.toml or the data directory is wrong (operator)
    ├── StoreError             the database or a blob could not be read or written
    ├── NotFound        404    no such contact, drop or reply (or not yours to see)
    ├── Conflict        409    it exists already
    └── ClientError     400    a request a client got wrong
        ├── LimitExceeded 413  too large, too many files, too long a message
        ├── Unauthorized  401  missing, expired, replayed or forged credentials
        ├── Forbidden     403  authenticated, but not allowed
        ├── PreconditionFailed 412   a protocol version this relay does not speak (tus)
        └── UnsupportedMediaType 415 a body of the wrong type (tus PATCH)

Messages are shown to whoever caused them (an operator at the CLI, a source in a page, a
contact's client) and never contain a filename, codename, key, address or message text.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every deliberate relay error. Never raised directly."""

    status = 500


class ConfigError(RelayError):
    """The configuration or data directory is not usable. The message says which
    setting or file, and what is expected."""


class StoreError(RelayError):
    """The database or blob storage failed. Nothing acknowledged was lost: a drop is
    recorded only after all its blobs are safely on disk."""


class NotFound(RelayError):
    """No such thing, or not one the caller may see (the two are not distinguished)."""

    status = 404


class Conflict(RelayError):
    """The thing to be created exists already."""

    status = 409


class ClientError(RelayError):
    """The request was malformed. The message says what to change."""

    status = 400


class LimitExceeded(ClientError):
    """A configured limit (total size, number of files, message length) was exceeded."""

    status = 413


class Unauthorized(ClientError):
    """Credentials were missing, expired, replayed or forged."""

    status = 401


class Forbidden(ClientError):
    """The caller is known but may not do this."""

    status = 403


class PreconditionFailed(ClientError):
    """The client speaks a protocol version this relay does not (tus: Tus-Resumable)."""

    status = 412


class UnsupportedMediaType(ClientError):
    """The body is not of the type this route takes."""

    status = 415
