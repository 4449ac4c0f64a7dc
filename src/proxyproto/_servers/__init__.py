"""What the ASGI server integrations share, and each server's internals we depend on."""
