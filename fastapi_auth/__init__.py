"""fastapi_auth: Sign-up, e-mail confirmation by short link, RS256 JWT login."""
