"""Model services (L4 runtime): the detached supervisor of a service and its worker processes.
Nothing here is imported by ``import torchyard``; starlette and uvicorn are imported by workers only."""
