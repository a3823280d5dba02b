"""The service with the token checks of issue 28 taken out, the benchmark's "off" for them: no revocation check.

(The limit per token holder is off by its own setting, BACKUP_API_RATE_LIMIT=off.)
"""

from backup_api import create_app as create_service
from backup_api import revocations


def create_app():
    """Return the service whose revocation check always says "not revoked", without reading the store."""
    revocations.Revocations.revoked = lambda self, claims: False
    return create_service()
