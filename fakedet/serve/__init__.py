"""`fakedet serve`: a trained detector behind an HTTP API and a web page.

settings (what the server is told), uploads (bytes to an image, within limits), batching (the
one thread that owns the model, heatmaps too), scoring (the loaded model and its rows), metrics
(Prometheus text), schemas (the JSON answers) and app (the FastAPI routes). Needs the `serve` extra; nothing here
is imported by `import fakedet`.
"""
