"""The thin client for the web tier and the workers (README, "The client").

::

    from starlingpy.client import Client
    client = Client(["127.0.0.1:22122"])
    client.set("grading", {"submission": 42})
    with client.reliable(["urgent", "grading"], timeout=5) as msg:
        if msg is not None:
            grade(msg.value)   # confirmed on normal exit, aborted on exception
"""

from .client import Client
from .errors import (
                     ClientError,
                     ConfirmFailed,
                     InvalidQueueName,
                     NotStored,
                     ServerError,
                     ServerUnavailable,
                     UnsupportedFeature,
)
from .message import Message
from .security import AuthenticationFailed, Credentials, CredentialsError
from .serialization import (
                     FLAG_JSON,
                     FLAG_PICKLE,
                     FLAG_RAW,
                     FLAG_TEXT,
                     JSONSerializer,
                     PickleSerializer,
                     RawSerializer,
                     Serializer,
)

__all__ = [
    "Client", "Message", "Serializer", "JSONSerializer", "RawSerializer", "PickleSerializer",
    "FLAG_RAW", "FLAG_PICKLE", "FLAG_TEXT", "FLAG_JSON",
    "ClientError", "NotStored", "ServerUnavailable", "ConfirmFailed", "UnsupportedFeature",
    "ServerError", "InvalidQueueName", "AuthenticationFailed", "Credentials", "CredentialsError",
]
