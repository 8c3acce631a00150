"""Settings refuse a placeholder secret from .env.example everywhere but in development."""

import pytest
from pydantic import ValidationError

from contracts.settings import PLACEHOLDER, ServiceSettings


@pytest.mark.parametrize("environment", ["test", "production"])
def test_a_placeholder_secret_is_refused_outside_development(environment: str) -> None:
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY still holds the placeholder"):
        ServiceSettings(environment=environment, jwt_public_key=PLACEHOLDER)


def test_development_starts_with_placeholders() -> None:
    settings = ServiceSettings(environment="development", jwt_public_key=PLACEHOLDER)
    assert settings.jwt_public_key.get_secret_value() == PLACEHOLDER
