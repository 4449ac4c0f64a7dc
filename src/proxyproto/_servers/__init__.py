"""What the server integrations (:mod:`proxyproto.hypercorn`, :mod:`proxyproto.uvicorn`) use of
each server's internals, kept out of the public modules.
"""
