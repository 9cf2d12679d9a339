"""One module per resource; each exposes ENDPOINTS (and SCHEMAS). See flowmetal.server.api."""
