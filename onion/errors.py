"""Errors of the onion package, written for the operator who reads them.

    OnionError                      base class, never raised itself
    ├── TorNotInstalled             no tor binary where config says (install Debian's `tor`)
    ├── TorStartFailed              tor started but exited, or did not open its control
    │                               port in time (a bad torrc line, a port taken, ...)
    ├── ControlError                talking to tor's control port failed
    │   ├── ControlUnreachable      nothing answers at the control address
    │   └── ControlAuthFailed       tor refused the cookie or the password
    ├── ServiceError                tor refused to publish or withdraw an onion service
    │   └── AddressMismatch         tor's address is not the one our key gives: never
    │                               published under a wrong address
    └── OnionKeyError               a key file (service key, client-auth key) is missing,
                                    malformed or cannot be written

Every error from stem or the operating system is translated at the boundary of this
package (`raise ... from exc`); nothing outside `onion/` sees a stem exception. Messages
say what failed and what to do; they never contain a key, and name files only when the
file is the operator's to fix.
"""

from __future__ import annotations


class OnionError(Exception):
    """Base class: catch this for "Tor did not do what we asked". `hint`, when set, is one
    line telling the operator what to try."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class TorNotInstalled(OnionError):
    """The tor binary named in config (default `tor` on PATH) does not exist."""


class TorStartFailed(OnionError):
    """tor was started but exited, or did not open its control port in time. The message
    carries the last lines of tor's own log, which say why."""


class ControlError(OnionError):
    """The control connection failed, or tor answered a command with an error."""


class ControlUnreachable(ControlError):
    """Nothing accepted a connection at the control address (tor not running, wrong port)."""


class ControlAuthFailed(ControlError):
    """tor's control port refused our credentials: a cookie file we cannot read or that
    does not match, a wrong password, or a control port that wants a method we lack."""


class ServiceError(OnionError):
    """ADD_ONION or DEL_ONION failed: tor's reply is in the message."""


class AddressMismatch(ServiceError):
    """tor published a service under an address other than the one computed from our key;
    the service is withdrawn at once. This means a bug, or a tor that is not what it says."""


class OnionKeyError(OnionError):
    """A key file is missing, malformed, or cannot be written."""
