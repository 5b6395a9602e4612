"""The API's routers: decisions, admin, health."""
