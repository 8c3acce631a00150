"""Expected failures of fastapi_ugc, each rendered as `{"detail": CODE}`."""

from contracts.errors import ServiceError


class BrokerUnavailable(ServiceError):
    """RabbitMQ did not confirm the event in time: the rating was not accepted, retry later."""

    status_code = 503
    code = "BROKER_UNAVAILABLE"
    headers = {"Retry-After": "2"}  # noqa: RUF012


class IdempotencyKeyReused(ServiceError):
    """The Idempotency-Key was already used by this viewer for a different request."""

    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"
