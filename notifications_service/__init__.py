"""notifications_service: Confirmation e-mails and recommendation digests."""
