"""fastapi_ugc: Viewers rate films; every rating is published to RabbitMQ with confirms."""
