"""Exit codes of the client commands (scripts may rely on them) and the error
that carries one up to ``main``."""

from __future__ import annotations

from typing import Any

OK = 0
FAILED = 1
"""The instance failed, or a ``--wait`` timed out."""
USAGE = 2
"""Bad arguments (click's usage-error code), an ambiguous name, or a request the
service refused as invalid (400, 422)."""
AUTH = 3
"""No token, or the service refused it (401, 403)."""
NOT_FOUND = 4
"""No such instance, tenant or token (404)."""
CONFLICT = 5
"""Not allowed in the current state: invalid transition, name taken (409)."""
UNREACHABLE = 6
"""The service could not be reached or did not answer (connection error,
timeout, 502, 503, 504)."""
LIMITED = 7
"""A quota or rate limit (429); ``Retry-After`` is shown when sent."""
SERVER_ERROR = 8
"""Any other error of the service (500, an unexpected answer)."""
ROLLED_BACK = 9
"""A guarded upgrade waited for (``instances upgrade --wait``) was rolled back or
cancelled: the instance runs its old version."""

EXIT_CODES = """\
exit codes:
  0  success
  1  the instance failed, or --wait timed out (the reason is printed)
  2  usage error, ambiguous name, or a request the service refused as invalid
  3  no token, or the token was refused (401, 403)
  4  not found (404)
  5  conflict: not allowed in the current state, or the name is taken (409)
  6  the service is unreachable or unavailable (connection error, timeout, 502-504)
  7  a quota or rate limit was hit (429)
  8  any other error of the service (500, unexpected answer)
  9  instances upgrade --wait: the upgrade was rolled back or cancelled
"""
"""The help epilog of every client command."""

_BY_STATUS = {
    400: USAGE,
    401: AUTH,
    403: AUTH,
    404: NOT_FOUND,
    409: CONFLICT,
    422: USAGE,
    429: LIMITED,
    502: UNREACHABLE,
    503: UNREACHABLE,
    504: UNREACHABLE,
}


def exit_code_for_status(status: int) -> int:
    """The exit code for an HTTP error status."""
    return _BY_STATUS.get(status, USAGE if 400 <= status < 500 else SERVER_ERROR)


class CliError(Exception):
    """Ends the command: ``message`` goes to stderr, ``code`` is the exit status."""

    def __init__(self, code: int, message: str, payload: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.payload = payload
        """What ``--json`` prints on stdout before failing (e.g. the failed instance)."""
