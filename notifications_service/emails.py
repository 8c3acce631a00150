"""The e-mails' words: Jinja2 templates (HTML autoescaped, plain text as is) rendered to parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from contracts.events import RecommendedItem
from notifications_service.models import DeliveryKind, DigestFrequency

_templates = Environment(
    loader=PackageLoader("notifications_service", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    enable_async=False,
)

DEFAULT_REASON = "Rated highly by viewers whose tastes match yours."

FREQUENCY_TEXT = {
    DigestFrequency.IMMEDIATE: "as soon as new picks are ready (at most once an hour)",
    DigestFrequency.DAILY: "once a day",
    DigestFrequency.WEEKLY: "once a week",
}


@dataclass(frozen=True, slots=True)
class Composed:
    subject: str
    text: str
    html: str


def _compose(template: str, subject: str, **context: Any) -> Composed:
    context = {"subject": subject, **context}
    return Composed(
        subject=subject,
        text=_templates.get_template(f"{template}.txt").render(context),
        html=_templates.get_template(f"{template}.html").render(context),
    )


ACCOUNT_SUBJECTS = {
    DeliveryKind.CONFIRMATION: "Confirm your e-mail address",
    DeliveryKind.PASSWORD_RESET: "Reset your Cinema password",
}


def account_email(kind: DeliveryKind, *, name: str, url: str, public_base_url: str) -> Composed:
    """The confirmation or the reset e-mail: a greeting and the one link to open."""
    return _compose(
        kind.value,
        ACCOUNT_SUBJECTS[kind],
        name=name or "there",
        url=url,
        public_base_url=public_base_url,
    )


def masked(address: str) -> str:
    """Enough of an address for its owner to recognise it, not enough to write to it:
    `a***@example.com`."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def address_changed_email(*, name: str, new_address: str, public_base_url: str) -> Composed:
    """The notice to the address an account moved away from."""
    return _compose(
        DeliveryKind.EMAIL_CHANGED.value,
        "Your Cinema e-mail address was changed",
        name=name or "there",
        new_address=masked(new_address),
        public_base_url=public_base_url,
    )


def recommendations_email(
    *,
    name: str,
    items: Sequence[RecommendedItem],
    frequency: DigestFrequency,
    unsubscribe_url: str,
    public_base_url: str,
) -> Composed:
    subject = {
        DigestFrequency.DAILY: "Your daily film picks",
        DigestFrequency.WEEKLY: "Your weekly film picks",
    }.get(frequency, "New film picks for you")
    return _compose(
        "recommendations",
        subject,
        name=name or "there",
        intro=f"Here are {len(items)} films we think you will enjoy:",
        items=[
            {
                # Not the score: a pick's score ranks it among the viewer's picks (a sum of
                # neighbours' similarities), it is no mark out of 10; the reason says why.
                "title": item.title or "Untitled film",
                "reason": item.reason or DEFAULT_REASON,
            }
            for item in items
        ],
        frequency_text=FREQUENCY_TEXT.get(frequency, ""),
        unsubscribe_url=unsubscribe_url,
        public_base_url=public_base_url,
    )


def unsubscribe_page(*, email: str, action: str, done: bool) -> str:
    return _templates.get_template("unsubscribe.html").render(email=email, action=action, done=done)
