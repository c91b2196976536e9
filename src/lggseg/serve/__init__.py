"""The HTTP API and web page (FastAPI): routes, limits, uploads, cases, the result store."""
