"""Settings of notifications_service."""

from functools import lru_cache
from typing import Annotated, ClassVar, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from contracts.settings import ServiceSettings


def _auto_is_none(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return None
    return value


# `auto` (or empty) is None; anything else reads as a bool (true/false, 1/0, yes/no).
AutoBool = Annotated[bool | None, BeforeValidator(_auto_is_none)]


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "notifications"
    port: int = 8005

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = "Cinema <no-reply@cinema.local>"
    # STARTTLS: auto upgrades when the server offers it, and insists when SMTP_USER is set (no
    # password in clear); true always insists; false never upgrades (a local mail catcher).
    smtp_starttls: AutoBool = None
    # Implicit TLS from the first byte (port 465), instead of STARTTLS.
    smtp_tls: bool = False
    # One SMTP exchange (connect, MAIL, RCPT, DATA) gives up after this many seconds.
    smtp_timeout: float = Field(default=10.0, gt=0)
    # Parallel SMTP connections of one process.
    smtp_connections: int = Field(default=4, ge=1, le=64)

    # Signs unsubscribe links; no default, the setup step generates one.
    unsubscribe_secret: SecretStr

    # Temporary SMTP failures back off base * 2**attempt seconds, capped, and give up
    # (status failed) only when the e-mail is older than the window.
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    retry_window_seconds: float = Field(default=86_400.0, gt=0)
    # The sender polls for due e-mails this often even when nothing woke it.
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    # A claimed e-mail is left alone by other senders for this long (a crashed sender's
    # claims expire after it); longer than the worst-case time to send one claimed batch.
    delivery_lease_seconds: float = Field(default=300.0, gt=0)
    delivery_batch_size: int = Field(default=20, ge=1)

    # Daily digests go out from this hour (UTC); weekly ones from this weekday (0 = Monday).
    digest_hour_utc: int = Field(default=8, ge=0, le=23)
    digest_weekday: int = Field(default=0, ge=0, le=6)
    # How often the scheduler looks for viewers due; 0 turns the in-process scheduler off.
    digest_scheduler_seconds: float = Field(default=60.0, ge=0)
    # Viewers per `notifications.digest.requested` event.
    digest_batch_size: int = Field(default=500, ge=1)
    # A digest whose picks have not arrived after this long is requested again, at most
    # digest_max_requests times in all.
    digest_answer_timeout_seconds: float = Field(default=900.0, gt=0)
    digest_max_requests: int = Field(default=5, ge=1)
    # A consumer holds an event (unacked) through a database outage this long before it
    # nacks it towards the delivery limit and the dead-letter queue.
    consumer_patience_seconds: float = Field(default=600.0, ge=0)
    # `immediate` viewers get at most one recommendations e-mail per this many seconds.
    immediate_min_interval_seconds: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _one_kind_of_tls(self) -> Self:
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("SMTP_TLS (implicit TLS) and SMTP_STARTTLS=true exclude each other")
        return self

    @property
    def smtp_start_tls(self) -> bool | None:
        """aiosmtplib's `start_tls`: None upgrades when offered, True insists, False never."""
        if self.smtp_tls:
            return False
        if self.smtp_starttls is None and self.smtp_user:
            return True
        return self.smtp_starttls


@lru_cache
def get_settings() -> Settings:
    return Settings()
