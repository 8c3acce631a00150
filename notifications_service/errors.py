"""Expected failures of notifications_service, rendered as `{"detail": CODE}`."""

from contracts.errors import ServiceError


class RecipientNotFound(ServiceError):
    status_code = 404
    code = "RECIPIENT_NOT_FOUND"


class UnsubscribeTokenInvalid(ServiceError):
    status_code = 400
    code = "UNSUBSCRIBE_TOKEN_INVALID"


class BrokerUnavailable(ServiceError):
    status_code = 503
    code = "BROKER_UNAVAILABLE"
    headers = {"Retry-After": "5"}  # noqa: RUF012
