# Image for the Loopwright services in compose.yaml (worker, scheduler; api and sidecar later).
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 loopwright
WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform platform
COPY sidecar sidecar
COPY skills_registry skills_registry
COPY sandbox sandbox
RUN pip install --no-cache-dir .
USER loopwright
ENTRYPOINT ["loopwright"]
