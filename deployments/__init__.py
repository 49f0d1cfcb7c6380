"""The Ray Serve application of fraudgen: FastAPI ingress (``app.create_app``), auth, rate limiting,
cluster-wide metrics, the generator deployment and the application builder (``serve_app.build_app``)."""
