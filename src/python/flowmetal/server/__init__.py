"""`flowmetal serve`: the HTTP API over the same library functions the CLI calls.

Importing this package imports nothing heavy; `app` and `runner` pull in
Starlette, uvicorn and prometheus-client when the server starts.
"""
