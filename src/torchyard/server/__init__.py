"""The dashboard and its JSON API (``torchyard ui``): an ASGI app over the workspace's store.

Nothing heavy is imported here; ``torchyard.server.app.create_app`` builds the Starlette app and
``torchyard.server.serve.serve`` runs it on uvicorn.
"""
