"""Expected failures of fastapi_recom, each rendered as `{"detail": CODE}`."""

from contracts.errors import ServiceError


class MovieNotFound(ServiceError):
    status_code = 404
    code = "MOVIE_NOT_FOUND"


class RecommenderLoading(ServiceError):
    """The rating matrix is not in memory yet (first load running or the database down)."""

    status_code = 503
    code = "RECOMMENDER_LOADING"
    headers = {"Retry-After": "2"}  # noqa: RUF012
