"""fastapi_recom: Ratings store, film catalogue with its ETL, and user-user collaborative filtering."""
